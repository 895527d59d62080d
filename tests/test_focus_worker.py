"""Focus forwards off the event loop (lensframe.focus_worker): coalesced, superseded, bounded; and a
served page that waits for its forward on a worker while another page keeps rendering."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from lensframe.board import Board
from lensframe.focus_worker import Busy, FocusWorkers

from .conftest import tiny_spec


class GatedExecutor:
    """An executor whose focus() blocks until the test opens the gate, counting its calls."""

    def __init__(self):
        self.gate, self.calls, self.started = threading.Event(), [], threading.Event()
        self.batches = []

    def focus_key(self, model, subject):
        return (model, subject)

    def focus(self, model, subject):
        self.calls.append((model, subject))
        self.started.set()
        assert self.gate.wait(30)
        return {"subject": subject}

    def focus_batch(self, model, subjects):
        self.batches.append(list(subjects))
        return [self.focus(model, s) for s in subjects]


def test_two_pages_asking_for_one_sample_share_one_forward():
    ex = GatedExecutor()
    workers = FocusWorkers(ex, max_waiting=4)
    first = workers.request("m", 1, owner="a")
    assert ex.started.wait(10)  # sample 1 is running
    queued = [workers.request("m", 2, owner=o) for o in ("a", "b")]  # two pages, one waiting forward
    again = workers.request("m", 1, owner="c")  # joins the running one
    ex.gate.set()
    assert first.result(10) == {"subject": 1} and again is first
    assert queued[0] is queued[1] and queued[0].result(10) == {"subject": 2}
    assert ex.calls == [("m", 1), ("m", 2)] and workers.coalesced == 2


def test_a_page_that_moves_on_drops_its_waiting_request():
    ex = GatedExecutor()
    workers = FocusWorkers(ex, max_waiting=4)
    workers.request("m", 0, owner="a")  # running: a page's click is never taken back once started
    assert ex.started.wait(10)
    dropped = workers.request("m", 1, owner="a")
    shared = workers.request("m", 2, owner="a")
    workers.request("m", 2, owner="b")  # page b waits on 2 too: a's next click must not drop it
    last = workers.request("m", 3, owner="a")
    ex.gate.set()
    assert last.result(10) == {"subject": 3} and shared.result(10) == {"subject": 2}
    assert dropped.cancelled() and workers.superseded == 1
    assert ex.calls == [("m", 0), ("m", 2), ("m", 3)] and ex.batches == [[2, 3]]  # the two waiting: one forward


def test_supersede_is_per_model():
    """A page showing two models asks each for the sample: the second ask does not drop the first."""
    ex = GatedExecutor()
    workers = FocusWorkers(ex, max_waiting=4)
    workers.request("m", 0, owner="x")
    assert ex.started.wait(10)
    a = workers.request("m", 5, owner="a")
    b = workers.request("other", 5, owner="a")
    ex.gate.set()
    assert a.result(10) and b.result(10) and workers.superseded == 0


def test_a_full_queue_says_busy_instead_of_waiting_without_end():
    ex = GatedExecutor()
    workers = FocusWorkers(ex, max_waiting=2)
    workers.request("m", 0, owner="p0")
    assert ex.started.wait(10)
    workers.request("m", 1, owner="p1")
    workers.request("m", 2, owner="p2")
    with pytest.raises(Busy) as busy:
        workers.request("m", 3, owner="p3")
    assert busy.value.waiting == 2 and workers.waiting("m") == 2
    workers.request("m", 2, owner="p4")  # what is already waiting can still be joined
    ex.gate.set()


def test_an_error_reaches_the_page_and_the_worker_goes_on():
    class Failing(GatedExecutor):
        def focus(self, model, subject):
            if subject == 1:
                raise ValueError("no such sample")
            return super().focus(model, subject)

    ex = Failing()
    ex.gate.set()
    workers = FocusWorkers(ex)
    with pytest.raises(ValueError, match="no such sample"):
        workers.request("m", 1, owner="a").result(10)
    assert workers.request("m", 2, owner="a").result(10) == {"subject": 2}


def test_an_idle_worker_thread_ends_and_a_new_request_starts_another(monkeypatch):
    import lensframe.focus_worker as fw

    monkeypatch.setattr(fw, "IDLE_S", 0.05)
    ex = GatedExecutor()
    ex.gate.set()
    workers = FocusWorkers(ex)
    assert workers.request("m", 1, owner="a").result(10)
    deadline = time.monotonic() + 10
    while workers._threads and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not workers._threads
    assert workers.request("m", 2, owner="a").result(10) == {"subject": 2}


def test_waiting_samples_run_as_one_batch_up_to_its_size():
    ex = GatedExecutor()
    workers = FocusWorkers(ex, max_waiting=16, max_batch=3)
    workers.request("m", 0, owner="p0")
    assert ex.started.wait(10)
    futures = {s: workers.request("m", s, owner=f"p{s}") for s in range(1, 6)}
    ex.gate.set()
    assert all(futures[s].result(10) == {"subject": s} for s in futures)
    assert ex.batches == [[1, 2, 3], [4, 5]] and workers.batched == 3


def test_focus_batch_equals_one_forward_each(tiny_models, tmp_path):
    """The batched forward's results equal each sample's own focus pass up to float32 rounding of a
    padded batch (tolerance from float32_atol), with one forward for the lot."""
    from .conftest import float32_atol

    views = "  attn: {type: attention}\n  neurons: {type: neurons}\n"
    boards = [Board.from_text(tiny_spec(tiny_models["llama"], views), base_dir=tmp_path, cache_dir=tmp_path / "store")
              for _ in range(2)]
    boards[0].compute(progress=False)
    ex = boards[1].executor
    before = ex.forward_passes
    batched = ex.focus_batch("main", [4, 1, 2])
    assert ex.forward_passes == before + 1
    alone = [boards[0].executor.focus("main", s) for s in (4, 1, 2)]
    atol = float32_atol(3, 32)
    for got, want in zip(batched, alone):
        assert got.keys() == want.keys()
        for node in want:
            for k in want[node].arrays:
                a, b = got[node].arrays[k], want[node].arrays[k]
                assert a.shape == b.shape, (node, k)
                if a.dtype.kind == "f":
                    np.testing.assert_allclose(a, b, atol=atol * max(1.0, float(np.abs(b).max())), err_msg=k)
                else:
                    np.testing.assert_array_equal(a, b)
    assert ex.focus_ready("main", 4) and ex.focus_batch("main", [4]) == [batched[0]]  # memoized


def test_real_forwards_coalesce_on_a_tiny_model(tiny_models, tmp_path):
    """Four pages ask at once for one sample nobody visited: one forward between them."""
    board = Board.from_text(tiny_spec(tiny_models["gpt2"], "  attn: {type: attention}\n"), base_dir=tmp_path,
                            cache_dir=tmp_path / "store")
    board.compute(progress=False)
    ex = board.executor
    ex.model("main")
    before = ex.forward_passes
    workers = ex.focus_workers(8)
    with ex.model_lock("main"):  # hold the model so all four requests are in before the forward runs
        futures = [workers.request("main", 2, owner=f"page{i}") for i in range(4)]
    results = [f.result(60) for f in futures]
    assert ex.forward_passes == before + 1 and all(r is results[0] for r in results)


def test_a_served_page_renders_after_its_forward_and_another_page_is_not_held(tiny_models, tmp_path):
    """Page A's first visit of a sample waits on the worker (its card shows the spinner) while page B,
    on a sample already in memory, renders at once; A's view then shows its sample."""
    from lensframe.focus import Focus
    from lensframe.server.app import Page

    board = Board.from_text(tiny_spec(tiny_models["gpt2"], "  attn: {type: attention}\n"), base_dir=tmp_path,
                            cache_dir=tmp_path / "store")
    board.compute(progress=False)
    ex = board.executor
    ex.focus("main", 0)  # in memory: page B needs no forward
    page_a = Page(board, Focus(sample=0), focus_queue=4)
    page_b = Page(board, Focus(sample=0), focus_queue=4)
    lock = ex.model_lock("main")
    lock.acquire()  # the forward of A's sample cannot start: A waits, B must not
    try:
        page_a.focus.param.update(sample=3, position=None)
        body_a = page_a.cards["attn"].objects[0]
        assert body_a.loading, "A's card shows the spinner while its forward waits"
        page_b.focus.param.update(position=1)
        assert "position <b class='lf-position'>1</b>" in _html(page_b.cards["attn"].objects[0])
    finally:
        lock.release()
    deadline = time.monotonic() + 60
    while body_a.loading and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not body_a.loading and "sample <b class='lf-sample-index'>3</b>" in _html(body_a)


def _html(body) -> str:
    """The text of a view card's HTML parts."""
    out = []

    def walk(obj):
        if hasattr(obj, "object") and isinstance(getattr(obj, "object"), str):
            out.append(obj.object)
        for child in getattr(obj, "objects", []) or []:
            walk(child)
    walk(body)
    return "\n".join(out)


def test_a_page_past_the_queue_bound_says_the_server_is_busy(tiny_models, tmp_path):
    from lensframe.focus import Focus
    from lensframe.server.app import Page

    board = Board.from_text(tiny_spec(tiny_models["gpt2"], "  attn: {type: attention}\n"), base_dir=tmp_path,
                            cache_dir=tmp_path / "store")
    board.compute(progress=False)
    ex = board.executor
    ex.focus("main", 0)
    pages = [Page(board, Focus(sample=0), focus_queue=1) for _ in range(3)]
    lock = ex.model_lock("main")
    lock.acquire()
    try:
        pages[0].focus.param.update(sample=3, position=None)  # the worker takes it, and waits for the model
        deadline = time.monotonic() + 30
        while ex.focus_workers().waiting("main") or "main" not in ex.focus_workers()._running:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        pages[1].focus.param.update(sample=4, position=None)  # waits: the queue's one place
        pages[2].focus.param.update(sample=5, position=None)  # no place left
        note = _html(pages[2].cards["attn"].objects[0])
        assert "lf-busy" in note and "1 focus passes are waiting for main" in note
    finally:
        lock.release()
    for page in pages:
        page.stop()


def test_a_focus_process_answers_as_this_process_would(tiny_models, tmp_path):
    """`serve --focus-process`: the child builds the same board from the spec, and its results of a
    dataset sample, of several samples batched, and of a probe (with its lens rows) equal this
    process's own focus passes; they land in this process's memo, with no forward run here."""
    from lensframe.probes import Probe

    from .conftest import float32_atol

    views = "  attn: {type: attention}\n  neurons: {type: neurons}\n  lens: {type: logit_lens}\n"
    spec = tiny_spec(tiny_models["llama"], views)
    board = Board.from_text(spec, base_dir=tmp_path, cache_dir=tmp_path / "store")
    board.compute(progress=False)
    reference = Board.from_text(spec, base_dir=tmp_path, cache_dir=tmp_path / "store").executor
    ex = board.executor
    workers = FocusWorkers(ex, max_waiting=8, process=True)
    try:
        assert workers.warm("main") > 0
        before = ex.forward_passes
        probe = Probe("The tower is in")
        with workers._lock:  # all three wait together: 4 and 1 run as one batch, the probe alone
            futures = [workers.request("main", s, owner=f"page{i}") for i, s in enumerate((4, 1, probe))]
        got = [f.result(120) for f in futures]
        assert ex.forward_passes == before, "the forwards ran in the child"
        assert all(ex.focus_ready("main", s) for s in (4, 1, probe))
        atol = float32_atol(3, 32)
        for result, subject in zip(got, (4, 1, probe)):
            want = reference.focus("main", subject)
            assert result.keys() == want.keys() and ex.focus("main", subject) is result
            for node in want:
                for k, b in want[node].arrays.items():
                    a = result[node].arrays[k]
                    if a.dtype.kind == "f":
                        np.testing.assert_allclose(a, b, atol=atol * max(1.0, float(np.abs(b).max())), err_msg=k)
                    else:
                        np.testing.assert_array_equal(a, b, err_msg=k)
    finally:
        workers.close()
    assert all(not p.alive for p in workers._procs.values())


def test_a_focus_process_that_dies_fails_its_request_and_the_next_starts_another(tiny_models, tmp_path):
    from lensframe.focus_process import FocusProcessError

    board = Board.from_text(tiny_spec(tiny_models["gpt2"], "  attn: {type: attention}\n"), base_dir=tmp_path,
                            cache_dir=tmp_path / "store")
    board.compute(progress=False)
    workers = FocusWorkers(board.executor, max_waiting=4, process=True)
    try:
        workers.warm("main")
        first = workers._procs["main"]
        with first._lock:  # the worker takes the request and waits here; the child dies meanwhile
            future = workers.request("main", 2, owner="a")
            deadline = time.monotonic() + 30
            while "main" not in workers._running:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            first.proc.kill()
            first.proc.wait()
        with pytest.raises(FocusProcessError, match="focus process of model 'main' ended"):
            future.result(60)
        assert workers.request("main", 2, owner="a").result(120), "a new process answers"
        assert workers._procs["main"] is not first and not first.alive
    finally:
        workers.close()
