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
ROWS_PER_MATMUL = 512  # the unembedding matmul runs as fast per row at 512 as at 1024 (docs/ARCHITECTURE.md)
SUM_ROWS = 32  # rows per step of the screen's vocabulary sums (_screened_sums)
FALLBACK_ROWS = 16  # at least this many rows per float32 fallback matmul of the screen (screened_stats)


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
                  buffers: dict | None = None, decode: str = "fp32") -> dict[str, torch.Tensor]:
    """Lens statistics for residuals hs[l] of shape [R, d]; the last entry is the final layer.

    The unembedding matmul dominates (R x d x V per layer), so everything else is arranged to stay
    near it and inside two reused [ROWS_PER_MATMUL, V] float32 buffers, whatever the batch size or
    the number of layers (measured in docs/BENCHMARKS.md): the (layer, position) rows are decoded in
    blocks of exactly ROWS_PER_MATMUL rows (a block may span two layers). Logits `z` are shifted in
    place by their row max; `e` holds exp(z) and is then the scratch of the row-wise reductions
    (entropy, the rank count), each an in-place product or comparison followed by a sum, so no
    [rows, V] temporary is allocated. The KL cross term needs no vocab-wide work per layer, since it
    is linear in the logits: with u = p_f E (a d-vector per position) and c = p_f . b,
      sum_v p_f(v) log p_l(v) = x_l . u + c - max z_l - log sum exp(z_l - max z_l)
    The final layer is decoded first, a chunk of positions at a time: it is the reference, its KL
    is 0 and its rank 0 by definition.

    decode="bf16_screen": the rows before the final one go through the certified screen of
    lensframe.ops.lens_screen (the final layer stays float32: it is the reference); the output then
    has `screened` [layers, R] (1 where a row's vocabulary sums come from the screen).
    """
    R, L = hs[0].shape[0], len(hs)
    E_model, E = E, E.float()  # no copy for float32 models; half-precision ones decode in float32
    dev = E.device
    bias = bias.float() if bias is not None else None
    # the final norm runs in the model's dtype (a LayerNorm refuses mixed dtypes), the rest in float32
    xs = [final_norm(h.to(final_norm.weight.dtype)).float() for h in hs]
    rows = max(1, min(ROWS_PER_MATMUL, R * max(1, L - 1)))  # the largest block this batch needs
    z_buf, e_buf = _buffers(buffers if buffers is not None else {}, rows, E)
    out = {"ids": torch.empty(L, R, k, dtype=torch.long), "probs": torch.empty(L, R, k),
           **{m: torch.empty(L, R) for m in METRICS}}
    if decode == "bf16_screen":
        out["screened"] = torch.zeros(L, R, dtype=torch.uint8)  # the final layer is never screened
    elif decode != "fp32":
        raise ValueError(f"unknown decode {decode!r}")

    def stats(x: torch.Tensor, target: torch.Tensor | None):
        """Top-k and metrics of the rows x; leaves z (shifted logits) and e (exp z) in the buffers."""
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
        top = z.topk(k, dim=-1)
        st = {"ids": top.indices, "probs": (top.values - log_s).exp(), "max": m.squeeze(-1), "log_s": log_s.squeeze(-1)}
        if target is None:
            target = top.indices[:, 0]
        zt = z.gather(-1, target.view(n, 1))
        st["prob"] = (zt - log_s).exp().squeeze(-1)
        return st, z, e, s, zt

    def entropy_and_rank(st, z, e, s, zt):  # e becomes scratch here
        st["entropy"] = st["log_s"] - torch.mul(e, z, out=e).sum(-1) / s.squeeze(-1)
        st["rank"] = torch.gt(z, zt, out=e).sum(-1)  # exact in float32: counts stay below 2**24

    def decoded(x: torch.Tensor, target: torch.Tensor) -> dict:
        st, z, e, s, zt = stats(x, target)
        entropy_and_rank(st, z, e, s, zt)
        return st

    target = torch.empty(R, dtype=torch.long, device=dev)
    neg_h_f, u = torch.empty(R, device=dev), torch.empty(R, E.shape[1], device=dev)
    c = torch.zeros(R, device=dev)
    for c0 in range(0, R, rows):  # the final layer: the reference distribution p_f
        c1 = min(R, c0 + rows)
        st, z, e, s, zt = stats(xs[-1][c0:c1], None)
        target[c0:c1] = st["ids"][:, 0]  # y*, the model's prediction
        p_f = e.div_(s)
        torch.matmul(p_f, E, out=u[c0:c1])
        if bias is not None:
            c[c0:c1] = p_f @ bias
        entropy_and_rank(st, z, torch.exp(z, out=e), s, zt)
        neg_h_f[c0:c1] = -st["entropy"]
        for name in ("ids", "probs", "prob", "entropy", "rank"):  # rank 0: y* is the argmax
            out[name][L - 1, c0:c1] = st[name]
        out["kl"][L - 1, c0:c1] = 0  # KL(p_final || p_final)
    if L > 1:
        X = torch.cat(xs[:-1])  # [(L-1) R, d], layer-major
        flat = {name: out[name][: L - 1].view((L - 1) * R, *out[name].shape[2:]) for name in out}

        def store(where, pos: torch.Tensor, st: dict) -> None:
            """Write the statistics of rows X[where] (positions pos) and their KL to the output."""
            cross = (X[where] * u[pos]).sum(-1) + c[pos] - st["max"]  # p_f . (z_l - max z_l)
            kl = (neg_h_f[pos] - (cross - st["log_s"])).clamp_min(0)
            where = where.cpu() if isinstance(where, torch.Tensor) else where  # the output is on CPU
            for name, value in (("kl", kl), *((n, st[n]) for n in ("ids", "probs", "prob", "rank", "entropy"))):
                flat[name][where] = value.cpu()

        if decode == "bf16_screen":
            from .lens_screen import screen_weights

            w = screen_weights(buffers if buffers is not None else {}, E_model, E, bias)
            fallback = []
        for r0 in range(0, X.shape[0], rows):
            r1 = min(X.shape[0], r0 + rows)
            pos = torch.arange(r0, r1, device=dev) % R
            if decode == "fp32":
                st = decoded(X[r0:r1], target[pos])
            else:
                st = screened_stats(w, E, bias, X[r0:r1], target[pos], k, z_buf, e_buf,
                                    _half_buffer(buffers if buffers is not None else {}, rows, E, w.Eh.dtype))
                flat["screened"][r0:r1] = st["screened"].to(flat["screened"].device)
                fallback.append((st["screened"] == 0).nonzero().squeeze(1) + r0)
            store(slice(r0, r1), pos, st)
        if decode == "bf16_screen":  # rows the screen could not certify: float32, all blocks' at once
            _decode_fallback(torch.cat(fallback), X, rows, R, target, decoded, store)
    return out  # each [layers, R, ...]


def _decode_fallback(idx: torch.Tensor, X: torch.Tensor, rows: int, R: int, target, decoded, store) -> None:
    """Decode rows X[idx] in float32, `rows` at a time. Gathered from every block: a float32 matmul
    of a block's few fallback rows streamed all of E for them (~0.2 s each on GPT-2's shape, 30% of
    the screen's time, measured). MKL multiplies fewer than ~10 rows by another kernel, whose logits
    differ from the block's in the last bits (measured): padded to FALLBACK_ROWS rows, a fallback
    row gets the float32 decode's own numbers, near-ties included."""
    for f0 in range(0, len(idx), rows):
        part = idx[f0 : f0 + rows]
        filler = torch.arange(min(len(X), FALLBACK_ROWS, rows), device=idx.device)  # within the buffers
        padded = torch.cat([part, filler])[: max(len(part), len(filler))]
        st = decoded(X[padded], target[padded % R])
        store(part, part % R, {name: v[: len(part)] for name, v in st.items()})


def screened_stats(w, E, bias, x, target, k, z_buf, e_buf, half_buf) -> dict:
    """decode_layers' statistics of rows x through the certified bf16 screen (lens_screen): the top
    k and the numerators from the exact re-score, the vocabulary sums (normaliser, entropy, rank of
    y*) from the screened logits with the candidates' and y*'s replaced by their exact values.
    `screened` is 0 on rows the certificate does not prove: the caller decodes those in float32."""
    from .lens_screen import screen

    n = x.shape[0]
    sc = screen(w, E, bias, x, target, k, half_buf if half_buf is None else half_buf[:n], z_buf[:n])
    m = sc.top[:, :1]
    z_star = sc.z_star.view(n, 1) - m
    st = {"ids": sc.ids, "max": m.squeeze(1), "screened": sc.certified.to(torch.uint8),
          **_screened_sums(sc, m, z_star, target, z_buf, e_buf, bias is None)}
    st["probs"] = (sc.top - m - st["log_s"].unsqueeze(1)).exp()
    st["prob"] = (z_star.squeeze(1) - st["log_s"]).exp()
    return st


def _screened_sums(sc, m, z_star, target, z_buf, e_buf, convert: bool) -> dict:
    """log sum exp, entropy and rank of y* over the screened logits with the candidates' and y*'s
    exact values put in, on CPU SUM_ROWS rows at a time: the five passes over a [SUM_ROWS, V] slice
    then run from the cache (a 512-row block took 1.8x as long, measured); a GPU takes the block at once."""
    n = m.shape[0]
    step = n if m.is_cuda else SUM_ROWS
    out = {name: torch.empty(n, device=m.device) for name in ("log_s", "entropy", "rank")}
    for a in range(0, n, step):
        b = min(n, a + step)
        z, e = z_buf[a:b], e_buf[a:b]
        if convert:
            z.copy_(sc.logits[a:b])  # bfloat16 -> float32 (a mixed-dtype subtraction took 4x as long)
        z.sub_(m[a:b])  # screened logits - max
        z.scatter_(1, sc.cand[a:b], sc.cand_values[a:b] - m[a:b])
        z.scatter_(1, target[a:b].view(-1, 1), z_star[a:b])
        torch.exp(z, out=e)
        s = e.sum(-1)
        out["log_s"][a:b] = s.log()
        out["entropy"][a:b] = s.log() - torch.mul(e, z, out=e).sum(-1) / s
        out["rank"][a:b] = torch.gt(z, z_star[a:b], out=e).sum(-1)
    return out


def _buffers(cache: dict, rows: int, E: torch.Tensor):
    """The [rows, V] logits and exp/scratch buffers, kept in `cache` across batches: fresh 100 MB
    tensors per batch cost page faults that showed up as a large share of system time."""
    if cache.get("rows", 0) < rows:
        cache["z"] = torch.empty(rows, E.shape[0], dtype=E.dtype, device=E.device)
        cache["e"] = torch.empty_like(cache["z"])
        cache["rows"] = rows
    return cache["z"], cache["e"]


def _half_buffer(cache: dict, rows: int, E: torch.Tensor, dtype) -> torch.Tensor | None:
    """The screen's [rows, V] half-precision logits on CPU, reused like _buffers' (CUDA's GEMM with
    a float32 output allocates its own)."""
    if E.is_cuda:
        return None
    if cache.get("half_rows", 0) < rows or cache["half"].dtype != dtype:
        cache["half"], cache["half_rows"] = torch.empty(rows, E.shape[0], dtype=dtype), rows
    return cache["half"]


@register
class LogitLensOp(Op):
    name = "logit_lens"
    version = 1
    kind = "dataset"
    per_sample = True

    def hooks(self, node, info):
        return set(stream_hooks(node.param("stream"), info.n_layers))

    def estimate_bytes(self, node, info, n_samples, n_tokens):
        cells = n_samples * (info.n_layers + 1) * n_tokens
        screened = node.param("decode", "fp32") != "fp32"  # + the uint8 `screened` flag per cell
        return cells * (node.param("top_k") * 8 + len(METRICS) * 4 + screened)

    def init(self, node, ctx):
        L, T, k = ctx.info.n_layers + 1, ctx.n_tokens, node.param("top_k")
        shapes = {"ids": (L, T, k), "probs": (L, T, k), **{m: (L, T) for m in METRICS}}
        dtypes = {"ids": np.int32, **{m: np.float32 for m in ("probs",) + METRICS}}
        if node.param("decode", "fp32") != "fp32":
            shapes["screened"], dtypes["screened"] = (L, T), np.uint8
        return FilledRows(shapes, dtypes, len(ctx.dataset))

    @staticmethod
    def shared_key(node) -> tuple:
        """Lens nodes with this key differ only in top_k: they share one decode per batch."""
        return ("logit_lens", node.param("stream"), node.param("decode", "fp32"), node.inputs[1:])

    def update(self, node, state, batch, ctx):
        k = node.param("top_k")
        stream, decode = node.param("stream"), node.param("decode", "fp32")
        # Lens nodes that differ only in top_k share one decode per batch (the unembedding is the
        # expensive part): decode once with the largest k, then slice.
        shared_key = self.shared_key(node)
        if shared_key not in batch.shared:
            k_max = max([n.param("top_k") for n in ctx.nodes
                         if n.op == self.name and self.shared_key(n) == shared_key] + [k])
            mask = batch.mask
            hs = [batch.captures[n][mask].float() for n in stream_hooks(stream, ctx.info.n_layers)]  # [R, d]
            if len(node.inputs) > 1:  # a tuned lens: translate every row but the final one
                from .tuned_lens import translate

                hs = translate(hs, ctx.inputs[node.inputs[1]])
            a = ctx.adapter
            stats = decode_layers(hs, a.final_norm, a.unembed_weight, a.unembed_bias, k_max,
                                  ctx.scratch.setdefault(shared_key, {}), decode=decode)
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
                                     "metrics": list(METRICS), "decode": node.param("decode", "fp32")})
