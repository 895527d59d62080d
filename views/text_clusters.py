"""text_clusters: the dataset's texts clustered as Zhong et al. (2022) do, on the spec's model.

Each sample is embedded by the mean-pooled residual after one block, PCA to ~50 components with the
first dropped, k-means with k about sqrt(n). The map (views/cluster_map.py) shows the first two kept
components, coloured by cluster or by label, with hover, zoom and pan; the caption reports agreement
with the labels (adjusted Rand index).

Clicking a text focuses it (and its cluster); a lasso selects texts (focus.texts), which the
difference view then describes against the rest; clicking a legend entry focuses that cluster (or,
coloured by label, selects that label's texts).
"""
from __future__ import annotations

from typing import Literal, Optional

import numpy as np
from pydantic import Field

from lensframe.graph import Node

from .base import VIEW_CSS, View, ViewParams, beyond_depth, html_part, layout_part


class ClusterParams(ViewParams):
    layer: Optional[int] = Field(None, ge=0, description="block whose mean-pooled residual embeds a text (default: the middle one)")
    k: Optional[int] = Field(None, ge=2, le=200, description="clusters (default: about sqrt(samples))")
    seed: int = Field(0, description="seed of PCA / k-means")


def text_cluster_nodes(view, info, max_tokens: int) -> tuple[Node, Node]:
    """The embedding and clustering nodes; the same for every view with the same params (shared)."""
    layer = view.p.layer if view.p.layer is not None else info.n_layers // 2
    emb = Node.make("text_embeddings", view.model, inputs=(view.tokens_node(max_tokens),), layer=layer)
    return emb, Node.make("text_clusters", view.model, inputs=(emb,), k=view.p.k, seed=view.p.seed)


def check_layer(view, info) -> list:
    if view.p.layer is not None and view.p.layer >= info.n_layers:
        return [(("layer",), *beyond_depth(view.p.layer, info))]
    return []


TEXTS_LASSO_NOTE = ("<div class='lf-export-missing lf-lasso-note'>Not in this exported page: what sets texts "
                    "selected with the lasso apart is computed for the texts you pick, so it needs lensframe serve. "
                    "Every cluster's description is here: click a cluster in the legend, or a text on the map.</div>")
TEXTS_LABEL_NOTE = ("<div class='lf-export-missing lf-lasso-note'>Not in this exported page: selecting a label's "
                    "texts asks for a description of that selection, which needs lensframe serve.</div>")
TEXTS_MISSING_NOTE = ("<div class='lf-export-missing lf-lasso-note'>Text #{row} is not in this exported page (it "
                      "holds samples {held}): its cluster is focused, the text is not.</div>")


class TextClustersView(View):
    type = "text_clusters"
    default_title = "Text clusters"
    description = "texts embedded by the model, clustered (PCA + k-means, Zhong et al. 2022), on a map"
    reads = ("sample", "text", "text_cluster", "texts")
    sets = ("sample", "text", "position", "text_cluster", "texts")
    export_script = "js/text_clusters.js"
    export_webgl = True
    export_components = {"ClusterLegend": 14_000}  # the legend's module and stylesheet (views/cluster_map.py)

    class Params(ClusterParams):
        color_by: Literal["cluster", "label"] = Field("cluster", description="what colours the map")

    def needs(self, max_tokens):
        return [self.tokens_node(max_tokens), *text_cluster_nodes(self, self.info, max_tokens)]

    def check(self, info):
        return super().check(info) + check_layer(self, info)

    def render(self, ctx):
        import panel as pn

        from .cluster_map import MAP_CSS, ClusterLegend, ClusterMap, axis_title, clear_button, map_key

        _, node = text_cluster_nodes(self, self.info, ctx.board.spec.dataset.max_tokens)
        res = ctx.result(node)
        ds, clusters, coords, meta = ctx.board.dataset, res["labels"], res["coords"], res.meta
        by_label = bool(self.p.color_by == "label" and ds.labels)
        names = sorted(set(ds.labels)) if by_label else [f"cluster {c}" for c in range(meta["k"])]
        group = [names.index(ds.labels[i]) if by_label else int(clusters[i]) for i in range(len(ds))]

        def make_map():
            comps = meta.get("map_components") or ([2, 3] if meta["dropped_first"] else [1, 2])
            share = meta.get("map_variance") or [None, None]
            heads = [f"#{i} · cluster {int(clusters[i])}" + (f" · {ds.labels[i]}" if ds.labels else "") for i in range(len(ds))]
            tips = [_preview(ds.texts[i], 300) for i in range(len(ds))]
            return ClusterMap(coords[:, 0], coords[:, 1], group, heads, tips, kind="texts",
                              xlabel=axis_title("PC", comps[0], share[0]), ylabel=axis_title("PC", comps[1], share[1]))

        cmap = ctx.keep("map", make_map)
        focus_cluster = ctx.get("text_cluster")
        chosen = [i for i in ctx.get("texts") if 0 <= i < len(ds)]
        focused = ctx.sample if ctx.probe is None else None
        members = [] if focus_cluster is None else [int(i) for i in range(len(ds)) if clusters[i] == focus_cluster]
        cmap.show(group=members, selected=chosen, focused=focused)
        cmap.on_tap = lambda row: ctx.set(sample=row, text=None, position=None, text_cluster=int(clusters[row]))
        cmap.on_lasso = lambda rows: ctx.set(texts=sorted(rows))

        items = ctx.keep("legend-items", lambda: self._legend(ds, clusters, names, by_label))
        legend = ctx.part("legend", ClusterLegend, items=items,
                          selected=self._legend_selected(ds, names, by_label, focus_cluster, chosen),
                          init={"kind": "label" if by_label else "cluster", "width": 180, "sizing_mode": "stretch_height",
                                "css_classes": ["lf-text-legend"]},
                          on_click=lambda group: ctx.set(texts=[i for i, l in enumerate(ds.labels) if l == names[group]])
                          if by_label else ctx.set(text_cluster=group, texts=[]))
        caption = html_part(
            ctx, "caption",
            self._caption_head(len(ds), node, meta)
            + (f" · focused cluster <b class='lf-cluster'>{focus_cluster}</b>" if focus_cluster is not None else "")
            + "</div>"
            + map_key("text", f"text <b class='lf-focused-text'>#{focused}</b>" if focused is not None else None,
                      f"cluster {focus_cluster}" if focus_cluster is not None else None,
                      f"<span class='lf-selection' data-texts='{','.join(map(str, chosen))}'>{len(chosen)} selected "
                      f"text{'s' if len(chosen) != 1 else ''}</span>" if chosen else None,
                      cmap.outside),
            sizing_mode="stretch_width", css_classes=["lf-clusters-caption"], stylesheets=[VIEW_CSS, MAP_CSS])
        clear = clear_button(ctx, bool(chosen), lambda event: ctx.set(texts=[]))
        head = layout_part(ctx, "head", caption, clear, cls=pn.Row, sizing_mode="stretch_width")
        body = layout_part(ctx, "body", cmap.pane, legend, cls=pn.Row, sizing_mode="stretch_both", min_height=240)
        return layout_part(ctx, "layout", head, body, sizing_mode="stretch_both", css_classes=["lf-view-text-clusters"])

    @staticmethod
    def _caption_head(n: int, node, meta: dict) -> str:
        """The caption's first line up to the focused cluster (left open)."""
        ari = meta["ari"]
        return (f"<div class='lf-clusters-head'>{n} texts · k = {meta['k']} · mean-pooled residual of block "
                f"{node.inputs[0].param('layer')} · PCA, {meta['n_components']} components kept"
                + ((" after dropping the first" + (f" ({100 * meta['dropped_variance']:.3g}% of the variance, mostly "
                                                   "what every text shares)" if "dropped_variance" in meta else "")
                    + "; the map shows PCs 2 and 3") if meta["dropped_first"] else "; the map shows PCs 1 and 2")
                + (f" · agreement with the labels: ARI <b class='lf-ari'>{ari:.3f}</b>" if ari is not None else ""))

    # --- export (views/js/text_clusters.js): the map and legend as rendered, the focus marks and
    # caption in JS; a lasso (or, coloured by label, a label's texts) selects texts, which only a
    # server can describe, and a text the page does not hold cannot be focused: both are notes
    def export_parts(self, ctx):
        from .cluster_map import export_map_parts

        return export_map_parts(ctx)

    def export_data(self, ex):
        from lensframe.export_pack import ExportData
        from lensframe.export_plan import ranges

        from .cluster_map import TAP_RADIUS, key_tail

        _, node = text_cluster_nodes(self, self.info, ex.board.spec.dataset.max_tokens)
        res = ex.rendered.result(node)
        ds = ex.board.dataset
        by_label = bool(self.p.color_by == "label" and ds.labels)
        cmap = ex.rendered.keep("map", lambda: None)
        return ExportData(
            meta={"head": self._caption_head(len(ds), node, res.meta), "key": key_tail("text", cmap.outside),
                  "radius": TAP_RADIUS, "by_label": by_label, "lasso": TEXTS_LASSO_NOTE,
                  "label_note": TEXTS_LABEL_NOTE, "missing": TEXTS_MISSING_NOTE.replace("{held}", ranges(ex.samples))},
            arrays={"cluster": np.asarray(res["labels"], dtype=np.int32)})

    def export_size(self, shapes):
        from lensframe.export_pack import b64_size

        from .cluster_map import map_export_bytes

        ds = shapes.board.dataset
        n = len(ds)
        k = self.p.k or max(2, round(n ** 0.5))
        tips = sum(min(len(" ".join(t.split())), 300) for t in ds.texts)
        labels = sum(len(x) + 3 for x in ds.labels) if ds.labels else 0
        return {"map": map_export_bytes(n, n * 18 + labels, tips), "legend and caption": 3_000 + k * 120,
                "clusters": b64_size(4 * n) + 1_200}

    @staticmethod
    def _legend(ds, clusters, names, by_label) -> list[dict]:
        from collections import Counter

        from .cluster_map import colour

        items = []
        for g, name in enumerate(names):
            rows = [i for i in range(len(ds)) if (ds.labels[i] == name if by_label else clusters[i] == g)]
            note = f"{len(rows)} text{'s' if len(rows) != 1 else ''}"
            if ds.labels and not by_label and rows:
                top, n = Counter(ds.labels[i] for i in rows).most_common(1)[0]
                note += f" · top label: {top} ({n} of {len(rows)})"
            items.append({"group": g, "color": colour(g), "label": name, "note": note})
        return items

    @staticmethod
    def _legend_selected(ds, names, by_label, focus_cluster, chosen) -> int:
        if not by_label:
            return -1 if focus_cluster is None else int(focus_cluster)
        return next((g for g, name in enumerate(names)
                     if chosen == [i for i, l in enumerate(ds.labels) if l == name]), -1)


def _preview(text: str, n: int) -> str:
    """A text on one line, cut at n characters with an ellipsis that says so."""
    flat = " ".join(text.split())
    return flat if len(flat) <= n else flat[: n - 1] + "…"
