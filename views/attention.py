"""attention: the focused layer and head's attention pattern for the focused sample, plus
thumbnails of every head of the layer (click one to focus it).

Patterns come from the focus pass (one forward of the focused sample, shared with other views).
"""
from __future__ import annotations

import json

import numpy as np
from pydantic import Field

from lensframe.graph import Node

from .base import View, ViewParams, esc, html_part, layout_part

HEADS_WIDTH = 132  # px: two columns of thumbnails beside the pattern


class AttentionView(View):
    type = "attention"
    default_title = "Attention"
    description = "attention pattern of the focused layer and head, with all heads of the layer"
    reads = ("sample", "text", "position", "layer", "head")
    sets = ("head", "position")
    export_script = "js/attention.js"
    export_by_layer = True

    class Params(ViewParams):
        show_heads: bool = Field(True, description="show the thumbnails of all heads of the layer")

    def attention_node(self, max_tokens: int) -> Node:
        return Node.make("attention", self.model, inputs=(self.tokens_node(max_tokens),))

    def needs(self, max_tokens):
        return [self.tokens_node(max_tokens), self.attention_node(max_tokens)]

    def render(self, ctx):
        import panel as pn

        from .widgets import HeadPicker, HeatGrid

        pattern = ctx.focus_result(self.attention_node(ctx.board.spec.dataset.max_tokens))["pattern"]  # [layers, heads, q, k]
        n_layers, n_heads = pattern.shape[:2]
        layer = min(ctx.get("layer") if ctx.get("layer") is not None else 0, n_layers - 1)
        head = min(ctx.get("head") or 0, n_heads - 1)
        tokens = ctx.tokens()
        T = len(tokens)
        pos = ctx.position(T)
        p = pattern[layer, head]
        # each query row scaled by its own max, square root: one strong sink (often position 0)
        # would otherwise wash out every other cell
        shade = np.sqrt(p / np.maximum(p.max(-1, keepdims=True), 1e-12))
        vals = [[float(shade[q, k]) if k <= q else None for k in range(T)] for q in range(T)]
        tips = [[f"query {q} {tokens[q]!r} \u2192 key {k} {tokens[k]!r}\nattention weight {p[q, k]:.3f}"
                 if k <= q else f"key {k} comes after query {q}: masked" for k in range(T)] for q in range(T)]
        # The pattern first, as large as the card allows: square cells down to 4 px, so a one-row
        # card shows the whole of a 32-token pattern (the tips name the tokens); the heads beside it.
        grid = ctx.part(
            "grid", HeatGrid, row_labels=[f"{q} {t}"[:12] for q, t in enumerate(tokens)],
            row_tips=[f"query position {q}: {t!r}" for q, t in enumerate(tokens)], col_labels=tokens, values=vals,
            tips=tips, selected_row=pos,
            init=dict(selected_col=-1, kind="attention", fit="square", cell_width=24, cell_height=24, min_cell_width=4,
                      min_cell_height=4, vertical_cols=True, row_title="query position (attends from) \u2193",
                      col_title="key position (attended to) \u2192 \u00b7 shade: weight / the row's max, square root",
                      sizing_mode="stretch_both"),
            on_click=lambda row, col: ctx.set(position=row))
        top = sorted(range(pos + 1), key=lambda k: -p[pos, k])[:3]
        caption = html_part(
            ctx, "caption",
            f"<div class='lf-attn-head'>{ctx.subject_label()} · layer <b class='lf-layer'>{layer}</b> · head <b class='lf-head-index'>{head}</b>"
            f" · query position <b class='lf-position'>{pos}</b> <code>{esc(repr(tokens[pos]))}</code> attends to "
            + ", ".join(f"<code>{esc(repr(tokens[k]))}</code> {p[pos, k]:.2f}" for k in top) + "</div>",
            sizing_mode="stretch_width")
        parts = [grid]
        if self.p.show_heads:
            heads = pattern[layer]  # [heads, q, k]
            strongest = heads[:, pos, : pos + 1].argmax(-1)
            head_tips = [f"layer {layer} head {h}: query {pos} {tokens[pos]!r} attends most to key {int(k)} "
                         f"{tokens[int(k)]!r} ({heads[h, pos, int(k)]:.2f})" for h, k in enumerate(strongest)]
            picker = ctx.part("heads", HeadPicker, patterns=json.dumps(heads.round(3).tolist()), tips=head_tips, selected=head,
                              init=dict(size=64, width=HEADS_WIDTH, sizing_mode="stretch_height",
                                        css_classes=["lf-attn-heads"]),
                              on_click=lambda head: ctx.set(head=head))
            label = html_part(ctx, "heads-label", f"<div class='lf-sub'>heads of layer {layer}</div>",
                              width=HEADS_WIDTH)
            parts.append(layout_part(ctx, "heads-column", label, picker, width=HEADS_WIDTH,
                                     sizing_mode="stretch_height"))
        body = layout_part(ctx, "body", *parts, cls=pn.Row, sizing_mode="stretch_both")
        return layout_part(ctx, "layout", caption, body, sizing_mode="stretch_both", css_classes=["lf-view-attention"])

    # --- export (views/js/attention.js): every exported sample's patterns at the exported layers --
    def export_data(self, ex):
        from lensframe.export_pack import ExportData, fixed_digits, smallest_uint
        from lensframe.export_plan import ranges

        n_layers, n_heads = ex.board.infos[self.model].n_layers, ex.board.infos[self.model].n_heads
        layers = [l for l in (ex.options.layers if ex.options.layers is not None else range(n_layers)) if l < n_layers]
        weights, orders = [], []
        for s in ex.samples:
            ctx = ex.context(s)
            pattern = ctx.focus_result(self.attention_node(ex.board.spec.dataset.max_tokens))["pattern"]
            T = len(ctx.tokens())
            if pattern.shape[-1] != T:
                raise ValueError(f"sample {s}: the attention pattern has {pattern.shape[-1]} positions, the tokens {T}")
            p = pattern[layers]  # [layers, heads, q, k]
            q, k = np.tril_indices(T)
            below = p[..., q, k]
            # what the tips (3 decimals) and the caption (2) show; the 2-decimal digits are those of
            # the 3-decimal ones or one more, so one bit says which
            q3, q2 = fixed_digits(below, 3), fixed_digits(below, 2)
            up = q2 - q3 // 10
            assert ((up == 0) | (up == 1)).all()
            weights.append((q3 * 2 + up).astype(np.uint16).ravel())
            # each query row's keys by weight (sorted() is stable: ties keep the earlier key)
            masked = np.where(np.tril(np.ones((T, T), dtype=bool)), -p, np.inf)
            order = np.argsort(masked, axis=-1, kind="stable")[..., :3]
            if T < 3:
                order = np.pad(order, [(0, 0)] * 3 + [(0, 3 - T)])
            orders.append(order.astype(smallest_uint(max(T - 1, 0))).ravel())
        top = max(int(o.max(initial=0)) for o in orders)
        return ExportData(
            meta={"samples": list(ex.samples), "layers": layers, "layers_text": ranges(layers), "n_layers": n_layers,
                  "n_heads": n_heads},
            arrays={"weights": np.concatenate(weights), "order": np.concatenate(orders).astype(smallest_uint(top))})

    def export_size(self, shapes):
        from lensframe.export_pack import b64_size

        lengths = shapes.lengths(self.model)
        n_layers, heads = len(shapes.layers(self.model)), shapes.info(self.model).n_heads
        per = n_layers * heads
        weights = int((lengths * (lengths + 1) // 2).sum()) * per * 2
        order = int(lengths.sum()) * per * 3 * (1 if int(lengths.max(initial=0)) <= 256 else 2)
        T0 = int(lengths[0]) if len(lengths) else 0
        return {"weights": b64_size(weights), "order": b64_size(order),
                "first render": 5_000 + T0 * T0 * 75 + heads * T0 * T0 * 20}  # tips; thumbnails as JSON
