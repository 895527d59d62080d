"""Two models in one spec and the model_diff view's numbers: the weight diff finds (and ranks
first) the edited layer with the edit's rank, the dataset KL equals an independent computation,
each model's dataset pass is one fused pass, and the paired lens reads both models.

The paired lens (issue 14: an audit click cost seconds, 83% of it this lookup): its numbers equal
the per-layer computation it replaced (one matrix-vector product per layer on a plain forward);
a position change within a sample seen before runs no forward of either model, and with the
focus results kept none runs at all; all rows of both models are decoded in one matmul; its rows
are labelled as the logit_lens view labels them; and the view updates in place (no new Bokeh
models on a focus change)."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import TEXTS, tiny_spec

EDIT_LAYER = 1


def _edited_copy(src: Path, dst: Path, rank: int = 1, seed: int = 0) -> Path:
    """A copy of a tiny model whose layer-1 MLP output matrix got a rank-`rank` update."""
    import torch
    from transformers import AutoModelForCausalLM

    shutil.copytree(src, dst, dirs_exist_ok=True)
    model = AutoModelForCausalLM.from_pretrained(dst)
    from lensframe.models.adapters import Adapter, family_for

    ad = Adapter(model, family_for(model.config.model_type))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        vv = ad.value_vectors(EDIT_LAYER)  # a view of the weight: the edit lands in the model
        vv += torch.randn(vv.shape[0], rank, generator=g) @ torch.randn(rank, vv.shape[1], generator=g) * 0.3
    model.save_pretrained(dst)
    return dst


def _two_model_spec(base: Path, edited: Path, views: str, keep_focus_mb: float = 0) -> str:
    spec = tiny_spec(base, views, keep_focus_mb=keep_focus_mb)
    return spec.replace(f"model: path:{base}\n", f"models:\n  base: {{source: path:{base}}}\n  edited: {{source: path:{edited}}}\n")


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def pair(request, tiny_models, tmp_path_factory):
    from lensframe.board import Board

    base = tiny_models[request.param]
    edited = _edited_copy(base, tmp_path_factory.mktemp(f"edited-{request.param}"))
    views = ("  diff: {type: model_diff, model: edited, other: base}\n"
             "  lens_a: {type: logit_lens, model: base}\n  lens_b: {type: logit_lens, model: edited}")
    board = Board.from_text(_two_model_spec(base, edited, views), cache_dir=tmp_path_factory.mktemp("store"))
    return board


def test_weight_diff_ranks_the_edited_layer_first_with_rank_one(pair):
    from lensframe.model_compare import layer_ranking

    w = pair.result(pair.views["diff"].weights_node())
    ranking = layer_ranking(w)
    assert ranking[0][0] == EDIT_LAYER and ranking[1][1] == 0.0
    changed = np.flatnonzero(w["delta"] > 0)
    assert len(changed) == 1 and w["layer"][changed[0]] == EDIT_LAYER and w["rank"][changed[0]] == 1
    assert w["sv"][changed[0], 1] < 1e-5 * w["sv"][changed[0], 0]


def test_model_kl_matches_an_independent_computation_in_one_pass_per_model(pair):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    report = pair.compute(progress=False)
    # edited's pass: lens + kl fused, plus base running inside it on the same batches; base's own pass for its lens
    batches = -(-len(TEXTS) // 3)
    assert report.batches == 2 * batches
    kl = pair.result(pair.views["diff"].kl_node(16))
    paths = {n: pair.spec.models[n].source.split(":", 1)[1] for n in ("base", "edited")}
    tok = AutoTokenizer.from_pretrained(paths["base"])
    ma, mb = (AutoModelForCausalLM.from_pretrained(paths[n]).eval() for n in ("edited", "base"))
    for i, text in enumerate(TEXTS):
        ids = torch.tensor([tok(text, truncation=True, max_length=16)["input_ids"]])
        with torch.no_grad():
            pa, pb = torch.log_softmax(ma(ids).logits[0], -1), torch.log_softmax(mb(ids).logits[0], -1)
        want = (pa.exp() * (pa - pb)).sum(-1).numpy()
        np.testing.assert_allclose(kl["kl"][i, : len(want)], want, rtol=1e-3, atol=1e-5)
        assert kl["mean"][i] == pytest.approx(want.mean(), rel=1e-3, abs=1e-6)


def test_pair_lens_reads_both_models(pair):
    import torch

    pair.compute(progress=False)
    node = pair.views["diff"].lens_node()
    res = pair.executor.lookup(node, sample=2, position=3, top=5)
    tok = pair.executor.tokens("edited")
    ids = torch.as_tensor(tok["ids"][2 : 3, : tok["lengths"][2]], dtype=torch.long)
    for tag, name in (("a", "edited"), ("b", "base")):
        model = pair.executor.model(name).model
        with torch.no_grad():
            p = torch.softmax(model(ids).logits[0, 3], -1)
        assert res[f"top_{tag}"][-1] == int(p.argmax()) and res[f"prob_{tag}"][-1] == pytest.approx(float(p.max()), rel=1e-4)
    # the embedding and the blocks before the edit give the same residual in both models
    same = slice(0, EDIT_LAYER + 1)
    assert (res["top_a"][same] == res["top_b"][same]).all() and (res["kl"][same] == 0).all()
    assert (res["kl"][EDIT_LAYER + 1:] > 0).all()
    assert len(res["moved_ids"]) == 10


def test_model_diff_spec_errors(tiny_models, tmp_path):
    from lensframe.cli import main

    base, other = tiny_models["llama"], tiny_models["gpt2"]
    import contextlib
    import io

    for views, message in [("  diff: {type: model_diff, model: edited, other: bsae}", "unknown model 'bsae'"),
                           ("  diff: {type: model_diff, model: edited}", None)]:
        spec = tmp_path / "s.yaml"
        spec.write_text(_two_model_spec(base, other, views))
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = main(["plan", str(spec)])
        assert code == 2, err.getvalue()
        text = err.getvalue()
        if message:
            assert message in text and "did you mean 'base'?" in text
        else:
            assert "differ in shape" in text and "views.diff" in text
    spec.write_text(tiny_spec(base, "  diff: {type: model_diff}"))
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(["plan", str(spec)]) == 2
    assert "model_diff needs two models" in err.getvalue()


# --- the paired lens: numbers, forwards, one matmul, labels ----------------------------------------

def _per_layer_reference(model, family: str, ids, position: int):
    """The pair lens as it was computed before issue 14, on a plain HF forward: each block's output
    but the last through the final norm and the unembedding, one matrix-vector product per layer,
    then the model's own output; plus the embedding row (hidden_states[0]) the lens now starts with.
    log-probabilities in float64, [layers + 1, V]."""
    import torch

    with torch.no_grad():
        out = model(input_ids=ids, output_hidden_states=True, use_cache=False)
        hs = out.hidden_states  # [0]: the embedding; [l + 1]: block l's output ([L] has the final norm)
        body = model.transformer if family == "gpt2" else model.model
        norm = body.ln_f if family == "gpt2" else body.norm
        E = model.get_output_embeddings().weight
        rows = [torch.log_softmax((norm(hs[l][0, position]) @ E.T).double(), -1) for l in range(len(hs) - 1)]
        rows.append(torch.log_softmax(out.logits[0, position].double(), -1))
    return torch.stack(rows)


@pytest.mark.parametrize("position", [0, 3, None])
def test_pair_lens_equals_the_per_layer_computation(pair, position):
    import torch
    from transformers import AutoModelForCausalLM

    node = pair.views["diff"].lens_node()
    family = pair.infos["edited"].family
    tok = pair.executor.tokens("edited")
    sample = 5
    n = int(tok["lengths"][sample])
    ids = torch.as_tensor(tok["ids"][sample : sample + 1, :n], dtype=torch.long)
    pos = n - 1 if position is None else position
    res = pair.executor.lookup(node, sample=sample, position=position, top=4)
    assert res.meta["position"] == pos
    lps = {}
    for tag, name in (("a", "edited"), ("b", "base")):
        path = pair.spec.models[name].source.split(":", 1)[1]
        model = AutoModelForCausalLM.from_pretrained(path).eval()
        lp = lps[tag] = _per_layer_reference(model, family, ids, pos)
        assert res[f"top_{tag}"].shape == (pair.infos[name].n_layers + 1,)
        p = lp.exp()
        top = p.topk(5, -1)
        # float32 lens against a float64 reference: ties within rounding may swap, so compare the
        # probability each chosen token has, and the top probabilities themselves
        np.testing.assert_allclose(res[f"probs_{tag}"], top.values.numpy(), atol=2e-6, rtol=1e-4)
        chosen = p.gather(-1, torch.as_tensor(res[f"ids_{tag}"].astype(np.int64)))
        np.testing.assert_allclose(chosen.numpy(), res[f"probs_{tag}"], atol=2e-6, rtol=1e-4)
        assert (res[f"top_{tag}"] == res[f"ids_{tag}"][:, 0]).all()
        np.testing.assert_allclose(res[f"prob_{tag}"], res[f"probs_{tag}"][:, 0])
    kl = (lps["a"].exp() * (lps["a"] - lps["b"])).sum(-1).clamp_min(0)
    np.testing.assert_allclose(res["kl"], kl.numpy(), atol=1e-5, rtol=1e-3)
    finals = {tag: lp[-1].exp() for tag, lp in lps.items()}
    assert_moved_tokens(res, finals, k=4, atol=2e-6)


def assert_moved_tokens(res, finals: dict, k: int, atol: float, rtol: float = 1e-4) -> None:
    """pair_lens's moved tokens against the two models' final next-token distributions (torch, by
    tag "a": the model, "b": the other, the reference): each model's probability of them, and the
    k most raised then the k most lowered from the reference to the model (p_a − p_b)."""
    import torch

    moved = finals["a"] - finals["b"]
    got = torch.as_tensor(res["moved_ids"].astype(np.int64))
    np.testing.assert_allclose(res["moved_a"], finals["a"][got].numpy(), atol=atol, rtol=rtol)
    np.testing.assert_allclose(res["moved_b"], finals["b"][got].numpy(), atol=atol, rtol=rtol)
    np.testing.assert_allclose(moved[got[:k]].numpy(), moved.topk(k).values.numpy(), atol=atol)
    np.testing.assert_allclose(moved[got[k:]].numpy(), -(-moved).topk(k).values.numpy(), atol=atol)


def test_pair_lens_rows_are_the_logit_lens_rows(pair):
    """One labelling everywhere: the paired lens's rows are the logit_lens view's (embed, then the
    blocks), and its top-1 tokens are the stored lens's of each model."""
    pair.compute(progress=False)
    res = pair.executor.lookup(pair.views["diff"].lens_node(), sample=1, position=2, top=3)
    for tag, vid in (("a", "lens_b"), ("b", "lens_a")):  # lens_b is the edited model's lens
        lens = pair.result(pair.views[vid].lens_node(16))
        assert res.meta["layers"] == lens.meta["layers"] and res.meta["blocks"] == lens.meta["blocks"]
        np.testing.assert_array_equal(res[f"top_{tag}"], lens["ids"][1, :, 2, 0])
        np.testing.assert_allclose(res[f"prob_{tag}"], lens["probs"][1, :, 2, 0], atol=1e-5, rtol=1e-4)
    assert res.meta["layers"][0] == "embed" and res.meta["layers"][1:] == [str(l) for l in range(3)]


def _counted(board):
    """Forward hooks counting each model's HF forward calls, and the executor's forward count."""
    from tests.test_probes import Counter

    return {m: Counter(board.executor.model(m).model) for m in ("edited", "base")}


@pytest.fixture(scope="module", params=["live", "kept"])
def focus_board(request, tiny_models, tmp_path_factory):
    """The pair with the focus results live (keep_focus_mb: 0: a first visit runs one forward per
    model) or kept in the store by the dataset pass (no forward at all)."""
    from lensframe.board import Board

    base = tiny_models["llama"]
    edited = _edited_copy(base, tmp_path_factory.mktemp("edited-focus"))
    views = "  diff: {type: model_diff, model: edited, other: base}\n  lens: {type: logit_lens, model: edited}"
    keep = 64 if request.param == "kept" else 0
    board = Board.from_text(_two_model_spec(base, edited, views, keep_focus_mb=keep),
                            cache_dir=tmp_path_factory.mktemp("store-focus"))
    board.compute(progress=False)
    return request.param, board


def test_a_position_change_runs_no_forward(focus_board):
    mode, board = focus_board
    ex, node = board.executor, board.views["diff"].lens_node()
    kept = {focus.op + "@" + focus.model for focus in board.plan.kept()}
    assert kept == ({"lens_residuals@edited", "lens_residuals@base"} if mode == "kept" else set())
    counters = _counted(board)
    try:
        before = ex.forward_passes
        ex.lookup(node, sample=2, position=1, top=5)  # a first visit
        first = 0 if mode == "kept" else 1
        assert {m: c.calls for m, c in counters.items()} == {"edited": first, "base": first}
        assert ex.forward_passes == before + 2 * first
        for position in (0, 3, None, 4):  # position changes within the sample: no forward
            ex.lookup(node, sample=2, position=position, top=5)
        ex.lookup(node, sample=2, position=3, top=3)  # another `top`: a new lookup, still no forward
        assert {m: c.calls for m, c in counters.items()} == {"edited": first, "base": first}
        ex.lookup(node, sample=4, position=1, top=5)  # another sample, then back: memoized
        ex.lookup(node, sample=2, position=2, top=5)
        assert {m: c.calls for m, c in counters.items()} == {"edited": 2 * first, "base": 2 * first}
        assert ex.forward_passes == before + 4 * first
    finally:
        for c in counters.values():
            c.close()


def test_all_rows_of_both_models_decode_in_one_matmul(focus_board, monkeypatch):
    """The models share the unembedding (the edit is inside a block), so one matmul decodes every
    row of both, and rows equal in both (the embedding and blocks before the edit) are decoded
    once; without a shared unembedding, one matmul per model gives the same numbers."""
    import lensframe.ops.compare as compare

    _, board = focus_board
    ex, node = board.executor, board.views["diff"].lens_node()
    ex.lookup(node, sample=3, position=0, top=5)  # the focus results, memoized
    calls = []
    real = compare._unembed
    monkeypatch.setattr(compare, "_unembed", lambda ad, x: calls.append(x.shape[0]) or real(ad, x))
    shared = ex.lookup(node, sample=3, position=2, top=5)
    L = board.infos["edited"].n_layers + 1
    assert calls == [L + (L - 1 - EDIT_LAYER)]  # a's rows, and b's rows from the edited block on
    monkeypatch.setattr(compare, "_shares_unembedding", lambda a, b: False)
    ex._lookup_memo.clear()
    calls.clear()
    apart = ex.lookup(node, sample=3, position=2, top=5)
    assert calls == [L, L]
    for name in shared.arrays:
        np.testing.assert_allclose(apart[name], shared[name], atol=1e-6, rtol=1e-5, err_msg=name)


# --- the view: in place, labelled ------------------------------------------------------------------

CHANGES = [{"position": 2}, {"sample": 3}, {"layer": 1, "position": 4}, {"layer": 2}, {"sample": 1, "position": None}]


def _served(board, in_place: bool):
    from bokeh.document import Document

    from lensframe.server.app import build_app

    focus = board.new_focus()
    app = build_app(board, focus, in_place=in_place)
    app.get_root(Document())  # the models a served page would get
    return app, focus


def _card(app, vid: str):
    import panel as pn

    return next(c for c in app.select(pn.Card) if f"lf-card-{vid}" in c.css_classes)


def _card_models(app, vid: str) -> set[str]:
    (root,) = _card(app, vid)._models.values()
    return {m.id for m in root[0].references()}


def test_a_focus_change_builds_no_new_bokeh_models(pair):
    pytest.importorskip("panel")
    pair.compute(progress=False)
    app, focus = _served(pair, in_place=True)
    before = _card_models(app, "diff")
    for change in CHANGES:
        focus.update(**change)
        after = _card_models(app, "diff")
        assert after <= before, f"{change} built {len(after - before)} new Bokeh model(s)"
    # the re-create engine builds new ones on the same changes: the count can fail
    app, focus = _served(pair, in_place=False)
    before = _card_models(app, "diff")
    focus.update(sample=3, position=2)
    assert _card_models(app, "diff") - before


def test_in_place_and_re_created_show_the_same(pair):
    pytest.importorskip("panel")
    from lensframe.views.widgets import HeatGrid

    from .test_neurons import html_of

    pair.compute(progress=False)
    kept, focus_a = _served(pair, in_place=True)
    fresh, focus_b = _served(pair, in_place=False)
    for change in CHANGES:
        focus_a.update(**change)
        focus_b.update(**change)
        assert html_of(_card(kept, "diff")) == html_of(_card(fresh, "diff"))
        (ga,), (gb,) = _card(kept, "diff").select(HeatGrid), _card(fresh, "diff").select(HeatGrid)
        assert {k: v for k, v in ga.param.values().items() if k != "name"} == \
               {k: v for k, v in gb.param.values().items() if k != "name"}


def test_the_paired_lens_reads_like_the_logit_lens(pair):
    """Rows labelled as the logit_lens card labels them (final on top), axis titles, the focused
    layer selected, KL in nats, and each cell the model's top-1 token with its probability."""
    pytest.importorskip("panel")
    from lensframe.views.widgets import HeatGrid

    from .test_neurons import html_of

    pair.compute(progress=False)
    app, focus = _served(pair, in_place=True)
    focus.update(sample=2, position=3, layer=1)
    (grid,) = _card(app, "diff").select(HeatGrid)
    (lens_grid,) = _card(app, "lens_b").select(HeatGrid)
    assert grid.row_labels == lens_grid.row_labels == ["2", "1", "0", "embed"]
    assert grid.row_labels[grid.selected_row] == "1"
    assert grid.col_labels == ["base", "edited", "KL(edited‖base)"]  # the reference first: base → edited
    assert grid.row_title.startswith("layer") and grid.col_title.startswith("model")
    res = pair.executor.lookup(pair.views["diff"].lens_node(), sample=2, position=3, top=8)
    tok = pair.executor.model("edited").tokenizer
    for row, l in enumerate(range(3, -1, -1)):  # final on top
        for col, tag in enumerate("ba"):
            token = tok.decode([int(res[f"top_{tag}"][l])], clean_up_tokenization_spaces=False)
            assert grid.texts[row][col].endswith(f" {res[f'prob_{tag}'][l]:.2f}")
            assert grid.texts[row][col].startswith(token[:9])
            assert abs(grid.values[row][col] - float(res[f"prob_{tag}"][l])) < 1e-6
        kl = float(res["kl"][l])
        assert grid.texts[row][2].endswith("0" if kl == 0 else f"{kl:.0e}" if kl < 0.01 else f"{kl:.2f}")
        assert "nats" in grid.tips[row][2] and abs(grid.values[row][2] - min(1.0, kl)) < 1e-6
    html = html_of(_card(app, "diff"))
    assert "lf-top-layer" in html and "lf-moved-up" in html and "nats" in html
    assert "position <b class='lf-position'>3</b>" in html
    # a click on a row focuses its layer; the embed row is no block
    grid._clicked(type("E", (), {"data": {"row": 0, "col": 1}})())
    assert focus.layer == 2
    grid._clicked(type("E", (), {"data": {"row": 3, "col": 0}})())
    assert focus.layer == 2


def test_two_identical_models_decode_once_and_differ_nowhere(tiny_models, tmp_path, monkeypatch):
    import lensframe.ops.compare as compare
    from lensframe.board import Board

    base = tiny_models["gpt2"]
    same = tmp_path / "same"
    shutil.copytree(base, same)
    board = Board.from_text(_two_model_spec(base, same, "  diff: {type: model_diff, model: edited, other: base}"),
                            cache_dir=tmp_path / "store")
    calls = []
    real = compare._unembed
    monkeypatch.setattr(compare, "_unembed", lambda ad, x: calls.append(x.shape[0]) or real(ad, x))
    res = board.executor.lookup(board.views["diff"].lens_node(), sample=0, position=2, top=3)
    assert calls == [board.infos["edited"].n_layers + 1]
    assert (res["kl"] == 0).all() and (res["ids_a"] == res["ids_b"]).all() and (res["probs_a"] == res["probs_b"]).all()
    np.testing.assert_array_equal(res["moved_a"], res["moved_b"])


# --- issue 15: the change read base → suspect, its spectrum in tokens, the texts against noise ------

WRITES_LAYER, READS_LAYER = 1, 2
WRITES_TOKEN, READS_TOKEN = " the", " you"  # single tokens of the tiny tokenizer (trained on TEXTS)


def _token_id(tok, text: str) -> int:
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == 1, f"{text!r} is not one token of the tiny tokenizer"
    return ids[0]


def _planted_copy(src: Path, dst: Path, kind: str) -> tuple[Path, dict]:
    """A copy of a tiny model with two rank-one edits whose directions name tokens:
    layer 1's MLP output matrix (it writes to the residual) gets σ·u vᵀ with u the direction that
    the logit lens reads as WRITES_TOKEN (its unembedding row through the final norm's weight),
    layer 2's MLP input projection (it reads the residual) gets σ·u vᵀ with v READS_TOKEN's
    embedding row. Layer 1's change is the larger, so it is the most changed layer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lensframe.models.adapters import Adapter, family_for

    shutil.copytree(src, dst, dirs_exist_ok=True)
    model = AutoModelForCausalLM.from_pretrained(dst)
    tok = AutoTokenizer.from_pretrained(dst)
    ad = Adapter(model, family_for(model.config.model_type))
    g = torch.Generator().manual_seed(1)
    tw, tr = _token_id(tok, WRITES_TOKEN), _token_id(tok, READS_TOKEN)
    with torch.no_grad():
        u = ad.unembed_weight[tw] / ad.final_norm.weight
        u = u / u.norm()
        v = torch.randn(ad.d_mlp, generator=g)
        ad.value_vectors(WRITES_LAYER).add_(torch.outer(v / v.norm(), u) * 20.0)  # rows layout: ΔW_lin = 20 u vᵀ
        proj = ad.mlp_in_projs(READS_LAYER)[-1]
        e = ad.embed_weight[tr] / ad.embed_weight[tr].norm()
        w = torch.randn(ad.d_mlp, generator=g)
        delta = torch.outer(w / w.norm(), e) * 2.0  # [d_mlp, d]: reads e
        proj.weight.add_(delta.T if kind == "gpt2" else delta)  # GPT-2's Conv1D stores [in, out]
    model.save_pretrained(dst)
    return dst, {"writes": tw, "reads": tr}


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def planted(request, tiny_models, tmp_path_factory):
    from lensframe.board import Board

    base = tiny_models[request.param]
    edited, tokens = _planted_copy(base, tmp_path_factory.mktemp(f"planted-{request.param}"), request.param)
    views = "  diff: {type: model_diff, model: edited, other: base}"
    board = Board.from_text(_two_model_spec(base, edited, views), cache_dir=tmp_path_factory.mktemp("store-planted"))
    board.compute(progress=False)
    return request.param, board, tokens


def _np_robust_z(x):
    med = np.median(x, -1, keepdims=True)
    return (x - med) / (1.4826 * np.median(np.abs(x - med), -1, keepdims=True))


def test_weight_diff_spectrum_and_directions_match_numpy(planted):
    """σ₁..σ₈, the singular vectors and their token readouts against numpy's SVD of ΔW from the
    saved weights, and each planted token found by its readout, beyond what random directions reach."""
    import torch
    from transformers import AutoModelForCausalLM

    from lensframe.model_compare import ROLES, changed_matrices

    kind, board, tokens = planted
    w = board.result(board.views["diff"].weights_node())
    paths = {n: board.spec.models[n].source.split(":", 1)[1] for n in ("base", "edited")}
    ma, mb = (AutoModelForCausalLM.from_pretrained(paths[n]) for n in ("edited", "base"))
    pb = dict(mb.named_parameters())
    body = ma.transformer if kind == "gpt2" else ma.model
    norm = (body.ln_f if kind == "gpt2" else body.norm)
    gamma = norm.weight.detach().double().numpy()
    E_out = ma.get_output_embeddings().weight.detach().double().numpy()
    E_in = ma.get_input_embeddings().weight.detach().double().numpy()
    mats = changed_matrices(w)
    assert [(m.layer, m.role, m.rank) for m in mats] == [(WRITES_LAYER, "writes", 1), (READS_LAYER, "reads", 1)]
    full = {n: p for n, p in ma.named_parameters()}
    for m in mats:
        name = next(n for n in full if n.endswith(f".{m.layer}.{m.name}"))
        d = (full[name].detach().double() - pb[name].detach().double()).numpy()
        if kind == "gpt2":
            d = d.T  # Conv1D [in, out] -> [out, in]
        U, S, Vt = np.linalg.svd(d, full_matrices=False)
        np.testing.assert_allclose(m.sv, S[:8], rtol=1e-4, atol=1e-5 * S[0])
        assert m.u.shape == (1, d.shape[0]) and m.v.shape == (1, d.shape[1])  # k = min(3, rank) = 1
        assert abs(float(m.u[0] @ U[:, 0])) == pytest.approx(1, abs=1e-5)
        assert abs(float(m.v[0] @ Vt[0])) == pytest.approx(1, abs=1e-5)
        assert m.u[0][np.argmax(np.abs(m.u[0]))] > 0  # the orientation rule
        np.testing.assert_allclose(m.sv[0] * np.outer(m.u[0], m.v[0]), d, atol=1e-5 * S[0])
        # the readout by hand, in float64
        if m.role == "writes":
            x = m.u[0].astype(np.float64)
            x = (x - x.mean()) if kind == "gpt2" else x  # LayerNorm centres
            scores = E_out @ (gamma * x)
        else:
            x = m.v[0].astype(np.float64)
            scores = (E_in @ x) / np.linalg.norm(E_in, axis=1) / np.linalg.norm(x)
        z = _np_robust_z(scores)
        np.testing.assert_array_equal(m.pos_ids[0], np.argsort(-z, kind="stable")[:8])
        np.testing.assert_array_equal(m.neg_ids[0], np.argsort(z, kind="stable")[:8])
        np.testing.assert_allclose(m.pos_z[0], np.sort(z)[::-1][:8], rtol=1e-3, atol=1e-3)
        np.testing.assert_allclose(m.neg_z[0], -np.sort(z)[:8], rtol=1e-3, atol=1e-3)
        assert (m.pos_ids[1:] == -1).all() and np.isnan(m.pos_z[1:]).all()  # beyond the rank: no readout
        # the planted token leads its readout (either side: the pair's sign is the rule's), beyond the null
        lead = m.pos_ids[0, 0] if m.pos_z[0, 0] >= m.neg_z[0, 0] else m.neg_ids[0, 0]
        assert lead == tokens[m.role]
        assert max(m.pos_z[0, 0], m.neg_z[0, 0]) > m.null_z
        # the null by hand: the same 64 seeded random unit directions, read out in numpy
        r = torch.randn(64, x.shape[0], generator=torch.Generator().manual_seed(0), dtype=torch.float64).numpy()
        r = r / np.linalg.norm(r, axis=1, keepdims=True)
        if m.role == "writes":
            rr = (r - r.mean(1, keepdims=True)) if kind == "gpt2" else r
            null = np.abs(_np_robust_z((rr * gamma) @ E_out.T)).max()
        else:
            null = np.abs(_np_robust_z((r @ E_in.T) / np.linalg.norm(E_in, axis=1))).max()
        assert m.null_z == pytest.approx(null, rel=1e-3)
        assert w["readout_null"][ROLES.index(m.role)] == m.null_z


def test_text_kl_baseline_matches_numpy():
    from lensframe.model_compare import text_kl_baseline

    rng = np.random.default_rng(0)
    kl = np.exp(rng.normal(-8, 1, 60))
    kl[[7, 30]] = np.exp(-8 + 12), np.exp(-8 + 6)  # two texts far above the rest, one farther
    kl[3] = np.nan  # an empty text
    b = text_kl_baseline(kl)
    ok = np.isfinite(kl)
    lx = np.log(kl[ok])
    med = np.median(lx)
    mad = np.median(np.abs(lx - med))
    want = np.full(60, np.nan)
    want[ok] = (lx - med) / (1.4826 * mad)
    np.testing.assert_allclose(b.z, want, rtol=1e-12)
    assert b.median == pytest.approx(np.exp(med)) and b.mad_log == pytest.approx(mad) and b.n == 59
    assert list(b.moved) == [7, 30] and b.max_z == pytest.approx(want[7])
    assert b.z[7] > 5 and (np.delete(want[ok], [6, 29]) < 5).all()  # noise alone stays below the threshold
    # all alike: nothing beyond noise; identical models: every KL 0, every z 0
    alike = text_kl_baseline(np.exp(rng.normal(-8, 1, 60)))
    assert len(alike.moved) == 0 and alike.max_z < 5
    zero = text_kl_baseline(np.zeros(5))
    assert len(zero.moved) == 0 and (zero.z == 0).all()


def _head_and_card(board):
    import panel as pn

    app, focus = _served(board, in_place=True)
    card = _card(app, "diff")
    (layout,) = [c for c in card.select(pn.Column) if "lf-view-model-diff" in c.css_classes]
    return layout.objects[0], card, focus


def test_the_head_gives_the_main_evidence_first(planted):
    """Above every list: base → edited, the most changed layer and matrix with its rank, the
    planted token its σ₁ direction promotes (standing out), whether the texts moved beyond noise
    (as numpy says), and where the inputs that excite the change are found."""
    pytest.importorskip("panel")
    from lensframe.model_compare import Z_MOVED

    from .test_neurons import html_of

    kind, board, tokens = planted
    head, card, _ = _head_and_card(board)
    text = head.object
    assert "lf-diff-head" in head.css_classes
    assert "<b>base → edited</b> (base: the reference, before the edit)" in text
    assert "<b class='lf-top-layer'>layer 1</b>" in text and "<b class='lf-top-rank'>rank 1</b>" in text
    down = "mlp.c_proj" if kind == "gpt2" else "mlp.down_proj"
    assert f"<code class='lf-top-matrix'>{down}</code>" in text
    assert f">{WRITES_TOKEN}</span>" in text.split("lf-diff-readout")[1] and "lf-stands-out" in text
    kl = board.result(board.views["diff"].kl_node(16))["mean"].astype(np.float64)
    lx = np.log(kl)
    z = (lx - np.median(lx)) / (1.4826 * np.median(np.abs(lx - np.median(lx))))
    if z.max() > Z_MOVED:
        assert "lf-diff-moved" in text and "lf-diff-noise" not in text
    else:
        assert "class='lf-diff-noise'>" in text and "nothing moved beyond noise: the largest text KL" in text
        assert f"is z = {z.max():.1f} over the dataset's median (text {int(np.argmax(z))}:" in text
    assert "lf-diff-inputs" in text and "edit_search" in text
    # the spectrum column: both matrices, one bar each (rank one), their tokens
    html = html_of(card)
    assert html.count("class='lf-spectrum'") == 2
    assert html.count("class='lf-sv'") == 2 and html.count("lf-sv lf-sv-zero") == 14
    assert f">{READS_TOKEN}</span>" in html.split(f"data-layer='{READS_LAYER}'")[1]


def test_the_texts_line_says_noise_or_moved():
    """The head's text line on KLs all alike (noise) and with one text far beyond them."""
    from lensframe.model_compare import text_kl_baseline
    from lensframe.views.model_diff import _texts_line

    rng = np.random.default_rng(1)
    kl = np.exp(rng.normal(-8, 0.5, 40))
    b = text_kl_baseline(kl)
    line = _texts_line(b, kl)
    top = int(np.argmax(kl))
    assert line.startswith("<div class='lf-diff-noise'>") and "nothing moved beyond noise: the largest text KL" in line
    assert f"is z = {b.z[top]:.1f} over the dataset's median (text {top}:" in line
    assert f"median {b.median:.1e} nats" in line or f"median {b.median:.3f} nats" in line
    kl[5] = np.exp(-8 + 10)
    b = text_kl_baseline(kl)
    line = _texts_line(b, kl)
    assert "lf-diff-moved" in line and "1 text moved beyond noise" in line and "(text 5:" in line
    assert "lf-diff-noise" not in line
    assert "every text's KL is 0" in _texts_line(text_kl_baseline(np.zeros(4)), np.zeros(4))


def test_moved_tokens_read_from_the_reference(pair):
    """'rose' lists tokens more probable in the model than in the reference (other → model)."""
    pytest.importorskip("panel")
    from .test_neurons import html_of

    pair.compute(progress=False)
    app, focus = _served(pair, in_place=True)
    focus.update(sample=2, position=3)
    res = pair.executor.lookup(pair.views["diff"].lens_node(), sample=2, position=3, top=8)
    assert (res["moved_a"][:8] - res["moved_b"][:8] > 0).all() and (res["moved_a"][8:] - res["moved_b"][8:] < 0).all()
    html = html_of(_card(app, "diff"))
    assert "the next token's probability, base → edited" in html
    pa, pb = res["moved_a"][0], res["moved_b"][0]
    assert f"base: {pb:.4f} → edited: {pa:.4f} ({pa - pb:+.4f})" in html


def test_identical_models_read_as_no_change(tiny_models, tmp_path):
    """Nothing differs: the head says so, the spectrum has no matrix, and no text moved."""
    pytest.importorskip("panel")
    from lensframe.board import Board

    from .test_neurons import html_of

    base = tiny_models["llama"]
    same = tmp_path / "same"
    shutil.copytree(base, same)
    board = Board.from_text(_two_model_spec(base, same, "  diff: {type: model_diff, model: edited, other: base}"),
                            cache_dir=tmp_path / "store")
    board.compute(progress=False)
    w = board.result(board.views["diff"].weights_node())
    assert len(w["matrix"]) == 0 and w.meta["roles"] == [] and (w["delta"] == 0).all()
    head, card, _ = _head_and_card(board)
    assert "no weight differs" in head.object
    html = html_of(card)
    assert "no matrix differs" in html and "every text's KL is 0" not in head.object  # the head stops at the weights
