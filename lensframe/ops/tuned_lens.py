"""Tuned lens (Belrose et al. 2023, arXiv 2303.08112), trained by lensframe on the spec's dataset.

Per layer an affine translator h -> h + A_l h + b_l, zero-initialised (so before training it is
the logit lens), trained to minimise KL(p_final || p_l) with the model (final norm, unembedding)
frozen. The paper trains on ~65M tokens with SGD/Nesterov; on 2 CPU cores the unembedding costs
~5 GFLOP per token and layer for SmolLM2, so we plan for a small budget (docs/METHODS.md):
  1. the dataset pass keeps a random subsample of token positions (`train_tokens`) with the
     residual of every layer (a reservoir-like reduction: memory is the sample, not the dataset);
  2. those tokens are split train / validation / test by their text (about 70/15/15 of the texts
     that gave tokens, by seed): no text has tokens in two parts, so the test figures are on
     texts the lens never saw;
  3. all layers train together from that cache with Adam, minibatches of tokens, a progress bar;
  4. each layer keeps its checkpoint with the best validation KL, and falls back to the identity
     (the plain logit lens) when training never beat it there;
  5. KL of both lenses on the test texts' tokens is stored with the translators, per layer, with
     the token and text counts of each part.
"""
from __future__ import annotations

import copy

import numpy as np
import torch

from . import register
from .base import Op, Result
from .lens import stream_hooks

EVAL_EVERY = 10


def translate(hs: list[torch.Tensor], res: Result) -> list[torch.Tensor]:
    """Apply the trained translators to lens rows hs (resid_post stream; the final row as is)."""
    A, b = torch.as_tensor(res["A"]), torch.as_tensor(res["b"])
    return [h + h @ A[i].T + b[i] for i, h in enumerate(hs[:-1])] + [hs[-1]]


@register
class TunedLensOp(Op):
    name = "tuned_lens"
    version = 3  # 2: the training tokens are drawn per batch; 3: split by text
    kind = "dataset"

    def hooks(self, node, info):
        return set(stream_hooks("resid_post", info.n_layers))

    def estimate_bytes(self, node, info, n_samples, n_tokens):
        return (info.n_layers + 1) * node.param("train_tokens") * info.d_model * 4 + \
            info.n_layers * info.d_model * (info.d_model + 1) * 4 * 4  # cache + translators, Adam state

    def init(self, node, ctx):
        return {"rows": [], "texts": [],
                "rate": min(1.0, node.param("train_tokens") / max(1, len(ctx.dataset) * ctx.n_tokens / 2))}

    @torch.no_grad()
    def update(self, node, state, batch, ctx):
        mask = batch.mask.cpu()
        hs = torch.stack([batch.captures[h].float().cpu()[mask] for h in stream_hooks("resid_post", ctx.info.n_layers)], 1)
        # which tokens to keep is drawn per batch (seeded by the batch's first sample), not from one
        # stream over the pass, so shards of a distributed pass keep exactly the same tokens
        rng = np.random.default_rng([node.param("seed"), int(batch.samples[0])])
        keep = rng.random(hs.shape[0]) < state["rate"]  # [tokens, layers + 1, d]
        state["rows"].append(hs[torch.as_tensor(keep)])
        text_of_token = np.repeat(np.asarray(batch.samples), mask.sum(1).numpy())  # the sample of each real token
        state["texts"].append(text_of_token[keep])
        return state

    def merge(self, node, a, b):
        a["rows"] += b["rows"]
        a["texts"] += b["texts"]
        return a

    def finalize(self, node, state, ctx):
        rows = torch.cat(state["rows"])[: node.param("train_tokens")]
        texts = np.concatenate(state["texts"])[: rows.shape[0]] if state["texts"] else np.zeros(0, np.int64)
        part = split_by_text(texts, node.param("seed"))
        a = ctx.adapter
        steps = node.param("steps")
        bar = ctx.progress_bar(steps, f"training the tuned lens ({rows.shape[0]} tokens)")
        norm = copy.deepcopy(a.final_norm).float()  # trained through in float32, whatever the model's dtype
        bias = a.unembed_bias.float() if a.unembed_bias is not None else None
        out = train(rows, norm, a.unembed_weight, bias, steps=steps, lr=node.param("lr"),
                    batch_tokens=node.param("batch_tokens"), seed=node.param("seed"), on_step=lambda: bar.update(1),
                    part=torch.as_tensor(part))
        bar.close()
        names = ("train", "val", "test")
        meta = {"tokens": {n: int((part == i).sum()) for i, n in enumerate(names)},
                "texts": {n: int(len(np.unique(texts[part == i]))) for i, n in enumerate(names)}}
        return Result(out, meta)


def split_by_text(texts: np.ndarray, seed: int) -> np.ndarray:
    """0 (train), 1 (validation) or 2 (test) for each token, by its text: a seeded permutation of the
    texts, 15% of them (at least one) for test, 15% for validation, the rest for training."""
    unique = np.unique(texts)
    order = np.random.default_rng([seed, 7]).permutation(unique)
    n = len(order)
    if n < 3:
        raise ValueError(f"the tuned lens needs tokens of at least 3 texts to split by text (got {n})")
    n_test = n_val = max(1, round(0.15 * n))
    part_of = {int(t): 2 if i < n_test else 1 if i < n_test + n_val else 0 for i, t in enumerate(order)}
    return np.array([part_of[int(t)] for t in texts], np.int64)


def _kl_per_layer(rows, final_norm, E, bias, A=None, b=None, chunk: int = 64) -> torch.Tensor:
    """Mean KL(p_final || p_l) per layer over rows [N, L+1, d] (no grad)."""
    L = rows.shape[1] - 1
    total = torch.zeros(L)
    with torch.no_grad():
        for s in range(0, rows.shape[0], chunk):
            r = rows[s : s + chunk]
            total += _kl(r, final_norm, E, bias, A, b).sum(0)
    return total / max(rows.shape[0], 1)


def _kl(r, final_norm, E, bias, A=None, b=None) -> torch.Tensor:
    """KL(p_final || p_l) [N, L] for rows r [N, L+1, d], through translators A, b if given."""
    h = r[:, :-1]
    if A is not None:
        h = h + torch.einsum("nld,lkd->nlk", h, A) + b
    logits = final_norm(torch.cat([h, r[:, -1:]], 1)) @ E.T
    if bias is not None:
        logits = logits + bias
    logp = torch.log_softmax(logits, -1)
    final = logp[:, -1:]
    return (final.exp() * (final - logp[:, :-1])).sum(-1)


def train(rows: torch.Tensor, final_norm, E, bias, steps: int, lr: float, batch_tokens: int, seed: int,
          on_step=lambda: None, part: torch.Tensor | None = None) -> dict[str, np.ndarray]:
    """Train translators on rows [N, L+1, d] (the last layer is the final output). part [N]: 0 train,
    1 validation, 2 test for each row (split_by_text); without it, a seeded 70/15/15 split of rows."""
    g = torch.Generator().manual_seed(seed)
    n, L, d = rows.shape[0], rows.shape[1] - 1, rows.shape[2]
    if part is None:
        perm = torch.randperm(n, generator=g)
        n_val = n_test = max(1, int(0.15 * n))
        part = torch.zeros(n, dtype=torch.long)
        part[perm[:n_test]], part[perm[n_test:n_test + n_val]] = 2, 1
    tr, val, test = rows[part == 0], rows[part == 1], rows[part == 2]
    E = E.detach().float()
    A = torch.zeros(L, d, d, requires_grad=True)
    b = torch.zeros(L, d, requires_grad=True)
    opt = torch.optim.Adam([A, b], lr=lr)
    base_val = _kl_per_layer(val, final_norm, E, bias)
    best_val, best_A, best_b = base_val.clone(), torch.zeros(L, d, d), torch.zeros(L, d)
    for step in range(1, steps + 1):
        idx = torch.randint(0, tr.shape[0], (min(batch_tokens, tr.shape[0]),), generator=g)
        loss = _kl(tr[idx], final_norm, E, bias, A, b).mean(0).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % EVAL_EVERY == 0 or step == steps:
            kl = _kl_per_layer(val, final_norm, E, bias, A.detach(), b.detach())
            better = kl < best_val  # each layer keeps its own best checkpoint (early stopping)
            best_val[better] = kl[better]
            best_A[better], best_b[better] = A.detach()[better], b.detach()[better]
        on_step()
    return {
        "A": best_A.numpy(), "b": best_b.numpy(),
        "val_kl_logit": base_val.numpy(), "val_kl_tuned": best_val.numpy(),
        "test_kl_logit": _kl_per_layer(test, final_norm, E, bias).numpy(),
        "test_kl_tuned": _kl_per_layer(test, final_norm, E, bias, best_A, best_b).numpy(),
    }
