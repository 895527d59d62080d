"""ffn_vocab: FFN value vectors in the vocabulary (Geva et al. 2022; LM-Debugger).

Static: the focused neuron's value vector projected to the vocabulary, E v_i (no final norm, as
LM-Debugger): the tokens it promotes and suppresses. Dynamic: at the focused token and layer, the
sub-updates m_i v_i ranked by |m_i| ||v_i|| with the tokens each promotes, and the top tokens of
the residual before and after the MLP (decoded as the logit lens does). Intervention: set
sub-updates (m_i = 0 turns one off) and see the next-token prediction change; the edit is a hook on
the activations in a focus pass, never a change of the weights.
"""
from __future__ import annotations

import numpy as np
from pydantic import Field

from lensframe.graph import Node

from .base import View, ViewParams, esc, html_part, layout_part, neuron_label

SUB_HEADING = ("<div class='lf-sub'>sub-updates m<sub>i</sub>v<sub>i</sub> at this token, by "
               "|m<sub>i</sub>| ‖v<sub>i</sub>‖ (red: m &lt; 0), with the tokens each promotes</div>")
# the editor's place in an exported page (views/js/ffn_vocab.js puts it there): the rest stays linked
EDIT_NOTE = ("<div class='lf-export-missing lf-ffn-edit-note lf-hint'>Not in this exported page: setting a "
             "neuron's activation m<sub>i</sub> at this token runs a forward of the model with the edit, so it "
             "needs lensframe serve. The rest of this view follows the page's focus.</div>")
LENS_K = 10  # tokens of the residual before and after the MLP (ffn_dynamic's _lens)
SUB_K = 3  # tokens listed per sub-update (the dynamic node's k)
RMS_FAMILIES = ("llama",)  # final norm without a bias (RMSNorm): sub-updates' tokens are read from the static ones


class FfnVocabView(View):
    type = "ffn_vocab"
    default_title = "FFN value vectors"
    description = "value vectors projected to the vocabulary; sub-updates at the focused token; edits"
    reads = ("sample", "text", "position", "layer", "neuron")
    sets = ("neuron",)
    export_script = "js/ffn_vocab.js"
    export_by_layer = True

    class Params(ViewParams):
        top_n: int = Field(10, ge=1, le=100, description="sub-updates listed at the focused token")
        k: int = Field(8, ge=1, le=50, description="tokens shown per value vector")
        final_norm: bool = Field(False, description="project value vectors (and sub-updates) through the model's "
                                 "final norm before the unembedding, as the logit lens reads a residual; default "
                                 "false, as Geva et al. 2022 and LM-Debugger project E·v")

    def nodes(self, max_tokens: int) -> dict:
        tokens = self.tokens_node(max_tokens)
        acts = Node.make("neuron_acts", self.model, inputs=(tokens,))
        resid = Node.make("residuals", self.model, inputs=(tokens,))
        norms = Node.make("value_norms", self.model)
        return {
            "tokens": tokens, "acts": acts, "resid": resid, "norms": norms,
            "static": Node.make("ffn_static", self.model, k=self.p.k, **self._norm()),
            "dynamic": Node.make("ffn_dynamic", self.model, inputs=(acts, resid, norms), top_n=self.p.top_n, k=3,
                                 **self._norm()),
            "edit": Node.make("ffn_edit", self.model, inputs=(resid,), k=10),
        }

    def _norm(self) -> dict:
        # only when set, so the nodes (and their store keys) of specs that leave it out stay the same
        return {"final_norm": True} if self.p.final_norm else {}

    def needs(self, max_tokens):
        return list(self.nodes(max_tokens).values())

    def _projection(self) -> str:
        return 'E·norm<sub>f</sub>(v), through the final norm' if self.p.final_norm else 'E·v, without the final norm'

    def render(self, ctx):
        from .widgets import BarList

        nodes = self.nodes(ctx.board.spec.dataset.max_tokens)
        tokens = ctx.tokens()
        layer, pos, sample = ctx.layer(), ctx.position(len(tokens)), ctx.subject  # a sample or a probe
        neuron = ctx.get("neuron")
        dyn = ctx.lookup(nodes["dynamic"], sample=sample, layer=layer, position=pos)
        chips = lambda ids, vals=None: " ".join(  # noqa: E731
            f"<span class='lf-chip'>{esc(repr(t))}{'' if vals is None else f' <small>{v:.2f}</small>'}</span>"
            for t, v in zip(ctx.decode(ids), vals if vals is not None else [None] * len(ids)))
        parts = [html_part(
            ctx, "head",
            f"<div class='lf-ffn-head'>{ctx.subject_label()} · layer <b class='lf-layer'>{layer}</b> · position "
            f"<b class='lf-position'>{pos}</b> <code>{esc(repr(tokens[pos]))}</code></div>", sizing_mode="stretch_width")]
        has_neuron = neuron is not None and neuron < ctx.board.infos[self.model].d_mlp
        static = ""
        if has_neuron:
            st = ctx.lookup(nodes["static"], layer=layer, neuron=neuron)
            static = (
                f"<div class='lf-ffn-static'>value vector <b class='lf-neuron'>{neuron_label(layer, neuron)}</b> "
                f"(‖v‖ = {float(st['norm']):.3f}), "
                f"{self._projection()}<br>"
                f"promotes: <span class='lf-promoted'>{chips(st['promoted_ids'], st['promoted'])}</span><br>"
                f"suppresses: <span class='lf-suppressed'>{chips(st['suppressed_ids'], st['suppressed'])}</span></div>")
        # always in the layout, hidden without a neuron: a part taken out and put back gets new Bokeh models
        parts.append(html_part(ctx, "static", static, visible=has_neuron, sizing_mode="stretch_width"))
        top = float(dyn["size"].max()) or 1.0
        items = [{"key": int(i), "label": neuron_label(layer, int(i)), "bar": float(s) / top * (1 if m >= 0 else -1),
                  "note": f"m={m:+.3f} |v|={nv:.2f} → " + " ".join(repr(t) for t in ctx.decode(ids))}
                 for i, m, nv, s, ids in zip(dyn["neurons"], dyn["m"], dyn["norm"], dyn["size"], dyn["token_ids"])]
        parts.append(html_part(ctx, "sub", SUB_HEADING))
        parts.append(ctx.part("bars", BarList, items=items, selected=neuron if neuron is not None else -1,
                              height=min(19 * len(items) + 8, 240), init={"kind": "subupdate", "sizing_mode": "stretch_width"},
                              on_click=lambda key: ctx.set(neuron=key)))
        parts.append(html_part(
            ctx, "resid",
            f"<div class='lf-ffn-resid'>before the MLP: <span class='lf-before'>{chips(dyn['before_ids'], dyn['before_probs'])}</span><br>"
            f"after the MLP: <span class='lf-after'>{chips(dyn['after_ids'], dyn['after_probs'])}</span></div>",
            sizing_mode="stretch_width"))
        parts.append(self._editor(ctx, nodes["edit"], sample, layer, pos, neuron, dyn))
        return layout_part(ctx, "layout", *parts, sizing_mode="stretch_both", scroll=True,
                           css_classes=["lf-view-ffn-vocab"])

    def _editor(self, ctx, edit_node, sample, layer, pos, neuron, dyn):
        """Set m_i for chosen neurons at this token and compare the next-token prediction."""
        import panel as pn

        d_mlp = ctx.board.infos[self.model].d_mlp
        where = (sample, pos)
        if ctx.state.get("where") != where:  # edits belong to one token of one sample (or probe)
            ctx.state.update(where=where, edits=[])
        default = int(neuron if neuron is not None else dyn["neurons"][0])
        which = ctx.part("which", pn.widgets.IntInput, end=d_mlp - 1,
                         init={"label": "neuron", "value": default, "start": 0, "width": 90, "css_classes": ["lf-edit-neuron"]})
        if ctx.state.get("default") != default:  # follow the focused neuron, but keep what the user typed until it moves
            ctx.state["default"] = which.value = default
        value = ctx.part("value", pn.widgets.FloatInput,
                         init={"label": "set m to", "value": 0.0, "width": 90, "css_classes": ["lf-edit-value"]})
        result = html_part(ctx, "result", "", sizing_mode="stretch_width", css_classes=["lf-edit-result-pane"])

        def show():
            edits = ctx.state["edits"]
            if not edits:
                result.object = "<div class='lf-hint'>no edit: set a neuron's activation here and apply</div>"
                return
            res = ctx.lookup(edit_node, sample=sample, position=pos, edits=tuple(edits))
            names = dict(zip(res["ids"].tolist(), ctx.decode(res["ids"])))
            rows = "".join(
                f"<tr class='lf-edit-row' data-token='{int(t)}'><td>{esc(repr(names[int(t)]))}</td>"
                f"<td>{b:.4f}</td><td>{a:.4f}</td><td>{a - b:+.4f}</td></tr>"
                for t, b, a in sorted(zip(res["ids"], res["base_probs"], res["edited_probs"]), key=lambda r: -r[2])[:10])
            what = ", ".join(f"m[{neuron_label(l, i)}]={v:g}" for l, _, i, v in edits)
            result.object = (f"<div class='lf-edit-result'>next token after position {pos} with {esc(what)}:"
                             f"<table><tr><th>token</th><th>before</th><th>after</th><th>change</th></tr>{rows}</table></div>")

        def on_apply(_):
            ctx.state["edits"] = [e for e in ctx.state["edits"] if e[2] != which.value] + [(layer, pos, which.value, value.value)]
            show()

        def on_clear(_):
            ctx.state["edits"] = []
            show()

        apply = ctx.part("apply", pn.widgets.Button, on_click=on_apply, init={
            "label": "apply", "color": "primary", "width": 70, "css_classes": ["lf-edit-apply"]})
        clear = ctx.part("clear", pn.widgets.Button, on_click=on_clear,
                         init={"label": "clear", "width": 70, "css_classes": ["lf-edit-clear"]})
        show()
        note = html_part(ctx, "edit-note", "<div class='lf-sub'>intervene at this token (a hook on the activations; "
                                           "the weights are untouched)</div>")
        row = layout_part(ctx, "edit-row", which, value, apply, clear, cls=pn.Row)
        return layout_part(ctx, "edit", note, row, result, sizing_mode="stretch_width", css_classes=["lf-ffn-edit"])

    # --- export (views/js/ffn_vocab.js): at every exported (sample, layer, position) the listed
    # sub-updates and the residual's tokens before and after the MLP; at every exported layer the
    # static projection of each neuron a click in the page can focus; computed in bulk
    # (lensframe/ffn_bulk.py), not one lookup per focus. The editor is a note: it runs the model.
    def _export_layers(self, info, options) -> list[int]:
        return [l for l in (options.layers if options.layers is not None else range(info.n_layers)) if l < info.n_layers]

    def export_data(self, ex):
        from lensframe.export_pack import ExportData, fixed_digits, smallest_uint
        from lensframe.ffn_bulk import dynamic_tops, scale_invariant, static_tops, sub_update_tokens

        board, info = ex.board, ex.board.infos[self.model]
        nodes = self.nodes(board.spec.dataset.max_tokens)
        layers = self._export_layers(info, ex.options)
        adapter = board.executor.model(self.model).adapter
        first = ex.context(ex.samples[0])
        norms = first.prepared(nodes["norms"])["norms"]  # [layers, d_mlp]
        n, k, K = min(self.p.top_n, info.d_mlp), self.p.k, max(self.p.k, SUB_K)
        # the neurons a click can focus at each layer: those listed here, in a neurons view of the
        # page (its two rankings), by another view (export_neurons), the page's and the pin's
        others = [v for v in board.views.values() if v.model == self.model and v is not self and not v.export_refusal()]
        rankings = [v.p.top_n for v in others if v.type == "neurons"]
        focusable = {l: set() for l in layers}
        for v in others:
            for l, ids in v.export_neurons(ex).items():
                if int(l) in focusable:
                    focusable[int(l)].update(int(i) for i in ids)
        for x in (ex.options.focus.get("neuron"), self.p.pin.neuron):
            for l in layers:
                focusable[l].update([x] if x is not None else [])
        dyn = []  # [sample][layer index]: dynamic_tops
        for s in ex.samples:
            ctx = ex.context(s)
            acts = ctx.focus_result(nodes["acts"])["acts"]  # [layers, T, d_mlp]
            res = ctx.focus_result(nodes["resid"])
            row = []
            for l in layers:
                d = dynamic_tops(adapter, acts[l], norms[l], res["mid"][l], res["post"][l], n, LENS_K)
                focusable[l].update(d["neurons"].ravel().tolist())
                for top in rankings:  # the neurons view's lists: by m, and by |m| ||v|| (as its export ranks)
                    size = np.abs(acts[l]) * norms[l]
                    focusable[l].update(np.argsort(-acts[l], -1)[:, :top].ravel().tolist())
                    focusable[l].update(np.argsort(-size, -1)[:, :top].ravel().tolist())
                row.append(d)
            dyn.append(row)
        static_ids, starts, tops = [], [0], []
        for l in layers:
            ids = sorted(i for i in focusable[l] if 0 <= i < info.d_mlp)
            st = static_tops(adapter, l, ids, K, self.p.final_norm)
            static_ids.append(np.asarray(ids, dtype=np.int64))
            starts.append(starts[-1] + len(ids))
            tops.append(st)
        # each sub-update's tokens: the static projection's for m != 0 (scale-invariant), else computed
        fast = scale_invariant(adapter, self.p.final_norm) and all(
            (d["m"] != 0).all() for row in dyn for d in row)
        sub_tok = []
        if not fast:
            for row in dyn:
                for li, d in enumerate(row):
                    st = tops[li]
                    static = {int(i): (st["promoted_ids"][j], st["suppressed_ids"][j]) for j, i in enumerate(static_ids[li])}
                    T = d["neurons"].shape[0]
                    sub_tok.append(sub_update_tokens(adapter, layers[li], d["neurons"].ravel(), d["m"].ravel(), SUB_K,
                                                     self.p.final_norm, static).reshape(T, n, SUB_K))
        cat = lambda key: np.concatenate([d[key] for row in dyn for d in row])  # noqa: E731  [cells, ...]
        before_ids, after_ids = cat("before_ids"), cat("after_ids")
        prom_ids = np.concatenate([t["promoted_ids"] for t in tops]).reshape(-1, K)
        supp_ids = np.concatenate([t["suppressed_ids"] for t in tops]).reshape(-1, K)
        used = [before_ids.ravel(), after_ids.ravel(), prom_ids.ravel(), supp_ids.ravel()]
        used += [t.ravel() for t in sub_tok]
        vocab = np.unique(np.concatenate(used)).astype(np.int64)
        vdt = smallest_uint(max(len(vocab) - 1, 0))
        index = lambda ids: np.searchsorted(vocab, ids).astype(vdt)  # noqa: E731
        ndt = smallest_uint(info.d_mlp - 1)
        arrays = {
            "norms": norms[layers].astype(np.float32).ravel(),
            "sub_ids": cat("neurons").astype(ndt).ravel(), "sub_m": cat("m").astype(np.float32).ravel(),
            "before_ids": index(before_ids).ravel(), "after_ids": index(after_ids).ravel(),
            "before_p": fixed_digits(cat("before_probs"), 2).astype(np.uint8).ravel(),
            "after_p": fixed_digits(cat("after_probs"), 2).astype(np.uint8).ravel(),
            "static_ids": np.concatenate(static_ids).astype(ndt), "static_starts": np.asarray(starts, dtype=np.uint32),
            "prom_ids": index(prom_ids).ravel(), "supp_ids": index(supp_ids).ravel(),
            "prom": np.concatenate([t["promoted"][:, :k] for t in tops]).astype(np.float32).ravel(),
            "supp": np.concatenate([t["suppressed"][:, :k] for t in tops]).astype(np.float32).ravel(),
            "static_norm": np.concatenate([t["norm"] for t in tops]).astype(np.float32)}
        if sub_tok:
            arrays["sub_tok"] = index(np.concatenate(sub_tok)).ravel()
        return ExportData(
            meta={"samples": list(ex.samples), "layers": layers, "layers_text": _ranges(layers), "n": n, "k": k,
                  "K": K, "sub_k": SUB_K, "lens_k": LENS_K, "n_layers": info.n_layers, "d_mlp": info.d_mlp,
                  "vocab": [repr(t) for t in first.decode(vocab)], "projection": self._projection(),
                  "sub_heading": SUB_HEADING, "edit_note": EDIT_NOTE},
            arrays=arrays)

    def _beyond_neurons_view(self, views) -> bool:
        """Whether a neurons view of this model lists fewer neurons by |m| ||v|| than this one (its
        lists hold this one's otherwise: the same ranking, at least as long)."""
        tops = [v.p.top_n for v in views.values() if v.type == "neurons" and v.model == self.model]
        return bool(tops) and min(tops) < self.p.top_n

    def export_neurons(self, ex):
        """The sub-updates listed here at each exported layer, when a neurons view lists fewer (a
        click here focuses them: that view shows their activations over the sample)."""
        if not self._beyond_neurons_view(ex.board.views):
            return {}
        info = ex.board.infos[self.model]
        nodes = self.nodes(ex.board.spec.dataset.max_tokens)
        layers = self._export_layers(info, ex.options)
        norms = ex.context(ex.samples[0]).prepared(nodes["norms"])["norms"]
        n = min(self.p.top_n, info.d_mlp)
        out: dict[int, set] = {l: set() for l in layers}
        for s in ex.samples:
            acts = ex.context(s).focus_result(nodes["acts"])["acts"]
            for l in layers:  # as dynamic_tops ranks them
                size = np.abs(acts[l]) * norms[l]
                out[l].update(np.argsort(-size, -1)[:, :n].ravel().tolist())
        return {l: sorted(ids) for l, ids in out.items()}

    def export_neuron_count(self, shapes):
        if not self._beyond_neurons_view(shapes.board.views):
            return 0
        info = shapes.info(self.model)
        n = min(self.p.top_n, info.d_mlp)
        return len(shapes.layers(self.model)) * min(info.d_mlp, int(0.37 * n * int(shapes.lengths(self.model).sum())))

    def export_size(self, shapes):
        from lensframe.export_pack import b64_size, smallest_uint

        info = shapes.info(self.model)
        lengths = shapes.lengths(self.model)
        nl = len(shapes.layers(self.model))
        n, k, K = min(self.p.top_n, info.d_mlp), self.p.k, max(self.p.k, SUB_K)
        cells = int(lengths.sum()) * nl
        nb = np.dtype(smallest_uint(info.d_mlp - 1)).itemsize
        # neurons a click can focus at a layer: this view's lists and a neurons view's two, which
        # share most neurons from one position to the next (as the neurons view plans: 37% distinct)
        per_position = n + sum(2 * v.p.top_n for v in shapes.board.views.values()
                               if v.type == "neurons" and v.model == self.model and not v.export_refusal())
        other = sum(v.export_neuron_count(shapes) for v in shapes.board.views.values()
                    if v.model == self.model and v is not self and not v.export_refusal())
        # across samples, coverage of the layer's neurons. A few neurons are listed at many tokens,
        # so coverage grows slower than independent draws would: -log(1 - covered) = 0.84·(drawn /
        # d_mlp)^0.6, fitted on SmolLM2 with specs/neurons.yaml (50%, 83% and 94% of a layer's
        # neurons at 3, 10 and 30 samples; this gives 58%, 83% and 97%: high where it errs)
        drawn = 0.37 * per_position * int(lengths.sum())
        covered = -np.expm1(-0.84 * (drawn / info.d_mlp) ** 0.6)
        static = nl * min(info.d_mlp, int(info.d_mlp * covered) + other)
        # distinct tokens shown (the vocabulary's reprs, ~12 bytes each in JSON)
        distinct = min(info.vocab_size, int(0.3 * (cells * 2 * LENS_K + static * 2 * K)))
        vb = np.dtype(smallest_uint(max(distinct - 1, 0))).itemsize
        opens = (self.p.pin.neuron if self.p.pin.neuron is not None else shapes.options.focus.get("neuron")) is not None
        return {"norms": b64_size(nl * info.d_mlp * 4),
                "sub-updates": b64_size(cells * n * nb) + b64_size(cells * n * 4)
                # each sub-update's own tokens where the final norm is a LayerNorm (not scale-invariant)
                + (b64_size(cells * n * SUB_K * vb) if self.p.final_norm and info.family not in RMS_FAMILIES else 0),
                "residual": 2 * b64_size(cells * LENS_K * vb) + 2 * b64_size(cells * LENS_K),
                "static": b64_size(static * nb) + 2 * b64_size(static * K * vb) + 2 * b64_size(static * k * 4)
                + b64_size(static * 4) + b64_size((nl + 1) * 4),
                "vocabulary": 10 * distinct,
                # measured on the tiny models' exports: ~18 kB of components (the editor's widgets
                # included), ~120 bytes per listed sub-update and ~100 per chip
                "first render": 18_000 + n * 120 + 2 * LENS_K * 100 + (2 * k * 110 + 300 if opens else 0)}


def _ranges(indices) -> str:
    from lensframe.export_plan import ranges

    return ranges(list(indices))
