"""top_examples: the dataset examples that most activate the focused neuron, each shown around its
peak with the tokens shaded by that neuron's activation, plus a HoloViews histogram of the neuron's
activation over every token of the dataset. All from the dataset pass's streaming top-k: clicking any neuron
is answered from the store, without running the model.
"""
from __future__ import annotations

import json
from typing import Literal, Union

import numpy as np
from pydantic import Field

from lensframe.graph import Node

from .base import View, ViewParams, beyond_depth, esc, html_part, html_slot, layout_part, neuron_label
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
    export_script = "js/top_examples.js"
    export_by_layer = True
    export_by_neuron = True
    export_webgl = True

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
        from .widgets import TokenStrip

        res = ctx.result(self.node(ctx.board.spec.dataset.max_tokens))
        layers, neuron = res.meta["layers"], ctx.get("neuron")
        layer = ctx.layer(default=layers[0])
        hint = None
        if neuron is None:
            hint = "click a neuron (in the neurons or ffn_vocab view) to see the examples that excite it"
        elif layer not in layers:
            hint = f"layer {layer} is not indexed by this view (layers: {layers})"
        # Every part exists from the first render on, and a focus change sets only its data and
        # visibility: going from "no neuron" to a neuron builds no new Bokeh models either.
        shown = hint is None
        head = caption = ""
        bars = None
        # one slot per example kept (a heading and a token strip), filled or hidden by _fill
        slots = [(html_slot(ctx, f"example-head{i}"), ctx.part(f"example{i}", TokenStrip, init={
            "sizing_mode": "stretch_width", "css_classes": ["lf-example"], "visible": False})) for i in range(self.p.k)]
        if shown:
            head, bars, caption = self._fill(ctx, res, layer, neuron, slots)
        else:
            for text, strip in slots:
                text.param.update(visible=False, object="")
                strip.visible = False
        xlabel = f"activation of {neuron_label(layer, neuron)}" if shown else "activation"
        plot = histogram_part(ctx, bars, visible=shown, xlabel=xlabel)
        wide = {"sizing_mode": "stretch_width"}
        hint_html = "" if shown else f"<div class='lf-hint'>{esc(hint)}</div>"
        parts = [html_part(ctx, "hint", hint_html, visible=not shown, **wide),
                 html_part(ctx, "head", head, visible=shown, **wide), plot,
                 html_part(ctx, "caption", caption, visible=shown, **wide)]
        return layout_part(ctx, "layout", *parts, *(p for slot in slots for p in slot), sizing_mode="stretch_both",
                           scroll=True, css_classes=["lf-view-top-examples"])

    # --- export (views/js/top_examples.js): the exported neurons (--neurons, default every one) of
    # the indexed layers the page holds
    def export_data(self, ex):
        from lensframe.export_pack import ExportData, smallest_uint

        res = ex.rendered.result(self.node(ex.board.spec.dataset.max_tokens))
        indexed = list(res.meta["layers"])
        wanted = set(ex.options.layers) if ex.options.layers is not None else set(indexed)
        layers = [l for l in indexed if l in wanted]
        li = [indexed.index(l) for l in layers]
        d = int(res["samples"].shape[1])
        held = None if ex.options.neurons is None else [i for i in ex.options.neurons if i < d]
        rows = np.arange(d) if held is None else np.asarray(held, dtype=np.int64)
        ds = ex.board.dataset
        pick = lambda name: res[name][li][:, rows]  # noqa: E731  [layers, neurons, ...]
        samples = pick("samples")  # [layers, neurons, k], -1 where a neuron has fewer examples
        values, positions, windows = pick("values"), pick("positions"), pick("windows").astype(np.float32)
        # what each example's strip shades (max(0, v / its value), as _fill); the colour is all it sets
        with np.errstate(invalid="ignore", divide="ignore"):
            shade = np.where((values[..., None] > 0) & ~np.isnan(windows), np.maximum(0, windows / values[..., None]), 0)
        missing = len(ds)  # samples -1 -> the dtype's top value
        referenced = sorted({int(x) for x in np.unique(samples) if x >= 0})
        strings = ex.board.executor.tokens(self.model).meta["strings"]
        hist = pick("hist")
        return ExportData(
            meta={"layers": layers, "indexed": indexed, "indexed_text": str(indexed),
                  "exported_text": _ranges(layers), "k": self.p.k, "window": list(res.meta["window"]),
                  "edges": [float(e) for e in res["edges"]], "n_layers": ex.board.infos[self.model].n_layers,
                  "d_mlp": d, "neurons": held, "neurons_text": None if held is None else _ranges(held),
                  "exported": list(ex.samples),
                  "strings": {str(x): list(strings[x]) for x in referenced},
                  "labels": {str(x): ds.labels[x] for x in referenced} if ds.labels else None},
            arrays={"values": values.astype(np.float32).ravel(),
                    "samples": np.where(samples < 0, missing, samples).astype(smallest_uint(missing)).ravel(),
                    "positions": positions.astype(smallest_uint(int(positions.max(initial=0)))).ravel(),
                    "shade": np.rint(np.clip(shade, 0, 1) * 255).astype(np.uint8).ravel(),
                    "hist": hist.astype(smallest_uint(int(hist.max(initial=0)))).ravel()})

    def export_size(self, shapes):
        from lensframe.export_pack import b64_size

        info = shapes.info(self.model)
        indexed = range(info.n_layers) if self.p.layers == "all" else self.p.layers
        wanted = set(shapes.layers(self.model))
        neurons = shapes.neurons(self.model)
        nl, k, d = len([l for l in indexed if l in wanted]), self.p.k, len(neurons)
        lengths = np.asarray(shapes.board.executor.tokens(self.model)["lengths"])
        tokens = int(lengths.sum())
        sample_b = 1 if len(lengths) < 255 else 2
        hist_b = 1 if tokens < 256 else (2 if tokens < 65536 else 4)
        window = 17  # lensframe.ops.neurons.WINDOW: 12 before, the peak, 4 after
        # the token strings of the samples the examples come from: all of them, unless few examples
        # are held (then those of as many distinct samples as nl·d·k picks spread evenly would hit)
        n = len(lengths)
        share = 1.0 if n == 0 else 1.0 - (1.0 - 1.0 / n) ** (nl * d * k)
        listed = 0 if shapes.options.neurons is None else 2 * len(json.dumps(neurons))  # the list and its ranges
        # the first render: the histogram's figure (~20 kB) and each example slot's heading and strip
        # (measured, k 4 to 100); each strip's model also carries its own copy of TokenStrip's module and
        # stylesheet (Bokeh writes them with every instance; the written page counts them under components)
        return {"examples": b64_size(nl * d * k * (4 + sample_b + 1 + window)), "hist": b64_size(nl * d * 48 * hist_b),
                "tokens": int(tokens * 14 * share) + listed, "first render": 20_000 + 2_300 * k,
                "strip modules": 4_200 * k}

    def _fill(self, ctx, res, layer: int, neuron: int, slots) -> tuple[str, dict, str]:
        """The header, the histogram's bars and the caption of one neuron, with its examples put
        into `slots` (pairs of a heading pane and a token strip; the ones left over are hidden)."""
        li = res.meta["layers"].index(layer)
        ds = ctx.board.dataset
        strings = ctx.result(self.tokens_node(ctx.board.spec.dataset.max_tokens)).meta["strings"]
        before, _ = res.meta["window"]
        hist, edges = res["hist"][li, neuron], res["edges"]
        best = res["values"][li, neuron]
        name = neuron_label(layer, neuron)
        probe = self._probe_place(ctx, layer, neuron, hist, edges, best)
        bars = histogram_bars(hist, edges, float(best[0]), probe and probe["value"])
        head = (f"<div class='lf-top-head'>neuron <b class='lf-neuron'>{name}</b> · max activation "
                f"<b class='lf-top-max'>{best[0]:+.3f}</b> · {int(hist.sum()):,} tokens of the dataset</div>")
        legend = (f"<div class='lf-hist-legend'><span class='lf-hist-key-max'>red line: the #1 example, "
                  f"{best[0]:+.3f}</span>")
        if probe:
            legend += (f" · <span class='lf-hist-probe'>green dashed line: the probe's peak, "
                       f"<b>{probe['value']:+.3f}</b></span>")
        legend += "</div>"
        shown = 0
        for rank, ((text, strip), value, s, p, win) in enumerate(zip(
                slots, best, res["samples"][li, neuron], res["positions"][li, neuron], res["windows"][li, neuron])):
            if s < 0:
                break
            shown += 1
            start = max(0, int(p) - before)  # win[j] is position p - before + j
            off = start - (int(p) - before)
            toks = strings[s][start : start + len(win) - off]
            shade = [max(0.0, float(v) / float(value)) if value > 0 and not np.isnan(v) else 0.0
                     for v in win[off : off + len(toks)]]
            label = f" · <span class='lf-label'>{esc(ds.labels[s])}</span>" if ds.labels else ""
            text.param.update(visible=True, object=(
                f"<div class='lf-example-head'>#{rank + 1} · sample {int(s)}{label} · "
                f"<b>{value:+.3f}</b> at position {int(p)}</div>"))
            strip.param.update(tokens=toks, shade=shade[: len(toks)], selected=int(p) - start)
            strip.on_click = lambda index, s=int(s), start=start: ctx.set(sample=s, text=None, position=start + index)
            strip.visible = True
        for text, strip in slots[shown:]:
            text.param.update(visible=False, object="")
            strip.visible = False
        examples = (f"<div class='lf-sub lf-top-examples-head'>the {shown} dataset examples where {name} fires most "
                    "(tokens shaded by its activation; click one to focus it)</div>")
        return head, bars, legend + (probe["html"] if probe else "") + examples

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
                f"at position {pos} <code>{esc(repr(tokens[pos]))}</code> (green dashed line) · above "
                f"{100 * share:.0f}% of the dataset's tokens (to the histogram bin) · {where}</div>")
        return {"value": value, "html": html}


# --- the activation histogram --------------------------------------------------------------------

PLOT_HEIGHT = 170  # px: the histogram is a strip above the examples, which are what the card is for
BAR_BASE = 0.7  # bars start below 1 on the log count axis, so a bin of one token still shows


def histogram_bars(hist, edges, top: float, probe: float | None = None) -> dict:
    """What the histogram draws: the bins from the first to the last that holds a token, as bars
    (left, right, count), and the x range. A bin holds the tokens with e_i < m <= e_(i+1) (as
    torch.bucketize fills them, lensframe/ops/neurons.py). The last bar ends at the neuron's max
    activation `top` (the #1 example's, exact) rather than at its bin's far edge, which with bins
    uniform in asinh(m) can lie a quarter of the value beyond it: the axis ends where the data does.
    A probe's value outside that range widens it to show its line; 1.5% each side keeps a line at
    either end clear of the frame."""
    counts = np.asarray(hist)
    edges = np.asarray(edges, dtype=np.float64)
    nz = np.flatnonzero(counts)
    if not len(nz):
        return {"left": np.zeros(0), "right": np.zeros(0), "count": np.zeros(0, dtype=np.int64),
                "top": [], "probe": [], "xlim": (0.0, 1.0)}
    lo, hi = int(nz[0]), int(nz[-1]) + 1
    left, right = edges[lo:hi].copy(), edges[lo + 1 : hi + 1].copy()
    if np.isfinite(top):
        right[-1] = max(left[-1], min(right[-1], top))
    probes = [] if probe is None or not np.isfinite(probe) else [float(probe)]
    x0, x1 = min([float(left[0])] + probes), max([float(right[-1])] + probes)
    pad = 0.015 * (x1 - x0)  # a line at the range's end stays visible beside the frame
    return {"left": left, "right": right, "count": counts[lo:hi].astype(np.int64),
            "top": [float(top)] if np.isfinite(top) else [], "probe": probes, "xlim": (x0 - pad, x1 + pad)}


def histogram_plot(data: dict | None, xlabel: str = "activation"):
    """The histogram as a HoloViews overlay: bars of token counts on a log axis, a red line at the
    #1 example's activation, a dashed green one at a probe's; Bokeh's hover gives each bin."""
    from .widgets import hv_bokeh

    hv = hv_bokeh()
    d = data or histogram_bars(np.zeros(1), np.array([0.0, 1.0]), float("nan"))
    n = len(d["count"])
    top = int(d["count"].max()) if n else 1
    bars = hv.Rectangles((d["left"], np.full(n, BAR_BASE), d["right"], d["count"]),
                         kdims=["lo", "base", "hi", "count"]).opts(
        logy=True, xlim=d["xlim"], ylim=(BAR_BASE, 2.0 * top), framewise=True, responsive=True, height=PLOT_HEIGHT,
        xlabel=xlabel, ylabel="tokens (log scale)", yformatter="%d", color="#1f6fd1", line_color="white", line_width=0.5,
        tools=["hover"], default_tools=[], toolbar=None, show_grid=True,
        hover_tooltips=[("activation", "(@lo{0.000}, @hi{0.000}]"), ("tokens", "@count")])
    top_line = hv.VLines(d["top"]).opts(color="#e4572e", line_width=2, framewise=True)
    probe_line = hv.VLines(d["probe"]).opts(color="#2e9e4f", line_width=2, line_dash="dashed", framewise=True)
    return bars * top_line * probe_line


def histogram_part(ctx, bars: dict | None, visible: bool = True, xlabel: str = "activation"):
    """The histogram pane of a session, built once: later renders send new bars down a stream,
    which HoloViews turns into a data patch of the same Bokeh source (no new models)."""
    import panel as pn

    from .widgets import hv_bokeh

    hv = hv_bokeh()
    pipe = ctx.keep("hist-pipe", lambda: hv.streams.Pipe(data=None))
    plot = ctx.keep("hist-plot", lambda: hv.DynamicMap(
        lambda data: histogram_plot(data and data["bars"], data["xlabel"] if data else "activation"), streams=[pipe]))
    sent = ctx.keep("hist-sent", dict)  # made with the pipe: a new pipe has been sent nothing
    key = (None if bars is None else (bars["left"].tobytes(), bars["count"].tobytes(), bars["top"], bars["probe"],
                                       bars["xlim"]), xlabel)
    if sent.get("key") != key:
        pipe.send({"bars": bars, "xlabel": xlabel})
        sent["key"] = key
    pane = ctx.part("hist", pn.pane.HoloViews, init={
        "object": plot, "backend": "bokeh", "sizing_mode": "stretch_width", "height": PLOT_HEIGHT})
    # Shown and hidden through a Column around it: setting a layout param of a HoloViews pane that
    # a themed template has rendered fails inside Panel (it re-validates the themed stylesheets).
    box = ctx.part("hist-box", pn.Column, visible=visible, init={
        "objects": [pane], "sizing_mode": "stretch_width", "css_classes": ["lf-hist"]})
    return box


def _ranges(indices) -> str:
    from lensframe.export_plan import ranges

    return ranges(list(indices))
