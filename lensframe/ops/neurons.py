"""MLP neurons and FFN value vectors (Geva et al. 2022, arXiv 2203.14680; LM-Debugger).

An MLP output is a sum of sub-updates: MLP(x) = sum_i m_i v_i + b, with m_i the neuron's
activation (mlp_post) and v_i its value vector (adapter.value_vectors). Ops here:
  neuron_acts          focus    m for every layer and position of the focused sample
  residuals            focus    resid_mid / resid_post per layer and the final log-probs
  value_norms          prepare  ||v_i|| per layer and neuron
  neuron_top_examples  dataset  streaming top-k (sample, position) per neuron, and a histogram
  ffn_static           lookup   E v_i: the tokens a value vector promotes and suppresses
  ffn_dynamic          lookup   at a token and layer: sub-updates ranked by |m_i| ||v_i||
  ffn_edit             lookup   next-token change when sub-updates are set (a hook, not the weights)
Projections to the vocabulary use E v_i without the final norm, as LM-Debugger does; the residual
before and after the MLP is decoded as the logit lens does, E norm_f(h).
"""
from __future__ import annotations

import numpy as np
import torch

from . import register
from .base import Op, Result

WINDOW = (12, 4)  # tokens kept before and after each top example's peak, with their activations
HIST_BINS = 48
HIST_LIMIT = 6.0  # histogram edges are uniform in asinh(m) on [-6, 6]: |m| up to ~200


def hist_edges() -> np.ndarray:
    return np.sinh(np.linspace(-HIST_LIMIT, HIST_LIMIT, HIST_BINS + 1)).astype(np.float32)


def layers_of(node, n_layers: int) -> list[int]:
    layers = node.param("layers")
    return list(range(n_layers)) if layers in (None, "all") else [int(l) for l in layers]


@register
class NeuronActsOp(Op):
    name = "neuron_acts"
    kind = "focus"

    def hooks(self, node, info):
        return {f"mlp_post.{l}" for l in range(info.n_layers)}

    def estimate_bytes(self, node, info, n_samples, n_tokens):
        return info.n_layers * n_tokens * info.d_mlp * 4

    def extract(self, node, captures, ctx):
        acts = torch.stack([captures[f"mlp_post.{l}"][0] for l in range(ctx.info.n_layers)])
        return Result({"acts": acts.float().cpu().numpy()})  # [layers, T, d_mlp]


@register
class ResidualsOp(Op):
    name = "residuals"
    kind = "focus"

    def hooks(self, node, info):
        return {f"{k}.{l}" for k in ("resid_mid", "resid_post") for l in range(info.n_layers)} | {"unembed"}

    def estimate_bytes(self, node, info, n_samples, n_tokens):
        return 2 * info.n_layers * n_tokens * info.d_model * 4 + n_tokens * info.vocab_size * 4

    def extract(self, node, captures, ctx):
        L = ctx.info.n_layers
        mid = torch.stack([captures[f"resid_mid.{l}"][0] for l in range(L)]).float()
        post = torch.stack([captures[f"resid_post.{l}"][0] for l in range(L)]).float()
        logp = torch.log_softmax(captures["unembed"][0].float(), -1)
        return Result({"mid": mid.cpu().numpy(), "post": post.cpu().numpy(),
                       "logprobs": logp.cpu().numpy()})  # float32: edits compare against it exactly


@register
class ValueNormsOp(Op):
    name = "value_norms"
    kind = "prepare"

    def estimate_bytes(self, node, info, n_samples, n_tokens):
        return info.n_layers * info.d_mlp * 4

    @torch.no_grad()
    def compute(self, node, ctx):
        a = ctx.adapter
        norms = torch.stack([a.value_vectors(l).float().norm(dim=-1) for l in range(a.n_layers)])
        return Result({"norms": norms.cpu().numpy()})  # [layers, d_mlp]


def top_k_in_order(values: torch.Tensor, k: int):
    """The k largest along the last dim; among equal values the earlier candidate wins (a stable
    sort, where torch.topk's choice among ties is unspecified). Candidates are laid out in the
    order the samples were seen (kept ones first, then the batch; shard a, then shard b), so a
    pass folded batch by batch and one merged from shards keep exactly the same samples, ties
    included (the first tokens of many texts give identical activations)."""
    order = torch.sort(values, dim=-1, descending=True, stable=True)
    return torch.return_types.topk((order.values[..., :k], order.indices[..., :k]))


@register
class NeuronTopExamplesOp(Op):
    """For every neuron of the chosen layers: the k samples where it fires most (max over
    positions, with that position and the neuron's activations on the tokens around it), and a
    histogram of its activation over all tokens. A streaming reduction: each batch is folded in
    and dropped, so clicking any neuron is answered from the store."""

    name = "neuron_top_examples"
    kind = "dataset"

    def hooks(self, node, info):
        return {f"mlp_post.{l}" for l in layers_of(node, info.n_layers)}

    def estimate_bytes(self, node, info, n_samples, n_tokens):
        # the reduction state while the pass runs (float32 values, int64 samples and positions,
        # float32 windows, int64 histogram), which is larger than the stored result it ends as
        width = sum(WINDOW) + 1
        return len(layers_of(node, info.n_layers)) * info.d_mlp * (node.param("k") * (20 + 4 * width) + HIST_BINS * 8)

    def init(self, node, ctx):
        nl, d, k = len(layers_of(node, ctx.info.n_layers)), ctx.adapter.d_mlp, node.param("k")
        return {"values": torch.full((nl, d, k), -torch.inf), "samples": torch.full((nl, d, k), -1, dtype=torch.long),
                "positions": torch.full((nl, d, k), -1, dtype=torch.long),
                "windows": torch.full((nl, d, k, sum(WINDOW) + 1), torch.nan),
                "hist": torch.zeros((nl, d, HIST_BINS), dtype=torch.long)}

    @torch.no_grad()
    def update(self, node, state, batch, ctx):
        k = node.param("k")
        mask = batch.mask.cpu()
        samples = torch.as_tensor(batch.samples, dtype=torch.long)
        edges = torch.as_tensor(hist_edges()[1:-1])
        lengths = mask.sum(1)
        offsets = torch.arange(-WINDOW[0], WINDOW[1] + 1)
        for i, layer in enumerate(layers_of(node, ctx.info.n_layers)):
            acts = batch.captures[f"mlp_post.{layer}"].float().cpu()  # [B, T, d]
            (B, T, d), W = acts.shape, len(offsets)
            best, where = acts.masked_fill(~mask.unsqueeze(-1), -torch.inf).max(dim=1)  # [B, d]
            idx = where.unsqueeze(-1) + offsets  # [B, d, W]: positions around each peak
            inside = (idx >= 0) & (idx < lengths.view(B, 1, 1))
            win = acts.transpose(1, 2).gather(2, idx.clamp(0, T - 1)).masked_fill(~inside, torch.nan)
            vals = torch.cat([state["values"][i], best.T], dim=1)  # [d, k + B]
            samp = torch.cat([state["samples"][i], samples.expand(d, -1)], dim=1)
            pos = torch.cat([state["positions"][i], where.T], dim=1)
            wins = torch.cat([state["windows"][i], win.transpose(0, 1)], dim=1)  # [d, k + B, W]
            top = top_k_in_order(vals, k)
            state["values"][i], state["samples"][i] = top.values, samp.gather(1, top.indices)
            state["positions"][i] = pos.gather(1, top.indices)
            state["windows"][i] = wins.gather(1, top.indices.unsqueeze(-1).expand(-1, -1, W))
            real = acts[mask]  # [tokens, d]
            bins = torch.bucketize(real, edges) + torch.arange(d) * HIST_BINS
            state["hist"][i] += torch.bincount(bins.flatten(), minlength=d * HIST_BINS).view(d, HIST_BINS)
        return state

    def merge(self, node, a, b):
        k = node.param("k")
        vals = torch.cat([a["values"], b["values"]], -1)  # a holds the earlier samples
        top = top_k_in_order(vals, k)
        take = lambda name: torch.cat([a[name], b[name]], -1).gather(-1, top.indices)  # noqa: E731
        wins = torch.cat([a["windows"], b["windows"]], -2)
        return {"values": top.values, "samples": take("samples"), "positions": take("positions"),
                "windows": wins.gather(-2, top.indices.unsqueeze(-1).expand(*top.indices.shape, wins.shape[-1])),
                "hist": a["hist"] + b["hist"]}

    def finalize(self, node, state, ctx):
        return Result({"values": state["values"].numpy().astype(np.float32),
                       "samples": state["samples"].numpy().astype(np.int32),
                       "positions": state["positions"].numpy().astype(np.int32),
                       "windows": state["windows"].numpy().astype(np.float16),
                       "hist": state["hist"].numpy().astype(np.int32), "edges": hist_edges()},
                      {"layers": layers_of(node, ctx.info.n_layers), "window": list(WINDOW)})


def _vocab_top(scores: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    top = scores.topk(k)
    return top.indices.cpu().numpy(), top.values.float().cpu().numpy()


@register
class FfnStaticOp(Op):
    """E v_i: what a value vector writes into the vocabulary: without the final norm by default (as
    Geva et al. 2022 and LM-Debugger), or E norm_f(v_i) with `final_norm` (v_i read as the logit lens
    reads a residual)."""

    name = "ffn_static"
    kind = "lookup"

    @torch.no_grad()
    def lookup(self, node, executor, layer: int, neuron: int) -> Result:
        a = executor.model(node.model).adapter
        v = a.value_vectors(layer)[neuron].float()
        scores = a.unembed_weight.float() @ (_normed(a, v[None])[0] if node.param("final_norm", False) else v)
        k = node.param("k")
        up_ids, up = _vocab_top(scores, k)
        down_ids, down = _vocab_top(-scores, k)
        return Result({"promoted_ids": up_ids, "promoted": up, "suppressed_ids": down_ids, "suppressed": -down,
                       "norm": np.float32(v.norm())})


@register
class FfnDynamicOp(Op):
    """At one token and layer: the sub-updates m_i v_i ranked by |m_i| ||v_i||, the tokens each
    promotes (top of E m_i v_i), and the top tokens of the residual before and after the MLP."""

    name = "ffn_dynamic"
    kind = "lookup"

    @torch.no_grad()
    def lookup(self, node, executor, sample: int, layer: int, position: int) -> Result:
        acts_node, resid_node, norms_node = node.inputs
        focus = executor.focus(node.model, sample)
        m = torch.as_tensor(focus[acts_node]["acts"][layer, position])
        norms = torch.as_tensor(executor.prepared(norms_node)["norms"][layer])
        size = (m.abs() * norms)
        n, k = node.param("top_n"), node.param("k")
        order = size.topk(min(n, size.numel())).indices
        a = executor.model(node.model).adapter
        E = a.unembed_weight.float()
        V = a.value_vectors(layer).float()[order]  # [n, d]
        subs = V * m[order].unsqueeze(1)  # [n, d]: the sub-updates m_i v_i
        sub_scores = (E @ (_normed(a, subs) if node.param("final_norm", False) else subs).T).T  # [n, vocab]
        tok = sub_scores.topk(k, dim=-1)
        res = focus[resid_node]
        before = _lens(a, torch.as_tensor(res["mid"][layer, position]), 10)
        after = _lens(a, torch.as_tensor(res["post"][layer, position]), 10)
        return Result({"neurons": order.numpy().astype(np.int32), "m": m[order].numpy(),
                       "norm": norms[order].numpy(), "size": size[order].numpy(),
                       "token_ids": tok.indices.numpy().astype(np.int32), "token_scores": tok.values.numpy(),
                       "before_ids": before[0], "before_probs": before[1],
                       "after_ids": after[0], "after_probs": after[1]})


def _normed(adapter, x: torch.Tensor) -> torch.Tensor:
    """Rows of x through the model's final norm (in the model's dtype, which a LayerNorm requires)."""
    return adapter.final_norm(x.to(adapter.unembed_weight.dtype)).float()


def _lens(adapter, h: torch.Tensor, k: int):
    E = adapter.unembed_weight  # the final norm runs in the model's dtype (a LayerNorm rejects mixed dtypes)
    logits = adapter.final_norm(h.to(E.dtype)).float() @ E.float().T
    if adapter.unembed_bias is not None:
        logits = logits + adapter.unembed_bias
    top = torch.softmax(logits, -1).topk(k)
    return top.indices.numpy().astype(np.int32), top.values.numpy()


@register
class FfnEditOp(Op):
    """The next-token prediction at a position with sub-updates set (m_i = value), against the
    unedited forward; the edit is a hook on mlp_post (Adapter.edit_neurons)."""

    name = "ffn_edit"
    kind = "lookup"

    def lookup(self, node, executor, sample: int, position: int, edits: tuple) -> Result:
        (resid_node,) = node.inputs
        base = executor.focus(node.model, sample)[resid_node]["logprobs"][position].astype(np.float32)
        edited = executor.intervene(node.model, sample, tuple(edits))[position]
        k = node.param("k")
        ids = np.unique(np.concatenate([np.argsort(-base)[:k], np.argsort(-edited)[:k]]))
        return Result({"base_top": np.argsort(-base)[:k].astype(np.int32),
                       "edited_top": np.argsort(-edited)[:k].astype(np.int32), "ids": ids.astype(np.int32),
                       "base_probs": np.exp(base[ids]), "edited_probs": np.exp(edited[ids])})
