"""`lensframe serve --timings-log FILE`: each focus change's server-side time, one JSON line per change.

A change starts when the page's focus moves (the click's event, after it waited its turn on the
event loop) and ends when the last view that reads a changed field has rendered the new focus,
including the wait for a focus forward on a worker thread. What the line does not count: the
websocket, the browser's drawing, and the time the click's message waited before the event loop
read it. benchmarks/bench_serving.py reads these lines; an operator can watch p95 in them.
"""
from __future__ import annotations

import json
import threading
import time

_LOG = {"file": None}
_lock = threading.Lock()


def open_log(path) -> None:
    _LOG["file"] = open(path, "a", buffering=1)  # line-buffered: a reader sees each change at once


def enabled() -> bool:
    return _LOG["file"] is not None


def record(**fields) -> None:
    f = _LOG["file"]
    if f is None:
        return
    line = json.dumps({"t": round(time.time(), 3), **fields})
    with _lock:
        f.write(line + "\n")


class ChangeClock:
    """One page's focus changes: start() at the change, done(view) as each view that had to follow
    renders; the change is recorded when the last one has."""

    def __init__(self, page_id: str):
        self.page_id, self.n = page_id, 0
        self.t0, self.left, self.fields, self.waited = 0.0, set(), (), False

    def start(self, fields, views) -> None:
        if self.left:  # the previous change never finished: a newer one replaced it
            record(page=self.page_id, change=self.n, fields=list(self.fields), ms=None, replaced=True)
        self.n += 1
        self.t0, self.left, self.fields, self.waited = time.perf_counter(), set(views), tuple(fields), False

    def waiting(self) -> None:
        """A view of this change waits for a focus forward on a worker."""
        self.waited = True

    def done(self, view: str) -> None:
        if view not in self.left:
            return
        self.left.discard(view)
        if not self.left:
            record(page=self.page_id, change=self.n, fields=list(self.fields),
                   ms=round((time.perf_counter() - self.t0) * 1000, 2), forward=self.waited)
