"""A model's focus forwards in a process of their own, for the served pages (`serve --focus-process`).

Why a process and not only a thread: a forward is ~30 torch ops per layer, and each op gives up
the GIL and must take it back. While the event loop renders another session's click (pure Python,
holding the GIL), each take-back waits up to sys.getswitchinterval() (5 ms), so a forward that
takes 0.17 s alone took 18 s beside a busy thread (SmolLM2, 2 cores; docs/SERVING.md). A process
has its own GIL: its forward runs at full speed beside the event loop, at the cost of a second
copy of the model's weights in memory.

The child rebuilds the board from the parent's spec (Board.to_yaml: every default written out, so
it compiles to the same plan and the same node keys), on the same store (read only), loads the
model, and answers `focus` requests: one subject, or several dataset samples as one padded
forward (Executor.focus_batch). Results come back pickled over a socket pair; the parent puts
them in its focus memo, where the pages read them. The child ends when the parent closes the
socket, or dies (its read of the socket ends).
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from multiprocessing.connection import Connection

from .errors import LensframeError


class FocusProcessError(LensframeError):
    """The focus process failed to start or ended."""


def recipe(board, model: str, threads: int) -> dict:
    """What the child needs to build the same board: the spec with its defaults written out, where
    its relative paths resolve, the store, the device, and the torch threads it may use."""
    spec = board.spec
    return {"spec": board.to_yaml(), "file": str(spec.file), "base_dir": str(spec.base_dir),
            "cache_dir": str(board.store.root), "device": board.device,
            "trust_remote_code": board.trust_remote_code, "allow_local_views": spec.allow_local_views,
            "model": model, "threads": threads}


class FocusProcess:
    """One child process answering one model's focus requests; `focus()` blocks the calling thread
    (a FocusWorkers thread) until the child answers, without holding the GIL."""

    def __init__(self, board, model: str, threads: int):
        self.model = model
        ours, theirs = socket.socketpair()
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lensframe.focus_process", str(theirs.fileno())],
            pass_fds=(theirs.fileno(),), env=env, stdin=subprocess.DEVNULL)
        theirs.close()
        self._conn = Connection(ours.detach())
        self._lock = threading.Lock()  # one request at a time on the socket
        self._conn.send(recipe(board, model, threads))
        self.ready = False  # the child has built its board and loaded the model

    def _ended(self) -> FocusProcessError:
        try:
            code = self.proc.wait(timeout=1)
        except subprocess.TimeoutExpired:
            code = None
        return FocusProcessError(f"the focus process of model {self.model!r} ended"
                                 + (f" (exit code {code})" if code is not None else "")
                                 + "; the next request starts another")

    def _reply(self):
        try:
            kind, payload = self._conn.recv()
        except (EOFError, OSError):
            raise self._ended() from None
        if kind == "error":
            raise payload
        return payload

    def wait_ready(self) -> float:
        """Block until the child has loaded the model; returns its load time in seconds."""
        with self._lock:
            if self.ready:
                return 0.0
            seconds = self._reply()
            self.ready = True
            return seconds

    def focus(self, subjects: list) -> list[dict]:
        """executor.focus of each subject (several dataset samples: one padded forward), run in the
        child; results as the parent's executor would compute them."""
        self.wait_ready()
        with self._lock:
            try:
                self._conn.send(("focus", subjects))
            except OSError:
                raise self._ended() from None
            return self._reply()

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        try:
            self._conn.close()  # the child's next read ends, and it exits
        except OSError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _picklable(exc: BaseException) -> BaseException:
    """The exception itself where it survives pickling, else a LensframeError with its text."""
    import pickle

    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return LensframeError(f"{type(exc).__name__}: {exc}")


def _serve(conn: Connection) -> None:
    from .board import Board
    from .executor import set_threads

    r = conn.recv()
    try:
        import time

        t0 = time.perf_counter()
        set_threads(int(r["threads"]))
        board = Board.from_text(r["spec"], r["file"], r["base_dir"], allow_local_views=r["allow_local_views"],
                                cache_dir=r["cache_dir"], device=r["device"], trust_remote_code=r["trust_remote_code"])
        board.store.read_only = True  # the parent owns the store; a focus pass never writes
        board.executor.model(r["model"])
        conn.send(("ok", time.perf_counter() - t0))
    except BaseException as exc:
        conn.send(("error", _picklable(exc)))
        return
    ex, model = board.executor, r["model"]
    while True:
        try:
            kind, subjects = conn.recv()
        except (EOFError, OSError):
            return
        try:
            results = [ex.focus(model, subjects[0])] if len(subjects) == 1 else ex.focus_batch(model, subjects)
            conn.send(("ok", results))
        except Exception as exc:  # the pages show it in the views' cards
            conn.send(("error", _picklable(exc)))


if __name__ == "__main__":
    _serve(Connection(int(sys.argv[1])))
