"""The store: content-addressed, atomic, checksummed; a corrupt entry is recomputed, never served."""
from __future__ import annotations

import numpy as np

from lensframe.board import Board
from lensframe.ops.base import Result
from lensframe.store import Store

from .conftest import tiny_spec



def lens(board):
    return board.views["lens"].lens_node(board.spec.dataset.max_tokens)


def test_roundtrip_and_no_temp_files(tmp_path):
    s = Store(tmp_path)
    arrays = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([1, 2], dtype=np.int32)}
    s.put("ab" * 32, Result(arrays, {"x": [1, "two"]}), "node")
    got = s.get("ab" * 32)
    np.testing.assert_array_equal(got["a"], arrays["a"])
    assert got.meta == {"x": [1, "two"]}
    assert not [p for p in tmp_path.rglob(".tmp-*")]
    assert s.get("cd" * 32) is None


def test_corrupt_entry_is_detected(tmp_path):
    s = Store(tmp_path)
    s.put("ab" * 32, Result({"a": np.zeros(100, np.float32)}), "node")
    path = next(tmp_path.rglob("*.safetensors"))
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 0xFF
    path.write_bytes(bytes(blob))
    assert s.get("ab" * 32) is None
    path.write_bytes(bytes(blob[:10]))  # truncated, as after a crash mid-write
    assert s.get("ab" * 32) is None


def test_corrupt_result_is_recomputed_by_compute(tiny_models, tmp_path):
    text = tiny_spec(tiny_models["gpt2"], "  lens: {type: logit_lens, top_k: 3}\n")
    first = Board.from_text(text, base_dir=tmp_path, cache_dir=tmp_path / "store")
    first.compute(progress=False)
    good = first.result(lens(first))["probs"].copy()
    key = first.plan.nodes[lens(first)].key
    path = tmp_path / "store" / key[:2] / f"{key}.safetensors"
    path.write_bytes(path.read_bytes()[:-7] + b"garbage")

    again = Board.from_text(text, base_dir=tmp_path, cache_dir=tmp_path / "store")
    assert again.store.get(key) is None
    report = again.compute(progress=False)
    assert report.computed == 1 and report.forward_passes > 0
    np.testing.assert_allclose(again.result(lens(again))["probs"], good, atol=1e-6)


def test_keys_depend_on_dataset_and_model(tiny_models, tmp_path):
    a = Board.from_text(tiny_spec(tiny_models["gpt2"], "  lens: {type: logit_lens, top_k: 3}\n"), base_dir=tmp_path)
    b = Board.from_text(tiny_spec(tiny_models["llama"], "  lens: {type: logit_lens, top_k: 3}\n"), base_dir=tmp_path)
    c = Board.from_text(tiny_spec(tiny_models["gpt2"], "  lens: {type: logit_lens, top_k: 3}\n").replace("max_tokens: 16", "max_tokens: 15"), base_dir=tmp_path)
    keys = {x.plan.nodes[lens(x)].key for x in (a, b, c)}
    assert len(keys) == 3


def test_edited_metadata_is_not_served(tiny_models, tmp_path):
    """The metadata a result is served with is covered by the checksum: token strings edited in the
    JSON file make the entry absent (recomputed; a read-only server refuses to start), and so does
    metadata edited inside the safetensors header."""
    import json

    from lensframe.errors import LensframeError
    from lensframe.server.app import require_stored

    text = tiny_spec(tiny_models["gpt2"], "  text: {type: text}\n")
    first = Board.from_text(text, base_dir=tmp_path, cache_dir=tmp_path / "store")
    first.compute(progress=False)
    (planned,) = [p for p in first.plan.nodes.values() if p.node.op == "tokens"]
    meta_path = tmp_path / "store" / planned.key[:2] / f"{planned.key}.json"
    doc = json.loads(meta_path.read_text())
    assert doc["meta"], doc  # the tokens result keeps metadata (what the views show of the tokens)
    edited = json.loads(json.dumps(doc))
    first_key = next(iter(edited["meta"]))
    edited["meta"][first_key] = "edited"
    meta_path.write_text(json.dumps(edited))
    again = Board.from_text(text, base_dir=tmp_path, cache_dir=tmp_path / "store")
    assert again.store.get(planned.key) is None
    again.store.read_only = True
    try:
        require_stored(again)
        raise AssertionError("a read-only server started on an edited entry")
    except LensframeError:
        pass
    again.store.read_only = False
    assert again.compute(progress=False).computed == 1  # recomputed, and served again
    assert again.store.get(planned.key).meta == doc["meta"]
    # the header's copy edited instead (the same length, so only the checksum can tell)
    path = meta_path.with_suffix(".safetensors")
    blob = path.read_bytes()
    assert b'\\"key\\"' in blob[:4096]
    path.write_bytes(blob.replace(b'\\"key\\"', b'\\"kez\\"', 1))
    assert again.store.get(planned.key) is None


def test_temp_files_of_a_killed_run_are_swept_at_the_next_start(tiny_models, tmp_path):
    """A write killed half-way (kill -9) leaves `.tmp-<pid>-*` in the store, and a killed SmolLM2
    conversion a `.convert-<pid>-*` folder; the next start removes those of dead processes only."""
    import os
    import subprocess
    import sys

    from lensframe.leftovers import sweep, temp_prefix

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a process id that no longer runs, as after kill -9
    store = tmp_path / "store"
    (store / "ab").mkdir(parents=True)
    killed = store / "ab" / f".tmp-{gone.pid}-x1y2"
    killed.write_bytes(b"\0" * 1000)
    live = store / "ab" / f"{temp_prefix('tmp')}z9"  # this process's own write in progress
    live.write_bytes(b"")
    Board.from_text(tiny_spec(tiny_models["gpt2"], "  lens: {type: logit_lens}\n"), base_dir=tmp_path, cache_dir=store)
    assert not killed.exists() and live.exists()

    models = tmp_path / "home" / "models"
    half = models / f".convert-{gone.pid}-abc"
    half.mkdir(parents=True)
    (half / "model.safetensors").write_bytes(b"\0" * 1000)
    assert sweep(models, "convert", "") == [half] and not half.exists()
    assert os.listdir(models) == []


def test_a_writer_killed_with_sigkill_leaves_nothing_after_the_next_start(tiny_models, tmp_path):
    """A real kill -9 in the middle of a write (the process stopped between writing its temp file and
    renaming it): the next Board on the store removes the temp file."""
    import signal
    import subprocess
    import sys
    import time

    store = tmp_path / "store"
    code = ("import os, sys, time, numpy as np\n"
            "from lensframe.store import Store\nfrom lensframe.ops.base import Result\n"
            "os.replace = lambda a, b: (print('written', flush=True), time.sleep(600))\n"
            "Store(sys.argv[1]).put('ab' + '0' * 62, Result({'x': np.zeros(10**6, np.float32)}), 'big')\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(store)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "written"  # its temp file is on disk now
        temps = list(store.rglob(".tmp-*"))
        assert len(temps) == 1 and temps[0].stat().st_size > 4 * 10**6
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    time.sleep(0.1)
    Board.from_text(tiny_spec(tiny_models["gpt2"], "  lens: {type: logit_lens}\n"), base_dir=tmp_path, cache_dir=store)
    assert list(store.rglob(".tmp-*")) == []


def test_two_computes_of_one_plan_run_one_pass_between_them(tiny_models, tmp_path):
    """Two `lensframe compute` processes of the same spec on the same store, started together: the
    second waits on the store's lock for the plan and finds the results stored; their forward
    passes add up to one run's."""
    import json
    import subprocess
    import sys

    texts = [f"Text number {i} says something about cats and law." for i in range(120)]
    spec = tmp_path / "spec.yaml"
    spec.write_text(tiny_spec(tiny_models["gpt2"], "  lens: {type: logit_lens, top_k: 3}\n", texts=texts,
                              labels=["a"] * len(texts)))
    store = tmp_path / "store"
    cmd = [sys.executable, "-m", "lensframe", "compute", str(spec), "--cache-dir", str(store), "--json"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    reports = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    alone = Board.from_text(spec.read_text(), base_dir=tmp_path, cache_dir=tmp_path / "alone").compute(progress=False)
    assert sorted(r["forward_passes"] for r in reports) == [0, alone.forward_passes], reports
    waited = [err for _, err in outs if "waiting for another compute of this plan" in err]
    assert len(waited) <= 1
