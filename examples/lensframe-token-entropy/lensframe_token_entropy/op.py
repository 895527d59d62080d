"""The `token_entropy` op: per token of every sample, how sure the model is of the next token.

A dataset op (a streaming reduction folded into the model's one fused dataset pass): it reads the
`unembed` hook (the model's own logits) of each batch and keeps, per sample and position t,
  entropy    H(p_t) in nats, p_t = softmax(logits_t), the distribution over token t+1
  surprisal  -log p_t(x_{t+1}) in nats, of the token that actually comes next (NaN at the last token)
  rank       of x_{t+1} under p_t, 0 = the model's top-1 (-1 at the last token)
  ids/probs  the top_k predictions
Only these small per-token arrays are kept; the batch's [B, T, V] logits are dropped after update.

Importing this module registers the op (lensframe.ops.register); the view module imports it, so
the op exists wherever the view type does (lensframe loads every view type before it plans).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from lensframe.ops import Result, register
from lensframe.ops.base import FilledRows, Op

if TYPE_CHECKING:
    import torch

FLOATS = ("entropy", "surprisal", "probs")


def next_token_stats(logits: torch.Tensor, next_ids: torch.Tensor, has_next: torch.Tensor, k: int) -> dict:
    """Statistics of rows of logits [R, V]; next_ids [R] is the token after each row's position
    (meaningful where has_next [R] is True). torch is imported here, not at the top: the view
    imports this module to register the op, and `lensframe validate` checks specs without torch."""
    import torch

    z = logits.float().detach()
    logp = torch.log_softmax(z, -1)
    entropy = -(logp.exp() * logp).sum(-1)
    target = next_ids.clamp_min(0).view(-1, 1)
    surprisal = -logp.gather(-1, target).squeeze(-1)
    rank = (z > z.gather(-1, target)).sum(-1, dtype=torch.int32)  # tokens strictly more likely
    top = logp.topk(k, dim=-1)
    return {"entropy": entropy, "surprisal": surprisal.masked_fill(~has_next, float("nan")),
            "rank": rank.masked_fill(~has_next, -1), "ids": top.indices.int(), "probs": top.values.exp()}


@register
class TokenEntropyOp(Op):
    name = "token_entropy"  # op names are global: a plugin should pick one no built-in uses
    version = 1  # bump when the numbers change: stored results of version 1 are then recomputed
    kind = "dataset"

    def hooks(self, node, info):
        return {"unembed"}

    def estimate_bytes(self, node, info, n_samples, n_tokens):
        return n_samples * n_tokens * (3 * 4 + node.param("top_k") * 8)

    def init(self, node, ctx):
        T, k = ctx.n_tokens, node.param("top_k")
        shapes = {"entropy": (T,), "surprisal": (T,), "rank": (T,), "ids": (T, k), "probs": (T, k)}
        dtypes = {name: np.float32 if name in FLOATS else np.int32 for name in shapes}
        return FilledRows(shapes, dtypes, len(ctx.dataset))

    def update(self, node, state, batch, ctx):
        import torch

        mask = batch.mask  # [B, T], right-padded
        pad = torch.zeros_like(mask[:, :1])
        next_ids = torch.cat([batch.input_ids[:, 1:], torch.zeros_like(batch.input_ids[:, :1])], 1)
        has_next = mask & torch.cat([mask[:, 1:], pad], 1)
        stats = next_token_stats(batch.captures["unembed"][mask], next_ids[mask], has_next[mask], node.param("top_k"))
        offsets = np.cumsum([0] + mask.sum(1).tolist())
        for name, value in stats.items():
            value = value.cpu().numpy()
            state.put(batch.samples, name, [value[offsets[i]:offsets[i + 1]] for i in range(len(batch.samples))])
        return state

    def merge(self, node, a, b):
        return a.merge(b)  # shards fill disjoint samples' rows: order-proof

    def finalize(self, node, state, ctx):
        return Result(state.arrays, {"vocab_size": int(ctx.info.vocab_size)})
