"""Lock files: what a spec resolved to, kept in git beside it (demo.yaml -> demo.lock, YAML inside; not
named *.yaml, so a glob for specs never takes it for one).

A lock pins each model's weights (the content fingerprint of a local folder or GGUF, the commit of
a hub model), the dataset's content fingerprint and size, lensframe's version and the version of
every op the plan runs. These are exactly what a result's store key is made of (graph.node_key),
so a colleague whose spec resolves to the same lock computes results with the same keys: the same
numbers. `serve` and `compute` compare the spec with its lock and say what drifted; with
`--frozen` a drift (or a missing lock) is an error.
"""
from __future__ import annotations

from pathlib import Path

import yaml

from .errors import LensframeError

LOCK_FORMAT = 1
LOCK_SUFFIX = ".lock"


def lock_path(spec_file) -> Path:
    p = Path(spec_file)
    return p.with_name(p.name.removesuffix(".yaml").removesuffix(".yml") + LOCK_SUFFIX)


def lock_data(board) -> dict:
    """What the board's spec resolves to, now."""
    from . import __version__
    from .graph import STORE_FORMAT
    from .ops import get_op

    models = {}
    for name, src in board.sources.items():
        models[name] = {"source": board.spec.models[name].source, "fingerprint": src.fingerprint()}
        revision = getattr(src, "revision", None)
        if revision:
            models[name]["revision"] = revision
    ds = board.spec.dataset
    return {
        "lock": LOCK_FORMAT,
        "lensframe": __version__,
        "store_format": STORE_FORMAT,
        "models": models,
        "dataset": {"source": ds.source or "inline texts", "fingerprint": board.dataset.fingerprint,
                    "samples": len(board.dataset)},
        "ops": {op: get_op(op).version for op in sorted({n.op for n in board.plan.nodes})},
    }


def write_lock(board, path=None) -> Path:
    path = Path(path) if path else lock_path(board.spec.file)
    header = (f"# {path.name}: what {Path(board.spec.file).name} resolved to (lensframe lock). Keep it in git;\n"
              "# `lensframe serve/compute` say what drifted from it, and --frozen refuses to run on a drift.\n")
    path.write_text(header + yaml.safe_dump(lock_data(board), sort_keys=False))
    return path


def read_lock(path) -> dict:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise LensframeError(f"{path}: cannot read the lock file ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise LensframeError(f"{path}: the lock file is not valid YAML ({exc})") from None
    if not isinstance(data, dict) or data.get("lock") != LOCK_FORMAT:
        raise LensframeError(f"{path}: not a lensframe lock file (format {LOCK_FORMAT}); write it with `lensframe lock SPEC`")
    return data


def drift(locked: dict, now: dict) -> list[str]:
    """What differs between a lock and what the spec resolves to now, one line each."""
    out = []
    if locked.get("lensframe") != now["lensframe"]:
        out.append(f"lensframe: locked {locked.get('lensframe')}, running {now['lensframe']}")
    if locked.get("store_format") != now["store_format"]:
        out.append(f"store format: locked {locked.get('store_format')}, now {now['store_format']} (every result is recomputed)")
    lm, nm = locked.get("models", {}), now["models"]
    for name in sorted(set(lm) | set(nm)):
        a, b = lm.get(name), nm.get(name)
        if a is None or b is None:
            out.append(f"model {name}: {'added to the spec' if a is None else 'no longer in the spec'}")
        elif a.get("source") != b["source"]:
            out.append(f"model {name}: source {a.get('source')} -> {b['source']}")
        elif a.get("fingerprint") != b["fingerprint"]:
            what = "a different hub revision" if b["source"].startswith("hf:") else "different weights"
            out.append(f"model {name}: {what} at {b['source']} (fingerprint {str(a.get('fingerprint'))[:12]}… -> "
                       f"{b['fingerprint'][:12]}…)")
    ld, nd = locked.get("dataset", {}), now["dataset"]
    if ld.get("fingerprint") != nd["fingerprint"]:
        change = f"{ld.get('samples')} -> {nd['samples']} samples" if ld.get("samples") != nd["samples"] else "the same number of samples, other content"
        out.append(f"dataset {nd['source']}: changed since the lock ({change})")
    lo, no = locked.get("ops", {}), now["ops"]
    for op in sorted(set(lo) & set(no)):
        if lo[op] != no[op]:
            out.append(f"op {op}: version {lo[op]} -> {no[op]} (its results are recomputed)")
    for op in sorted(set(no) - set(lo)):
        out.append(f"op {op}: not in the lock (a view was added)")
    return out


def check(board, frozen: bool = False) -> list[str]:
    """Compare the spec with its lock file. Returns the drift lines (empty without a lock, or when
    nothing drifted); with `frozen`, a missing lock or any drift raises LensframeError."""
    path = lock_path(board.spec.file)
    if not path.is_file():
        if frozen:
            raise LensframeError(f"{board.spec.file}: --frozen needs a lock file ({path.name}); "
                                 f"write it with `lensframe lock {board.spec.file}`")
        return []
    lines = drift(read_lock(path), lock_data(board))
    if lines and frozen:
        raise LensframeError(f"{board.spec.file}: drifted from {path.name} (--frozen):\n"
                             + "\n".join(f"  {line}" for line in lines)
                             + f"\n  hint: restore what the lock pins, or re-lock with `lensframe lock {board.spec.file}`")
    return lines
