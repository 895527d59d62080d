"""Clustering views on SmolLM2 with fortunes: neuron clusters tagged with topics, and text clusters
against the labels, with a bag-of-words TF-IDF + k-means baseline in the same run.

    python benchmarks/bench_clusters.py [--limit 240] [--max-tokens 32]
                                        [--topics food,law,science,computers,love,politics]
                                        [--layer L] [--neuron-layers all] [--n-neurons 300] [--k 8]
                                        [--importance attribution] [--n-perm 1000] [--sweep-layers 0,5,10,20,25,29]
                                        [--no-forward-baseline] [--threads 2] [--out docs/BENCHMARKS.md]

One spec (builtin:smollm2-135m, builtin:fortunes from the given topics, label: topic) with
  - text_clusters at k = number of topics (so the adjusted Rand index against the topics is
    comparable with the baseline's), and at the view's default k = round(sqrt(n)); plus k = topics
    on a few other blocks' residuals (--sweep-layers, same pass) to check whether the default
    block is an unlucky pick;
  - neuron_clusters over the chosen layers (all 30 by default; everyN or a list), attribution importance.
Board.from_text(...).compute() runs it in a temporary store: one fused dataset pass (forward and,
for attribution, a backward per batch) feeds both views. Reported:
  (a) the neuron clusters: size, tag (or untagged), effect size, Holm-corrected permutation p
      (tagged on the held-out half of the samples), the five most important neurons (layer.index);
  (b) the adjusted Rand index (ARI) of the text clusters against the topics, for lensframe's
      model-embedding clustering and for TF-IDF (unigrams + bigrams, English stop words) + k-means
      with the same k and seed, on the full texts and on the same truncated texts the model saw,
      and TF-IDF + TruncatedSVD (LSA, 50 components, L2-normalised) + k-means;
  (c) the wall time of the compute (and of a forward-only pass of the same texts, for the cost of
      the backward), the machine and the command.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

SECTION = "Neuron and text clusters (SmolLM2, fortunes)"
DEFAULT_TOPICS = "food,law,science,computers,love,politics"
SEED = 0


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=240, help="fortunes sampled (default: %(default)s)")
    ap.add_argument("--max-tokens", type=int, default=32, help="tokens per text (default: %(default)s)")
    ap.add_argument("--topics", default=DEFAULT_TOPICS, help="fortunes categories, comma-separated (default: %(default)s)")
    ap.add_argument("--layer", type=int, default=None,
                    help="block whose mean-pooled residual embeds a text (default: the view's, the middle one)")
    ap.add_argument("--neuron-layers", default="all",
                    help="layers of neuron_clusters: 'all', 'everyN', or a comma list (default: %(default)s)")
    ap.add_argument("--sweep-layers", default="0,5,10,20,25,29",
                    help="also cluster texts (k = topics) on these blocks' residuals, same pass; '' for none "
                         "(default: %(default)s)")
    ap.add_argument("--n-neurons", type=int, default=300, help="neurons sampled by importance (default: %(default)s)")
    ap.add_argument("--k", type=int, default=8, help="neuron clusters (default: %(default)s)")
    ap.add_argument("--importance", choices=("attribution", "activation"), default="attribution")
    ap.add_argument("--n-perm", type=int, default=1000, help="permutations of the enrichment test (default: %(default)s)")
    ap.add_argument("--no-forward-baseline", action="store_true",
                    help="skip the forward-only timing pass (text embeddings alone)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads, via OMP_NUM_THREADS (default: %(default)s)")
    ap.add_argument("--out", default=None, help="write/replace this benchmark's section of this markdown file")
    return ap.parse_args(argv)


def neuron_layers(arg: str, n_layers: int):
    if arg == "all":
        return "all"
    if arg.startswith("every"):
        step = int(arg[5:])
        return list(range(0, n_layers, step))
    return [int(x) for x in arg.split(",") if x.strip()]


def make_spec(args, topics, layers, text_views: dict, neuron_view: bool = True) -> str:
    lines = [
        "lensframe: 1",
        "model: builtin:smollm2-135m",
        "dataset:",
        "  source: builtin:fortunes",
        f"  categories: [{', '.join(topics)}]",
        "  label: topic",
        f"  limit: {args.limit}",
        f"  max_tokens: {args.max_tokens}",
        f"  seed: {SEED}",
        "run:",
        "  batch_size: 8",
        f"  threads: {args.threads}",
        "views:",
    ]
    layer = "" if args.layer is None else f", layer: {args.layer}"
    for name, v in text_views.items():
        k, lay = v if isinstance(v, tuple) else (v, None)
        where = layer if lay is None else f", layer: {lay}"
        lines.append(f"  {name}: {{type: text_clusters{where}{'' if k is None else f', k: {k}'}, seed: {SEED}}}")
    if neuron_view:
        ls = "all" if layers == "all" else "[" + ", ".join(map(str, layers)) + "]"
        lines.append(f"  neurons: {{type: neuron_clusters, layers: {ls}, importance: {args.importance}, "
                     f"n_neurons: {args.n_neurons}, k: {args.k}, n_perm: {args.n_perm}, seed: {SEED}}}")
    return "\n".join(lines) + "\n"


def tfidf_ari(texts, labels, k: int, seed: int) -> dict:
    """TF-IDF (unigrams + bigrams, English stop words) + k-means, and the same through LSA."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.metrics import adjusted_rand_score
    from sklearn.preprocessing import normalize

    x = TfidfVectorizer(ngram_range=(1, 2), stop_words="english", sublinear_tf=False).fit_transform(texts)
    km = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(x)
    c = min(50, x.shape[1] - 1, x.shape[0] - 1)
    z = normalize(TruncatedSVD(n_components=c, random_state=seed).fit_transform(x))
    lsa = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(z)
    return {"tfidf": float(adjusted_rand_score(labels, km)), "lsa": float(adjusted_rand_score(labels, lsa)),
            "vocab": int(x.shape[1])}


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    topics = [t.strip() for t in args.topics.split(",") if t.strip()]

    import numpy as np
    from _common import machine, write_section

    from lensframe.board import Board
    from lensframe.ops.clustering import adjusted_rand

    # the model's depth decides the layers; the spec's model is the same in every board below
    n_layers = 30  # SmolLM2-135M; checked against the loaded model below
    layers = neuron_layers(args.neuron_layers, n_layers)
    n_topics = len(topics)
    text_views = {"texts_ktopics": n_topics, "texts_ksqrt": None}
    sweep = [int(x) for x in args.sweep_layers.split(",") if x.strip()]
    for l in sweep:
        text_views[f"texts_layer{l}"] = (n_topics, l)
    spec = make_spec(args, topics, layers, text_views)

    with tempfile.TemporaryDirectory() as tmp:
        board = Board.from_text(spec, base_dir=Path(tmp), cache_dir=Path(tmp) / "store")
        loaded = board.executor.model("main")  # load before the clock starts
        assert loaded.info.n_layers == n_layers, loaded.info.n_layers
        ds = board.dataset
        n = len(ds)
        fwd_before = None
        if not args.no_forward_baseline:
            fspec0 = make_spec(args, topics, layers, {"texts_ktopics": n_topics}, neuron_view=False)
            fb0 = Board.from_text(fspec0, base_dir=Path(tmp), cache_dir=Path(tmp) / "store_fwd_before")
            fb0.executor._models["main"] = loaded
            t1 = time.perf_counter()
            fb0.compute(progress=True)
            fwd_before = time.perf_counter() - t1
        t0 = time.perf_counter()
        report = board.compute(progress=True)
        seconds = time.perf_counter() - t0
        (_, tk_node) = board.views["texts_ktopics"].needs(args.max_tokens)[1:]
        (_, ts_node) = board.views["texts_ksqrt"].needs(args.max_tokens)[1:]
        tk, ts = board.result(tk_node), board.result(ts_node)
        emb_layer = tk_node.inputs[0].param("layer")
        imp_node, nc_node = board.views["neurons"].nodes(args.max_tokens)
        nc = board.result(nc_node)
        imp = board.result(imp_node)
        # the texts as the model saw them (first max_tokens tokens), for a like-for-like baseline
        tok = board.executor.tokens("main")
        ids, lengths = tok["ids"], tok["lengths"]
        seen = [loaded.tokenizer.decode([int(t) for t in ids[i, : lengths[i]] if t >= 0], skip_special_tokens=True)
                for i in range(n)]
        texts, labels = list(ds.texts), list(ds.labels)
        sweep_ari = {}
        for l in sweep:
            node = board.views[f"texts_layer{l}"].needs(args.max_tokens)[2]
            sweep_ari[l] = float(board.result(node).meta["ari"])
        sweep_ari[emb_layer] = float(tk.meta["ari"])
        n_tokens = int(np.asarray(lengths).sum())

        fwd_seconds = []
        if not args.no_forward_baseline:
            # forward only: the same texts, only the text embeddings (no backward, no MLP captures),
            # same loaded model, a fresh store each time; run once before and once after the main
            # compute because the machine is shared and its load drifts
            fspec = make_spec(args, topics, layers, {"texts_ktopics": n_topics}, neuron_view=False)
            for when in ("after",):
                fboard = Board.from_text(fspec, base_dir=Path(tmp), cache_dir=Path(tmp) / f"store_fwd_{when}")
                fboard.executor._models["main"] = loaded  # no second load
                t1 = time.perf_counter()
                frep = fboard.compute(progress=True)
                fwd_seconds.append(time.perf_counter() - t1)
                fwd_batches = frep.batches

    # ---------------------------------------------------------------- (b) ARI
    k_sqrt = int(ts.meta["k"])
    base = {k: tfidf_ari(texts, labels, k, SEED) for k in (n_topics, k_sqrt)}
    base_seen = {k: tfidf_ari(seen, labels, k, SEED) for k in (n_topics, k_sqrt)}
    ari_model = {n_topics: float(tk.meta["ari"]), k_sqrt: float(ts.meta["ari"])}
    assert abs(ari_model[n_topics] - adjusted_rand(labels, tk["labels"])) < 1e-9
    ari_rows = ["| method | input | k = topics (" + str(n_topics) + ") | k = √n (" + str(k_sqrt) + ") |",
                "|---|---|---:|---:|",
                f"| lensframe text_clusters: mean-pooled residual of block {emb_layer}, PCA {tk.meta['n_components']} "
                f"(first dropped), k-means | first {args.max_tokens} tokens | **{ari_model[n_topics]:.3f}** | {ari_model[k_sqrt]:.3f} |"]
    for name, src, b in (("TF-IDF (1-2 grams, English stop words) + k-means", "full text", base),
                         ("TF-IDF (1-2 grams, English stop words) + k-means", f"first {args.max_tokens} tokens", base_seen),
                         ("TF-IDF + LSA (TruncatedSVD 50, L2-normalised) + k-means", "full text", {k: {"tfidf": v["lsa"]} for k, v in base.items()}),
                         ("TF-IDF + LSA (TruncatedSVD 50, L2-normalised) + k-means", f"first {args.max_tokens} tokens", {k: {"tfidf": v["lsa"]} for k, v in base_seen.items()})):
        ari_rows.append(f"| {name} | {src} | {b[n_topics]['tfidf']:.3f} | {b[k_sqrt]['tfidf']:.3f} |")
    sweep_text = ""
    if len(sweep_ari) > 1:
        sweep_text = ("\n\nThe same clustering (k = " + str(n_topics) + ") on other blocks' residuals, from the same pass "
                      "(a check that the view's default block is not an unlucky choice; the headline row above stays "
                      "the default): " + ", ".join(f"block {l}: {a:.3f}" for l, a in sorted(sweep_ari.items())) + ".")
    best_base = max(base[n_topics]["tfidf"], base[n_topics]["lsa"], base_seen[n_topics]["tfidf"], base_seen[n_topics]["lsa"])
    like = max(base_seen[n_topics]["tfidf"], base_seen[n_topics]["lsa"])
    verdict_like = "above" if ari_model[n_topics] > like else "below"
    verdict_best = "above" if ari_model[n_topics] > best_base else "below"

    # ---------------------------------------------------------------- (a) neuron clusters
    clusters = nc.meta["clusters"]
    rows = ["| cluster | size | tag | best topic | effect (SD) | p (Holm) | top 5 neurons (layer.index) |",
            "|---:|---:|---|---|---:|---:|---|"]
    for c in clusters:
        top = ", ".join(f"{l}.{i}" for l, i in c["members"][:5])
        rows.append(f"| {c['cluster']} | {c['size']} | {c['tag'] or 'untagged'} | {c['best_topic']} | "
                    f"{c['effect']:.2f} | {c['p_corrected']:.3f} | {top} |")
    n_tagged = sum(1 for c in clusters if c["tag"])
    tagged_topics = sorted({c["tag"] for c in clusters if c["tag"]})
    layer_counts = Counter(int(l) for l in nc["layer"])
    layer_mix = ", ".join(f"{l}: {layer_counts[l]}" for l in sorted(layer_counts))
    counts = Counter(labels)
    topic_counts = ", ".join(f"{t} {counts[t]}" for t in sorted(counts))
    n_scored = len(imp.meta["layers"]) * int(imp.meta["d_mlp"])
    layers_text = "all" if layers == "all" else ", ".join(map(str, imp.meta["layers"]))

    all_ari = [ari_model[n_topics], best_base]
    low = ("" if max(all_ari) >= 0.3 else
           " Every ARI here is low (below 0.3): the fortunes' categories are only loosely topical, and"
           " neither bag-of-words nor the model's pooled residual recovers them well; the table compares the"
           " methods, it does not show either one sorting fortunes by topic.")
    m = machine()
    fwd_text = ""
    if fwd_seconds:
        fwd = [fwd_before, fwd_seconds[0]]
        mean_fwd = sum(fwd) / 2
        fwd_text = (f" A forward-only pass over the same texts (text embeddings alone, same loaded model, fresh store; "
                    f"{fwd_batches} batches), timed just before and just after, took {fwd[0]:.0f} s and {fwd[1]:.0f} s")
        if max(fwd) > 1.5 * min(fwd):
            fwd_text += (": the two differ by more than 1.5×, so the machine's load changed during the run and no "
                         "ratio of the attribution pass to a forward-only pass is given.")
        else:
            fwd_text += (f": the compute with the attribution pass (forward + backward, MLP captures and gradients at "
                         f"{len(imp.meta['layers'])} layers) cost {seconds / max(mean_fwd, 1e-9):.1f}× their mean "
                         "(rough: the machine is shared).")
    cmd = (f"python benchmarks/bench_clusters.py --limit {args.limit} --max-tokens {args.max_tokens} "
           f"--topics {','.join(topics)}" + ("" if args.layer is None else f" --layer {args.layer}")
           + f" --neuron-layers {args.neuron_layers} --n-neurons {args.n_neurons} --k {args.k} "
           f"--importance {args.importance} --n-perm {args.n_perm} --sweep-layers '{args.sweep_layers}'"
           + (" --no-forward-baseline" if args.no_forward_baseline else "") + " --out docs/BENCHMARKS.md")
    body = f"""lensframe's clustering views (issue 4) on SmolLM2-135M with {n} fortunes from {n_topics} topics
({topic_counts}; sampled with seed {SEED}, not balanced), each truncated to {args.max_tokens} tokens
({n_tokens} tokens in all), computed from one spec in a fresh store: `text_clusters` at k = {n_topics}
(the number of topics) and at the view's default k = round(√n) = {k_sqrt}, and `neuron_clusters`
over layers {layers_text} ({n_scored} MLP neurons scored by **{imp.meta['method']}** importance,
{args.n_neurons} sampled in proportion to it, k-means with k = {args.k}, clustered on the profiles of
the even-index samples and tagged on the odd-index ones, {args.n_perm} permutations, Holm-corrected
over clusters, tagged when p < 0.05). Both views were fed by {report.batches / math.ceil(n / 8):g} fused dataset pass(es):
{report.batches} batches of 8 (⌈{n}/8⌉ = {math.ceil(n / 8)} per pass), {report.forward_passes} forwards (each with a backward, for the attribution).

**Text clusters against the topics (adjusted Rand index; 1 = the topics exactly, 0 = chance).**
Baselines in the same run on the same {n} texts, with the same k and seed (k-means, n_init 10).
The "first {args.max_tokens} tokens" rows give TF-IDF exactly the text the model saw (decoded from the
same token ids); the "full text" rows give it the whole fortune, more than the model saw.

{chr(10).join(ari_rows)}{sweep_text}

At k = {n_topics}, the model-embedding clustering is **{verdict_like}** TF-IDF on the same truncated texts
({ari_model[n_topics]:.3f} vs {like:.3f}, best of the two TF-IDF variants) and **{verdict_best}** the best
baseline overall ({best_base:.3f}).{low}

**Neuron clusters** ({len(clusters)} clusters, {n_tagged} tagged{': ' + ', '.join(tagged_topics) if tagged_topics else ''};
effect = the cluster's mean share of importance at its best topic minus the median share over the
sampled neurons, in SDs over the sampled neurons, measured on the held-out half; top neurons are the
most important members). Sampled neurons per layer: {layer_mix}.

{chr(10).join(rows)}

**Time.** Model loading excluded. The whole compute (tokenizing, the fused forward + backward pass of
{report.batches} batches, PCA/k-means, neuron sampling, clustering and {args.n_perm} permutations) took
{seconds:.0f} s ({seconds / max(report.batches, 1):.1f} s per batch of 8).{fwd_text}

Machine: {m['cores']} cores, {m['cpu']}, torch {m['torch']} ({args.threads} threads); load average at the
end: {m['load']} (other processes were running). Date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}. Command:

    {cmd}
"""
    print(body)
    if args.out:
        write_section(SECTION, body, Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
