"""Focus forwards off the server's event loop.

A served page that needs a sample's focus results which are neither memoized nor kept in the store
asks `FocusWorkers.request`; one worker thread per model runs the forwards (torch releases the GIL,
so a forward runs beside the event loop, which keeps answering every other session's clicks).

- Coalesced: requests are keyed as the focus memo is (model and sample, or a probe's token ids), so
  two sessions, or two views of one page, asking for the same sample share one forward.
- Superseded: a page that asks for another sample before its last request started drops that request
  (unless another page waits on it too): a researcher clicking through samples gets the last one,
  not every one in between.
- Batched: the dataset samples waiting when the worker is free run as one padded forward
  (Executor.focus_batch), which on a CPU costs far less than one forward each.
- Bounded: at most `max_waiting` requests wait per model; past that `request` raises Busy, and the
  page says the server is busy instead of queueing the click behind minutes of work.
- In a process (`process=True`, `serve --focus-process`): the thread hands the forward to a child
  process holding its own copy of the model (lensframe.focus_process), and waits for it without
  the GIL, so neither the forward nor the event loop slows the other down; the results go into
  the executor's focus memo as if computed here.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from concurrent.futures import Future

from .probes import Probe

MAX_OWNERS = 10_000  # (page, model) pairs remembered for superseding, most recent kept
IDLE_S = 30  # a worker thread with nothing to do for this long ends (a new request starts another)


class Busy(Exception):
    """Too many focus forwards are waiting for this model; `waiting` says how many."""

    def __init__(self, model: str, waiting: int):
        super().__init__(f"{waiting} focus passes are waiting for {model}")
        self.model, self.waiting = model, waiting


class _Request:
    __slots__ = ("model", "subject", "future", "owners")

    def __init__(self, model, subject, owner):
        self.model, self.subject, self.future, self.owners = model, subject, Future(), {owner}


class FocusWorkers:
    def __init__(self, executor, max_waiting: int = 16, max_batch: int = 8, process: bool = False):
        self.executor, self.max_waiting, self.max_batch = executor, max_waiting, max_batch
        self.process = process
        self.observer = None  # called with each forward's model, samples and milliseconds (serve --timings-log)
        self._procs: dict = {}  # model -> its FocusProcess (process=True), kept while the board serves
        self._lock = threading.Condition()
        self._queues: dict[str, OrderedDict] = {}  # model -> {memo key: _Request} waiting, oldest first
        self._running: dict[str, list] = {}  # model -> [(memo key, _Request)] of the forward running now
        self._latest: OrderedDict = OrderedDict()  # (owner, model) -> memo key of its last request
        self._threads: dict[str, threading.Thread] = {}
        self.runs = 0  # requests run (a run may find the results memoized by then)
        self.coalesced = 0  # requests answered by a forward another request had asked for
        self.superseded = 0  # requests dropped because their page asked for something else first
        self.batched = 0  # requests answered by a forward run for another sample too (focus_batch)
        self._closed = False

    def request(self, model: str, subject, owner) -> Future:
        """A Future of executor.focus(model, subject); `owner` names the page asking (one per session)."""
        key = self.executor.focus_key(model, subject)
        with self._lock:
            self._supersede(owner, model, key)
            self._latest[(owner, model)] = key
            self._latest.move_to_end((owner, model))
            if len(self._latest) > MAX_OWNERS:  # pages of closed sessions are never told to leave
                self._latest.popitem(last=False)
            for running_key, running in self._running.get(model, ()):
                if running_key == key:
                    running.owners.add(owner)
                    self.coalesced += 1
                    return running.future
            queue = self._queues.setdefault(model, OrderedDict())
            if key in queue:
                queue[key].owners.add(owner)
                self.coalesced += 1
                return queue[key].future
            if len(queue) >= self.max_waiting:
                raise Busy(model, len(queue))
            req = queue[key] = _Request(model, subject, owner)
            self._start(model)
            self._lock.notify_all()
            return req.future

    def waiting(self, model: str | None = None) -> int:
        """Requests waiting (not running), for one model or all."""
        with self._lock:
            queues = [self._queues.get(model, {})] if model else list(self._queues.values())
            return sum(len(q) for q in queues)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for queue in self._queues.values():
                for req in queue.values():
                    req.future.cancel()
                queue.clear()
            self._lock.notify_all()
            procs, self._procs = list(self._procs.values()), {}
        for proc in procs:
            proc.close()

    def warm(self, model: str) -> float:
        """With process=True: start the model's focus process and wait until it has loaded the
        model (the server does this before it accepts sessions); returns the seconds it took."""
        return self._proc(model).wait_ready() if self.process else 0.0

    def _proc(self, model: str):
        from .focus_process import FocusProcess

        with self._lock:
            proc = self._procs.get(model)
            if proc is None or not proc.alive:
                import torch

                proc = self._procs[model] = FocusProcess(self.executor.board, model,
                                                         torch.get_num_threads())
            return proc

    def _forward(self, model: str, subjects: list) -> list[dict]:
        """The focus results of `subjects`: computed here, or by the model's process and then
        memoized here (so the pages' executor.focus finds them)."""
        if not self.process:
            if len(subjects) == 1:
                return [self.executor.focus(model, subjects[0])]
            return self.executor.focus_batch(model, subjects)
        results = self._proc(model).focus(subjects)
        return [self.executor.remember_focus(model, s, r) for s, r in zip(subjects, results)]

    def _supersede(self, owner, model: str, key) -> None:
        last = self._latest.get((owner, model))
        if last is None or last == key:
            return
        queue = self._queues.get(model, {})
        req = queue.get(last)
        if req is not None and req.owners == {owner}:  # nobody else waits on it: drop it
            del queue[last]
            req.future.cancel()
            self.superseded += 1
        elif req is not None:
            req.owners.discard(owner)

    def _start(self, model: str) -> None:
        if model not in self._threads:
            thread = threading.Thread(target=self._work, args=(model,), name=f"lensframe-focus-{model}", daemon=True)
            self._threads[model] = thread
            thread.start()

    def _work(self, model: str) -> None:
        while True:
            with self._lock:
                if not self._queues.get(model) and not self._closed:
                    self._lock.wait(IDLE_S)
                if self._closed or not self._queues.get(model):
                    # checked under the lock that request() adds under: a request either sees this
                    # thread gone and starts another, or is seen here
                    del self._threads[model]
                    return
                batch = self._take(model)
            batch = [(key, req) for key, req in batch if req.future.set_running_or_notify_cancel()]
            if batch:
                t0 = time.perf_counter()
                try:
                    results = self._forward(model, [req.subject for _, req in batch])
                except BaseException as exc:  # the pages show it in the views' cards
                    for _, req in batch:
                        req.future.set_exception(exc)
                else:
                    for (_, req), result in zip(batch, results):
                        req.future.set_result(result)
                self.runs += 1
                self.batched += len(batch) - 1
                if self.observer is not None:
                    self.observer(model=model, samples=len(batch), forward_ms=round((time.perf_counter() - t0) * 1e3, 2))
            with self._lock:
                self._running.pop(model, None)

    def _take(self, model: str) -> list:
        """The oldest waiting request, and with it (up to max_batch) the other waiting dataset samples:
        one padded forward answers them all. A probe runs alone (its forward also computes its lens
        rows, which the batched path does not)."""
        queue = self._queues[model]
        key, first = queue.popitem(last=False)
        batch = [(key, first)]
        if not isinstance(first.subject, Probe):
            for k in [k for k, r in queue.items() if not isinstance(r.subject, Probe)][: self.max_batch - 1]:
                batch.append((k, queue.pop(k)))
        self._running[model] = batch
        return batch
