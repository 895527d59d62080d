"""text_clusters: the dataset's texts clustered as Zhong et al. (2022) do, on the spec's model.

Each sample is embedded by the mean-pooled residual after one block, PCA to ~50 components with the
first dropped, k-means with k about sqrt(n). The map is coloured by cluster or by label, and the
caption reports agreement with the labels (adjusted Rand index). Clicking a text focuses it (and its
cluster); clicking a legend entry focuses a cluster.
"""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from lensframe.graph import Node

from .base import View, ViewParams, beyond_depth, esc, html_pane


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


class TextClustersView(View):
    type = "text_clusters"
    default_title = "Text clusters"
    description = "texts embedded by the model, clustered (PCA + k-means, Zhong et al. 2022), on a map"
    reads = ("sample", "text_cluster")
    sets = ("sample", "text_cluster")

    class Params(ClusterParams):
        color_by: Literal["cluster", "label"] = Field("cluster", description="what colours the map")

    def needs(self, max_tokens):
        return [self.tokens_node(max_tokens), *text_cluster_nodes(self, self.info, max_tokens)]

    def check(self, info):
        return super().check(info) + check_layer(self, info)

    def render(self, ctx):
        import panel as pn

        from .widgets import ScatterMap

        _, node = text_cluster_nodes(self, self.info, ctx.board.spec.dataset.max_tokens)
        res = ctx.result(node)
        ds, clusters, coords = ctx.board.dataset, res["labels"], res["coords"]
        by_label = self.p.color_by == "label" and ds.labels
        names = sorted(set(ds.labels)) if by_label else [f"cluster {c}" for c in range(res.meta["k"])]
        group = [names.index(ds.labels[i]) if by_label else int(clusters[i]) for i in range(len(ds))]
        points = [{"key": i, "x": float(coords[i, 0]), "y": float(coords[i, 1]), "group": group[i],
                   "title": f"#{i} cluster {int(clusters[i])}" + (f" · {ds.labels[i]}" if ds.labels else "")
                   + f"\n{' '.join(ds.texts[i].split())[:120]}"} for i in range(len(ds))]
        focus_cluster = ctx.get("text_cluster")
        ari = res.meta["ari"]
        caption = html_pane(
            f"<div class='lf-clusters-head'>{len(ds)} texts · k = {res.meta['k']} · mean-pooled residual of block "
            f"{node.inputs[0].param('layer')} · PCA {res.meta['n_components']} components"
            f"{' (first dropped)' if res.meta['dropped_first'] else ''}"
            + (f" · agreement with the labels: ARI <b class='lf-ari'>{ari:.3f}</b>" if ari is not None else "")
            + (f" · focused cluster <b class='lf-cluster'>{focus_cluster}</b>" if focus_cluster is not None else "")
            + "</div>", sizing_mode="stretch_width")
        chart = ScatterMap(points=points, groups=names, selected=ctx.sample,
                           selected_group=-1 if by_label or focus_cluster is None else focus_cluster, kind="texts",
                           on_point=lambda key: ctx.set(sample=key, position=None, text_cluster=int(clusters[key])),
                           on_group=lambda group: None if by_label else ctx.set(text_cluster=group))
        return pn.Column(caption, chart, sizing_mode="stretch_both", scroll=True, css_classes=["lf-view-text-clusters"])


def esc_text(s: str, n: int = 140) -> str:
    return esc(" ".join(s.split())[:n])
