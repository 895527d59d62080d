"""Content-addressed results on disk.

Each entry is two files named by its key: `<key>.safetensors` (the arrays, readable by numpy,
torch, dask via safetensors, with the key and the result's metadata in its header) and `<key>.json`
(key, node, the sha256 of the safetensors file, and a copy of the metadata for people to read).
Writes are atomic (temp file, then rename; the JSON last, as the commit mark). What is served is
covered by the checksum: the arrays and the metadata both come from the checked file, and an entry
whose checksum, key or metadata copy does not match is treated as absent and recomputed, never
served (an edited metadata file is not a cache hit).
A read-only store (the servers that share one store) reads and never writes: `put` refuses.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import struct
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from safetensors.numpy import load, save_file

from .errors import LensframeError
from .leftovers import dead, sweep, temp_prefix
from .ops.base import Result

# mkstemp makes 0600 files; entries get the usual 0666 less the umask instead, so servers running
# as other users can read a store that `lensframe compute` filled. (Read once: os.umask sets it too.)
_UMASK = os.umask(0o022)
os.umask(_UMASK)


HEADER_KEY = "lensframe"  # the safetensors header field holding {"key", "meta"}


class ReadOnlyStoreError(LensframeError):
    """A write to a store that a server only reads (`lensframe serve --read-only-store`)."""


class Store:
    def __init__(self, root: Path | str, read_only: bool = False):
        self.root = Path(root)
        self.read_only = read_only

    @contextmanager
    def lock(self, name: str, on_wait=None):
        """Hold the store's lock `name` (one per plan being computed), waiting for the process that
        holds it: a second `compute` of the same plan then finds the first's results stored. An
        flock: the kernel drops it when its process dies, so a killed run never holds it. on_wait(pid
        text) is called once if it has to wait."""
        path = self.root / ".locks" / f"{name}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a+") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if on_wait is not None:
                    f.seek(0)
                    on_wait(f.read().strip() or "?")
                fcntl.flock(f, fcntl.LOCK_EX)
            f.seek(0)
            f.truncate()
            f.write(f"{os.getpid()}\n")
            f.flush()
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def sweep(self) -> list[Path]:
        """Remove temp files that killed writers left (lensframe.leftovers) in the entries' folders and
        the checkpoints' (lensframe.checkpoint); Board does it at start."""
        if self.read_only:
            return []
        return sweep(self.root, "tmp", "??") + sweep(self.root, "tmp", ".checkpoints")

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
            arrays = load(blob)  # the bytes just checked: the file is read once
            covered = json.loads(_header(blob).get(HEADER_KEY, "null"))
        except Exception:
            return None
        if not isinstance(covered, dict) or covered.get("key") != key or covered.get("meta") != meta.get("meta"):
            return None  # an entry of an older format, or a metadata file edited since: recomputed
        return Result(arrays, covered["meta"])

    def missing(self, keys) -> list[str]:
        """The keys with no valid entry (absent, partial or corrupt): reads and checks each one."""
        return [k for k in keys if not self.has(k) or self.get(k) is None]

    def put(self, key: str, result: Result, node_label: str = "", refs: dict | None = None) -> None:
        """Store `result` under `key`. refs: for a result computed on demand (a dream, an edit
        search), not a node of a spec's plan, the model fingerprints it was computed from
        ({"models": [...]}), so `lensframe cache gc` keeps it while a spec uses those models."""
        if self.read_only:
            raise ReadOnlyStoreError(
                f"the store at {self.root} is read-only for this server: it cannot store {node_label or key}\n"
                f"    hint: fill the store first: lensframe compute SPEC --cache-dir {self.root}")
        arrays_path, meta_path = self._paths(key)
        arrays_path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {k: np.ascontiguousarray(v) for k, v in result.arrays.items()}
        # the metadata goes into the header too, so the file's checksum covers it
        covered = json.dumps({"key": key, "meta": result.meta}, sort_keys=True)
        tmp = _tmp_in(arrays_path.parent)
        # written straight to the file (an in-memory copy of a 100 MB result would double the peak),
        # then hashed in chunks
        save_file(arrays, tmp, metadata={HEADER_KEY: covered})
        digest = sha256_file(Path(tmp))
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, arrays_path)
        doc = {"key": key, "node": node_label, "sha256": digest, "meta": result.meta,
               "arrays": {k: [list(v.shape), str(v.dtype)] for k, v in arrays.items()},
               **({"refs": refs} if refs else {})}
        tmp = _tmp_in(meta_path.parent)
        Path(tmp).write_text(json.dumps(doc))
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, meta_path)


    def entries(self):
        """Every entry on disk: (key, its JSON document or None if unreadable, bytes of both files)."""
        if not self.root.is_dir():
            return
        for meta_path in sorted(self.root.glob("??/*.json")):
            key = meta_path.stem
            arrays_path = meta_path.with_suffix(".safetensors")
            size = meta_path.stat().st_size + (arrays_path.stat().st_size if arrays_path.is_file() else 0)
            try:
                doc = json.loads(meta_path.read_text())
            except (OSError, ValueError):
                doc = None
            yield key, doc, size

    def leftovers(self) -> list[Path]:
        """Files that belong to no entry: temp files of interrupted writes, arrays whose JSON (the
        commit mark) was never written."""
        if not self.root.is_dir():
            return []
        # a live writer's temp files are not leftovers
        out = sorted(dead([*self.root.glob("??/.tmp-*"), *self.root.glob(".checkpoints/.tmp-*")]))
        out += [p for p in sorted(self.root.glob("??/*.safetensors")) if not p.with_suffix(".json").is_file()]
        return out

    def remove(self, key: str) -> None:
        if self.read_only:
            raise ReadOnlyStoreError(f"the store at {self.root} is read-only: it cannot remove {key}")
        for path in self._paths(key)[::-1]:  # the JSON first: a half-removed entry reads as absent
            path.unlink(missing_ok=True)


def sha256_file(path: Path) -> str:
    """sha256 of a file, read in 4 MB chunks (a store entry, a model's weights)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _header(blob: bytes) -> dict:
    """The __metadata__ of a safetensors file's header (8 bytes of length, then JSON)."""
    n = struct.unpack("<Q", blob[:8])[0]
    return json.loads(blob[8:8 + n]).get("__metadata__") or {}


def _tmp_in(folder: Path) -> str:
    fd, name = tempfile.mkstemp(dir=folder, prefix=temp_prefix("tmp"))
    os.close(fd)
    return name
