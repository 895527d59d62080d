"""lensframe.ops.clustering on synthetic data with known answers (pure numpy; no model, fast)."""
from __future__ import annotations

import numpy as np
import pytest

from lensframe.ops import clustering as C

TOPICS = ["food", "law", "science", "love", "computers", "pets"]
PLANTED = {"food": 0, "law": 1, "science": 2}  # group -> topic index
N_PERM = 200


# ----------------------------------------------------------------------------------------- texts


def planted_texts(seed, n_blobs=8, per=8, d=64, shared=40.0, spread=2.0):
    """Gaussian blobs in 64-d plus a large shared random direction (the first PC, to be dropped)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, spread, (n_blobs, d))
    y = np.repeat(np.arange(n_blobs), per)
    x = centers[y] + rng.normal(0, 1, (y.size, d))
    u = rng.normal(size=d)
    u /= np.linalg.norm(u)
    x += rng.normal(0, shared, (y.size, 1)) * u
    return x, np.array([f"topic{i}" for i in y])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_planted_text_clusters_recovered(seed):
    x, names = planted_texts(seed)  # n = 64 -> k = round(sqrt(64)) = 8 = the planted blobs
    res = C.cluster_texts(x, seed=seed)
    assert res["k"] == 8 and res["dropped_first"]
    assert res["labels"].shape == (64,) and res["coords"].shape == (64, 2)
    assert res["n_components"] == 49 and res["explained_variance"].shape == (49,)  # min(50, 63, 64) - 1
    assert res["dropped_variance"] > 0.5  # the shared direction dominated and was dropped
    assert C.adjusted_rand(names, res["labels"]) > 0.9
    # keeping the shared direction lets k-means cut along it instead of between the blobs
    assert C.adjusted_rand(names, C.cluster_texts(x, drop_first=False, seed=seed)["labels"]) < 0.5
    again = C.cluster_texts(x, seed=seed)
    assert np.array_equal(again["labels"], res["labels"]) and np.allclose(again["coords"], res["coords"])


def test_text_k_default_and_clipping():
    rng = np.random.default_rng(0)
    assert C.cluster_texts(rng.normal(size=(30, 5)))["k"] == 5  # round(sqrt(30)) = 5
    assert C.cluster_texts(rng.normal(size=(3, 5)))["k"] == 2  # round(sqrt(3)) = 2, n - 1 = 2
    assert C.cluster_texts(rng.normal(size=(5, 5)), k=10)["k"] == 4  # clipped to n - 1
    assert C.cluster_texts(rng.normal(size=(5, 5)), k=1)["k"] == 2  # clipped to 2
    small = C.cluster_texts(rng.normal(size=(6, 2)))  # 2 components: nothing dropped
    assert not small["dropped_first"] and small["n_components"] == 2
    with pytest.raises(ValueError):
        C.cluster_texts(rng.normal(size=(2, 5)))


def test_adjusted_rand_takes_strings():
    assert C.adjusted_rand(["a", "a", "b", "b"], [1, 1, 0, 0]) == pytest.approx(1.0)
    assert C.adjusted_rand(["a", "b", "a", "b"], [0, 0, 1, 1]) < 0


# --------------------------------------------------------------------------------------- neurons


def planted_importance(seed, planted=True, n_bg=200, per=20, per_topic=40, strength=20.0, confound=None):
    """Per-sample importance of 200 background neurons (noisy, no topic preference) and, when
    planted, 3 groups of 20 that fire only on food / law / science samples; folded per topic for two
    halves of the samples (even / odd). confound: [topics] factors applied to every neuron (a topic
    effect that is not about neurons, e.g. longer texts). Returns sums [N, T, 2], counts [T, 2],
    truth [N] (topic index of the planted group, -1 for background)."""
    rng = np.random.default_rng(seed)
    n_topics = len(TOPICS)
    topic = np.repeat(np.arange(n_topics), per_topic)
    half = np.arange(topic.size) % 2
    groups = list(PLANTED.values()) if planted else []
    n = n_bg + per * len(groups)
    imp = rng.lognormal(0, 0.7, (n, 1)) * rng.lognormal(0, 0.5, (n, topic.size))
    truth = np.full(n, -1)
    for g, t in enumerate(groups):
        rows = np.arange(n_bg + g * per, n_bg + (g + 1) * per)
        truth[rows] = t
        imp[rows] *= np.where(topic == t, strength, 0.05)[None, :]
    if confound is not None:
        imp *= np.asarray(confound)[topic][None, :]
    sums = np.zeros((n, n_topics, 2))
    counts = np.zeros((n_topics, 2))
    for t in range(n_topics):
        for h in range(2):
            sel = (topic == t) & (half == h)
            sums[:, t, h] = imp[:, sel].sum(axis=1)
            counts[t, h] = sel.sum()
    return sums, counts, truth


def check_planted(res, truth):
    by_cluster = {c["cluster"]: c for c in res["clusters"]}
    planted_clusters = set()
    for name, t in PLANTED.items():
        sampled = [i for i in res["neurons"] if truth[i] == t]
        assert len(sampled) >= 8
        where = [res["labels"][list(res["neurons"]).index(i)] for i in sampled]
        modal = max(set(where), key=where.count)
        assert where.count(modal) / len(where) > 0.9  # the group lands in one cluster
        cl = by_cluster[int(modal)]
        assert np.mean(truth[cl["members"]] == t) > 0.9  # and that cluster is the group
        assert cl["tag"] == name and cl["best_topic"] == name
        assert cl["p_corrected"] < 0.05 and cl["effect"] > 2
        planted_clusters.add(int(modal))
    assert len(planted_clusters) == 3
    background = [c for c in res["clusters"] if np.all(truth[c["members"]] == -1)]
    assert background
    return background


CONFOUND = [1.3, 1.0, 1.0, 0.7, 1.6, 1.0]


@pytest.mark.parametrize("method", ["kmeans", "agglomerative"])
@pytest.mark.parametrize("seed,confound", [(0, None), (1, None), (2, CONFOUND)])
def test_planted_neuron_groups_found_and_tagged(method, seed, confound):
    sums, counts, truth = planted_importance(seed, confound=confound)
    res = C.neuron_clusters(sums, counts, TOPICS, n_neurons=120, k=6, method=method, n_perm=N_PERM,
                            seed=seed)
    assert res["held_out"] and res["map_method"] in ("pca", "umap")
    assert res["coords"].shape == (len(res["neurons"]), 2)
    background = check_planted(res, truth)
    # clusters of background neurons have no topic: untagged, not given a random one
    assert all(c["tag"] is None for c in background)
    for c in res["clusters"]:
        assert c["p"] >= 1 / (1 + N_PERM) and c["p_corrected"] >= c["p"]
        assert c["held_out"] is True and len(c["effects"]) == len(TOPICS)
        imp = sums.sum(axis=(1, 2))[c["members"]]
        assert np.all(np.diff(imp) <= 0)  # members sorted by importance


def test_functions_compose_like_the_pipeline():
    sums, counts, truth = planted_importance(3)
    prof = C.topic_profile(sums, counts)  # [N, T, 2]
    fit, test = prof[..., 0], prof[..., 1]
    total = sums.sum(axis=(1, 2))
    chosen = C.sample_neurons(total, 120, seed=3)
    labels = C.cluster_neurons(fit[chosen], 6, method="kmeans", seed=3)
    tags = C.tag_clusters(fit[chosen], labels, TOPICS, n_perm=N_PERM, seed=3, importance=total[chosen],
                          test_profiles=test[chosen])
    for t in tags:
        t["members"] = [int(chosen[i]) for i in t["members"]]
    check_planted({"neurons": chosen, "labels": labels, "clusters": tags}, truth)


@pytest.mark.parametrize("method", ["kmeans", "agglomerative"])
def test_pure_noise_leaves_clusters_untagged(method):
    tags = []
    for seed in range(6):
        sums, counts, _ = planted_importance(seed, planted=False, confound=CONFOUND if seed % 2 else None)
        res = C.neuron_clusters(sums, counts, TOPICS, n_neurons=120, k=6, method=method, n_perm=N_PERM,
                                seed=seed)
        tags += [c["tag"] for c in res["clusters"]]
    assert sum(t is None for t in tags) / len(tags) >= 0.9


def test_in_sample_tagging_is_optimistic_on_noise():
    """Why tag on held-out halves: clusters cut out of the very profiles being tested differ by
    construction, so in-sample the permutation test 'finds' topics in pure noise."""
    sums, counts, _ = planted_importance(0, planted=False)
    res = C.neuron_clusters(sums.sum(axis=2), counts.sum(axis=1), TOPICS, n_neurons=120, k=6,
                            n_perm=N_PERM, seed=0)
    assert not res["held_out"] and all(c["held_out"] is False for c in res["clusters"])
    assert sum(c["tag"] is not None for c in res["clusters"]) >= 3


def test_median_reference_keeps_generalists_untagged():
    """Specialists for only food/law/science pull the MEAN down at the other topics, so against the
    mean every background cluster looks enriched for one of those; against the median it does not."""
    sums, counts, truth = planted_importance(0)
    med = C.neuron_clusters(sums, counts, TOPICS, n_neurons=120, k=6, n_perm=N_PERM, seed=0)
    mean = C.neuron_clusters(sums, counts, TOPICS, n_neurons=120, k=6, n_perm=N_PERM, seed=0,
                             reference="mean")
    bg_med = [c["tag"] for c in med["clusters"] if np.all(truth[c["members"]] == -1)]
    bg_mean = [c["tag"] for c in mean["clusters"] if np.all(truth[c["members"]] == -1)]
    assert all(t is None for t in bg_med)
    assert all(t in ("love", "computers", "pets") for t in bg_mean)


def test_permutation_p_is_bounded_and_deterministic():
    sums, counts, _ = planted_importance(1)
    prof = C.topic_profile(sums, counts)
    chosen = C.sample_neurons(sums.sum(axis=(1, 2)), 120, seed=1)
    labels = C.cluster_neurons(prof[chosen, :, 0], 6, seed=1)

    def run(seed, n_perm=N_PERM):
        return C.tag_clusters(prof[chosen, :, 0], labels, TOPICS, n_perm=n_perm, seed=seed,
                              test_profiles=prof[chosen, :, 1])

    a, b = run(7), run(7)
    assert a == b
    assert min(c["p"] for c in a) == pytest.approx(1 / (1 + N_PERM))  # planted clusters: never beaten
    assert all(c["p"] >= 1 / (1 + N_PERM) for c in a)
    # with too few permutations for 6 clusters nothing can pass Holm at 0.05 (6 / 51 > 0.05)
    assert all(c["tag"] is None for c in run(7, n_perm=50))
    bonf = C.tag_clusters(prof[chosen, :, 0], labels, TOPICS, n_perm=N_PERM, seed=7,
                          test_profiles=prof[chosen, :, 1], correction="bonferroni")
    for h, bo in zip(a, bonf):
        assert bo["p"] == h["p"] and bo["p_corrected"] >= h["p_corrected"]


# -------------------------------------------------------------------------------------- sampling


def test_sampling_skips_zero_importance_and_is_stable():
    rng = np.random.default_rng(0)
    w = rng.lognormal(0, 1, 300)
    w[rng.choice(300, 100, replace=False)] = 0.0
    w[:3] = [np.nan, -1.0, np.inf]
    positive = np.flatnonzero(np.isfinite(w) & (w > 0))
    for seed in range(50):
        idx = C.sample_neurons(w, 80, seed=seed)
        assert len(idx) == 80 == len(set(idx.tolist()))  # without replacement
        assert np.all(np.isin(idx, positive))  # zero / invalid importance never chosen
        assert np.all(np.diff(w[idx]) <= 0)  # most important first
    assert np.array_equal(C.sample_neurons(w, 80, seed=5), C.sample_neurons(w, 80, seed=5))
    assert not np.array_equal(C.sample_neurons(w, 80, seed=5), C.sample_neurons(w, 80, seed=6))
    everything = C.sample_neurons(w, 10_000, seed=0)  # n clipped to the positive ones
    assert sorted(everything.tolist()) == positive.tolist()
    assert C.sample_neurons(np.zeros(5), 3).size == 0


def test_sampling_is_proportional_to_importance():
    w = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    first = np.bincount([C.sample_neurons(w, 1, seed=s)[0] for s in range(4000)], minlength=5) / 4000
    assert first[0] == 0
    assert np.allclose(first[1:], w[1:] / w.sum(), atol=0.03)
    # without replacement it still reaches mid-importance neurons, unlike a hard top-n
    w = np.concatenate([np.full(20, 10.0), np.full(80, 1.0)])
    idx = C.sample_neurons(w, 20, seed=0)
    assert 0 < np.sum(idx >= 20) < 20


# ------------------------------------------------------------------------------------ the pieces


def test_topic_profile_means_and_halves():
    sums = np.array([[10.0, 0.0, 6.0], [4.0, 2.0, 0.0]])
    counts = np.array([5, 0, 3])
    assert np.allclose(C.topic_profile(sums, counts), [[2.0, 0.0, 2.0], [0.8, 0.0, 0.0]])  # empty topic -> 0
    halves = np.stack([sums, 2 * sums], axis=2)
    both = C.topic_profile(halves, np.stack([counts, counts], axis=1))
    assert both.shape == (2, 3, 2) and np.allclose(both[..., 1], 2 * both[..., 0])
    with pytest.raises(ValueError):
        C.topic_profile(sums, [1, 2])


def test_normalised_profiles_are_shapes():
    p = np.array([[1.0, 1.0, 2.0], [10.0, 10.0, 20.0], [0.0, 0.0, 0.0]])
    z = C.normalize_profiles(p)
    assert np.allclose(z[0], z[1]) and np.allclose(z[0].sum(), 1.0) and np.all(z[2] == 0)


def test_cluster_ids_by_size_and_k_clipped():
    x = np.array([[1.0, 0, 0]] * 5 + [[0, 1.0, 0]] * 3 + [[0, 0, 1.0]] * 2)
    for method in ("kmeans", "agglomerative"):
        labels = C.cluster_neurons(x, 3, method=method)
        assert labels.tolist() == [0] * 5 + [1] * 3 + [2] * 2
    assert C.cluster_neurons(x, 1).tolist() == [0] * 10
    assert C.cluster_neurons(x[[0, 5]], 5).tolist() == [0, 1]  # k clipped to the distinct shapes
    assert C.cluster_neurons(x[:3], 2).tolist() == [0, 0, 0]
    with pytest.raises(ValueError):
        C.cluster_neurons(x, 2, method="spectral")


def test_map_2d_says_which():
    rng = np.random.default_rng(0)
    res = C.map_2d(rng.random((30, 6)), seed=0)
    assert res["coords"].shape == (30, 2) and res["method"] in ("pca", "umap")
    forced = C.map_2d(rng.random((30, 6)), method="pca")
    assert forced["method"] == "pca"
    try:
        import umap  # noqa: F401
    except ImportError:
        assert res["method"] == "pca"
    assert C.map_2d(rng.random((5, 1)))["coords"][:, 1].tolist() == [0.0] * 5


def test_pipeline_defaults_for_missing_spec_params():
    sums, counts, _ = planted_importance(0, n_bg=40, per=5)
    a = C.neuron_clusters(sums, counts, TOPICS, n_neurons=None, k=None, method=None, n_perm=None, seed=None)
    b = C.neuron_clusters(sums, counts, TOPICS, n_neurons=300, k=7, method="kmeans", n_perm=1000, seed=0)
    assert np.array_equal(a["labels"], b["labels"]) and a["clusters"] == b["clusters"]
    assert len(a["neurons"]) == 55 and a["labels"].max() == 6  # all 55 positive neurons; k = round(sqrt(55))


def test_group_enrichment_of_a_picked_group():
    """A group picked by hand (what a lasso on the map gives): the planted food neurons are enriched
    for food on held-out profiles, with the effects of tag_clusters' yardstick recomputed here; a
    group of background neurons is not; the whole map has no rest to compare with."""
    sums, counts, truth = planted_importance(0)
    prof = C.topic_profile(sums, counts)
    fit, test = prof[:, :, 0], prof[:, :, 1]
    food = TOPICS.index("food")
    member = truth == food
    res = C.group_enrichment(fit, member, TOPICS, n_perm=N_PERM, seed=0, test_profiles=test)
    z = test / test.sum(axis=1, keepdims=True)
    want = (z[member].mean(0) - np.median(z, 0)) / z.std(0, ddof=1)
    np.testing.assert_allclose(res["effects"], want, rtol=1e-9)
    assert res["tag"] == "food" and res["best_topic"] == "food" and res["size"] == member.sum()
    assert res["p"] == 1 / (1 + N_PERM) and res["held_out"] is True  # no shuffle comes near
    background = np.zeros(len(truth), dtype=bool)
    background[np.flatnonzero(truth == -1)[:25]] = True
    res = C.group_enrichment(fit, background, TOPICS, n_perm=N_PERM, seed=0, test_profiles=test)
    assert res["tag"] is None and res["p"] > 0.05
    everything = C.group_enrichment(fit, np.ones(len(truth), bool), TOPICS, n_perm=50, seed=0, test_profiles=test)
    assert everything["p"] == 1.0 and everything["tag"] is None and max(everything["effects"]) == 0
    with pytest.raises(ValueError):
        C.group_enrichment(fit, np.zeros(len(truth), bool), TOPICS)


def test_map_2d_says_how_much_variance_its_axes_show():
    rng = np.random.default_rng(2)
    x = rng.random((40, 6))
    res = C.map_2d(x, method="pca")
    from sklearn.decomposition import PCA

    want = PCA(n_components=2, svd_solver="full").fit(C.normalize_profiles(x)).explained_variance_ratio_
    np.testing.assert_allclose(res["explained"], want, rtol=1e-9)
    assert res["explained"][0] >= res["explained"][1] > 0
