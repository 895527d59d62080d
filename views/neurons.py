"""neurons: the MLP neurons of the focused layer at the focused token, ranked by activation m_i
and by the size of their sub-update |m_i| ||v_i|| (Geva et al. 2022), with the focused neuron's
activation over the whole sample. Clicking a neuron sets focus.neuron; a token, focus.position.
"""
from __future__ import annotations

import numpy as np
from pydantic import Field

from lensframe.graph import Node

from .base import View, ViewParams, esc, html_pane


def acts_node(view: View, max_tokens: int) -> Node:
    """Every MLP activation of the focused sample or probe (a focus node shared by the views that read it)."""
    return Node.make("neuron_acts", view.model, inputs=(view.tokens_node(max_tokens),))


class NeuronsView(View):
    type = "neurons"
    default_title = "Neurons"
    description = "MLP neurons at the focused token, ranked by activation and by |m_i| ||v_i||"
    reads = ("sample", "text", "position", "layer", "neuron")
    sets = ("neuron", "position")

    class Params(ViewParams):
        top_n: int = Field(15, ge=1, le=200, description="neurons listed in each ranking")

    def acts_node(self, max_tokens: int) -> Node:
        return acts_node(self, max_tokens)

    def norms_node(self) -> Node:
        return Node.make("value_norms", self.model)

    def needs(self, max_tokens):
        return [self.tokens_node(max_tokens), self.acts_node(max_tokens), self.norms_node()]

    def render(self, ctx):
        import panel as pn

        from .widgets import BarList, TokenStrip

        max_tokens = ctx.board.spec.dataset.max_tokens
        acts = ctx.focus_result(self.acts_node(max_tokens))["acts"]  # [layers, T, d_mlp]
        norms = ctx.prepared(self.norms_node())["norms"]
        tokens = ctx.tokens()
        layer, pos = ctx.layer(), ctx.position(len(tokens))
        m = acts[layer, pos]
        size = np.abs(m) * norms[layer]
        neuron = ctx.get("neuron")
        n = self.p.top_n

        def ranked(order, values, note):
            top = float(np.abs(values[order]).max()) or 1.0
            # bars are signed by m (red: m < 0), also when ranked by the unsigned |m| ||v||
            return [{"key": int(i), "label": f"{layer}.{int(i)}", "bar": abs(float(values[i])) / top * np.sign(m[i] or 1),
                     "note": note(int(i))} for i in order]

        by_act = np.argsort(-m)[:n]
        by_size = np.argsort(-size)[:n]
        pick = lambda key: ctx.set(neuron=key)  # noqa: E731
        lists = pn.Row(
            pn.Column(html_pane("<div class='lf-sub'>by activation m<sub>i</sub></div>"),
                      BarList(items=ranked(by_act, m, lambda i: f"m={m[i]:+.3f}"), selected=neuron if neuron is not None else -1,
                              kind="neuron", sizing_mode="stretch_both", on_click=pick), sizing_mode="stretch_both"),
            pn.Column(html_pane("<div class='lf-sub'>by |m<sub>i</sub>| ‖v<sub>i</sub>‖</div>"),
                      BarList(items=ranked(by_size, size, lambda i: f"m={m[i]:+.3f} |v|={norms[layer, i]:.2f}"),
                              selected=neuron if neuron is not None else -1, kind="neuron",
                              sizing_mode="stretch_both", on_click=pick), sizing_mode="stretch_both"),
            sizing_mode="stretch_both")
        parts = [html_pane(
            f"<div class='lf-neurons-head'>{ctx.subject_label()} · layer <b class='lf-layer'>{layer}</b> · "
            f"position <b class='lf-position'>{pos}</b> <code>{esc(repr(tokens[pos]))}</code> · "
            f"{acts.shape[-1]} neurons</div>", sizing_mode="stretch_width")]
        if neuron is not None and neuron < acts.shape[-1]:
            strip = acts[layer, :, neuron]
            scale = float(np.abs(strip).max()) or 1.0
            parts.append(html_pane(f"<div class='lf-sub'>neuron <b class='lf-neuron'>{layer}.{neuron}</b> "
                                      f"over the {'probe' if ctx.probe else 'sample'} (max {strip.max():+.3f})</div>"))
            parts.append(TokenStrip(tokens=tokens, shade=[max(0.0, float(v) / scale) for v in strip], selected=pos,
                                    sizing_mode="stretch_width", on_click=lambda index: ctx.set(position=index)))
        parts.append(lists)
        return pn.Column(*parts, sizing_mode="stretch_both", css_classes=["lf-view-neurons"])
