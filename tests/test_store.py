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
