"""Dataset passes that resume (lensframe.checkpoint): the state format, an interrupted pass resumed in
process, and `lensframe compute` killed with SIGKILL at several points and rerun.

Resumed results are compared with a clean run's with exact equality: the resumed batches run the same
kernels on the same shapes as the clean run's (same machine, same thread count), and the states
restored from the checkpoint are the bits that were written, so nothing may differ at all."""
from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from lensframe.board import Board
from lensframe.checkpoint import FOLDER, CheckpointUnsupported, decode, encode, parse_every, write_safetensors
from lensframe.ops.base import FilledRows, Result

from .conftest import tiny_spec

# every kind of reduction state: per-sample rows (lens), kept focus results (attention), torch top-k
# tensors (top_examples), float64 sums with a topic index (neuron_clusters' importance), pooled
# embeddings (text_clusters), a growing list of sampled rows (the tuned lens)
VIEWS = """  lens: {type: logit_lens, top_k: 3}
  attn: {type: attention}
  top: {type: top_examples, layers: all, k: 4}
  nc: {type: neuron_clusters, layers: [0], n_neurons: 32, k: 3, n_perm: 50}
  tc: {type: text_clusters, layer: 0, k: 2}
  tuned: {type: logit_lens, top_k: 3, lens: tuned, tuned: {train_tokens: 200, steps: 10, lr: 0.01, batch_tokens: 16}}
"""
TEXTS = [f"Text {i} tells of {['cats', 'law', 'bread', 'stars'][i % 4]} and of the {i % 7} old ways." for i in range(48)]
LABELS = [["cats", "law", "food", "sky"][i % 4] for i in range(48)]


def spec_text(model_dir, every) -> str:
    return tiny_spec(model_dir, VIEWS, batch_size=2, texts=TEXTS, labels=LABELS, keep_focus_mb=64).replace(
        "run: {", f"run: {{checkpoint_every: {every}, ")


def stored(board) -> dict:
    """Every stored result of the plan, by node label: {array name: array}."""
    out = {}
    for p in board.plan.nodes.values():
        if p.node.kind in ("prepare", "dataset", "derive"):
            res = board.store.get(p.key)
            assert res is not None, p.node.label()
            out[p.node.label()] = res
    return out


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for label in a:
        assert a[label].arrays.keys() == b[label].arrays.keys(), label
        for k in a[label].arrays:
            np.testing.assert_array_equal(a[label].arrays[k], b[label].arrays[k], err_msg=f"{label}: {k}")
        assert json.dumps(a[label].meta, sort_keys=True) == json.dumps(b[label].meta, sort_keys=True), label


@pytest.fixture(scope="module")
def clean(tiny_models, tmp_path_factory):
    """The uninterrupted run the resumed ones are compared with (its own store)."""
    folder = tmp_path_factory.mktemp("clean")
    board = Board.from_text(spec_text(tiny_models["llama"], 0), base_dir=folder, cache_dir=folder / "store")
    report = board.compute(progress=False)
    assert report.checkpoints == 0 and report.resumed_batches == 0
    return {"results": stored(board), "forward_passes": report.forward_passes, "batches": report.batches}


# --- the format --------------------------------------------------------------------------------
def test_states_round_trip_bit_for_bit(tmp_path):
    rows = FilledRows({"x": (3,), "p": (2,)}, {"x": np.float32, "p": np.float64}, 5, fill=np.nan)
    ids = FilledRows({"ids": (2,)}, {"ids": np.int32}, 4, fill=-1)
    ids.put(np.array([2]), "ids", [np.array([7, 8], np.int32)])
    rows.put(np.array([1, 3]), "x", [np.array([1.5, -0.0, np.inf], np.float32), np.array([2.0], np.float32)])
    state = {
        "rows": rows, "ids": ids,
        7: Result({"pattern": np.arange(6, dtype=np.float32).reshape(2, 3)}, {"layers": ["embed", "0"], "n": 2}),
        ("a", 1): [torch.tensor([1.0, float("nan")]), torch.arange(4, dtype=torch.long), (np.float64(2.5), None)],
        "bf16": torch.tensor([1.0, 2.5, -3.0], dtype=torch.bfloat16),
        "flags": np.array([True, False]), "rate": 0.25, "text": "x", "empty": [],
        "scalar": np.array(3.0, dtype=np.float32),
    }
    from safetensors.numpy import load_file

    arrays: dict = {}
    doc = json.loads(json.dumps(encode(state, arrays)))  # through JSON and a file, as a checkpoint holds them
    write_safetensors(tmp_path / "c.safetensors", arrays, {"x": "y"})
    back = decode(doc, load_file(str(tmp_path / "c.safetensors")))
    assert set(back) == set(state)
    np.testing.assert_array_equal(back["rows"].arrays["x"], rows.arrays["x"])
    np.testing.assert_array_equal(back["rows"].filled, rows.filled)
    assert back["rows"].arrays["p"].dtype == np.float64 and math.isnan(back["rows"].fill)
    assert back["ids"].arrays["ids"].dtype == np.int32 and back["ids"].fill == -1
    np.testing.assert_array_equal(back["ids"].arrays["ids"], ids.arrays["ids"])
    np.testing.assert_array_equal(back[7].arrays["pattern"], state[7].arrays["pattern"])
    assert back[7].meta == state[7].meta
    t = back[("a", 1)]
    assert torch.equal(t[1], state[("a", 1)][1]) and t[1].dtype == torch.long
    assert torch.isnan(t[0][1]) and t[0][0] == 1.0 and t[2] == (2.5, None) and isinstance(t[2][0], np.float64)
    assert back["bf16"].dtype == torch.bfloat16 and torch.equal(back["bf16"], state["bf16"])
    assert back["flags"].dtype == bool and back["rate"] == 0.25 and back["empty"] == []
    assert back["scalar"].shape == () and back["scalar"] == 3.0


def test_an_object_the_format_cannot_hold_is_refused_not_pickled():
    class Opaque:
        pass

    with pytest.raises(CheckpointUnsupported, match="Opaque"):
        encode({"x": Opaque()}, {})
    with pytest.raises(ValueError, match="unknown checkpoint tag"):
        decode({"pickle": "gASV"}, {})


def test_checkpoint_every_forms():
    assert parse_every(50) == (50, 0.0) and parse_every(0) == (0, 0.0)
    assert parse_every("90s") == (0, 90.0) and parse_every("5m") == (0, 300.0) and parse_every("1h") == (0, 3600.0)
    for bad in ("10 minutes", "-5s", -1, True):
        with pytest.raises(ValueError):
            parse_every(bad)


def test_a_bad_checkpoint_every_is_a_spec_error_with_its_line(tiny_models, tmp_path):
    from lensframe.errors import LensframeError

    text = spec_text(tiny_models["gpt2"], '"ten minutes"')
    with pytest.raises(LensframeError) as err:
        Board.from_text(text, base_dir=tmp_path, cache_dir=tmp_path / "store")
    assert "checkpoint_every" in str(err.value) and "60s" in str(err.value)


# --- an interrupted pass, resumed ----------------------------------------------------------------
class Interrupted(Exception):
    pass


def compute_interrupted(text: str, tmp_path, store, monkeypatch, after: int) -> None:
    """A compute that stops, as if killed, after `after` batches of its first dataset pass."""
    from lensframe.executor import Executor

    original, count = Executor.run_batches, {"n": 0}

    def stopping(self, model, ctx, states, batches, on_batch=None):
        def counted():
            on_batch()
            count["n"] += 1
            if count["n"] == after:
                raise Interrupted
        return original(self, model, ctx, states, batches, counted)

    with monkeypatch.context() as m:
        m.setattr(Executor, "run_batches", stopping)
        with pytest.raises(Interrupted):
            Board.from_text(text, base_dir=tmp_path, cache_dir=store).compute(progress=False)


def test_an_interrupted_pass_resumes_from_its_checkpoint_with_identical_results(tiny_models, tmp_path, clean,
                                                                                monkeypatch):
    """The first dataset pass stops after 9 of its 24 batches (checkpoints every 4: the last at 8);
    the next compute runs the remaining 16 and the later pass, and every stored array equals the clean
    run's. The checkpoint is gone once the results are stored."""
    text, store = spec_text(tiny_models["llama"], 4), tmp_path / "store"
    compute_interrupted(text, tmp_path, store, monkeypatch, after=9)
    assert len(list((store / FOLDER).glob("pass-*.safetensors"))) == 1

    board = Board.from_text(text, base_dir=tmp_path, cache_dir=store)
    report = board.compute(progress=False)
    assert report.resumed_batches == 8
    assert report.forward_passes == clean["forward_passes"] - 8
    assert_same(stored(board), clean["results"])
    assert list((store / FOLDER).glob("*")) == []


def test_a_checkpoint_of_another_pass_is_not_resumed(tiny_models, tmp_path, monkeypatch):
    """A changed dataset makes another pass (other node keys, other batches): its checkpoint is ignored."""
    store = tmp_path / "store"
    text = spec_text(tiny_models["gpt2"], 2).replace("  lens: {type: logit_lens, top_k: 3}\n", "")
    compute_interrupted(text, tmp_path, store, monkeypatch, after=5)
    other = text.replace("Text 0 tells", "Text zero tells")
    report = Board.from_text(other, base_dir=tmp_path, cache_dir=store).compute(progress=False)
    assert report.resumed_batches == 0


def test_cache_gc_keeps_a_checkpoint_its_spec_resumes_and_removes_one_no_spec_does(tiny_models, tmp_path,
                                                                                 monkeypatch, capsys):
    from lensframe.cli import main

    store = tmp_path / "store"
    text = spec_text(tiny_models["gpt2"], 2).replace("  lens: {type: logit_lens, top_k: 3}\n", "")
    compute_interrupted(text, tmp_path, store, monkeypatch, after=5)
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    assert main(["cache", "list", str(spec), "--cache-dir", str(store)]) == 0
    listed = capsys.readouterr().out
    assert "checkpoint pass-" in listed and "batch 4 of" in listed and "resumed by the next compute" in listed
    assert main(["cache", "gc", str(spec), "--cache-dir", str(store)]) == 0
    assert "0 checkpoint(s)" in capsys.readouterr().out and checkpoint_done(store) == 4
    spec.write_text(text.replace("Text 0 tells", "Text zero tells"))  # edited: another pass
    assert main(["cache", "gc", str(spec), "--cache-dir", str(store)]) == 0
    out = capsys.readouterr().out
    assert "removed checkpoint pass-" in out and "1 checkpoint(s)" in out
    assert checkpoint_done(store) == 0


# --- kill -9 and rerun, as a researcher's long run dies ------------------------------------------
# `lensframe compute` in a subprocess, each batch slowed by 40 ms (by the test, around the real
# pass) so that the kills land inside the pass on any machine.
SLOW_COMPUTE = """
import sys, time
from lensframe import executor
original = executor.Executor.run_batches
def slow(self, model, ctx, states, batches, on_batch=None):
    def each():
        time.sleep(0.04)
        on_batch()
    return original(self, model, ctx, states, batches, each)
executor.Executor.run_batches = slow
from lensframe.cli import main
sys.exit(main(["compute", sys.argv[1], "--cache-dir", sys.argv[2], "--json"]))
"""


def checkpoint_done(store) -> int:
    """Batches done in the store's checkpoint (0 when there is none), read as the header says."""
    from lensframe.checkpoint import checkpoints
    from lensframe.store import Store

    found = checkpoints(Store(store))
    return found[0][1]["done"] if found else 0


def test_compute_killed_with_sigkill_at_several_points_resumes_and_equals_a_clean_run(tiny_models, tmp_path, clean):
    spec = tmp_path / "spec.yaml"
    spec.write_text(spec_text(tiny_models["llama"], 3))
    store = tmp_path / "store"
    total = clean["batches"]
    first_pass = 24  # 48 texts in batches of 2; the tuned lens's second pass reruns them
    resumed_at = []
    for target in (3, 12, 21):  # kill once the checkpoint holds at least `target` batches
        proc = subprocess.Popen([sys.executable, "-c", SLOW_COMPUTE, str(spec), str(store)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 300
            while checkpoint_done(store) < target:
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline
                time.sleep(0.005)
            before = checkpoint_done(store)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        resumed_at.append(before)
    proc = subprocess.run([sys.executable, "-c", SLOW_COMPUTE, str(spec), str(store)], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    last = checkpoint_done_after_kill = resumed_at[-1]
    assert 21 <= checkpoint_done_after_kill < first_pass
    # the last run resumed from the checkpoint left by the last kill (a later one may have been written
    # between the poll and the kill: it holds more batches, never fewer)
    assert report["resumed_batches"] >= last
    assert report["forward_passes"] == clean["forward_passes"] - report["resumed_batches"]
    assert report["batches"] == total
    board = Board.from_text(spec.read_text(), base_dir=tmp_path, cache_dir=store)
    assert_same(stored(board), clean["results"])
    assert list(store.rglob(".tmp-*")) == [] and list((store / FOLDER).glob("*")) == []
