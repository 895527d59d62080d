"""Views updated in place against views re-created, on every focus change (issue 14).

    python benchmarks/bench_in_place.py [--limit 16] [--changes 40] [--clicks 30] [--sessions 20]
                                        [--session-clicks 50] [--no-browser] [--out docs/BENCHMARKS.md]

Three specs: specs/demo.yaml (3 views), a 6-view spec made here from the demo's model and data
(text, logit_lens, attention, neurons, ffn_vocab, top_examples), and specs/audit.yaml (two models;
its edited model must exist: see the comment at the top of that file). Each runs on --limit samples
with the spec's own run settings (focus results kept in the store where the spec keeps them).

1. Server side. One session built as `lensframe serve` builds it (server/app.py build_app, its
   Bokeh models in a Document), driven by a seeded mix of focus changes as clicks make them (a new
   or revisited sample, a lens cell, a token, a head), each timed around Focus.update: the views'
   watchers re-render synchronously, so that is the server-side time to every view updated. The
   same changes run on the in-place engine and on the re-create engine (build_app(in_place=False):
   every render builds new components), each on a fresh Board over the same store (so neither gets
   the other's memoized focus results), in-place first. Counted per change: the Bokeh models the
   change created in the document.
2. In Chromium (Playwright). `lensframe serve` in a subprocess, one engine at a time; a page with a
   hook on the Bokeh document that stamps performance.now() one animation frame after each change
   the server sends. A click (a token of the text view, every fifth one a sample of the list) is
   timed from the click to the stamp of the last change it brought (the page is quiet for 500 ms
   after it): click to last view painted. Each click is checked: the text view shows the clicked
   position or sample, and no card shows an error.
3. Load (demo spec, in-place engine): --sessions pages at once, each clicking --session-clicks
   times as in 2 (quiet window 300 ms); counted: errors (page errors, error cards, clicks whose
   result never showed), click-to-paint p50/p95 under that load, and the server's resident memory
   before the sessions, after them, and after they closed.
"""
from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from bench_serving import CHROMIUM, CHROMIUM_ARGS, build_served_session, derived_spec, focus_changes, pct  # noqa: E402

SECTION = "Views in place: focus change to every view updated"
GOALS = {"6-view": 60, "audit": 150}  # server-side p95 goals, ms (2 cores)
PAINT_GOAL_MS = 250
SIX_VIEWS = {
    "text": {"type": "text", "title": "Texts"},
    "lens": {"type": "logit_lens", "top_k": 5, "title": "Logit lens"},
    "attn": {"type": "attention", "title": "Attention"},
    "neurons": {"type": "neurons", "top_n": 12, "title": "Neurons"},
    "ffn": {"type": "ffn_vocab", "title": "FFN value vectors"},
    "top": {"type": "top_examples", "title": "Top examples"},
}
SIX_LAYOUT = "text lens attn\nneurons ffn top\n"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=16, help="dataset samples of each spec (default: %(default)s)")
    ap.add_argument("--changes", type=int, default=40, help="server-side focus changes per spec and engine")
    ap.add_argument("--clicks", type=int, default=30, help="browser clicks per spec and engine")
    ap.add_argument("--sessions", type=int, default=20, help="concurrent sessions of the load part")
    ap.add_argument("--session-clicks", type=int, default=50, help="clicks per session of the load part")
    ap.add_argument("--specs", default="demo,6-view,audit", help="which specs (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2, help="torch threads, via OMP_NUM_THREADS (default: %(default)s)")
    ap.add_argument("--no-browser", action="store_true", help="server side only")
    ap.add_argument("--out", default=None, help="write/replace this benchmark's section of this markdown file")
    return ap.parse_args(argv)


# --- specs ---------------------------------------------------------------------------------------
def write_spec(name: str, limit: int, folder: Path) -> Path:
    """The spec `name` (demo, 6-view, audit) limited to `limit` samples, as bench_serving derives
    one (relative model paths made absolute); 6-view is the demo's model and data with SIX_VIEWS."""
    import yaml

    path = derived_spec(ROOT / "specs" / ("audit.yaml" if name == "audit" else "demo.yaml"), limit, folder)
    if name == "6-view":
        data = yaml.safe_load(path.read_text())
        data["title"] = "Six views of SmolLM2"
        data["views"], data["layout"] = copy.deepcopy(SIX_VIEWS), SIX_LAYOUT
        path = folder / "6-view.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# --- 1. server side ------------------------------------------------------------------------------
def server_side(spec: Path, cache: Path, changes, in_place: bool) -> dict:
    from panel.io.state import set_curdoc

    from lensframe.board import Board

    board = Board.from_file(spec, cache_dir=cache)
    board.compute(progress=False)
    focus, app, doc = build_served_session(board, in_place)

    def model_ids() -> set:  # every model reachable from the page (doc.models is recomputed lazily)
        return {m.id for root in doc.roots for m in root.references()}

    seen = model_ids()
    runs = []
    with set_curdoc(doc):
        focus.update(position=1, layer=1)  # warms Panel's code paths, not timed
        seen |= model_ids()
        for kind, fields in changes:
            passes = board.executor.forward_passes
            t0 = time.perf_counter()
            focus.update(**fields)
            ms = (time.perf_counter() - t0) * 1000
            ids = model_ids()
            runs.append({"kind": kind, "ms": ms, "new_models": len(ids - seen),
                         "forwards": board.executor.forward_passes - passes})
            seen |= ids
    errors = sum("lf-error" in str(getattr(p, "object", "")) for p in app.select(lambda o: hasattr(o, "object")))
    return {"runs": runs, "errors": errors}


def change_mix(board_spec: Path, cache: Path, n: int, seed: int) -> list:
    from lensframe.board import Board

    board = Board.from_file(board_spec, cache_dir=cache)
    board.compute(progress=False)  # fills the store both engines then read
    model = next(iter(board.spec.models))
    info, tok = board.infos[model], board.executor.tokens(model)
    return focus_changes(n, len(board.dataset), info.n_layers, info.n_heads, tok["lengths"], seed, reserved=set())


# --- 2 and 3. in Chromium -----------------------------------------------------------------------
SERVE = ("import functools, sys; import lensframe.server.app as A; "
         "A.build_app = functools.partial(A.build_app, in_place=sys.argv[1] == 'in-place'); "
         "from lensframe.cli import main; sys.exit(main(sys.argv[2:]))")

HOOK = """() => {
  const doc = window.Bokeh && window.Bokeh.documents[0];
  if (!doc) return false;
  if (!window.__lf) {
    window.__lf = {last: 0, t0: 0};
    // the template's busy spinner is switched off ~0.6 s after the server goes idle: not a view
    doc.on_change((e) => {
      if (!e.attr) return;  // the click's own message to the server, not a change it brought
      if (e.model && e.model.name === 'busy_indicator') return;
      requestAnimationFrame(() => { window.__lf.last = performance.now(); });
    });
  }
  return true;
}"""
CLICK = "el => { window.__lf.last = 0; window.__lf.t0 = performance.now(); el.click(); }"
QUIET = "q => window.__lf.last > 0 && performance.now() - window.__lf.last > q"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`lensframe serve` with one engine, in a subprocess."""

    def __init__(self, spec: Path, cache: Path, engine: str, log: Path, threads: int):
        self.port = free_port()
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVE, engine, "serve", str(spec), "--port", str(self.port),
             "--cache-dir", str(cache)], stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        deadline = time.time() + 600
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=60)
                return
            except OSError:
                time.sleep(1)
        raise RuntimeError("server did not start")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def log_errors(self) -> int:
        return self.log.read_text().count("Traceback")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


async def open_page(browser, url: str, size=(1400, 1000)):
    context = await browser.new_context(viewport={"width": size[0], "height": size[1]})
    page = await context.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    await page.goto(url, timeout=600_000)
    await page.locator(".lf-card-text .lf-token").first.wait_for(timeout=600_000)
    await page.wait_for_function(HOOK, timeout=60_000)
    await page.wait_for_timeout(1500)  # the first page's own patches settle
    return context, page, errors


async def click_loop(page, n: int, seed: int, quiet_ms: int) -> list[dict]:
    """n clicks, each timed from the click to the last change it brought, painted."""
    rng = np.random.default_rng(seed)
    out = []
    tokens = page.locator(".lf-card-text .lf-token")
    samples = page.locator(".lf-card-text .lf-sample")
    current, sample = None, 0  # a session opens on sample 0
    for i in range(n):
        if i % 5 == 4 and await samples.count() > 1:
            n = min(await samples.count(), 12)
            k = int(rng.integers(n))
            if k == sample:  # the focused one: a click would change nothing
                k = (k + 1) % n
            target, kind, sample = samples.nth(k), "sample", k
        else:
            count = await tokens.count()
            k = int(rng.integers(count))
            if k == current:
                k = (k + 1) % count
            target, kind = tokens.nth(k), "token"
        handle = await target.element_handle()
        await page.evaluate(CLICK, handle)
        # the click's result shown in the text view first (under load the server may take a while to
        # start on it), then the page quiet: the last change it brought is the last view painted
        shown_ok = (page.locator(f".lf-card-text .lf-token.lf-selected[data-position='{k}']") if kind == "token"
                    else page.locator(".lf-card-text .lf-sample-index", has_text=re.compile(rf"^\s*{k}\s*$")))
        try:
            await shown_ok.first.wait_for(timeout=120_000)
            await page.wait_for_function(QUIET, arg=quiet_ms, timeout=60_000, polling=50)
            ms = await page.evaluate("() => window.__lf.last - window.__lf.t0")
        except Exception as exc:
            print(f"click {i} ({kind} {k}): no result shown: {str(exc)[:200]}", flush=True)
            out.append({"kind": kind, "ms": None, "ok": False})
            continue
        ok, current = True, (k if kind == "token" else None)
        shown = k
        errors = await page.locator(".lf-error").all_inner_texts()
        if not ok or errors:
            print(f"click {i} ({kind} {k}): shown {shown!r}, error cards {[e[:300] for e in errors]}", flush=True)
        out.append({"kind": kind, "ms": ms, "ok": ok and not errors})
    return out


async def browser_clicks(url: str, n: int, seed: int) -> list[dict]:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context, page, errors = await open_page(browser, url)
        runs = await click_loop(page, n, seed, quiet_ms=500)
        await context.close()
        await browser.close()
    for r in runs:
        r["page_errors"] = len(errors)
    return runs


async def load_test(server: Server, sessions: int, clicks: int, seed: int) -> dict:
    from playwright.async_api import async_playwright

    rss = {"before": server.rss_mb()}
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        pages = [await open_page(browser, server.url) for _ in range(sessions)]
        rss["open"] = server.rss_mb()
        t0 = time.perf_counter()
        results = await asyncio.gather(*(click_loop(page, clicks, seed + i, quiet_ms=300)
                                         for i, (_, page, _) in enumerate(pages)))
        wall = time.perf_counter() - t0
        rss["after"] = server.rss_mb()
        page_errors = sum(len(e) for _, _, e in pages)
        for context, _, _ in pages:
            await context.close()
        await browser.close()
    await asyncio.sleep(5)  # the server drops the closed sessions
    rss["closed"] = server.rss_mb()
    runs = [r for rs in results for r in rs]
    return {"runs": runs, "page_errors": page_errors, "server_errors": server.log_errors(), "rss": rss,
            "wall_s": wall, "sessions": sessions, "clicks": clicks}


# --- report -------------------------------------------------------------------------------------
def report(res: dict, args) -> str:
    from _common import machine

    m = machine()
    lines = [f"{datetime.now(timezone.utc):%Y-%m-%d}, {m['cores']} cores ({m['cpu']}), torch {m['torch']}, "
             f"{args.threads} torch threads, load average {m['load']} at the end. Command: "
             f"`python benchmarks/bench_in_place.py{'' if args.limit == 16 else f' --limit {args.limit}'}"
             f"{' --no-browser' if args.no_browser else ''}{' --out docs/BENCHMARKS.md' if args.out else ''}`.", "",
             "Server side: one session as `lensframe serve` builds it, the same seeded mix of "
             f"{args.changes} focus changes (samples new and revisited, lens cells, tokens, heads) on each "
             "engine, each on a fresh board over the same store; time around Focus.update (every view "
             "re-rendered). *New models*: Bokeh models the changes created in the document, per change.", "",
             "| spec | views | in place p50 / p95 ms | re-create p50 / p95 ms | re-create / in place (p95) | "
             "new models per change (in place / re-create) | goal p95 |",
             "|---|---|---|---|---|---|---|"]
    for name, r in res["server"].items():
        a, b = [x["ms"] for x in r["in-place"]["runs"]], [x["ms"] for x in r["re-create"]["runs"]]
        na = np.mean([x["new_models"] for x in r["in-place"]["runs"]])
        nb = np.mean([x["new_models"] for x in r["re-create"]["runs"]])
        goal = GOALS.get(name)
        lines.append(f"| {name} | {r['views']} | {pct(a, 50):.0f} / {pct(a, 95):.0f} | {pct(b, 50):.0f} / {pct(b, 95):.0f} "
                     f"| {pct(b, 95) / pct(a, 95):.2f}× | {na:.1f} / {nb:.1f} | "
                     + (f"< {goal} ({'met' if pct(a, 95) < goal else 'missed'})" if goal else "–") + " |")
    if res.get("browser"):
        lines += ["", f"In Chromium: `lensframe serve` with one engine at a time, {args.clicks} clicks per spec and engine "
                  "(tokens of the text view, every fifth a sample of its list), each timed from the click to one "
                  "animation frame after the last change the server sent for it (the clicked token or sample shown in the "
                  "text view, then the page quiet for 500 ms). "
                  "The template's busy spinner, switched off about 0.6 s after the server goes idle, is not "
                  "counted as a view. *ok*: the clicked token or sample shown, no error card.", "",
                  "| spec | in place p50 / p95 ms | re-create p50 / p95 ms | re-create / in place (p95) | ok | goal p95 |",
                  "|---|---|---|---|---|---|"]
        for name, r in res["browser"].items():
            a, b = [x["ms"] for x in r["in-place"]], [x["ms"] for x in r["re-create"]]
            ok = sum(x["ok"] for x in r["in-place"] + r["re-create"])
            lines.append(f"| {name} | {pct(a, 50):.0f} / {pct(a, 95):.0f} | {pct(b, 50):.0f} / {pct(b, 95):.0f} | "
                         f"{pct(b, 95) / pct(a, 95):.2f}× | {ok} / {len(a) + len(b)} | < {PAINT_GOAL_MS} "
                         f"({'met' if pct(a, 95) < PAINT_GOAL_MS else 'missed'}) |")
    if res.get("load"):
        ld = res["load"]
        ms = [x["ms"] for x in ld["runs"]]
        bad = sum(not x["ok"] for x in ld["runs"])
        rss = ld["rss"]
        lines += ["", f"Load, demo spec, in-place engine: {ld['sessions']} sessions in one Chromium, each clicking "
                  f"{ld['clicks']} times at once ({len(ms)} clicks in {ld['wall_s']:.0f} s). Errors: {bad} clicks without "
                  f"their result or with an error card, {ld['page_errors']} page errors, {ld['server_errors']} server "
                  f"tracebacks. Click to paint under this load: p50 {pct(ms, 50):.0f} ms, p95 {pct(ms, 95):.0f} ms. Server "
                  f"memory (RSS): {rss['before']:.0f} MB before the sessions, {rss['open']:.0f} MB with them open, "
                  f"{rss['after']:.0f} MB after their clicks, {rss['closed']:.0f} MB 5 s after they closed."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="lf-bench-in-place-"))
    names = [n.strip() for n in args.specs.split(",") if n.strip()]
    res = {"server": {}, "browser": {}, "load": None}
    for name in names:
        spec, cache = write_spec(name, args.limit, tmp), tmp / f"store-{name}"
        changes = change_mix(spec, cache, args.changes, args.seed)
        res["server"][name] = {"views": len(__import__("yaml").safe_load(spec.read_text())["views"])}
        for engine in ("in-place", "re-create"):
            r = server_side(spec, cache, changes, in_place=engine == "in-place")
            res["server"][name][engine] = r
            a = [x["ms"] for x in r["runs"]]
            print(f"{name} {engine}: p50 {pct(a, 50):.0f} ms, p95 {pct(a, 95):.0f} ms, "
                  f"new models/change {np.mean([x['new_models'] for x in r['runs']]):.1f}", flush=True)
        if args.no_browser:
            continue
        res["browser"][name] = {}
        for engine in ("in-place", "re-create"):
            server = Server(spec, cache, engine, tmp / f"serve-{name}-{engine}.log", args.threads)
            try:
                runs = asyncio.run(browser_clicks(server.url, args.clicks, args.seed))
            finally:
                server.stop()
            res["browser"][name][engine] = runs
            a = [x["ms"] for x in runs]
            print(f"{name} {engine} in Chromium: p50 {pct(a, 50):.0f} ms, p95 {pct(a, 95):.0f} ms, "
                  f"ok {sum(x['ok'] for x in runs)}/{len(runs)}", flush=True)
    if not args.no_browser and args.sessions and "demo" in names:
        spec, cache = tmp / "demo.yaml", tmp / "store-demo"
        server = Server(spec, cache, "in-place", tmp / "serve-load.log", args.threads)
        try:
            res["load"] = asyncio.run(load_test(server, args.sessions, args.session_clicks, args.seed))
        finally:
            server.stop()
        ms = [x["ms"] for x in res["load"]["runs"]]
        print(f"load: {len(ms)} clicks, p95 {pct(ms, 95):.0f} ms, rss {res['load']['rss']}", flush=True)
    text = report(res, args)
    print(f"## {SECTION}\n\n{text}")
    (tmp / "results.json").write_text(json.dumps(res, default=str))
    if args.out:
        from _common import write_section

        write_section(SECTION, text, Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
