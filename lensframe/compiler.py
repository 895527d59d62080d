"""Compile a validated spec into a Plan: every view's needs, merged into shared nodes.

Identical nodes from different views collapse into one (Nodes are frozen and hashable); each gets
a store key from its description, its op's version and the model's and dataset's fingerprints.
"""
from __future__ import annotations

from .graph import Node, Plan, PlannedNode, node_key
from .ops import get_op


def compile_plan(views: dict, model_fps: dict[str, str], dataset_fp: str, infos: dict, n_samples: int,
                 max_tokens: int, store=None) -> Plan:
    nodes: dict[Node, PlannedNode] = {}

    def add(node: Node) -> PlannedNode:
        if node not in nodes:
            input_keys = [add(i).key for i in node.inputs]  # inputs first: a key covers its inputs
            op = get_op(node.op)
            fp = model_fps.get(node.model)
            if node.param("other") is not None:  # a comparison depends on both models
                fp = f"{fp}+{model_fps.get(node.param('other'))}"
            key = node_key(node, fp, dataset_fp, op.version, input_keys)
            est = op.estimate_bytes(node, infos[node.model], n_samples, max_tokens)
            nodes[node] = PlannedNode(node, key, est_bytes=est)
        return nodes[node]

    for view in views.values():
        for node in view.needs(max_tokens):
            planned = add(node)
            if view.id not in planned.views:
                planned.views.append(view.id)
    if store is not None:
        for p in nodes.values():
            p.cached = store.has(p.key)
    models = sorted({n.model for n in nodes if n.model is not None})
    return Plan(nodes, models)
