"""Focus results of every sample, kept in the store: computed in the dataset pass, read on a focus change.

A focus op (attention patterns, neuron activations of one sample) normally runs on a forward of
the focused sample when the user clicks it, and on a CPU that forward is most of a click's
latency. Where a focus node's results for the whole dataset fit the spec's `run.keep_focus_mb`,
the compiler adds a `kept_focus` node wrapping it (lensframe.compiler): it rides the fused dataset
pass (one forward per batch, shared with every other dataset node), cuts each sample's captures out
of the batch, runs the focus op's own `extract` on them, and stores the results. The executor then
answers a focus change from the store, with no forward, in every server process that shares it.

Results are ragged (each sample has its own length), so each array is stored flat, with each
sample's shape and offset: no padding on disk, and a sample reads back exactly the shape the live
focus pass gives. Numbers equal the live pass's up to float rounding (a padded batch computes the
same real tokens through differently shaped matmuls).
"""
from __future__ import annotations

import numpy as np

from . import get_op, register
from .base import Op, Result


def sample_captures(captures: dict, b: int, n: int) -> dict:
    """Sample b's captures as a batch of one, cut to its n real tokens (right padding): what the
    focus pass of that sample alone captures. Attention patterns have two token axes."""
    out = {}
    for name, t in captures.items():
        one = t[b : b + 1]
        out[name] = one[:, :, :n, :n] if name.startswith("attn_pattern.") else one[:, :n]
    return out


def sample_result(stored: Result, sample: int) -> Result:
    """One sample's focus result from a stored kept_focus result."""
    arrays = {}
    for name in stored.meta["names"]:
        shape = tuple(int(d) for d in stored[f"{name}.shape"][sample])
        start = int(stored[f"{name}.offset"][sample])
        arrays[name] = stored[name][start : start + int(np.prod(shape))].reshape(shape)
    return Result(arrays, dict(stored.meta.get("focus_meta", {})))


@register
class KeptFocusOp(Op):
    name = "kept_focus"
    kind = "dataset"

    @staticmethod
    def focus_node(node):
        return node.inputs[0]

    def hooks(self, node, info):
        focus = self.focus_node(node)
        return get_op(focus.op).hooks(focus, info)

    def estimate_bytes(self, node, info, n_samples, n_tokens):
        focus = self.focus_node(node)
        return n_samples * get_op(focus.op).estimate_bytes(focus, info, 1, n_tokens)

    def estimate_peak_bytes(self, node, info, n_samples, n_tokens):
        # finalize concatenates the per-sample results while they are still held: twice the result
        # (bench_scale measured 234 MB at 1,000 texts where the result alone was estimated at 109)
        return 2 * self.estimate_bytes(node, info, n_samples, n_tokens)

    def init(self, node, ctx):
        return {}  # sample -> its focus Result

    def update(self, node, state, batch, ctx):
        focus = self.focus_node(node)
        op = get_op(focus.op)
        for b, (sample, n) in enumerate(zip(batch.samples.tolist(), batch.mask.sum(1).tolist())):
            state[sample] = op.extract(focus, sample_captures(batch.captures, b, int(n)), ctx)
        return state

    def merge(self, node, a, b):
        a.update(b)  # shards hold disjoint samples
        return a

    def finalize(self, node, state, ctx):
        n = len(ctx.dataset)
        missing = sorted(set(range(n)) - set(state))
        if missing:
            raise RuntimeError(f"kept focus results lack {len(missing)} samples (first: {missing[0]})")
        first = state[0]
        arrays = {}
        for name in first.arrays:
            parts = [np.ascontiguousarray(state[s][name]) for s in range(n)]
            shapes = np.array([p.shape for p in parts], dtype=np.int64).reshape(n, -1)
            sizes = np.array([p.size for p in parts], dtype=np.int64)
            arrays[name] = np.concatenate([p.ravel() for p in parts])
            arrays[f"{name}.shape"] = shapes
            arrays[f"{name}.offset"] = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        return Result(arrays, {"names": list(first.arrays), "focus_meta": first.meta})
