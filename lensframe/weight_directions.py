"""The top direction of a weight change ΔW = W_suspect − W_base, oriented by a fixed rule.

For ΔW = Σ σᵢ uᵢ vᵢᵀ (uᵢ in the matrix's output space, vᵢ in its input space), an input k changes
the output by ΔW·k, and its part along u₁ is u₁ᵀ ΔW k = σ₁ v₁ᵀ k: v₁ is the input direction that
drives the change hardest. A rank-one edit (ROME) is all σ₁ u₁ v₁ᵀ. SVD fixes a pair only up to a
joint sign flip (u, v) → (−u, −v); the rule here, sklearn's `svd_flip`, makes u₁'s largest-magnitude
entry positive, so the same ΔW always gives the same v₁ (and the caller may flip it deliberately).

Pure torch: the dream's edit_direction target uses it, and anything else that ranks inputs by how
strongly they drive a change may import it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class EditDirection:
    """ΔW's top singular pair: v (input space, unit), u (output space, unit), σ₁, and σ₁ / ‖ΔW‖_F
    (1.0 for a rank-one change: the share of the change's norm this pair carries)."""

    v: torch.Tensor
    u: torch.Tensor
    sigma: float
    share: float


def top_direction(delta: torch.Tensor) -> EditDirection:
    """The top singular pair of `delta` [d_out, d_in], oriented so that u's largest-|·| entry is
    positive. Computed in float64 on the CPU (ΔW is small next to W: float32 loses digits)."""
    d = delta.detach().to("cpu", torch.float64)
    if d.dim() != 2:
        raise ValueError(f"a weight change must be a matrix (got shape {tuple(d.shape)})")
    U, S, Vh = torch.linalg.svd(d, full_matrices=False)
    if S.numel() == 0 or float(S[0]) == 0.0:
        raise ValueError("the two matrices are identical: a change of zero has no direction")
    u, v = U[:, 0], Vh[0]
    if u[u.abs().argmax()] < 0:
        u, v = -u, -v
    return EditDirection(v.float(), u.float(), float(S[0]), float(S[0] / S.norm()))


def edit_direction(w_suspect: torch.Tensor, w_base: torch.Tensor) -> EditDirection:
    """top_direction(w_suspect − w_base), for two [d_out, d_in] matrices of one shape."""
    if w_suspect.shape != w_base.shape:
        raise ValueError(f"the matrices differ in shape ({tuple(w_suspect.shape)} vs {tuple(w_base.shape)})")
    return top_direction(w_suspect.detach().to("cpu", torch.float64) - w_base.detach().to("cpu", torch.float64))


def mlp_out_edit_direction(suspect, base, layer: int) -> EditDirection:
    """edit_direction of a layer's MLP output matrix (down_proj, c_proj, dense_4h_to_h) for two
    Adapters: W [d_model, d_mlp] maps the neuron activations mlp_post.{layer} to the MLP's output,
    so v is a direction over the layer's neurons (length d_mlp) and u one in the residual stream."""
    return edit_direction(suspect.value_vectors(layer).T, base.value_vectors(layer).T)
