"""Per-sample summaries that clustering views build on (docs/METHODS.md, issue 4).

  neuron_importance  dataset  importance of every MLP neuron of the chosen layers, folded per label
                              into [neurons, topics] sums as a streaming reduction:
                              attribution |m_i * dloss/dm_i| summed over positions (a backward pass;
                              loss = the sample's mean LM loss), or mean |m_i| (forward only)
  text_embeddings    dataset  each sample's mean-pooled residual after one block (Zhong et al. 2022
                              embed texts with pooled encoder states; we use the spec's own model)
Memory is the size of the results (neurons x topics, samples x d_model), never samples x neurons x
positions.
"""
from __future__ import annotations

import numpy as np
import torch

from . import register
from .base import FilledRows, Op, Result
from .neurons import layers_of


def topics_of(dataset) -> list[str]:
    return sorted(set(dataset.labels)) if dataset.labels else ["all"]


@register
class NeuronImportanceOp(Op):
    name = "neuron_importance"
    kind = "dataset"

    def hooks(self, node, info):
        return {f"mlp_post.{l}" for l in layers_of(node, info.n_layers)}

    def grad_hooks(self, node, info):
        return self.hooks(node, info) if node.param("method") == "attribution" else set()

    def estimate_bytes(self, node, info, n_samples, n_tokens):
        return len(layers_of(node, info.n_layers)) * info.d_mlp * 8 * 2 * 64  # neurons x (up to 64) topics x 2 halves

    def init(self, node, ctx):
        # Sums are kept for two halves of the samples (even / odd index): clusters can then be fitted
        # on one half and tagged on the other, which makes their permutation tests exact.
        topics = topics_of(ctx.dataset)
        n = len(layers_of(node, ctx.info.n_layers)) * ctx.adapter.d_mlp
        return {"sums": np.zeros((n, len(topics), 2)), "counts": np.zeros((len(topics), 2), dtype=np.int64),
                "index": {t: i for i, t in enumerate(topics)}}

    @torch.no_grad()
    def update(self, node, state, batch, ctx):
        mask = batch.mask.unsqueeze(-1).float()
        per_layer = []
        for l in layers_of(node, ctx.info.n_layers):
            m = batch.captures[f"mlp_post.{l}"].float()
            if node.param("method") == "attribution":
                per_layer.append(((m * batch.grads[f"mlp_post.{l}"].float()).abs() * mask).sum(1))
            else:
                per_layer.append((m.abs() * mask).sum(1) / mask.sum(1).clamp_min(1))
        imp = torch.cat(per_layer, 1).double().cpu().numpy()  # [B, neurons]
        labels = ctx.dataset.labels
        topic = np.array([state["index"][labels[s]] if labels else 0 for s in batch.samples])
        half = np.asarray(batch.samples) % 2
        for b in range(len(topic)):
            state["sums"][:, topic[b], half[b]] += imp[b]
        np.add.at(state["counts"], (topic, half), 1)
        return state

    def merge(self, node, a, b):
        a["sums"] += b["sums"]
        a["counts"] += b["counts"]
        return a

    def finalize(self, node, state, ctx):
        return Result({"sums": state["sums"].astype(np.float32), "counts": state["counts"].astype(np.int32)},
                      {"topics": list(state["index"]), "layers": layers_of(node, ctx.info.n_layers),
                       "d_mlp": int(ctx.adapter.d_mlp), "method": node.param("method")})


@register
class TextEmbeddingsOp(Op):
    name = "text_embeddings"
    kind = "dataset"

    def hooks(self, node, info):
        return {f"resid_post.{node.param('layer')}"}

    def estimate_bytes(self, node, info, n_samples, n_tokens):
        return n_samples * info.d_model * 4

    def init(self, node, ctx):
        return FilledRows({"embedding": (ctx.info.d_model,)}, {"embedding": np.float32}, len(ctx.dataset))

    @torch.no_grad()
    def update(self, node, state, batch, ctx):
        h = batch.captures[f"resid_post.{node.param('layer')}"].float()
        mask = batch.mask.unsqueeze(-1).float()
        pooled = ((h * mask).sum(1) / mask.sum(1).clamp_min(1)).cpu().numpy()
        state.put(batch.samples, "embedding", list(pooled))
        return state

    def merge(self, node, a, b):
        return a.merge(b)

    def finalize(self, node, state, ctx):
        return Result(state.arrays, {"layer": node.param("layer")})
