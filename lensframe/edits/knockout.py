"""Knock out attention heads or MLP neurons of one layer by zeroing their weights (in place).

A head h writes to the residual through its slice of the attention output projection: with z the
concatenated head outputs [.., n_heads·d_head], attn_out = Σ_h z_h W_O,h + b, so zeroing the input
dimensions h·d_head … (h+1)·d_head − 1 of W_O removes exactly z_h W_O,h (the bias is shared and
kept). A neuron i writes m_i v_i; its value vector v_i (a row of adapter.value_vectors) and its input
weights (the row/column of the MLP's input projections that makes neuron i, and its bias) are set to
zero, so m_i = act(0)·0 = 0 too and nothing of it is left for an auditor to read.

The modules come from the adapter (`attn_out_proj`, `mlp_in_projs`, from its Family table).
Orientation comes from the module itself: GPT-2's Conv1D stores [in, out], nn.Linear [out, in].
"""
from __future__ import annotations

import time

import torch

from .common import fingerprint_of, is_conv1d, lm_loss, param_name, parts

def head_slice(adapter, layer: int, head: int) -> slice:
    """The input dimensions of the attention output projection that carry head `head`."""
    proj = adapter.attn_out_proj(layer)
    d_in = proj.weight.shape[0] if is_conv1d(proj) else proj.weight.shape[1]
    d_head = d_in // adapter.n_heads
    return slice(head * d_head, (head + 1) * d_head)


@torch.no_grad()
def zero_heads(adapter, layer: int, heads) -> float:
    """Zero the heads' input slices of W_O; returns the Frobenius norm removed."""
    proj = adapter.attn_out_proj(layer)
    w = proj.weight
    removed = 0.0
    for h in heads:
        if not 0 <= h < adapter.n_heads:
            raise ValueError(f"head {h} is out of range (the model has {adapter.n_heads} heads)")
        s = head_slice(adapter, layer, h)
        block = w[s, :] if is_conv1d(proj) else w[:, s]
        removed += float(block.norm()) ** 2
        block.zero_()
    return removed ** 0.5


@torch.no_grad()
def zero_neurons(adapter, layer: int, neurons) -> float:
    """Zero the neurons' value vectors and input weights (and input biases); returns the Frobenius
    norm removed."""
    idx = torch.tensor(sorted(set(int(n) for n in neurons)), dtype=torch.long)
    if len(idx) and (idx.min() < 0 or idx.max() >= adapter.d_mlp):
        raise ValueError(f"neurons must be in 0..{adapter.d_mlp - 1}")
    removed = 0.0
    vv = adapter.value_vectors(layer)  # [d_mlp, d_model] view
    removed += float(vv[idx].norm()) ** 2
    vv[idx] = 0.0
    for proj in adapter.mlp_in_projs(layer):
        w = proj.weight
        if is_conv1d(proj):  # [d_model, d_mlp]: neuron i is column i
            removed += float(w[:, idx].norm()) ** 2
            w[:, idx] = 0.0
        else:  # [d_mlp, d_model]: row i
            removed += float(w[idx].norm()) ** 2
            w[idx] = 0.0
        if getattr(proj, "bias", None) is not None:
            removed += float(proj.bias[idx].norm()) ** 2
            proj.bias[idx] = 0.0
    return removed ** 0.5


def knockout_edit(loaded, layer: int, *, heads=None, neurons=None, texts=(), max_tokens: int = 48) -> dict:
    """Knock out `heads` or `neurons` (or both) of layer `layer`, in place. With `texts`, the mean
    LM loss on them before and after is measured. Returns the manifest."""
    t0 = time.perf_counter()
    model, tok, ad = parts(loaded)
    if not 0 <= layer < ad.n_layers:
        raise ValueError(f"layer {layer} is out of range for a {ad.n_layers}-layer model")
    if not heads and not neurons:
        raise ValueError("give heads or neurons to knock out")
    texts = [t for t in texts if t.strip()]
    before = {"lm_loss": lm_loss(model, tok, texts, max_tokens)} if texts else {}
    manifest = {"kind": "knockout", "layer": int(layer), "base_fingerprint": fingerprint_of(loaded),
                "family": ad.family.name, "weights": []}
    if heads:
        manifest["heads"] = sorted(int(h) for h in heads)
        manifest["removed_heads_fro"] = zero_heads(ad, layer, manifest["heads"])
        manifest["weights"].append(param_name(model, ad.attn_out_proj(layer).weight))
    if neurons:
        manifest["neurons"] = sorted(set(int(n) for n in neurons))
        manifest["removed_neurons_fro"] = zero_neurons(ad, layer, manifest["neurons"])
        manifest["weights"].append(param_name(model, ad.mlp_down(layer).weight))
        for proj in ad.mlp_in_projs(layer):
            manifest["weights"].append(param_name(model, proj.weight))
            if getattr(proj, "bias", None) is not None:
                manifest["weights"].append(param_name(model, proj.bias))
    after = {"lm_loss": lm_loss(model, tok, texts, max_tokens)} if texts else {}
    manifest["effects"] = {"before": before, "after": after}
    manifest["seconds"] = round(time.perf_counter() - t0, 2)
    return manifest
