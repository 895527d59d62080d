"""Reading a comparison of two models from its stored results, with numpy only (no torch), so a
view can import it: which layers changed most, the changed matrices with their singular directions
and token readouts, and which texts' predictions moved beyond the dataset's noise. The results are
computed by lensframe.ops.compare (weight_diff, model_kl).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TOP_SV = 8  # singular values of ΔW kept per parameter
DIRECTIONS = 3  # singular pairs kept per changed matrix (vectors and token readouts)
READ_TOKENS = 8  # tokens kept per side of a readout
MAX_MATRICES = 32  # changed matrices whose directions are kept, the most changed first
NULL_DIRECTIONS = 64  # random unit directions read out like an edit's: the z an edit's direction must beat
ROLES = ("writes", "reads", "other")  # readout_null's order


def robust_z(x: np.ndarray) -> np.ndarray:
    """(x − median) / (1.4826·MAD) along the last axis (1.4826·MAD estimates a normal's σ, and a
    few outliers, the thing looked for, barely move it). A MAD of 0 gives ±inf off the median."""
    x = np.asarray(x, np.float64)
    med = np.median(x, -1, keepdims=True)
    mad = 1.4826 * np.median(np.abs(x - med), -1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (x - med) / mad
    return np.where(x == med, 0.0, z)


def layer_ranking(res) -> list[tuple[int, float]]:
    """Layers (−1: outside the blocks) by their relative weight change, largest first:
    sqrt(sum ‖ΔW‖²) / sqrt(sum ‖W‖²) over the layer's parameters."""
    out = {}
    for layer in np.unique(res["layer"]):
        sel = res["layer"] == layer
        d, n = float(np.sqrt((res["delta"][sel] ** 2).sum())), float(np.sqrt((res["norm"][sel] ** 2).sum()))
        out[int(layer)] = d / n if n > 0 else d
    return sorted(out.items(), key=lambda kv: -kv[1])


@dataclass(frozen=True)
class ChangedMatrix:
    """One changed matrix of a weight_diff result, as a view reads it (see WeightDiffOp)."""

    row: int  # its parameter row
    layer: int
    name: str  # relative to the block
    role: str
    rank: int
    rel_change: float  # ‖ΔW‖ / ‖W‖
    sv: np.ndarray  # [TOP_SV]
    u: np.ndarray  # [k, d_out]
    v: np.ndarray  # [k, d_in]
    pos_ids: np.ndarray  # [DIRECTIONS, READ_TOKENS]
    pos_z: np.ndarray
    neg_ids: np.ndarray
    neg_z: np.ndarray
    null_z: float  # the bar its readouts must beat (NaN: no readout)


def changed_matrices(res) -> list[ChangedMatrix]:
    """The changed matrices of a weight_diff result, most changed first."""
    out = []
    for m, p in enumerate(res["matrix"].tolist()):
        role = res.meta["roles"][m]
        null = float(res["readout_null"][ROLES.index(role)])
        n = res["norm"][p]
        out.append(ChangedMatrix(p, int(res["layer"][p]), res.meta["params"][p], role, int(res["rank"][p]),
                                 float(res["delta"][p] / n if n > 0 else res["delta"][p]), res["sv"][p],
                                 res[f"u.{m}"], res[f"v.{m}"], res["pos_ids"][m], res["pos_z"][m],
                                 res["neg_ids"][m], res["neg_z"][m], null))
    return out


# --- which texts moved beyond noise ----------------------------------------------------------------

Z_MOVED = 5.0  # robust z of a text's log KL above which it moved beyond the dataset's noise (METHODS)
KL_FLOOR = 1e-12  # nats: a KL of exactly 0 (the same numbers) is logged as this


@dataclass(frozen=True)
class TextBaseline:
    """The dataset's per-text mean KL against its own spread: z per text (NaN for an empty text),
    the median KL (nats), the MAD of ln KL, the threshold, and the texts beyond it, largest first."""

    z: np.ndarray
    median: float
    mad_log: float
    threshold: float
    moved: np.ndarray
    n: int

    @property
    def max_z(self) -> float:
        return float(np.nanmax(self.z)) if self.n else float("nan")


def text_kl_baseline(mean_kl, threshold: float = Z_MOVED) -> TextBaseline:
    """Which texts' predictions changed beyond noise. Per text x = its mean KL(model ‖ other);
    z = (ln x − median ln x) / (1.4826·MAD(ln x)) over the dataset's texts. In logs because KL is
    positive and its noise spreads over orders of magnitude (a raw-KL z of the unrelated texts of a
    ROME game reaches 12; in logs their largest is 3, as for a normal sample of 60). A text moved
    when z > threshold."""
    x = np.asarray(mean_kl, np.float64)
    ok = np.isfinite(x)
    z = np.full(x.shape, np.nan)
    if not ok.any():
        return TextBaseline(z, float("nan"), float("nan"), threshold, np.zeros(0, np.int64), 0)
    lx = np.log(np.maximum(x[ok], KL_FLOOR))
    med = float(np.median(lx))
    mad = float(np.median(np.abs(lx - med)))
    z[ok] = robust_z(lx)
    moved = np.flatnonzero(np.nan_to_num(z, nan=-np.inf) > threshold)
    moved = moved[np.argsort(-z[moved], kind="stable")]
    return TextBaseline(z, float(np.exp(med)), mad, threshold, moved, int(ok.sum()))
