"""Memory of the dataset pass is bounded (issue 7f): every dataset op's reduction state fits the
op's own estimate_bytes (what `lensframe plan` shows), the per-sample-independent reductions (top
examples, neuron importance) do not grow with the dataset, and the largest transient per-batch
buffer (the captured activations, the lens's decode buffers) depends on the batch size, not on the
number of samples.

The pass runs on a tiny model at 12 and 48 texts (and 48 at a doubled batch size). The reduction
states are taken where the executor hands them to each op's finalize (the executor keeps them
local), the captures where Executor._forward / _forward_backward fill their sink.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lensframe.board import Board
from lensframe.executor import Executor
from lensframe.ops import get_op
from lensframe.ops.base import FilledRows
from lensframe.ops.lens import ROWS_PER_MATMUL

from .conftest import LABELS, TEXTS, tiny_spec

VIEWS = """  lens: {type: logit_lens, top_k: 3}
  top: {type: top_examples, k: 4}
  texts: {type: text_clusters, k: 2}
  neurons: {type: neuron_clusters, n_neurons: 50, k: 2, n_perm: 50}
"""
DATASET_OPS = ("logit_lens", "neuron_top_examples", "text_embeddings", "neuron_importance")
PER_SAMPLE = ("logit_lens", "text_embeddings")  # results with one row per sample: they grow, by design
INDEPENDENT = ("neuron_top_examples", "neuron_importance")  # sized by the model, not the dataset
BATCH = 4
SIZES = (12, 48)


def nbytes(value) -> int:
    """Bytes of the arrays held by a reduction state (numpy, torch, dicts, lists, FilledRows)."""
    if isinstance(value, np.ndarray):
        return value.nbytes
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, FilledRows):
        return nbytes(value.arrays)  # its `filled` mask is counted apart (1 byte per sample)
    if isinstance(value, dict):
        return sum(nbytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(nbytes(v) for v in value)
    return 0


def run_pass(tiny_models, tmp_path, monkeypatch, n: int, batch: int = BATCH) -> dict:
    """One board's compute at n texts; what each dataset op's state and each batch's buffers held."""
    texts = [TEXTS[i % len(TEXTS)] for i in range(n)]
    labels = [LABELS[i % len(LABELS)] for i in range(n)]
    spec = tiny_spec(tiny_models["gpt2"], VIEWS, batch_size=batch, texts=texts, labels=labels)
    board = Board.from_text(spec, base_dir=tmp_path, cache_dir=tmp_path / f"store-{n}-{batch}")
    seen = {"state": {}, "filled": {}, "result": {}, "scratch": 0, "captures": [], "grads": []}

    for name in DATASET_OPS:
        cls = type(get_op(name))
        real = cls.finalize

        def finalize(self, node, state, ctx, real=real, name=name):
            seen["state"][name] = nbytes(state)
            if isinstance(state, FilledRows):
                seen["filled"][name] = state.filled.nbytes
            seen["scratch"] = max(seen["scratch"], nbytes(ctx.scratch))  # the lens's decode buffers
            res = real(self, node, state, ctx)
            seen["result"][name] = nbytes(res.arrays)
            return res

        monkeypatch.setattr(cls, "finalize", finalize)

    real_fwd, real_fb = Executor._forward, Executor._forward_backward

    def forward(self, loaded, input_ids, mask, hooks, sink, edits=()):
        out = real_fwd(self, loaded, input_ids, mask, hooks, sink, edits)
        seen["captures"].append(nbytes(sink))
        return out

    def forward_backward(self, loaded, input_ids, mask, hooks, grad_hooks, sink, grads):
        out = real_fb(self, loaded, input_ids, mask, hooks, grad_hooks, sink, grads)
        seen["captures"].append(nbytes(sink))
        seen["grads"].append(nbytes(grads))
        return out

    monkeypatch.setattr(Executor, "_forward", forward)
    monkeypatch.setattr(Executor, "_forward_backward", forward_backward)
    try:
        report = board.compute(progress=False)
    finally:
        monkeypatch.undo()
    assert report.batches == -(-n // batch) == len(seen["captures"])
    seen["estimate"] = {p.node.op: p.est_bytes for p in board.plan.of_kind("dataset")}
    seen["n_tokens"] = int(board.executor.tokens("main")["lengths"].max())
    seen["info"] = board.infos["main"]
    seen["hooks"] = {p.node.op: get_op(p.node.op).hooks(p.node, seen["info"]) for p in board.plan.of_kind("dataset")}
    return seen


@pytest.fixture(scope="module")
def passes(tiny_models, tmp_path_factory):
    mp = pytest.MonkeyPatch()
    try:
        out = {n: run_pass(tiny_models, tmp_path_factory.mktemp(f"mem{n}"), mp, n) for n in SIZES}
        out["batch x2"] = run_pass(tiny_models, tmp_path_factory.mktemp("mem-b2"), mp, SIZES[-1], 2 * BATCH)
    finally:
        mp.undo()
    return out


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("op", DATASET_OPS)
def test_reduction_state_within_estimate(passes, op, n):
    seen = passes[n]
    assert seen["state"][op] > 0
    assert seen["state"][op] <= seen["estimate"][op], \
        f"{op}: reduction state {seen['state'][op]} B > estimate_bytes {seen['estimate'][op]} B at {n} samples"
    if op in seen["filled"]:  # FilledRows bookkeeping: one byte per sample
        assert seen["filled"][op] == n


@pytest.mark.parametrize("op", INDEPENDENT)
def test_independent_states_do_not_grow_with_samples(passes, op):
    small, large = (passes[n]["state"][op] for n in SIZES)
    assert small == large > 0
    assert passes[SIZES[0]]["result"][op] == passes[SIZES[-1]]["result"][op]


@pytest.mark.parametrize("op", PER_SAMPLE)
def test_per_sample_results_grow_linearly(passes, op):
    small, large = (passes[n]["state"][op] for n in SIZES)
    assert large * SIZES[0] == small * SIZES[-1]  # rows of one sample each: exactly proportional


def test_largest_batch_buffer_depends_on_batch_size_not_dataset(passes):
    info = passes[SIZES[0]]["info"]
    hooks = set().union(*passes[SIZES[0]]["hooks"].values())
    width = {"mlp_post": info.d_mlp}  # every other hook the pass reads is a d_model-wide residual
    per_token = sum(width.get(h.split(".")[0], info.d_model) for h in hooks) * 4  # float32
    for key, seen in passes.items():
        batch = 2 * BATCH if key == "batch x2" else BATCH
        bound = batch * seen["n_tokens"] * per_token
        assert max(seen["captures"]) == bound, key  # padded [B, T, width]: the longest batch fills it
        assert max(seen["grads"]) <= bound  # gradients of the captured activations that need them
        # decode buffers: [rows, vocab] float32 logits and exp/scratch, rows bounded by ROWS_PER_MATMUL
        # and by the rows a batch has to decode (a tiny model's batch has fewer)
        rows = min(ROWS_PER_MATMUL, info.n_layers * batch * seen["n_tokens"])
        assert 0 < seen["scratch"] <= 2 * rows * info.vocab_size * 4
    small, large, doubled = (max(passes[k]["captures"]) for k in (*SIZES, "batch x2"))
    assert small == large  # 4x the samples: the same largest buffer
    assert doubled == 2 * large  # 2x the batch: twice the buffer
    assert passes[SIZES[0]]["scratch"] <= passes["batch x2"]["scratch"]


def test_lens_buffers_bounded_by_rows_per_matmul(tiny_models, tmp_path, monkeypatch):
    """Once a batch has more (layer, position) rows than ROWS_PER_MATMUL, the decode buffers are
    exactly [ROWS_PER_MATMUL, vocab] twice: the same for every batch size and dataset size."""
    from lensframe.ops import lens

    monkeypatch.setattr(lens, "ROWS_PER_MATMUL", 20)
    seen = []
    for batch_size, texts in ((2, TEXTS[:4]), (4, TEXTS), (8, TEXTS * 2)):
        board = Board.from_text(tiny_spec(tiny_models["gpt2"], "  lens: {type: logit_lens}\n", batch_size=batch_size,
                                          texts=texts, labels=["x"] * len(texts)),
                                base_dir=tmp_path, cache_dir=tmp_path / f"c{batch_size}")
        caches = []

        def decode(*args, _real=lens.decode_layers, **kw):
            caches.append(args[5])  # the pass's buffer cache (ctx.scratch), filled by the call
            return _real(*args, **kw)

        monkeypatch.setattr(lens, "decode_layers", decode)
        board.compute(progress=False)
        monkeypatch.undo()
        monkeypatch.setattr(lens, "ROWS_PER_MATMUL", 20)
        seen.append(sum(t.numel() * t.element_size() for t in caches[-1].values() if hasattr(t, "element_size")))
    vocab = board.infos["main"].vocab_size
    assert seen == [2 * 20 * vocab * 4] * 3
