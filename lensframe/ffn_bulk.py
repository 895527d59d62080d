"""The ffn_vocab view's lookups (lensframe/ops/neurons.py ffn_static, ffn_dynamic) for many foci at once.

An exported page (`lensframe export`) shows the view at every exported sample, layer and position,
and the static projection of every neuron a click can focus there: one lookup per focus (~30 ms on
SmolLM2) would take minutes. These do the same computation in bulk:

- `static_tops`: ffn_static for many neurons of a layer: E v_i (or E norm_f(v_i)) as one matmul
  per chunk of neurons, its top-k promoted and suppressed tokens and ||v_i||.
- `dynamic_tops`: ffn_dynamic for every position of a sample at a layer: the sub-updates ranked by
  |m_i| ||v_i|| at each position, and the residual before and after the MLP decoded as the logit lens.
- `sub_update_tokens`: the top tokens of E (m_i v_i) (or E norm_f(m_i v_i)) for each listed
  sub-update. E (m v) = m (E v), and RMSNorm or a LayerNorm without bias is scale-invariant in
  its input (norm_f(m v) = sign(m) c norm_f(v), c > 0), so for m != 0 they are the top tokens of
  sign(m) E v_i (of sign(m) E norm_f(v_i)): the static projection's promoted (m > 0) or suppressed
  (m < 0) tokens, computed once per neuron. m = 0, or a final norm with a bias (GPT-2's LayerNorm,
  with `final_norm`), is computed per sub-update as ffn_dynamic does.

Equal to the per-focus lookups (tests/test_export_ffn_vocab.py) up to float32 rounding, which the
bulk matmuls order differently: a token within ~1e-6 of another may swap places with it.
"""
from __future__ import annotations

import numpy as np
import torch

from .ops.neurons import _lens, _normed

CHUNK = 256  # neurons (or sub-updates) per matmul against the unembedding: CHUNK x vocab floats at once


@torch.no_grad()
def static_tops(adapter, layer: int, neurons, k: int, final_norm: bool = False) -> dict:
    """ffn_static's result for each of `neurons` (indices at `layer`), stacked: promoted_ids and
    promoted [n, k], suppressed_ids and suppressed [n, k], norm [n]."""
    idx = torch.as_tensor(np.asarray(neurons, dtype=np.int64))
    V = adapter.value_vectors(layer).float()[idx]  # [n, d]
    E = adapter.unembed_weight.float()
    k = min(k, E.shape[0])
    up_ids, up, down_ids, down = [], [], [], []
    for lo in range(0, len(idx), CHUNK):
        v = V[lo:lo + CHUNK]
        scores = (_normed(adapter, v) if final_norm else v) @ E.T  # [chunk, vocab]
        top, bottom = scores.topk(k, dim=-1), (-scores).topk(k, dim=-1)
        up_ids.append(top.indices), up.append(top.values), down_ids.append(bottom.indices), down.append(-bottom.values)
    cat = lambda xs, dt: (torch.cat(xs).numpy().astype(dt) if xs else np.zeros((0, k), dt))  # noqa: E731
    return {"promoted_ids": cat(up_ids, np.int32), "promoted": cat(up, np.float32),
            "suppressed_ids": cat(down_ids, np.int32), "suppressed": cat(down, np.float32),
            # as ffn_static: the norm of the one vector (a row norm of the stacked V may round differently)
            "norm": np.array([np.float32(v.norm()) for v in V], dtype=np.float32)}


@torch.no_grad()
def dynamic_tops(adapter, acts: np.ndarray, norms: np.ndarray, mid: np.ndarray, post: np.ndarray,
                 top_n: int, lens_k: int = 10) -> dict:
    """ffn_dynamic at one layer for every position: acts [T, d_mlp] (m), norms [d_mlp] (||v||),
    mid and post [T, d_model] (the residual before and after the MLP). Returns neurons and m [T, n]
    (by |m| ||v||, largest first), and before/after ids and probs [T, lens_k]."""
    m = torch.as_tensor(acts)
    size = m.abs() * torch.as_tensor(norms)  # [T, d_mlp]
    order = size.topk(min(top_n, size.shape[-1]), dim=-1).indices  # [T, n]
    before = _lens(adapter, torch.as_tensor(mid), lens_k)
    after = _lens(adapter, torch.as_tensor(post), lens_k)
    return {"neurons": order.numpy().astype(np.int32), "m": m.gather(1, order).numpy(),
            "before_ids": before[0], "before_probs": before[1], "after_ids": after[0], "after_probs": after[1]}


def scale_invariant(adapter, final_norm: bool) -> bool:
    """Whether the top tokens of E (m v) (through the final norm with `final_norm`) are those of
    sign(m) E v: always without the norm; through a norm with no additive bias."""
    if not final_norm:
        return True
    return getattr(adapter.final_norm, "bias", None) is None


@torch.no_grad()
def sub_update_tokens(adapter, layer: int, neurons, m, k: int, final_norm: bool = False, static=None) -> np.ndarray:
    """The top-k token ids of each sub-update m_j v_{neurons_j} at `layer` ([n, k]), as ffn_dynamic
    ranks them. `static`: {neuron: (promoted_ids, suppressed_ids)} with at least k ids each, from
    static_tops with the same final_norm, read for m != 0 when the norm is scale-invariant."""
    neurons = np.asarray(neurons, dtype=np.int64)
    m = np.asarray(m, dtype=np.float32)
    out = np.zeros((len(neurons), k), dtype=np.int32)
    fast = scale_invariant(adapter, final_norm) and static is not None
    exact = []
    for j, (i, mj) in enumerate(zip(neurons.tolist(), m.tolist())):
        if fast and mj != 0 and int(i) in static:
            up, down = static[int(i)]
            out[j] = (up if mj > 0 else down)[:k]
        else:
            exact.append(j)
    if exact:
        E = adapter.unembed_weight.float()
        V = adapter.value_vectors(layer).float()
        for lo in range(0, len(exact), CHUNK):
            rows = np.asarray(exact[lo:lo + CHUNK])
            subs = V[torch.as_tensor(neurons[rows])] * torch.as_tensor(m[rows]).unsqueeze(1)  # as ffn_dynamic
            scores = (E @ (_normed(adapter, subs) if final_norm else subs).T).T
            out[rows] = scores.topk(k, dim=-1).indices.numpy()
    return out
