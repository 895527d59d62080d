"""The logit lens equals E · norm_f(h_l) computed by hand from transformers' hidden states, and the
final layer equals the model's own output distribution (KL 0)."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from lensframe.board import Board

from .conftest import float32_atol, tiny_spec

VIEWS = "  lens: {type: logit_lens, top_k: 4}\n"


def reference_lens(model, final_norm, E, bias, ids):
    """Independent computation from plain transformers outputs."""
    with torch.no_grad():
        out = model(input_ids=ids, output_hidden_states=True)
    hs = out.hidden_states  # hs[-1] already has the final norm applied: decode it as the logits
    logps = []
    for l, h in enumerate(hs):
        logits = out.logits[0] if l == len(hs) - 1 else final_norm(h[0]) @ E.T + (bias if bias is not None else 0)
        logps.append(torch.log_softmax(logits.double(), -1))
    return torch.stack(logps)  # [L+1, T, V]


def check_lens(board: Board, sample: int, k: int = 4):
    res = board.result(board.views["lens"].lens_node(board.spec.dataset.max_tokens))
    loaded = board.executor.model("main")
    tok = board.executor.tokens("main")
    n = int(tok["lengths"][sample])
    ids = torch.as_tensor(tok["ids"][sample : sample + 1, :n], dtype=torch.long)
    a = loaded.adapter
    ref = reference_lens(loaded.model, a.final_norm, a.unembed_weight, a.unembed_bias, ids)
    p_ref = ref.exp()
    final = ref[-1]
    y = final.argmax(-1)
    kl = (final.exp() * (final - ref)).sum(-1)
    ent = -(p_ref * ref).sum(-1)
    prob = p_ref.gather(-1, y.view(1, n, 1).expand(ref.shape[0], n, 1)).squeeze(-1)
    rank = (ref > ref.gather(-1, y.view(1, n, 1).expand(ref.shape[0], n, 1))).sum(-1)
    top = ref.topk(k, -1)
    np.testing.assert_allclose(res["probs"][sample, :, :n], top.values.exp().numpy(), atol=2e-5)
    np.testing.assert_array_equal(res["ids"][sample, :, :n, 0], top.indices[..., 0].numpy())
    np.testing.assert_allclose(res["prob"][sample, :, :n], prob.numpy(), atol=2e-5)
    # entropy and KL sum ~V terms in float32 (V = 49k on SmolLM2): 1e-3 nats is float32 precision
    np.testing.assert_allclose(res["entropy"][sample, :, :n], ent.numpy(), atol=1e-3, rtol=1e-4)
    np.testing.assert_allclose(res["kl"][sample, :, :n], kl.numpy(), atol=1e-3, rtol=1e-4)
    np.testing.assert_array_equal(res["rank"][sample, :, :n], rank.numpy())
    # the final layer of the lens is the model's own output distribution
    np.testing.assert_allclose(res["kl"][sample, -1, :n], 0, atol=1e-4)
    assert (res["rank"][sample, -1, :n] == 0).all()


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_logit_lens_matches_hand_computation(kind, tiny_models, tmp_path):
    board = Board.from_text(tiny_spec(tiny_models[kind], VIEWS), base_dir=tmp_path, cache_dir=tmp_path / "c")
    board.compute(progress=False)
    for sample in range(len(board.dataset)):
        check_lens(board, sample)
    # the metrics are not trivially flat on these random models
    res = board.result(board.views["lens"].lens_node(board.spec.dataset.max_tokens))
    assert res["kl"][:, 0].max() > 0.1


@pytest.mark.parametrize("rows", [7, 100])
def test_logit_lens_in_chunks_matches_hand_computation(rows, tiny_models, tmp_path, monkeypatch):
    """With few rows per matmul the (layer, position) rows are decoded in blocks that span layer
    boundaries, and the final layer in chunks of positions (7 rows: several chunks per batch, the
    last one short; 100: one chunk, blocks across 2-3 layers): the same numbers."""
    from lensframe.ops import lens

    monkeypatch.setattr(lens, "ROWS_PER_MATMUL", rows)
    board = Board.from_text(tiny_spec(tiny_models["llama"], VIEWS), base_dir=tmp_path, cache_dir=tmp_path / "c")
    board.compute(progress=False)
    for sample in range(len(board.dataset)):
        check_lens(board, sample)


@pytest.mark.slow
def test_logit_lens_on_smollm2(smollm2_board):
    for sample in (0, 3):
        check_lens(smollm2_board, sample, k=5)


@pytest.mark.slow
def test_attention_on_smollm2_equals_output_attentions(smollm2_board):
    b = smollm2_board
    res = b.executor.focus("main", 2)[b.views["attn"].attention_node(b.spec.dataset.max_tokens)]["pattern"]
    tok = b.executor.tokens("main")
    n = int(tok["lengths"][2])
    ids = torch.as_tensor(tok["ids"][2:3, :n], dtype=torch.long)
    with torch.no_grad():
        ref = b.executor.model("main").model(input_ids=ids, output_attentions=True).attentions
    assert res.shape == (30, 9, n, n)
    info = b.infos["main"]
    np.testing.assert_allclose(res, torch.stack([a[0] for a in ref]).numpy(), atol=float32_atol(info.n_layers, info.d_model))


def _render(board: Board, vid: str, **focus):
    """One render of a view, as a session would get it (a ViewContext on a new focus)."""
    from lensframe.context import ViewContext

    f = board.new_focus()
    f.update(**focus)
    return board.views[vid].render(ViewContext(board, f, board.views[vid]))


def test_the_lens_view_shows_the_hand_computed_lens(tiny_models, tmp_path):
    """What the lens view draws (cell colours, top-1 texts, tips, row labels, the caption's colour
    scale) against the lens computed by hand from transformers' hidden states."""
    pytest.importorskip("panel")
    from lensframe.views.widgets import HeatGrid, PatchedHTML

    views = VIEWS + "  kl: {type: logit_lens, top_k: 4, metric: kl}\n"
    board = Board.from_text(tiny_spec(tiny_models["llama"], views), base_dir=tmp_path, cache_dir=tmp_path / "c")
    board.compute(progress=False)
    loaded, tok = board.executor.model("main"), board.executor.tokens("main")
    a = loaded.adapter
    sample, position, layer = 2, 4, 1
    n = int(tok["lengths"][sample])
    ids = torch.as_tensor(tok["ids"][sample : sample + 1, :n], dtype=torch.long)
    ref = reference_lens(loaded.model, a.final_norm, a.unembed_weight, a.unembed_bias, ids)  # [L+1, T, V]
    rows = ref.shape[0]
    final = ref[-1].argmax(-1)
    prob = ref.exp().gather(-1, final.view(1, n, 1).expand(rows, n, 1)).squeeze(-1).numpy()
    kl = (ref[-1].exp() * (ref[-1] - ref)).sum(-1).numpy()
    top1 = [loaded.tokenizer.decode([int(i)], clean_up_tokenization_spaces=False) for i in ref.argmax(-1).flatten()]
    top1 = np.array(top1, dtype=object).reshape(rows, n)

    # the colours: p itself, and KL on a log scale up to this sample's largest
    for vid, expected in (("lens", prob), ("kl", np.log1p(np.maximum(kl, 0)) / np.log1p(kl.max()))):
        layout = _render(board, vid, sample=sample, position=position, layer=layer)
        (grid,) = layout.select(HeatGrid)
        # final layer on top: grid row i is lens row rows-1-i; the rows are "embed", then blocks
        assert grid.row_labels == [str(l) for l in range(rows - 2, -1, -1)] + ["embed"]
        values = np.array(grid.values, dtype=float)
        np.testing.assert_allclose(values, expected[::-1], atol=2e-4)
        assert grid.texts == [[t[:6] for t in row] for row in top1[::-1].tolist()]
        assert (grid.selected_row, grid.selected_col) == (rows - 2 - layer, position)
        tokens_node = board.views["lens"].tokens_node(board.spec.dataset.max_tokens)
        assert grid.col_labels == board.result(tokens_node).meta["strings"][sample][:n]
        tip = grid.tips[rows - 1 - 2][position]  # lens row 2: after block 1
        assert tip.startswith(f"after block 1, position {position} ")
        number = float(re.search(r"= ([-+0-9.e]+)", tip).group(1))
        assert number == pytest.approx(float((prob if vid == "lens" else kl)[2, position]), rel=1e-3, abs=1e-6)
        caption = next(p.object for p in layout.select(PatchedHTML) if "lf-lens-head" in p.object)
        assert f"<b class='lf-position'>{position}</b>" in caption
        high = re.search(r"lf-scale-high'>([^<]*)<", caption).group(1)
        if vid == "kl":  # the darkest colour is this sample's largest KL, in nats
            assert high.endswith(" nats") and float(high.split()[0]) == pytest.approx(float(kl.max()), rel=2e-3)
        else:
            assert high == "1"
