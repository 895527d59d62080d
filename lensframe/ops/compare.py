"""Comparing two models of the same shape (the audit game: find what was edited).

weight_diff (prepare): for every parameter, ‖W_b − W_a‖, ‖W_a‖ and the singular values of the
  delta, so a rank-one edit (ROME) shows as rank one; grouped by layer.
model_kl (dataset): KL(P_a ‖ P_b) of the next-token distributions at every position of every
  sample, in model a's fused pass (model b runs on the same batch): which texts changed most.
lens_residuals (focus): the rows the logit lens decodes (embed, every block's output) of the focused
  sample, a node of each model: memoized, and kept in the store like any focus result.
pair_lens (lookup): at the focused sample and position, the logit lens of both models (from their
  lens_residuals, all rows in one matmul), KL between them per row, and the tokens whose final
  probability moved most.

A node names model a as its model and b as its `other` param; its store key covers both
fingerprints (lensframe.compiler).
"""
from __future__ import annotations

import re

import numpy as np
import torch

from ..errors import LensframeError
from . import register
from .base import FilledRows, Op, Result
from .lens import stream_hooks, stream_rows

RANK_TOL = 1e-3  # singular values below this fraction of the largest count as zero (float32 noise is ~1e-7)
TOP_SV = 4


def _same_tokens(a, b) -> None:
    if a.tokenizer.get_vocab() != b.tokenizer.get_vocab():
        raise LensframeError(f"models {a.name!r} and {b.name!r} have different tokenizers: comparing their "
                             "next-token distributions needs the same vocabulary")


def numerical_rank(sv: torch.Tensor) -> int:
    return int((sv > sv[0] * RANK_TOL).sum()) if sv.numel() and sv[0] > 0 else 0


@register
class WeightDiffOp(Op):
    name = "weight_diff"
    kind = "prepare"

    def estimate_bytes(self, node, info, n_samples, n_tokens):
        return 0

    @torch.no_grad()
    def compute(self, node, ctx) -> Result:
        a, b = ctx.load(node.model), ctx.load(node.param("other"))
        pb = dict(b.model.named_parameters())
        layer_re = re.compile(rf"^{re.escape(a.adapter.family.layers)}\.(\d+)\.(.+)$")
        names, layers, delta, norm, rank, svs = [], [], [], [], [], []
        for name, wa in a.model.named_parameters():
            wb = pb.get(name)
            if wb is None or wb.shape != wa.shape:
                raise LensframeError(f"models {a.name!r} and {b.name!r} differ in shape at {name}: weight_diff needs "
                                     "two models of the same architecture")
            d = (wb.float() - wa.float())
            m = layer_re.match(name)
            names.append(m.group(2) if m else name)
            layers.append(int(m.group(1)) if m else -1)
            delta.append(float(d.norm()))
            norm.append(float(wa.float().norm()))
            sv = torch.zeros(TOP_SV)
            if d.dim() == 2 and delta[-1] > 0:
                s = torch.linalg.svdvals(d)
                sv[: min(TOP_SV, len(s))] = s[:TOP_SV]
                rank.append(numerical_rank(s))
            else:
                rank.append(int(delta[-1] > 0))
            svs.append(sv.numpy())
        return Result({"layer": np.array(layers, np.int32), "delta": np.array(delta, np.float64),
                       "norm": np.array(norm, np.float64), "rank": np.array(rank, np.int32),
                       "sv": np.stack(svs).astype(np.float64)},
                      {"params": names, "n_layers": a.info.n_layers})


def layer_ranking(res: Result) -> list[tuple[int, float]]:
    """Layers (−1: outside the blocks) by their relative weight change, largest first:
    sqrt(sum ‖ΔW‖²) / sqrt(sum ‖W‖²) over the layer's parameters."""
    out = {}
    for layer in np.unique(res["layer"]):
        sel = res["layer"] == layer
        d, n = float(np.sqrt((res["delta"][sel] ** 2).sum())), float(np.sqrt((res["norm"][sel] ** 2).sum()))
        out[int(layer)] = d / n if n > 0 else d
    return sorted(out.items(), key=lambda kv: -kv[1])


@register
class ModelKlOp(Op):
    name = "model_kl"
    kind = "dataset"

    def hooks(self, node, info):
        return {"unembed"}

    def estimate_bytes(self, node, info, n_samples, n_tokens):
        return n_samples * n_tokens * 4

    def init(self, node, ctx):
        _same_tokens(ctx.load(node.model), ctx.load(node.param("other")))
        return FilledRows({"kl": (ctx.n_tokens,)}, {"kl": np.float32}, len(ctx.dataset), fill=np.nan)

    @torch.no_grad()
    def update(self, node, state, batch, ctx):
        other = node.param("other")
        lb = ctx.executor.model(other)
        with ctx.executor.model_lock(other):
            out_b = ctx.executor._forward(lb, batch.input_ids.to(lb.device), batch.mask.to(lb.device), set(), {})
        la = torch.log_softmax(batch.captures["unembed"].float(), -1)
        lbp = torch.log_softmax(out_b.logits.float().to(la.device), -1)
        kl = (la.exp() * (la - lbp)).sum(-1)  # [B, T]
        kl = kl.masked_fill(~batch.mask, float("nan")).cpu().numpy()
        lengths = batch.mask.sum(1).cpu().numpy()
        state.put(batch.samples, "kl", [kl[i, : lengths[i]] for i in range(len(batch.samples))])
        return state

    def merge(self, node, a, b):
        return a.merge(b)

    def finalize(self, node, state, ctx) -> Result:
        kl = state.arrays["kl"]
        with np.errstate(all="ignore"):
            mean = np.nanmean(kl, 1)
            peak = np.nanmax(kl, 1)
        return Result({"kl": kl, "mean": mean.astype(np.float32), "max": peak.astype(np.float32)},
                      {"other": node.param("other")})


@register
class LensResidualsOp(Op):
    """The residual stream rows the logit lens decodes (stream resid_post: the embedding, then the
    output of every block) at every position of the focused sample: [rows, T, d_model]. A focus
    node of each model of a pair, so both models' rows are memoized like any focus result, and kept
    in the store by the dataset pass where run.keep_focus_mb allows: moving the position within a
    sample seen before runs no forward of either model."""

    name = "lens_residuals"
    kind = "focus"

    def hooks(self, node, info):
        return set(stream_hooks("resid_post", info.n_layers))

    def estimate_bytes(self, node, info, n_samples, n_tokens):
        return (info.n_layers + 1) * n_tokens * info.d_model * 4  # per focused sample

    def extract(self, node, captures, ctx) -> Result:
        rows = stream_rows("resid_post", ctx.info.n_layers)
        resid = torch.stack([captures[hook][0] for _, hook, _ in rows]).float()
        return Result({"resid": resid.cpu().numpy()},
                      {"layers": [r[0] for r in rows], "blocks": [r[2] for r in rows]})


ROW_TOP = 5  # tokens kept per lens row (the hover of a cell lists them)


def lens_logprobs(adapter, x: torch.Tensor) -> torch.Tensor:
    """log-softmax of E · norm_f(x) + b for rows x [R, d]: the logit lens of lensframe.ops.lens, all
    rows in one matmul (the unembedding is read once, not once per row)."""
    return torch.log_softmax(_unembed(adapter, _normed(adapter, x)), -1)


def _normed(adapter, x: torch.Tensor) -> torch.Tensor:
    # the final norm runs in the model's dtype (a LayerNorm refuses mixed dtypes), the rest in float32
    return adapter.final_norm(x.to(adapter.final_norm.weight.dtype)).float()


def _unembed(adapter, x: torch.Tensor) -> torch.Tensor:
    z = x @ adapter.unembed_weight.float().T
    return z + adapter.unembed_bias.float() if adapter.unembed_bias is not None else z


def _shares_unembedding(a, b) -> bool:
    """Whether two models decode with the same unembedding (an edit of a block leaves it as is)."""
    wa, wb, ba, bb = a.adapter.unembed_weight, b.adapter.unembed_weight, a.adapter.unembed_bias, b.adapter.unembed_bias
    if wa.shape != wb.shape or (ba is None) != (bb is None):
        return False
    return bool(torch.equal(wa, wb)) and (ba is None or bool(torch.equal(ba, bb)))


@register
class PairLensOp(Op):
    name = "pair_lens"
    kind = "lookup"

    @torch.no_grad()
    def lookup(self, node, executor, sample, position: int | None = None, top: int = 10) -> Result:
        """Both models at `position` (None = last) of `sample` (a dataset sample or a probe): per lens
        row (the logit lens's rows: embed, then blocks 0..n-1, the last being the model's output),
        each model's top tokens and their probabilities and KL(P_a || P_b) in nats; and the tokens
        whose final probability moved most.

        The rows come from each model's lens_residuals focus result (memoized or kept: no forward
        for a sample seen before). Each model's rows are decoded in one matmul, both models' in
        one when they share the unembedding (an edit inside the blocks)."""
        names = (node.model, node.param("other"))
        loaded = [executor.model(n) for n in names]
        shared = executor.memoized(("pair_lens:same-unembedding",) + names, lambda: _pair_check(*loaded))
        results = [executor.focus(inp.model, sample)[inp] for inp in node.inputs]
        T = min(r["resid"].shape[1] for r in results)
        pos = T - 1 if position is None else max(0, min(int(position), T - 1))
        xs = [_normed(m.adapter, torch.as_tensor(r["resid"][:, pos])) for m, r in zip(loaded, results)]
        L = len(xs[0])
        # Rows where the models differ: with a shared unembedding, a row whose normed residual is
        # bit for bit a's (the embedding, every block before an edit) has a's distribution, and its
        # KL is 0: those rows are decoded, softmaxed and ranked once (half the work for an edit
        # halfway down the model).
        differ = torch.nonzero(~(xs[0] == xs[1]).all(-1)).squeeze(1) if shared else torch.arange(L)
        if shared:
            lp = torch.log_softmax(_unembed(loaded[0].adapter, torch.cat([xs[0], xs[1][differ]])), -1)
            lp_a, lp_b = lp[:L], lp[L:]  # lp_b: b's rows `differ` only
        else:
            lp_a, lp_b = (torch.log_softmax(_unembed(m.adapter, x), -1) for m, x in zip(loaded, xs))
        best_a = lp_a.topk(ROW_TOP, -1)
        best_b = lp_b.topk(ROW_TOP, -1)
        ids_b, vals_b = best_a.indices.clone(), best_a.values.clone()
        ids_b[differ], vals_b[differ] = best_b.indices, best_b.values
        arrays = {}
        for tag, ids, vals in (("a", best_a.indices, best_a.values), ("b", ids_b, vals_b)):
            arrays[f"top_{tag}"] = ids[:, 0].numpy().astype(np.int32)
            arrays[f"prob_{tag}"] = vals[:, 0].exp().numpy().astype(np.float32)
            arrays[f"ids_{tag}"] = ids.numpy().astype(np.int32)
            arrays[f"probs_{tag}"] = vals.exp().numpy().astype(np.float32)
        kl = torch.zeros(L)
        la = lp_a[differ]
        kl[differ] = (la.exp() * (la - lp_b)).sum(-1).clamp_min(0)
        arrays["kl"] = kl.numpy().astype(np.float32)
        last_b = lp_b[-1] if len(differ) and int(differ[-1]) == L - 1 else lp_a[-1]
        finals = [lp_a[-1].exp(), last_b.exp()]  # the last row is the model's own next-token distribution
        moved = finals[1] - finals[0]
        up, down = moved.topk(top), (-moved).topk(top)
        order = torch.cat([up.indices, down.indices])
        arrays["moved_ids"] = order.numpy().astype(np.int32)
        arrays["moved_a"] = finals[0][order].numpy().astype(np.float32)
        arrays["moved_b"] = finals[1][order].numpy().astype(np.float32)
        meta = results[0].meta
        return Result(arrays, {"position": pos, "models": list(names), "layers": list(meta["layers"]),
                               "blocks": list(meta["blocks"])})


def _pair_check(a, b) -> bool:
    """Both models read the same tokens (else there is nothing to compare position by position);
    returns whether they share the unembedding. Once per pair and process (Executor.memoized)."""
    _same_tokens(a, b)
    return _shares_unembedding(a, b)
