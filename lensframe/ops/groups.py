"""Clusters and group descriptions as graph nodes (issue 4), on top of the pure functions in
lensframe.ops.clustering (the algorithms) and lensframe.ops.describe (what separates two groups).

  text_clusters    derive  Zhong et al. 2022: the text embeddings -> PCA (first component dropped)
                           -> k-means; a 2-D map; agreement with the labels (adjusted Rand index)
  neuron_clusters  derive  neurons sampled by importance, clustered by their topic profiles, tagged
                           with a topic (effect size, permutation p-value) or left untagged
  describe         lookup  two groups of texts (a cluster, the rest, a label, a selection of texts):
                           distinguishing words and bigrams (weighted log-odds, z), representative
                           texts, separability (balanced accuracy, tested against chance)
  neuron_enrichment lookup the topic enrichment of a selection of the mapped neurons (a lasso on
                           the neuron map), by the same statistic and held-out test as the tags
"""
from __future__ import annotations

import numpy as np

from . import register
from .base import Op, Result


@register
class TextClustersOp(Op):
    name = "text_clusters"
    version = 2  # 2: the map's axes in the meta (which principal components, their variance)
    kind = "derive"

    def compute(self, node, ctx):
        from .clustering import adjusted_rand, cluster_texts

        (emb_node,) = node.inputs
        out = cluster_texts(ctx.inputs[emb_node]["embedding"], k=node.param("k"), seed=node.param("seed"))
        labels = ctx.dataset.labels
        ari = adjusted_rand(list(labels), out["labels"]) if labels else None
        return Result({"labels": out["labels"].astype(np.int32), "coords": out["coords"].astype(np.float32)},
                      {"k": int(out["k"]), "ari": ari, "n_components": int(out["n_components"]),
                       "dropped_first": bool(out["dropped_first"]),
                       # the map shows the first two kept components: PCs 2 and 3 when the first is dropped
                       "map_components": [2, 3] if out["dropped_first"] else [1, 2],
                       "map_variance": [float(v) for v in list(out["explained_variance"][:2]) + [0.0] * 2][:2],
                       "dropped_variance": float(out["dropped_variance"])})


@register
class NeuronClustersOp(Op):
    name = "neuron_clusters"
    version = 2  # 2: the map's explained variance in the meta
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
                       "map_method": out["map_method"], "map_explained": out["map_explained"],
                       "held_out": bool(out["held_out"])})


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
        """a, b: ("cluster", c), ("label", name), ("rest", c) = every text not in cluster c,
        ("texts", (i, ...)) = those samples (a selection on the map), ("other", (i, ...)) = every
        sample but those."""
        from .describe import describe_groups

        texts = executor.board.dataset.texts
        ia, ib = _members(executor, node, a), _members(executor, node, b)
        out = describe_groups([texts[i] for i in ia], [texts[i] for i in ib], prior_texts=list(texts), seed=0)
        sep = out["separability"]
        keep = ("accuracy", "balanced_accuracy", "chance", "p_chance", "above_chance", "fold_balanced",
                "balanced_sd", "reason", "folds")
        return Result({"a": np.asarray(ia, dtype=np.int32), "b": np.asarray(ib, dtype=np.int32)},
                      {"terms": _plain(out["terms"]), **{k: _plain(sep.get(k)) for k in keep},
                       "representative_a": [[int(ia[i]), float(p)] for i, p in sep.get("representative_a", [])],
                       "representative_b": [[int(ib[i]), float(p)] for i, p in sep.get("representative_b", [])]})


def _members(executor, node, group: tuple) -> list[int]:
    kind, value = group
    if kind == "label":
        return [i for i, l in enumerate(executor.board.dataset.labels or []) if l == value]
    if kind in ("texts", "other"):
        n = len(executor.board.dataset)
        chosen = {int(i) for i in value if 0 <= int(i) < n}
        return sorted(chosen) if kind == "texts" else [i for i in range(n) if i not in chosen]
    labels = executor.board.result(node.inputs[0])["labels"]
    return [int(i) for i in np.flatnonzero(labels == value if kind == "cluster" else labels != value)]


@register
class NeuronEnrichmentOp(Op):
    name = "neuron_enrichment"
    kind = "lookup"

    def lookup(self, node, executor, neurons: tuple) -> Result:
        """neurons: ((layer, index), ...), a selection of the neuron_clusters node's mapped
        neurons. Neurons not on the map are reported in meta["missing"] and left out: the test
        compares the selection with the rest of the mapped neurons, so only those can be in it."""
        from .clustering import group_enrichment, topic_profile

        (clusters_node,) = node.inputs
        (imp_node,) = clusters_node.inputs
        imp, mapped = executor.board.result(imp_node), executor.board.result(clusters_node)
        d, layers = imp.meta["d_mlp"], imp.meta["layers"]
        rows = np.array([layers.index(int(l)) * d + int(n) for l, n in zip(mapped["layer"], mapped["neuron"])])
        on_map = {(int(l), int(n)): j for j, (l, n) in enumerate(zip(mapped["layer"], mapped["neuron"]))}
        wanted = list(dict.fromkeys((int(l), int(n)) for l, n in neurons))
        member = np.zeros(len(rows), dtype=bool)
        member[[on_map[x] for x in wanted if x in on_map]] = True
        missing = [list(x) for x in wanted if x not in on_map]
        meta = {"topics": list(imp.meta["topics"]), "selected": int(member.sum()), "mapped": len(rows),
                "missing": missing, "n_perm": int(clusters_node.param("n_perm") or 1000)}
        if not member.any():
            return Result({}, {**meta, "reason": "none of the selected neurons is on the map"})
        sums, counts = imp["sums"], imp["counts"]
        prof = topic_profile(sums, counts)
        fit, test = (prof[:, :, 0], prof[:, :, 1]) if sums.ndim == 3 else (prof, None)
        out = group_enrichment(fit[rows], member, imp.meta["topics"], n_perm=meta["n_perm"],
                               seed=clusters_node.param("seed") or 0, test_profiles=None if test is None else test[rows])
        return Result({"member": member}, {**meta, **_plain(out), "reason": None})
