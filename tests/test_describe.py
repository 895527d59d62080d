"""lensframe.ops.describe on planted groups whose answer is known, a hand-computed z, and degenerate inputs."""
from __future__ import annotations

import math

import numpy as np
import pytest

from lensframe.ops.describe import (
    DescribeError,
    describe_groups,
    log_odds,
    ngrams,
    separability,
    tokenize_words,
)

FILLER = ("the a of and to in it was is that on for with as at by this we they he she you day time "
          "people way thing place work home hand night year").split()
A_WORDS = ["coffee", "espresso beans", "latte", "roast"]
B_WORDS = ["rain", "umbrella", "storm", "puddle"]


def _filler(rng, n):
    return list(rng.choice(FILLER, size=n))


def _text(rng, planted, n_filler=12):
    """Filler words with the planted phrases inserted at random places."""
    words = _filler(rng, n_filler)
    for phrase in planted:
        words.insert(int(rng.integers(0, len(words) + 1)), phrase)
    return " ".join(words)


def _planted(seed=0, n_strong=60, n_weak=20, n_b=80):
    """Group A: n_strong texts with two A words (always one "espresso beans"), then n_weak pure filler texts
    of the same length; group B: n_b texts with two B words. Same token share of planted words on each side."""
    rng = np.random.default_rng(seed)
    a = [_text(rng, ["espresso beans", str(rng.choice(A_WORDS[:1] + A_WORDS[2:]))]) for _ in range(n_strong)]
    a += [_text(rng, [], n_filler=15) for _ in range(n_weak)]
    b = [_text(rng, [str(rng.choice(B_WORDS[:2])), str(rng.choice(B_WORDS[2:]))], n_filler=13)
         for _ in range(n_b)]
    return a, b


# ------------------------------------------------------------------------------------------ tokens

def test_tokenize_and_ngrams():
    assert tokenize_words("Don't PANIC: 42 towels, Arthur’s!") == ["don't", "panic", "42", "towels", "arthur's"]
    assert tokenize_words("  ...  ") == []
    assert tokenize_words("snake_case") == ["snake", "case"]
    assert ngrams(["a", "b", "c"]) == ["a", "b", "c", "a b", "b c"]
    assert ngrams(["a"]) == ["a"] and ngrams([]) == []


# ---------------------------------------------------------------------------------------- log-odds

def test_planted_words_on_top_with_right_side():
    a, b = _planted()
    terms = log_odds(a, b, top=10)
    by_term = {t["term"]: t for t in terms}
    side_a = [t["term"] for t in terms if t["side"] == "a"]
    side_b = [t["term"] for t in terms if t["side"] == "b"]
    # the planted bigram and its words lead group A; planted words lead group B
    assert {"espresso", "beans", "espresso beans"} <= set(side_a[:4])
    assert set(side_b[:4]) == set(B_WORDS)
    for w in ("espresso beans", "espresso", "beans", "rain", "umbrella", "storm", "puddle"):
        assert abs(by_term[w]["z"]) > 3.5, (w, by_term[w])
    assert by_term["espresso beans"]["side"] == "a" and by_term["espresso beans"]["count_b"] == 0
    assert by_term["espresso beans"]["count_a"] == 60
    assert by_term["umbrella"]["side"] == "b" and by_term["umbrella"]["count_a"] == 0
    # sorted by |z|, at most `top` per side
    zs = [abs(t["z"]) for t in terms]
    assert zs == sorted(zs, reverse=True)
    assert len(side_a) <= 10 and len(side_b) <= 10


def test_shared_filler_has_small_z():
    a, b = _planted()
    terms = log_odds(a, b, top=10_000, min_count=1)
    filler = [t for t in terms if t["term"] in FILLER]
    # a filler word with equal counts on both sides has z == 0 exactly and belongs to neither side
    assert len(filler) >= len(FILLER) - 3
    zs = np.abs([t["z"] for t in filler])
    assert zs.max() < 3.0, sorted((round(t["z"], 2), t["term"]) for t in filler)[-3:]
    assert zs.mean() < 1.2
    planted = min(abs(t["z"]) for t in terms if t["term"] in {"espresso beans", "rain", "umbrella"})
    assert planted > 2 * zs.max()


def test_min_count_and_top():
    a, b = _planted()
    terms = log_odds(a, b, min_count=50, top=3)
    assert all(t["count_a"] + t["count_b"] >= 50 for t in terms)
    assert sum(t["side"] == "a" for t in terms) <= 3 and sum(t["side"] == "b" for t in terms) <= 3
    assert log_odds(a, b, top=0) == []


def test_hand_computed_z():
    # a: "x x y" -> x:2 y:1 "x x":1 "x y":1 (n_a = 5);  b: "y y z" -> y:2 z:1 "y y":1 "y z":1 (n_b = 5)
    # background (pooled) + 0.5 per term over the 7-term vocabulary: x 2.5 of a total 10 + 3.5 = 13.5
    # alpha_0 = mean group size = 5, alpha_x = 5 * 2.5 / 13.5
    ax = 5 * 2.5 / 13.5
    delta = math.log((2 + ax) / (5 + 5 - 2 - ax)) - math.log((0 + ax) / (5 + 5 - 0 - ax))
    z = delta / math.sqrt(1 / (2 + ax) + 1 / (0 + ax))
    terms = {t["term"]: t for t in log_odds(["x x y"], ["y y z"], min_count=1)}
    assert terms["x"]["z"] == pytest.approx(z, rel=1e-12)
    assert terms["x"]["delta"] == pytest.approx(delta, rel=1e-12)
    assert (terms["x"]["count_a"], terms["x"]["count_b"], terms["x"]["side"]) == (2, 0, "a")
    # y: a 1, b 2, background 3 + 0.5
    ay = 5 * 3.5 / 13.5
    zy = (math.log((1 + ay) / (10 - 1 - ay)) - math.log((2 + ay) / (10 - 2 - ay))) / math.sqrt(
        1 / (1 + ay) + 1 / (2 + ay))
    assert terms["y"]["z"] == pytest.approx(zy, rel=1e-12) and terms["y"]["side"] == "b"


def test_explicit_prior_and_alpha0():
    # a background where "x" is absent: alpha_x = alpha0 * 0.5 / (sum of background over vocab + 0.5 * 7)
    prior = ["y y y z"]  # y:3 z:1 "y y":2 "y z":1 -> in-vocab total 7, + 3.5 pseudo = 10.5
    ax = 2.0 * 0.5 / 10.5
    delta = math.log((2 + ax) / (5 + 2 - 2 - ax)) - math.log(ax / (5 + 2 - ax))
    z = delta / math.sqrt(1 / (2 + ax) + 1 / ax)
    terms = {t["term"]: t for t in log_odds(["x x y"], ["y y z"], prior_texts=prior, min_count=1, alpha0=2.0)}
    assert terms["x"]["z"] == pytest.approx(z, rel=1e-12)
    assert all(np.isfinite(t["z"]) for t in terms.values())


def test_log_odds_degenerate_inputs():
    with pytest.raises(DescribeError, match="group a is empty"):
        log_odds([], ["rain today"])
    with pytest.raises(DescribeError, match="group b is empty"):
        log_odds(["coffee"], [])
    with pytest.raises(DescribeError, match="group b has no words"):
        log_odds(["coffee now"], ["", "?!"])
    with pytest.raises(DescribeError, match="single string"):
        log_odds("coffee", ["rain"])
    with pytest.raises(DescribeError, match="item 1"):
        log_odds(["coffee", None], ["rain"])
    assert isinstance(DescribeError("x"), ValueError)
    # one text per side still works (no crash), nothing reaches min_count=2 from a single mention
    out = log_odds(["coffee"], ["rain"])
    assert out == []
    assert {t["term"] for t in log_odds(["coffee"], ["rain"], min_count=1)} == {"coffee", "rain"}


# ------------------------------------------------------------------------------------ separability

def test_planted_groups_separate():
    a, b = _planted()
    sep = separability(a, b, seed=0)
    assert sep["folds"] == 5 and sep["reason"] is None
    # the 20 weak A texts are pure filler, so perfection is not expected; the 140 planted texts should be right
    assert sep["accuracy"] >= 0.85 and sep["balanced_accuracy"] >= 0.85
    # representative A texts are strong ones (indices < 30) and contain the planted words
    rep_a = sep["representative_a"]
    assert len(rep_a) == 5 and len(sep["representative_b"]) == 5
    for i, p in rep_a:
        assert i < 60 and "espresso beans" in a[i] and p > 0.5
    for i, p in sep["representative_b"]:
        assert any(w in b[i] for w in B_WORDS) and p > 0.5
    probs = [p for _, p in rep_a]
    assert probs == sorted(probs, reverse=True)


def test_fully_planted_groups_near_perfect():
    a, b = _planted(seed=3, n_strong=40, n_weak=0, n_b=40)
    sep = separability(a, b, seed=0)
    assert sep["accuracy"] >= 0.97


def test_random_halves_near_chance():
    rng = np.random.default_rng(7)
    texts = [_text(rng, [str(rng.choice(A_WORDS + B_WORDS))]) for _ in range(200)]
    accs = []
    for seed in range(3):
        order = np.random.default_rng(100 + seed).permutation(len(texts))
        a, b = [texts[i] for i in order[:100]], [texts[i] for i in order[100:]]
        sep = separability(a, b, seed=seed)
        assert 0.3 <= sep["accuracy"] <= 0.7, sep["accuracy"]
        accs.append(sep["balanced_accuracy"])
    assert 0.38 <= float(np.mean(accs)) <= 0.62, accs


def test_separability_deterministic():
    a, b = _planted()
    assert separability(a, b, seed=1) == separability(a, b, seed=1)


def test_separability_small_and_degenerate():
    # fewer than 2 texts on a side: None with a reason, no crash
    for a, b in (([], ["rain", "storm"]), (["coffee"], ["rain", "storm"]), (["coffee", "latte"], ["rain"])):
        sep = separability(a, b)
        assert sep["accuracy"] is None and sep["balanced_accuracy"] is None
        assert "at least 2 texts" in sep["reason"]
        assert sep["representative_a"] == [] and sep["representative_b"] == []
    sep = separability(["", "!"], ["", "?"])
    assert sep["accuracy"] is None and "no words" in sep["reason"]
    # tiny groups: folds reduced to the smaller group, min 2
    sep = separability(["coffee beans", "espresso beans", "latte"], ["rain now", "storm now"], folds=5)
    assert sep["folds"] == 2 and sep["accuracy"] is not None
    assert len(sep["representative_a"]) == 3 and len(sep["representative_b"]) == 2


# ---------------------------------------------------------------------------------------- combined

def test_describe_groups():
    a, b = _planted()
    out = describe_groups(iter(a), iter(b), seed=0)
    assert out["n_a"] == 80 and out["n_b"] == 80
    assert out["terms"][0]["term"] in {"espresso", "beans", "espresso beans"} | set(B_WORDS)
    assert out["separability"]["accuracy"] >= 0.85
    with pytest.raises(DescribeError):
        describe_groups([], b)
    one = describe_groups(["coffee coffee"], ["rain rain", "rain storm"])
    assert one["separability"]["accuracy"] is None and one["separability"]["reason"]
    assert one["terms"][0]["term"] in {"coffee", "rain"}


def test_module_is_light():
    import sys
    import subprocess

    code = ("import sys, lensframe.ops.describe; "
            "bad = [m for m in ('torch', 'panel', 'lensframe.ops.lens', 'lensframe.registry') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


# --------------------------------------------------------------------------------- against chance

def test_chance_p_is_the_permutation_test_of_balanced_accuracy():
    """chance_p equals a brute-force enumeration of every relabelling (the same predictions
    scored against every assignment of the group labels), and scipy's one-sided Fisher test."""
    from itertools import combinations

    from scipy.stats import fisher_exact

    from lensframe.ops.describe import balanced_accuracy, chance_p

    rng = np.random.default_rng(3)
    for _ in range(6):
        n, n_a = 11, int(rng.integers(2, 6))
        y = np.zeros(n, dtype=int)
        y[rng.choice(n, n_a, replace=False)] = 1
        pred = (rng.random(n) < 0.5).astype(int)
        observed = balanced_accuracy(y, pred)
        at_least = total = 0
        for chosen in combinations(range(n), n_a):
            perm = np.zeros(n, dtype=int)
            perm[list(chosen)] = 1
            total += 1
            at_least += balanced_accuracy(perm, pred) >= observed - 1e-12
        assert chance_p(y, pred) == pytest.approx(at_least / total, abs=1e-12)
        table = [[int(np.sum((y == 1) & (pred == 1))), int(np.sum((y == 1) & (pred == 0)))],
                 [int(np.sum((y == 0) & (pred == 1))), int(np.sum((y == 0) & (pred == 0)))]]
        assert chance_p(y, pred) == pytest.approx(fisher_exact(table, alternative="greater")[1], rel=1e-9)


def test_imbalanced_groups_at_chance_though_plain_accuracy_is_high():
    """The issue's case: 7 texts against 113 that say the same things. Plain accuracy is high
    (the classifier says "b" to nearly everything), balanced accuracy is about 0.5, and the test
    does not call it above chance."""
    rng = np.random.default_rng(11)
    texts = [_text(rng, [str(rng.choice(A_WORDS + B_WORDS))]) for _ in range(120)]
    sep = separability(texts[:7], texts[7:], seed=0)
    assert sep["accuracy"] > 0.85, sep
    assert abs(sep["balanced_accuracy"] - 0.5) < 0.15 and sep["chance"] == 0.5
    assert sep["above_chance"] is False and sep["p_chance"] >= 0.05
    # each fold's balanced accuracy, recomputed from nothing but their mean's definition: the
    # pooled figure lies within their range, and the spread is their sample SD
    folds = sep["fold_balanced"]
    assert len(folds) == sep["folds"] == 5 and min(folds) - 1e-9 <= sep["balanced_accuracy"] <= max(folds) + 1e-9
    assert sep["balanced_sd"] == pytest.approx(float(np.std(folds, ddof=1)))


def test_planted_groups_are_above_chance():
    a, b = _planted(seed=2, n_strong=30, n_weak=0, n_b=30)
    sep = separability(a, b, seed=0)
    assert sep["above_chance"] is True and sep["p_chance"] < 1e-6 and sep["balanced_accuracy"] > 0.9
    small = separability(["coffee beans", "espresso beans", "latte"], ["rain now", "storm now"], folds=5)
    assert small["p_chance"] is not None and small["p_chance"] >= 0.05 and small["above_chance"] is False  # 5 texts prove nothing
