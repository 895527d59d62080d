"""layer_stats (prepare): per-layer weight statistics of one model and their outlier scores against
the layers around them (lensframe.layer_stats), for finding an edited layer without the base."""
from __future__ import annotations

import numpy as np

from . import register
from .base import Op, Result


@register
class LayerStatsOp(Op):
    name = "layer_stats"
    kind = "prepare"

    def estimate_bytes(self, node, info, n_samples, n_tokens):
        return 0

    def compute(self, node, ctx) -> Result:
        from ..layer_stats import layer_stats

        loaded = ctx.load(node.model)
        out = layer_stats(loaded.model, loaded.adapter.family.layers, loaded.info.n_layers,
                          window=int(node.param("window")))
        arrays = {k: np.asarray(v) for k, v in out["arrays"].items()}
        return Result(arrays, {"names": out["names"], "stats": out["stats"], "window": out["window"], "dead_units": out["dead_units"],
                               "n_layers": loaded.info.n_layers})
