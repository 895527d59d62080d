"""neuron_clusters: MLP neurons clustered by which topics they matter for, each cluster tagged with
the topic it is most enriched for (effect size, permutation p-value) or shown untagged.

Importance of neuron (l, i) for a sample: attribution |m_i * dloss/dm_i| summed over positions (a
backward pass) or mean |m_i| (forward only); folded per label into neurons x topics as a streaming
reduction. The most important neurons are sampled in proportion to importance, their topic profiles
normalised and clustered; tags come from the held-out half of the samples (lensframe.ops.clustering).

The map (views/cluster_map.py) places the neurons by their share of importance per topic. Clicking
a neuron focuses its layer and index, so the neuron views follow; a lasso selects neurons
(focus.neurons) and the view reports the topic enrichment of that selection (the neuron_enrichment
lookup: the tags' statistic and held-out test, for the selection against the rest of the map);
clicking a cluster in the legend focuses it and lists its neurons.
"""
from __future__ import annotations

from typing import Literal, Union

import numpy as np
from pydantic import Field

from lensframe.graph import Node

from .base import VIEW_CSS, View, ViewParams, beyond_depth, esc, html_part, layout_part, neuron_label


LASSO_NOTE = ("<div class='lf-export-missing lf-lasso-note'>Not in this exported page: the topic enrichment of "
              "neurons selected with the lasso is computed for the neurons you pick, so it needs lensframe serve. "
              "Every cluster's neurons are here: click a cluster in the legend, or a neuron on the map.</div>")


class NeuronClustersView(View):
    type = "neuron_clusters"
    default_title = "Neuron clusters by topic"
    description = "neurons clustered by importance per topic, tagged with the topic they serve"
    reads = ("cluster", "layer", "neuron", "neurons")
    sets = ("cluster", "layer", "neuron", "neurons")
    export_script = "js/neuron_clusters.js"
    export_webgl = True
    export_components = {"ClusterLegend": 14_000}  # the legend's module and stylesheet (views/cluster_map.py)

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
        return [self.tokens_node(max_tokens), *self.nodes(max_tokens), self.enrichment_node(max_tokens)]

    def check(self, info):
        layers = [] if self.p.layers == "all" else self.p.layers
        return super().check(info) + [(("layers", i), *beyond_depth(layer, info)) for i, layer in enumerate(layers)
                                      if not 0 <= layer < info.n_layers]

    def enrichment_node(self, max_tokens: int) -> Node:
        return Node.make("neuron_enrichment", self.model, inputs=(self.nodes(max_tokens)[1],))

    def render(self, ctx):
        import panel as pn

        from .cluster_map import MAP_CSS, ClusterLegend, ClusterMap, axis_title, clear_button, map_key
        from .difference import shown_html
        from .widgets import BarList

        max_tokens = ctx.board.spec.dataset.max_tokens
        res = ctx.result(self.nodes(max_tokens)[1])
        clusters, meta = res.meta["clusters"], res.meta
        layers, neurons, groups = (np.asarray(res[k]).tolist() for k in ("layer", "neuron", "cluster"))
        rows = {(l, n): j for j, (l, n) in enumerate(zip(layers, neurons))}
        layer, neuron, cluster = ctx.get("layer"), ctx.get("neuron"), ctx.get("cluster")
        chosen = [tuple(x) for x in ctx.get("neurons")]

        def make_map():
            m = len(layers)
            if meta["map_method"] == "umap":
                xlabel, ylabel = "UMAP 1", "UMAP 2"
            else:
                share = meta.get("map_explained") or [None, None]
                xlabel, ylabel = axis_title("PC", 1, share[0]), axis_title("PC", 2, share[1])
            heads = [f"{neuron_label(l, n)} · cluster c{g}" + (f" ({clusters[g]['tag']})" if clusters[g]["tag"] else "")
                     for l, n, g in zip(layers, neurons, groups)]
            tips = [f"importance rank {j + 1} of {m} sampled" for j in range(m)]
            return ClusterMap(res["coords"][:, 0], res["coords"][:, 1], groups, heads, tips, kind="neurons",
                              xlabel=xlabel, ylabel=ylabel)

        cmap = ctx.keep("map", make_map)
        cmap.show(group=[j for j, g in enumerate(groups) if g == cluster], selected=[rows[x] for x in chosen if x in rows],
                  focused=rows.get((layer, neuron)))
        cmap.on_tap = lambda j: ctx.set(layer=layers[j], neuron=neurons[j], cluster=groups[j])
        cmap.on_lasso = lambda js: ctx.set(neurons=[[layers[j], neurons[j]] for j in sorted(js)])

        legend = ctx.part("legend", ClusterLegend, items=[self._legend_item(c) for c in clusters],
                          selected=cluster if cluster is not None else -1,
                          init={"kind": "cluster", "width": 220, "sizing_mode": "stretch_height",
                                "css_classes": ["lf-neuron-legend"]},
                          on_click=lambda group: ctx.set(cluster=group))
        focused = rows.get((layer, neuron))
        caption = html_part(
            ctx, "caption",
            self._caption_head(meta, len(layers))
            + map_key("neuron",
                      f"<b class='lf-focused-neuron'>{neuron_label(layer, neuron)}</b>" if focused is not None else None,
                      f"cluster c{cluster}" if cluster is not None and cluster < len(clusters) else None,
                      f"<span class='lf-selection' data-neurons='{','.join(neuron_label(*x) for x in chosen)}'>"
                      f"{len(chosen)} selected neuron{'s' if len(chosen) != 1 else ''}</span>" if chosen else None,
                      cmap.outside),
            sizing_mode="stretch_width", css_classes=["lf-nclusters-caption"], stylesheets=[VIEW_CSS, MAP_CSS])
        clear = clear_button(ctx, bool(chosen), lambda event: ctx.set(neurons=[]))
        enrichment = shown_html(ctx, "enrichment", self._enrichment(ctx, chosen, max_tokens) if chosen else "",
                                bool(chosen), sizing_mode="stretch_width", css_classes=["lf-enrichment-box"])
        shown = cluster is not None and cluster < len(clusters)
        members, members_text, member_items = self._members(ctx, max_tokens, clusters, cluster if shown else None)
        members_head = shown_html(ctx, "members_head", members_text, shown, sizing_mode="stretch_width")
        member_list = ctx.part(
            "members", BarList, visible=shown, kind="member", items=member_items,
            selected=next((i for i, (l, n) in enumerate(members) if l == layer and n == neuron), -1),
            init={"sizing_mode": "stretch_width", "height": 160},
            on_click=lambda key: ctx.set(layer=members[key][0], neuron=members[key][1]))
        head = layout_part(ctx, "head", caption, clear, cls=pn.Row, sizing_mode="stretch_width")
        body = layout_part(ctx, "body", cmap.pane, legend, cls=pn.Row, sizing_mode="stretch_both", min_height=320)
        return layout_part(ctx, "layout", head, body, enrichment, members_head, member_list, sizing_mode="stretch_both",
                           scroll=True, css_classes=["lf-view-neuron-clusters"])

    @staticmethod
    def _caption_head(meta: dict, n_mapped: int) -> str:
        clusters = meta["clusters"]
        return (f"<div class='lf-nclusters-head'>{n_mapped} neurons sampled by {esc(meta['method'])} importance "
                f"over {len(meta['topics'])} topics · {len(clusters)} clusters, "
                f"{sum(1 for c in clusters if c['tag'])} tagged (p &lt; 0.05 after correction"
                f"{', tagged on held-out samples' if meta['held_out'] else ''}) · map: {esc(meta['map_method'].upper())} "
                f"of each neuron's share of importance per topic</div>")

    def _members(self, ctx, max_tokens: int, clusters: list, cluster) -> tuple[list, str, list]:
        """A cluster's first 40 neurons (layer, index), the list's heading and its items (None: none shown)."""
        if cluster is None:
            return [], "", []
        members = clusters[cluster]["members"][:40]
        weight = self._importance(ctx, max_tokens, members)
        head = (f"<div class='lf-sub'>neurons of cluster <b class='lf-cluster'>{cluster}</b> "
                f"({esc(clusters[cluster]['tag'] or 'untagged')}), most important first; bar: importance summed over "
                f"the dataset, relative to the first</div>")
        items = [{"key": i, "label": neuron_label(l, n), "bar": w / max(weight[0], 1e-30), "note": f"{w:.3g}"}
                 for i, ((l, n), w) in enumerate(zip(members, weight))]
        return members, head, items

    # --- export (views/js/neuron_clusters.js): the map and legend as rendered; every cluster's
    # member list computed here; a lasso's enrichment (a lookup of any set of neurons) is a note
    def export_parts(self, ctx):
        from .cluster_map import export_map_parts

        return export_map_parts(ctx)

    def export_data(self, ex):
        from lensframe.export_pack import ExportData

        from .cluster_map import TAP_RADIUS, key_tail

        ctx, max_tokens = ex.rendered, ex.board.spec.dataset.max_tokens
        res = ctx.result(self.nodes(max_tokens)[1])
        clusters = res.meta["clusters"]
        cmap = ctx.keep("map", lambda: None)
        per = [self._members(ctx, max_tokens, clusters, c) for c in range(len(clusters))]
        return ExportData(
            meta={"head": self._caption_head(res.meta, len(res["layer"])), "key": key_tail("neuron", cmap.outside),
                  "radius": TAP_RADIUS, "k": len(clusters),
                  "members": [[[int(l), int(n)] for l, n in m] for m, _, _ in per],
                  "members_head": [h for _, h, _ in per], "member_items": [items for _, _, items in per],
                  "lasso": LASSO_NOTE},
            arrays={"layer": np.asarray(res["layer"], dtype=np.int32), "neuron": np.asarray(res["neuron"], dtype=np.int32),
                    "cluster": np.asarray(res["cluster"], dtype=np.int32)})

    def export_neurons(self, ex):  # ex: the asking view's (neurons'): the board's result, not a ctx's
        res = ex.board.result(self.nodes(ex.board.spec.dataset.max_tokens)[1])
        out: dict[int, list[int]] = {}
        for l, n in zip(np.asarray(res["layer"]).tolist(), np.asarray(res["neuron"]).tolist()):
            out.setdefault(l, []).append(n)
        return out

    def _mapped(self, shapes) -> int:
        """The neurons on the map, at most (n_neurons of the scored layers' neurons)."""
        info = shapes.info(self.model)
        scored = info.n_layers if self.p.layers == "all" else len({l for l in self.p.layers if l < info.n_layers})
        return min(self.p.n_neurons, scored * info.d_mlp)

    def export_neuron_count(self, shapes):
        exported = set(shapes.layers(self.model))
        info = shapes.info(self.model)
        scored = set(range(info.n_layers)) if self.p.layers == "all" else set(self.p.layers)
        return self._mapped(shapes) if scored & exported else 0

    def export_size(self, shapes):
        from lensframe.export_pack import b64_size

        from .cluster_map import map_export_bytes

        m = self._mapped(shapes)
        listed = min(m, 40 * self.p.k)  # each cluster's first 40, in the lists
        return {"map": map_export_bytes(m, m * 30, m * 34), "legend and caption": 3_000 + self.p.k * 220,
                "members": 3 * b64_size(4 * m) + self.p.k * 260 + listed * 75}

    def _importance(self, ctx, max_tokens: int, members: list) -> list[float]:
        """Each member's importance summed over every sample (what the sampling and the order use)."""
        if not members:
            return []
        imp = ctx.result(self.nodes(max_tokens)[0])
        d, layers = imp.meta["d_mlp"], imp.meta["layers"]
        total = imp["sums"].reshape(imp["sums"].shape[0], -1).sum(axis=1)
        return [float(total[layers.index(l) * d + n]) for l, n in members]

    @staticmethod
    def _legend_item(c: dict) -> dict:
        from .cluster_map import colour

        size = f"{c['size']} neuron{'s' if c['size'] != 1 else ''}"
        note = (f"{c['tag']} · d = {c['effect']:.2f} · p = {c['p_corrected']:.3g} · {size}" if c["tag"] else
                f"untagged (best: {c['best_topic']}, d = {c['effect']:.2f}, p = {c['p_corrected']:.2g}) · {size}")
        return {"group": c["cluster"], "color": colour(c["cluster"]), "label": f"c{c['cluster']}", "note": note}

    def _enrichment(self, ctx, chosen: list, max_tokens: int) -> str:
        """What the selected neurons are enriched for (the neuron_enrichment lookup), as HTML."""
        res = ctx.lookup(self.enrichment_node(max_tokens), neurons=tuple(chosen))
        meta = res.meta
        missing = (f" · <span class='lf-missing'>{len(meta['missing'])} not on the map, left out: "
                   f"{esc(', '.join(neuron_label(*x) for x in meta['missing'][:8]))}"
                   f"{' …' if len(meta['missing']) > 8 else ''}</span>" if meta["missing"] else "")
        n = meta["selected"]
        head = (f"<div class='lf-sub'>topic enrichment of the <b class='lf-selected-count'>{n}</b> selected "
                f"neuron{'s' if n != 1 else ''} against the other {meta['mapped'] - n} on the map{missing}</div>")
        if meta.get("reason"):
            return head + f"<div class='lf-hint'>{esc(meta['reason'])}</div>"
        test = (f"{'held-out' if meta['held_out'] else 'in-sample'} permutation test, {meta['n_perm']} shuffles, "
                "effect = (mean share - median share) / SD over the mapped neurons")
        verdict = (f"enriched for <b class='lf-enriched'>{esc(meta['tag'])}</b>: d = {meta['effect']:.2f}, "
                   f"p = {meta['p']:.3g}" if meta["tag"] else
                   f"<span class='lf-not-enriched'>not enriched for any topic</span> (best: {esc(meta['best_topic'])}, "
                   f"d = {meta['effect']:.2f}, p = {meta['p']:.2g})")
        order = sorted(range(len(meta["topics"])), key=lambda t: -meta["effects"][t])
        chips = " ".join(f"<span class='lf-chip lf-topic-effect' data-topic='{esc(meta['topics'][t])}'>"
                         f"{esc(meta['topics'][t])} <small>d={meta['effects'][t]:+.2f}</small></span>" for t in order)
        return head + f"<div class='lf-enrichment'>{verdict} <small>({test})</small></div><div>{chips}</div>"
