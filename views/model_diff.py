"""model_diff: what differs between two models of the same shape (the audit game, with the original).

Per layer, the relative weight change and the rank of the largest changed matrix (a ROME edit is
rank one); the texts whose next-token distributions moved most (KL over the dataset); and at the
focused sample and token, both models' logit lens and the tokens whose probability moved most.
Clicking a layer focuses it; clicking a text focuses it.
"""
from __future__ import annotations

from typing import ClassVar, Optional

import numpy as np
from pydantic import Field

from lensframe.graph import Node
from lensframe.ops.compare import layer_ranking

from .base import View, ViewParams, esc, html_pane


class ModelDiffView(View):
    type = "model_diff"
    default_title = "Model diff"
    description = "two models compared: weight change per layer (with rank), the texts that changed most, and the focused token"
    reads = ("sample", "text", "position", "layer")
    sets = ("layer", "sample", "text", "position")
    model_params: ClassVar[tuple[str, ...]] = ("other",)

    class Params(ViewParams):
        other: Optional[str] = Field(None, description="the model compared with `model` (default: the spec's other model)")
        texts: int = Field(15, ge=1, le=200, description="texts listed, by how much their predictions changed")
        top: int = Field(8, ge=1, le=50, description="tokens listed whose probability rose, and fell, the most")

    @property
    def other(self) -> str | None:
        if self.p.other:
            return self.p.other
        return next((name for name in self.infos if name != self.model), None)

    def weights_node(self) -> Node:
        return Node.make("weight_diff", self.model, other=self.other)

    def kl_node(self, max_tokens: int) -> Node:
        return Node.make("model_kl", self.model, inputs=(self.tokens_node(max_tokens),), other=self.other)

    def lens_node(self) -> Node:
        return Node.make("pair_lens", self.model, other=self.other)

    def needs(self, max_tokens):
        if self.other is None:
            return []
        return [self.tokens_node(max_tokens), self.weights_node(), self.kl_node(max_tokens), self.lens_node()]

    def check(self, info):
        issues = super().check(info)
        if self.other is None:
            return issues + [((), "model_diff needs two models", "add a second model under `models:` (e.g. the base model)")]
        if self.other == self.model:
            return issues + [(("other",), f"compares model {self.model!r} with itself", "name the other model")]
        theirs = self.infos.get(self.other)
        if theirs is not None:
            shape = lambda i: (i.family, i.n_layers, i.d_model, i.d_mlp, i.n_heads, i.vocab_size)  # noqa: E731
            if shape(info) != shape(theirs):
                issues.append((("other",), f"models {self.model!r} and {self.other!r} differ in shape "
                               f"({shape(info)} vs {shape(theirs)}): model_diff compares two versions of one model", None))
        return issues

    def render(self, ctx):
        import panel as pn

        from .widgets import BarList, SampleList

        max_tokens = ctx.board.spec.dataset.max_tokens
        weights = ctx.prepared(self.weights_node())
        kl = ctx.result(self.kl_node(max_tokens))
        a, b = self.model, self.other
        ranking = layer_ranking(weights)
        top_change = ranking[0][1] or 1.0
        layer_items = []
        for layer, change in ranking:
            sel = np.flatnonzero(weights["layer"] == layer)
            biggest = sel[np.argmax(weights["delta"][sel])]
            name = weights.meta["params"][biggest]
            note = "unchanged" if change == 0 else f"{change:.2e} · {name}: rank {int(weights['rank'][biggest])}"
            layer_items.append({"key": int(layer), "label": "other" if layer < 0 else f"layer {layer}",
                                "bar": change / top_change, "note": note})
        focused_layer = ctx.get("layer")
        layers = BarList(items=layer_items, selected=focused_layer if focused_layer is not None else -99, kind="layer-diff",
                         sizing_mode="stretch_width", height=150,
                         on_click=lambda key: ctx.set(layer=key) if key >= 0 else None)

        ds = ctx.board.dataset
        order = np.argsort(-np.nan_to_num(kl["mean"], nan=-1))[: self.p.texts]
        texts = SampleList(items=[{"index": int(i), "label": ds.labels[i] if ds.labels else "",
                                   "text": f"KL {kl['mean'][i]:.3f} (max {kl['max'][i]:.2f}) · " + " ".join(ds.texts[i].split())[:90]}
                                  for i in order], selected=-1 if ctx.probe else ctx.sample, sizing_mode="stretch_width", height=150,
                           on_click=lambda index: ctx.set(sample=index, text=None, position=None))

        tokens = ctx.tokens()
        pos = ctx.position(len(tokens))
        lens = ctx.lookup(self.lens_node(), sample=ctx.subject, position=pos, top=self.p.top)
        dec = lambda ids: [esc(t) for t in ctx.decode(ids)]  # noqa: E731
        ta, tb = dec(lens["top_a"]), dec(lens["top_b"])
        n = len(ta)
        rows = "".join(
            f"<tr class='{'lf-lens-differs' if ta[i] != tb[i] else ''}'><td>{'out' if i == n - 1 else i}</td>"
            f"<td><span class='lf-chip'>{ta[i]}</span> {lens['prob_a'][i]:.2f}</td>"
            f"<td><span class='lf-chip'>{tb[i]}</span> {lens['prob_b'][i]:.2f}</td></tr>" for i in range(n))
        moved = dec(lens["moved_ids"])
        half = len(moved) // 2

        def chips(sl, cls):
            return " ".join(f"<span class='lf-chip {cls}' title='{esc(a)}: {pa:.3f} → {esc(b)}: {pb:.3f}'>{t} "
                            f"<small>{pa:.2f}→{pb:.2f}</small></span>"
                            for t, pa, pb in zip(moved[sl], lens["moved_a"][sl], lens["moved_b"][sl]))

        focus = html_pane(
            f"<div class='lf-sub'>{ctx.subject_label()} · position {pos} {esc(repr(tokens[pos]))}: the next token, "
            f"{esc(a)} → {esc(b)}</div>"
            f"<div class='lf-moved-up'>rose: {chips(slice(0, half), 'lf-moved lf-up')}</div>"
            f"<div class='lf-moved-down'>fell: {chips(slice(half, None), 'lf-moved lf-down')}</div>"
            f"<div class='lf-sub'>logit lens at this token (top-1 and its probability; rows that differ are marked)</div>"
            f"<div class='lf-pair-lens lf-edit-result'><table><tr><th>layer</th><th>{esc(a)}</th><th>{esc(b)}</th></tr>"
            f"{rows}</table></div>",
            sizing_mode="stretch_width")
        head = html_pane(f"<div class='lf-diff-models'><b>{esc(a)}</b> vs <b>{esc(b)}</b> · most changed: "
                         f"<b class='lf-top-layer'>{'other' if ranking[0][0] < 0 else f'layer {ranking[0][0]}'}</b></div>"
                         "<div class='lf-sub'>weight change per layer (‖ΔW‖/‖W‖; rank of its largest change)</div>",
                         sizing_mode="stretch_width")
        return pn.Column(head, layers, html_pane("<div class='lf-sub'>texts whose predictions changed most "
                                                 "(mean KL over tokens)</div>", sizing_mode="stretch_width"),
                         texts, focus, sizing_mode="stretch_both", scroll=True, css_classes=["lf-view-model-diff"])
