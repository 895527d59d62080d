"""What an exportable view hands to `lensframe export` (no Panel): its data, packed.

A view's JS port (views/js/<type>.js) rebuilds what the view's render() shows for any focus of the
exported samples, so the view ships numbers and the strings JS cannot derive as Python does
(repr() of tokens). Arrays travel as base64 of little-endian typed arrays, not JSON of floats, and
a number the view shows with n decimals travels as the integer Python's f"{x:.{n}f}" shows
(`fixed_digits`), so the page prints the served page's digits without re-rounding in JS.
"""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field

import numpy as np


@dataclass
class ExportData:
    """meta: JSON-able values (strings, small lists); arrays: numpy arrays (packed as base64)."""

    meta: dict = field(default_factory=dict)
    arrays: dict = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"meta": self.meta, "arrays": {k: pack(v) for k, v in self.arrays.items()}},
                          ensure_ascii=False, separators=(",", ":"))


DTYPES = ("uint8", "uint16", "uint32", "int8", "int16", "int32", "float32", "float64")


def pack(a: np.ndarray) -> dict:
    a = np.ascontiguousarray(a)
    if a.dtype.name not in DTYPES:
        raise TypeError(f"cannot export an array of {a.dtype} (one of {', '.join(DTYPES)})")
    return {"dtype": a.dtype.name, "shape": list(a.shape), "b64": base64.b64encode(a.astype(a.dtype.newbyteorder("<"),
                                                                                          copy=False).tobytes()).decode()}


def b64_size(n_bytes: int) -> int:
    """Characters of the base64 of n bytes."""
    return 4 * ((int(n_bytes) + 2) // 3)


def smallest_uint(top: int):
    """The narrowest unsigned dtype holding 0..top."""
    for dt in (np.uint8, np.uint16, np.uint32):
        if top <= np.iinfo(dt).max:
            return dt
    return np.uint64


def fixed_digits(values, n: int) -> np.ndarray:
    """For values >= 0: the integer whose digits Python's f"{x:.{n}f}" shows (0.1255 at n=3 -> 126,
    shown as "0.126"), as int64. Python rounds the exact binary value half to even; x·10^n in float64
    decides every value not within 1e-6 of a midpoint, and those few go through Python's own
    formatting."""
    x = np.asarray(values, dtype=np.float64)
    if x.size and float(x.min()) < 0:
        raise ValueError("fixed_digits takes values >= 0")
    s = x * 10.0 ** n
    q = np.floor(s + 0.5)
    near = np.abs(s - np.floor(s) - 0.5) < 1e-6
    flat, qf = x.ravel(), q.ravel()
    for i in np.flatnonzero(near.ravel()):
        qf[i] = int(f"{flat[i]:.{n}f}".replace(".", ""))
    return qf.reshape(x.shape).astype(np.int64)


class ExportContext:
    """What a view's export_data() reads: the board, the exported samples (in order), the options
    (lensframe.export_plan.ExportOptions), the ViewContext that rendered the page (`rendered`: its
    parts are the page's components), and a ViewContext of the view at any exported sample."""

    def __init__(self, board, view, samples: list[int], options, rendered=None):
        self.board, self.view, self.samples, self.options = board, view, list(samples), options
        self.rendered = rendered

    def context(self, sample: int):
        from .context import ViewContext
        from .focus import Focus

        focus = Focus(model=next(iter(self.board.spec.models)), sample=sample)
        return ViewContext(self.board, focus, self.view)
