"""difference: what sets two groups of texts apart (the description step of Zhong et al. 2022 / D5,
offline): the texts selected on the map (a lasso in text_clusters) or else the focused text
cluster against the rest, or label A against label B.

Distinguishing words and bigrams by weighted log-odds with an informative Dirichlet prior (Monroe et
al. 2008; z-scores), the most representative texts of each side from a cross-fitted classifier, and
how separable the groups are. Clicking a text focuses it.

Separability leads with the BALANCED accuracy (the mean of the two groups' recalls) beside its
chance level, 0.5: plain accuracy rewards answering the larger group, so 7 texts against 113 score
0.94 for a classifier that never says the small group, and plain accuracy is shown only after it.
The view says "at chance" when the balanced accuracy is not above chance by the one-sided exact test
of lensframe.ops.describe.chance_p at p < 0.05: the out-of-fold predictions scored against every
relabelling of the texts with the same group sizes (Fisher's exact test of group by prediction;
no refitting, so it is instant, and conservative for cross-validated predictions). The spread of
the balanced accuracy over the folds is shown beside it, as context, not as the criterion: with a
handful of texts in the small group, each fold's figure rests on one or two of them.
"""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, model_validator

from lensframe.graph import Node

from .base import VIEW_CSS, View, esc, html_part, layout_part
from .text_clusters import ClusterParams, _preview, check_layer, text_cluster_nodes


NO_CLUSTER_HINT = ("<div class='lf-hint'>click a cluster (in a text_clusters view) or lasso texts on its map to see "
                   "what sets them apart from the rest</div>")
MISSING_TEXT_NOTE = ("<div class='lf-export-missing lf-hint'>Text #{index} is not in this exported page (it holds "
                     "samples {held}), so it cannot be focused here.</div>")


class DifferenceView(View):
    type = "difference"
    default_title = "What sets the groups apart"
    description = "distinguishing words (log-odds z), representative texts and separability of two groups"
    reads = ("text_cluster", "sample", "texts")
    sets = ("sample", "text", "position")
    export_script = "js/difference.js"

    class Params(ClusterParams):
        compare: Literal["cluster", "labels"] = Field(
            "cluster", description="cluster: the texts selected on the map, else the focused text cluster, vs the rest; "
                                   "labels: label a vs label b")
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
        groups = self._groups(ctx, len(ds))
        waiting = isinstance(groups, str)
        head_text, items = "", {"a": [], "b": []}
        if not waiting:  # a hint instead: the other parts stay, hidden, so showing them again builds nothing
            head_text, items = self._described(ctx, groups)
        hint = shown_html(ctx, "hint", groups if waiting else "", waiting, sizing_mode="stretch_width")
        head = shown_html(ctx, "head", head_text, not waiting, sizing_mode="stretch_width")
        pick = lambda index: ctx.set(sample=index, text=None, position=None)  # noqa: E731
        lists = [ctx.part(f"reps_{side}", SampleList, items=items[side], selected=ctx.sample,
                          init={"sizing_mode": "stretch_width", "height": 130}, on_click=pick) for side in "ab"]
        row = ctx.part("lists", pn.Row, visible=not waiting, init={"objects": lists, "sizing_mode": "stretch_width"})
        return layout_part(ctx, "layout", hint, head, row, sizing_mode="stretch_both", scroll=True,
                           css_classes=["lf-view-difference"])

    def _described(self, ctx, groups) -> tuple[str, dict]:
        """The head (terms, separability) and each side's representative texts for (a, b, names)."""
        ds = ctx.board.dataset
        a, b, names = groups
        res = ctx.lookup(self.describe_node(ctx.board.spec.dataset.max_tokens), a=a, b=b)
        items = {side: [{"index": i, "label": ds.labels[i] if ds.labels else "",
                         "text": f"p={p:.2f} · " + _preview(ds.texts[i], 100)}
                        for i, p in res.meta[f"representative_{side}"]] for side in "ab"}
        return self._head(res, names), items

    # --- export (views/js/difference.js): the description of every text cluster (or of the two
    # labels) computed here; a lasso selection of texts cannot be described in advance (text_clusters
    # says so in its card), nor can a representative text the page does not hold be focused
    def export_data(self, ex):
        from lensframe.export_pack import ExportData
        from lensframe.export_plan import ranges

        ctx = ex.rendered
        if self.p.compare == "labels":
            entries = [self._described(ctx, self._groups(ctx, len(ctx.board.dataset)))]
        else:
            _, node = text_cluster_nodes(self, self.info, ex.board.spec.dataset.max_tokens)
            k = int(ctx.result(node).meta["k"])
            entries = [self._described(ctx, (("cluster", c), ("rest", c), (f"cluster {c}", "the rest"))) for c in range(k)]
        return ExportData(meta={"labels": self.p.compare == "labels", "hint": NO_CLUSTER_HINT,
                                "heads": [h for h, _ in entries], "items": [items for _, items in entries],
                                "missing": MISSING_TEXT_NOTE.replace("{held}", ranges(ex.samples))})

    def export_size(self, shapes):
        ds = shapes.board.dataset
        n = len(ds)
        k = 1 if self.p.compare == "labels" else (self.p.k or max(2, round(n ** 0.5)))
        label = (sum(len(x) for x in ds.labels) / n + 12) if ds.labels else 10
        item = 30 + label + min(100, sum(len(" ".join(t.split())) for t in ds.texts) / max(n, 1))
        # per description: its head (the terms of both sides: up to `top` chips of ~80 characters)
        # and 5 representative texts a side; the first render shows one (labels) or the hint (a page
        # opens at no cluster)
        one = 1_300 + 2 * min(self.p.top, 12) * 80 + 10 * item
        return {"descriptions": int(k * one), "first render": int(6_000 + (one if self.p.compare == "labels" else 0))}

    def _head(self, res, names) -> str:
        meta, terms = res.meta, res.meta["terms"]

        def side_terms(side):
            chips = [f"<span class='lf-chip lf-term'>{esc(t['term'])} <small>z={t['z']:+.1f} · "
                     f"{t['count_a']}:{t['count_b']}</small></span>" for t in terms if t["side"] == side][: self.p.top]
            return " ".join(chips) or "<i>none at this size</i>"

        n_a, n_b = len(res["a"]), len(res["b"])
        return (f"<div class='lf-diff-head'><b class='lf-group-a'>{esc(names[0])}</b> "
                f"(<span class='lf-n-a'>{n_a}</span> text{'s' if n_a != 1 else ''}) vs "
                f"<b class='lf-group-b'>{esc(names[1])}</b> (<span class='lf-n-b'>{n_b}</span> text{'s' if n_b != 1 else ''})</div>"
                f"<div class='lf-separability'>{separability_html(meta)}</div>"
                f"<div class='lf-sub'>more in {esc(names[0])} <small>(z of the log-odds; count in {esc(names[0])} : in "
                f"{esc(names[1])})</small></div><div class='lf-terms-a'>{side_terms('a')}</div>"
                f"<div class='lf-sub'>more in {esc(names[1])}</div><div class='lf-terms-b'>{side_terms('b')}</div>"
                f"<div class='lf-sub'>most representative texts (out-of-fold probability of their side)</div>")

    def _groups(self, ctx, n: int):
        """(a, b, names) for the describe lookup, or the hint to show instead."""
        if self.p.compare == "labels":  # the labels were checked against the dataset (check_data)
            return ("label", self.p.a), ("label", self.p.b), (self.p.a, self.p.b)
        chosen = tuple(sorted({int(i) for i in ctx.get("texts") if 0 <= int(i) < n}))
        if chosen:
            if len(chosen) == n:
                return ("<div class='lf-hint'>the selection holds every text: there is no rest to compare it with "
                        "(lasso fewer texts on the map)</div>")
            return ("texts", chosen), ("other", chosen), (f"the {len(chosen)} selected text{'s' if len(chosen) != 1 else ''}",
                                                         "the rest")
        cluster = ctx.get("text_cluster")
        if cluster is None:
            return NO_CLUSTER_HINT
        return ("cluster", cluster), ("rest", cluster), (f"cluster {cluster}", "the rest")


def separability_html(meta: dict) -> str:
    """The separability line: balanced accuracy first, its chance level beside it, the verdict."""
    if meta.get("balanced_accuracy") is None:
        return f"separability: n/a ({esc(meta.get('reason'))})"
    ba, chance, p = meta["balanced_accuracy"], meta.get("chance", 0.5), meta.get("p_chance")
    verdict = (f"<span class='lf-verdict lf-above-chance'>above chance (p = {p:.2g}, exact test)</span>"
               if meta.get("above_chance") else
               f"<span class='lf-verdict lf-at-chance'>at chance: their words tell them apart no better than guessing "
               f"(p = {p:.2g}, exact test)</span>")
    spread = meta.get("balanced_sd")
    return (f"balanced accuracy <b class='lf-balanced'>{ba:.2f}</b> <span class='lf-chance'>(chance {chance:.2f})</span>"
            + (f" · SD {spread:.2f} from fold to fold ({meta['folds']} folds)" if spread is not None
               else f" · {meta['folds']} folds")
            + f" · {verdict} · <span class='lf-plain-accuracy'>plain accuracy {meta['accuracy']:.2f}</span>")


def shown_html(ctx, name: str, text: str, visible: bool, **init):
    """html_part with the difference view's styles (the term chips and representative texts),
    shown or hidden with the focus."""
    return html_part(ctx, name, text, visible=visible, stylesheets=[VIEW_CSS, DIFF_CSS], **init)


DIFF_CSS = """
.lf-diff-head { font-size: 13px; margin-bottom: 2px; }
.lf-separability { line-height: 1.4; }
.lf-balanced { font-size: 14px; }
.lf-chance, .lf-plain-accuracy { color: #666; }
.lf-at-chance { color: #8a5a00; font-weight: 600; }
.lf-above-chance { color: #2d6a2d; font-weight: 600; }
"""
