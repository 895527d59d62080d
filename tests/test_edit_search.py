"""edit_search: every vocabulary token and dataset n-gram ranked by how much an edit changes a
layer's MLP output. The scores equal a hand computation from the weights (a plain forward for the
MLP's input, the MLP written out by hand, ΔW's SVD by numpy); the vocabulary scan's shared-prefix
cache reads what a full forward of prefix + token reads; the n-gram table keeps each n-gram's best
position; the view searches the most changed layer, and a click on a row adds it to the probes."""
from __future__ import annotations

import numpy as np
import pytest

from tests.test_model_diff import EDIT_LAYER, _edited_copy, _two_model_spec

PREFIX = "The law is"


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def pair(request, tiny_models, tmp_path_factory):
    from lensframe.board import Board

    base = tiny_models[request.param]
    edited = _edited_copy(base, tmp_path_factory.mktemp(f"search-{request.param}"))
    views = f"  search: {{type: edit_search, model: edited, other: base, prefix: {PREFIX!r}, top: 5}}"
    board = Board.from_text(_two_model_spec(base, edited, views), cache_dir=tmp_path_factory.mktemp("store"))
    board.compute(progress=False)
    return request.param, board


def _hand_mlp(kind: str, model, layer: int, x):
    """The layer's MLP on x from its weights, written out (not the module's forward), and its key."""
    import torch

    if kind == "gpt2":
        mlp = model.transformer.h[layer].mlp
        k = torch.nn.functional.gelu(x @ mlp.c_fc.weight + mlp.c_fc.bias, approximate="tanh")  # Conv1D: [in, out]
        return k @ mlp.c_proj.weight + mlp.c_proj.bias, k
    mlp = model.model.layers[layer].mlp
    k = torch.nn.functional.silu(x @ mlp.gate_proj.weight.T) * (x @ mlp.up_proj.weight.T)
    return k @ mlp.down_proj.weight.T, k


def _mlp_input(kind: str, model, ids):
    """The MLP's input (the normalized residual) at the last token, from a plain forward with a hook."""
    import torch

    block = model.transformer.h[EDIT_LAYER] if kind == "gpt2" else model.model.layers[EDIT_LAYER]
    norm = block.ln_2 if kind == "gpt2" else block.post_attention_layernorm
    seen = {}
    handle = norm.register_forward_hook(lambda m, a, out: seen.__setitem__("x", out))
    try:
        with torch.no_grad():
            model(torch.tensor([ids]))
    finally:
        handle.remove()
    return seen["x"][0, -1]


def test_scores_equal_a_hand_computation(pair):
    import torch

    from lensframe.edit_search_job import run_search

    kind, board = pair
    res = run_search(board, "edited", "base", EDIT_LAYER, PREFIX)
    ex = board.executor
    suspect, base = ex.model("edited"), ex.model("base")
    tok = suspect.tokenizer
    prefix = list(tok(PREFIX).input_ids)
    vv = lambda m: m.adapter.value_vectors(EDIT_LAYER).detach().double().numpy()  # noqa: E731
    U, S, _ = np.linalg.svd(vv(suspect) - vv(base), full_matrices=False)
    assert int(res.meta["rank"]) == 1 and res["sigma"][0] == pytest.approx(S[0], rel=1e-4)
    u = U[:, 0]
    for t in (0, 7, 123, len(tok) - 1):
        x = _mlp_input(kind, suspect.model, prefix + [t])
        with torch.no_grad():
            ys, _ = _hand_mlp(kind, suspect.model, EDIT_LAYER, x)
            yb, k = _hand_mlp(kind, base.model, EDIT_LAYER, x)
        change = float((ys - yb).norm() / yb.norm())
        k = k.double().numpy()
        assert res["vocab_change"][t] == pytest.approx(change, rel=1e-3, abs=1e-6)
        assert res["vocab_alignment"][t] == pytest.approx(abs(k @ u) / np.linalg.norm(k), rel=1e-3, abs=1e-6)
        # a rank-one ΔW = σ u vᵀ: the change is |uᵀk|·σ / ‖W k + b‖
        assert change == pytest.approx(abs(k @ u) * S[0] / float(yb.norm()), rel=1e-3)


def test_ngrams_keep_each_ngrams_best_position(pair):
    import torch

    from lensframe.edit_search_job import NGRAM, run_search

    kind, board = pair
    res = run_search(board, "edited", "base", EDIT_LAYER, PREFIX)
    ex = board.executor
    suspect, base = ex.model("edited"), ex.model("base")
    change = res["ngram_change"]
    assert (np.diff(change) <= 0).all() and len(change) > 0
    # the top row, recomputed by hand at its own position in its own text
    s, p = int(res["ngram_sample"][0]), int(res["ngram_position"][0])
    ids = [int(i) for i in ex.sample_ids("edited", s)[: p + 1]]
    x = _mlp_input(kind, suspect.model, ids)
    with torch.no_grad():
        ys, _ = _hand_mlp(kind, suspect.model, EDIT_LAYER, x)
        yb, _ = _hand_mlp(kind, base.model, EDIT_LAYER, x)
    assert change[0] == pytest.approx(float((ys - yb).norm() / yb.norm()), rel=1e-3)
    assert [int(t) for t in res["ngram_ids"][0] if t >= 0] == ids[-NGRAM:]
    # no dataset position scores above the top n-gram, and n-grams are distinct
    assert np.nanmax(res["data_change"]) == pytest.approx(float(change[0]), rel=1e-6)
    rows = [tuple(r) for r in res["ngram_ids"]]
    assert len(rows) == len(set(rows))


def test_a_search_is_stored_and_an_unchanged_layer_refused(pair):
    from lensframe.edit_search_job import run_search, stored
    from lensframe.errors import LensframeError

    kind, board = pair
    first = run_search(board, "edited", "base", EDIT_LAYER, PREFIX)
    assert stored(board, "edited", "base", EDIT_LAYER, PREFIX) is not None
    before = board.executor.forward_passes
    again = run_search(board, "edited", "base", EDIT_LAYER, PREFIX)
    np.testing.assert_array_equal(first["vocab_change"], again["vocab_change"])
    assert board.executor.forward_passes == before
    with pytest.raises(LensframeError, match="MLP is the same"):
        run_search(board, "edited", "base", 0, PREFIX)


def test_the_view_lists_rows_and_a_click_adds_a_probe(pair):
    pytest.importorskip("panel")
    from lensframe.server.app import build_app
    from tests.test_neurons import html_of

    kind, board = pair
    focus = board.new_focus()
    app = build_app(board, focus)
    text = html_of(app)
    assert "lf-error" not in text, text[:2000]
    assert f"layer <b class='lf-layer'>{EDIT_LAYER}</b> · MLP changed (base → edited)" in text
    assert "rank 1" in text
    lists = [o for o in app.select(lambda o: type(o).__name__ == "BarList")]
    vocab = next(o for o in lists if o.kind == "search-vocab")
    ngrams = next(o for o in lists if o.kind == "search-ngram")
    assert len(vocab.items) == 5 and len(ngrams.items) == 5
    top = vocab.items[0]["key"]
    vocab._clicked(type('Msg', (), {'data': {'key': top}})())  # as the page sends it: {key: ...}
    tok = board.executor.model("edited").tokenizer
    want = PREFIX + tok.decode([top])
    assert focus.text == want and [p.text for p in focus.probes] == [want]
    ngrams._clicked(type('Msg', (), {'data': {'key': 0}})())
    assert len(focus.probes) == 2 and focus.text == focus.probes[-1].text
    # a focused layer whose MLP did not change: the view says so and shows the changed one
    focus.update(layer=0)
    text = html_of(app)
    assert "the MLP of layer 0 did not change" in text and f"layer <b class='lf-layer'>{EDIT_LAYER}</b>" in text


def test_extending_a_candidate_leftwards_reads_prefix_token_and_candidate(pair):
    import torch

    from lensframe.edit_search import extend_left

    kind, board = pair
    ex = board.executor
    suspect, base = ex.model("edited"), ex.model("base")
    tok = suspect.tokenizer
    tail = [int(t) for t in tok(" cat sat").input_ids][-2:]
    change = extend_left(suspect, base, EDIT_LAYER, tail, PREFIX)
    prefix = list(tok(PREFIX).input_ids)
    for t in (3, 42):
        x = _mlp_input(kind, suspect.model, prefix + [t] + tail)
        with torch.no_grad():
            ys, _ = _hand_mlp(kind, suspect.model, EDIT_LAYER, x)
            yb, _ = _hand_mlp(kind, base.model, EDIT_LAYER, x)
        assert change[t] == pytest.approx(float((ys - yb).norm() / yb.norm()), rel=1e-3, abs=1e-6)
