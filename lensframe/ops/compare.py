"""Comparing two models of the same shape (the audit game: find what was edited).

weight_diff (prepare): for every parameter, ‖W_b − W_a‖, ‖W_a‖ and the singular values of the
  delta, so a rank-one edit (ROME) shows as rank one; grouped by layer.
model_kl (dataset): KL(P_a ‖ P_b) of the next-token distributions at every position of every
  sample, in model a's fused pass (model b runs on the same batch): which texts changed most.
pair_lens (lookup): at the focused sample and position, the logit lens of both models and the
  tokens whose final probability moved most.

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
class PairLensOp(Op):
    name = "pair_lens"
    kind = "lookup"

    @torch.no_grad()
    def lookup(self, node, executor, sample, position: int | None = None, top: int = 10) -> Result:
        """Both models on model a's tokens of `sample`: per layer, the top-1 token and its probability at
        `position` (None = last), and the final tokens whose probability moved most."""
        names = (node.model, node.param("other"))
        ids = torch.as_tensor(executor.sample_ids(node.model, sample)[None], dtype=torch.long)  # a sample or a probe
        n = ids.shape[1]
        pos = n - 1 if position is None else max(0, min(int(position), n - 1))
        arrays = {}
        finals = []
        for tag, name in zip("ab", names):
            loaded = executor.model(name)
            ad = loaded.adapter
            hooks = [f"resid_post.{l}" for l in range(ad.n_layers - 1)]
            captured = {}
            with executor.model_lock(name):
                out = executor._forward(loaded, ids.to(loaded.device), torch.ones_like(ids, dtype=torch.bool).to(loaded.device),
                                        set(hooks), captured)
            rows = [captured[h][0, pos] for h in hooks]
            E, bias = ad.unembed_weight.float(), ad.unembed_bias
            logits = [ad.final_norm(r[None].to(ad.final_norm.weight.dtype)).float()[0] @ E.T + (bias.float() if bias is not None else 0)
                      for r in rows] + [out.logits[0, pos].float()]
            lp = torch.log_softmax(torch.stack(logits), -1)  # [L, V], the last row is the model's output
            top1 = lp.max(-1)
            arrays[f"top_{tag}"] = top1.indices.cpu().numpy().astype(np.int32)
            arrays[f"prob_{tag}"] = top1.values.exp().cpu().numpy().astype(np.float32)
            finals.append(lp[-1].exp())
        moved = finals[1] - finals[0]
        up, down = moved.topk(top), (-moved).topk(top)
        order = torch.cat([up.indices, down.indices])
        arrays["moved_ids"] = order.cpu().numpy().astype(np.int32)
        arrays["moved_a"] = finals[0][order].cpu().numpy().astype(np.float32)
        arrays["moved_b"] = finals[1][order].cpu().numpy().astype(np.float32)
        return Result(arrays, {"position": pos, "models": list(names)})
