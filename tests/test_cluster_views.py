"""Clustering views end to end (issue 4): specs -> Board -> nodes -> views, on a tiny Llama whose
answer is planted by hand.

The planted model (``planted_model``): a word-level tokenizer; three topics of 20 texts each, every
text three topic words among shared filler. The embedding gives every topic's words one direction of
its own (dimensions 0, 1, 2; filler lives in dimensions 3.. and never touches them); attention writes
nothing (o_proj = 0), so the input of layer 0's MLP is the token's own embedding. Neurons
PLANTED[t] (8 per topic) of layer 0 read only topic t's direction (gate and up rows), so they fire on
topic t's words and are exactly 0 on everything else; every other neuron of layer 0 reads only the
filler dimensions. Their value vectors (down_proj columns) are large, so their attribution is too.

Known answers: each PLANTED[t] lands in one neuron cluster tagged with topic t (held-out
permutation p < 0.05); the difference view finds topic t's words on its side; text clusters of
layer 0's residual agree with the topics.
"""
from __future__ import annotations

import random
import re
from pathlib import Path

import numpy as np
import pytest

from lensframe.board import Board
from lensframe.cli import main
from lensframe.views.base import neuron_label

from .conftest import tiny_spec
from .test_sharing import ForwardCounter

TOPICS = {
    "food": ["pizza", "pasta", "cheese", "bread"],
    "law": ["court", "judge", "law", "verdict"],
    "physics": ["atom", "quark", "physics", "photon"],
}
FILLER = ["the", "a", "of", "and", "we", "saw", "today", "it", "was", "about", "some", "very", "new", "old"]
N_PER_TOPIC = 20
D_MLP = 64
PLANTED = {t: list(range(8 * i, 8 * i + 8)) for i, t in enumerate(TOPICS)}  # layer 0 neurons


def make_dataset(seed: int = 0) -> tuple[list[str], list[str]]:
    """Interleaved topics (so both halves of the samples, even and odd, hold every topic)."""
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(N_PER_TOPIC):
        for topic, words in TOPICS.items():
            body = rng.sample(FILLER, 5) + [rng.choice(words) for _ in range(3)]
            rng.shuffle(body)
            texts.append(" ".join(body))
            labels.append(topic)
    return texts, labels


TEXTS, LABELS = make_dataset()


def make_word_tokenizer(folder: Path):
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import PreTrainedTokenizerFast

    words = ["<|endoftext|>", "<unk>"] + [w for ws in TOPICS.values() for w in ws] + FILLER
    tk = Tokenizer(WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tk.pre_tokenizer = Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                  pad_token="<|endoftext|>", unk_token="<unk>")
    tok.save_pretrained(folder)
    return tok


def build_planted(folder: Path) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    folder.mkdir(parents=True, exist_ok=True)
    tok = make_word_tokenizer(folder)
    cfg = LlamaConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                      intermediate_size=D_MLP, vocab_size=len(tok), max_position_embeddings=64,
                      bos_token_id=0, eos_token_id=0, pad_token_id=0, tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg)
    topic_dims = {t: i for i, t in enumerate(TOPICS)}
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.3)
        emb = model.model.embed_tokens.weight
        emb[:, :3] = 0.0  # dims 0..2: topic directions, used by topic words only
        for topic, words in TOPICS.items():
            for w in words:
                i = tok.convert_tokens_to_ids(w)
                emb[i] = 0.0
                emb[i, topic_dims[topic]] = 3.0
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()  # attention writes nothing: MLP 0 sees the embedding
        mlp = model.model.layers[0].mlp
        mlp.gate_proj.weight[:, :3] = 0.0  # generalists read filler dims only
        mlp.up_proj.weight[:, :3] = 0.0
        for topic, neurons in PLANTED.items():
            for n in neurons:
                mlp.gate_proj.weight[n] = 0.0
                mlp.up_proj.weight[n] = 0.0
                mlp.gate_proj.weight[n, topic_dims[topic]] = 2.0
                mlp.up_proj.weight[n, topic_dims[topic]] = 2.0
                mlp.down_proj.weight[:, n] *= 5.0  # large value vectors: attribution matters
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def planted_model(tmp_path_factory) -> Path:
    return build_planted(tmp_path_factory.mktemp("planted") / "llama")


def spec_text(model_dir: Path, views: str) -> str:
    return tiny_spec(model_dir, views, batch_size=16, texts=TEXTS, labels=LABELS)


VIEWS = """  nc: {type: neuron_clusters, layers: [0], importance: IMPORTANCE, n_neurons: 64, k: 4, n_perm: 200}
  tc: {type: text_clusters, layer: 0, k: 3}
  diff: {type: difference, layer: 0, k: 3, compare: labels, a: food, b: law}
  diffc: {type: difference, layer: 0, k: 3}
"""


def planted_board(model_dir, tmp_path, importance="activation", views=None) -> Board:
    views = views or VIEWS.replace("IMPORTANCE", importance)
    return Board.from_text(spec_text(model_dir, views), base_dir=tmp_path, cache_dir=tmp_path / "store")


# ------------------------------------------------------------------------------ planted neurons


@pytest.mark.parametrize("importance", ["activation", "attribution"])
def test_planted_neurons_cluster_and_are_tagged_with_their_topic(importance, planted_model, tmp_path):
    b = planted_board(planted_model, tmp_path, importance)
    b.compute(progress=False)
    imp_node, cl_node = b.views["nc"].nodes(16)
    imp = b.result(imp_node)
    topics = imp.meta["topics"]
    assert topics == sorted(TOPICS) and imp.meta["method"] == importance
    # the planted neurons are exactly zero away from their topic, and clearly non-zero on it
    for topic, neurons in PLANTED.items():
        t = topics.index(topic)
        on = imp["sums"][neurons][:, t]
        off = np.delete(imp["sums"][neurons], t, axis=1)
        assert np.all(on > 0) and np.all(off <= 1e-6 * on.min()), (topic, on, off)

    res = b.result(cl_node)
    clusters = res.meta["clusters"]
    assert res.meta["held_out"] and res.meta["method"] == importance
    assert len(res["neuron"]) == D_MLP and set(res["layer"].tolist()) == {0}
    tagged = {}
    for topic, neurons in PLANTED.items():
        members = [c for c in clusters if any(m == [0, n] for m in c["members"] for n in neurons)]
        assert len(members) == 1, f"{topic}: planted neurons split over clusters {[c['cluster'] for c in members]}"
        c = members[0]
        assert sorted(n for l, n in c["members"]) == neurons  # exactly the planted ones
        assert c["tag"] == topic and c["p_corrected"] < 0.05 and c["effect"] > 1, c
        tagged[topic] = c["cluster"]
    assert len(set(tagged.values())) == 3  # one cluster per topic
    # the cluster of the rest (generalists reading only filler) carries no topic
    for c in clusters:
        if c["cluster"] not in tagged.values():
            assert c["tag"] is None, c


# ------------------------------------------------------------------------------ planted groups


def test_difference_finds_the_planted_words_and_text_clusters_follow_topics(planted_model, tmp_path):
    b = planted_board(planted_model, tmp_path)
    b.compute(progress=False)
    view = b.views["diff"]
    res = b.executor.lookup(view.describe_node(16), a=("label", "food"), b=("label", "law"))
    assert len(res["a"]) == len(res["b"]) == N_PER_TOPIC
    assert all(LABELS[i] == "food" for i in res["a"]) and all(LABELS[i] == "law" for i in res["b"])
    terms = res.meta["terms"]
    side = {t["term"]: t for t in terms}
    for w in TOPICS["food"]:
        assert side[w]["side"] == "a" and side[w]["z"] > 2, side.get(w)
    for w in TOPICS["law"]:
        assert side[w]["side"] == "b" and side[w]["z"] < -2, side.get(w)
    for w in TOPICS["physics"] + FILLER:  # neither side's word, or shared filler: never a top term
        assert w not in side or abs(side[w]["z"]) < 2, side[w]
    strongest = sorted((t for t in terms if " " not in t["term"]), key=lambda t: -abs(t["z"]))[:8]
    assert {t["term"] for t in strongest} == set(TOPICS["food"] + TOPICS["law"])
    assert res.meta["accuracy"] >= 0.95 and res.meta["balanced_accuracy"] >= 0.95
    assert all(LABELS[i] == "food" for i, _ in res.meta["representative_a"])
    assert all(LABELS[i] == "law" for i, _ in res.meta["representative_b"])

    _, tc_node = b.views["tc"].needs(16)[1:]
    tc = b.result(tc_node)
    assert tc.meta["k"] == 3 and tc.meta["ari"] > 0.9, tc.meta  # the planted topics are recovered
    # the clusters' own description (cluster vs rest) names that cluster's topic words
    c0 = int(tc["labels"][0])
    desc = b.executor.lookup(b.views["diffc"].describe_node(16), a=("cluster", c0), b=("rest", c0))
    majority = max(TOPICS, key=lambda t: sum(LABELS[i] == t for i in desc["a"]))
    top_a = [t["term"] for t in desc.meta["terms"] if t["side"] == "a"][:4]
    assert set(top_a) & set(TOPICS[majority])


# ------------------------------------------------------------------------------------- sharing


SHARING_VIEWS = """  nc4: {type: neuron_clusters, layers: [0], n_neurons: 64, k: 4, n_perm: 200}
  nc3: {type: neuron_clusters, layers: [0], n_neurons: 64, k: 3, n_perm: 200}
  tc: {type: text_clusters, layer: 0, k: 3}
  diff: {type: difference, layer: 0, k: 3, compare: labels, a: food, b: law}
"""


def test_one_backward_pass_for_every_clustering_view(planted_model, tmp_path):
    b = planted_board(planted_model, tmp_path, views=SHARING_VIEWS)
    ops = [p.node.op for p in b.plan.nodes.values()]
    assert ops.count("neuron_importance") == 1 and ops.count("text_embeddings") == 1
    assert ops.count("neuron_clusters") == 2 and ops.count("text_clusters") == 1
    imp_node = b.views["nc4"].nodes(16)[0]
    assert imp_node == b.views["nc3"].nodes(16)[0]
    assert sorted(b.plan.nodes[imp_node].views) == ["nc3", "nc4"]
    assert [(p["kind"], len(p["nodes"])) for p in b.plan.passes() if p["kind"] == "dataset"] == [("dataset", 2)]

    counter = ForwardCounter(b.executor.model("main").model)
    report = b.compute(progress=False)
    n_batches = -(-len(TEXTS) // 16)
    assert counter.calls == report.batches == n_batches  # one forward (+ backward) per batch, for all

    res = b.result(imp_node)
    n_topics = len(TOPICS)
    assert res["sums"].shape == (D_MLP, n_topics, 2) and res["counts"].shape == (n_topics, 2)
    assert res["sums"].nbytes == D_MLP * n_topics * 2 * 4  # the result's size, not samples x positions
    assert res["counts"].sum() == len(TEXTS)
    assert res.meta["method"] == "attribution"
    k4, k3 = (b.result(b.views[v].nodes(16)[1]) for v in ("nc4", "nc3"))
    assert len({c["cluster"] for c in k4.meta["clusters"]}) == 4 and len(k3.meta["clusters"]) == 3

    again = b.compute(progress=False)  # everything stored: no forward at all
    assert counter.calls == n_batches and again.forward_passes == 0 and again.batches == 0
    warm = planted_board(planted_model, tmp_path, views=SHARING_VIEWS)
    assert all(p.cached for p in warm.plan.nodes.values() if p.node.kind in ("dataset", "derive"))
    assert warm.compute(progress=False).forward_passes == 0


# -------------------------------------------------------------------------------------- errors


def write(tmp_path: Path, planted_model: Path, views: str) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(spec_text(planted_model, views))
    return path


def test_layer_beyond_depth_is_a_spec_error_at_its_line(planted_model, tmp_path, capsys):
    path = write(tmp_path, planted_model, "  tc: {type: text_clusters, layer: 0}\n"
                                          "  nc:\n    type: neuron_clusters\n    layers: [0, 99]\n")
    assert main(["plan", str(path), "--cache-dir", str(tmp_path / "c")]) == 2
    out = capsys.readouterr()
    assert "Traceback" not in out.err + out.out
    lines = path.read_text().splitlines()
    line = next(i for i, l in enumerate(lines, 1) if "layers: [0, 99]" in l)
    col = lines[line - 1].index("99") + 1
    (issue,) = [l for l in out.err.splitlines() if "99" in l and "depth" in l]
    assert issue.startswith(f"{path}:{line}:{col}: views.nc.layers.1: layer 99 is beyond the model's depth"), out.err


def test_difference_of_labels_without_a_and_b_is_a_validate_error(planted_model, tmp_path, capsys):
    path = write(tmp_path, planted_model, "  diff: {type: difference, compare: labels, a: food}\n")
    assert main(["validate", str(path)]) == 2
    out = capsys.readouterr()
    assert "Traceback" not in out.err + out.out
    lines = path.read_text().splitlines()
    line = next(i for i, l in enumerate(lines, 1) if "compare: labels" in l)
    assert f"{path}:{line}:" in out.err and "needs both `a` and `b`" in out.err, out.err


# ----------------------------------------------------------------------------------- rendering


def html_of(app) -> str:
    import panel as pn

    found = app.select(pn.pane.HTML)  # every HTML pane of the tree, grid cards included
    assert len(found) > 4
    return "\n".join(str(p.object) for p in found)


def test_views_render_without_error_cards_and_follow_the_cluster(planted_model, tmp_path):
    pytest.importorskip("panel")
    from lensframe.focus import Focus
    from lensframe.server.app import build_app

    views = VIEWS.replace("IMPORTANCE", "activation") + "  top: {type: top_examples, layers: [0], k: 5}\n"
    b = planted_board(planted_model, tmp_path, views=views)
    b.compute(progress=False)
    focus = Focus(model="main")
    app = build_app(b, focus)
    text = html_of(app)
    assert "lf-error" not in text, text[:3000]
    assert "lf-nclusters-head" in text and "lf-clusters-head" in text and "lf-diff-head" in text
    assert "click a cluster" in text  # diffc waits for a cluster
    assert "sampled by activation importance" in text  # the view says which importance it shows

    food = next(c["cluster"] for c in b.result(b.views["nc"].nodes(16)[1]).meta["clusters"] if c["tag"] == "food")
    focus.update(cluster=food)
    text = html_of(app)
    assert "lf-error" not in text, text[:3000]
    assert f"neurons of cluster <b class='lf-cluster'>{food}</b> (food)" in text
    assert text.count("lf-diff-head") == 1  # a neuron cluster is not a text cluster: diffc still waits
    focus.update(text_cluster=0)
    text = html_of(app)
    assert "click a cluster" not in text and text.count("lf-diff-head") == 2  # cluster vs the rest now shown
    # a click on a member neuron sets layer and neuron: the neuron views follow (food texts on top)
    neuron = PLANTED["food"][3]
    focus.update(layer=0, neuron=neuron)
    text = html_of(app)
    assert "lf-error" not in text, text[:3000]
    assert f"lf-neuron'>{neuron_label(0, neuron)}</b>" in text
    samples = [int(x) for x in re.findall(r"lf-example-head'>#\d+ · sample (\d+)", text)]
    assert len(samples) == 5 and all(LABELS[s] == "food" for s in samples), samples


def test_a_neuron_cluster_click_does_not_break_the_difference_view(planted_model, tmp_path):
    pytest.importorskip("panel")
    from lensframe.focus import Focus
    from lensframe.server.app import build_app

    b = planted_board(planted_model, tmp_path)  # nc: k=4 neuron clusters; diffc: k=3 text clusters
    b.compute(progress=False)
    focus = Focus(model="main")
    app = build_app(b, focus)
    focus.update(cluster=3)  # what clicking neuron cluster c3 in the nc view does
    text = html_of(app)
    assert "lf-error" not in text, re.findall(r"lf-error'><b>(.*?)</b>(.{0,120})", text)
    assert "click a cluster (in a text_clusters view)" in text  # text clusters have their own focus field
    focus.update(text_cluster=2)
    text = html_of(app)
    assert "lf-error" not in text and "<b class='lf-group-a'>cluster 2</b>" in text


def test_difference_labels_are_checked_against_the_dataset(planted_model, tmp_path, capsys):
    from lensframe.cli import main

    text = spec_text(planted_model, "  d: {type: difference, compare: labels, a: food, b: lw}\n")
    path = tmp_path / "s.yaml"
    path.write_text(text)
    assert main(["plan", str(path), "--cache-dir", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert "views.d.b: label 'lw' is not in the dataset" in err and "did you mean 'law'?" in err
    assert "Traceback" not in err


def test_difference_must_describe_the_clusters_the_map_shows(planted_model, tmp_path, capsys):
    from lensframe.cli import main

    views = "  tc: {type: text_clusters, k: 3}\n  d: {type: difference}\n"
    path = tmp_path / "s.yaml"
    path.write_text(spec_text(planted_model, views))
    assert main(["plan", str(path), "--cache-dir", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert "views.d: clusters the texts differently from text_clusters view 'tc'" in err
    path.write_text(spec_text(planted_model, views.replace("{type: difference}", "{type: difference, k: 3}")))
    assert main(["plan", str(path), "--cache-dir", str(tmp_path / "c")]) == 0


def test_per_label_sampling_balances_topics(tmp_path):
    from lensframe.data import load_dataset
    from lensframe.spec.schema import DatasetSpec

    ds = load_dataset(DatasetSpec(source="builtin:fortunes", label="topic", per_label=5, limit=None,
                                  categories=["computers", "food", "law"]), tmp_path)
    assert sorted(ds.labels) == ["computers"] * 5 + ["food"] * 5 + ["law"] * 5


# ------------------------------------------------------------------- the maps: HoloViews, brushing


def test_robust_limits_keep_one_outlier_from_squashing_the_map():
    from lensframe.views.cluster_map import robust_limits

    rng = np.random.default_rng(0)
    x = rng.normal(size=200)
    lo, hi, outside = robust_limits(x)
    assert outside == 0 and lo < x.min() and hi > x.max()  # nothing far out: everything shown, padded
    far = np.append(x, 1000.0)
    lo2, hi2, outside2 = robust_limits(far)
    q1, q3 = np.percentile(far, [25, 75])
    assert outside2 == 1 and hi2 < 1000.0
    assert hi2 <= (q3 + 3 * (q3 - q1)) + 0.05 * (hi2 - lo2) + 1e-9  # clipped at the far-out fence (+ padding)
    assert (hi2 - lo2) < 2 * (hi - lo)  # the other 200 points keep their spread
    assert robust_limits([2.0, 2.0, 2.0]) == (1.5, 2.5, 0)  # no spread: a unit-wide range around it


def test_lasso_polygon_and_click_pick_the_right_points():
    from lensframe.views.cluster_map import inside_polygon, nearest

    rng = np.random.default_rng(1)
    x, y = rng.uniform(-1, 1, 500), rng.uniform(-1, 1, 500)
    box = inside_polygon(x, y, [-0.3, 0.5, 0.5, -0.3], [-0.2, -0.2, 0.6, 0.6])
    assert np.array_equal(box, (x > -0.3) & (x < 0.5) & (y > -0.2) & (y < 0.6))
    tri = inside_polygon(x, y, [0, 1, 0], [0, 0, 1])  # the triangle x > 0, y > 0, x + y < 1
    assert np.array_equal(tri, (x > 0) & (y > 0) & (x + y < 1))
    # a non-convex "L": the unit square without its top-right quarter
    ell = inside_polygon(x, y, [0, 1, 1, 0.5, 0.5, 0], [0, 0, 0.5, 0.5, 1, 1])
    assert np.array_equal(ell, (x > 0) & (y > 0) & (x < 1) & (y < 1) & ~((x > 0.5) & (y > 0.5)))
    assert not inside_polygon(x, y, [0, 1], [0, 1]).any()  # a line is no lasso
    assert nearest(x, y, x[7] + 0.001, y[7], (-1, 1), (-1, 1)) == 7
    assert nearest(x, y, 5.0, 5.0, (-1, 1), (-1, 1)) is None  # far from every point: nothing
    # shares of the visible range: zoomed in 100x, the same click is 100x further from a point
    assert nearest([0.0], [0.0], 0.01, 0.0, (-1, 1), (-1, 1)) == 0
    assert nearest([0.0], [0.0], 0.01, 0.0, (-0.01, 0.01), (-0.01, 0.01)) is None


def map_streams(app, vid: str) -> dict:
    """The Tap and Lasso streams Bokeh feeds on one view's map (found on the HoloViews plot the
    page got, not on the view: the same objects a browser's gestures reach)."""
    import holoviews as hv
    import panel as pn

    card = next(c for c in app.select(pn.Card) if f"lf-card-{vid}" in c.css_classes)
    (pane,) = card.select(pn.pane.HoloViews)
    (plot, _), = pane._plots.values()
    streams = [s for p in plot.traverse(lambda p: p) for cb in getattr(p, "callbacks", []) for s in cb.streams]
    return {"tap": next(s for s in streams if isinstance(s, hv.streams.Tap)),
            "lasso": next(s for s in streams if isinstance(s, hv.streams.Lasso))}


def card_html(app, vid: str) -> str:
    import panel as pn

    card = next(c for c in app.select(pn.Card) if f"lf-card-{vid}" in c.css_classes)
    return "\n".join(str(p.object) for p in card.select(pn.pane.HTML) if p.visible)


def box(x0, x1, y0, y1) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=float)


@pytest.fixture(scope="module")
def planted_served(planted_model, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("brushing")
    b = planted_board(planted_model, tmp)
    b.compute(progress=False)
    return b


def test_a_lasso_of_texts_is_described_against_the_rest(planted_served):
    """Lasso on the text map -> focus.texts holds exactly the texts inside the polygon -> the
    difference view describes them against the rest, with the numbers of the describe functions
    run directly on those texts."""
    from lensframe.ops.describe import describe_groups

    from .test_in_place import served

    b = planted_served
    app, focus = served(b, in_place=True)
    tc = b.result(b.views["tc"].needs(16)[2])
    x, y = tc["coords"][:, 0], tc["coords"][:, 1]
    # a box around the left half of the map, by the x median: a group of about half the texts
    x0, x1, y0, y1 = x.min() - 1, float(np.median(x)), y.min() - 1, y.max() + 1
    inside = sorted(int(i) for i in np.flatnonzero((x > x0) & (x < x1) & (y > y0) & (y < y1)))
    assert 5 < len(inside) < len(TEXTS) - 5
    map_streams(app, "tc")["lasso"].event(geometry=box(x0, x1, y0, y1))
    assert focus.texts == inside

    html = card_html(app, "diffc")  # compare: cluster follows the selection
    rest = [i for i in range(len(TEXTS)) if i not in inside]
    want = describe_groups([TEXTS[i] for i in inside], [TEXTS[i] for i in rest], prior_texts=TEXTS, seed=0)
    sep = want["separability"]
    assert f"<b class='lf-group-a'>the {len(inside)} selected texts</b>" in html
    assert f"<span class='lf-n-a'>{len(inside)}</span>" in html and f"<span class='lf-n-b'>{len(rest)}</span>" in html
    assert f"balanced accuracy <b class='lf-balanced'>{sep['balanced_accuracy']:.2f}</b>" in html
    assert f"plain accuracy {sep['accuracy']:.2f}" in html
    assert ("lf-above-chance" in html) == sep["above_chance"] and ("lf-at-chance" in html) != sep["above_chance"]
    top_a = [t["term"] for t in want["terms"] if t["side"] == "a"][:3]
    for term in top_a:
        assert f"<span class='lf-chip lf-term'>{term} " in html, term
    # the map caption names the same selection
    assert f"data-texts='{','.join(map(str, inside))}'" in card_html(app, "tc")

    # a click picks the text under it and leaves the selection alone; "clear selection" clears it
    j = inside[0]
    map_streams(app, "tc")["tap"].event(x=float(x[j]), y=float(y[j]))
    assert focus.sample == j and focus.text_cluster == int(tc["labels"][j]) and focus.texts == inside
    focus.update(texts=[])
    html = card_html(app, "diffc")
    assert f"<b class='lf-group-a'>cluster {int(tc['labels'][j])}</b>" in html  # back to the focused cluster
    # a lasso around nothing clears the selection too
    focus.update(texts=inside)
    map_streams(app, "tc")["lasso"].event(geometry=box(x.max() + 5, x.max() + 6, y.max() + 5, y.max() + 6))
    assert focus.texts == []


def test_the_balanced_figure_leads_and_at_chance_is_said(planted_served):
    """Two food texts against the other 58: plain accuracy stays high while balanced accuracy is
    the figure in bold, with its chance level; what the view says matches describe's test."""
    from lensframe.ops.describe import separability

    from .test_in_place import served

    b = planted_served
    app, focus = served(b, in_place=True)
    few = [0, 3]
    focus.update(texts=few)
    html = card_html(app, "diffc")
    rest = [i for i in range(len(TEXTS)) if i not in few]
    sep = separability([TEXTS[i] for i in few], [TEXTS[i] for i in rest], seed=0)
    assert "<span class='lf-n-a'>2</span>" in html and f"<span class='lf-n-b'>{len(rest)}</span>" in html
    assert f"balanced accuracy <b class='lf-balanced'>{sep['balanced_accuracy']:.2f}</b> <span class='lf-chance'>(chance 0.50)</span>" in html
    assert "<b class='lf-accuracy'>" not in html  # plain accuracy is never the bold figure
    verdict = "lf-above-chance" if sep["above_chance"] else "lf-at-chance"
    assert verdict in html and f"p = {sep['p_chance']:.2g}" in html
    # a random half of the texts: no signal, the view says so
    rng = np.random.default_rng(5)
    half = sorted(int(i) for i in rng.choice(len(TEXTS), len(TEXTS) // 2, replace=False))
    sep = separability([TEXTS[i] for i in half], [TEXTS[i] for i in range(len(TEXTS)) if i not in half], seed=0)
    focus.update(texts=half)
    html = card_html(app, "diffc")
    assert ("lf-at-chance" in html) == (not sep["above_chance"])
    if not sep["above_chance"]:
        assert "at chance: their words tell them apart no better than guessing" in html


def neuron_effects_by_hand(imp, members_flat, mapped_flat) -> np.ndarray:
    """The enrichment effects of a group of neurons, from the stored importance sums alone: the
    held-out half's mean importance per topic, as shares per neuron; (group mean - median over the
    mapped neurons) / SD over them."""
    sums, counts = imp["sums"], imp["counts"]
    test = sums[:, :, 1] / np.maximum(counts[:, 1], 1)[None, :]
    shares = test / np.maximum(test.sum(1, keepdims=True), 1e-12)
    mapped = shares[mapped_flat]
    return (shares[members_flat].mean(0) - np.median(mapped, 0)) / mapped.std(0, ddof=1)


def test_a_lasso_of_neurons_gets_their_topic_enrichment(planted_served):
    from .test_in_place import served

    b = planted_served
    app, focus = served(b, in_place=True)
    imp_node, cl_node = b.views["nc"].nodes(16)
    imp, nc = b.result(imp_node), b.result(cl_node)
    x, y = nc["coords"][:, 0], nc["coords"][:, 1]
    food = [j for j, (l, n) in enumerate(zip(nc["layer"], nc["neuron"])) if l == 0 and n in PLANTED["food"]]
    pad = 1e-3
    x0, x1, y0, y1 = x[food].min() - pad, x[food].max() + pad, y[food].min() - pad, y[food].max() + pad
    inside = np.flatnonzero((x > x0) & (x < x1) & (y > y0) & (y < y1))
    assert set(food) <= set(inside.tolist())
    map_streams(app, "nc")["lasso"].event(geometry=box(x0, x1, y0, y1))
    chosen = sorted([int(nc["layer"][j]), int(nc["neuron"][j])] for j in inside)
    assert sorted(focus.neurons) == chosen

    res = b.executor.lookup(b.views["nc"].enrichment_node(16), neurons=tuple(tuple(x) for x in focus.neurons))
    d = imp.meta["d_mlp"]
    flat = lambda l, n: imp.meta["layers"].index(int(l)) * d + int(n)  # noqa: E731
    want = neuron_effects_by_hand(imp, [flat(*c) for c in chosen], [flat(l, n) for l, n in zip(nc["layer"], nc["neuron"])])
    np.testing.assert_allclose(res.meta["effects"], want, rtol=1e-6, atol=1e-9)
    topics = res.meta["topics"]
    assert res.meta["best_topic"] == "food" and res.meta["tag"] == "food" and res.meta["selected"] == len(chosen)
    assert res.meta["p"] <= 2 / (1 + res.meta["n_perm"]) and res.meta["held_out"]
    assert res.meta["effect"] == pytest.approx(want[topics.index("food")])
    html = card_html(app, "nc")
    assert "enriched for <b class='lf-enriched'>food</b>" in html
    assert f"d = {res.meta['effect']:.2f}" in html and f"<b class='lf-selected-count'>{len(chosen)}</b>" in html

    # generalists only (no planted neuron): the held-out test finds nothing
    planted = {n for ns in PLANTED.values() for n in ns}
    others = tuple((int(l), int(n)) for l, n in zip(nc["layer"], nc["neuron"]) if n not in planted)[:20]
    focus.update(neurons=[list(x) for x in others])
    res = b.executor.lookup(b.views["nc"].enrichment_node(16), neurons=others)
    assert res.meta["tag"] is None and res.meta["p"] > 0.05, res.meta
    assert "not enriched for any topic" in card_html(app, "nc")
    # a click on a neuron focuses it (layer, index, cluster) and keeps the selection
    j = food[0]
    map_streams(app, "nc")["tap"].event(x=float(x[j]), y=float(y[j]))
    assert (focus.layer, focus.neuron, focus.cluster) == (int(nc["layer"][j]), int(nc["neuron"][j]), int(nc["cluster"][j]))
    assert f"<b class='lf-focused-neuron'>{neuron_label(focus.layer, focus.neuron)}</b>" in card_html(app, "nc")


BRUSH_CHANGES = [{"text_cluster": 1}, {"texts": [0, 1, 2, 5, 8]}, {"sample": 3}, {"cluster": 0},
                 {"layer": 0, "neuron": 5}, {"neurons": [[0, 1], [0, 2], [0, 9]]}, {"texts": []},
                 {"text_cluster": None, "cluster": None}, {"texts": list(range(10, 30))}, {"neurons": []}]


@pytest.mark.parametrize("vid", ["tc", "diffc", "nc"])
def test_focus_and_selection_changes_build_no_new_bokeh_models(planted_served, vid):
    """The maps are built once per session: clicks, lassos and cluster changes patch the page."""
    from .test_in_place import card_models, served

    app, focus = served(planted_served, in_place=True)
    focus.update(text_cluster=0, cluster=1, texts=[1, 2], neurons=[[0, 3], [0, 4]], layer=0, neuron=2)  # every part shown once
    before = card_models(app, vid)
    for change in BRUSH_CHANGES:
        focus.update(**change)
        after = card_models(app, vid)
        assert after <= before, f"{vid}: {change} built {len(after - before)} new Bokeh model(s)"
    # the count can fail: the re-create engine, on the same board, builds new ones
    app, focus = served(planted_served, in_place=False)
    before = card_models(app, vid)
    focus.update(text_cluster=0, texts=[1, 2], cluster=1, neurons=[[0, 3], [0, 4]])
    assert card_models(app, vid) - before


def test_selections_round_trip_through_the_address():
    from types import SimpleNamespace
    from urllib.parse import parse_qsl

    from lensframe.focus import Focus
    from lensframe.focus_url import focus_query, parse_query

    info = SimpleNamespace(n_layers=4, n_heads=2, d_mlp=16)
    board = SimpleNamespace(spec=SimpleNamespace(models={"a": None}), infos={"a": info}, dataset=list(range(50)))
    focus = Focus(model="a")
    default = focus.values()
    focus.update(texts=[3, 7, 12], neurons=[[1, 5], [3, 15]])
    query = focus_query(focus.values(), default)
    assert "texts=3,7,12" in query and "neurons=L1/N5,L3/N15" in query  # the ids as views write them
    fields, problems = parse_query(parse_qsl(query), board)
    assert problems == [] and fields == {"texts": [3, 7, 12], "neurons": [[1, 5], [3, 15]]}
    assert focus_query(default, default) == ""  # no selection: nothing in the link
    fields, problems = parse_query([("texts", "3,x,99,3"), ("neurons", "L1/N5,7.808,L9/N1")], board)
    assert fields == {"texts": [3], "neurons": [[1, 5]]}
    said = " | ".join(problems)
    for part in ("'x' is not a whole number", "99 is out of range (0..49)", "'7.808' is not a neuron id like L6/N12",
                 "L9/N1 is out of range"):
        assert part in said, (part, said)
