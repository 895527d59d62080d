"""`lensframe export` of the ffn_vocab view: the bulk computation (lensframe/ffn_bulk.py) equals the
per-focus lookups (ffn_static, ffn_dynamic) at every exported sample, layer and position and for every
neuron the page holds, with and without the final norm (the scale-invariant shortcut on Llama's
RMSNorm, the per-sub-update path on GPT-2's LayerNorm); the planned size is within a few % of the
written one; and in an offline Chromium the card, clicked (a sub-update, a token, a lens cell, a
neuron of the neurons view, another sample), shows the served card's text and tips at the same
focus, the editor replaced by a note.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lensframe.export_pack import ExportContext
from lensframe.export_plan import export_options
from tests.conftest import tiny_spec
from tests.test_browser import browser  # noqa: F401  (the module-scoped Chromium fixture, shared)
from tests.test_export import CARD, _after, _first_difference, _offline_page, served_pages

VIEWS = ("  text: {type: text}\n  lens: {type: logit_lens}\n  neurons: {type: neurons, top_n: 6}\n"
         "  ffn: {type: ffn_vocab, top_n: 5, k: 4}\n  ffn_norm: {type: ffn_vocab, top_n: 4, k: 2, final_norm: true}")
LAYOUT = "layout: |\n  text text lens\n  neurons ffn ffn_norm\n"
FFN = ("ffn", "ffn_norm")


def _board(model_dir, root, views=VIEWS, layout=LAYOUT):
    from lensframe.board import Board

    spec = root / "spec.yaml"
    spec.write_text(tiny_spec(model_dir, views, extra=layout, keep_focus_mb=64))
    return spec, Board.from_file(spec, cache_dir=root / "store")


@pytest.fixture(scope="module")
def exported(tiny_models, tmp_path_factory):
    """A tiny Llama spec with two ffn_vocab views (E v and E norm_f(v)), computed and exported."""
    root = tmp_path_factory.mktemp("export-ffn")
    spec, board = _board(tiny_models["llama"], root)
    report = board.export(root / "board.html")
    return {"spec": spec, "store": root / "store", "board": board, "report": report}


def _decoded(data):
    """The exported arrays as numpy (what the page's runtime decodes)."""
    import base64
    import json

    raw = json.loads(data.to_json())
    return raw["meta"], {k: np.frombuffer(base64.b64decode(a["b64"]), dtype=np.dtype(a["dtype"]).newbyteorder("<"))
                         for k, a in raw["arrays"].items()}


def _check_against_lookups(board, vid):
    """Every (sample, layer, position) and every held neuron of the view's export, against the lookups."""
    view = board.views[vid]
    options = export_options(board)
    ex = ExportContext(board, view, options.samples, options)
    meta, a = _decoded(view.export_data(ex))
    nodes = view.nodes(board.spec.dataset.max_tokens)
    ctx = ex.context(0)
    vocab = meta["vocab"]
    n, k, K, d = meta["n"], meta["k"], meta["K"], meta["d_mlp"]
    layers = meta["layers"]
    held = {}
    for li, l in enumerate(layers):
        for j in range(a["static_starts"][li], a["static_starts"][li + 1]):
            i = int(a["static_ids"][j])
            held[(l, i)] = j
            st = ctx.lookup(nodes["static"], layer=l, neuron=i)
            assert [vocab[v] for v in a["prom_ids"][j * K:j * K + k]] == [repr(t) for t in ctx.decode(st["promoted_ids"])]
            assert [vocab[v] for v in a["supp_ids"][j * K:j * K + k]] == [repr(t) for t in ctx.decode(st["suppressed_ids"])]
            assert [f"{x:.2f}" for x in a["prom"][j * k:(j + 1) * k]] == [f"{x:.2f}" for x in st["promoted"]]
            assert [f"{x:.2f}" for x in a["supp"][j * k:(j + 1) * k]] == [f"{x:.2f}" for x in st["suppressed"]]
            assert f"{a['static_norm'][j]:.3f}" == f"{float(st['norm']):.3f}"
    cell = 0
    for s in options.samples:
        T = len(ex.context(s).tokens())
        for li, l in enumerate(layers):
            for t in range(T):
                dyn = ctx.lookup(nodes["dynamic"], sample=s, layer=l, position=t)
                rows = slice(cell * n, (cell + 1) * n)
                np.testing.assert_array_equal(a["sub_ids"][rows], dyn["neurons"])
                np.testing.assert_array_equal(a["sub_m"][rows], dyn["m"])
                np.testing.assert_array_equal(a["norms"][li * d + a["sub_ids"][rows].astype(np.int64)], dyn["norm"])
                for r, (i, m) in enumerate(zip(dyn["neurons"], dyn["m"])):
                    if "sub_tok" in a:
                        ids = a["sub_tok"][(cell * n + r) * 3:(cell * n + r + 1) * 3]
                    else:
                        j = held[(l, int(i))]
                        ids = (a["prom_ids"] if m > 0 else a["supp_ids"])[j * K:j * K + 3]
                    assert [vocab[v] for v in ids] == [repr(x) for x in ctx.decode(dyn["token_ids"][r])], (s, l, t, r)
                for side in ("before", "after"):
                    lo = cell * 10
                    assert [vocab[v] for v in a[f"{side}_ids"][lo:lo + 10]] == [repr(x) for x in ctx.decode(dyn[f"{side}_ids"])]
                    assert [f"{q / 100:.2f}" for q in a[f"{side}_p"][lo:lo + 10]] == [f"{p:.2f}" for p in dyn[f"{side}_probs"]]
                cell += 1
    return meta, a


def test_bulk_equals_the_lookups_llama(exported):
    for vid in FFN:  # RMSNorm: E norm_f(m v) ranks as sign(m) E norm_f(v); the static tops are read
        _, a = _check_against_lookups(exported["board"], vid)
        assert "sub_tok" not in a


def test_bulk_equals_the_lookups_gpt2_final_norm(tiny_models, tmp_path_factory):
    # a LayerNorm with a bias is not scale-invariant: each sub-update is projected as ffn_dynamic does
    root = tmp_path_factory.mktemp("export-ffn-gpt2")
    views = ("  ffn: {type: ffn_vocab, top_n: 3, k: 3, final_norm: true}\n  plain: {type: ffn_vocab, top_n: 3}\n"
             "  neurons: {type: neurons, top_n: 2}")
    _, board = _board(tiny_models["gpt2"], root, views, "layout: |\n  ffn plain neurons\n")
    board.compute()
    meta, a = _check_against_lookups(board, "ffn")
    assert "sub_tok" in a
    _check_against_lookups(board, "plain")
    # the neurons view lists 2 by |m| ||v||, these 3: it holds the activations of the third ones too
    options = export_options(board)
    named = board.views["ffn"].export_neurons(ExportContext(board, board.views["neurons"], options.samples, options))
    listed, cell, n = {l: set() for l in meta["layers"]}, 0, meta["n"]
    for s in options.samples:
        T = len(board.result(board.views["ffn"].tokens_node(16)).meta["strings"][s])
        for l in meta["layers"]:
            listed[l].update(a["sub_ids"][cell * n:(cell + T) * n].tolist())
            cell += T
    assert {l: set(ids) for l, ids in named.items()} == listed
    _, held = _decoded(board.views["neurons"].export_data(ExportContext(board, board.views["neurons"], options.samples,
                                                                          options)))
    assert set(np.concatenate([np.asarray(v) for v in named.values()]).tolist()) <= set(held["strip_ids"].tolist())


def test_plan_matches_the_written_size(exported):
    report = exported["report"]
    for vid in FFN:
        planned, written = report.plan.views[vid], report.views[vid]
        assert abs(planned - written) / written < 0.05, (vid, planned, written)
    assert not report.plan.notes


# --- in the browser --------------------------------------------------------------------------------

EDIT_MARKERS = ("Not in this exported page: setting", "intervene at this token")


def _card(page, vid):
    """The card's text up to the editor (a note in the exported page), and its tips."""
    out = page.evaluate(CARD, vid)
    text = out["text"]
    marker = next(m for m in EDIT_MARKERS if m in text)  # the exported note, or the served editor
    text = text[:text.index(marker)]
    assert "sub-updates" in text and "after the MLP:" in text, text
    return text, out["tips"]


def _ffn_cards(page, query: str) -> dict:
    page.wait_for_timeout(400)
    return {vid: _card(page, vid) for vid in FFN}


@pytest.fixture(scope="module")
def served(exported, browser, tmp_path_factory):
    """The same spec and store served: focus query -> each ffn card's text (to the editor) and tips."""
    with served_pages(exported, browser, tmp_path_factory, _ffn_cards) as cards:
        yield cards


def _same(page, theirs) -> None:
    for vid in FFN:
        here = _card(page, vid)
        assert here[0] == theirs[vid][0], (vid, _first_difference(here[0], theirs[vid][0]))
        assert here[1] == theirs[vid][1], vid


@pytest.mark.browser
def test_exported_card_links_offline_like_the_served_one(exported, browser, served):
    with _offline_page(browser, exported["report"].path, ".lf-card-ffn .lf-subupdate-item") as (page, requests, errors):
        ffn = page.locator(".lf-card-ffn")
        text = page.locator(".lf-card-text")
        T = text.locator(".lf-token").count()
        # the editor is a note; the rest is the served card
        assert ffn.locator(".lf-ffn-edit-note").count() == 1
        _same(page, served("", {".lf-card-ffn .lf-position": str(T - 1)}))

        # a token: the sub-updates and residuals at its position
        text.locator('.lf-token[data-position="4"]').click()
        _after(page, ".lf-card-ffn .lf-position", "4")
        _same(page, served("position=4", {".lf-card-ffn .lf-position": "4"}))

        # a lens cell: another layer (and position)
        lens = page.locator(".lf-card-lens")
        lens.locator('.lf-cell[data-row="1"][data-col="3"]').click()
        layer = ffn.locator(".lf-layer").inner_text()
        _after(page, ".lf-card-ffn .lf-position", "3")
        _same(page, served(f"position=3&layer={layer}", {".lf-card-ffn .lf-position": "3", ".lf-card-ffn .lf-layer": layer}))

        # a sub-update: its neuron is focused, its value vector shown, in both ffn views
        key = ffn.locator(".lf-subupdate-item").nth(1).get_attribute("data-key")
        ffn.locator(f'.lf-subupdate-item[data-key="{key}"]').click()
        _after(page, ".lf-card-ffn .lf-neuron", f"L{layer}/N{key}")
        assert page.locator(".lf-card-neurons .lf-neuron").first.inner_text() == f"L{layer}/N{key}"
        _same(page, served(f"position=3&layer={layer}&neuron={key}", {".lf-card-ffn .lf-neuron": f"L{layer}/N{key}"}))
        artifacts = Path(__file__).parent / "artifacts"
        artifacts.mkdir(exist_ok=True)
        ffn.screenshot(path=str(artifacts / "export-ffn-vocab-card.png"))
        page.screenshot(path=str(artifacts / "export-ffn-vocab.png"))

        # a neuron of the neurons view (ranked by m: not always among the sub-updates listed here)
        neurons = page.locator(".lf-card-neurons")
        other = neurons.locator(".lf-neuron-list .lf-bar-row").nth(4).get_attribute("data-key")
        neurons.locator(f'.lf-neuron-list .lf-bar-row[data-key="{other}"]').first.click()
        _after(page, ".lf-card-ffn .lf-neuron", f"L{layer}/N{other}")
        _same(page, served(f"position=3&layer={layer}&neuron={other}", {".lf-card-ffn .lf-neuron": f"L{layer}/N{other}"}))

        # another sample, and its last token
        text.locator('.lf-sample[data-sample="2"]').click()
        _after(page, ".lf-card-ffn .lf-sample-index", "2")
        T2 = text.locator(".lf-token").count()
        _same(page, served(f"sample=2&layer={layer}&neuron={other}", {".lf-card-ffn .lf-position": str(T2 - 1),
                                                                      ".lf-card-ffn .lf-sample-index": "2"}))
        assert requests == [] and errors == []
