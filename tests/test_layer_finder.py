"""The layer finder (no base model): its statistics equal a hand computation, a planted edit stands
out (a large rank-one ΔW by its spectral score, a knockout by its dead units, an edit written after
the model was rounded to a storage grid by its distinct values), and the view renders, flags the
layer and focuses a clicked one."""
from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import tiny_spec

N_LAYERS = 8
EDITED = 5


def _deep_llama(folder, grid: bool = False):
    """An 8-layer tiny Llama (statistics need neighbours), optionally with every weight rounded to
    a grid of step 0.01 (a model released quantized: int8 values times one scale)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tests.conftest import make_tokenizer

    torch.manual_seed(1)
    folder.mkdir(parents=True, exist_ok=True)
    tok = make_tokenizer(folder)
    cfg = LlamaConfig(num_hidden_layers=N_LAYERS, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                      intermediate_size=64, vocab_size=len(tok), max_position_embeddings=64, bos_token_id=0,
                      eos_token_id=0, pad_token_id=0, tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.3)
            if grid:
                p.copy_((p / 0.01).round() * 0.01)
    return model, tok


def _save(model, tok, folder):
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def edited_models(tmp_path_factory):
    """{"rank_one": a large rank-one edit of layer 5's MLP output matrix, "knockout": two zeroed
    neurons of layer 5, "off_grid": a quantized model whose layer-5 down_proj got a small float32 edit}."""
    import torch

    from lensframe.models.adapters import Adapter, family_for

    out = {}
    for kind in ("rank_one", "knockout", "off_grid"):
        model, tok = _deep_llama(tmp_path_factory.mktemp(kind), grid=kind == "off_grid")
        ad = Adapter(model, family_for("llama"))
        g = torch.Generator().manual_seed(3)
        with torch.no_grad():
            vv = ad.value_vectors(EDITED)
            if kind == "rank_one":
                vv += 40.0 * torch.outer(torch.randn(vv.shape[0], generator=g), torch.randn(vv.shape[1], generator=g)) / vv.shape[0] ** 0.5
            elif kind == "knockout":
                vv[[3, 9]] = 0.0
            else:
                vv += 1e-3 * torch.randn(vv.shape, generator=g)
        out[kind] = (model, _save(model, tok, tmp_path_factory.mktemp(f"{kind}-saved")))
    return out


def test_statistics_equal_a_hand_computation(edited_models):
    from lensframe.layer_stats import layer_stats

    model, _ = edited_models["rank_one"]
    res = layer_stats(model, "model.layers", N_LAYERS, window=3)
    a, names = res["arrays"], res["names"]
    m = names.index("mlp.down_proj.weight")
    per_layer = []
    for layer in range(N_LAYERS):
        w = model.model.layers[layer].mlp.down_proj.weight.detach().double().numpy()
        s = np.linalg.svd(w, compute_uv=False)
        fro = np.sqrt((w ** 2).sum())
        want = {"sigma1": s[0], "top_gap": s[0] / s[1], "stable_rank": fro ** 2 / s[0] ** 2, "fro": fro}
        for k, v in want.items():
            assert a[k][m, layer] == pytest.approx(v, rel=1e-4), (k, layer)
        np.testing.assert_allclose(a["sv"][m, layer], s[:8], rtol=1e-4)
        assert a["distinct"][m, layer] == pytest.approx(len(np.unique(w.astype(np.float32))) / w.size)
        per_layer.append(np.log(s[0]))
    # the robust z of layer 5's σ₁ against layers 2..4 and 6..7, by numpy
    nb = np.array(per_layer[2:5] + per_layer[6:8])
    med = np.median(nb)
    mad = max(1.4826 * np.median(np.abs(nb - med)), 1e-3)
    assert a["z_sigma1"][m, EDITED] == pytest.approx((per_layer[EDITED] - med) / mad, rel=1e-4)  # float32 SVD


@pytest.mark.parametrize("kind, evidence", [("rank_one", "score"), ("knockout", "dead_layer"), ("off_grid", "off_grid_layer")])
def test_a_planted_edit_stands_out(edited_models, kind, evidence):
    from lensframe.layer_stats import layer_stats, ranked_layers

    model, _ = edited_models[kind]
    a = layer_stats(model, "model.layers", N_LAYERS)["arrays"]
    assert ranked_layers(a)[0] == EDITED
    if evidence == "score":
        assert a["score"][EDITED] > 10 and a["dead_layer"].sum() == 0 and a["off_grid_layer"].sum() == 0
    elif evidence == "dead_layer":
        assert a["dead_layer"][EDITED] == 2 and a["dead_layer"].sum() == 2  # two value vectors: 2 columns of down_proj
    else:
        names = layer_stats(model, "model.layers", N_LAYERS)["names"]
        off = [names[m] for m in np.flatnonzero(a["off_grid"][:, EDITED])]
        assert off == ["mlp.down_proj.weight"] and a["off_grid_layer"].sum() == 1


def test_the_view_flags_the_layer_and_a_click_focuses_it(edited_models, tmp_path):
    pytest.importorskip("panel")
    from lensframe.board import Board
    from lensframe.focus import Focus
    from lensframe.server.app import build_app
    from tests.test_neurons import html_of

    _, folder = edited_models["knockout"]
    board = Board.from_text(tiny_spec(folder, "  finder: {type: layer_finder}"), cache_dir=tmp_path)
    board.compute(progress=False)
    focus = Focus(model="main")
    app = build_app(board, focus)
    text = html_of(app)
    assert "lf-error" not in text, text[:2000]
    assert f"<b class='lf-finder-top'>layer {EDITED}</b>" in text
    assert "dead rows/cols" not in text  # bars are a JSComponent: the reason is in its items, not the HTML
    bars = next(o for o in app.select(lambda o: type(o).__name__ == "BarList"))
    first = next(it for it in bars.items if it["key"] == EDITED)
    assert first["label"].startswith("⚑") and "2 dead rows/cols (down_proj)" in first["note"]
    bars._clicked(type('Msg', (), {'data': {'key': 2}})())  # as the page sends it
    assert focus.layer == 2
    assert "layer <b class='lf-layer'>2</b>" in html_of(app)


def test_the_view_reads_dead_units_as_neurons(edited_models, tmp_path):
    pytest.importorskip("panel")
    from lensframe.board import Board
    from lensframe.focus import Focus
    from lensframe.server.app import build_app
    from tests.test_neurons import html_of

    _, folder = edited_models["knockout"]
    board = Board.from_text(tiny_spec(folder, "  finder: {type: layer_finder}"), cache_dir=tmp_path)
    board.compute(progress=False)
    focus = Focus(model="main", layer=EDITED)
    text = html_of(build_app(board, focus))
    assert f"dead input dims 3, 9 → neurons L{EDITED}/N3, L{EDITED}/N9" in text
