"""`lensframe serve SPEC --watch`: the spec file polled, checked again on each save, the board
rebuilt when it checks, and every open session moved to the new board with its focus.

LiveSpec is what the server serves now: `board`, its `job` (dataset passes), a `version` that a
new board increments, and `error`, the text of the latest edit's errors (what `lensframe validate`
prints: file:line:col: path: message, and a hint), None once an edit checks again. Sessions poll
these (server/template.py) and never see a half-built board: the new one is published only when
it is built and its models loaded.

Polling, not inotify: hashing a spec of a few kB every half second costs nothing, needs no
dependency, and sees editors that save by writing a new file and renaming it over the old one as
well as those that write in place. The content, not the mtime, is compared: two saves within the
file system's timestamp granularity (a few ms) of the same size would look alike by stat, and a
save that changes nothing rebuilds nothing. A change is read again after a moment and used only
if it held still, so a save caught half-written is not reported as a broken spec.
"""
from __future__ import annotations

import hashlib
import threading
import time
import traceback
from pathlib import Path

from lensframe.errors import LensframeError
from lensframe.focus import Focus

POLL_S = 0.5  # how often the file is looked at
OLD_WORKERS_S = 60  # a replaced board's focus workers end this long after its pages moved
SETTLE_S = 0.1  # a changed file must read the same again after this long before it is used


class LiveSpec:
    """The board a server serves, replaced when its spec file changes (watch()) or when check()
    is called (tests: one look at the file, synchronously)."""

    def __init__(self, board, job=None, *, allow_local_views: bool = False, say=print):
        self.board, self.job = board, job
        self.version = 0  # incremented with each new board
        self.error: str | None = None  # the latest edit's errors; None when it checked
        self.status = ""  # what a rebuild is doing now (shown in the pages while it runs)
        self.watching = False
        self.path = Path(board.spec.file)
        self.allow_local_views = allow_local_views
        self.say = say
        self._digest = _digest(self.path)
        self._lock = threading.Lock()  # one rebuild at a time (the thread, or a test's check())
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- watching ------------------------------------------------------------------------------
    def watch(self, interval: float = POLL_S) -> "LiveSpec":
        """Poll the file from a daemon thread until stop()."""
        if self._thread is None:
            self.watching = True
            self._thread = threading.Thread(target=self._loop, args=(interval,), name="lensframe-watch", daemon=True)
            self._thread.start()
            self.say(f"watch: {self.path} (saving it rebuilds the dashboard)")
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.check()
            except Exception:  # the watcher must outlive any one edit
                traceback.print_exc()

    def check(self) -> bool:
        """Look at the file once; when its content changed, check it and rebuild. Returns whether
        the served state changed (a new board, or new errors)."""
        with self._lock:
            digest = _digest(self.path)
            if digest is None or digest == self._digest:
                return False  # unchanged (or touched, or saved as it was), or gone for a moment
            time.sleep(SETTLE_S)
            if _digest(self.path) != digest:
                return False  # still being written: the next poll reads it
            self._digest = digest
            return self._rebuild()

    # --- rebuilding ------------------------------------------------------------------------------
    def _rebuild(self) -> bool:
        from lensframe.spec.validate import load_spec

        from .app import ComputeJob, require_stored, warm_up

        t0 = time.perf_counter()
        self.status = f"{self.path.name} changed: checking it"
        try:
            spec = load_spec(self.path, allow_local_views=self.allow_local_views)
            board = self.board.rebuilt(spec)  # capability checks too; same store, models kept
            if board.store.read_only:
                require_stored(board)  # a read-only server computes nothing: say what is missing
        except Exception as err:
            text = str(err) if isinstance(err, LensframeError) else f"{type(err).__name__}: {err}"
            if not isinstance(err, LensframeError):
                traceback.print_exc()
            self.status = ""
            changed = text != self.error
            self.error = text
            self.say(f"watch: {self.path} does not check; serving its last valid version:\n{text}")
            return changed
        todo = [p.node.label() for p in board.plan.nodes.values()
                if p.node.kind in ("prepare", "dataset", "derive") and not board.store.has(p.key)]
        self.say(f"watch: {self.path} changed: {len(todo)} result(s) to compute"
                 + (f" ({', '.join(todo)})" if todo else " (nothing to compute)"))
        job = None if board.store.read_only else ComputeJob(board, after=self.job).start()
        self.status = "loading models and the first focus pass"
        warm_up(board, say=lambda line: self.say(line))  # models are kept from the old board: usually instant
        old = self.board
        self.board, self.job, self.error, self.status = board, job, None, ""
        # the old board's focus processes hold a copy of each model: ended once its pages have moved
        threading.Timer(OLD_WORKERS_S, old.executor.close_focus_workers).start()
        self.version += 1
        self.say(f"watch: serving the new version ({time.perf_counter() - t0:.1f}s)")
        return True


def carried_focus(old_board, new_board, old: Focus) -> tuple[Focus, list[str]]:
    """A focus on `new_board` that keeps what `old` (a session's focus on `old_board`) showed where
    it still applies, and notes saying what was reset and why: a model no longer in the spec, a
    sample past a shorter dataset, a layer, head or neuron past a new model's depth or width, a
    position in a sample tokenized differently, a cluster of a clustering computed again."""
    from lensframe.focus_url import _upper

    focus, notes = new_board.new_focus(), []
    values = old.values()
    fields = {"text": values["text"]}
    model = values["model"]
    if model in new_board.spec.models:
        fields["model"] = model
    elif model is not None:
        notes.append(f"model {model!r} is no longer in the spec: the focus is on {focus.model!r}")
    model = fields.get("model", focus.model)
    for name, reset in (("sample", 0), ("layer", None), ("head", 0), ("neuron", None)):
        value, top = values[name], _upper(name, new_board, model)
        if value is None or top is None or value < top:
            fields[name] = value
        else:
            fields[name] = reset
            where = "the dataset now has" if name == "sample" else f"{model} now has"
            notes.append(f"{name} {value} reset: {where} {top} {name}s (0..{top - 1})")
    same_tokens = (_tokens_key(old_board, model) == _tokens_key(new_board, model) and fields["sample"] == values["sample"])
    if values["position"] is not None and not same_tokens and fields["text"] is None:
        notes.append("position reset to the last token: the sample's tokens changed")
    else:
        fields["position"] = values["position"]
    same_derived = _derived_keys(old_board) == _derived_keys(new_board)
    for name in ("cluster", "text_cluster"):
        if values[name] is not None and not same_derived:
            notes.append(f"{name.replace('_', ' ')} {values[name]} reset: the clustering is computed again")
        else:
            fields[name] = values[name]
    # a session that still has the spec's own probe set gets the edited spec's; one it typed, it keeps
    fields["probes"] = list(new_board.spec.probes) if values["probes"] == list(old_board.spec.probes) else values["probes"]
    focus.param.update(**fields)
    return focus, notes


def _tokens_key(board, model: str):
    return next((p.key for p in board.plan.of_kind("prepare", model) if p.node.op == "tokens"), None)


def _derived_keys(board) -> set:
    return {p.key for p in board.plan.of_kind("derive")}


def _digest(path: Path):
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None
