"""The op contract. An op turns a Node into arrays; the executor decides when it runs.

Kinds:
- "prepare": needs the tokenizer only (e.g. tokenizing the dataset); no forward pass.
- "dataset": a streaming reduction folded into the one fused dataset pass of its model. It is a
  monoid: init -> update per batch -> merge (of shards) -> finalize, so memory is the size of the
  result, never of the dataset's activations.
- "focus": read from the one forward of the focused sample (memoized per model and sample).
- "derive": computed from other nodes' stored results, no model (e.g. clustering the embeddings
  a dataset pass produced); run after the passes and stored like them.
- "lookup": on demand, with arguments from the focus (memoized in memory, not stored).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Result:
    arrays: dict[str, np.ndarray]
    meta: dict = field(default_factory=dict)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]


@dataclass
class Batch:
    """One batch of the dataset pass: which samples, their tokens, and the captured activations."""

    samples: np.ndarray  # dataset indices, [B]
    input_ids: Any  # torch [B, T]
    mask: Any  # torch bool [B, T], True on real tokens
    captures: dict  # hook name -> torch tensor [B, ...]
    shared: dict = field(default_factory=dict)  # work done once per batch for several nodes
    grads: dict = field(default_factory=dict)  # hook name -> d(sum of the samples' LM losses)/d(activation)


class Op:
    name: str = ""
    version: int = 1
    kind: str = "dataset"
    # A dataset op whose result is one row per sample computed from that sample alone (the logit
    # lens): a probe's focus forward computes the probe's row too (Executor.focus of a probe).
    per_sample: bool = False

    def hooks(self, node, info) -> set[str]:
        """Normalized hook names the op reads from the forward pass."""
        return set()

    def grad_hooks(self, node, info) -> set[str]:
        """Hooks whose gradient of the LM loss the op reads (the pass then runs a backward)."""
        return set()

    def estimate_bytes(self, node, info, n_samples: int, n_tokens: int) -> int:
        return 0

    def estimate_peak_bytes(self, node, info, n_samples: int, n_tokens: int) -> int:
        """What the op holds at its worst moment of a pass: by default its result (a state that is
        the result, as FilledRows). An op whose finalize builds the result from a state of another
        shape, with both alive at once, says so here."""
        return self.estimate_bytes(node, info, n_samples, n_tokens)

    # dataset reductions
    def init(self, node, ctx) -> Any:
        raise NotImplementedError

    def update(self, node, state, batch: Batch, ctx) -> Any:
        raise NotImplementedError

    def merge(self, node, a, b) -> Any:
        raise NotImplementedError

    def finalize(self, node, state, ctx) -> Result:
        raise NotImplementedError

    # prepare ops
    def compute(self, node, ctx) -> Result:
        raise NotImplementedError

    # focus ops: captures of one sample (batch of one), real tokens only
    def extract(self, node, captures: dict, ctx) -> Result:
        raise NotImplementedError

    # lookup ops: on demand, with arguments from the focus (executor.lookup memoizes them)
    def lookup(self, node, executor, **args) -> Result:
        raise NotImplementedError


class FilledRows:
    """Reduction state of per-sample results: preallocated arrays indexed by sample.

    Shards fill disjoint rows, so merging is taking each row from the shard that filled it.
    """

    def __init__(self, shapes: dict[str, tuple], dtypes: dict[str, Any], n: int, fill=0):
        self.shapes, self.dtypes, self.fill = shapes, dtypes, fill
        self.arrays = {k: np.full((n,) + tuple(s), fill, dtype=dtypes[k]) for k, s in shapes.items()}
        self.filled = np.zeros(n, dtype=bool)

    # A shard of a distributed pass fills a few rows of the whole dataset's arrays: it travels as
    # those rows only and is laid out in full again on arrival.
    def __getstate__(self) -> dict:
        rows = np.flatnonzero(self.filled)
        return {"shapes": self.shapes, "dtypes": self.dtypes, "fill": self.fill, "n": len(self.filled),
                "rows": rows, "values": {k: v[rows] for k, v in self.arrays.items()}}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["shapes"], state["dtypes"], state["n"], state["fill"])
        for k, v in state["values"].items():
            self.arrays[k][state["rows"]] = v
        self.filled[state["rows"]] = True

    def put(self, samples: np.ndarray, name: str, rows_per_sample: list[np.ndarray]) -> None:
        for s, value in zip(samples, rows_per_sample):
            self.arrays[name][s][tuple(slice(0, d) for d in value.shape)] = value
        self.filled[samples] = True

    def merge(self, other: "FilledRows") -> "FilledRows":
        for k in self.arrays:
            self.arrays[k][other.filled] = other.arrays[k][other.filled]
        self.filled |= other.filled
        return self
