"""The logit lens's bf16 screen (`decode: bf16_screen`, lensframe/ops/lens_screen.py) against the
float32 decode: the screen's error bound holds, certified rows have the float32 top-k ids and their
vocabulary sums stay within the bounds docs/METHODS.md states, uncertified rows (near-ties, a margin
the bound cannot prove) are decoded in float32 and counted, and a spec with the option computes it.

The CUDA test (`test_screen_on_cuda`) runs where torch sees a GPU and is skipped elsewhere:
    OMP_NUM_THREADS=1 python -m pytest -q tests/test_lens_screen.py -k cuda
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lensframe.board import Board
from lensframe.ops import lens_screen
from lensframe.ops.lens import decode_layers

from .conftest import TEXTS, tiny_spec

K = 4
PROB_ATOL = 2e-5  # a probability computed twice in float32 (tests/test_lens_numbers.py)
NATS_ATOL = 1e-3  # entropy and KL, sums of V float32 terms (tests/test_lens_numbers.py)


class Identity:
    """A final norm that leaves the rows alone: the adversarial tests choose the decoded rows."""

    weight = torch.ones(1)

    def __call__(self, h):
        return h


def model_rows(tiny_models, kind: str, tmp_path):
    """Every real token's residuals of the tiny model (embedding, each block), its final norm and
    unembedding, through lensframe's adapter: the rows decode_layers gets in a dataset pass."""
    board = Board.from_text(tiny_spec(tiny_models[kind], "  lens: {type: logit_lens}\n"), base_dir=tmp_path,
                            cache_dir=tmp_path / "c")
    loaded = board.executor.model("main")
    tok = loaded.tokenizer(TEXTS, return_tensors="pt", padding=True)
    mask = tok["attention_mask"].bool()
    with torch.no_grad():
        hs = loaded.model(**tok, output_hidden_states=True).hidden_states
    # hidden_states[-1] has the final norm applied already: the last block's input is the final row here
    a = loaded.adapter
    return [h[mask] for h in hs[:-1]], a.final_norm, a.unembed_weight, a.unembed_bias


def screen_of(rows: torch.Tensor, E: torch.Tensor, bias, target: torch.Tensor, k: int = K):
    """lens_screen.screen on the decoded rows (float32), with its weights and the bound's (A, c)."""
    w = lens_screen.ScreenWeights.of(E, E.float(), bias)
    buf = torch.empty(rows.shape[0], E.shape[0], dtype=w.Eh.dtype) if not rows.is_cuda else None
    sc = lens_screen.screen(w, E.float(), bias, rows, target, k, buf, torch.empty(rows.shape[0], E.shape[0],
                                                                                  device=rows.device))
    A, c = w.logit_bound(rows, rows.to(w.Eh.dtype), sc.logits.dtype == torch.float32)
    return sc, A, c


def bound(A: torch.Tensor, c: float, zs: torch.Tensor) -> torch.Tensor:
    """[n, V] the bound A + c·|z~| on each screened logit's error, in float64."""
    return (A.unsqueeze(1) + c * zs.float().abs()).double()


def exact_logits(rows: torch.Tensor, E: torch.Tensor, bias) -> torch.Tensor:
    z = rows.double() @ E.double().T
    return z + bias.double() if bias is not None else z


def check_against_fp32(hs, final_norm, E, bias, k: int = K) -> np.ndarray:
    """Decode hs both ways; check ids, the fallback rows and the stated bounds; return `screened`."""
    ref = decode_layers(hs, final_norm, E, bias, k, {})
    got = decode_layers(hs, final_norm, E, bias, k, {}, decode="bf16_screen")
    np.testing.assert_array_equal(got["ids"].numpy(), ref["ids"].numpy())  # certified, or float32
    screened = got["screened"].numpy().astype(bool)
    assert not screened[-1].any()  # the final layer is the reference: always float32
    fb = ~screened  # fallback rows: the float32 decode's numbers
    for name, atol in (("probs", PROB_ATOL), ("prob", PROB_ATOL), ("entropy", NATS_ATOL), ("kl", NATS_ATOL)):
        np.testing.assert_allclose(got[name].numpy()[fb], ref[name].numpy()[fb], atol=atol, rtol=1e-4)
    np.testing.assert_array_equal(got["rank"].numpy()[fb], ref["rank"].numpy()[fb])
    if screened.any():
        check_screened_bounds(hs, final_norm, E, bias, k, got, ref, screened)
    return screened


def check_screened_bounds(hs, final_norm, E, bias, k, got, ref, screened):
    """docs/METHODS.md's bounds on a screened row, with B = A + c·max|z~| >= every tail logit's
    error: |log p - log p_fp32| <= B (probs, prob), |KL - KL_fp32| <= B,
    |H - H_fp32| <= 2B + (e^{2B} - 1)·H, and the rank off by at most the tokens whose screened
    logit is within its bound of y*'s."""
    layers = np.nonzero(screened.any(1))[0]
    x = torch.cat([final_norm(hs[l].to(final_norm.weight.dtype)).float() for l in layers])
    target = ref["ids"][-1, :, 0].repeat(len(layers))
    sc, A, c = screen_of(x, E, bias, target, k)
    zs = sc.logits.float() if bias is None else sc.logits
    B = (A + c * zs.abs().amax(1)).numpy()
    sel = screened[layers].reshape(-1)
    g = {n: got[n][layers].reshape(len(sel), *got[n].shape[2:]).numpy()[sel] for n in ("probs", "prob", "kl",
                                                                                          "entropy", "rank")}
    r = {n: ref[n][layers].reshape(len(sel), *ref[n].shape[2:]).numpy()[sel] for n in g}
    B = B[sel]
    np.testing.assert_array_less(np.abs(g["probs"] - r["probs"]), r["probs"] * np.expm1(B)[:, None] + PROB_ATOL)
    np.testing.assert_array_less(np.abs(g["prob"] - r["prob"]), r["prob"] * np.expm1(B) + PROB_ATOL)
    np.testing.assert_array_less(np.abs(g["kl"] - r["kl"]), B + NATS_ATOL)
    np.testing.assert_array_less(np.abs(g["entropy"] - r["entropy"]),
                                 2 * B + np.expm1(2 * B) * r["entropy"] + NATS_ATOL)
    z_star = exact_logits(x, E, bias).gather(1, target.view(-1, 1))
    near = ((zs.double() - z_star).abs() <= bound(A, c, zs) + 1e-5).sum(1).numpy()[sel]
    assert (np.abs(g["rank"] - r["rank"]) <= near).all()


# --- the error bound --------------------------------------------------------------------------------
def test_the_bound_holds_on_rows_with_large_dimensions():
    """|z~ - z| <= A + c|z~| on every logit, on random rows with a few large dimensions (as
    SmolLM2's final norm makes)."""
    g = torch.Generator().manual_seed(0)
    E = torch.randn(500, 64, generator=g) * 0.3
    rows = torch.randn(40, 64, generator=g)
    rows[:, :3] *= 40
    sc, A, c = screen_of(rows, E, None, torch.zeros(40, dtype=torch.long))
    assert ((sc.logits.double() - exact_logits(rows, E, None)).abs() <= bound(A, c, sc.logits)).all()


STEP = 1 + 2.0 ** -9 - 2.0 ** -14  # just under half a bfloat16 step above 1: rounds down to 1


@pytest.mark.parametrize("case", ["x", "E", "output"])
def test_each_term_of_the_bound_is_attained(case):
    """Inputs that make one rounding as large as it can be, all of one sign, the others exact: the
    rounding of x (every x_i = STEP, E = 1), of E (the reverse), of the bfloat16 output (x = 1 and
    E exact, their sum 64 + 0.2421875 just under a quarter above 64, where bfloat16's step is 0.5).
    Each term alone bounds the error there (the sum 64 is exact in bfloat16 in the first two cases,
    x^ and E^ are x and E in the third) and the error reaches 90% of it, so a term too small by 10%
    fails here."""
    d, V = 64, 8
    x, E = torch.ones(2, d), torch.ones(V, d)
    if case == "x":
        x[:] = STEP
    elif case == "E":
        E[:] = STEP
    else:
        E[:, 0] = 1.2421875  # 1 + 31/128: exact in bfloat16
    sc, A, c = screen_of(x, E, None, torch.zeros(2, dtype=torch.long))
    err = (sc.logits.double() - exact_logits(x, E, None)).abs()
    term = (c * sc.logits.float().abs() if case == "output" else A.unsqueeze(1).expand(-1, V)).double()
    assert (err <= term).all() and (err >= 0.9 * term).all()


def test_the_bound_holds_with_a_bias():
    g = torch.Generator().manual_seed(1)
    E, bias = torch.randn(300, 32, generator=g), torch.randn(300, generator=g) * 5
    rows = torch.randn(30, 32, generator=g) * 3
    sc, A, c = screen_of(rows, E, bias, torch.zeros(30, dtype=torch.long))
    err = (sc.logits.double() - exact_logits(rows, E, bias)).abs()
    assert (err <= bound(A, c, sc.logits)).all()


# --- the tiny models --------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_screened_decode_equals_the_float32_decode(kind, tiny_models, tmp_path):
    hs, norm, E, bias = model_rows(tiny_models, kind, tmp_path)
    screened = check_against_fp32(hs, norm, E, bias)
    assert screened[:-1].mean() > 0.5  # most rows take the screen (else the test checks little)


def test_blocks_spanning_layers_and_large_k(tiny_models, tmp_path, monkeypatch):
    """Blocks of 7 rows (several per layer, spanning layers, the last one short) and k = 20."""
    from lensframe.ops import lens

    monkeypatch.setattr(lens, "ROWS_PER_MATMUL", 7)
    hs, norm, E, bias = model_rows(tiny_models, "llama", tmp_path)
    check_against_fp32(hs, norm, E, bias, k=20)


# --- adversarial rows ---------------------------------------------------------------------------------
def adversarial_unembedding(d: int = 48, V: int = 400):
    """Random E, plus: tokens 0 and 1 nearly equal (a near-tie in float32), and tokens 100..139
    whose logits along dimension 0 climb by 0.002 each, 40 of them within 0.08: their bfloat16
    copies collapse onto a few values, so the screen's top K is an arbitrary subset of them."""
    g = torch.Generator().manual_seed(2)
    E = torch.randn(V, d, generator=g) * 0.1
    E[1] = E[0] + 1e-7 * torch.randn(d, generator=g)
    E[100:140] = 0
    E[100:140, 0] = 5 + 0.002 * torch.arange(40)
    return E


def test_a_near_tie_and_an_unprovable_margin_fall_back_to_float32():
    E = adversarial_unembedding()
    d = E.shape[1]
    g = torch.Generator().manual_seed(3)
    normal = torch.randn(20, d, generator=g) * 4
    tie = E[0] * 30 + 0.01 * torch.randn(5, d, generator=g)  # tokens 0 and 1 on top, ~1e-6 apart
    normal[:, 0] = tie[:, 0] = 0  # (dimension 0 would put tokens 100..139 on top)
    climb = torch.zeros(5, d)
    climb[:, 0] = 1.5  # tokens 100..139 on top, 0.003 apart: the bound (~0.03) covers several
    climb[:, 1:] = 0.01 * torch.randn(5, d - 1, generator=g)
    rows = torch.cat([normal, tie, climb])
    target = torch.zeros(len(rows), dtype=torch.long)
    sc, A, c = screen_of(rows, E, None, target)
    top = exact_logits(rows, E, None).topk(K).indices
    # the near-ties fail the float32 order test only; the climb fails the margin, and there the
    # screen's candidates missed true top-k tokens: certifying them would have been wrong
    assert sc.beats_outside[20:25].all() and not sc.ordered[20:25].any()
    assert not sc.beats_outside[25:].any()
    assert any(not set(top[i].tolist()) <= set(sc.cand[i].tolist()) for i in range(25, 30))
    assert sc.certified[:20].all()

    # in decode_layers (rows of "layer 0"; the final layer is the same rows): fallback taken, counted
    hs = [rows, rows]
    screened = check_against_fp32(hs, Identity(), E, None)
    assert screened[0].tolist() == [True] * 20 + [False] * 10


# --- a spec ----------------------------------------------------------------------------------------------
def test_a_spec_with_the_screen_stores_the_float32_ids(tiny_models, tmp_path):
    views = ("  lens: {type: logit_lens, top_k: 4}\n"
             "  fast: {type: logit_lens, top_k: 4, decode: bf16_screen}\n")
    board = Board.from_text(tiny_spec(tiny_models["gpt2"], views), base_dir=tmp_path, cache_dir=tmp_path / "c")
    board.compute(progress=False)
    mt = board.spec.dataset.max_tokens
    plain, fast = board.views["lens"].lens_node(mt), board.views["fast"].lens_node(mt)
    assert "decode" not in dict(plain.params)  # float32 lens results keep their store keys
    assert board.plan.nodes[plain].key != board.plan.nodes[fast].key  # a screened result never reads as float32
    ref, got = board.result(plain), board.result(fast)
    lengths = board.executor.tokens("main")["lengths"]
    for i, n in enumerate(lengths):
        np.testing.assert_array_equal(got["ids"][i][:, :n], ref["ids"][i][:, :n])
    screened = np.concatenate([got["screened"][i][:, :n] for i, n in enumerate(lengths)], axis=1)
    assert got.meta["decode"] == "bf16_screen" and "screened" not in ref.arrays
    assert screened[:-1].mean() > 0.5 and not screened[-1].any()


# --- CUDA ----------------------------------------------------------------------------------------------
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_screen_on_cuda(dtype, tiny_models, tmp_path):
    """With `--device cuda` and half-precision weights: the screen's bound holds on the GPU's GEMM,
    and a spec's screened lens stores the float32 lens's ids."""
    spec = tiny_spec(tiny_models["llama"], "  lens: {type: logit_lens, top_k: 4}\n"
                                           "  fast: {type: logit_lens, top_k: 4, decode: bf16_screen}\n")
    spec = spec.replace(f"model: path:{tiny_models['llama']}\n",
                        f"models:\n  main: {{source: 'path:{tiny_models['llama']}', dtype: {dtype}}}\n")
    board = Board.from_text(spec, base_dir=tmp_path, cache_dir=tmp_path / "c", device="cuda")
    board.compute(progress=False)
    mt = board.spec.dataset.max_tokens
    ref, got = board.result(board.views["lens"].lens_node(mt)), board.result(board.views["fast"].lens_node(mt))
    lengths = board.executor.tokens("main")["lengths"]
    for i, n in enumerate(lengths):
        np.testing.assert_array_equal(got["ids"][i][:, :n], ref["ids"][i][:, :n])
    assert np.concatenate([got["screened"][i][:-1, :n] for i, n in enumerate(lengths)], axis=1).mean() > 0.5

    a = board.executor.model("main").adapter
    g = torch.Generator(device="cuda").manual_seed(0)
    rows = torch.randn(64, a.unembed_weight.shape[1], device="cuda", generator=g) * 3
    sc, A, c = screen_of(rows, a.unembed_weight, a.unembed_bias, torch.zeros(64, dtype=torch.long, device="cuda"))
    err = (sc.logits.double() - exact_logits(rows, a.unembed_weight.float(), a.unembed_bias)).abs()
    assert (err <= bound(A, c, sc.logits)).all()
    assert math.isfinite(float(A.max()))


def test_the_view_says_which_cells_are_screened(tiny_models, tmp_path):
    pytest.importorskip("panel")
    from lensframe.context import ViewContext
    from lensframe.views.widgets import PatchedHTML

    views = ("  lens: {type: logit_lens, top_k: 4}\n"
             "  fast: {type: logit_lens, top_k: 4, decode: bf16_screen}\n")
    board = Board.from_text(tiny_spec(tiny_models["gpt2"], views), base_dir=tmp_path, cache_dir=tmp_path / "c")
    board.compute(progress=False)
    res = board.result(board.views["fast"].lens_node(board.spec.dataset.max_tokens))
    n = int(board.executor.tokens("main")["lengths"][1])
    captions = {}
    for vid in ("lens", "fast"):
        focus = board.new_focus()
        focus.update(sample=1)
        layout = board.views[vid].render(ViewContext(board, focus, board.views[vid]))
        captions[vid] = next(p.object for p in layout.select(PatchedHTML) if "lf-lens-head" in p.object)
    assert "bf16 screen" not in captions["lens"]
    screened = res["screened"][1][:-1, :n]
    assert f"on {int(screened.sum())} of {screened.size} cells below the final layer" in captions["fast"]
