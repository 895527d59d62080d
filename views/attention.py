"""attention: the focused layer and head's attention pattern for the focused sample, plus
thumbnails of every head of the layer (click one to focus it).

Patterns come from the focus pass (one forward of the focused sample, shared with other views).
"""
from __future__ import annotations

import numpy as np
from pydantic import Field

from lensframe.graph import Node

from .base import View, ViewParams, esc, html_pane


class AttentionView(View):
    type = "attention"
    default_title = "Attention"
    description = "attention pattern of the focused layer and head, with all heads of the layer"
    reads = ("sample", "text", "position", "layer", "head")
    sets = ("head", "position")

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
        tips = [[f"{tokens[q]!r} (q {q}) → {tokens[k]!r} (k {k}): {p[q, k]:.3f}" for k in range(T)] for q in range(T)]
        grid = HeatGrid(row_labels=[f"{q} {t}"[:12] for q, t in enumerate(tokens)], col_labels=tokens, values=vals,
                        tips=tips, selected_row=pos, selected_col=-1, kind="attention", cell_width=12,
                        cell_height=12, vertical_cols=True, sizing_mode="stretch_both",
                        on_click=lambda row, col: ctx.set(position=row))
        top = sorted(range(pos + 1), key=lambda k: -p[pos, k])[:3]
        caption = html_pane(
            f"<div class='lf-attn-head'>{ctx.subject_label()} · layer <b class='lf-layer'>{layer}</b> · head <b class='lf-head-index'>{head}</b>"
            f" · query position <b class='lf-position'>{pos}</b> <code>{esc(repr(tokens[pos]))}</code> attends to "
            + ", ".join(f"<code>{esc(repr(tokens[k]))}</code> {p[pos, k]:.2f}" for k in top) + "</div>",
            sizing_mode="stretch_width")
        parts = [caption]
        if self.p.show_heads:
            parts.append(HeadPicker(patterns=pattern[layer].round(3).tolist(), selected=head, size=56,
                                    sizing_mode="stretch_width", on_click=lambda head: ctx.set(head=head)))
        parts.append(grid)
        return pn.Column(*parts, sizing_mode="stretch_both", css_classes=["lf-view-attention"])
