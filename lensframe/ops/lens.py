"""Logit lens (nostalgebraist 2020): decode every layer's residual as the model decodes its last.

logits_l = E · norm_f(h_l), with the model's own final norm and unembedding. Two streams: with
`resid_post`, row 0 is the embedding (resid_pre.0) and row l+1 the output of block l; with
`resid_mid` (the sub-block variant), row l is block l's residual after attention, before its MLP,
and a last row is the final output, so the two separate what attention and the MLP add. With
`lens: tuned`, each resid_post row first goes through its trained affine translator
(lensframe.ops.tuned_lens). Per (layer, position) we
keep the top-k tokens and four metrics against the final layer's distribution p_final:
  prob     p_l(y*), y* = argmax p_final (the model's prediction)
  rank     rank of y* under p_l (0 = top-1)
  kl       KL(p_final || p_l) in nats (0 at the last layer by construction)
  entropy  H(p_l) in nats
We decode our own captured resid_post of the last block, never HF's hidden_states[-1], which
already has the final norm applied (applying it twice is the classic trap).
"""
from __future__ import annotations

import numpy as np
import torch

from . import register
from .base import FilledRows, Op, Result

METRICS = ("prob", "rank", "kl", "entropy")
ROWS_PER_MATMUL = 1024  # measured sweet spot for the unembedding matmul (docs/ARCHITECTURE.md)


def stream_rows(stream: str, n_layers: int) -> list[tuple[str, str, int]]:
    """(row label, hook, block index or -1) of each lens row; the last row is the final output."""
    if stream == "resid_post":
        return [("embed", "resid_pre.0", -1)] + [(str(l), f"resid_post.{l}", l) for l in range(n_layers)]
    if stream == "resid_mid":
        return [(f"{l} mid", f"resid_mid.{l}", l) for l in range(n_layers)] + \
               [("final", f"resid_post.{n_layers - 1}", n_layers - 1)]
    raise ValueError(f"unknown stream {stream!r}")


def stream_hooks(stream: str, n_layers: int) -> list[str]:
    return [hook for _, hook, _ in stream_rows(stream, n_layers)]


@torch.no_grad()
def decode_layers(hs: list[torch.Tensor], final_norm, E: torch.Tensor, bias, k: int,
                  buffers: dict | None = None) -> dict[str, torch.Tensor]:
    """Lens statistics for residuals hs[l] of shape [R, d]; the last entry is the final layer.

    The unembedding matmul dominates (R x d x V per layer), so everything else is arranged to stay
    near it (measured in docs/ARCHITECTURE.md): layers are decoded a few at a time so each matmul
    has ~ROWS_PER_MATMUL rows; logits live in one reused buffer for that group only; softmax
    statistics come from one in-place shift and one exp; KL is one row-wise dot product with the
    final distribution on the shifted logits (values near 0, so float32 keeps KL at the last layer
    at ~1e-7 rather than the ~1e-4 of working with raw logits):
      sum_v p_f(v) log p_l(v) = p_f . (z_l - max z_l) - log sum exp(z_l - max z_l)
    """
    R = hs[0].shape[0]
    E = E.float()  # no copy for float32 models; half-precision ones decode in float32
    bias = bias.float() if bias is not None else None
    # the final norm runs in the model's dtype (a LayerNorm refuses mixed dtypes), the rest in float32
    xs = [final_norm(h.to(final_norm.weight.dtype)).float() for h in hs]
    per_group = max(1, ROWS_PER_MATMUL // max(R, 1))
    z_buf, e_buf, b_buf = _buffers(buffers if buffers is not None else {}, min(len(hs), per_group) * R, E)

    def stats(x: torch.Tensor, target: torch.Tensor | None):
        n = x.shape[0]
        z, e = z_buf[:n], e_buf[:n]
        torch.matmul(x, E.T, out=z)
        if bias is not None:
            z += bias
        m = z.amax(-1, keepdim=True)
        z -= m  # z is now logits - max
        torch.exp(z, out=e)
        s = e.sum(-1, keepdim=True)
        log_s = s.log()
        out = {}
        # vecdot, not bmm: bmm's [1, V] x [V, 1] products lose ~1e-3 on V = 49k in float32
        out["entropy"] = (log_s - torch.linalg.vecdot(e, z).view(n, 1) / s).squeeze(-1)
        top = z.topk(k, dim=-1)
        out["ids"], out["probs"] = top.indices, (top.values - log_s).exp()
        if target is None:
            target = top.indices[:, 0]
        zt = z.gather(-1, target.view(n, 1))
        out["prob"] = (zt - log_s).exp().squeeze(-1)
        out["rank"] = torch.gt(z, zt, out=b_buf[:n]).view(torch.uint8).sum(-1, dtype=torch.int32).float()
        out["log_s"] = log_s.squeeze(-1)
        return out, z, e, s

    final, _, e_f, s_f = stats(xs[-1], None)
    target = final["ids"][:, 0]  # y*, the model's prediction
    p_f = e_f[:R] / s_f  # final distribution, [R, V]
    neg_h_f = -final["entropy"]
    out = {m: [] for m in ("ids", "probs") + METRICS}
    for start in range(0, len(xs), per_group):
        group = xs[start : start + per_group]
        G = len(group)
        st, z, _, _ = stats(torch.cat(group), target.repeat(G))
        cross = torch.stack([torch.linalg.vecdot(p_f, z[g * R : (g + 1) * R]) for g in range(G)])
        kl = (neg_h_f - (cross - st["log_s"].view(G, R))).clamp_min(0)
        out["kl"].append(kl)
        for name in ("ids", "probs", "prob", "rank", "entropy"):
            v = st[name]
            out[name].append(v.view(G, R, *v.shape[1:]))
    return {k_: torch.cat(v) for k_, v in out.items()}  # each [layers, R, ...]


def _buffers(cache: dict, rows: int, E: torch.Tensor):
    """[rows, V] work buffers, kept in `cache` across batches: fresh 200 MB tensors per batch cost
    page faults that showed up as a large share of system time."""
    if cache.get("rows", 0) < rows:
        cache["z"] = torch.empty(rows, E.shape[0], dtype=E.dtype)
        cache["e"] = torch.empty_like(cache["z"])
        cache["b"] = torch.empty_like(cache["z"], dtype=torch.bool)
        cache["rows"] = rows
    return cache["z"], cache["e"], cache["b"]


@register
class LogitLensOp(Op):
    name = "logit_lens"
    version = 1
    kind = "dataset"

    def hooks(self, node, info):
        return set(stream_hooks(node.param("stream"), info.n_layers))

    def estimate_bytes(self, node, info, n_samples, n_tokens):
        cells = n_samples * (info.n_layers + 1) * n_tokens
        return cells * (node.param("top_k") * 8 + len(METRICS) * 4)

    def init(self, node, ctx):
        L, T, k = ctx.info.n_layers + 1, ctx.n_tokens, node.param("top_k")
        shapes = {"ids": (L, T, k), "probs": (L, T, k), **{m: (L, T) for m in METRICS}}
        dtypes = {"ids": np.int32, **{m: np.float32 for m in ("probs",) + METRICS}}
        return FilledRows(shapes, dtypes, len(ctx.dataset))

    def update(self, node, state, batch, ctx):
        stream, k = node.param("stream"), node.param("top_k")
        # Lens nodes of one stream that differ only in top_k share one decode per batch (the
        # unembedding is the expensive part): decode once with the largest k, then slice.
        shared_key = ("logit_lens", stream, node.inputs[1:])
        if shared_key not in batch.shared:
            k_max = max([n.param("top_k") for n in ctx.nodes
                         if n.op == self.name and ("logit_lens", n.param("stream"), n.inputs[1:]) == shared_key] + [k])
            mask = batch.mask
            hs = [batch.captures[n][mask].float() for n in stream_hooks(stream, ctx.info.n_layers)]  # [R, d]
            if len(node.inputs) > 1:  # a tuned lens: translate every row but the final one
                from .tuned_lens import translate

                hs = translate(hs, ctx.inputs[node.inputs[1]])
            a = ctx.adapter
            stats = decode_layers(hs, a.final_norm, a.unembed_weight, a.unembed_bias, k_max,
                                  ctx.scratch.setdefault(shared_key, {}))
            batch.shared[shared_key] = {name: v.cpu().numpy() for name, v in stats.items()}
        lengths = batch.mask.sum(1).tolist()
        offsets = np.cumsum([0] + lengths)
        for name, value in batch.shared[shared_key].items():
            if name in ("ids", "probs"):
                value = value[..., :k]  # torch.topk is sorted: the first k of k_max are the top k
            rows = [value[:, offsets[i] : offsets[i + 1]] for i in range(len(lengths))]
            state.put(batch.samples, name, rows)
        return state

    def merge(self, node, a, b):
        return a.merge(b)

    def finalize(self, node, state, ctx):
        rows = stream_rows(node.param("stream"), ctx.info.n_layers)
        return Result(state.arrays, {"layers": [r[0] for r in rows], "blocks": [r[2] for r in rows],
                                     "metrics": list(METRICS)})
