"""What fires an edit: rank inputs by how strongly a layer's changed MLP reacts to them.

For a layer whose MLP weights differ between a suspect model and its base, every candidate input x
(the normalized residual the MLP reads, `mlp_in.{layer}`, at the candidate's last token) gets:

  change     ‖MLP_suspect(x) − MLP_base(x)‖ / ‖MLP_base(x)‖: how much the edit changes what the MLP
             writes, relative to what it wrote before. Any edit of the MLP (a dense fine-tune too).
  alignment  ‖Vᵣᵀ k‖ / ‖k‖, k the base's key (neuron activations, `mlp_post.{layer}`) and Vᵣ the
             input singular directions of ΔW of the MLP's output matrix (its numerical rank, at
             most MAX_RANK): how much of the key lies where a low-rank edit reads. For ROME's
             ΔW = u rᵀ this is |uᵀk|/(‖u‖‖k‖), and change = |uᵀk|·‖r‖/‖W k + b‖ exactly.

Candidates: (a) every vocabulary token after a short neutral prefix (one forward per token, the
prefix's keys and values computed once and shared), and (b) the dataset's n-grams: every position of
every text, read in its own context, named by the n tokens ending there. Both run only up to the
layer (the forward stops after it). The layers below it are the suspect's; where only this layer
changed they are the base's too, so x is what both models' MLP would read.

Pure torch: no store, no Panel. lensframe.ops.edit_search binds it to a board.
"""
from __future__ import annotations

import copy
import time
from contextlib import nullcontext

import numpy as np
import torch

from .edits.common import StopForward, get

PREFIX = "Here is a word:"  # neutral context for a lone token (the scan's keys are read after it)
MAX_RANK = 8
RANK_TOL = 1e-3  # as lensframe.ops.compare: singular values below this fraction of σ₁ are float noise
VOCAB_BATCH = 512
YIELD_S = 0.002  # pause between batches, outside the model's lock


def mlp_module(loaded, layer: int):
    return get(loaded.adapter.layers[layer], loaded.adapter.family.mlp)


def changed_directions(suspect, base, layer: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(Vᵣ [d_mlp, r], σ [r]) of ΔW of the layer's MLP output matrix (as value vectors, rows =
    neurons), or (None, None) when that matrix did not change."""
    d = (suspect.adapter.value_vectors(layer).detach().float() - base.adapter.value_vectors(layer).detach().float())
    if not bool(d.any()):
        return None, None
    U, S, _ = torch.linalg.svd(d, full_matrices=False)  # d = U S Vh: U's columns live in the key space
    r = max(1, min(MAX_RANK, int((S > S[0] * RANK_TOL).sum())))
    return U[:, :r], S[:r]


@torch.no_grad()
def vocab_inputs(loaded, layer: int, prefix: str = PREFIX, batch_size: int = VOCAB_BATCH, progress=None,
                 stop=None, suffix: list[int] | tuple = (), lock=None) -> torch.Tensor:
    """mlp_in.{layer} at the last token of prefix + t + suffix for each vocabulary token t,
    [V, d_model] (float32). The prefix runs once; its cache is copied for each batch of tokens (the
    tokens attend to it). With a suffix (token ids), this extends a candidate leftwards: which token
    before it makes the edit fire most. `lock` (the model's) is held per batch, not for the whole
    scan, so the dashboard's other views run their forwards in between."""
    lock = lock or nullcontext()
    model, tok, ad = loaded.model, loaded.tokenizer, loaded.adapter
    dev = next(model.parameters()).device
    prefix_ids = list(tok(prefix).input_ids) if prefix else []
    if not prefix_ids:
        prefix_ids = list(tok("", add_special_tokens=True).input_ids)
    V = ad.unembed_weight.shape[0]
    name = f"mlp_in.{layer}"
    out = torch.empty(V, ad.d_model)
    with lock:
        first = model(input_ids=torch.tensor([prefix_ids], device=dev), use_cache=True) if prefix_ids else None
    cache = _cache_of(first) if first is not None else None
    for start in range(0, V, batch_size):
        if stop is not None and stop():
            raise InterruptedError("edit search stopped")
        ids = torch.arange(start, min(V, start + batch_size), device=dev)[:, None]
        if suffix:
            ids = torch.cat([ids, torch.tensor([list(suffix)], device=dev).expand(len(ids), -1)], 1)
        kwargs = {}
        if cache is not None:
            c = copy.deepcopy(cache)
            c.batch_repeat_interleave(len(ids))
            n, width = len(prefix_ids), ids.shape[1]
            kwargs = {"cache": c, "attention_mask": torch.ones(len(ids), n + width, dtype=torch.long, device=dev),
                      "position_ids": torch.arange(n, n + width, device=dev).expand(len(ids), -1)}
        with lock, ad.capture([name]) as cap, ad.stop_after(layer, StopForward):
            try:
                model(input_ids=ids, use_cache=cache is not None, **kwargs)
            except StopForward:
                pass
        out[start:start + len(ids)] = cap[name][:, -1].float().cpu()
        time.sleep(YIELD_S)  # a lock is not fair: let a view waiting for the model take it between batches
        if progress is not None:
            progress(min(V, start + batch_size) / V, f"edit search: vocabulary at layer {layer}")
    return out


def extend_left(suspect, base, layer: int, ids: list[int], prefix: str = PREFIX, progress=None, stop=None,
                lock=None) -> np.ndarray:
    """`change` of prefix + t + ids for every vocabulary token t, [V]: the token that, placed before
    a candidate, makes the edit fire most (a multi-token subject's key needs its earlier tokens)."""
    x = vocab_inputs(suspect, layer, prefix, progress=progress, stop=stop, suffix=list(ids), lock=lock)
    return change_scores(suspect, base, layer, x)["change"]


def _cache_of(output):
    """The key/value cache a forward returned (transformers 5 names it `cache`; older, past_key_values)."""
    cache = output.get("cache") if hasattr(output, "get") else None
    return cache if cache is not None else output.past_key_values


@torch.no_grad()
def dataset_inputs(loaded, layer: int, ids: np.ndarray, lengths: np.ndarray, batch_size: int = 16,
                   progress=None, stop=None, lock=None) -> tuple[torch.Tensor, np.ndarray]:
    """mlp_in.{layer} at every real position of every dataset text, [N, d_model], and the
    (sample, position) of each row, [N, 2]; `lock` held per batch."""
    lock = lock or nullcontext()
    model, tok, ad = loaded.model, loaded.tokenizer, loaded.adapter
    dev = next(model.parameters()).device
    pad = tok.pad_token_id or 0
    name = f"mlp_in.{layer}"
    rows, where = [], []
    n = len(lengths)
    for start in range(0, n, batch_size):
        if stop is not None and stop():
            raise InterruptedError("edit search stopped")
        samples = np.arange(start, min(n, start + batch_size))
        T = int(lengths[samples].max())
        batch = torch.as_tensor(ids[samples, :T], dtype=torch.long)
        mask = batch >= 0
        batch = batch.masked_fill(~mask, pad).to(dev)
        with lock, ad.capture([name]) as cap, ad.stop_after(layer, StopForward):
            try:
                model(input_ids=batch, attention_mask=mask.long().to(dev), use_cache=False)
            except StopForward:
                pass
        x = cap[name].float().cpu()
        time.sleep(YIELD_S)
        for i, s in enumerate(samples):
            L = int(lengths[s])
            rows.append(x[i, :L])
            where += [(int(s), p) for p in range(L)]
        if progress is not None:
            progress(min(n, start + batch_size) / n, f"edit search: dataset n-grams at layer {layer}")
    if not rows:
        return torch.empty(0, ad.d_model), np.zeros((0, 2), np.int64)
    return torch.cat(rows), np.array(where, dtype=np.int64)


@torch.no_grad()
def change_scores(suspect, base, layer: int, x: torch.Tensor, chunk: int = 4096) -> dict[str, np.ndarray]:
    """`change` and `alignment` (module docstring) of inputs x [N, d_model] at `layer`, plus the
    base's output norm. Both MLPs run on the same x, in float32."""
    mlp_s, mlp_b = mlp_module(suspect, layer), mlp_module(base, layer)
    down_b = base.adapter.mlp_down(layer)
    dirs, _ = changed_directions(suspect, base, layer)
    change, align, out_norm = [], [], []
    dtype = next(mlp_b.parameters()).dtype
    for i in range(0, len(x), chunk):
        xi = x[i:i + chunk].to(dtype)
        keys = {}
        handle = down_b.register_forward_pre_hook(lambda mod, args: keys.__setitem__("k", args[0]))
        try:
            yb = mlp_b(xi).float()
        finally:
            handle.remove()
        ys = mlp_s(xi).float()
        nb = yb.norm(dim=-1)
        out_norm.append(nb)
        change.append((ys - yb).norm(dim=-1) / nb.clamp_min(1e-12))
        if dirs is not None:
            k = keys["k"].float()
            align.append((k @ dirs).norm(dim=-1) / k.norm(dim=-1).clamp_min(1e-12))
    cat = lambda xs: torch.cat(xs).numpy() if xs else np.full(len(x), np.nan, np.float32)  # noqa: E731
    return {"change": cat(change), "alignment": cat(align) if dirs is not None else np.full(len(x), np.nan, np.float32),
            "out_norm": cat(out_norm)}


def ngram_table(token_ids: np.ndarray, where: np.ndarray, scores: np.ndarray, n: int = 3, top: int = 200):
    """The dataset positions as n-grams (the n tokens ending at each), best score per distinct
    n-gram, best first: [(score, sample, position, ngram ids)]."""
    best: dict[tuple, tuple] = {}
    for (s, p), v in zip(where, scores):
        if not np.isfinite(v):
            continue
        key = tuple(int(t) for t in token_ids[s, max(0, p - n + 1): p + 1])
        if key not in best or v > best[key][0]:
            best[key] = (float(v), int(s), int(p), key)
    return sorted(best.values(), key=lambda r: -r[0])[:top]
