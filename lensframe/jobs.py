"""Work in a background thread that a dashboard view polls (a dream, a generation): the view reads
what the job has produced so far, `stop()`s it, and shows `error` or the outcome once `done`."""
from __future__ import annotations

import threading


class BackgroundJob:
    thread_name = "lensframe-job"

    def __init__(self):
        self.error: str | None = None
        self.done = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _work(self) -> None:
        """The job itself; it should check `self._stop.is_set()` between steps."""
        raise NotImplementedError

    def _launch(self) -> None:
        self._thread = threading.Thread(target=self._guarded, name=self.thread_name, daemon=True)
        self._thread.start()

    def _guarded(self) -> None:
        try:
            self._work()
        except Exception as exc:  # shown in the view
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.done = True

    def stop(self) -> None:
        self._stop.set()

    def wait(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)
