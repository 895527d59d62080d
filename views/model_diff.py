"""model_diff: what an edit did, read from the reference model (`other`, the model before the edit)
to the suspect (`model`): every figure reads other → model, "rose" meaning higher in the suspect.

The head (the first lines of the card, above every list) gives the main evidence: the most changed
layer and matrix with its rank, what the top singular direction of that matrix's ΔW writes (or
reads) in tokens, and whether any text's predictions moved beyond the dataset's noise. Below it,
three columns:
- the layers by relative weight change (‖ΔW‖/‖W‖, with the rank of each layer's largest change),
  and the texts whose next-token distributions moved most: mean KL(model ‖ other) per text with a
  robust z-score against the whole dataset (lensframe.model_compare.text_kl_baseline);
- the singular spectrum of ΔW of each changed matrix (σ₁..σ₈; a rank-one edit shows one bar) with
  its top directions in tokens (WeightDiffOp), then the focused token's moved probabilities;
- the paired logit lens (other | model | KL), its rows labelled as the logit_lens view labels them.
Clicking a layer (in the bars or the paired lens) focuses it; clicking a text focuses it.
Components are kept across focus changes (ctx.part): a click patches their data in place.
"""
from __future__ import annotations

from typing import ClassVar, Optional

import numpy as np
from pydantic import Field

from lensframe.graph import Node
from lensframe.model_compare import (DIRECTIONS, NULL_DIRECTIONS, TOP_SV, changed_matrices, layer_ranking,
                                   text_kl_baseline)

from .base import LIVE_MODEL_NOTE, ComparesModels, VIEW_CSS, View, ViewParams, esc, html_part, layout_part

# Chips' hover tips drawn by the page (an HTML pane runs no script, so CSS draws them: a native
# `title` shows late and unstyled). Fixed with no offsets, a tip sits where it would in the text
# (after the chip's text, pushed below it by its margin) but outside the column's overflow clip.
TIP_CSS = """
.lf-moved, .lf-sv, .lf-read-token, .lf-verdict, .lf-diff-texts, .lf-spectrum-where { cursor: default; }
.lf-moved[data-tip]:hover::after, .lf-sv[data-tip]:hover::after, .lf-read-token[data-tip]:hover::after,
.lf-verdict[data-tip]:hover::after, .lf-diff-texts[data-tip]:hover::after, .lf-spectrum-where[data-tip]:hover::after {
  content: attr(data-tip); position: fixed; z-index: 20;
  margin: 1.5em 0 0 -6em; padding: 3px 6px; border-radius: 4px; background: rgba(33, 37, 41, 0.94); color: #fff;
  font: 11px/1.35 ui-monospace, monospace; white-space: pre; pointer-events: none; }
.lf-verdict[data-tip]:hover::after, .lf-diff-texts[data-tip]:hover::after,
.lf-spectrum-where[data-tip]:hover::after { white-space: normal; width: 340px; }
.lf-verdict { text-decoration: underline dotted #999; }
.lf-moved-up, .lf-moved-down { line-height: 1.6; }
.lf-diff-caption { color: #555; }
.lf-diff-head > div { margin: 1px 0; line-height: 1.45; }
.lf-diff-noise { color: #555; }
.lf-diff-moved b, .lf-stands-out { color: #8a1c1c; }
.lf-spectrum { border-top: 1px solid #eee; padding: 3px 0; }
.lf-sv-bars { display: inline-flex; align-items: flex-end; gap: 2px; height: 22px; vertical-align: bottom;
              margin-right: 6px; }
.lf-sv { display: inline-block; width: 9px; background: #1f6fd1; min-height: 1px; }
.lf-sv.lf-sv-zero { background: #ccc; }
.lf-sv-values { color: #666; font-family: ui-monospace, monospace; font-size: 11px; }
.lf-direction { line-height: 1.6; }
.lf-chip.lf-noise { background: #f0f0f0; color: #777; }
"""
# The lens rows' axis title, in the logit_lens view's words: the rows are the same.
ROW_TITLE = "layer (embed, then after block i) →"
KL_SCALE = 1.0  # nats: the KL column's darkest shade (a fixed scale, so a token where nothing moved looks pale)
SHOWN_TOKENS = 5  # tokens shown per side of a direction's readout
SHOWN_MATRICES = 12  # changed matrices drawn in the spectrum column
SUB = "₁₂₃₄₅₆₇₈₉"


class ModelDiffView(ComparesModels, View):
    export_note = LIVE_MODEL_NOTE
    type = "model_diff"
    default_title = "Model diff"
    description = ("what an edit did, from the reference model (`other`) to `model`: weight change per layer (with "
                   "rank), the singular spectrum of each changed matrix in tokens, the texts that moved beyond noise, "
                   "and the focused token")
    reads = ("sample", "text", "position", "layer")
    sets = ("layer", "sample", "text", "position")
    model_params: ClassVar[tuple[str, ...]] = ("other",)

    class Params(ViewParams):
        other: Optional[str] = Field(None, description="the reference: the model before the edit (e.g. the base model); "
                                     "every figure reads other → model (default: the spec's other model)")
        texts: int = Field(15, ge=1, le=200, description="texts listed, by how much their predictions changed")
        top: int = Field(8, ge=1, le=50, description="tokens listed whose probability rose, and fell, the most")

    _max_tokens: Optional[int] = None  # the dataset's, remembered by needs() for lens_node()

    def kl_node(self, max_tokens: int) -> Node:
        return Node.make("model_kl", self.model, inputs=(self.tokens_node(max_tokens),), other=self.other)

    def residuals_node(self, model: str, max_tokens: int) -> Node:
        """The lens rows of one model's focused sample (a focus node: memoized, kept where the budget allows)."""
        return Node.make("lens_residuals", model, inputs=(Node.make("tokens", model, max_tokens=max_tokens),))

    def lens_node(self, max_tokens: int | None = None) -> Node:
        """The paired lens (a lookup) reading both models' lens_residuals; max_tokens defaults to
        the dataset's, as the view was planned with."""
        mt = max_tokens if max_tokens is not None else self._max_tokens
        if mt is None:
            raise RuntimeError("model_diff.lens_node needs max_tokens before the view is planned")
        return Node.make("pair_lens", self.model, inputs=(self.residuals_node(self.model, mt),
                                                          self.residuals_node(self.other, mt)), other=self.other)

    def needs(self, max_tokens):
        if self.other is None:
            return []
        self._max_tokens = max_tokens
        lens = self.lens_node(max_tokens)
        return [self.tokens_node(max_tokens), Node.make("tokens", self.other, max_tokens=max_tokens),
                self.weights_node(), self.kl_node(max_tokens), *lens.inputs, lens]

    def check(self, info):
        return super().check(info) + self.pair_issues(
            info, ("model_diff needs two models", "add a second model under `models:` (e.g. the base model)"))

    # --- rendering ------------------------------------------------------------------------------
    def render(self, ctx):
        import panel as pn

        from .widgets import BarList, HeatGrid, SampleList

        max_tokens = ctx.board.spec.dataset.max_tokens
        # the weight diff and the dataset KL change with neither the focus nor the session: made once
        weights = ctx.result(self.weights_node())
        ranking, layer_items = ctx.keep("layers", lambda: _layer_items(weights))
        matrices = ctx.keep("matrices", lambda: _decoded_matrices(weights, ctx.decode))
        kl = ctx.result(self.kl_node(max_tokens))
        baseline = ctx.keep("baseline", lambda: text_kl_baseline(kl["mean"]))
        text_items = ctx.keep("texts", lambda: _text_items(kl, baseline, ctx.board.dataset, self.p.texts))
        searcher = next((v for v in ctx.board.spec.views.values() if v.type == "edit_search"), None)
        focused_layer = ctx.get("layer")

        head = html_part(ctx, "head", self._head_html(ranking, weights, matrices, kl, baseline, searcher),
                         sizing_mode="stretch_width", stylesheets=[VIEW_CSS, TIP_CSS], css_classes=["lf-diff-head"])
        layers = ctx.part("layers", BarList, items=layer_items,
                          selected=focused_layer if focused_layer is not None else -99,
                          init={"kind": "layer-diff", "sizing_mode": "stretch_both", "min_height": 60},
                          on_click=lambda key: ctx.set(layer=key) if key >= 0 else None)
        texts_head = html_part(ctx, "texts-head", self._texts_head(baseline), sizing_mode="stretch_width",
                               stylesheets=[VIEW_CSS, TIP_CSS])
        texts = ctx.part("texts", SampleList, items=text_items, selected=-1 if ctx.probe else ctx.sample,
                         init={"sizing_mode": "stretch_both", "min_height": 60},
                         on_click=lambda index: ctx.set(sample=index, text=None, position=None))
        # the spectrum as tall as it needs up to half the column; the focused token's moves below it
        spectrum = html_part(ctx, "spectrum", _spectrum_html(matrices), sizing_mode="stretch_width",
                             stylesheets=[VIEW_CSS, TIP_CSS], css_classes=["lf-diff-spectrum"],
                             styles={"overflow": "auto", "max-height": "50%", "flex": "0 1 auto"})

        tokens = ctx.tokens()
        pos = ctx.position(len(tokens))
        lens = ctx.lookup(self.lens_node(max_tokens), sample=ctx.subject, position=pos, top=self.p.top)
        moved = html_part(ctx, "moved", self._moved_html(ctx, lens, tokens, pos), sizing_mode="stretch_both",
                          stylesheets=[VIEW_CSS, TIP_CSS], css_classes=["lf-diff-focus"], styles={"overflow": "auto"})
        lens_head, grid_params, clicked = self._pair_lens(ctx, lens)
        caption = html_part(ctx, "lens-head", lens_head, sizing_mode="stretch_width", stylesheets=[VIEW_CSS, TIP_CSS])
        grid = ctx.part("pair", HeatGrid, **grid_params,
                        init=dict(kind="pair-lens", fit="both", cell_width=120, min_cell_width=60, cell_height=20,
                                  min_cell_height=10, row_title=ROW_TITLE, sizing_mode="stretch_both"),
                        on_click=clicked)
        # the spectrum and the moved tokens get the widest column (token chips), the paired lens the next
        left = layout_part(ctx, "left", layers, texts_head, texts, sizing_mode="stretch_both", styles={"flex": "1 1 0"})
        middle = layout_part(ctx, "middle", spectrum, moved, sizing_mode="stretch_both", styles={"flex": "1.2 1 0"})
        right = layout_part(ctx, "right", caption, grid, sizing_mode="stretch_both", styles={"flex": "1.1 1 0"})
        columns = layout_part(ctx, "columns", left, middle, right, cls=pn.Row, sizing_mode="stretch_both")
        return layout_part(ctx, "layout", head, columns, sizing_mode="stretch_both", css_classes=["lf-view-model-diff"])

    def _head_html(self, ranking, weights, matrices, kl, baseline, searcher) -> str:
        """The main evidence, first in the card: the change's direction, the most changed layer and
        matrix with its rank, what its σ₁ direction reads or writes in tokens, whether any text
        moved beyond noise, and where the inputs that excite the change are found."""
        a, b = self.model, self.other
        top, change = ranking[0]
        lines = [f"<div class='lf-diff-models'><b>{esc(b)} → {esc(a)}</b> ({esc(b)}: the reference, "
                 f"before the edit) · most changed: <b class='lf-top-layer'>{'other' if top < 0 else f'layer {top}'}</b>"]
        if change == 0:
            lines[0] += " · <b class='lf-diff-none'>no weight differs</b></div>"
            return "".join(lines)
        top_m = next((m for m in matrices if m["layer"] == top), None)
        if top_m is None:  # the layer's change is in vectors only (norms, biases)
            sel = np.flatnonzero(weights["layer"] == top)
            p = sel[np.argmax(weights["delta"][sel])]
            lines[0] += (f" · <code class='lf-top-matrix'>{esc(weights.meta['params'][p])}</code>"
                         f" · ‖ΔW‖/‖W‖ <b>{change:.1e}</b></div>")
        else:
            lines[0] += (f" · <code class='lf-top-matrix'>{esc(_short_name(top_m['name']))}</code>"
                         f" · <b class='lf-top-rank'>rank {top_m['rank']}</b> · ‖ΔW‖/‖W‖ {top_m['rel']:.1e}</div>")
            lines.append(f"<div class='lf-diff-readout'>{_readout_sentence(top_m, 0, head=True)}</div>")
        lines.append(_texts_line(baseline, kl["mean"]))
        where = (f"the <b>{esc(searcher.params.title or searcher.id)}</b> card (edit_search)" if searcher is not None
                 else "see the edit_search view (<code>{type: edit_search}</code>)")
        lines.append(f"<div class='lf-diff-inputs'>inputs that excite these directions: {where}</div>")
        return "".join(lines)

    def _texts_head(self, baseline) -> str:
        a, b = self.model, self.other
        tip = esc(_baseline_words(baseline)) if baseline.n else ""
        return (f"<div class='lf-sub'>texts by mean KL({esc(a)} ‖ {esc(b)}), nats · "
                f"<span class='lf-diff-texts' data-tip='{tip}'>z against the dataset</span> · "
                f"▲ z &gt; {baseline.threshold:g}</div>")

    def _moved_html(self, ctx, lens, tokens, pos) -> str:
        a, b = self.model, self.other
        moved = [esc(_visible(t)) for t in ctx.decode(lens["moved_ids"])]
        half = len(moved) // 2

        def chips(sl, cls):
            return " ".join(
                f"<span class='lf-chip lf-moved {cls}' data-tip='{esc(b)}: {pb:.4f} → {esc(a)}: {pa:.4f} "
                f"({pa - pb:+.4f})'>{t} <small>{pb:.3f}→{pa:.3f}</small></span>"
                for t, pa, pb in zip(moved[sl], lens["moved_a"][sl], lens["moved_b"][sl]))

        return (f"<div class='lf-sub lf-diff-focus-head'>{ctx.subject_label()} · position <b class='lf-position'>{pos}</b>"
                f" <code>{esc(repr(tokens[pos]))}</code>: the next token's probability, {esc(b)} → {esc(a)}</div>"
                f"<div class='lf-moved-up'>rose: {chips(slice(0, half), 'lf-up')}</div>"
                f"<div class='lf-moved-down'>fell: {chips(slice(half, None), 'lf-down')}</div>")

    def _pair_lens(self, ctx, lens):
        """The paired lens as HeatGrid params: a row per lens row (final on top, as the logit_lens
        view draws them, with its labels), a column per model, the reference first (its top-1
        token and probability, shaded by the probability), and KL(model ‖ other) of the row's two
        distributions in nats, shaded on a fixed scale (KL_SCALE)."""
        a, b = self.model, self.other
        labels, blocks = lens.meta["layers"], lens.meta["blocks"]
        L = len(labels)
        order = list(range(L - 1, -1, -1))
        ids = np.unique(np.concatenate([lens["ids_a"].ravel(), lens["ids_b"].ravel()]))
        vocab = dict(zip(ids.tolist(), ctx.decode(ids)))  # one tokenizer call for every cell
        tok = {tag: [[vocab[int(i)] for i in row] for row in lens[f"ids_{tag}"]] for tag in "ab"}
        kl = lens["kl"]
        texts, values, tips = [], [], []
        differs = 0
        for l in order:
            ta, tb = tok["a"][l][0], tok["b"][l][0]
            same = int(lens["top_a"][l]) == int(lens["top_b"][l])
            differs += not same
            texts.append([f"{_short(tb)} {lens['prob_b'][l]:.2f}", f"{_short(ta)} {lens['prob_a'][l]:.2f}",
                          f"{'=' if same else '≠'} {_kl_cell(float(kl[l]))}"])
            values.append([float(lens["prob_b"][l]), float(lens["prob_a"][l]), min(1.0, float(kl[l]) / KL_SCALE)])
            where = _row_name(labels[l])
            tips.append([f"{where} · {b}: top tokens\n" + _top_list(tok["b"][l], lens["probs_b"][l]),
                         f"{where} · {a}: top tokens\n" + _top_list(tok["a"][l], lens["probs_a"][l]),
                         f"{where}\nthe change {b} → {a}: KL({a} ‖ {b}) = {kl[l]:.4g} nats\n"
                         f"top-1 {'the same' if same else 'differs'}: {tb!r} → {ta!r}"])
        focus_layer = ctx.get("layer")
        sel = next((i for i, l in enumerate(order) if blocks[l] == focus_layer), -1) if focus_layer is not None else -1

        def clicked(row, col):
            layer = blocks[order[row]]  # the "embed" row is no block
            if layer >= 0:
                ctx.set(layer=layer)

        head = (f"<div class='lf-sub lf-pair-lens-head'>logit lens here, {esc(b)} → {esc(a)}: each model's top-1 token "
                f"and probability per layer; the change as KL({esc(a)} ‖ {esc(b)}) in nats (dark ≥ {KL_SCALE:g}); "
                f"<span class='lf-lens-differs'>≠</span> top-1 differs "
                f"(<b class='lf-differs-count'>{differs}</b> of {L} rows)</div>")
        params = dict(row_labels=[labels[l] for l in order], row_tips=[_row_name(labels[l]) for l in order],
                      col_labels=[b, a, f"KL({a}‖{b})"], texts=texts, values=values, tips=tips, selected_row=sel,
                      selected_col=-1, col_title="model, the reference first → (each cell: top-1 token, probability)")
        return head, params, clicked


def _layer_items(weights):
    """The weight diff's layers, largest change first, as BarList items (and the ranking)."""
    ranking = layer_ranking(weights)
    top_change = ranking[0][1] or 1.0
    items = []
    for layer, change in ranking:
        sel = np.flatnonzero(weights["layer"] == layer)
        biggest = sel[np.argmax(weights["delta"][sel])]
        name = weights.meta["params"][biggest]
        note = "unchanged" if change == 0 else f"{change:.1e} · rank {int(weights['rank'][biggest])} · {name}"
        label = "other" if layer < 0 else f"layer {layer}"
        items.append({"key": int(layer), "label": label, "bar": change / top_change, "note": note,
                      "tip": f"{label}: ‖ΔW‖/‖W‖ = {change:.3e}" + ("" if change == 0 else
                             f"; largest change in {name}, rank {int(weights['rank'][biggest])}")})
    return ranking, items


def _decoded_matrices(weights, decode) -> list[dict]:
    """The changed matrices (lensframe.model_compare.changed_matrices) with their readouts' tokens
    decoded (one tokenizer call for all of them), as plain dicts the HTML helpers read."""
    mats = changed_matrices(weights)
    ids = sorted({int(i) for m in mats for arr in (m.pos_ids, m.neg_ids) for i in arr.ravel() if i >= 0})
    vocab = dict(zip(ids, decode(ids))) if ids else {}
    out = []
    for m in mats:
        k = len(m.u)
        sides = []
        for i in range(k):
            sides.append({tag: [(vocab[int(t)], float(z)) for t, z in zip(getattr(m, f"{tag}_ids")[i],
                                                                            getattr(m, f"{tag}_z")[i]) if t >= 0]
                          for tag in ("pos", "neg")})
        out.append({"layer": m.layer, "name": m.name, "role": m.role, "rank": m.rank, "rel": m.rel_change,
                    "sv": [float(x) for x in m.sv], "null": m.null_z, "sides": sides})
    return out


def _short_name(name: str) -> str:
    return name[: -len(".weight")] if name.endswith(".weight") else name


def _where(m: dict) -> str:
    return f"L{m['layer']} · {_short_name(m['name'])}" if m["layer"] >= 0 else _short_name(m["name"])


NULL_WORDS = f"{NULL_DIRECTIONS} random unit directions read out the same way"
EARLY_WORDS = ("an edit below the top layers acts through the layers after it, which this direct readout does not "
               "see: look for the inputs that excite it")
ROLE_WORDS = {"writes": "writes to the residual",
              "reads": "reads the residual, writes to an inner space",
              "other": "outside the blocks"}


def _readout_sentence(m: dict, i: int, head: bool = False) -> str:
    """Direction i of a changed matrix in words: σ_i and what its readout says. The side whose top
    token lies further from the vocabulary's median leads; it stands out when its z beats what
    random directions reach through the same readout (m['null']). The head's sentence says why
    nothing may stand out; the spectrum's adds the opposite side."""
    sigma = f"σ{SUB[i]} = {_num(m['sv'][i])}"
    if i >= len(m["sides"]) or m["role"] == "other" or not m["sides"][i]["pos"]:
        return f"<span class='lf-read'>{sigma} ({ROLE_WORDS[m['role']]})</span>"
    side = m["sides"][i]
    lead, other = ("pos", "neg") if side["pos"][0][1] >= side["neg"][0][1] else ("neg", "pos")
    writes = m["role"] == "writes"

    def name(tag):
        return f"{'' if tag == 'pos' else '−'}{'u' if writes else 'v'}{SUB[i]}"

    def how(tag):
        return (f"logit lens of {name(tag)}: final norm's weight, unembedding" if writes else
                f"cosine of each token's embedding with {name(tag)}")

    best = side[lead][0][1]
    stands = bool(np.isfinite(m["null"]) and best > m["null"])
    what = f"{name(lead)} promotes" if writes else f"its input {name(lead)} aligns with the embeddings of"
    why = (f"the top token's robust z over the vocabulary is {best:.2f}; {NULL_WORDS} reach {m['null']:.2f}"
           + ("" if stands or not writes else f"; {EARLY_WORDS}"))
    verdict = (f"<span class='lf-verdict' data-tip='{esc(why)}'>"
               + (f"<b class='lf-stands-out'>stands out</b> (z {best:.1f} &gt; {m['null']:.1f})" if stands else
                  f"<span class='lf-readout-noise'>nothing stands out</span> (z {best:.1f} ≤ {m['null']:.1f})")
               + "</span>")
    text = (f"<span class='lf-read'>{sigma}{', ' + ROLE_WORDS[m['role']] if head else ''}: {what} "
            f"{_token_chips(side[lead][:SHOWN_TOKENS], m['null'], how(lead))} · {verdict}</span>")
    if head:
        return text
    return f"{text} · {name(other)}: {_token_chips(side[other][:SHOWN_TOKENS], m['null'], how(other))}"


def _token_chips(tokens, null: float, how: str) -> str:
    """Readout tokens as chips, each marked by whether its own z beats the null (lf-up) or not (lf-noise)."""
    return " ".join(f"<span class='lf-chip {'lf-up' if np.isfinite(null) and z > null else 'lf-noise'} lf-read-token' "
                    f"data-tip='z = {z:.2f} over the vocabulary ({esc(how)})'>{esc(_visible(t))}</span>"
                    for t, z in tokens)


def _spectrum_html(matrices: list[dict]) -> str:
    """Per changed matrix: its place, the bars of σ₁..σ₈ (relative to σ₁; a rank-one edit shows one
    bar), rank, relative change and role, then its top directions in tokens."""
    if not matrices:
        return "<div class='lf-sub'>no matrix differs</div>"
    parts = [f"<div class='lf-sub'>ΔW per changed matrix: σ{SUB[0]}..σ{SUB[TOP_SV - 1]}, top {DIRECTIONS} "
             "directions in tokens</div>"]
    for m in matrices[:SHOWN_MATRICES]:
        s1 = m["sv"][0] or 1.0
        bars = "".join(
            f"<span class='lf-sv{'' if s > s1 * 1e-3 else ' lf-sv-zero'}' style='height:{max(1.0, 100 * s / s1):.0f}%' "
            f"data-tip='σ{i + 1} = {s:.4g}'></span>" for i, s in enumerate(m["sv"]))
        values = ", ".join(_num(s) for s in m["sv"][: max(1, min(m["rank"], 3))])
        dirs = "".join(f"<div class='lf-direction'>{_readout_sentence(m, i)}</div>" for i in range(len(m["sides"])))
        tip = (f"{_where(m)}: ‖ΔW‖/‖W‖ = {m['rel']:.3e}, rank {m['rank']}; {ROLE_WORDS[m['role']]}. Bars: the "
               f"singular values of ΔW relative to σ₁")
        parts.append(f"<div class='lf-spectrum' data-layer='{m['layer']}'><div class='lf-spectrum-head'>"
                     f"<b class='lf-spectrum-where' data-tip='{esc(tip)}'>{esc(_where(m))}</b> "
                     f"<span class='lf-sv-bars'>{bars}</span><span class='lf-sv-values'>σ {values}"
                     f"{' …' if m['rank'] > 3 else ''}</span> · rank {m['rank']} · {m['role']}</div>{dirs}</div>")
    if len(matrices) > SHOWN_MATRICES:
        parts.append(f"<div class='lf-hint'>and {len(matrices) - SHOWN_MATRICES} more changed matrices</div>")
    return "".join(parts)


def _texts_line(baseline, mean) -> str:
    """Whether any text moved beyond noise, in one line (the head's); how z is made in its tip."""
    if not baseline.n:
        return "<div class='lf-diff-noise'>no text to compare</div>"
    if np.nanmax(mean) == 0:
        return "<div class='lf-diff-noise'>nothing moved: every text's KL is 0</div>"
    top = int(np.nanargmax(np.where(np.isfinite(baseline.z), baseline.z, -np.inf)))
    z = baseline.z[top]
    zs = f"{z:.1f}" if np.isfinite(z) else "∞"
    tip = esc(_baseline_words(baseline))
    over = (f"over the dataset's median (text {top}: {_nats(float(mean[top]))} nats, median {_nats(baseline.median)}; "
            f"beyond noise: z &gt; {baseline.threshold:g})")
    if not len(baseline.moved):
        return (f"<div class='lf-diff-noise'><span class='lf-diff-texts' data-tip='{tip}'>nothing moved beyond noise: "
                f"the largest text KL is z = {zs} {over}</span></div>")
    n = len(baseline.moved)
    return (f"<div class='lf-diff-moved'><span class='lf-diff-texts' data-tip='{tip}'><b>{n} text{'s' if n > 1 else ''} "
            f"moved beyond noise</b>: the largest text KL is z = {zs} {over}</span></div>")


def _baseline_words(baseline) -> str:
    return (f"per text: its mean KL over its tokens; z = (ln KL − median) / (1.4826·MAD of ln KL) over the dataset's "
            f"{baseline.n} texts (median {_nats(baseline.median)} nats, MAD {baseline.mad_log:.2f} in ln KL). In logs: "
            f"KL's noise spreads over orders of magnitude. Noise alone rarely reaches z = {baseline.threshold:g} "
            f"(the largest of n normal z grows like √(2 ln n): 2.9 for 60 texts, 4.3 for 10,000)")


def _text_items(kl, baseline, dataset, n: int) -> list[dict]:
    order = np.argsort(-np.nan_to_num(kl["mean"], nan=-1), kind="stable")[:n]
    items = []
    for i in order:
        z = baseline.z[i]
        flag = "▲ " if i in baseline.moved else ""
        zs = "" if np.isnan(z) else f" · z {z:.1f}" if np.isfinite(z) else " · z ∞"
        items.append({"index": int(i), "label": dataset.labels[i] if dataset.labels else "",
                      "text": f"{flag}KL {_nats(kl['mean'][i])} nats{zs} (max {_nats(kl['max'][i])}) · "
                              + " ".join(dataset.texts[i].split())})
    return items


def _num(x: float) -> str:
    return f"{x:.3g}" if x >= 0.01 or x == 0 else f"{x:.1e}"


def _row_name(label: str) -> str:
    """A lens row in words (the logit_lens view's wording), for hover tips."""
    return "embed (the input of block 0)" if label == "embed" else f"after block {label}"


def _kl_cell(x: float) -> str:
    """A KL cell: exactly 0 where the rows are the same residual, else never a misleading 0.00."""
    return "0" if x == 0 else f"{x:.0e}" if x < 0.01 else f"{x:.2f}"


def _nats(x: float) -> str:
    """A KL figure that does not read 0.000 when it is small but not zero."""
    return f"{x:.3f}" if x >= 0.01 or x == 0 else f"{x:.1e}"


def _visible(token: str) -> str:
    """A token as a chip shows it: a newline as the return sign, nothing as the empty set."""
    return token.replace("\n", "↵") or "∅"


def _short(token: str, n: int = 10) -> str:
    return token if len(token) <= n else token[: n - 1] + "…"


def _top_list(tokens, probs) -> str:
    return "\n".join(f"{p:.3f}  {t!r}" for t, p in zip(tokens, probs))
