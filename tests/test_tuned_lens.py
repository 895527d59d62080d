"""Tuned lens: zero-initialised translators are the logit lens; trained ones lower the held-out KL
at every layer; lens: tuned decodes through them in a second pass."""
from __future__ import annotations

import numpy as np
import torch

from lensframe.board import Board
from lensframe.context import ViewContext
from lensframe.ops.tuned_lens import _kl_per_layer, translate
from lensframe.ops.base import Result

from .conftest import tiny_spec

VIEWS = """  lens: {type: logit_lens, top_k: 3}
  tuned: {type: logit_lens, top_k: 3, lens: tuned, tuned: {train_tokens: 200, steps: 60, lr: 0.01, batch_tokens: 16}}
  mid: {type: logit_lens, top_k: 3, stream: resid_mid}
"""


def test_tuned_lens_beats_logit_lens_on_held_out_tokens(tiny_models, tmp_path):
    b = Board.from_text(tiny_spec(tiny_models["llama"], VIEWS), base_dir=tmp_path, cache_dir=tmp_path / "s")
    report = b.compute(progress=False)
    assert report.batches == 6  # pass 1: lenses and the tuned lens's sample; pass 2: the tuned lens view
    t = b.result(b.views["tuned"].tuned_node(16))
    assert t["A"].shape == (3, 32, 32) and t["b"].shape == (3, 32)  # one translator per row but the final
    # a layer whose translator does not beat the identity on the validation texts keeps the identity
    assert (t["val_kl_tuned"] <= t["val_kl_logit"] + 1e-6).all()
    # on texts it never saw it still does better on average (a layer may not: the caption says so)
    assert t["test_kl_tuned"].mean() < 0.9 * t["test_kl_logit"].mean()  # it learned something
    texts, tokens = t.meta["texts"], t.meta["tokens"]
    assert min(texts.values()) >= 1 and sum(texts.values()) <= 8 and texts["train"] >= 4  # 8 texts, split by text
    assert min(tokens.values()) > 0
    worse = int((t["test_kl_tuned"] > t["test_kl_logit"] + 1e-6).sum())
    note = b.views["tuned"]._tuned_note(ViewContext(b, b.new_focus(), b.views["tuned"]))
    assert f"trained on {tokens['train']} tokens of {texts['train']} texts" in note
    assert f"on {texts['test']} texts it never saw ({tokens['test']} tokens)" in note
    assert (f"worse than the logit lens on {worse} of 3 layers there" in note) == (worse > 0)
    tuned = b.result(b.views["tuned"].lens_node(16))
    plain = b.result(b.views["lens"].lens_node(16))
    np.testing.assert_allclose(tuned["kl"][:, -1], 0, atol=1e-4)  # the final row is untouched
    assert not np.allclose(tuned["kl"][:, 0], plain["kl"][:, 0])


def test_zero_translators_are_the_logit_lens(tiny_models, tmp_path):
    b = Board.from_text(tiny_spec(tiny_models["gpt2"], VIEWS), base_dir=tmp_path)
    a = b.executor.model("main").adapter
    rows = torch.randn(20, 4, 32)
    zero = Result({"A": np.zeros((3, 32, 32), np.float32), "b": np.zeros((3, 32), np.float32)})
    hs = [rows[:, i] for i in range(4)]
    for h, t in zip(hs, translate(hs, zero)):
        torch.testing.assert_close(h, t)
    E = a.unembed_weight.float()
    np.testing.assert_allclose(_kl_per_layer(rows, a.final_norm, E, None).numpy(),
                               _kl_per_layer(rows, a.final_norm, E, None, torch.zeros(3, 32, 32), torch.zeros(3, 32)).numpy())


def test_resid_mid_rows_decode_the_residual_after_attention(tiny_models, tmp_path):
    b = Board.from_text(tiny_spec(tiny_models["gpt2"], VIEWS), base_dir=tmp_path, cache_dir=tmp_path / "s")
    b.compute(progress=False)
    res = b.result(b.views["mid"].lens_node(16))
    assert res.meta["layers"] == ["0 mid", "1 mid", "2 mid", "final"] and res.meta["blocks"] == [0, 1, 2, 2]
    loaded = b.executor.model("main")
    tok = b.executor.tokens("main")
    n = int(tok["lengths"][1])
    ids = torch.as_tensor(tok["ids"][1:2, :n], dtype=torch.long)
    mids = {}
    hooks = [blk.ln_2.register_forward_pre_hook(lambda m, a, i=i: mids.__setitem__(i, a[0][0]))
             for i, blk in enumerate(loaded.model.transformer.h)]
    with torch.no_grad():
        out = loaded.model(input_ids=ids)
    for h in hooks:
        h.remove()
    E, ln_f = loaded.model.lm_head.weight, loaded.model.transformer.ln_f
    for l in range(3):
        ref = torch.softmax(ln_f(mids[l]) @ E.T, -1).max(-1)
        np.testing.assert_allclose(res["probs"][1, l, :n, 0], ref.values.numpy(), atol=2e-5)
    np.testing.assert_allclose(res["probs"][1, 3, :n, 0], torch.softmax(out.logits[0], -1).max(-1).values.numpy(), atol=2e-5)


def test_the_split_is_by_text():
    """No text has tokens in two parts; about 15% of the texts (at least one) are test, as many
    validation; the same seed gives the same split."""
    from lensframe.ops.tuned_lens import split_by_text

    texts = np.repeat(np.arange(40), np.arange(1, 41) % 7 + 1)  # 40 texts of 1..7 tokens
    part = split_by_text(texts, seed=3)
    for t in range(40):
        assert len(set(part[texts == t])) == 1
    per_text = {p: len(np.unique(texts[part == p])) for p in (0, 1, 2)}
    assert per_text == {0: 28, 1: 6, 2: 6}
    np.testing.assert_array_equal(part, split_by_text(texts, seed=3))
    assert not np.array_equal(part, split_by_text(texts, seed=4))
