"""Many sessions at once: N Chromium sessions clicking on one `lensframe serve`, the focus forwards in
a process per model (`--focus-process`), on worker threads (`--focus-queue 16`, the default), and on
the event loop (`--focus-queue 0`, the engine before), in the same run, on the same store.

    python benchmarks/bench_sessions.py [--spec specs/demo.yaml] [--limit 24] [--sessions 20]
                                        [--clicks 50] [--think 0.5 1.5] [--engines process threads loop]
                                        [--out docs/BENCHMARKS.md]

The spec is --spec with its dataset cut to --limit samples and run.keep_focus_mb: 0, so a session's
first visit of a sample runs that sample's focus forward (the attention view needs it): the case
where one session's forward used to freeze every other session. The store is filled first by
`lensframe compute`; both servers start warm from it.

Each engine: `lensframe serve --focus-queue Q [--focus-process] --timings-log FILE`, its RSS read before the sessions
open and after the last click. One headless Chromium (Debian's), one browser context per session,
each page loaded until every card shows; then every Chromium process is set to nice 19, as the users'
browsers would not share the server's cores. Then all sessions click at once (asyncio, Playwright's
async API), each --clicks times, with a think time drawn from --think seconds between a click's
views showing it and the next click (a researcher reads before clicking). A seeded mix of clicks:
a sample in the text view's list (the forward), a token, a lens cell, an attention head. Each click
is timed in the browser, from the click to every view showing the new focus (the text, lens and
attention views' position, layer, head and sample, the attention card without its spinner), and on
the server: the timings log's line for that change (from the focus change to the last view
rendered, including the wait for a worker's forward; server/timings.py). An error is a click whose
views did not follow within 60 s, a view's error card, a JavaScript error, or a busy note.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

SECTION = "Serving many sessions at once"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
CLICK_TIMEOUT_MS = 60_000
KINDS = {"sample": 0.3, "token": 0.25, "cell": 0.25, "head": 0.2}
# name -> (what the table calls it, serve's options); the goal is judged on the first engine run
ENGINES = {"process": ("a worker process per model (`--focus-process`)", ["--focus-queue", "16", "--focus-process"]),
           "threads": ("worker threads (`--focus-queue 16`, the default)", ["--focus-queue", "16"]),
           "loop": ("on the event loop (`--focus-queue 0`, the engine before)", ["--focus-queue", "0"])}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spec", default="specs/demo.yaml")
    ap.add_argument("--limit", type=int, default=24, help="dataset samples (default: %(default)s)")
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--clicks", type=int, default=50, help="clicks per session (default: %(default)s)")
    ap.add_argument("--think", type=float, nargs=2, default=[0.5, 1.5], metavar=("MIN", "MAX"),
                    help="seconds between a click shown and the next click (default: %(default)s)")
    ap.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS of the server")
    ap.add_argument("--engines", nargs="+", choices=list(ENGINES), default=list(ENGINES),
                    help="the engines to run, in this order; the last is the baseline (default: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="write the section into this markdown file")
    return ap.parse_args(argv)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pct(values, q) -> float:
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, max(0, int(round(q / 100 * (len(v) - 1)))))]


# What the page shows, read inside its shadow roots (Panel renders each part in one, so a selector
# such as ".lf-card-attn .lf-position" never matches across them: find the card, then inside it).
READ_JS = """() => {
  const roots = (el) => { const out = [el]; if (el.shadowRoot) out.push(el.shadowRoot); return out; };
  const find = (el, sel) => {
    for (const root of roots(el)) {
      const hit = root.querySelector(sel);
      if (hit) return hit;
      for (const child of root.querySelectorAll('*')) {
        if (child.shadowRoot) { const deep = find(child.shadowRoot, sel); if (deep) return deep; }
      }
    }
    return null;
  };
  const all = (el, fn) => {
    for (const root of roots(el)) for (const child of root.querySelectorAll('*')) {
      fn(child);
      if (child.shadowRoot) all(child.shadowRoot, fn);
    }
  };
  const out = {}, cards = {};
  for (const [key, card, sel] of WANT) {
    if (!(card in cards)) cards[card] = find(document, '.' + card);
    const hit = cards[card] ? find(cards[card], sel) : null;
    out[key] = hit ? hit.textContent.trim() : null;
  }
  let loading = false, errors = 0, busy = 0;
  all(document, (el) => {
    if (!el.classList) return;
    if (el.classList.contains('pn-loading')) loading = true;
    if (el.classList.contains('lf-error')) errors += 1;
    if (el.classList.contains('lf-busy')) busy += 1;
  });
  out.loading = loading; out.errors = errors; out.busy = busy;
  return out;
}"""
FIELDS = [(".lf-card-text .lf-position", "lf-card-text", ".lf-position"),
          (".lf-card-lens .lf-position", "lf-card-lens", ".lf-position"),
          (".lf-card-attn .lf-position", "lf-card-attn", ".lf-position"),
          (".lf-card-attn .lf-layer", "lf-card-attn", ".lf-layer"),
          (".lf-card-attn .lf-head-index", "lf-card-attn", ".lf-head-index"),
          (".lf-card-text .lf-sample-head b", "lf-card-text", ".lf-sample-head b"),
          (".lf-card-lens .lf-lens-head b", "lf-card-lens", ".lf-lens-head b")]
READ_JS = READ_JS.replace("WANT", json.dumps(FIELDS))


def expected(kind: str, target: dict) -> dict:
    """What the views show once they follow a click of `kind`."""
    if kind == "sample":
        return {".lf-card-text .lf-sample-head b": str(target["sample"]), ".lf-card-lens .lf-lens-head b": str(target["sample"]),
                ".lf-card-attn .lf-position": str(target["position"])}
    if kind == "token":
        return {sel: str(target["position"]) for sel in (".lf-card-text .lf-position", ".lf-card-lens .lf-position",
                                                          ".lf-card-attn .lf-position")}
    if kind == "cell":
        return {".lf-card-attn .lf-layer": target["layer"], ".lf-card-attn .lf-position": str(target["position"])}
    return {".lf-card-attn .lf-head-index": str(target["head"])}


async def session(browser, url: str, index: int, args, lengths: dict, n_layers: int, n_heads: int, out: list,
                  opened: list, go: asyncio.Event):
    from playwright.async_api import TimeoutError as PlaywrightTimeout

    rng = random.Random(args.seed * 1000 + index)
    context = await browser.new_context(viewport={"width": 1400, "height": 1000})
    page = await context.new_page()
    js_errors: list = []
    page.on("pageerror", lambda exc: js_errors.append(str(exc)))
    await page.goto(url, timeout=300_000)
    await page.locator(".lf-card-attn .lf-position").wait_for(timeout=300_000)
    opened.append(index)
    await go.wait()  # every session open (and the browsers reniced) before anyone clicks
    sample, position, layer_row, head = 0, lengths[0] - 1, None, 0
    await asyncio.sleep(rng.uniform(0, args.think[1]))  # sessions do not click in lockstep
    for i in range(args.clicks):
        kind = rng.choices(list(KINDS), weights=list(KINDS.values()))[0]
        if kind == "sample":
            sample = rng.choice([s for s in lengths if s != sample])
            position = lengths[sample] - 1
            target, locator = {"sample": sample, "position": position}, page.locator(
                f'.lf-card-text .lf-sample[data-sample="{sample}"]')
        elif kind == "token":
            position = rng.choice([p for p in range(lengths[sample]) if p != position])
            target, locator = {"position": position}, page.locator(f'.lf-card-text .lf-token[data-position="{position}"]')
        elif kind == "cell":
            layer_row = rng.randrange(n_layers)  # the lens grid's rows: the last block on top, the embedding last
            position = rng.randrange(lengths[sample])
            target = {"layer": str(n_layers - 1 - layer_row), "position": position}
            locator = page.locator(f'.lf-card-lens .lf-cell[data-row="{layer_row}"][data-col="{position}"]')
        else:
            head = rng.choice([h for h in range(n_heads) if h != head])
            target, locator = {"head": head}, page.locator(f'.lf-card-attn .lf-head[data-head="{head}"]')
        want = expected(kind, target)
        record = {"session": index, "click": i, "kind": kind, "ok": False}
        t0 = time.perf_counter()
        try:
            await locator.click(timeout=CLICK_TIMEOUT_MS)
            deadline = t0 + CLICK_TIMEOUT_MS / 1000
            while True:
                seen = await page.evaluate(READ_JS)
                if all(seen.get(k) == v for k, v in want.items()) and not seen["loading"]:
                    record.update(ok=True, ms=(time.perf_counter() - t0) * 1000, errors=seen["errors"], busy=seen["busy"])
                    break
                if time.perf_counter() > deadline:
                    record.update(error="views did not follow", seen=seen, want=want)
                    break
                await asyncio.sleep(0.05)  # a read walks every shadow root: 20 sessions polling faster would load the CPU
        except PlaywrightTimeout as exc:
            record.update(error=f"click: {str(exc).splitlines()[0]}")
        record["js_errors"] = len(js_errors)
        out.append(record)
        await asyncio.sleep(rng.uniform(*args.think))
    await context.close()


def nice_browsers(server_pid: int) -> int:
    """Every Chromium process at the lowest CPU priority (nice 19). The users' browsers run on their own machines, not
    on the server's cores; on one machine the 20 renderers would otherwise take most of its CPU
    (Chromium even raises its own browser and GPU processes to nice -8 when it can), and their
    session's autogroup too (see _nice_autogroup). Called after
    the pages are open, so every renderer exists; returns how many processes were reniced."""
    count = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == server_pid:
            continue
        try:
            if (proc / "comm").read_text().strip() in ("chromium", "chrome", "headless_shell"):
                os.setpriority(os.PRIO_PROCESS, int(proc.name), 19)
                _nice_autogroup(proc)
                count += 1
        except (OSError, PermissionError):
            pass
    return count


def _nice_autogroup(proc: Path) -> None:
    """Linux's autogroup scheduling shares the CPU between sessions first and applies a process's
    nice only inside its session: Chromium, started in a session of its own, took half the cores
    at nice 19 (the focus forwards ran 10-40x slower than alone). The group's nice is set in
    /proc/PID/autogroup where the kernel has one."""
    try:
        (proc / "autogroup").write_text("19")
    except OSError:
        pass


async def drive(url: str, args, lengths, n_layers, n_heads, server_pid: int) -> tuple[list, float, int]:
    from playwright.async_api import async_playwright

    out: list = []
    opened: list = []
    go = asyncio.Event()
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        tasks = [asyncio.create_task(session(browser, url, i, args, lengths, n_layers, n_heads, out, opened, go))
                 for i in range(args.sessions)]
        while len(opened) < args.sessions:
            if any(t.done() for t in tasks):  # a session failed to open: its exception ends the run
                await asyncio.gather(*tasks)
            await asyncio.sleep(0.2)
        reniced = nice_browsers(server_pid)
        t0 = time.perf_counter()
        go.set()
        await asyncio.gather(*tasks)
        wall = time.perf_counter() - t0
        await browser.close()
    return out, wall, reniced


def rss_tree_mb(pid: int) -> float:
    """RSS of a process and its children (a focus process holds its own copy of the model)."""
    kids = Path(f"/proc/{pid}/task/{pid}/children")
    children = [int(c) for c in kids.read_text().split()] if kids.exists() else []
    return rss_mb(pid) + sum(rss_tree_mb(c) for c in children)


def run_engine(spec: Path, store: Path, tmp: Path, engine: str, args, lengths, n_layers, n_heads) -> dict:
    from lensframe.server.process import serve_process

    log = tmp / f"timings-{engine}.jsonl"
    log.unlink(missing_ok=True)
    with serve_process(spec, "--cache-dir", str(store), *ENGINES[engine][1], "--timings-log", str(log),
                       log_path=tmp / f"serve-{engine}.log", threads=args.threads, cwd=ROOT, wait_s=600) as server:
        rss_before = rss_tree_mb(server.proc.pid)
        clicks, wall, reniced = asyncio.run(drive(server.url, args, lengths, n_layers, n_heads, server.proc.pid))
        rss_after = rss_tree_mb(server.proc.pid)
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return {"clicks": clicks, "wall_s": wall, "rss_before": rss_before, "rss_after": rss_after, "server": lines,
            "reniced": reniced}


def summary(res: dict) -> dict:
    clicks = res["clicks"]
    ok = [c for c in clicks if c["ok"]]
    errors = [c for c in clicks if not c["ok"] or c.get("errors") or c.get("busy")]
    js = max((c.get("js_errors", 0) for c in clicks), default=0)
    server = [line for line in res["server"] if line.get("ms") is not None]
    fw = [line["ms"] for line in server if line.get("forward")]
    forwards = [line["forward_ms"] for line in res["server"] if "forward_ms" in line]
    span = (max(t := [line["t"] for line in server]) - min(t)) if server else float("nan")
    return {
        # the loop's share of the time spent rendering the changes that waited for no forward: a floor
        # on how busy it was (with --focus-queue 0 it also ran the forwards, which this leaves out)
        "loop_busy": sum(line["ms"] for line in server if not line.get("forward")) / 1e3 / span,
        "forward_p50": pct(forwards, 50), "forward_p95": pct(forwards, 95), "forwards": len(forwards),
        "clicks": len(clicks), "errors": len(errors), "js_errors": js,
        "browser_p50": pct([c["ms"] for c in ok], 50), "browser_p95": pct([c["ms"] for c in ok], 95),
        "browser_sample_p95": pct([c["ms"] for c in ok if c["kind"] == "sample"], 95),
        "server_n": len(server), "server_p50": pct([line["ms"] for line in server], 50),
        "server_p95": pct([line["ms"] for line in server], 95), "server_max": max([line["ms"] for line in server], default=float("nan")),
        "server_forward_p95": pct(fw, 95), "server_forward_n": len(fw),
        "replaced": sum(1 for line in res["server"] if line.get("replaced")),
        "rate": len(clicks) / res["wall_s"], "rss_before": res["rss_before"], "rss_after": res["rss_after"],
        "reniced": res["reniced"], "error_examples": [c.get("error") or f"errors {c.get('errors')} busy {c.get('busy')}" for c in errors[:3]],
    }


def table(rows: list[tuple[str, dict]]) -> str:
    base = rows[-1][1]
    out = ["| engine | clicks | errors | clicks/s | browser p50 / p95 ms | server p50 / p95 / max ms | server p95, changes "
           "that waited for a forward (n) | server p95 ÷ the last engine's | RSS before → after MB (with its focus processes) |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, s in rows:
        out.append(f"| {name} | {s['clicks']} | {s['errors']} | {s['rate']:.1f} | {s['browser_p50']:.0f} / "
                   f"{s['browser_p95']:.0f} | {s['server_p50']:.0f} / {s['server_p95']:.0f} / {s['server_max']:.0f} | "
                   f"{s['server_forward_p95']:.0f} ({s['server_forward_n']}) | {s['server_p95'] / base['server_p95']:.2f}× | "
                   f"{s['rss_before']:.0f} → {s['rss_after']:.0f} |")
    return "\n".join(out)


def main(argv=None) -> int:
    args = parse_args(argv)
    from _common import machine, write_section
    from bench_serving import derived_spec

    from lensframe.board import Board

    tmp = Path(tempfile.mkdtemp(prefix="bench-sessions-"))
    spec = derived_spec((ROOT / args.spec).resolve(), args.limit, tmp, keep_focus_mb=0)
    store = tmp / "store"
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    subprocess.run([sys.executable, "-m", "lensframe", "compute", str(spec), "--cache-dir", str(store), "--json"],
                   cwd=ROOT, env=env, check=True, capture_output=True)
    board = Board.from_file(spec, cache_dir=store)
    tok = board.executor.tokens(board.plan.models[0])
    lengths = {i: int(n) for i, n in enumerate(tok["lengths"])}
    info = board.sources[board.plan.models[0]].info()
    n_layers, n_heads = info.n_layers, info.n_heads
    del board
    rows = []
    for engine in args.engines:
        name = ENGINES[engine][0]
        print(f"== {name}: {args.sessions} sessions × {args.clicks} clicks", flush=True)
        res = run_engine(spec, store, tmp, engine, args, lengths, n_layers, n_heads)
        (tmp / f"clicks-{engine}.json").write_text(json.dumps(res["clicks"], indent=1))
        print(f"   clicks in {tmp / f'clicks-{engine}.json'}", flush=True)
        s = summary(res)
        print(json.dumps(s), flush=True)
        rows.append((name, s))
    text = table(rows)
    print(text)
    if args.out:
        m = machine()
        (first, new), (last, old) = rows[0], rows[-1]
        goal = new["errors"] == 0 and new["server_p95"] < 1000
        cmd = (f"python benchmarks/bench_sessions.py --spec {args.spec} --limit {args.limit} --sessions {args.sessions} "
               f"--clicks {args.clicks} --think {args.think[0]:g} {args.think[1]:g}"
               + (f" --engines {' '.join(args.engines)}" if args.engines != list(ENGINES) else ""))
        reniced = max(s["reniced"] for _, s in rows)
        body = f"""`{cmd} --out docs/BENCHMARKS.md`, {datetime.now(timezone.utc):%Y-%m-%d}, {m['cores']} cores ({m['cpu']}),
load {m['load']}; the server with OMP_NUM_THREADS={args.threads}, Chromium on the same machine at nice 19
and its session's autogroup too (standing in for the users' own machines: otherwise its renderers
take half of 2 cores or more; {reniced} Chromium processes were reniced once every page was open).

{args.sessions} Chromium sessions click on one server at once, {args.clicks} clicks each, {args.think[0]:g}–{args.think[1]:g} s
of think time between a click's views showing it and the next click. Spec: `{args.spec}` with
{args.limit} samples and `run.keep_focus_mb: 0`, so each first visit of a sample by the server runs its
focus forward (the attention view needs it), from a store filled beforehand. Clicks, seeded (the same
for every engine): a sample ({KINDS['sample']:.0%}), a token ({KINDS['token']:.0%}), a lens cell ({KINDS['cell']:.0%}), a head ({KINDS['head']:.0%}).
Browser time: click → every view shows the new focus (no spinner). Server time (`--timings-log`):
the focus change → the last view rendered, with the wait for a worker's forward; not the websocket,
not the time the click's message waited for the event loop (the browser time has both). An error: views
that did not follow within {CLICK_TIMEOUT_MS // 1000} s, an error card, a busy note, a JavaScript error.
With the forwards on the event loop the server time does not measure the same thing: a forward
delays the other sessions' clicks before their changes start (invisible to the server time), while
with workers a change's wait for its forward is inside it. The browser time is the comparable one.

{text}

Goal on 2 cores: 0 errors and a server-side p95 under 1 s. **{'Met' if goal else 'Not met'}** by {first}:
{new['errors']} errors and a server p95 of {new['server_p95']:.0f} ms (browser p95 {new['browser_p95']:.0f} ms), against
{old['errors']} errors and {old['server_p95']:.0f} ms (browser p95 {old['browser_p95']:.0f} ms) {last} (the same clicks, the same run).
"""
        body += "\nWhere the time went: " + "; ".join(
            f"{name}: the loop rendered for at least {s['loop_busy']:.0%} of the run"
            + (f", and the workers' {s['forwards']} forwards took {s['forward_p50']:.0f} / {s['forward_p95']:.0f} ms "
               "(p50 / p95)" if s["forwards"] else "") for name, s in rows) + ".\n"
        examples = [f"{name}: {s['error_examples']}" for name, s in rows if s["error_examples"]]
        if examples:
            body += "\nFirst errors: " + "; ".join(examples) + ".\n"
        write_section(SECTION, body, Path(args.out))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
