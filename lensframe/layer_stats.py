"""Per-layer weight statistics that make a planted edit stand out, from one model alone (no base).

For every 2-D weight of every block (q/k/v/o, the MLP's input and output projections; GPT-2's
fused c_attn too) we compute, from its singular values σ₁ ≥ σ₂ ≥ …:

  sigma1       the spectral norm σ₁ (a rank-one edit with a large ‖u‖‖r‖ raises it)
  top_gap      σ₁/σ₂ (a planted direction that dominates the matrix opens a gap)
  stable_rank  ‖W‖_F²/σ₁² (how many directions carry the matrix; a dominant planted one lowers it)
  fro          the Frobenius norm (a dense fine-tune of one layer moves it)
  dead         rows and columns that are exactly zero (a knockout zeroes them; trained weights
               practically never hold an all-zero row)
  distinct     distinct values / entries: the storage precision. A model released quantized (a GGUF
               file) or in bf16 holds a few thousand distinct values per matrix; an edit written in
               float32 afterwards gives every entry its own. A provenance check, not a mechanism:
               an attacker who re-quantizes the edited weights defeats it (docs/METHODS.md)

Each statistic but `dead` (in log space, so a doubling reads the same at any scale) gets an outlier score
against the trend of the layers around it: a robust z-score (x − median)/(1.4826·MAD) over the
`window` layers on each side, the layer itself left out. A matrix whose statistic leaves its
neighbours' trend by many MADs is the kind of thing an edit makes; the layer's suspicion is the
largest |z| of its matrices' spectral statistics, and a dead unit or a matrix off its neighbours'
storage grid (GRID_RATIO times its neighbours' distinct-value share) makes it suspect outright. docs/METHODS.md says
what each statistic catches and what it misses (a ROME edit's rank-one ΔW is small next to σ₁ of
an MLP output matrix, so these statistics see it weakly).

Pure numpy/torch: no store, no Panel.
"""
from __future__ import annotations

import re

import numpy as np
import torch

SPECTRAL = ("sigma1", "top_gap", "stable_rank", "fro")
STATS = SPECTRAL + ("distinct",)
GRID_RATIO = 4.0  # a matrix with this many times its neighbours' distinct-value share is off their storage grid
WINDOW = 3  # layers on each side a statistic is compared with
TOP_SV = 8  # singular values kept per matrix (the chart's tip lists them)
MAD_FLOOR = 1e-3  # in log units: neighbours that agree to 0.1 % do not make a 0.2 % change a huge z


def matrix_stats(w: torch.Tensor) -> dict:
    """The statistics of one weight matrix (SVD in float32: the statistics need no more)."""
    w = w.detach()
    distinct = torch.unique(w).numel() / max(w.numel(), 1)
    w = w.float()
    s = torch.linalg.svdvals(w).double()
    s1 = float(s[0]) if len(s) else 0.0
    s2 = float(s[1]) if len(s) > 1 else 0.0
    fro = float(w.norm())
    top = np.zeros(TOP_SV)
    top[: min(TOP_SV, len(s))] = s[:TOP_SV].numpy()
    zero_rows, zero_cols = (w == 0).all(1), (w == 0).all(0)
    dead = int(zero_rows.sum()) + int(zero_cols.sum())
    return {"sigma1": s1, "top_gap": s1 / s2 if s2 > 0 else np.inf if s1 > 0 else 1.0,
            "stable_rank": fro ** 2 / s1 ** 2 if s1 > 0 else 0.0, "fro": fro, "dead": dead, "sv": top,
            "distinct": distinct, "dead_rows": torch.nonzero(zero_rows).flatten().tolist() if dead else [],
            "dead_cols": torch.nonzero(zero_cols).flatten().tolist() if dead else []}


def block_matrices(model, layers_path: str) -> dict[str, list[tuple[int, torch.Tensor]]]:
    """Every 2-D parameter inside the blocks, by its name relative to the block:
    {"mlp.down_proj.weight": [(layer, tensor), ...], ...}."""
    layer_re = re.compile(rf"^{re.escape(layers_path)}\.(\d+)\.(.+)$")
    out: dict[str, list] = {}
    for name, p in model.named_parameters():
        m = layer_re.match(name)
        if m and p.dim() == 2:
            out.setdefault(m.group(2), []).append((int(m.group(1)), p))
    return out


def robust_z(values: np.ndarray, window: int = WINDOW) -> np.ndarray:
    """Each entry's robust z-score against the entries within `window` on each side (itself left
    out): (x − median) / (1.4826·MAD), MAD floored at MAD_FLOOR. NaN where fewer than 2 neighbours."""
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    z = np.full(n, np.nan)
    for i in range(n):
        nb = np.concatenate([values[max(0, i - window): i], values[i + 1: i + 1 + window]])
        nb = nb[np.isfinite(nb)]
        if len(nb) < 2 or not np.isfinite(values[i]):
            continue
        med = np.median(nb)
        mad = max(1.4826 * np.median(np.abs(nb - med)), MAD_FLOOR)
        z[i] = (values[i] - med) / mad
    return z


def neighbour_median(values: np.ndarray, window: int = WINDOW) -> np.ndarray:
    """The median of the entries within `window` on each side of each entry (itself left out)."""
    values = np.asarray(values, dtype=np.float64)
    out = np.full(len(values), np.nan)
    for i in range(len(values)):
        nb = np.concatenate([values[max(0, i - window): i], values[i + 1: i + 1 + window]])
        nb = nb[np.isfinite(nb)]
        if len(nb):
            out[i] = np.median(nb)
    return out


def layer_stats(model, layers_path: str, n_layers: int, window: int = WINDOW, progress=None) -> dict:
    """Statistics of every block matrix and their outlier scores.

    Returns arrays indexed [matrix, layer] (matrices in `names` order; NaN where a layer lacks the
    matrix): each of STATS, their z-scores `z_<stat>`, `dead`, `distinct_ratio` (to the
    neighbours' median), `off_grid` (bool), `sv` [matrix,
    layer, TOP_SV]; and per layer `score` (max |z| over matrices and the SPECTRAL stats),
    `score_matrix`/`score_stat` (which one), `dead_layer`, `off_grid_layer` (counts)."""
    mats = block_matrices(model, layers_path)
    names = sorted(mats)
    M = len(names)
    arrays = {s: np.full((M, n_layers), np.nan) for s in STATS}
    arrays["dead"] = np.zeros((M, n_layers), np.int64)
    arrays["sv"] = np.zeros((M, n_layers, TOP_SV))
    dead_units = {}  # "name@layer" -> {"rows": [...], "cols": [...]} (as stored: nn.Linear is [out, in])
    total = sum(len(v) for v in mats.values())
    done = 0
    with torch.no_grad():
        for mi, name in enumerate(names):
            for layer, w in mats[name]:
                st = matrix_stats(w)
                for s in STATS:
                    arrays[s][mi, layer] = st[s]
                arrays["dead"][mi, layer] = st["dead"]
                arrays["sv"][mi, layer] = st["sv"]
                if st["dead"]:
                    dead_units[f"{name}@{layer}"] = {"rows": st["dead_rows"], "cols": st["dead_cols"]}
                done += 1
                if progress is not None:
                    progress(done / total, f"weight statistics: {name} of layer {layer}")
    zs = []
    for stat in STATS:
        with np.errstate(divide="ignore", invalid="ignore"):
            logged = np.log(arrays[stat])
        z = np.stack([robust_z(row, window) for row in logged]) if M else np.zeros((0, n_layers))
        arrays[f"z_{stat}"] = z
        if stat in SPECTRAL:
            zs.append(np.abs(z))
    stacked = np.stack(zs) if zs else np.zeros((len(SPECTRAL), M, n_layers))  # [stat, matrix, layer]
    flat = np.nan_to_num(stacked, nan=0.0).reshape(len(SPECTRAL) * M, n_layers)
    best = flat.argmax(0) if M else np.zeros(n_layers, np.int64)
    arrays["score"] = flat.max(0) if M else np.zeros(n_layers)
    arrays["score_stat"] = (best // max(M, 1)).astype(np.int64)  # index into SPECTRAL
    arrays["score_matrix"] = (best % max(M, 1)).astype(np.int64)
    arrays["dead_layer"] = arrays["dead"].sum(0)
    around = np.stack([neighbour_median(row, window) for row in arrays["distinct"]]) if M else np.zeros((0, n_layers))
    with np.errstate(divide="ignore", invalid="ignore"):
        arrays["distinct_ratio"] = arrays["distinct"] / around
    arrays["off_grid"] = np.nan_to_num(arrays["distinct_ratio"], nan=0.0) >= GRID_RATIO  # [matrix, layer]
    arrays["off_grid_layer"] = arrays["off_grid"].sum(0)
    return {"arrays": arrays, "names": names, "stats": list(SPECTRAL), "window": window, "dead_units": dead_units}


def ranked_layers(arrays) -> list[int]:
    """Every layer, the most suspect first: those with dead units or matrices off the model's
    storage grid (direct evidence of tampering), then by the spectral score."""
    score = np.asarray(arrays["score"], dtype=np.float64)
    evidence = np.asarray(arrays["dead_layer"], dtype=np.int64) + np.asarray(arrays["off_grid_layer"], dtype=np.int64)
    return sorted(range(len(score)), key=lambda l: (-int(evidence[l] > 0), -int(evidence[l]), -float(score[l])))


def suspicious_layers(arrays, threshold: float, top: int = 3) -> list[int]:
    """The layers to look at first: every one with evidence (dead units, off-grid matrices), those
    whose spectral score reaches `threshold`, and at least the `top` first of ranked_layers."""
    score = np.asarray(arrays["score"], dtype=np.float64)
    evidence = np.asarray(arrays["dead_layer"], dtype=np.int64) + np.asarray(arrays["off_grid_layer"], dtype=np.int64)
    return [l for i, l in enumerate(ranked_layers(arrays)) if evidence[l] > 0 or score[l] >= threshold or i < top]
