"""layer_finder: which layer was edited, from the suspect model alone (no base model).

Per layer and weight matrix, statistics that an edit moves (lensframe.layer_stats): dead units (a
knockout), matrices off the storage grid the rest of the model sits on (an edit written after the
model was quantized), and the spectral statistics' outlier score against the layers around it.
Shown as one bar per layer in layer order (the spectral score; flagged layers marked), with the
focused layer's matrices in a table below. A click on a layer focuses it everywhere.
"""
from __future__ import annotations

import numpy as np
from pydantic import Field

from lensframe.graph import Node

from .base import View, ViewParams, esc, html_part, layout_part, neuron_label

STAT_NAMES = {"sigma1": "σ₁", "top_gap": "σ₁/σ₂", "stable_rank": "stable rank", "fro": "‖W‖F"}


class LayerFinderView(View):
    type = "layer_finder"
    default_title = "Which layer was edited"
    description = ("per layer, weight statistics that an edit moves (dead units, storage precision, spectral outliers "
                   "against the neighbouring layers), from one model alone; click a layer to focus it")
    reads = ("layer",)
    sets = ("layer",)
    export_script = "js/layer_finder.js"

    class Params(ViewParams):
        window: int = Field(3, ge=1, le=10, description="layers on each side a statistic is compared with")
        threshold: float = Field(10.0, gt=0, description="spectral score (robust z, in MADs) from which a layer is "
                                 "flagged")
        top: int = Field(3, ge=1, le=20, description="layers flagged at least (the highest ranked)")

    def stats_node(self) -> Node:
        return Node.make("layer_stats", self.model, window=self.p.window)

    def needs(self, max_tokens):
        return [self.stats_node()]

    def render(self, ctx):
        from lensframe.layer_stats import SPECTRAL, ranked_layers, suspicious_layers

        from .widgets import BarList

        res = ctx.result(self.stats_node())
        names, n_layers = res.meta["names"], res.meta["n_layers"]
        flagged, ranked = ctx.keep("flagged", lambda: (suspicious_layers(res.arrays, self.p.threshold, self.p.top),
                                                       ranked_layers(res.arrays)))
        focused = ctx.get("layer")
        score = res["score"]
        top = float(np.nanmax(score)) if len(score) else 1.0
        items = []
        for layer in range(n_layers):
            why = self._why(res, names, layer)
            mark = "⚑ " if layer in flagged else ""
            items.append({"key": layer, "label": f"{mark}layer {layer}", "bar": float(score[layer]) / (top or 1.0),
                          "note": why, "tip": f"layer {layer}: {why}" + (" (flagged)" if mark else "")})
        head = html_part(ctx, "head", self._head(res, names, flagged, ranked), sizing_mode="stretch_width",
                         css_classes=["lf-finder-head"])
        bars = ctx.part("layers", BarList, items=items, selected=focused if focused is not None else -1,
                        init={"kind": "finder-layer", "sizing_mode": "stretch_both", "min_height": 120},
                        on_click=lambda key: ctx.set(layer=key))
        detail = html_part(ctx, "detail", self._detail(ctx, res, names, focused if focused is not None else ranked[0], SPECTRAL),
                           sizing_mode="stretch_width", css_classes=["lf-finder-detail"], styles={"overflow": "auto"})
        return layout_part(ctx, "layout", head, bars, detail, sizing_mode="stretch_both", scroll=True,
                           css_classes=["lf-view-layer-finder"])

    # --- export (views/js/layer_finder.js): the detail of each layer, rendered here (one per layer) ----
    def export_data(self, ex):
        from lensframe.export_pack import ExportData
        from lensframe.layer_stats import SPECTRAL, ranked_layers

        ctx = ex.rendered
        res = ctx.result(self.stats_node())
        names = res.meta["names"]
        return ExportData(meta={"details": [self._detail(ctx, res, names, layer, SPECTRAL)
                                            for layer in range(res.meta["n_layers"])],
                                "default": int(ranked_layers(res.arrays)[0])})

    def export_size(self, shapes):
        n_layers = shapes.info(self.model).n_layers
        # each layer's table: a row per matrix (about 10 in a block) of ~250 characters
        return {"details": n_layers * 3_000, "first render": 8_000 + n_layers * 400}

    def _why(self, res, names, layer: int) -> str:
        """What makes a layer stand out, shortest first: dead units, off-grid matrices, the spectral outlier."""
        parts = []
        dead = int(res["dead_layer"][layer])
        if dead:
            where = [names[m] for m in range(len(names)) if res["dead"][m, layer]]
            parts.append(f"{dead} dead rows/cols ({', '.join(_short(n) for n in where)})")
        off = [names[m] for m in range(len(names)) if res["off_grid"][m, layer]]
        if off:
            parts.append("off grid: " + ", ".join(_short(n) for n in off))
        stat = res.meta["stats"][int(res["score_stat"][layer])]
        parts.append(f"z {res['score'][layer]:.1f} · {_short(names[int(res['score_matrix'][layer])])} {STAT_NAMES[stat]}")
        return " · ".join(parts)

    def _head(self, res, names, flagged, ranked) -> str:
        evidence = [l for l in ranked if res["dead_layer"][l] or res["off_grid_layer"][l]]
        lead = (f"edited (direct evidence): <b class='lf-finder-top'>layer {evidence[0]}</b>"
                + (f", then {', '.join(map(str, evidence[1:4]))}" if len(evidence) > 1 else "")
                if evidence else
                f"no direct evidence; largest spectral outliers: <b class='lf-finder-top'>layer {ranked[0]}</b>, "
                f"{', '.join(map(str, ranked[1:3]))} <span class='lf-hint'>(trained models have outliers too, often the "
                "first and last layers: check with causal_trace or the base)</span>")
        return (f"<div class='lf-finder-lead'>{lead} · flagged ⚑: {', '.join(map(str, flagged))}</div>"
                "<div class='lf-sub'>bars: largest |robust z| (MADs) of σ₁, σ₁/σ₂, stable rank or ‖W‖F against "
                f"±{res.meta['window']} layers · dead: all-zero rows/cols · off grid: ≥4× the distinct values of the "
                "same matrix nearby</div>")

    def _detail(self, ctx, res, names, layer: int, spectral) -> str:
        rows = []
        for m, name in enumerate(names):
            if not np.isfinite(res["sigma1"][m, layer]):
                continue
            cells = "".join(f"<td>{res[s][m, layer]:.3g} <small>({res['z_' + s][m, layer]:+.1f})</small></td>"
                            for s in spectral)
            grid = "off grid" if res["off_grid"][m, layer] else ""
            rows.append(f"<tr><td class='lf-finder-matrix'>{esc(name)}</td>{cells}"
                        f"<td>{int(res['dead'][m, layer])}</td><td>{res['distinct'][m, layer]:.3f} "
                        f"<small>(×{res['distinct_ratio'][m, layer]:.1f})</small> {grid}</td></tr>")
        head = "".join(f"<th>{STAT_NAMES[s]} (z)</th>" for s in spectral)
        return (f"<div class='lf-sub'>layer <b class='lf-layer'>{layer}</b>: each matrix's statistic and its z against "
                "the neighbours; distinct = distinct values per entry (× its neighbours')</div>"
                f"<table class='lf-table lf-finder-table'><tr><th>matrix</th>{head}<th>dead</th><th>distinct</th></tr>"
                + "".join(rows) + "</table>" + self._dead(ctx, res, layer))

    def _dead(self, ctx, res, layer: int) -> str:
        """The focused layer's dead units by index, read as heads or neurons where the matrix says
        which (its input dimensions: the attention output projection's are the heads' outputs, the
        MLP output projection's are the neurons)."""
        from lensframe.models.adapters import family_for

        info = ctx.board.infos[self.model]
        fam = family_for(info.family)
        lines = []
        for key, dead in sorted(res.meta.get("dead_units", {}).items()):
            name, at = key.rsplit("@", 1)
            if int(at) != layer:
                continue
            # nn.Linear stores [out, in] (input dimensions are columns); GPT-2's Conv1D [in, out]
            inputs = dead["rows"] if fam and fam.value_vectors == "rows" else dead["cols"]
            read = ""
            if fam and name == fam.attn_out + ".weight" and inputs:
                d_head = info.d_model // info.n_heads
                heads = sorted({i // d_head for i in inputs if all(j in set(inputs) for j in range(
                    (i // d_head) * d_head, (i // d_head + 1) * d_head))})
                read = f" → heads {', '.join(map(str, heads))}" if heads else ""
            elif fam and name == fam.mlp_down + ".weight" and inputs:
                read = " → neurons " + ", ".join(neuron_label(layer, i) for i in inputs[:16]) + (
                    f" (+{len(inputs) - 16})" if len(inputs) > 16 else "")
            lines.append(f"<div class='lf-finder-dead'><b>{esc(name)}</b>: dead input dims {_ranges(inputs)}"
                         f"{esc(read)}; dead output dims {_ranges(dead['rows'] if inputs is dead['cols'] else dead['cols'])}</div>")
        return "".join(lines)


def _ranges(idx) -> str:
    """[0, 1, 2, 5] -> '0–2, 5' ('none' when empty)."""
    idx = sorted(idx)
    if not idx:
        return "none"
    out, start = [], idx[0]
    for a, b in zip(idx, idx[1:] + [None]):
        if b != a + 1:
            out.append(f"{start}" if start == a else f"{start}–{a}")
            start = b
    return ", ".join(out)


def _short(name: str) -> str:
    """'self_attn.o_proj.weight' -> 'o_proj' (the matrix's own name)."""
    parts = [p for p in name.split(".") if p not in ("weight", "bias")]
    return parts[-1] if parts else name
