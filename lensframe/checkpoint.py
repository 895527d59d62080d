"""Checkpoints of a dataset pass: the reductions' states every few batches, so a `compute` or `serve`
killed at 90% of a long pass resumes from its last checkpoint instead of from zero.

A checkpoint is one safetensors file in the store's `.checkpoints/` folder, written atomically (temp
file, then rename: a kill mid-write leaves the previous checkpoint, and a temp file the next start
sweeps). Its arrays are the states' arrays; its header holds the states' structure as JSON (dicts,
lists, numbers, strings, FilledRows, Results, numpy and torch arrays), so reading one runs no code: a
checkpoint is data, never a pickle. A pass is named by its model, its nodes' store keys and the
batches it folds (samples and order), so a checkpoint is only ever resumed by the same pass.

Resuming is exact: the states after batch i are restored bit for bit, and every op's update depends
only on its state and the batch (the tuned lens draws its training tokens per batch), so the rest of
the pass computes what the uninterrupted pass would have.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path

import numpy as np

from .leftovers import temp_prefix

FORMAT = 1
FOLDER = ".checkpoints"
HEADER_KEY = "lensframe_checkpoint"


class CheckpointUnsupported(TypeError):
    """A state holds an object the format cannot write (a plugin op's own class): that pass runs
    without checkpoints."""


def parse_every(value) -> tuple[int, float]:
    """run.checkpoint_every -> (batches, seconds); 0 batches and 0 seconds means never.
    An int is a number of batches; "90s", "5m", "1h" a time since the last checkpoint."""
    if isinstance(value, bool):
        raise ValueError("checkpoint_every is a number of batches (e.g. 50) or a time (e.g. \"60s\", \"5m\")")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("checkpoint_every cannot be negative (0 turns checkpoints off)")
        return value, 0.0
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s|m|h)\s*", str(value))
    if not m:
        raise ValueError(f"checkpoint_every {value!r} is neither a number of batches (e.g. 50) nor a time "
                         "(e.g. \"60s\", \"5m\", \"1h\")")
    return 0, float(m.group(1)) * {"s": 1, "m": 60, "h": 3600}[m.group(2)]


def pass_name(model: str, node_keys, batches) -> str:
    h = hashlib.sha256(f"{FORMAT}\0{model}\0".encode())
    for key in sorted(node_keys):
        h.update(key.encode() + b"\0")
    for b in batches:
        h.update(np.asarray(b, dtype=np.int64).tobytes() + b"|")
    return "pass-" + h.hexdigest()[:32]


# --- the format: JSON structure + named arrays ---------------------------------------------------
def encode(obj, arrays: dict):
    """obj as JSON-able structure; its arrays go into `arrays` under generated names."""
    import torch

    from .ops.base import FilledRows, Result

    if isinstance(obj, np.generic):  # before float: np.float64 is a float, and must come back as one
        return {"scalar": [obj.dtype.str, obj.item()]}
    if obj is None or isinstance(obj, (bool, str, int, float)):
        return obj
    if isinstance(obj, np.ndarray):
        name = f"a{len(arrays)}"
        arrays[name] = _contiguous(obj)
        return {"np": name}
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu()
        name = f"a{len(arrays)}"
        if t.dtype == torch.bfloat16:  # numpy has no bfloat16: kept as its bits
            arrays[name] = t.contiguous().view(torch.int16).numpy()
            return {"torch_bf16": name}
        arrays[name] = _contiguous(t.numpy())
        return {"torch": name}
    if isinstance(obj, (type, np.dtype)):
        return {"dtype": np.dtype(obj).str}
    if isinstance(obj, dict):
        return {"dict": [[encode(k, arrays), encode(v, arrays)] for k, v in obj.items()]}
    if isinstance(obj, list):
        return {"list": [encode(v, arrays) for v in obj]}
    if isinstance(obj, tuple):
        return {"tuple": [encode(v, arrays) for v in obj]}
    if isinstance(obj, FilledRows):  # its arrays as they are (no copy of the filled rows: a pass's largest state)
        return {"filled": encode({"shapes": obj.shapes, "dtypes": obj.dtypes, "fill": obj.fill,
                                  "arrays": obj.arrays, "filled": obj.filled}, arrays)}
    if isinstance(obj, Result):
        return {"result": [encode(dict(obj.arrays), arrays), json.loads(json.dumps(obj.meta))]}
    raise CheckpointUnsupported(f"a reduction state holds a {type(obj).__module__}.{type(obj).__qualname__}")


def _contiguous(a: np.ndarray) -> np.ndarray:
    return a if a.flags.c_contiguous else a.copy(order="C")  # (np.ascontiguousarray makes a 0-d array 1-d)


def decode(doc, arrays: dict):
    import torch

    from .ops.base import FilledRows, Result

    if not isinstance(doc, dict):
        return doc
    (tag, value), = doc.items()
    if tag == "np":
        return arrays[value]
    if tag == "torch":
        return torch.from_numpy(arrays[value])
    if tag == "torch_bf16":
        return torch.from_numpy(arrays[value]).view(torch.bfloat16)
    if tag == "scalar":
        return np.dtype(value[0]).type(value[1])
    if tag == "dtype":
        return np.dtype(value)
    if tag == "dict":
        return {decode(k, arrays): decode(v, arrays) for k, v in value}
    if tag == "list":
        return [decode(v, arrays) for v in value]
    if tag == "tuple":
        return tuple(decode(v, arrays) for v in value)
    if tag == "filled":
        state = decode(value, arrays)
        rows = FilledRows.__new__(FilledRows)
        rows.shapes, rows.dtypes, rows.fill = state["shapes"], state["dtypes"], state["fill"]
        rows.arrays, rows.filled = state["arrays"], state["filled"]
        return rows
    if tag == "result":
        return Result(decode(value[0], arrays), value[1])
    raise ValueError(f"unknown checkpoint tag {tag!r}")


# --- one pass's checkpoint ---------------------------------------------------------------------
class PassCheckpoint:
    """Load, save and drop the checkpoint of one dataset pass in a store."""

    def __init__(self, store, name: str, every, nodes, say=None, keys=()):
        self.path = Path(store.root) / FOLDER / f"{name}.safetensors"
        self.name, self.nodes = name, list(nodes)
        self.keys = list(keys)  # the nodes' store keys: `lensframe cache gc` keeps a checkpoint a spec still needs
        self.batches_every, self.seconds_every = parse_every(every)
        self.enabled = not store.read_only and (self.batches_every > 0 or self.seconds_every > 0)
        self.say = say or (lambda line: None)
        self._last_done, self._last_time = 0, time.monotonic()
        self.saved = 0  # checkpoints written by this pass (tests and reports count them)
        self.batches = 0  # the pass's batch count, written beside `done` (for `lensframe cache list`)

    def load(self, n_batches: int):
        """(batches done, {node: state}) of this pass's checkpoint, or None (none, unreadable, or
        of another pass: then it is ignored, and overwritten by the next checkpoint)."""
        from safetensors.numpy import load_file

        self.batches = n_batches
        if not self.enabled or not self.path.is_file():
            return None
        try:
            arrays = load_file(str(self.path))
            with open(self.path, "rb") as f:
                n = int.from_bytes(f.read(8), "little")
                header = json.loads(f.read(n)).get("__metadata__") or {}
            doc = json.loads(header[HEADER_KEY])
            if doc.get("format") != FORMAT or doc.get("pass") != self.name or len(doc["states"]) != len(self.nodes):
                return None
            done = int(doc["done"])
            if not 0 < done < n_batches or doc.get("nodes") != [n.label() for n in self.nodes]:
                return None
            states = {node: decode(s, arrays) for node, s in zip(self.nodes, doc["states"])}
        except Exception as exc:  # a checkpoint is a shortcut: any doubt, and the pass starts over
            self.say(f"checkpoint {self.path.name} unreadable ({type(exc).__name__}: {exc}): starting the pass over")
            return None
        self._last_done, self._last_time = done, time.monotonic()
        return done, states

    def due(self, done: int) -> bool:
        if not self.enabled:
            return False
        if self.batches_every and done - self._last_done >= self.batches_every:
            return True
        return bool(self.seconds_every) and time.monotonic() - self._last_time >= self.seconds_every

    def save(self, done: int, states: dict) -> bool:
        """Write the states after `done` batches; False (and no more tries) when a state cannot be
        written in this format."""
        arrays: dict = {}
        try:
            encoded = [encode(states[n], arrays) for n in self.nodes]
        except CheckpointUnsupported as exc:
            self.say(f"no checkpoints for this pass: {exc}")
            self.enabled = False
            return False
        doc = {"format": FORMAT, "pass": self.name, "done": done, "nodes": [n.label() for n in self.nodes],
               "keys": self.keys, "batches": self.batches, "states": encoded}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.parent / f"{temp_prefix('tmp')}{self.path.name}"
        write_safetensors(tmp, arrays, {HEADER_KEY: json.dumps(doc)})
        os.replace(tmp, self.path)  # the previous checkpoint stays whole until this one is
        self._last_done, self._last_time = done, time.monotonic()
        self.saved += 1
        return True

    def remove(self) -> None:
        """The pass's results are stored: its checkpoint is no longer needed."""
        if not self.path.parent.is_dir():
            return
        self.path.unlink(missing_ok=True)


def checkpoints(store) -> list[tuple[Path, dict | None, int]]:
    """The checkpoints in a store: (path, its header without the states, or None when unreadable,
    bytes), for `lensframe cache list|gc`. Reads only each file's header."""
    out = []
    for path in sorted((Path(store.root) / FOLDER).glob("pass-*.safetensors")):
        try:
            with open(path, "rb") as f:
                n = int.from_bytes(f.read(8), "little")
                doc = json.loads(json.loads(f.read(n))["__metadata__"][HEADER_KEY])
            doc.pop("states", None)
        except Exception:
            doc = None
        out.append((path, doc, path.stat().st_size))
    return out


# safetensors dtype names (https://github.com/huggingface/safetensors, the format's header)
_DTYPES = {"float64": "F64", "float32": "F32", "float16": "F16", "int64": "I64", "int32": "I32", "int16": "I16",
           "int8": "I8", "uint8": "U8", "uint16": "U16", "uint32": "U32", "uint64": "U64", "bool": "BOOL"}


def write_safetensors(path, arrays: dict, metadata: dict) -> None:
    """A safetensors file written array by array from the arrays' own memory. safetensors' save_file
    first copies every array into a bytes object, which at a checkpoint of a large pass would double
    the states' memory for a moment, and a pass's peak is what `plan` promises."""
    header, offset = {}, 0
    for name, a in arrays.items():
        header[name] = {"dtype": _DTYPES[a.dtype.name], "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
    header["__metadata__"] = metadata
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned, as the format recommends
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little"))
        f.write(raw)
        for a in arrays.values():
            if a.nbytes:
                f.write(a.reshape(-1).view(np.uint8))  # a view: no copy
