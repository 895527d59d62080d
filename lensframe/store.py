"""Content-addressed results on disk.

Each entry is two files named by its key: `<key>.safetensors` (the arrays; readable by numpy,
torch, dask via safetensors) and `<key>.json` (key, node, checksum of the arrays file, metadata).
Writes are atomic (temp file, then rename; the JSON last, as the commit mark), and an entry whose
checksum does not match is treated as absent and recomputed, never served.
A read-only store (the servers that share one store) reads and never writes: `put` refuses.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from .errors import LensframeError
from .ops.base import Result

# mkstemp makes 0600 files; entries get the usual 0666 less the umask instead, so servers running
# as other users can read a store that `lensframe compute` filled. (Read once: os.umask sets it too.)
_UMASK = os.umask(0o022)
os.umask(_UMASK)


class ReadOnlyStoreError(LensframeError):
    """A write to a store that a server only reads (`lensframe serve --read-only-store`)."""


class Store:
    def __init__(self, root: Path | str, read_only: bool = False):
        self.root = Path(root)
        self.read_only = read_only

    def _paths(self, key: str) -> tuple[Path, Path]:
        d = self.root / key[:2]
        return d / f"{key}.safetensors", d / f"{key}.json"

    def has(self, key: str) -> bool:
        return self._paths(key)[1].is_file()

    def get(self, key: str) -> Result | None:
        arrays_path, meta_path = self._paths(key)
        try:
            meta = json.loads(meta_path.read_text())
            blob = arrays_path.read_bytes()
        except (OSError, ValueError):
            return None
        if meta.get("key") != key or hashlib.sha256(blob).hexdigest() != meta.get("sha256"):
            return None  # corrupt or partial: the caller recomputes and overwrites it
        try:
            arrays = load_file(str(arrays_path)) if blob else {}
        except Exception:
            return None
        return Result(arrays, meta.get("meta", {}))

    def missing(self, keys) -> list[str]:
        """The keys with no valid entry (absent, partial or corrupt): reads and checks each one."""
        return [k for k in keys if not self.has(k) or self.get(k) is None]

    def put(self, key: str, result: Result, node_label: str = "") -> None:
        if self.read_only:
            raise ReadOnlyStoreError(
                f"the store at {self.root} is read-only for this server: it cannot store {node_label or key}\n"
                f"    hint: fill the store first: lensframe compute SPEC --cache-dir {self.root}")
        arrays_path, meta_path = self._paths(key)
        arrays_path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {k: np.ascontiguousarray(v) for k, v in result.arrays.items()}
        tmp = _tmp_in(arrays_path.parent)
        if arrays:
            save_file(arrays, tmp)
        else:
            Path(tmp).write_bytes(b"")
        digest = hashlib.sha256(Path(tmp).read_bytes()).hexdigest()
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, arrays_path)
        doc = {"key": key, "node": node_label, "sha256": digest, "meta": result.meta,
               "arrays": {k: [list(v.shape), str(v.dtype)] for k, v in arrays.items()}}
        tmp = _tmp_in(meta_path.parent)
        Path(tmp).write_text(json.dumps(doc))
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, meta_path)


def _tmp_in(folder: Path) -> str:
    fd, name = tempfile.mkstemp(dir=folder, prefix=".tmp-")
    os.close(fd)
    return name
