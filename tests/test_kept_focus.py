"""Focus results kept by the dataset pass (lensframe.ops.kept_focus): a focus change reads them from
the store with no forward, and they equal what a live focus pass of the sample alone computes."""
from __future__ import annotations

import numpy as np
import pytest

from lensframe.board import Board

from .conftest import tiny_spec

VIEWS = "  attn: {type: attention}\n  acts: {type: neurons}\n"


def board_with(tiny_models, tmp_path, keep_mb, kind="llama", name="c"):
    text = tiny_spec(tiny_models[kind], VIEWS, keep_focus_mb=keep_mb)
    return Board.from_text(text, base_dir=tmp_path, cache_dir=tmp_path / name)


def kept_ops(board):
    return sorted(focus.op for focus in board.plan.kept())


@pytest.mark.parametrize("kind", ["llama", "gpt2", "neox"])
def test_kept_focus_equals_live_focus_pass_and_runs_no_forward(kind, tiny_models, tmp_path):
    kept = board_with(tiny_models, tmp_path, 64, kind, "kept")
    live = board_with(tiny_models, tmp_path, 0, kind, "live")
    assert kept_ops(kept) == ["attention", "neuron_acts"] and kept_ops(live) == []
    plan = kept.plan.describe()  # `lensframe plan` says what is kept and that clicks need no forward
    assert "kept_focus(attention()) @main" in plan and "all kept in the store by the dataset pass" in plan
    assert "kept in the store" not in live.plan.describe()
    report = kept.compute(progress=False)
    assert report.forward_passes == report.batches == 3  # kept in the one dataset pass, no extra forward
    before = kept.executor.forward_passes
    lengths = kept.executor.tokens("main")["lengths"]
    for sample in range(len(kept.dataset)):
        got, want = kept.executor.focus("main", sample), live.executor.focus("main", sample)
        assert set(got) == set(want)
        for node, res in want.items():
            for name, arr in res.arrays.items():
                assert got[node][name].shape == arr.shape  # the sample's own length, no padding
                np.testing.assert_allclose(got[node][name], arr, atol=2e-5, rtol=1e-4)
        assert got[next(n for n in got if n.op == "attention")]["pattern"].shape[-1] == lengths[sample]
    assert kept.executor.forward_passes == before  # every focus change read the store
    # the server shows a loading spinner only where a click will wait for a forward
    assert kept.executor.focus_ready("main", 5) and not live.executor.focus_ready("main", 99)
    assert live.executor.forward_passes == len(kept.dataset)


def test_budget_keeps_the_smallest_focus_nodes_first(tiny_models, tmp_path):
    board = board_with(tiny_models, tmp_path, 0.12, "gpt2")  # room for the attention patterns only
    assert not board.executor.focus_ready("main", 2)
    info = board.infos["main"]
    n, T = len(board.dataset), board.spec.dataset.max_tokens
    assert n * info.n_layers * info.n_heads * T * T * 4 <= 0.12 * 2**20 < n * info.n_layers * T * info.d_mlp * 4
    assert kept_ops(board) == ["attention"]
    board.compute(progress=False)
    before = board.executor.forward_passes
    results = board.executor.focus("main", 2)
    assert board.executor.forward_passes == before + 1  # neuron activations still need the sample's forward
    assert {node.op for node in results} == {"attention", "neuron_acts"}
    assert board.executor.focus_ready("main", 2) and not board.executor.focus_ready("main", 3)  # memoized only


def test_server_warm_start_on_kept_focus_runs_no_forward(tiny_models, tmp_path):
    """A warm server (filled store) answers its warm-up focus pass and every click from the store."""
    from lensframe.focus import Focus
    from lensframe.server.app import build_app, warm_up

    board = board_with(tiny_models, tmp_path, 64)
    board.compute(progress=False)
    warm = board_with(tiny_models, tmp_path, 64)  # a new process on the same store
    warm_up(warm, say=lambda line: None)
    focus = Focus(model="main")
    build_app(warm, focus)
    for sample in range(len(warm.dataset)):
        focus.update(sample=sample)
    assert warm.executor.forward_passes == 0
