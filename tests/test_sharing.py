"""Sharing is real: fused dataset passes, one forward per focus change, warm starts run nothing."""
from __future__ import annotations

import numpy as np
import pytest

from lensframe.board import Board

from .conftest import float32_atol, tiny_spec

VIEWS = """  text: {type: text}
  lens: {type: logit_lens, metric: prob, top_k: 3}
  lens_kl: {type: logit_lens, metric: kl, top_k: 3}
  attn: {type: attention}
"""


class ForwardCounter:
    """Counts calls of the HF model's forward (a hook on the model itself)."""

    def __init__(self, model):
        self.calls = 0
        self.handle = model.register_forward_hook(self._hook)

    def _hook(self, *_):
        self.calls += 1


def board(tiny_models, tmp_path, kind="gpt2", views=VIEWS):
    return Board.from_text(tiny_spec(tiny_models[kind], views), base_dir=tmp_path, cache_dir=tmp_path / "store")


def test_views_share_nodes_and_one_dataset_pass(tiny_models, tmp_path):
    b = board(tiny_models, tmp_path)
    nodes = {p.node.op: p for p in b.plan.nodes.values()}
    assert len(b.plan.nodes) == 3  # tokens, one logit_lens shared by two views, attention
    assert sorted(nodes["logit_lens"].views) == ["lens", "lens_kl"]
    assert sorted(nodes["tokens"].views) == ["attn", "lens", "lens_kl", "text"]
    passes = b.plan.passes()
    assert [(p["kind"], len(p["nodes"])) for p in passes] == [("dataset", 1), ("focus", 1)]

    counter = ForwardCounter(b.executor.model("main").model)
    report = b.compute(progress=False)
    n_batches = -(-len(b.dataset) // b.spec.run.batch_size)
    assert counter.calls == n_batches == report.forward_passes == report.batches


def test_two_dataset_nodes_fuse_into_one_pass(tiny_models, tmp_path, monkeypatch):
    import lensframe.ops.lens as lens

    decodes = []
    real = lens.decode_layers
    monkeypatch.setattr(lens, "decode_layers", lambda *a, **kw: decodes.append(a[4]) or real(*a, **kw))
    views = VIEWS + "  lens5: {type: logit_lens, top_k: 5}\n"
    b = board(tiny_models, tmp_path, views=views)
    assert len(b.plan.of_kind("dataset")) == 2
    counter = ForwardCounter(b.executor.model("main").model)
    report = b.compute(progress=False)
    assert counter.calls == report.batches == 3  # 8 samples, batch 3: both nodes from each forward
    assert decodes == [5, 5, 5]  # and one unembedding per batch, at the larger k, for both nodes
    r3 = b.result(b.views["lens"].lens_node(16))
    r5 = b.result(b.views["lens5"].lens_node(16))
    np.testing.assert_array_equal(r3["ids"], r5["ids"][..., :3])
    np.testing.assert_allclose(r3["kl"], r5["kl"])


def test_one_forward_per_focus_change_shared_by_views_and_sessions(tiny_models, tmp_path):
    pytest.importorskip("panel")
    from lensframe.focus import Focus
    from lensframe.server.app import build_app

    b = board(tiny_models, tmp_path, kind="llama")
    b.compute(progress=False)
    counter = ForwardCounter(b.executor.model("main").model)
    f1, f2 = Focus(model="main"), Focus(model="main")
    build_app(b, f1)  # renders every view once: one focus pass for sample 0
    assert counter.calls == 1
    build_app(b, f2)  # a second session on the same sample: memoized, no forward
    assert counter.calls == 1
    f1.update(sample=2)  # every view of session 1 re-renders; one forward for all of them
    assert counter.calls == 2
    f1.update(position=1, layer=1, head=2)  # same sample: no forward
    assert counter.calls == 2
    f2.update(sample=2)  # session 2 reaches the sample session 1 computed
    assert counter.calls == 2
    assert f2.position is None and f1.position == 1  # sessions keep their own focus


def test_warm_start_runs_no_forward_and_loads_no_weights(tiny_models, tmp_path):
    board(tiny_models, tmp_path).compute(progress=False)
    warm = board(tiny_models, tmp_path)
    assert all(p.cached for p in warm.plan.of_kind("dataset"))
    report = warm.compute(progress=False)
    assert report.forward_passes == 0 and report.batches == 0
    assert report.cache_hits == 2  # tokens and the shared lens node
    assert warm.executor._models == {}  # no weights were even loaded
    assert warm.executor.forward_passes == 0


def test_focus_pass_attention_equals_output_attentions(tiny_models, tmp_path):
    import torch

    for kind in ("gpt2", "llama"):
        b = board(tiny_models, tmp_path / kind, kind=kind)
        res = b.executor.focus("main", 4)[b.views["attn"].attention_node(16)]["pattern"]
        tok = b.executor.tokens("main")
        n = int(tok["lengths"][4])
        ids = torch.as_tensor(tok["ids"][4:5, :n], dtype=torch.long)
        with torch.no_grad():
            ref = b.executor.model("main").model(input_ids=ids, output_attentions=True).attentions
        info = b.infos["main"]
        np.testing.assert_allclose(res, torch.stack([a[0] for a in ref]).numpy(), atol=float32_atol(info.n_layers, info.d_model))
        assert res.shape == (3, 4, n, n)
        np.testing.assert_allclose(res.sum(-1), 1, atol=1e-5)
