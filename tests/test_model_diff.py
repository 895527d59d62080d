"""Two models in one spec and the model_diff view's numbers: the weight diff finds (and ranks
first) the edited layer with the edit's rank, the dataset KL equals an independent computation,
each model's dataset pass is one fused pass, and the paired lens reads both models."""
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


def _two_model_spec(base: Path, edited: Path, views: str) -> str:
    spec = tiny_spec(base, views)
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
    from lensframe.ops.compare import layer_ranking

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
    # layers before the edit see the same residual in both models
    assert (res["top_a"][:EDIT_LAYER] == res["top_b"][:EDIT_LAYER]).all()
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
