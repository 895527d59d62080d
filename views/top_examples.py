"""top_examples: the dataset examples that most activate the focused neuron, each shown around its
peak with the tokens shaded by that neuron's activation, plus the neuron's activation histogram
over every token of the dataset. All from the dataset pass's streaming top-k: clicking any neuron
is answered from the store, without running the model.
"""
from __future__ import annotations

from typing import Literal, Optional, Union

import numpy as np
from pydantic import Field

from lensframe.graph import Node

from .base import View, ViewParams, beyond_depth, esc, html_pane
from .neurons import acts_node


def examples_node(view: View, max_tokens: int) -> Node:
    """The streaming top-k of a view with `layers` and `k` params: equal for equal params, so a
    top_examples view and a dream view over the same layers share one result."""
    layers = "all" if view.p.layers == "all" else tuple(sorted(set(view.p.layers)))
    return Node.make("neuron_top_examples", view.model, inputs=(view.tokens_node(max_tokens),),
                     layers=layers, k=view.p.k)


def layer_issues(layers, info) -> list:
    """A `layers` param's layers the model does not have."""
    chosen = [] if layers == "all" else layers
    return [(("layers", i), *beyond_depth(layer, info)) for i, layer in enumerate(chosen) if not 0 <= layer < info.n_layers]


class TopExamplesView(View):
    type = "top_examples"
    default_title = "Top examples"
    description = "dataset examples that most activate the focused neuron, and its activation histogram"
    reads = ("layer", "neuron", "text")
    sets = ("sample", "text", "position")

    class Params(ViewParams):
        layers: Union[Literal["all"], list[int]] = Field("all", description="layers whose neurons are indexed")
        k: int = Field(10, ge=1, le=100, description="examples kept per neuron")

    def node(self, max_tokens: int) -> Node:
        return examples_node(self, max_tokens)

    def needs(self, max_tokens):
        # the activations of a focused probe, placed against the dataset's histogram and top-k
        return [self.tokens_node(max_tokens), self.node(max_tokens), acts_node(self, max_tokens)]

    def check(self, info):
        return super().check(info) + layer_issues(self.p.layers, info)

    def render(self, ctx):
        import panel as pn

        from .widgets import TokenStrip, histogram_svg

        res = ctx.result(self.node(ctx.board.spec.dataset.max_tokens))
        layers, neuron = res.meta["layers"], ctx.get("neuron")
        layer = ctx.layer(default=layers[0])
        if neuron is None:
            return html_pane("<div class='lf-hint'>click a neuron (in the neurons or ffn_vocab view) "
                                "to see the examples that excite it</div>", sizing_mode="stretch_width")
        if layer not in layers:
            return html_pane(f"<div class='lf-hint'>layer {layer} is not indexed by this view "
                                f"(layers: {layers})</div>", sizing_mode="stretch_width")
        li = layers.index(layer)
        ds = ctx.board.dataset
        strings = ctx.result(self.tokens_node(ctx.board.spec.dataset.max_tokens)).meta["strings"]
        before, _ = res.meta["window"]
        hist, edges = res["hist"][li, neuron], res["edges"]
        best = res["values"][li, neuron]
        nz = np.nonzero(hist)[0]  # draw only the occupied range (bins span |m| up to ~200)
        lo, hi = (max(0, int(nz[0]) - 1), min(len(hist), int(nz[-1]) + 2)) if len(nz) else (0, len(hist))
        hist, edges = hist[lo:hi], edges[lo:hi + 1]
        probe = self._probe_place(ctx, layer, neuron, res["hist"][li, neuron], res["edges"], best)
        parts = [html_pane(
            f"<div class='lf-top-head'>neuron <b class='lf-neuron'>{layer}.{neuron}</b> · max activation "
            f"{best[0]:+.3f} · {int(hist.sum())} tokens</div>"
            f"{histogram_svg(hist.tolist(), edges.tolist(), float(best[0]), probe=probe and probe['value'])}"
            + (probe["html"] if probe else ""), sizing_mode="stretch_width")]
        for rank, (value, s, p, win) in enumerate(zip(best, res["samples"][li, neuron], res["positions"][li, neuron],
                                                      res["windows"][li, neuron])):
            if s < 0:
                break
            start = max(0, int(p) - before)  # win[j] is position p - before + j
            off = start - (int(p) - before)
            toks = strings[s][start : start + len(win) - off]
            shade = [max(0.0, float(v) / float(value)) if value > 0 and not np.isnan(v) else 0.0
                     for v in win[off : off + len(toks)]]
            label = f" · {esc(ds.labels[s])}" if ds.labels else ""
            head = html_pane(f"<div class='lf-example-head'>#{rank + 1} · sample {int(s)}{label} · "
                                f"{value:+.3f} at position {int(p)}</div>", sizing_mode="stretch_width")
            strip = TokenStrip(tokens=toks, shade=shade[: len(toks)], selected=int(p) - start, sizing_mode="stretch_width",
                               css_classes=["lf-example"],
                               on_click=lambda index, s=int(s), start=start: ctx.set(sample=s, text=None, position=start + index))
            parts += [head, strip]
        return pn.Column(*parts, sizing_mode="stretch_both", scroll=True, css_classes=["lf-view-top-examples"])

    def _probe_place(self, ctx, layer: int, neuron: int, hist, edges, best) -> dict | None:
        """Where the focused probe's peak activation of the neuron falls in the dataset: its share
        of the dataset's tokens below it (from the histogram, to the bin) and its rank among the
        top-k examples. None when no probe is focused."""
        if ctx.probe is None:
            return None
        acts = ctx.focus_result(acts_node(self, ctx.board.spec.dataset.max_tokens))["acts"][layer, :, neuron]
        pos = int(np.argmax(acts))
        value = float(acts[pos])
        tokens = ctx.tokens()
        below = int(hist[: int(np.searchsorted(edges[1:-1], value, side="right"))].sum())
        share = below / max(int(hist.sum()), 1)
        kept = best[~np.isnan(best)] if np.issubdtype(best.dtype, np.floating) else best
        rank = int((kept > value).sum()) + 1
        where = (f"would rank <b class='lf-probe-rank'>#{rank}</b> of the top {len(kept)}" if rank <= len(kept)
                 else f"below the top {len(kept)} (the {len(kept)}th is {float(kept[-1]):+.3f})")
        html = (f"<div class='lf-probe-place'>{ctx.subject_label()}: peak <b class='lf-probe-value'>{value:+.3f}</b> "
                f"at position {pos} <code>{esc(repr(tokens[pos]))}</code> (green line) · above "
                f"{100 * share:.0f}% of the dataset's tokens (to the histogram bin) · {where}</div>")
        return {"value": value, "html": html}
