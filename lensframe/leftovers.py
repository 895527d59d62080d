"""Temp files and folders of writes that a killed process never finished, swept at the next start.

Every temp name carries the writing process's id (`.tmp-<pid>-...`), so a sweep removes only those
whose process is gone: a store shared by a running `compute` and a server loses none of the live
writer's files.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path


def temp_prefix(kind: str) -> str:
    """The prefix of this process's temp names of `kind` (tmp, convert)."""
    return f".{kind}-{os.getpid()}-"


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def dead(paths) -> list[Path]:
    """The paths (named by temp_prefix) whose writing process is no longer running."""
    out = []
    for p in paths:
        parts = p.name.split("-", 2)
        if len(parts) == 3 and parts[1].isdigit() and not _alive(int(parts[1])):
            out.append(p)
    return out


def sweep(folder: Path, kind: str, pattern: str = "*") -> list[Path]:
    """Remove `kind` temp files and folders of dead processes directly under `folder`'s `pattern`
    subfolders (e.g. "??" for the store's shards); returns what was removed."""
    if not Path(folder).is_dir():
        return []
    found = dead(Path(folder).glob(f"{pattern}/.{kind}-*" if pattern else f".{kind}-*"))
    removed = []
    for p in found:
        try:
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
            removed.append(p)
        except OSError:  # a store mounted read-only, another user's file: left for its owner
            pass
    return removed
