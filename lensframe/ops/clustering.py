"""Clustering for the text_clusters and neuron_clusters views: pure, seeded numpy/scipy/scikit-learn.

Nothing here touches a model, torch or Panel. Callers hand in arrays that a dataset pass already
reduced (embeddings, or per-topic sums of importance), and get arrays and plain dicts back.

Texts (Zhong et al. 2022, arXiv 2201.12323: their clustering step)
    cluster_texts   centre, PCA to ~50 components dropping the first, k-means with k = round(sqrt(n))
    adjusted_rand   agreement of clusters with the labels (adjusted Rand index)

Neurons by importance, tagged with topics (docs/METHODS.md, "Neuron-importance clustering")
    topic_profile       [neurons, topics] sums over samples -> mean importance per topic
    sample_neurons      important neurons sampled without replacement, probability ~ importance
    normalize_profiles  each row divided by its L1 norm: share of importance per topic
    cluster_neurons     k-means, or agglomerative with cosine distance and average linkage
    tag_clusters        the topic each cluster is most enriched for: effect size + permutation test
    group_enrichment    the same for one group the user picked (a lasso on the map) against the rest
    map_2d              2-D map of the neurons (UMAP when importable, else PCA)
    neuron_clusters     the whole recipe in one call (sample, cluster, tag on held-out half, map)

The permutation test and double dipping
    Shuffling cluster labels (sizes kept) is an exact test of "these profiles do not depend on the
    cluster labels" only when the tested profiles are independent of how the clusters were made.
    Clusters that k-means cut out of the very profiles being tested differ by construction: on pure
    noise they come out "enriched" with tiny p-values. So tag_clusters takes `test_profiles`: the
    same neurons' profiles from held-out samples (fold the importance per topic separately for two
    halves of the samples, e.g. even and odd sample index; topic_profile accepts [neurons, topics, 2]).
    Cluster on one half, tag on the other; a cluster whose shape does not reproduce stays untagged.
    Without test_profiles the test runs in-sample and every result says held_out=False: then the
    p-values are optimistic and an untagged result is not guaranteed for noise.

Choices (justified in the docstrings, checked on planted data in tests/test_clustering.py)
    profiles are L1-normalised (shares of importance per topic); a cluster's effect at a topic is
    (its mean share - the median share over the sampled neurons) / the SD over the sampled neurons;
    tag = the topic of the largest effect, if its Holm-corrected permutation p < alpha.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

__all__ = [
    "adjusted_rand",
    "cluster_neurons",
    "cluster_texts",
    "effect_sizes",
    "group_enrichment",
    "map_2d",
    "neuron_clusters",
    "normalize_profiles",
    "sample_neurons",
    "tag_clusters",
    "topic_profile",
]

_TINY = 1e-12


def _seed(seed) -> int:
    """Seeds are ints; None (a spec that leaves it out) means 0, so results stay reproducible."""
    return 0 if seed is None else int(seed)


# ----------------------------------------------------------------------------------------- texts


def cluster_texts(embeddings, k: int | None = None, n_components: int = 50, drop_first: bool = True,
                  seed: int = 0, standardize: bool = False) -> dict:
    """Cluster text embeddings the way Zhong et al. (2022) do.

    embeddings: [n, d] (e.g. the mean-pooled residual of one layer per sample), n >= 3.
    Steps: centre every feature (and divide it by its std when `standardize`); PCA to
    c = min(n_components, n - 1, d) components; drop the first component when `drop_first` and
    c >= 3 (so at least two remain) -- in residual streams it is mostly a direction shared by all
    texts (position/norm/"massive activation" effects), not what tells texts apart; k-means
    (n_init=10, seeded) on the kept components with k = round(sqrt(n)) unless given, clipped to
    [2, n - 1].

    Returns {"labels": [n] int, "k": int, "coords": [n, 2] float (the first two kept PCA components,
    i.e. the PCA-2 map of the reduced space; zero-padded if fewer than two are kept),
    "explained_variance": [kept] ratio of the total variance each kept component explains,
    "dropped_variance": ratio of the dropped component (0.0 if none), "n_components": kept count,
    "dropped_first": bool}.
    """
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    seed = _seed(seed)
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be [n, d], got shape {x.shape}")
    n, d = x.shape
    if n < 3:
        raise ValueError(f"cluster_texts needs at least 3 texts, got {n}")
    if not np.all(np.isfinite(x)):
        raise ValueError("embeddings contain NaN or inf")
    x = x - x.mean(axis=0)
    if standardize:
        std = x.std(axis=0)
        x = x / np.where(std > _TINY, std, 1.0)
    c = max(1, min(int(n_components), n - 1, d))
    pca = PCA(n_components=c, svd_solver="full", random_state=seed)
    z = pca.fit_transform(x)
    ratios = pca.explained_variance_ratio_
    dropped = bool(drop_first and c >= 3)
    if dropped:
        z, kept_ratios, dropped_ratio = z[:, 1:], ratios[1:], float(ratios[0])
    else:
        kept_ratios, dropped_ratio = ratios, 0.0
    if k is None:
        k = int(round(math.sqrt(n)))
    k = int(min(max(int(k), 2), n - 1))
    km = KMeans(n_clusters=k, n_init=10, random_state=seed)
    labels = km.fit_predict(z).astype(np.int64)
    coords = np.zeros((n, 2))
    coords[:, : min(2, z.shape[1])] = z[:, :2]
    return {
        "labels": labels,
        "k": k,
        "coords": coords,
        "explained_variance": np.asarray(kept_ratios, dtype=np.float64),
        "dropped_variance": dropped_ratio,
        "n_components": int(z.shape[1]),
        "dropped_first": dropped,
    }


def adjusted_rand(labels_true, labels_pred) -> float:
    """Adjusted Rand index of a clustering against labels (any hashables, e.g. topic strings):
    1 for the same partition, about 0 for chance agreement (scikit-learn's adjusted_rand_score)."""
    from sklearn.metrics import adjusted_rand_score

    a = np.asarray([str(v) for v in labels_true])
    b = np.asarray(labels_pred)
    if a.shape != b.shape:
        raise ValueError(f"label arrays differ in length: {a.shape} vs {b.shape}")
    return float(adjusted_rand_score(a, b))


# --------------------------------------------------------------------------------------- neurons


def topic_profile(importance_by_topic, counts_per_topic) -> np.ndarray:
    """Mean importance per topic from per-topic sums.

    importance_by_topic: [neurons, topics] sums over the samples of each topic (what the streaming
    reduction produces); counts_per_topic: [topics] number of samples per topic. Any shapes that
    broadcast work: [neurons, topics, 2] sums with [topics, 2] counts give the two halves' profiles
    for the held-out test (see tag_clusters). A topic with no samples has no evidence and gets 0.
    """
    sums = np.asarray(importance_by_topic, dtype=np.float64)
    counts = np.asarray(counts_per_topic, dtype=np.float64)
    if np.any(counts < 0):
        raise ValueError("counts_per_topic must be >= 0")
    if sums.ndim < 2 or counts.shape != sums.shape[1:]:
        raise ValueError(f"counts shape {counts.shape} does not match sums shape {sums.shape} "
                         "(expected sums [neurons, *counts.shape])")
    out = np.zeros_like(sums)
    np.divide(sums, counts, out=out, where=np.broadcast_to(counts > 0, sums.shape))
    return out


def sample_neurons(total_importance, n: int, seed: int = 0) -> np.ndarray:
    """Pick n neurons without replacement, each draw with probability proportional to importance.

    Why not simply the top n: importance scales differ a lot between layers (later layers' MLPs,
    larger activations), so a hard top-n takes nearly every neuron from a few layers and the
    clusters end up describing layers rather than topics. Proportional sampling still favours the
    most important neurons but keeps some mid-importance ones from everywhere.

    Neurons with zero, negative or non-finite importance are never chosen; n is clipped to the
    number of neurons with positive importance (so all of them are returned when n is larger).
    Implementation: Efraimidis & Spirakis (2006) weighted sampling without replacement -- key
    log(u) / w with u ~ U(0, 1), keep the n largest keys -- which equals drawing one at a time with
    probability proportional to the remaining weights. Seeded (numpy default_rng(seed)).
    Returns int64 neuron indices sorted by importance, most important first (ties by index).
    """
    w = np.asarray(total_importance, dtype=np.float64).reshape(-1)
    ok = np.isfinite(w) & (w > 0)
    idx = np.flatnonzero(ok)
    n = int(min(max(int(n), 0), idx.size))
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    rng = np.random.default_rng(_seed(seed))
    u = rng.random(w.size)[idx]  # one draw per neuron, so a neuron's key does not depend on others
    keys = np.log(np.maximum(u, np.finfo(np.float64).tiny)) / w[idx]
    chosen = idx[np.argsort(-keys, kind="stable")[:n]]
    return chosen[np.lexsort((chosen, -w[chosen]))].astype(np.int64)


def normalize_profiles(profiles) -> np.ndarray:
    """Each row divided by its L1 norm: a neuron's share of importance per topic (zero rows stay 0).

    The choice: we want a neuron's SHAPE across topics, not its overall importance (which mostly
    reflects its layer). Importance is non-negative (|attribution| or mean |activation|), so the L1
    norm turns a row into a distribution over topics: scale-free, readable ("40% of this cluster's
    importance is on food texts"), and every row sums to one, so being enriched at one topic costs
    depletion at others and a generalist neuron sits at 1/topics everywhere instead of looking
    "enriched everywhere" next to spiky specialists (which happens with the L2 norm, where a flat
    unit row has larger coordinates than the average of one-hot rows). Z-scoring rows across topics
    was rejected: it blows a neuron that is about equally important on every topic up into a
    full-size random shape that then lands in, and dilutes, topic clusters. Cosine distance (the
    agglomerative path) ignores row scale anyway, so it sees the same shapes.
    """
    p = np.asarray(profiles, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"profiles must be [neurons, topics], got shape {p.shape}")
    norm = np.abs(p).sum(axis=1, keepdims=True)
    return np.divide(p, norm, out=np.zeros_like(p), where=norm > _TINY)


def _relabel_by_size(labels: np.ndarray) -> np.ndarray:
    """Cluster ids 0..K-1 ordered by size (largest first; ties by first appearance)."""
    uniq, first, counts = np.unique(labels, return_index=True, return_counts=True)
    order = np.lexsort((first, -counts))
    mapping = np.empty(uniq.size, dtype=np.int64)
    mapping[order] = np.arange(uniq.size)
    return mapping[np.searchsorted(uniq, labels)]


def cluster_neurons(profiles, k: int, method: str = "kmeans", seed: int = 0) -> np.ndarray:
    """Cluster neurons by the shape of their topic profiles.

    profiles: [m, topics] (raw means; normalised here with normalize_profiles). k is clipped to
    [1, number of distinct normalised rows]. method "kmeans": k-means (n_init=10, seeded) on the
    normalised rows; "agglomerative": average linkage on cosine distance (1 - cosine similarity;
    a zero row is at distance 1 from everything), deterministic. Returns [m] int64 labels, cluster 0 the largest.
    """
    x = normalize_profiles(profiles)
    m = x.shape[0]
    if m == 0:
        return np.zeros(0, dtype=np.int64)
    k = int(min(max(int(k), 1), len(np.unique(x, axis=0))))  # no more clusters than distinct shapes
    if k == 1:
        return np.zeros(m, dtype=np.int64)
    if method == "kmeans":
        from sklearn.cluster import KMeans

        labels = KMeans(n_clusters=k, n_init=10, random_state=_seed(seed)).fit_predict(x)
    elif method == "agglomerative":
        from sklearn.cluster import AgglomerativeClustering

        norm = np.linalg.norm(x, axis=1, keepdims=True)
        u = np.divide(x, norm, out=np.zeros_like(x), where=norm > _TINY)
        dist = 1.0 - u @ u.T
        np.fill_diagonal(dist, 0.0)
        dist = np.clip((dist + dist.T) / 2, 0.0, 2.0)
        labels = AgglomerativeClustering(n_clusters=k, metric="precomputed", linkage="average").fit_predict(dist)
    else:
        raise ValueError(f"unknown method {method!r}: use 'kmeans' or 'agglomerative'")
    return _relabel_by_size(np.asarray(labels))


def effect_sizes(z, member, reference=None, scale=None) -> np.ndarray:
    """Enrichment of a group of neurons at every topic, in standard deviations.

    z: [m, topics] normalised profiles; member: [..., m] 0/1 masks (a batch of groups).
    For topic t: d_t = (mean of the group at t - reference_t) / s_t.
    reference: [topics]; None means the mean of all m neurons.
    scale: [topics] a fixed standard deviation per topic (tag_clusters passes the SD over all m
    neurons); None means the pooled within-group SD of the group and the rest, Cohen's d
    denominator sqrt((SS_group + SS_rest) / (m - 2)).
    Returns [..., topics]; 0 for a group that is empty or holds every neuron.
    """
    z = np.asarray(z, dtype=np.float64)
    mem = np.asarray(member, dtype=np.float64)
    m = z.shape[0]
    ref = z.mean(axis=0) if reference is None else np.asarray(reference, dtype=np.float64)
    n_c = mem.sum(axis=-1, keepdims=True)
    n_r = m - n_c
    s = mem @ z
    q = mem @ (z * z)
    tot, totq = z.sum(axis=0), (z * z).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_c = s / n_c
        ss_c = np.maximum(q - s * s / n_c, 0.0)
        ss_r = np.maximum((totq - q) - (tot - s) ** 2 / np.maximum(n_r, 1), 0.0)
        sp = np.sqrt((ss_c + ss_r) / max(m - 2, 1)) if scale is None else np.asarray(scale, dtype=np.float64)
        d = (mean_c - ref) / np.maximum(sp, _TINY)
    return np.where((n_c > 0) & (n_r > 0), d, 0.0)


def _adjust(p: np.ndarray, correction: str) -> np.ndarray:
    k = p.size
    if correction == "bonferroni":
        return np.minimum(p * k, 1.0)
    if correction == "none":  # one hypothesis (group_enrichment)
        return p.copy()
    if correction == "holm":
        order = np.argsort(p, kind="stable")
        stepped = np.maximum.accumulate(np.minimum((k - np.arange(k)) * p[order], 1.0))
        out = np.empty(k)
        out[order] = stepped
        return out
    raise ValueError(f"unknown correction {correction!r}: use 'holm', 'bonferroni' or 'none'")


def tag_clusters(profiles, labels, topic_names: Sequence[str], n_perm: int = 1000, alpha: float = 0.05,
                 seed: int = 0, importance=None, test_profiles=None, correction: str = "holm",
                 reference: str = "median", scale: str = "total") -> list[dict]:
    """Tag every cluster with the topic it is most enriched for, or leave it untagged.

    profiles: [m, topics] raw mean profiles (normalised here); labels: [m] cluster ids;
    topic_names: one per topic. Effect of a cluster at topic t (effect_sizes), a standardised
    mean difference in the spirit of Cohen's d:
        d_t = (mean normalised profile of the cluster at t - reference_t) / sd_t
    Statistic: T = max over topics of d_t (one sided: enrichment); its topic is the argmax.
    Defaults (both label-free: every cluster and every shuffle is measured with the same per-topic
    yardstick; the permutation test is exact with either choice):
    - reference "median": the per-topic median over all sampled neurons, the typical neuron
      ("mean": their mean, the textbook choice). A mean is pulled down by spiky specialists at
      every topic they are NOT about: with food/law/science specialists among generalists, every
      generalist cluster beats the mean at love/computers/pets and gets one of those as a tag with
      a tiny p. Against the median it stays untagged (see tests/test_clustering.py).
    - scale "total": sd_t is the standard deviation at t over all sampled neurons (Glass-style, one
      scale per topic for every cluster and every shuffle). "pooled" uses Cohen's pooled
      within-group SD of cluster and rest instead; it shrinks for a large tight cluster and so
      turns tiny absolute differences into large effects.

    Permutation test: the labels are shuffled n_perm times (cluster sizes kept, the
    same shuffles for every cluster) and T is recomputed for the shuffled members of each cluster;
    p = (1 + #{T_perm >= T_obs}) / (1 + n_perm), so p >= 1 / (1 + n_perm). p-values are adjusted
    over clusters (Holm by default, or Bonferroni); a cluster with p_corrected >= alpha (or no
    positive effect) gets tag None. Note: with K clusters nothing can pass unless
    K / (1 + n_perm) < alpha (Holm's smallest step), so keep n_perm >= K / alpha.

    test_profiles: [m, topics] the same neurons' profiles from held-out samples. When given, the
    effects and the test use them (an exact test; see the module docstring on double dipping);
    otherwise `profiles` are tested in-sample and the p-values are optimistic.
    importance: [m] optional; members are then sorted by it, most important first.

    Returns one dict per cluster, by cluster id: {"cluster", "size", "tag" (str or None),
    "best_topic", "effect" (at best_topic), "effects" (list over topics), "p", "p_corrected",
    "members" (row indices into profiles), "held_out" (bool)}.
    """
    names = [str(t) for t in topic_names]
    held_out = test_profiles is not None
    z = normalize_profiles(test_profiles if held_out else profiles)
    if held_out and np.shape(test_profiles) != np.shape(profiles):
        raise ValueError(f"test_profiles shape {np.shape(test_profiles)} differs from "
                         f"profiles {np.shape(profiles)}")
    m, n_topics = z.shape
    if len(names) != n_topics:
        raise ValueError(f"{len(names)} topic names for {n_topics} topics")
    lab = np.asarray(labels).reshape(-1)
    if lab.size != m:
        raise ValueError(f"{lab.size} labels for {m} profiles")
    if m < 3:
        raise ValueError("tag_clusters needs at least 3 neurons")
    n_perm = int(n_perm)
    if n_perm < 1:
        raise ValueError("n_perm must be >= 1")
    if reference == "median":
        ref = np.median(z, axis=0)
    elif reference == "mean":
        ref = z.mean(axis=0)
    else:
        raise ValueError(f"unknown reference {reference!r}: use 'median' or 'mean'")
    if scale == "total":
        sd = z.std(axis=0, ddof=1)
    elif scale == "pooled":
        sd = None
    else:
        raise ValueError(f"unknown scale {scale!r}: use 'total' or 'pooled'")
    clusters = np.unique(lab)
    masks = (lab[None, :] == clusters[:, None]).astype(np.float64)  # [K, m]
    effects = effect_sizes(z, masks, ref, sd)  # [K, topics]
    best = np.argmax(effects, axis=1)
    observed = effects[np.arange(clusters.size), best]

    rng = np.random.default_rng(_seed(seed))
    exceed = np.zeros(clusters.size, dtype=np.int64)
    chunk = 256
    tol = 1e-9 * np.maximum(np.abs(observed), 1.0)
    for start in range(0, n_perm, chunk):
        b = min(chunk, n_perm - start)
        perm = rng.permuted(np.broadcast_to(lab, (b, m)), axis=1)  # each row a shuffle of the labels
        for j, c in enumerate(clusters):
            stat = effect_sizes(z, (perm == c).astype(np.float64), ref, sd).max(axis=1)  # [b]
            exceed[j] += int(np.count_nonzero(stat >= observed[j] - tol[j]))
    p = (1.0 + exceed) / (1.0 + n_perm)
    p_adj = _adjust(p, correction)

    imp = None if importance is None else np.asarray(importance, dtype=np.float64).reshape(-1)
    if imp is not None and imp.size != m:
        raise ValueError(f"{imp.size} importances for {m} profiles")
    out = []
    for j, c in enumerate(clusters):
        members = np.flatnonzero(lab == c)
        if imp is not None:
            members = members[np.lexsort((members, -imp[members]))]
        significant = bool(p_adj[j] < alpha and observed[j] > 0)
        out.append({
            "cluster": int(c),
            "size": int(members.size),
            "tag": names[best[j]] if significant else None,
            "best_topic": names[best[j]],
            "effect": float(observed[j]),
            "effects": [float(v) for v in effects[j]],
            "p": float(p[j]),
            "p_corrected": float(p_adj[j]),
            "members": [int(i) for i in members],
            "held_out": held_out,
        })
    return out


def group_enrichment(profiles, member, topic_names: Sequence[str], n_perm: int = 1000, alpha: float = 0.05,
                     seed: int = 0, test_profiles=None, reference: str = "median", scale: str = "total") -> dict:
    """The topic enrichment of one group of the sampled neurons (a lasso on the neuron map)
    against the rest of them: tag_clusters' statistic and permutation test with two clusters,
    the group (1) and the rest (0), read for the group.

    member: [m] bools over the same rows as profiles. The effect at every topic uses the same
    yardstick as the clusters' tags (median over all m neurons, SD over all m), so a selection
    and a cluster of the same neurons get the same numbers. One group is one hypothesis: its p
    is not corrected (tag_clusters' Holm step would double it for the rest, which nobody asked
    about). With test_profiles the effects and test are on held-out samples, as for the tags;
    the map the group was drawn on shows the fitting half, so picking a group by eye there does
    not bias the held-out test. A group that holds every neuron has no rest: effects 0, p 1.

    Returns {"size", "tag" (the best topic if p < alpha and its effect > 0, else None),
    "best_topic", "effect", "effects" (list over topics), "p", "held_out"}.
    """
    member = np.asarray(member, dtype=bool).reshape(-1)
    if not member.any():
        raise ValueError("the group is empty")
    out = tag_clusters(profiles, member.astype(np.int64), topic_names, n_perm=n_perm, alpha=alpha, seed=seed,
                       test_profiles=test_profiles, correction="none", reference=reference, scale=scale)
    group = next(c for c in out if c["cluster"] == 1)
    return {k: group[k] for k in ("size", "tag", "best_topic", "effect", "effects", "p", "held_out")}


def map_2d(profiles, seed: int = 0, method: str = "auto") -> dict:
    """2-D map of neurons by the shape of their profiles (normalised as for clustering).

    method "auto": UMAP (cosine metric, seeded) when the `umap` package imports, else PCA; "pca"
    or "umap" force one. Returns {"coords": [m, 2] float, "method": "umap" | "pca", "explained":
    the share of the profiles' variance along each axis for PCA (None for UMAP, whose axes have
    no such meaning)}; coordinates are zero-padded when the data have fewer than two dimensions.
    """
    if method not in ("auto", "pca", "umap"):
        raise ValueError(f"unknown method {method!r}: use 'auto', 'pca' or 'umap'")
    seed = _seed(seed)
    x = normalize_profiles(profiles)
    m, t = x.shape
    use_umap = False
    if method != "pca" and m >= 4:
        try:
            import umap  # noqa: F401

            use_umap = True
        except ImportError:
            if method == "umap":
                raise
    coords = np.zeros((m, 2))
    if use_umap:
        import umap

        reducer = umap.UMAP(n_components=2, metric="cosine", random_state=seed,
                            n_neighbors=int(min(15, m - 1)))
        coords[:] = reducer.fit_transform(x)
        return {"coords": coords, "method": "umap", "explained": None}
    c = min(2, m, t)
    explained = [0.0, 0.0]
    if c >= 1 and m >= 2 and x.var(axis=0).sum() > _TINY:
        from sklearn.decomposition import PCA

        pca = PCA(n_components=c, svd_solver="full", random_state=seed)
        coords[:, :c] = pca.fit_transform(x)
        explained[:c] = [float(r) for r in pca.explained_variance_ratio_]
    return {"coords": coords, "method": "pca", "explained": explained}


def neuron_clusters(importance_by_topic, counts_per_topic, topic_names: Sequence[str],
                    n_neurons: int | None = 300, k: int | None = 8, method: str | None = "kmeans",
                    n_perm: int | None = 1000, alpha: float = 0.05, seed: int | None = 0,
                    reference: str = "median", scale: str = "total") -> dict:
    """The whole neuron recipe: sample, cluster, tag, map.

    importance_by_topic: [neurons, topics] sums, or [neurons, topics, 2] sums over two disjoint
    halves of the samples with counts_per_topic [topics, 2]. With halves, the neurons are sampled
    by their total importance, clustered (and mapped) on the first half's profiles and tagged on
    the second's, which makes the permutation test exact; with one matrix everything is in-sample
    (held_out False in the clusters). Returns {"neurons": [m] sampled neuron indices (most important
    first), "labels": [m] cluster per sampled neuron, "clusters": tag_clusters' dicts with "members"
    as neuron indices, "coords": [m, 2], "map_method", "map_explained" (map_2d's "explained"),
    "held_out"}.
    None for n_neurons, k, method, n_perm or seed (a spec that leaves them out) means 300,
    round(sqrt(m)), "kmeans", 1000 and 0.
    """
    n_neurons = 300 if n_neurons is None else n_neurons
    method = method or "kmeans"
    n_perm = 1000 if n_perm is None else n_perm
    seed = _seed(seed)
    sums = np.asarray(importance_by_topic, dtype=np.float64)
    counts = np.asarray(counts_per_topic, dtype=np.float64)
    if sums.ndim == 3:
        if sums.shape[2] != 2 or counts.shape != sums.shape[1:]:
            raise ValueError("halves need sums [neurons, topics, 2] and counts [topics, 2]")
        prof = topic_profile(sums, counts)
        fit, test = prof[:, :, 0], prof[:, :, 1]
    else:
        fit = topic_profile(sums, counts)
        test = None
    total = sums.reshape(sums.shape[0], -1).sum(axis=1)  # importance summed over every sample
    chosen = sample_neurons(total, n_neurons, seed=seed)
    if k is None:
        k = int(round(math.sqrt(max(len(chosen), 1))))
    labels = cluster_neurons(fit[chosen], k, method=method, seed=seed)
    tags = tag_clusters(fit[chosen], labels, topic_names, n_perm=n_perm, alpha=alpha, seed=seed,
                        importance=total[chosen], test_profiles=None if test is None else test[chosen],
                        reference=reference, scale=scale)
    for t in tags:
        t["members"] = [int(chosen[i]) for i in t["members"]]
    mp = map_2d(fit[chosen], seed=seed)
    return {"neurons": chosen, "labels": labels, "clusters": tags, "coords": mp["coords"],
            "map_method": mp["method"], "map_explained": mp["explained"], "held_out": test is not None}
