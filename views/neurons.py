"""neurons: the MLP neurons of the focused layer at the focused token, ranked by activation m_i
and by the size of their sub-update |m_i| ||v_i|| (Geva et al. 2022), with the focused neuron's
activation over the whole sample. Clicking a neuron sets focus.neuron; a token, focus.position.
"""
from __future__ import annotations

import numpy as np
from pydantic import Field

from lensframe.graph import Node

from .base import VIEW_CSS, View, ViewParams, esc, html_part, layout_part, neuron_label


def acts_node(view: View, max_tokens: int) -> Node:
    """Every MLP activation of the focused sample or probe (a focus node shared by the views that read it)."""
    return Node.make("neuron_acts", view.model, inputs=(view.tokens_node(max_tokens),))


LEGEND = ("<span class='lf-neurons-legend' style='color: #666'>m: activation (the down projection's input), "
          "\u2016v\u2016: value-vector norm</span>")


class NeuronsView(View):
    type = "neurons"
    default_title = "Neurons"
    description = "MLP neurons at the focused token, ranked by activation and by |m_i| ||v_i||"
    reads = ("sample", "text", "position", "layer", "neuron")
    sets = ("neuron", "position")
    export_script = "js/neurons.js"
    export_by_layer = True

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

        from .widgets import BarList, PatchedHTML, TokenStrip

        max_tokens = ctx.board.spec.dataset.max_tokens
        acts = ctx.focus_result(self.acts_node(max_tokens))["acts"]  # [layers, T, d_mlp]
        norms = ctx.prepared(self.norms_node())["norms"]
        tokens = ctx.tokens()
        layer, pos = ctx.layer(), ctx.position(len(tokens))
        m = acts[layer, pos]
        size = np.abs(m) * norms[layer]
        neuron = ctx.get("neuron")
        n = self.p.top_n

        def tip(i):
            return (f"{neuron_label(layer, i)} at position {pos} {tokens[pos]!r}: activation m = {m[i]:+.4f}, "
                    f"value vector norm \u2016v\u2016 = {norms[layer, i]:.3f}, "
                    f"sub-update norm |m|\u2016v\u2016 = {size[i]:.3f}")

        def ranked(order, values, note):
            top = float(np.abs(values[order]).max()) or 1.0
            # bars are signed by m (red: m < 0), also when ranked by the unsigned |m| ||v||
            return [{"key": int(i), "label": neuron_label(layer, int(i)), "note": note(int(i)), "tip": tip(int(i)),
                     "bar": abs(float(values[i])) / top * np.sign(m[i] or 1)} for i in order]

        by_act = np.argsort(-m)[:n]
        by_size = np.argsort(-size)[:n]
        selected = neuron if neuron is not None else -1
        pick = lambda key: ctx.set(neuron=key)  # noqa: E731
        lists = []
        for name, order, values, heading, note in (
                ("act", by_act, m, "by activation m<sub>i</sub>", lambda i: f"m {m[i]:+.3f}"),
                ("size", by_size, size, "by |m<sub>i</sub>|\u2016v<sub>i</sub>\u2016, the norm of its write to the residual",
                 lambda i: f"{size[i]:.3f} (m {m[i]:+.3f})")):
            bars = ctx.part(f"by-{name}", BarList, items=ranked(order, values, note), selected=selected,
                            init=dict(kind="neuron", sizing_mode="stretch_both"), on_click=pick)
            heading = html_part(ctx, f"heading-{name}", f"<div class='lf-sub'>{heading}</div>")
            lists.append(layout_part(ctx, f"column-{name}", heading, bars, sizing_mode="stretch_both"))
        parts = [html_part(
            ctx, "caption",
            f"<div class='lf-neurons-head'>{ctx.subject_label()} · layer <b class='lf-layer'>{layer}</b> · "
            f"position <b class='lf-position'>{pos}</b> <code>{esc(repr(tokens[pos]))}</code> · "
            f"{acts.shape[-1]} neurons · {LEGEND}</div>", sizing_mode="stretch_width")]
        # the focused neuron over the sample: built on the first render and hidden while no neuron
        # is focused, so focusing one patches two components instead of adding them to the page
        shown = neuron is not None and neuron < acts.shape[-1]
        strip = acts[layer, :, neuron] if shown else np.zeros(len(tokens), np.float32)
        scale = float(np.abs(strip).max()) or 1.0
        label = neuron_label(layer, neuron) if shown else ""
        caption = (f"<div class='lf-sub'>neuron <b class='lf-neuron'>{label}</b> over the "
                   f"{'probe' if ctx.probe else 'sample'}: m by token, max {strip.max():+.3f} (shade: m / {scale:.3f}, "
                   f"the largest |m|; m \u2264 0 unshaded)</div>") if shown else ""
        parts.append(ctx.part("strip-caption", PatchedHTML, object=caption, visible=shown,
                              init=dict(stylesheets=[VIEW_CSS], sizing_mode="stretch_width")))
        parts.append(ctx.part(
            "strip", TokenStrip, tokens=tokens if shown else [], selected=pos, visible=shown,
            shade=[max(0.0, float(v) / scale) for v in strip] if shown else [],
            tips=[f"position {t}: {tok!r}\n{label} m = {v:+.4f}" for t, (tok, v) in enumerate(zip(tokens, strip))]
            if shown else [],
            init=dict(sizing_mode="stretch_width"), on_click=lambda index: ctx.set(position=index)))
        parts.append(layout_part(ctx, "lists", *lists, cls=pn.Row, sizing_mode="stretch_both"))
        return layout_part(ctx, "layout", *parts, sizing_mode="stretch_both", css_classes=["lf-view-neurons"])

    # --- export (views/js/neurons.js): the ranked lists at every exported (sample, layer, position),
    # and each listed neuron's activations over its sample, for the strip
    def export_data(self, ex):
        from lensframe.export_pack import ExportData

        max_tokens, n = ex.board.spec.dataset.max_tokens, self.p.top_n
        info = ex.board.infos[self.model]
        layers = [l for l in (ex.options.layers if ex.options.layers is not None else range(info.n_layers))
                  if l < info.n_layers]
        norms = ex.context(ex.samples[0]).prepared(self.norms_node())["norms"][layers]  # [layers, d_mlp]
        act_ids, act_m, size_ids, size_m, strip_ids, strips, starts = [], [], [], [], [], [], [0]
        # besides the listed neurons, the one the page opens at and the one the view is pinned to
        chosen = [x for x in (ex.options.focus.get("neuron"), self.p.pin.neuron) if x is not None and x < info.d_mlp]
        # and those another view of the page can focus (a cluster map's neurons), at their layer
        elsewhere: dict[int, set] = {}
        for view in ex.board.views.values():
            if view.model == self.model and view is not self and not view.export_refusal():
                for layer, ids in view.export_neurons(ex).items():
                    elsewhere.setdefault(int(layer), set()).update(int(i) for i in ids if 0 <= int(i) < info.d_mlp)
        for s in ex.samples:
            acts = ex.context(s).focus_result(self.acts_node(max_tokens))["acts"][layers]  # [layers, T, d_mlp]
            size = np.abs(acts) * norms[:, None, :]
            # each (layer, position) ranked as render ranks its one row
            by_act = np.stack([np.stack([np.argsort(-row)[:n] for row in layer]) for layer in acts])
            by_size = np.stack([np.stack([np.argsort(-row)[:n] for row in layer]) for layer in size])
            act_ids.append(by_act.ravel())
            act_m.append(np.take_along_axis(acts, by_act, -1).ravel())
            size_ids.append(by_size.ravel())
            size_m.append(np.take_along_axis(acts, by_size, -1).ravel())
            for li in range(len(layers)):  # the neurons a click on these lists can focus
                listed = np.unique(np.concatenate([by_act[li].ravel(), by_size[li].ravel(), chosen,
                                                   sorted(elsewhere.get(layers[li], ()))]).astype(np.int64))
                strip_ids.append(listed)
                strips.append(acts[li][:, listed].T.ravel())  # [listed, T]
                starts.append(starts[-1] + len(listed))
        return ExportData(
            meta={"samples": list(ex.samples), "layers": layers, "layers_text": _ranges(layers), "n": n,
                  "n_layers": info.n_layers, "d_mlp": info.d_mlp, "legend": LEGEND},
            arrays={"norms": norms.astype(np.float32).ravel(), "act_ids": np.concatenate(act_ids).astype(np.uint16),
                    "act_m": np.concatenate(act_m).astype(np.float32),
                    "size_ids": np.concatenate(size_ids).astype(np.uint16),
                    "size_m": np.concatenate(size_m).astype(np.float32),
                    "strip_ids": np.concatenate(strip_ids).astype(np.uint16),
                    "strip_starts": np.asarray(starts, dtype=np.uint32),
                    "strips": np.concatenate(strips).astype(np.float32)})

    def export_size(self, shapes):
        from lensframe.export_pack import b64_size

        lengths, n = shapes.lengths(self.model), self.p.top_n
        info = shapes.info(self.model)
        nl = len(shapes.layers(self.model))
        cells = int(lengths.sum()) * nl
        # neurons listed at a layer of a sample: at most 2n per position, but the lists of a layer
        # share most of their neurons from one position to the next (measured on specs/neurons.yaml:
        # 37% of 2n·T distinct)
        # and the neurons other views can focus (a cluster map's) at each sample, counted as not
        # listed, up to every neuron of the exported layers
        other = sum(v.export_neuron_count(shapes) for v in shapes.board.views.values()
                    if v.model == self.model and v is not self and not v.export_refusal())
        per = [min(nl * info.d_mlp, nl * min(info.d_mlp, int(0.37 * 2 * n * T)) + other) for T in lengths]
        listed = sum(per)
        strip_values = sum(k * int(T) for k, T in zip(per, lengths))
        T0 = int(lengths[0]) if len(lengths) else 0
        return {"norms": b64_size(nl * info.d_mlp * 4), "lists": b64_size(cells * n * 2 * 6),
                "strips": b64_size(listed * 2 + strip_values * 4) + b64_size(4 * (len(lengths) * nl + 1)),
                "first render": 6_000 + 2 * n * 330 + T0 * 60}


def _ranges(indices) -> str:
    from lensframe.export_plan import ranges

    return ranges(list(indices))
