"""Attention patterns of the focused sample: softmax(QK^T/sqrt(d) + mask) per layer and head.

Read from the eager attention modules (what transformers returns with output_attentions=True),
all layers at once, so moving between layers and heads needs no new forward pass.
"""
from __future__ import annotations

import numpy as np

from . import register
from .base import Op, Result


@register
class AttentionOp(Op):
    name = "attention"
    kind = "focus"

    def hooks(self, node, info):
        return {f"attn_pattern.{l}" for l in range(info.n_layers)}

    def estimate_bytes(self, node, info, n_samples, n_tokens):
        return info.n_layers * info.n_heads * n_tokens * n_tokens * 4  # per focused sample

    def extract(self, node, captures, ctx) -> Result:
        pats = [captures[f"attn_pattern.{l}"][0].float().cpu().numpy() for l in range(ctx.info.n_layers)]
        return Result({"pattern": np.stack(pats)})  # [layers, heads, query, key]
