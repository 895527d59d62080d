"""Clusters and group descriptions as graph nodes (issue 4), on top of the pure functions in
lensframe.ops.clustering (the algorithms) and lensframe.ops.describe (what separates two groups).

  text_clusters    derive  Zhong et al. 2022: the text embeddings -> PCA (first component dropped)
                           -> k-means; a 2-D map; agreement with the labels (adjusted Rand index)
  neuron_clusters  derive  neurons sampled by importance, clustered by their topic profiles, tagged
                           with a topic (effect size, permutation p-value) or left untagged
  describe         lookup  two groups of texts (a cluster, the rest, a label): distinguishing words
                           and bigrams (weighted log-odds, z), representative texts, separability
"""
from __future__ import annotations

import numpy as np

from . import register
from .base import Op, Result


@register
class TextClustersOp(Op):
    name = "text_clusters"
    kind = "derive"

    def compute(self, node, ctx):
        from .clustering import adjusted_rand, cluster_texts

        (emb_node,) = node.inputs
        out = cluster_texts(ctx.inputs[emb_node]["embedding"], k=node.param("k"), seed=node.param("seed"))
        labels = ctx.dataset.labels
        ari = adjusted_rand(list(labels), out["labels"]) if labels else None
        return Result({"labels": out["labels"].astype(np.int32), "coords": out["coords"].astype(np.float32)},
                      {"k": int(out["k"]), "ari": ari, "n_components": int(out["n_components"]),
                       "dropped_first": bool(out["dropped_first"])})


@register
class NeuronClustersOp(Op):
    name = "neuron_clusters"
    kind = "derive"

    def compute(self, node, ctx):
        from .clustering import neuron_clusters

        (imp_node,) = node.inputs
        imp = ctx.inputs[imp_node]
        out = neuron_clusters(imp["sums"], imp["counts"], imp.meta["topics"], n_neurons=node.param("n_neurons"),
                              k=node.param("k"), method=node.param("method"), n_perm=node.param("n_perm"),
                              seed=node.param("seed"))
        d = imp.meta["d_mlp"]
        layers = imp.meta["layers"]
        clusters = [{**{k: _plain(v) for k, v in c.items()},
                     "members": [[layers[m // d], m % d] for m in c["members"]]} for c in out["clusters"]]
        neurons = np.asarray(out["neurons"])
        return Result({"layer": np.array([layers[n // d] for n in neurons], dtype=np.int32),
                       "neuron": (neurons % d).astype(np.int32), "cluster": np.asarray(out["labels"], dtype=np.int32),
                       "coords": np.asarray(out["coords"], dtype=np.float32)},
                      {"clusters": clusters, "topics": imp.meta["topics"], "method": imp.meta["method"],
                       "map_method": out["map_method"], "held_out": bool(out["held_out"])})


def _plain(v):
    """JSON-safe values for the store's metadata."""
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


@register
class DescribeOp(Op):
    name = "describe"
    kind = "lookup"

    def lookup(self, node, executor, a: tuple, b: tuple) -> Result:
        """a, b: ("cluster", c), ("label", name) or ("rest", c) = every text not in cluster c."""
        from .describe import describe_groups

        texts = executor.board.dataset.texts
        ia, ib = _members(executor, node, a), _members(executor, node, b)
        out = describe_groups([texts[i] for i in ia], [texts[i] for i in ib], prior_texts=list(texts), seed=0)
        sep = out["separability"]
        return Result({"a": np.asarray(ia, dtype=np.int32), "b": np.asarray(ib, dtype=np.int32)},
                      {"terms": _plain(out["terms"]), "accuracy": sep["accuracy"], "balanced_accuracy": sep.get("balanced_accuracy"),
                       "reason": sep.get("reason"), "folds": sep.get("folds"),
                       "representative_a": [[int(ia[i]), float(p)] for i, p in sep.get("representative_a", [])],
                       "representative_b": [[int(ib[i]), float(p)] for i, p in sep.get("representative_b", [])]})


def _members(executor, node, group: tuple) -> list[int]:
    kind, value = group
    if kind == "label":
        return [i for i, l in enumerate(executor.board.dataset.labels or []) if l == value]
    labels = executor.board.result(node.inputs[0])["labels"]
    return [int(i) for i in np.flatnonzero(labels == value if kind == "cluster" else labels != value)]
