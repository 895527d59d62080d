"""The store: each entry read once, and `lensframe cache list|gc` (what a store holds per spec, and
removing what no spec in a folder references, keeping on-demand results of the specs' models)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from lensframe.board import Board
from lensframe.cli import main
from lensframe.ops.base import Result
from lensframe.store import Store

from .conftest import tiny_spec


def test_an_entry_is_read_once_and_its_checksum_is_of_the_bytes_written(tmp_path, monkeypatch):
    import hashlib
    import json

    store = Store(tmp_path)
    store.put("ab" + "0" * 62, Result({"x": np.arange(6, dtype=np.float32).reshape(2, 3)}, {"m": 1}), "node")
    arrays_path, meta_path = store._paths("ab" + "0" * 62)
    assert json.loads(meta_path.read_text())["sha256"] == hashlib.sha256(arrays_path.read_bytes()).hexdigest()
    reads = []
    real = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: reads.append(self.name) or real(self))
    res = store.get("ab" + "0" * 62)
    np.testing.assert_array_equal(res["x"], np.arange(6, dtype=np.float32).reshape(2, 3))
    assert reads == [arrays_path.name] and res.meta == {"m": 1}


def _specs(tiny_models, folder: Path) -> dict[str, Path]:
    folder.mkdir()
    specs = {"a": tiny_spec(tiny_models["gpt2"], "  lens: {type: logit_lens, top_k: 3}\n"),
             "b": tiny_spec(tiny_models["gpt2"], "  lens: {type: logit_lens, top_k: 5}\n")}
    out = {}
    for name, text in specs.items():
        out[name] = folder / f"{name}.yaml"
        out[name].write_text(text)
    return out


def test_cache_gc_removes_only_what_no_spec_in_the_folder_references(tiny_models, tmp_path, capsys):
    store_dir = tmp_path / "store"
    paths = _specs(tiny_models, tmp_path / "specs")
    boards = {n: Board.from_file(p, cache_dir=store_dir) for n, p in paths.items()}
    for b in boards.values():
        b.compute(progress=False)
    keys = {n: {p.key for p in b.plan.nodes.values() if p.node.kind in ("prepare", "dataset")} for n, b in boards.items()}
    only_b = keys["b"] - keys["a"]
    assert only_b and keys["a"] & keys["b"]  # the tokens are shared, the lens is not
    store = boards["a"].store
    fp = boards["a"].fingerprints["main"]
    dream = Result({"ids": np.zeros(3, np.int32)}, {})
    store.put("d1" + "1" * 62, dream, "dream(L0/N1) @main", refs={"models": [fp]})  # of a's model: kept
    store.put("d2" + "2" * 62, dream, "dream of a model no spec uses", refs={"models": ["f" * 64]})
    import subprocess
    import sys

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    leftover = store.root / "d1" / f".tmp-{gone.pid}-interrupted"  # a write whose process was killed
    leftover.write_bytes(b"half")
    before = {k for k, _, _ in store.entries()}

    paths["b"].unlink()  # b is gone from the folder: its own results are garbage now
    assert main(["cache", "list", str(tmp_path / "specs"), "--cache-dir", str(store_dir)]) == 0
    out = capsys.readouterr().out
    assert f"{paths['a']}: {len(keys['a'])} of {len(keys['a'])} results stored" in out
    assert "on demand (dreams, edit searches) of these specs' models: 1 entries" in out
    assert f"referenced by none of these specs: {len(only_b) + 1} entries" in out

    assert main(["cache", "gc", str(tmp_path / "specs"), "--cache-dir", str(store_dir), "--dry-run"]) == 0
    assert "would remove" in capsys.readouterr().out and {k for k, _, _ in store.entries()} == before
    assert main(["cache", "gc", str(tmp_path / "specs"), "--cache-dir", str(store_dir)]) == 0
    out = capsys.readouterr().out
    assert f"removed {len(only_b) + 1} entries" in out  # (the leftover is swept when the boards load)
    left = {k for k, _, _ in store.entries()}
    assert left == before - only_b - {"d2" + "2" * 62}
    assert not leftover.exists()
    again = Board.from_file(paths["a"], cache_dir=store_dir)
    assert again.compute(progress=False).forward_passes == 0  # a's results all survived


def test_cache_gc_refuses_when_a_spec_does_not_check(tiny_models, tmp_path, capsys):
    store_dir = tmp_path / "store"
    paths = _specs(tiny_models, tmp_path / "specs")
    Board.from_file(paths["a"], cache_dir=store_dir).compute(progress=False)
    before = sorted(p.name for p in store_dir.rglob("*"))
    paths["b"].write_text(paths["b"].read_text().replace("top_k: 5", "top_k: 0"))
    assert main(["cache", "gc", str(tmp_path / "specs"), "--cache-dir", str(store_dir)]) == 2
    err = capsys.readouterr().err
    assert f"{paths['b']}:" in err and "gc needs every spec to check" in err and "Traceback" not in err
    assert sorted(p.name for p in store_dir.rglob("*")) == before
