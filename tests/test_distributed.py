"""Dataset passes sharded over Dask workers (lensframe.distributed) give exactly the single
process's results, for every kind of dataset reduction, on a LocalCluster of 2 workers."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import tiny_spec

pytest.importorskip("dask.distributed")

# every dataset reduction lensframe has: per-sample rows (logit lens, text embeddings, model KL),
# top-k with ties (top examples), float sums (neuron importance), a second-stage pass (the lens
# through a tuned lens trained on tokens drawn during the first), and derived results after them
VIEWS = """  lens: {type: logit_lens, top_k: 3}
  tuned: {type: logit_lens, top_k: 3, lens: tuned, tuned: {train_tokens: 40, steps: 20, lr: 0.01, batch_tokens: 16}}
  top: {type: top_examples, layers: all, k: 3}
  nc: {type: neuron_clusters, layers: [0], n_neurons: 32, k: 3, n_perm: 50}
  tc: {type: text_clusters, layer: 1, k: 3}
  diff: {type: model_diff, other: edited, texts: 6}"""


@pytest.fixture(scope="module")
def spec_file(tiny_models, tmp_path_factory):
    """A two-model spec: the tiny Llama and a copy with two heads knocked out (for model_diff's KL)."""
    from lensframe.edits import apply_edit, save_model
    from tests.test_edits import load

    root = tmp_path_factory.mktemp("dist")
    loaded = load(tiny_models["llama"])
    apply_edit("knockout", loaded, layer=1, heads=[0, 2])
    save_model(loaded, out_dir=root / "edited")
    text = tiny_spec(tiny_models["llama"], VIEWS).replace(
        f"model: path:{tiny_models['llama']}",
        f"models:\n  main: {{source: 'path:{tiny_models['llama']}'}}\n  edited: {{source: 'path:{root / 'edited'}'}}")
    path = root / "spec.yaml"
    path.write_text(text)
    return path


def stored(board) -> dict:
    """Every stored result of the plan, by node label."""
    out = {}
    for node, planned in board.plan.nodes.items():
        if node.kind in ("dataset", "derive", "prepare"):
            res = board.store.get(planned.key)
            assert res is not None, node.label()
            out[node.label()] = res
    return out


def test_two_workers_give_exactly_the_single_process_results(spec_file, tmp_path, capsys):
    from lensframe.board import Board
    from lensframe.cli import main

    local = Board.from_file(spec_file, cache_dir=tmp_path / "local")
    local_report = local.compute(progress=False)

    assert main(["compute", str(spec_file), "--cache-dir", str(tmp_path / "dask"), "--workers", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # every batch ran once, on some worker: the same passes as one process
    assert report["batches"] == local_report.batches and report["forward_passes"] == local_report.forward_passes

    sharded = Board.from_file(spec_file, cache_dir=tmp_path / "dask")
    a, b = stored(local), stored(sharded)
    assert a.keys() == b.keys() and any(k.startswith("neuron_importance") for k in a)
    for label in a:
        assert a[label].arrays.keys() == b[label].arrays.keys(), label
        for name, value in a[label].arrays.items():
            assert value.dtype == b[label][name].dtype and value.shape == b[label][name].shape, (label, name)
            assert np.array_equal(value, b[label][name], equal_nan=True), (label, name)
        assert a[label].meta == b[label].meta, label
    # and a second compute finds it all stored: the merged results went into the spec's store
    assert Board.from_file(spec_file, cache_dir=tmp_path / "dask").compute(progress=False).forward_passes == 0


def test_shards_cut_the_single_process_batches_in_order(spec_file, tmp_path, monkeypatch):
    """A shard is a run of the single process's batches, and shards merge in order even when a
    later one finishes first."""
    import dask.distributed

    import lensframe.distributed as dist
    from lensframe.board import Board

    board = Board.from_file(spec_file, cache_dir=tmp_path / "s")
    batches = board.executor.dataset_batches("main")
    node = next(iter(board.plan.nodes))
    shards = []

    class Future:
        def __init__(self, value):
            self.value = value

        def result(self):
            return self.value

    class Client:  # two workers; records each shard and returns its index as the "state"
        def scheduler_info(self):
            return {"workers": {"a": {}, "b": {}}}

        def submit(self, fn, *args, pure):
            shards.append([list(b) for b in args[-1]])
            return Future(({node: [len(shards) - 1]}, len(args[-1])))

    class ConcatOp:
        def merge(self, node, a, b):
            return a + b

    monkeypatch.setattr(dask.distributed, "as_completed", lambda futures: list(reversed(list(futures))))
    monkeypatch.setattr(dist, "get_op", lambda name: ConcatOp())
    progress = []
    merged, passes = dist.DaskShards(board, Client(), "", 1).run("main", [node], {}, batches, progress.append)
    assert [b for shard in shards for b in shard] == [list(b) for b in batches]  # contiguous, complete
    assert len(shards) == min(len(batches), 2 * dist.SHARDS_PER_WORKER)
    assert merged[node] == list(range(len(shards)))  # merged in shard order, not completion order
    assert passes == len(batches) and sum(progress) == len(batches)


def test_distributed_errors_are_clear(spec_file, tmp_path, capsys):
    from lensframe.cli import main

    assert main(["compute", str(spec_file), "--workers", "0", "--cache-dir", str(tmp_path)]) == 2
    assert "at least 1 worker" in capsys.readouterr().err
    assert main(["compute", str(spec_file), "--scheduler", "tcp://127.0.0.1:1", "--cache-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "cannot reach the Dask scheduler" in err and "Traceback" not in err
