"""Comparing two models of the same shape (the audit game: find what was edited).

Every figure reads from the node's `other` model (the reference: the model before the edit, e.g.
the base) to its model (the suspect): a change is model − other, "rose" means higher in the model.

weight_diff (prepare): for every parameter, ‖ΔW‖ (ΔW = W_model − W_other), ‖W‖ and the top singular
  values of ΔW, so a rank-one edit (ROME) shows as rank one; grouped by layer. For the changed 2-D
  matrices, their top singular directions and what each reads or writes in tokens (WeightDiffOp).
model_kl (dataset): KL(P_model ‖ P_other) of the next-token distributions at every position of every
  sample, in the model's fused pass (the other model runs on the same batch): which texts changed
  most. text_kl_baseline says which of them changed beyond the dataset's noise.
lens_residuals (focus): the rows the logit lens decodes (embed, every block's output) of the focused
  sample, a node of each model: memoized, and kept in the store like any focus result.
pair_lens (lookup): at the focused sample and position, the logit lens of both models (from their
  lens_residuals, all rows in one matmul), KL(model ‖ other) per row, and the tokens whose final
  probability moved most from other to model.

A node names the suspect as its model and the reference as its `other` param; its store key covers
both fingerprints (lensframe.compiler). In the arrays, tag a is the model and b the other.
"""
from __future__ import annotations

import re

import numpy as np
import torch

from ..errors import LensframeError
from . import register
from .base import FilledRows, Op, Result
from .lens import stream_hooks, stream_rows
from ..model_compare import DIRECTIONS, MAX_MATRICES, NULL_DIRECTIONS, READ_TOKENS, ROLES, TOP_SV, layer_ranking, robust_z

RANK_TOL = 1e-3  # singular values below this fraction of the largest count as zero (float32 noise is ~1e-7)


def _same_tokens(a, b) -> None:
    if a.tokenizer.get_vocab() != b.tokenizer.get_vocab():
        raise LensframeError(f"models {a.name!r} and {b.name!r} have different tokenizers: comparing their "
                             "next-token distributions needs the same vocabulary")


def numerical_rank(sv: torch.Tensor) -> int:
    return int((sv > sv[0] * RANK_TOL).sum()) if sv.numel() and sv[0] > 0 else 0


def output_readout(adapter, u: torch.Tensor) -> torch.Tensor:
    """What residual-stream directions u [K, d] say when read as the logit lens reads a vector:
    W_U · (γ ⊙ u), γ the final norm's weight (a LayerNorm centres u first; the norm's scale and
    bias, and the unembedding's bias, shift every token alike, so a direction leaves them out). [K, V]."""
    norm = adapter.final_norm
    u = u.float().to(adapter.unembed_weight.device)
    if isinstance(norm, torch.nn.LayerNorm):
        u = u - u.mean(-1, keepdim=True)
    gamma = getattr(norm, "weight", None)
    if gamma is not None:
        u = u * gamma.float()
    return u @ adapter.unembed_weight.float().T


def input_readout(adapter, v: torch.Tensor) -> torch.Tensor:
    """How well each token's embedding aligns with input directions v [K, d] of a matrix that
    reads the residual stream: cos(W_E[t], v), [K, V]. A cosine, not W_E · v: the block's norm
    rescales its input, so how long an embedding row is does not matter to the matrix."""
    E = adapter.embed_weight.float()
    v = v.float().to(E.device)
    return (v @ E.T) / (E.norm(dim=1) * v.norm(dim=1, keepdim=True)).clamp_min(1e-12)


def _as_linear(model, name: str, w: torch.Tensor) -> torch.Tensor:
    """A weight as [out, in] (nn.Linear's layout): GPT-2's Conv1D stores [in, out]."""
    module = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else None
    return w.T if type(module).__name__ == "Conv1D" else w


def _role(family, layer: int, rel: str, d_in: int, d_model: int) -> str:
    """writes: the matrix adds to the residual stream (the MLP's output projection, attention's
    W_O); reads: it reads the residual (q, k, v, the MLP's input projections); other: outside
    the blocks (embeddings) or neither."""
    if layer < 0:
        return "other"
    module = rel[: -len(".weight")] if rel.endswith(".weight") else rel
    if module in (family.mlp_down, family.attn_out):
        return "writes"
    return "reads" if d_in == d_model else "other"


def _oriented(U: torch.Tensor, Vh: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Singular pairs (columns of U, rows of Vh) with each u_i's largest-|·| entry positive
    (sklearn's svd_flip, the rule of lensframe.weight_directions): the sign of a pair is arbitrary,
    u σ vᵀ = (−u) σ (−v)ᵀ, so a fixed rule makes the same ΔW give the same vectors."""
    U, V = U.T.clone(), Vh.clone()  # [K, d_out], [K, d_in]
    flip = torch.sign(U.gather(1, U.abs().argmax(1, keepdim=True)))
    flip[flip == 0] = 1
    return U * flip, V * flip


def readout_tokens(scores: np.ndarray, k: int = READ_TOKENS) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The k tokens of highest and of lowest score per row [K, V], with their robust z over the
    vocabulary: (pos_ids, pos_z, neg_ids, neg_z), neg_z positive (how far below the median)."""
    z = robust_z(scores)
    pos = np.argsort(-z, -1, kind="stable")[:, :k]
    neg = np.argsort(z, -1, kind="stable")[:, :k]
    return (pos.astype(np.int32), np.take_along_axis(z, pos, -1).astype(np.float32),
            neg.astype(np.int32), (-np.take_along_axis(z, neg, -1)).astype(np.float32))


def readout_null(readout, d: int, device, n: int = NULL_DIRECTIONS) -> float:
    """The largest robust z (either tail) that n random unit directions reach through `readout`:
    the bar a direction's token must clear to stand out. Seeded: the same model gives the same bar."""
    r = torch.randn(n, d, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    r = (r / r.norm(dim=1, keepdim=True)).float().to(device)
    z = np.abs(robust_z(readout(r).cpu().numpy()))
    return float(z.max())


@register
class WeightDiffOp(Op):
    """ΔW = W_model − W_other for every parameter, and for the changed 2-D matrices what ΔW does.

    Per parameter p (P rows, in named_parameters order; meta["params"]: names relative to the block):
      layer [P] (−1 outside the blocks), delta [P] = ‖ΔW‖_F, norm [P] = ‖W_model‖_F,
      rank [P] (numerical rank of ΔW: σ_i > RANK_TOL·σ₁), sv [P, TOP_SV] (top singular values of ΔW).
    Per changed 2-D matrix m (M ≤ MAX_MATRICES rows, their layers ordered as layer_ranking orders them,
    then by ‖ΔW‖ within a layer; meta["roles"][m] is "writes", "reads" or "other", see _role):
      matrix [M]: its parameter row p.
      u.{m} [k, d_out], v.{m} [k, d_in] (k = min(DIRECTIONS, rank)): ΔW's top singular pairs, unit
        vectors in nn.Linear's [out, in] layout (GPT-2's Conv1D transposed), ΔW ≈ Σ σ_i u_i v_iᵀ with
        σ_i = sv[p, i]; each pair oriented by _oriented (u_i's largest-|·| entry positive). An input x
        changes the output by ΔW·x, whose part along u_i is σ_i (v_i·x): v_i is the input that drives
        direction i, u_i what it writes. For dream targets and edit_search.
      pos_ids, pos_z, neg_ids, neg_z [M, DIRECTIONS, READ_TOKENS] (−1 / NaN where there is no
        readout): the tokens at either end of direction i's readout and their robust z over the
        vocabulary. writes: the readout of u_i (output_readout: through the final norm's weight and
        the unembedding): pos are the tokens +u_i promotes (when v_i·x > 0), neg those −u_i promotes
        (v_i·x < 0). reads: the readout of v_i (input_readout: cosine with the embedding rows):
        pos are the tokens aligned with +v_i, neg with −v_i. other: none.
      readout_null [3] (by ROLES; NaN where unused): readout_null's bar for each readout: a direction
        "stands out" when its top z beats what random directions reach.
    """

    name = "weight_diff"
    version = 2
    kind = "prepare"

    def estimate_bytes(self, node, info, n_samples, n_tokens):
        return 0

    @torch.no_grad()
    def compute(self, node, ctx) -> Result:
        a, b = ctx.load(node.model), ctx.load(node.param("other"))
        pb = dict(b.model.named_parameters())
        fam = a.adapter.family
        layer_re = re.compile(rf"^{re.escape(fam.layers)}\.(\d+)\.(.+)$")
        names, layers, delta, norm, rank, svs = [], [], [], [], [], []
        svd = {}  # parameter row -> (U, S, Vh) of its ΔW, for the directions below
        for name, wa in a.model.named_parameters():
            wb = pb.get(name)
            if wb is None or wb.shape != wa.shape:
                raise LensframeError(f"models {a.name!r} and {b.name!r} differ in shape at {name}: weight_diff needs "
                                     "two models of the same architecture")
            d = (wa.float() - wb.float())
            m = layer_re.match(name)
            names.append(m.group(2) if m else name)
            layers.append(int(m.group(1)) if m else -1)
            delta.append(float(d.norm()))
            norm.append(float(wa.float().norm()))
            sv = torch.zeros(TOP_SV)
            if d.dim() == 2 and delta[-1] > 0:
                U, s, Vh = torch.linalg.svd(_as_linear(a.model, name, d), full_matrices=False)
                sv[: min(TOP_SV, len(s))] = s[:TOP_SV].cpu()
                rank.append(numerical_rank(s))
                svd[len(names) - 1] = (U[:, :DIRECTIONS], s, Vh[:DIRECTIONS])
            else:
                rank.append(int(delta[-1] > 0))
            svs.append(sv.numpy())
        arrays = {"layer": np.array(layers, np.int32), "delta": np.array(delta, np.float64),
                  "norm": np.array(norm, np.float64), "rank": np.array(rank, np.int32),
                  "sv": np.stack(svs).astype(np.float64)}
        res = Result(arrays, {"params": names, "n_layers": a.info.n_layers})
        arrays.update(self._directions(res, svd, a.adapter, a.info.d_model))
        res.meta["roles"] = arrays.pop("_roles")
        return res

    def _directions(self, res: Result, svd: dict, adapter, d_model: int) -> dict:
        order = {layer: i for i, (layer, _) in enumerate(layer_ranking(res))}
        rows = sorted(svd, key=lambda p: (order[int(res["layer"][p])], -res["delta"][p]))[:MAX_MATRICES]
        M, K, T = len(rows), DIRECTIONS, READ_TOKENS
        out = {"matrix": np.array(rows, np.int32),
               "pos_ids": np.full((M, K, T), -1, np.int32), "pos_z": np.full((M, K, T), np.nan, np.float32),
               "neg_ids": np.full((M, K, T), -1, np.int32), "neg_z": np.full((M, K, T), np.nan, np.float32),
               "readout_null": np.full(len(ROLES), np.nan, np.float64)}
        roles = []
        readouts = {"writes": lambda x: output_readout(adapter, x), "reads": lambda x: input_readout(adapter, x)}
        for m, p in enumerate(rows):
            U, s, Vh = svd[p]
            k = min(K, int(res["rank"][p]))
            u, v = _oriented(U[:, :k], Vh[:k])
            out[f"u.{m}"], out[f"v.{m}"] = u.cpu().numpy().astype(np.float32), v.cpu().numpy().astype(np.float32)
            role = _role(adapter.family, int(res["layer"][p]), res.meta["params"][p], v.shape[1], d_model)
            roles.append(role)
            if role == "other" or k == 0:
                continue
            scores = readouts[role](u if role == "writes" else v).cpu().numpy()
            for key, value in zip(("pos_ids", "pos_z", "neg_ids", "neg_z"), readout_tokens(scores)):
                out[key][m, :k] = value
            r = ROLES.index(role)
            if np.isnan(out["readout_null"][r]):
                out["readout_null"][r] = readout_null(readouts[role], d_model, adapter.unembed_weight.device)
        out["_roles"] = roles
        return out


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
        logits_b = ctx.other_logits(node.param("other"), batch.input_ids, batch.mask)
        la = torch.log_softmax(batch.captures["unembed"].float(), -1)
        lbp = torch.log_softmax(logits_b.float().to(la.device), -1)
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
        each model's top tokens and their probabilities and KL(P_a || P_b) in nats (a: the model,
        b: the other, the reference); and the tokens whose final probability moved most from b to
        a: moved_ids holds the `top` most raised (p_a − p_b largest) then the `top` most lowered,
        moved_a / moved_b their probabilities in each model.

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
        moved = finals[0] - finals[1]  # other → model: what the change did (rose = higher in the model)
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
