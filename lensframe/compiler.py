"""Compile a validated spec into a Plan: every view's needs, merged into shared nodes.

Identical nodes from different views collapse into one (Nodes are frozen and hashable); each gets
a store key from its description, its op's version and the model's and dataset's fingerprints.
"""
from __future__ import annotations

from .graph import Node, Plan, PlannedNode, node_key
from .ops import get_op


def compile_plan(views: dict, model_fps: dict[str, str], dataset_fp: str, infos: dict, n_samples: int,
                 max_tokens: int, store=None, keep_focus_bytes: int = 0) -> Plan:
    """keep_focus_bytes: focus nodes whose results for every sample fit this budget (smallest
    first) are also kept in the store by the dataset pass (lensframe.ops.kept_focus), so a focus
    change reads them instead of running a forward."""
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
    budget = keep_focus_bytes
    for focus in sorted((p for p in list(nodes.values()) if keepable(p.node, infos)), key=lambda p: p.est_bytes):
        kept = Node.make("kept_focus", focus.node.model, inputs=(focus.node,))
        size = get_op("kept_focus").estimate_bytes(kept, infos[focus.node.model], n_samples, max_tokens)
        if size <= budget:
            budget -= size
            add(kept).views.extend(focus.views)
    if store is not None:
        for p in nodes.values():
            p.cached = store.has(p.key)
    models = sorted({n.model for n in nodes if n.model is not None})
    return Plan(nodes, models)


def keepable(node: Node, infos: dict) -> bool:
    """A focus node the dataset pass can compute for every sample: its op reads activations only
    (no gradients: the pass would need a backward for it)."""
    if node.kind != "focus":
        return False
    op = get_op(node.op)
    return bool(op.hooks(node, infos[node.model])) and not op.grad_hooks(node, infos[node.model])
