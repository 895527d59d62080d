"""difference: what sets two groups of texts apart (the description step of Zhong et al. 2022 / D5,
offline): the focused text cluster against the rest, or label A against label B.

Distinguishing words and bigrams by weighted log-odds with an informative Dirichlet prior (Monroe et
al. 2008; z-scores), the most representative texts of each side from a cross-fitted classifier, and
how separable the groups are (cross-validated accuracy). Clicking a text focuses it.
"""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, model_validator

from lensframe.graph import Node

from .base import View, esc, html_pane
from .text_clusters import ClusterParams, check_layer, text_cluster_nodes


class DifferenceView(View):
    type = "difference"
    default_title = "What sets the groups apart"
    description = "distinguishing words (log-odds z), representative texts and separability of two groups"
    reads = ("text_cluster", "sample")
    sets = ("sample",)

    class Params(ClusterParams):
        compare: Literal["cluster", "labels"] = Field(
            "cluster", description="cluster: the focused text cluster vs the rest; labels: label a vs label b")
        a: Optional[str] = Field(None, description="compare: labels: the first label")
        b: Optional[str] = Field(None, description="compare: labels: the second label")
        top: int = Field(12, ge=1, le=100, description="terms listed per side")

        @model_validator(mode="after")
        def _labels_named(self):
            if self.compare == "labels" and (not self.a or not self.b):
                raise ValueError("compare: labels needs both `a` and `b` (two labels of the dataset)")
            return self

    def describe_node(self, max_tokens: int) -> Node:
        _, clusters = text_cluster_nodes(self, self.info, max_tokens)
        return Node.make("describe", self.model, inputs=(clusters,))

    def needs(self, max_tokens):
        return [self.tokens_node(max_tokens), *text_cluster_nodes(self, self.info, max_tokens), self.describe_node(max_tokens)]

    def check(self, info):
        return super().check(info) + check_layer(self, info)

    def check_views(self, views, max_tokens):
        """In `compare: cluster` mode the focused cluster comes from a text_clusters view: describe
        that same clustering, or "cluster 1" would mean different texts here and on the map."""
        if self.p.compare != "cluster":
            return []
        maps = {v.id: text_cluster_nodes(v, v.info, max_tokens)[1] for v in views.values() if v.type == "text_clusters"}
        mine = text_cluster_nodes(self, self.info, max_tokens)[1]
        if not maps or mine in maps.values():
            return []
        other = next(iter(maps))
        return [((), f"clusters the texts differently from text_clusters view {other!r} (its layer, k or seed differ)",
                 "give this view the same layer, k and seed as the text_clusters view")]

    def check_data(self, dataset):
        if self.p.compare != "labels":
            return []
        labels = sorted(set(dataset.labels or []))
        from lensframe.errors import did_you_mean

        return [((key,), f"label {value!r} is not in the dataset" + ("" if labels else " (it has no labels)"),
                 did_you_mean(value, labels) or (f"labels: {', '.join(labels)}" if labels else "set dataset.label"))
                for key, value in (("a", self.p.a), ("b", self.p.b)) if value not in labels]

    def render(self, ctx):
        import panel as pn

        from .widgets import SampleList

        ds = ctx.board.dataset
        if self.p.compare == "labels":  # the labels were checked against the dataset (check_data)
            a, b, names = ("label", self.p.a), ("label", self.p.b), (self.p.a, self.p.b)
        else:
            cluster = ctx.get("text_cluster")
            if cluster is None:
                return html_pane("<div class='lf-hint'>click a cluster (in a text_clusters view) to see what sets it "
                                 "apart from the rest</div>", sizing_mode="stretch_width")
            a, b, names = ("cluster", cluster), ("rest", cluster), (f"cluster {cluster}", "the rest")
        res = ctx.lookup(self.describe_node(ctx.board.spec.dataset.max_tokens), a=a, b=b)
        acc = res.meta["accuracy"]
        sep = (f"cross-validated accuracy <b class='lf-accuracy'>{acc:.2f}</b> (balanced {res.meta['balanced_accuracy']:.2f}, "
               f"{res.meta['folds']} folds)" if acc is not None else f"separability: n/a ({esc(res.meta['reason'])})")
        terms = res.meta["terms"]

        def side_terms(side):
            chips = [f"<span class='lf-chip lf-term' title='{t['count_a']} vs {t['count_b']}'>{esc(t['term'])} "
                     f"<small>z={t['z']:+.1f}</small></span>" for t in terms if t["side"] == side][: self.p.top]
            return " ".join(chips) or "<i>none at this size</i>"

        def reps(key):
            return [{"index": i, "label": ds.labels[i] if ds.labels else "", "text": f"p={p:.2f} · " + " ".join(ds.texts[i].split())[:100]}
                    for i, p in res.meta[key]]

        pick = lambda index: ctx.set(sample=index, position=None)  # noqa: E731
        head = html_pane(
            f"<div class='lf-diff-head'><b class='lf-group-a'>{esc(names[0])}</b> ({len(res['a'])} texts) vs "
            f"<b class='lf-group-b'>{esc(names[1])}</b> ({len(res['b'])} texts) · {sep}</div>"
            f"<div class='lf-sub'>more in {esc(names[0])}</div><div class='lf-terms-a'>{side_terms('a')}</div>"
            f"<div class='lf-sub'>more in {esc(names[1])}</div><div class='lf-terms-b'>{side_terms('b')}</div>"
            f"<div class='lf-sub'>most representative texts (out-of-fold probability of their side)</div>",
            sizing_mode="stretch_width")
        lists = pn.Row(SampleList(items=reps("representative_a"), selected=ctx.sample, sizing_mode="stretch_width",
                                  height=130, on_click=pick),
                       SampleList(items=reps("representative_b"), selected=ctx.sample, sizing_mode="stretch_width",
                                  height=130, on_click=pick), sizing_mode="stretch_width")
        return pn.Column(head, lists, sizing_mode="stretch_both", scroll=True, css_classes=["lf-view-difference"])
