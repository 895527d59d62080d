"""Several `lensframe serve --read-only-store` processes sharing one store (docs/SERVING.md).

On a tiny model: the store is filled once with `lensframe compute`, made read-only on disk, and two
servers serve it; each warms its model (one focus pass) before accepting sessions and runs no
dataset pass; browser pages on both keep their own focus; nothing in the store changes. A read-only
server refuses an empty store (exit 2, the compute command), and a dream runs without being stored.

The browser part needs the playwright Python package and /usr/bin/chromium (never `playwright install`).
"""
from __future__ import annotations

import re
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from lensframe.server.process import free_port, serve_process
from tests.conftest import tiny_spec
from tests.test_browser import START_TIMEOUT_S, browser, expect  # noqa: F401  (fixtures)

ROOT = Path(__file__).resolve().parent.parent
VIEWS = "  text: {type: text}\n  lens: {type: logit_lens}\n  attn: {type: attention}\n"


def _snapshot(root: Path) -> dict:
    """Every file under the store with its size and mtime: a write anywhere changes it."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


def _chmod_tree(root: Path, dirs: int, files: int) -> None:
    for p in root.rglob("*"):
        p.chmod(dirs if p.is_dir() else files)
    root.chmod(dirs)


@pytest.fixture(scope="module")
def spec(tiny_models, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("serving") / "spec.yaml"
    path.write_text(tiny_spec(tiny_models["llama"], VIEWS))
    return path


@pytest.fixture(scope="module")
def shared_store(spec, tmp_path_factory):
    """The store filled once by `lensframe compute`, then read-only on disk (root ignores that, so the
    tests compare the store's files before and after as well)."""
    from lensframe.cli import main

    store = tmp_path_factory.mktemp("shared-store")
    assert main(["compute", str(spec), "--cache-dir", str(store), "--json"]) == 0
    _chmod_tree(store, 0o555, 0o444)
    try:
        yield store
    finally:
        _chmod_tree(store, 0o755, 0o644)


def read_only_server(spec: Path, store: Path, log_path: Path):
    """`lensframe serve --read-only-store` in a subprocess, not waited for: start both, then wait."""
    return serve_process(spec, "--cache-dir", str(store), "--read-only-store", log_path=log_path, threads=1, cwd=ROOT)


def test_an_empty_store_is_refused_with_the_compute_command(spec, tmp_path, capsys, monkeypatch):
    import panel as pn

    from lensframe.cli import main

    def never(*args, **kwargs):  # in-process, so a server that wrongly starts must not block the test
        raise AssertionError("a read-only server started on an empty store")

    monkeypatch.setattr(pn, "serve", never)
    empty = tmp_path / "empty-store"
    assert main(["serve", str(spec), "--cache-dir", str(empty), "--read-only-store", "--port", str(free_port())]) == 2
    err = capsys.readouterr().err
    assert "lacks 2 of the 2 results" in err
    assert f"lensframe compute {spec} --cache-dir {empty}" in err
    assert not empty.exists()  # the check reads; it creates nothing


def test_a_read_only_store_refuses_writes(shared_store):
    from lensframe.ops.base import Result
    from lensframe.store import ReadOnlyStoreError, Store

    with pytest.raises(ReadOnlyStoreError, match="read-only for this server"):
        Store(shared_store, read_only=True).put("0" * 64, Result({}, {}), "x")


@pytest.mark.browser
def test_two_servers_share_a_read_only_store(spec, shared_store, browser, expect, tmp_path):
    before = _snapshot(shared_store)
    logs = [tmp_path / "serve-1.log", tmp_path / "serve-2.log"]
    with ExitStack() as stack:
        servers = [stack.enter_context(read_only_server(spec, shared_store, log)) for log in logs]
        for server in servers:
            server.wait_until_answering(START_TIMEOUT_S)
        url1, url2 = (server.url for server in servers)
        pages = {}
        for name, url in (("a", url1), ("c", url1), ("b", url2)):  # a and c: two sessions of server 1
            context = stack.enter_context(_closing(browser.new_context(viewport={"width": 1200, "height": 900})))
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc, errors=errors: errors.append(str(exc)))
            page.goto(url)
            expect(page.locator(".lf-card-text .lf-token").first).to_be_visible()
            pages[name] = (page, errors)
        a, b, c = pages["a"][0], pages["b"][0], pages["c"][0]
        last0 = str(a.locator(".lf-card-text .lf-token").count() - 1)

        a.locator('.lf-card-text .lf-sample[data-sample="3"]').click()  # server 1, session a: sample 3
        expect(a.locator(".lf-card-text .lf-sample-head b").first).to_have_text("3")
        b.locator('.lf-card-text .lf-token[data-position="2"]').click()  # server 2: position 2
        c.locator('.lf-card-text .lf-token[data-position="1"]').click()  # server 1, session c: position 1
        for page, pos in ((b, "2"), (c, "1")):
            for view in (".lf-card-text", ".lf-card-lens", ".lf-card-attn"):
                expect(page.locator(f"{view} .lf-position")).to_have_text(pos)
            expect(page.locator(".lf-card-text .lf-sample-head b").first).to_have_text("0")
        # a kept its sample and its last-token position; b and c kept sample 0
        last3 = str(a.locator(".lf-card-text .lf-token").count() - 1)
        expect(a.locator(".lf-card-text .lf-sample-head b").first).to_have_text("3")
        expect(a.locator(".lf-card-lens .lf-lens-head b").first).to_have_text("3")
        expect(a.locator(".lf-card-lens .lf-position")).to_have_text(last3)
        assert last0 != "2" and last0 != "1"
        for page, errors in pages.values():  # the lens view read the stored dataset result
            expect(page.locator(".lf-error")).to_have_count(0)
            expect(page.locator(".lf-waiting")).to_have_count(0)
            assert not errors, f"JavaScript errors in the page: {errors}"
    for log in logs:
        text = log.read_text(errors="replace")
        assert re.search(r"warm: main loaded in [\d.]+s, focus pass on sample 0", text), text
        assert "warm: ready; 1 forward pass(es) so far" in text, text  # the focus pass, nothing else
        assert "dataset pass" not in text and "Traceback" not in text, text
        assert re.search(r"^serving on http://127\.0\.0\.1:\d+/  \(Ctrl-C stops\)$", text, re.M), text  # its own line
    assert _snapshot(shared_store) == before


def test_the_terminal_says_when_the_dataset_passes_are_done(tiny_models, tmp_path, capsys):
    """A served board's dataset passes run in the background with a bar; when they end, a line
    says so (and what they did), and a line printed meanwhile is not glued to the bar."""
    from lensframe.board import Board
    from lensframe.server.app import ComputeJob, say

    board = Board.from_text(tiny_spec(tiny_models["gpt2"], "  lens: {type: logit_lens}\n"), base_dir=tmp_path,
                            cache_dir=tmp_path / "store")
    job = ComputeJob(board).start()
    say("a line meanwhile")
    job.wait()
    out = capsys.readouterr()
    text = out.out + out.err
    assert job.done and job.error is None
    assert re.search(r"^dataset passes done: 2 result\(s\) computed and stored, 0 read from the store, \d+ forward "
                     r"pass\(es\), \d+ s$", text, re.M), text
    assert re.search(r"^a line meanwhile$", text, re.M), text
    assert "node(s)" not in text


@contextmanager
def _closing(context):
    try:
        yield context
    finally:
        context.close()


def test_a_dream_runs_on_a_read_only_store_and_is_kept_in_memory(tiny_models, tmp_path):
    from lensframe import dreams
    from lensframe.board import Board
    from lensframe.ops.dream import DreamSettings, DreamTarget

    views = "  top: {type: top_examples, layers: [0], k: 3}\n  dream: {type: dream, layers: [0], k: 3, span: 3}\n"
    store = tmp_path / "store"
    board = Board.from_text(tiny_spec(tiny_models["gpt2"], views), cache_dir=store)
    board.compute(progress=False)
    board.store.read_only = True
    before = _snapshot(store)
    target, settings = DreamTarget("neuron", 0, 4), DreamSettings(steps=15, warmup=3, decay=0.9)
    start = dreams.resolve_start(board, "main", target, 3, "random", seed=1)
    first = dreams.run(board, "main", target, settings, start)
    assert len(first.steps) == 16 and not first.stopped
    calls = []
    handle = board.executor.model("main").model.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        job = dreams.DreamJob(board, "main", target, settings, start).start()
    finally:
        handle.remove()
    assert calls == [] and job.done  # this process kept the finished dream ...
    assert not job.from_store  # ... but not in the store, so the view does not say "from the store"
    assert [s.ids for s in job.trace.steps] == [s.ids for s in first.steps]
    assert _snapshot(store) == before
