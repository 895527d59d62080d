"""Neuron importance (attribution with a backward, or mean |activation|) folded per label, and
mean-pooled text embeddings: streaming reductions checked against per-sample autograd by hand."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lensframe.board import Board
from lensframe.compiler import compile_plan
from lensframe.graph import Node

from .conftest import LABELS, tiny_spec
from .test_sharing import ForwardCounter


class Needs:
    """A stand-in view that only declares nodes (the clustering views come later)."""

    def __init__(self, id, nodes):
        self.id, self._nodes = id, nodes

    def needs(self, max_tokens):
        return self._nodes


def board_with(tiny_models, tmp_path, kind, nodes, views="  lens: {type: logit_lens, top_k: 3}\n"):
    b = Board.from_text(tiny_spec(tiny_models[kind], views), base_dir=tmp_path, cache_dir=tmp_path / "s")
    all_views = {**b.views, "extra": Needs("extra", nodes)}
    fps = {n: s.fingerprint() for n, s in b.sources.items()}
    b.plan = compile_plan(all_views, fps, b.dataset.fingerprint, b.infos, len(b.dataset), 16, b.store)
    return b


def down_proj(model, kind, layer):
    return {"gpt2": lambda: model.transformer.h[layer].mlp.c_proj,
            "llama": lambda: model.model.layers[layer].mlp.down_proj,
            "neox": lambda: model.gpt_neox.layers[layer].mlp.dense_4h_to_h}[kind]()


def reference_importance(b, kind, layers, method):
    """Per sample, on its own: autograd of its mean LM loss w.r.t. the MLP activations."""
    model = b.executor.model("main").model
    tok = b.executor.tokens("main")
    rows = []
    for s in range(len(b.dataset)):
        n = int(tok["lengths"][s])
        ids = torch.as_tensor(tok["ids"][s : s + 1, :n], dtype=torch.long)
        acts = {}
        hooks = [down_proj(model, kind, l).register_forward_pre_hook(
            lambda mod, args, l=l: acts.__setitem__(l, args[0])) for l in layers]
        with torch.enable_grad():
            embeds = model.get_input_embeddings()(ids).detach().requires_grad_(True)
            logits = model(inputs_embeds=embeds).logits[0]
            for a in acts.values():
                a.retain_grad()
            loss = torch.nn.functional.cross_entropy(logits[:-1], ids[0, 1:])
            loss.backward()
        for h in hooks:
            h.remove()
        if method == "attribution":
            rows.append(torch.cat([(acts[l][0] * acts[l].grad[0]).abs().sum(0) for l in layers]))
        else:
            rows.append(torch.cat([acts[l][0].abs().mean(0) for l in layers]))
    return torch.stack(rows).detach().double().numpy()  # [samples, neurons]


@pytest.mark.parametrize("kind", ["gpt2", "llama", "neox"])
@pytest.mark.parametrize("method", ["attribution", "activation"])
def test_importance_folded_per_topic_equals_per_sample_autograd(kind, method, tiny_models, tmp_path):
    node = Node.make("neuron_importance", "main", layers=(0, 2), method=method)
    b = board_with(tiny_models, tmp_path, kind, [node])
    b.compute(progress=False)
    res = b.result(node)
    ref = reference_importance(b, kind, [0, 2], method)
    topics = res.meta["topics"]
    assert topics == sorted(set(LABELS))
    expected = np.zeros((ref.shape[1], len(topics), 2))  # two halves of the samples: even, odd
    counts = np.zeros((len(topics), 2), dtype=int)
    for s, label in enumerate(b.dataset.labels):
        expected[:, topics.index(label), s % 2] += ref[s]
        counts[topics.index(label), s % 2] += 1
    np.testing.assert_allclose(res["sums"], expected, rtol=2e-4, atol=1e-6)
    assert res["counts"].tolist() == counts.tolist()
    assert res["sums"].shape == (2 * b.executor.model("main").adapter.d_mlp, len(topics), 2)  # results only


def test_backward_pass_is_fused_with_the_other_nodes(tiny_models, tmp_path):
    imp = Node.make("neuron_importance", "main", layers="all", method="attribution")
    emb = Node.make("text_embeddings", "main", layer=1)
    b = board_with(tiny_models, tmp_path, "llama", [imp, emb])
    counter = ForwardCounter(b.executor.model("main").model)
    weights = {k: v.clone() for k, v in b.executor.model("main").model.state_dict().items()}
    report = b.compute(progress=False)
    assert counter.calls == report.batches == 3  # lens, importance and embeddings: one pass
    for k, v in b.executor.model("main").model.state_dict().items():
        assert torch.equal(v, weights[k]) and not v.requires_grad
    # the lens computed inside the gradient pass is the same as without it
    plain = Board.from_text(tiny_spec(tiny_models["llama"], "  lens: {type: logit_lens, top_k: 3}\n"),
                            base_dir=tmp_path, cache_dir=tmp_path / "plain")
    plain.compute(progress=False)
    node = plain.views["lens"].lens_node(16)
    np.testing.assert_allclose(b.result(node)["probs"], plain.result(node)["probs"], atol=1e-5)


def test_text_embeddings_are_mean_pooled_block_outputs(tiny_models, tmp_path):
    node = Node.make("text_embeddings", "main", layer=1)
    b = board_with(tiny_models, tmp_path, "gpt2", [node])
    b.compute(progress=False)
    emb = b.result(node)["embedding"]
    model = b.executor.model("main").model
    tok = b.executor.tokens("main")
    for s in range(len(b.dataset)):
        n = int(tok["lengths"][s])
        with torch.no_grad():
            hs = model(input_ids=torch.as_tensor(tok["ids"][s : s + 1, :n], dtype=torch.long),
                       output_hidden_states=True).hidden_states
        np.testing.assert_allclose(emb[s], hs[2][0].mean(0).numpy(), atol=1e-5)  # hs[2]: after block 1
