"""ffn_vocab: FFN value vectors in the vocabulary (Geva et al. 2022; LM-Debugger).

Static: the focused neuron's value vector projected to the vocabulary, E v_i (no final norm, as
LM-Debugger): the tokens it promotes and suppresses. Dynamic: at the focused token and layer, the
sub-updates m_i v_i ranked by |m_i| ||v_i|| with the tokens each promotes, and the top tokens of
the residual before and after the MLP (decoded as the logit lens does). Intervention: set
sub-updates (m_i = 0 turns one off) and see the next-token prediction change; the edit is a hook on
the activations in a focus pass, never a change of the weights.
"""
from __future__ import annotations

from pydantic import Field

from lensframe.graph import Node

from .base import View, ViewParams, esc, html_part, layout_part, neuron_label


class FfnVocabView(View):
    type = "ffn_vocab"
    default_title = "FFN value vectors"
    description = "value vectors projected to the vocabulary; sub-updates at the focused token; edits"
    reads = ("sample", "text", "position", "layer", "neuron")
    sets = ("neuron",)

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
                f"{'E·norm<sub>f</sub>(v), through the final norm' if self.p.final_norm else 'E·v, without the final norm'}<br>"
                f"promotes: <span class='lf-promoted'>{chips(st['promoted_ids'], st['promoted'])}</span><br>"
                f"suppresses: <span class='lf-suppressed'>{chips(st['suppressed_ids'], st['suppressed'])}</span></div>")
        # always in the layout, hidden without a neuron: a part taken out and put back gets new Bokeh models
        parts.append(html_part(ctx, "static", static, visible=has_neuron, sizing_mode="stretch_width"))
        top = float(dyn["size"].max()) or 1.0
        items = [{"key": int(i), "label": neuron_label(layer, int(i)), "bar": float(s) / top * (1 if m >= 0 else -1),
                  "note": f"m={m:+.3f} |v|={nv:.2f} → " + " ".join(repr(t) for t in ctx.decode(ids))}
                 for i, m, nv, s, ids in zip(dyn["neurons"], dyn["m"], dyn["norm"], dyn["size"], dyn["token_ids"])]
        parts.append(html_part(ctx, "sub", "<div class='lf-sub'>sub-updates m<sub>i</sub>v<sub>i</sub> at this token, by "
                                  "|m<sub>i</sub>| ‖v<sub>i</sub>‖ (red: m &lt; 0), with the tokens each promotes</div>"))
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
