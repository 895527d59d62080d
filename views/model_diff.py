"""model_diff: what differs between two models of the same shape (the audit game, with the original).

Per layer, the relative weight change and the rank of the largest changed matrix (a ROME edit is
rank one); the texts whose next-token distributions moved most (KL over the dataset); and at the
focused sample and token, the tokens whose probability moved most and both models' logit lens
side by side, its rows labelled as the logit_lens view labels them (embed, then blocks 0..n-1).
Clicking a layer (in the bars or the paired lens) focuses it; clicking a text focuses it.

The card is three columns, so the paired lens is in view without scrolling the card: weights and
texts | the moved tokens | the paired lens (fitted to the card's height, its header pinned).
Components are kept across focus changes (ctx.part): a click patches their data in place.
"""
from __future__ import annotations

from typing import ClassVar, Optional

import numpy as np
from pydantic import Field

from lensframe.graph import Node
from lensframe.ops.compare import layer_ranking

from .base import VIEW_CSS, View, ViewParams, esc, html_part, layout_part

# Chips' hover tips drawn by the page (an HTML pane runs no script, so CSS draws them: a native
# `title` shows late and unstyled). Fixed with no offsets, a tip sits where it would in the text
# (after the chip's text, pushed below it by its margin) but outside the column's overflow clip.
TIP_CSS = """
.lf-moved { cursor: default; }
.lf-moved[data-tip]:hover::after { content: attr(data-tip); position: fixed; z-index: 20;
  margin: 1.5em 0 0 -6em; padding: 3px 6px; border-radius: 4px; background: rgba(33, 37, 41, 0.94); color: #fff;
  font: 11px/1.35 ui-monospace, monospace; white-space: pre; pointer-events: none; }
.lf-moved-up, .lf-moved-down { line-height: 1.6; }
.lf-diff-caption { color: #555; }
"""
# The lens rows' axis title, in the logit_lens view's words: the rows are the same.
ROW_TITLE = "layer (embed, then after block i) →"
KL_SCALE = 1.0  # nats: the KL column's darkest shade (a fixed scale, so a token where nothing moved looks pale)


class ModelDiffView(View):
    type = "model_diff"
    default_title = "Model diff"
    description = "two models compared: weight change per layer (with rank), the texts that changed most, and the focused token"
    reads = ("sample", "text", "position", "layer")
    sets = ("layer", "sample", "text", "position")
    model_params: ClassVar[tuple[str, ...]] = ("other",)

    class Params(ViewParams):
        other: Optional[str] = Field(None, description="the model compared with `model` (default: the spec's other model)")
        texts: int = Field(15, ge=1, le=200, description="texts listed, by how much their predictions changed")
        top: int = Field(8, ge=1, le=50, description="tokens listed whose probability rose, and fell, the most")

    _max_tokens: Optional[int] = None  # the dataset's, remembered by needs() for lens_node()

    @property
    def other(self) -> str | None:
        if self.p.other:
            return self.p.other
        return next((name for name in self.infos if name != self.model), None)

    def weights_node(self) -> Node:
        return Node.make("weight_diff", self.model, other=self.other)

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
        issues = super().check(info)
        if self.other is None:
            return issues + [((), "model_diff needs two models", "add a second model under `models:` (e.g. the base model)")]
        if self.other == self.model:
            return issues + [(("other",), f"compares model {self.model!r} with itself", "name the other model")]
        theirs = self.infos.get(self.other)
        if theirs is not None:
            shape = lambda i: (i.family, i.n_layers, i.d_model, i.d_mlp, i.n_heads, i.vocab_size)  # noqa: E731
            if shape(info) != shape(theirs):
                issues.append((("other",), f"models {self.model!r} and {self.other!r} differ in shape "
                               f"({shape(info)} vs {shape(theirs)}): model_diff compares two versions of one model", None))
        return issues

    # --- rendering ------------------------------------------------------------------------------
    def render(self, ctx):
        import panel as pn

        from .widgets import BarList, HeatGrid, SampleList

        max_tokens = ctx.board.spec.dataset.max_tokens
        a, b = self.model, self.other
        # the weight diff and the dataset KL change with neither the focus nor the session: made once
        ranking, layer_items = ctx.keep("layers", lambda: _layer_items(ctx.result(self.weights_node())))
        text_items = ctx.keep("texts", lambda: _text_items(ctx.result(self.kl_node(max_tokens)), ctx.board.dataset,
                                                            self.p.texts))
        focused_layer = ctx.get("layer")
        top = ranking[0][0]
        head = html_part(
            ctx, "head",
            f"<div class='lf-diff-models'><b>{esc(a)}</b> vs <b>{esc(b)}</b> · most changed: "
            f"<b class='lf-top-layer'>{'other' if top < 0 else f'layer {top}'}</b></div>"
            "<div class='lf-sub'>weight change per layer: ‖ΔW‖/‖W‖ (no unit), and the rank of its largest change</div>",
            sizing_mode="stretch_width")
        layers = ctx.part("layers", BarList, items=layer_items,
                          selected=focused_layer if focused_layer is not None else -99,
                          init={"kind": "layer-diff", "sizing_mode": "stretch_both", "min_height": 60},
                          on_click=lambda key: ctx.set(layer=key) if key >= 0 else None)
        texts_head = html_part(ctx, "texts-head", "<div class='lf-sub'>texts whose predictions changed most: mean "
                               f"KL({esc(a)} ‖ {esc(b)}) over the text's tokens, nats</div>", sizing_mode="stretch_width")
        texts = ctx.part("texts", SampleList, items=text_items, selected=-1 if ctx.probe else ctx.sample,
                         init={"sizing_mode": "stretch_both", "min_height": 60},
                         on_click=lambda index: ctx.set(sample=index, text=None, position=None))

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
        # the paired lens gets the widest column: three columns of tokens, probabilities and KL
        left = layout_part(ctx, "left", head, layers, texts_head, texts, sizing_mode="stretch_both",
                           styles={"flex": "1 1 0"})
        middle = layout_part(ctx, "middle", moved, sizing_mode="stretch_both", styles={"flex": "1 1 0"})
        right = layout_part(ctx, "right", caption, grid, sizing_mode="stretch_both", styles={"flex": "1.3 1 0"})
        return layout_part(ctx, "layout", left, middle, right, cls=pn.Row, sizing_mode="stretch_both",
                           css_classes=["lf-view-model-diff"])

    def _moved_html(self, ctx, lens, tokens, pos) -> str:
        a, b = self.model, self.other
        moved = [esc(_visible(t)) for t in ctx.decode(lens["moved_ids"])]
        half = len(moved) // 2

        def chips(sl, cls):
            return " ".join(
                f"<span class='lf-chip lf-moved {cls}' data-tip='{esc(a)}: {pa:.4f} → {esc(b)}: {pb:.4f} "
                f"({pb - pa:+.4f})'>{t} <small>{pa:.3f}→{pb:.3f}</small></span>"
                for t, pa, pb in zip(moved[sl], lens["moved_a"][sl], lens["moved_b"][sl]))

        return (f"<div class='lf-sub lf-diff-focus-head'>{ctx.subject_label()} · position <b class='lf-position'>{pos}</b>"
                f" <code>{esc(repr(tokens[pos]))}</code>: the next token's probability, {esc(a)} → {esc(b)}</div>"
                f"<div class='lf-moved-up'>rose: {chips(slice(0, half), 'lf-up')}</div>"
                f"<div class='lf-moved-down'>fell: {chips(slice(half, None), 'lf-down')}</div>")

    def _pair_lens(self, ctx, lens):
        """The paired lens as HeatGrid params: a row per lens row (final on top, as the logit_lens
        view draws them, with its labels), a column per model (its top-1 token and probability,
        shaded by the probability) and KL(a ‖ b) of the row's two distributions in nats, shaded on a
        fixed scale (KL_SCALE)."""
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
            texts.append([f"{_short(ta)} {lens['prob_a'][l]:.2f}", f"{_short(tb)} {lens['prob_b'][l]:.2f}",
                          f"{'=' if same else '≠'} {_kl_cell(float(kl[l]))}"])
            values.append([float(lens["prob_a"][l]), float(lens["prob_b"][l]), min(1.0, float(kl[l]) / KL_SCALE)])
            where = _row_name(labels[l])
            tips.append([f"{where} · {a}: top tokens\n" + _top_list(tok["a"][l], lens["probs_a"][l]),
                         f"{where} · {b}: top tokens\n" + _top_list(tok["b"][l], lens["probs_b"][l]),
                         f"{where}\nKL({a} ‖ {b}) = {kl[l]:.4g} nats\ntop-1 {'the same' if same else 'differs'}: "
                         f"{ta!r} / {tb!r}"])
        focus_layer = ctx.get("layer")
        sel = next((i for i, l in enumerate(order) if blocks[l] == focus_layer), -1) if focus_layer is not None else -1

        def clicked(row, col):
            layer = blocks[order[row]]  # the "embed" row is no block
            if layer >= 0:
                ctx.set(layer=layer)

        head = (f"<div class='lf-sub lf-pair-lens-head'>logit lens here: each model's top-1 token and probability per "
                f"layer; KL in nats (dark ≥ {KL_SCALE:g}); <span class='lf-lens-differs'>≠</span> top-1 differs "
                f"(<b class='lf-differs-count'>{differs}</b> of {L} rows)</div>")
        params = dict(row_labels=[labels[l] for l in order], row_tips=[_row_name(labels[l]) for l in order],
                      col_labels=[a, b, f"KL({a}‖{b})"], texts=texts, values=values, tips=tips, selected_row=sel,
                      selected_col=-1, col_title="model → (each cell: top-1 token, probability)")
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


def _text_items(kl, dataset, n: int) -> list[dict]:
    order = np.argsort(-np.nan_to_num(kl["mean"], nan=-1))[:n]
    return [{"index": int(i), "label": dataset.labels[i] if dataset.labels else "",
             "text": f"KL {_nats(kl['mean'][i])} nats (max {_nats(kl['max'][i])}) · " + " ".join(dataset.texts[i].split())}
            for i in order]


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
