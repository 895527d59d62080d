"""Nodes and the plan: the graph of computations that views need.

A Node is a frozen, hashable description of a computation (op, model, canonical params). Two
views that need the same thing build equal Nodes, so they share one result. A node's store key
adds what the result depends on beyond its description: the op's version and the fingerprints of
the model and the dataset.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

STORE_FORMAT = 1


def _freeze(value: Any):
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


@dataclass(frozen=True)
class Node:
    op: str
    model: str | None = None
    params: tuple = ()  # sorted ((name, value), ...)
    inputs: tuple = ()  # Nodes whose results this one is computed from

    @staticmethod
    def make(op: str, model: str | None = None, inputs: tuple = (), **params) -> "Node":
        return Node(op, model, _freeze(params), tuple(inputs))

    def param(self, name: str, default=None):
        return dict(self.params).get(name, default)

    @property
    def kind(self) -> str:
        from .ops import get_op

        return get_op(self.op).kind

    def label(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.params)
        if self.op == "kept_focus":  # names what it keeps: its one input is a focus node
            args = self.inputs[0].label().split(" @")[0]
        return f"{self.op}({args})" + (f" @{self.model}" if self.model else "")


def node_key(node: Node, model_fp: str | None, dataset_fp: str, op_version: int, input_keys=()) -> str:
    """Identity of a result: what it is, how it is computed, and what it was computed from."""
    doc = [STORE_FORMAT, node.op, op_version, list(node.params), model_fp, dataset_fp, list(input_keys)]
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class PlannedNode:
    node: Node
    key: str
    views: list[str] = field(default_factory=list)  # ids of the views that need it
    est_bytes: int = 0
    cached: bool = False


def dataset_stages(planned: list[PlannedNode]) -> list[list[PlannedNode]]:
    """Dataset nodes in passes: a node runs after the dataset nodes it reads (depth order);
    everything at one depth is fused into one pass."""
    depth: dict = {}

    def level(node: Node) -> int:
        if node not in depth:
            depth[node] = max([level(i) + 1 for i in node.inputs if i.kind == "dataset"] + [0])
        return depth[node]

    stages: dict[int, list] = {}
    for p in planned:
        stages.setdefault(level(p.node), []).append(p)
    return [stages[d] for d in sorted(stages)]


@dataclass
class Plan:
    """Nodes merged across views, grouped into passes. Built by lensframe.compiler."""

    nodes: dict[Node, PlannedNode]
    models: list[str]

    def of_kind(self, kind: str, model: str | None = None) -> list[PlannedNode]:
        return [p for p in self.nodes.values() if p.node.kind == kind and (model is None or p.node.model == model)]

    def kept(self, model: str | None = None) -> dict[Node, PlannedNode]:
        """The focus nodes the dataset pass keeps for every sample (lensframe.ops.kept_focus), each
        with its planned kept_focus node."""
        return {p.node.inputs[0]: p for p in self.of_kind("dataset", model) if p.node.op == "kept_focus"}

    def passes(self) -> list[dict]:
        """One dataset pass and one focus pass per model, each with the nodes fused into it."""
        out = []
        for m in self.models:
            for stage in dataset_stages(self.of_kind("dataset", m)):
                out.append({"kind": "dataset", "model": m, "nodes": [p.node.label() for p in stage],
                            "cached": all(p.cached for p in stage)})
            nodes = self.of_kind("focus", m)
            if nodes:
                kept = self.kept(m)
                out.append({"kind": "focus", "model": m, "nodes": [p.node.label() for p in nodes], "cached": None,
                            "kept": [p.node.label() for p in nodes if p.node in kept]})
        return out

    def to_json(self) -> dict:
        return {
            "nodes": [{"node": p.node.label(), "op": p.node.op, "kind": p.node.kind, "model": p.node.model,
                       "key": p.key, "views": p.views, "estimated_bytes": p.est_bytes, "cached": p.cached}
                      for p in self.nodes.values()],
            "passes": self.passes(),
        }

    def describe(self) -> str:
        lines = ["nodes:"]
        for p in self.nodes.values():
            state = "cached" if p.cached else {"focus": "computed per focus", "lookup": "on demand"}.get(p.node.kind, "to compute")
            lines.append(f"  {p.node.label():48s} {p.node.kind:8s} {_mb(p.est_bytes):>9s}  {state:18s} "
                         f"views: {', '.join(p.views)}")
        lines.append("passes:")
        for ps in self.passes():
            what = "one forward per batch" if ps["kind"] == "dataset" else "one forward per focused sample"
            done = " (all cached: no forward)" if ps["cached"] else ""
            if ps["kind"] == "focus" and ps["kept"]:
                done = (" (all kept in the store by the dataset pass: no forward once it has run)"
                        if len(ps["kept"]) == len(ps["nodes"]) else
                        f" ({len(ps['kept'])} kept in the store by the dataset pass: {', '.join(ps['kept'])})")
            lines.append(f"  {ps['kind']} pass on {ps['model']}: {what}, fuses {len(ps['nodes'])} computation{'' if len(ps['nodes']) == 1 else 's'}{done}")
        return "\n".join(lines)


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB"
