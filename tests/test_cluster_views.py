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
    assert f"lf-neuron'>0.{neuron}</b>" in text
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
