"""Describing what separates two groups of texts, offline (no model, no GPU).

The offline half of the "describe the difference" step of Zhong et al. 2022 (arXiv 2201.12323) and
D5 (Zhong et al. 2023, arXiv 2302.14233); see docs/METHODS.md, "Clustering text and describing
the difference". Where those papers ask a large LM for hypotheses, we report:

- `log_odds`: the words and bigrams that distinguish the groups, by the weighted log-odds ratio with an
  informative Dirichlet prior of Monroe, Colaresi & Quinn (2008), "Fightin' Words: Lexical Feature
  Selection and Evaluation for Identifying the Content of Political Conflict", Political Analysis
  16(4), section 3.5, with z-scores;
- `separability`: how well a bag-of-n-grams classifier (TF-IDF + logistic regression) tells the groups
  apart under stratified cross-validation (balanced accuracy, and an exact test of it against
  chance), and the most representative texts of each side from the cross-fitted (out-of-fold)
  probabilities, so no text is scored by a model that saw it;
- `describe_groups`: both at once.

Everything is pure numpy / scikit-learn and deterministic for a given `seed`.
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Iterable, Optional, Sequence

import numpy as np

from lensframe.errors import LensframeError

__all__ = [
    "DescribeError",
    "tokenize_words",
    "ngrams",
    "log_odds",
    "separability",
    "balanced_accuracy",
    "chance_p",
    "describe_groups",
]

# a word: letters/digits, possibly joined by inner apostrophes ("don't", "o'clock"); "_" is not a letter
_WORD = re.compile(r"[^\W_]+(?:['\u2019][^\W_]+)*")


class DescribeError(LensframeError, ValueError):
    """Inputs that cannot be described (an empty group, a group without any words, non-text items)."""


# ----------------------------------------------------------------------------------------- tokens


def tokenize_words(text: str) -> list[str]:
    """Lowercase word tokens: runs of letters/digits, with inner apostrophes kept ("don't")."""
    if not isinstance(text, str):
        raise DescribeError(f"expected a text (str), got {type(text).__name__}")
    return [w.replace("\u2019", "'") for w in _WORD.findall(text.lower())]


def ngrams(tokens: Sequence[str]) -> list[str]:
    """Unigrams followed by bigrams ("a b") of one text's tokens (bigrams never cross texts)."""
    tokens = list(tokens)
    return tokens + [f"{a} {b}" for a, b in zip(tokens, tokens[1:])]


def _analyze(text: str) -> list[str]:
    return ngrams(tokenize_words(text))


def _check_group(texts, name: str, allow_empty: bool = False) -> list[str]:
    if isinstance(texts, str):
        raise DescribeError(f"group {name}: expected a list of texts, got a single string")
    texts = list(texts) if texts is not None else []
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise DescribeError(f"group {name}: item {i} is {type(t).__name__}, not a text")
    if not texts and not allow_empty:
        raise DescribeError(f"group {name} is empty: there is nothing to compare")
    return texts


def _counts(texts: Iterable[str]) -> Counter:
    c: Counter = Counter()
    for t in texts:
        c.update(_analyze(t))
    return c


# --------------------------------------------------------------------------------------- log-odds


def log_odds(
    texts_a: Sequence[str],
    texts_b: Sequence[str],
    prior_texts: Optional[Sequence[str]] = None,
    min_count: int = 2,
    top: int = 20,
    alpha0: Optional[float] = None,
    pseudocount: float = 0.5,
) -> list[dict]:
    """Distinguishing unigrams and bigrams by weighted log-odds with an informative Dirichlet prior.

    Monroe, Colaresi & Quinn (2008), "Fightin' Words", section 3.5 (eqs. 16-18 and 22):

        delta_w = log((y_aw + a_w) / (n_a + a_0 - y_aw - a_w)) - log((y_bw + a_w) / (n_b + a_0 - y_bw - a_w))
        var(delta_w) ~= 1 / (y_aw + a_w) + 1 / (y_bw + a_w),        z_w = delta_w / sqrt(var)

    with y the n-gram counts of each group, n the group totals (unigram + bigram tokens).

    The prior: a_w = a_0 * pi_w, pi_w the background frequency of w in `prior_texts` (default: both
    groups pooled) over the vocabulary of the two groups, after adding `pseudocount` to every count so
    that a term missing from the background still gets a positive prior (and finite z). Monroe et al.
    leave a_0, the total prior weight, as the analyst's choice of how strongly to shrink; by default we
    set a_0 = (n_a + n_b) / 2, the mean group size in tokens, so the prior weighs as much as one
    average group's data (half of the "pooled counts as prior" choice common in implementations of
    the paper, i.e. milder shrinkage). Pass `alpha0` to override.

    Returns at most `top` terms for each side, skipping terms whose total count y_a + y_b is below
    `min_count`: dicts {term, z, delta, count_a, count_b, side} with side "a" when z > 0 (more typical
    of group A) and "b" when z < 0 (a term with z == 0 exactly belongs to neither and is left out), all
    sorted by |z| descending (ties by term). Raises DescribeError
    for an empty group or a group without any word.
    """
    texts_a = _check_group(texts_a, "a")
    texts_b = _check_group(texts_b, "b")
    ca, cb = _counts(texts_a), _counts(texts_b)
    n_a, n_b = sum(ca.values()), sum(cb.values())
    for name, n in (("a", n_a), ("b", n_b)):
        if n == 0:
            raise DescribeError(f"group {name} has no words: its {len(texts_a if name == 'a' else texts_b)} "
                                "text(s) are empty or only punctuation")
    background = _counts(_check_group(prior_texts, "prior", allow_empty=True)) if prior_texts is not None \
        else ca + cb

    vocab = sorted(set(ca) | set(cb))
    y_a = np.array([ca[w] for w in vocab], dtype=float)
    y_b = np.array([cb[w] for w in vocab], dtype=float)
    bg = np.array([background[w] for w in vocab], dtype=float) + float(pseudocount)
    if not np.all(bg > 0):
        raise DescribeError("pseudocount must be positive when the background lacks some terms")
    a0 = float(alpha0) if alpha0 is not None else (n_a + n_b) / 2.0
    if a0 <= 0:
        raise DescribeError(f"alpha0 must be positive, got {alpha0}")
    alpha = a0 * bg / bg.sum()

    delta = (np.log(y_a + alpha) - np.log(n_a + a0 - y_a - alpha)
             - np.log(y_b + alpha) + np.log(n_b + a0 - y_b - alpha))
    z = delta / np.sqrt(1.0 / (y_a + alpha) + 1.0 / (y_b + alpha))

    keep = (y_a + y_b) >= min_count
    rows = [
        {"term": w, "z": float(z[i]), "delta": float(delta[i]), "count_a": int(y_a[i]),
         "count_b": int(y_b[i]), "side": "a" if z[i] > 0 else "b"}
        for i, w in enumerate(vocab) if keep[i] and z[i] != 0
    ]
    out = []
    for side in ("a", "b"):
        mine = sorted((r for r in rows if r["side"] == side), key=lambda r: (-abs(r["z"]), r["term"]))
        out.extend(mine[: max(int(top), 0)])
    return sorted(out, key=lambda r: (-abs(r["z"]), r["term"]))


# ----------------------------------------------------------------------------------- separability


CHANCE = 0.5  # balanced accuracy of a classifier that guesses, whatever the group sizes
ALPHA = 0.05  # separability is "above chance" when the exact test's p is below this


def _n_folds(n_a: int, n_b: int, folds: int) -> int:
    return max(2, min(int(folds), n_a, n_b))


def _classifier(seed: int):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    return make_pipeline(
        TfidfVectorizer(analyzer=_analyze, sublinear_tf=True),
        LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000, random_state=seed),
    )


def _cross_fitted(texts: list[str], y: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Out-of-fold P(side a) for each text (each text scored by a model that never saw it), and
    the test indices of each fold."""
    from sklearn.model_selection import StratifiedKFold

    p_a = np.empty(len(texts))
    folds = []
    for train, test in StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(texts, y):
        model = _classifier(seed).fit([texts[i] for i in train], y[train])
        col = list(model.classes_).index(1)
        p_a[test] = model.predict_proba([texts[i] for i in test])[:, col]
        folds.append(test)
    return p_a, folds


def balanced_accuracy(y, pred) -> float:
    """Mean of the two groups' recalls (y, pred: 1 = side a, 0 = side b); 0.5 is chance whatever
    the group sizes, where plain accuracy is the larger group's share for a classifier that
    always says the larger group."""
    y, pred = np.asarray(y), np.asarray(pred)
    return (float(np.mean(pred[y == 1] == 1)) + float(np.mean(pred[y == 0] == 0))) / 2.0


def chance_p(y, pred) -> float:
    """One-sided exact p-value of a balanced accuracy against chance: the probability that the
    same predictions, scored against the group labels randomly permuted, reach at least the
    observed balanced accuracy.

    With the group sizes and the number of texts predicted "a" fixed, balanced accuracy grows
    with the number of true positives alone, and under permutation that number is
    hypergeometric; so this is Fisher's exact test (one-sided, "greater") of the 2 x 2 table of
    group by prediction, computed exactly rather than by sampling permutations.

    Why this test: it is cheap (no refitting, unlike a permutation test that re-runs the
    cross-validation for each shuffle, seconds per group here), exact for the given predictions,
    and it sees the imbalance that plain accuracy hides (7 vs 113 texts predicted all "b" gives
    p = 1). It does not count the refitting's own variation; under the null, cross-validated
    predictions tend to anti-correlate with the labels (each test fold's labels are what its
    training set lacks), which makes the test conservative rather than optimistic.
    """
    from scipy.stats import hypergeom

    y, pred = np.asarray(y).astype(bool), np.asarray(pred).astype(bool)
    tp = int(np.sum(y & pred))
    return float(min(1.0, hypergeom.sf(tp - 1, y.size, int(y.sum()), int(pred.sum()))))


def _top(probs: np.ndarray, n: int = 5) -> list[tuple[int, float]]:
    order = sorted(range(len(probs)), key=lambda i: (-probs[i], i))[:n]
    return [(int(i), float(probs[i])) for i in order]


def separability(texts_a: Sequence[str], texts_b: Sequence[str], seed: int = 0, folds: int = 5,
                 alpha: float = ALPHA) -> dict:
    """How well the groups can be told apart, and the most representative texts of each side.

    Cross-validated accuracy and balanced accuracy of TF-IDF (unigrams + bigrams, our tokenizer) +
    logistic regression (class-balanced weights), under StratifiedKFold(shuffle, random_state=seed);
    the vectorizer is fitted inside each fold. `folds` is reduced to the smaller group's size (min 2).
    This is the "how separable are the groups" check of the describe step (docs/METHODS.md; Zhong et al.
    2022 re-rank hypotheses by how well they separate the groups).

    Balanced accuracy (the mean of both groups' recalls) is the figure to read: its chance level
    is 0.5 for any group sizes, where plain accuracy is the larger group's share for a classifier
    that always answers the larger group (0.94 for 7 vs 113 texts, at a balanced accuracy of 0.5).
    `p_chance` is the one-sided exact test of the balanced accuracy against chance (chance_p) and
    `above_chance` is p_chance < alpha; `fold_balanced` is each fold's balanced accuracy (every
    test fold holds both groups, since folds <= the smaller group), `balanced_sd` their spread.

    `representative_a` / `representative_b`: the top 5 texts of each side by the cross-fitted
    (out-of-fold) probability of their own side, as (index into that group's list, probability).

    A group with fewer than 2 texts, or no words at all, gives accuracy None and a `reason`.
    """
    texts_a = _check_group(texts_a, "a", allow_empty=True)
    texts_b = _check_group(texts_b, "b", allow_empty=True)
    out = {"accuracy": None, "balanced_accuracy": None, "chance": CHANCE, "p_chance": None, "above_chance": None,
           "fold_balanced": [], "balanced_sd": None, "folds": None, "n_a": len(texts_a), "n_b": len(texts_b),
           "representative_a": [], "representative_b": [], "reason": None}
    small = [f"group {n} has {len(t)} text(s)" for n, t in (("a", texts_a), ("b", texts_b)) if len(t) < 2]
    if small:
        out["reason"] = "; ".join(small) + ": cross-validation needs at least 2 texts per group"
        return out
    texts = texts_a + texts_b
    if not any(_analyze(t) for t in texts):
        out["reason"] = "no words in either group"
        return out
    y = np.array([1] * len(texts_a) + [0] * len(texts_b))
    k = _n_folds(len(texts_a), len(texts_b), folds)
    try:
        p_a, fold_tests = _cross_fitted(texts, y, k, seed)
    except ValueError as e:  # e.g. a training fold whose texts have no words (empty vocabulary)
        out["reason"] = f"classifier could not be fitted: {e}"
        return out

    pred = (p_a >= 0.5).astype(int)
    per_fold = [balanced_accuracy(y[t], pred[t]) for t in fold_tests]
    p = chance_p(y, pred)
    out.update(
        accuracy=float(np.mean(pred == y)),
        balanced_accuracy=balanced_accuracy(y, pred),
        p_chance=p,
        above_chance=bool(p < alpha),
        fold_balanced=per_fold,
        balanced_sd=float(np.std(per_fold, ddof=1)) if len(per_fold) > 1 else 0.0,
        folds=k,
        representative_a=_top(p_a[: len(texts_a)]),
        representative_b=_top(1.0 - p_a[len(texts_a):]),
    )
    return out


# ---------------------------------------------------------------------------------------- combined


def describe_groups(
    texts_a: Sequence[str],
    texts_b: Sequence[str],
    prior_texts: Optional[Sequence[str]] = None,
    seed: int = 0,
    top: int = 20,
    min_count: int = 2,
    folds: int = 5,
) -> dict:
    """What separates group A from group B: `log_odds` terms and `separability` (see both).

    The offline stand-in for the description step of Zhong et al. 2022 / D5 (arXiv 2302.14233), with
    Monroe et al. 2008 log-odds for the words. Returns {"terms", "separability", "n_a", "n_b"}; raises
    DescribeError for an empty group or one without words.
    """
    texts_a = _check_group(texts_a, "a")
    texts_b = _check_group(texts_b, "b")
    terms = log_odds(texts_a, texts_b, prior_texts=prior_texts, min_count=min_count, top=top)
    sep = separability(texts_a, texts_b, seed=seed, folds=folds)
    return {"terms": terms, "separability": sep, "n_a": sep["n_a"], "n_b": sep["n_b"]}
