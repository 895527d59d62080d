"""neuron_clusters: MLP neurons clustered by which topics they matter for, each cluster tagged with
the topic it is most enriched for (effect size, permutation p-value) or shown untagged.

Importance of neuron (l, i) for a sample: attribution |m_i * dloss/dm_i| summed over positions (a
backward pass) or mean |m_i| (forward only); folded per label into neurons x topics as a streaming
reduction. The most important neurons are sampled in proportion to importance, their topic profiles
normalised and clustered; tags come from the held-out half of the samples (lensframe.ops.clustering).
Clicking a cluster focuses it; clicking a neuron focuses its layer and index, so the neuron views
follow.
"""
from __future__ import annotations

from typing import Literal, Union

from pydantic import Field

from lensframe.graph import Node

from .base import View, ViewParams, beyond_depth, esc, html_pane


class NeuronClustersView(View):
    type = "neuron_clusters"
    default_title = "Neuron clusters by topic"
    description = "neurons clustered by importance per topic, tagged with the topic they serve"
    reads = ("cluster", "layer", "neuron")
    sets = ("cluster", "layer", "neuron")

    class Params(ViewParams):
        layers: Union[Literal["all"], list[int]] = Field("all", description="layers whose neurons are scored")
        importance: Literal["attribution", "activation"] = Field(
            "attribution", description="attribution: |m * dloss/dm| summed over positions (a backward); activation: mean |m|")
        n_neurons: int = Field(300, ge=10, le=100_000, description="neurons sampled in proportion to importance")
        k: int = Field(8, ge=2, le=100, description="clusters")
        method: Literal["kmeans", "agglomerative"] = Field("kmeans", description="agglomerative: cosine, average linkage")
        n_perm: int = Field(1000, ge=50, le=100_000, description="permutations of the enrichment test")
        seed: int = Field(0, description="seed of the sampling, clustering and permutations")

    def nodes(self, max_tokens: int) -> tuple[Node, Node]:
        layers = "all" if self.p.layers == "all" else tuple(sorted(set(self.p.layers)))
        imp = Node.make("neuron_importance", self.model, inputs=(self.tokens_node(max_tokens),), layers=layers,
                        method=self.p.importance)
        return imp, Node.make("neuron_clusters", self.model, inputs=(imp,), n_neurons=self.p.n_neurons, k=self.p.k,
                              method=self.p.method, n_perm=self.p.n_perm, seed=self.p.seed)

    def needs(self, max_tokens):
        return [self.tokens_node(max_tokens), *self.nodes(max_tokens)]

    def check(self, info):
        layers = [] if self.p.layers == "all" else self.p.layers
        return super().check(info) + [(("layers", i), *beyond_depth(layer, info)) for i, layer in enumerate(layers)
                                      if not 0 <= layer < info.n_layers]

    def render(self, ctx):
        import panel as pn

        from .widgets import BarList, ScatterMap

        res = ctx.result(self.nodes(ctx.board.spec.dataset.max_tokens)[1])
        clusters = res.meta["clusters"]
        layer, neuron, cluster = ctx.get("layer"), ctx.get("neuron"), ctx.get("cluster")
        names = [f"c{c['cluster']}: {c['tag'] or 'untagged'}" for c in clusters]
        points = [{"key": j, "x": float(x), "y": float(y), "group": int(g),
                   "title": f"neuron {int(l)}.{int(n)} · cluster {int(g)}"}
                  for j, (x, y), g, l, n in zip(range(len(res["cluster"])), res["coords"], res["cluster"], res["layer"], res["neuron"])]
        chosen = next((j for j in range(len(points)) if res["layer"][j] == layer and res["neuron"][j] == neuron), -1)
        biggest = max(c["size"] for c in clusters)
        items = [{"key": c["cluster"], "label": f"c{c['cluster']}", "bar": c["size"] / biggest,
                  "note": (f"{c['tag']}  d={c['effect']:.2f} p={c['p_corrected']:.3f}" if c["tag"] else
                           f"untagged (best p={c['p_corrected']:.2f})") + f" · {c['size']} neurons"} for c in clusters]

        def on_point(key):
            ctx.set(layer=int(res["layer"][key]), neuron=int(res["neuron"][key]), cluster=int(res["cluster"][key]))

        parts = [html_pane(
            f"<div class='lf-nclusters-head'>{len(points)} neurons sampled by {esc(res.meta['method'])} importance "
            f"over {len(res.meta['topics'])} topics · {len(clusters)} clusters, "
            f"{sum(1 for c in clusters if c['tag'])} tagged (p &lt; 0.05 after correction"
            f"{', tagged on held-out samples' if res.meta['held_out'] else ''}) · map: {esc(res.meta['map_method'])}</div>",
            sizing_mode="stretch_width"),
            pn.Row(ScatterMap(points=points, groups=names, selected=chosen,
                              selected_group=cluster if cluster is not None else -1, kind="neurons",
                              on_point=on_point, on_group=lambda group: ctx.set(cluster=group)),
                   BarList(items=items, selected=cluster if cluster is not None else -1, kind="cluster",
                           sizing_mode="stretch_width", height=260, on_click=lambda key: ctx.set(cluster=key)),
                   sizing_mode="stretch_width")]
        if cluster is not None and cluster < len(clusters):
            members = clusters[cluster]["members"][:40]
            parts.append(html_pane(f"<div class='lf-sub'>neurons of cluster <b class='lf-cluster'>{cluster}</b> "
                                   f"({esc(clusters[cluster]['tag'] or 'untagged')}), most important first</div>"))
            parts.append(BarList(items=[{"key": i, "label": f"{l}.{n}", "bar": 1.0 - i / max(len(members), 1), "note": ""}
                                        for i, (l, n) in enumerate(members)],
                                 selected=next((i for i, (l, n) in enumerate(members) if l == layer and n == neuron), -1),
                                 kind="member", sizing_mode="stretch_width", height=160,
                                 on_click=lambda key: ctx.set(layer=members[key][0], neuron=members[key][1])))
        return pn.Column(*parts, sizing_mode="stretch_both", scroll=True, css_classes=["lf-view-neuron-clusters"])
