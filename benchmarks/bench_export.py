"""Exported pages (`lensframe export`): size per view and in all against the plan's estimate, and how
fast the page paints in Chromium, offline.

    python benchmarks/bench_export.py [--specs specs/demo.yaml specs/neurons.yaml:0-9] [--samples RANGES]
                                      [--cache-dir /tmp/lf-bench-export] [--screenshot docs/export.png]
                                      [--loads 3] [--no-write]

For each spec: the board is computed (warm when the store already holds it), its page planned and
exported with every sample (or --samples, or the ranges after the spec's name: SPEC:0-9), then opened --loads times from the file in a fresh offline
Chromium context: first contentful paint (the browser's own paint timing) and the time until every
exported view has drawn its components (the lens grid's cells, the attention heads, the tokens),
median of the loads. --screenshot saves the first spec's page (1400x1000) for the README.
Writes the "Exported pages" section of docs/BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

SECTION = "Exported pages"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
# what each exported view has drawn once its components rendered
DRAWN = {"text": ".lf-token", "logit_lens": ".lf-cell", "attention": ".lf-head"}


def export_spec(spec: Path, cache: Path, samples, out: Path) -> dict:
    from lensframe.board import Board
    from lensframe.export_plan import export_options
    from lensframe.server.export import export

    board = Board.from_file(spec, cache_dir=cache)
    t0 = time.perf_counter()
    board.compute(progress=True)
    computed = time.perf_counter() - t0
    options = export_options(board, samples)
    report = export(board, out, options)
    drawn = sorted({DRAWN[v.type] for v in board.views.values() if v.type in DRAWN and not v.export_refusal()})
    return {"spec": spec, "board": board, "report": report, "compute_s": computed, "drawn": drawn,
            "samples": options.samples}


def load_times(path: Path, drawn: list[str], loads: int, screenshot: Path | None) -> dict:
    from playwright.sync_api import sync_playwright

    fcp, ready, requests = [], [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for i in range(loads):
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            context.set_offline(True)
            context.route("**/*", lambda r: r.continue_() if r.request.url.startswith(("file:", "data:", "blob:"))
                          else (requests.append(r.request.url), r.abort()))
            page = context.new_page()
            t0 = time.perf_counter()
            page.goto(path.as_uri(), timeout=300_000)
            for selector in drawn:
                page.locator(selector).first.wait_for(timeout=300_000)
            ready.append(time.perf_counter() - t0)
            fcp.append(page.evaluate("() => (performance.getEntriesByName('first-contentful-paint')[0] || {}).startTime")
                       / 1000)
            if screenshot is not None and i == 0:
                page.wait_for_timeout(1000)
                page.screenshot(path=str(screenshot))
            context.close()
        browser.close()
    return {"fcp": statistics.median(fcp), "ready": statistics.median(ready), "requests": requests}


def mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


def section(results: list[dict], machine: dict, command: str) -> str:
    lines = [f"Machine: {machine['cores']} cores ({machine['cpu']}), load {machine['load']}; "
             f"{time.strftime('%Y-%m-%d')}. Command: `{command}`.", "",
             "Each page holds the samples named (its views' data for each) and is opened from the "
             "file with the network off: first contentful paint is Chromium's paint timing; *views drawn* is "
             "the time from navigation until every exported view shows its components. The plan is what "
             "`lensframe export --max-mb` checks before writing (from the stored shapes: token counts, "
             "layers, heads; strings estimated).", ""]
    for r in results:
        rep = r["report"]
        lines += [f"**{r['spec'].relative_to(ROOT) if r['spec'].is_absolute() else r['spec']}** "
                  f"({len(r['samples'])} samples): written {mb(rep.bytes)}, planned {mb(rep.plan.total)} "
                  f"({rep.plan.total / rep.bytes:.2f}x); export {rep.seconds:.1f} s; first contentful paint "
                  f"{r['load']['fcp']:.2f} s, views drawn {r['load']['ready']:.2f} s (median of {r['loads']}); "
                  f"requests leaving the page: {len(r['load']['requests'])}.", "",
                  "| part | planned | written | planned / written |", "| --- | --- | --- | --- |"]
        for vid in rep.views:
            note = " (a note: needs a live model or has no JS port)" if vid in rep.plan.notes else ""
            lines.append(f"| view `{vid}`{note} | {mb(rep.plan.views[vid])} | {mb(rep.views[vid])} | "
                         f"{rep.plan.views[vid] / max(rep.views[vid], 1):.2f} |")
        for k, v in rep.fixed.items():
            planned = rep.plan.fixed.get(k)
            lines.append(f"| {k} | {mb(planned) if planned is not None else '(in scripts)'} | {mb(v)} | "
                         + (f"{planned / max(v, 1):.2f} |" if planned is not None else "|"))
        lines.append("")
    lines.append("*scripts* is Bokeh's and Panel's JavaScript inline, lensframe's runtime and the views' ports; "
                 "*components* the JSComponents' modules and stylesheets, once per page; *tokens* the token "
                 "strings of the exported samples, shared by the views. A view's row is its packed data and its "
                 "first render (its cards' Bokeh models).")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # the neurons spec's page holds every neuron listed at every layer and position: 10 of its 60
    # samples make a page of ~30 MB (all 60: ~140 MB, which --max-mb would refuse)
    ap.add_argument("--specs", nargs="+", default=[str(ROOT / "specs" / "demo.yaml"),
                                                   str(ROOT / "specs" / "neurons.yaml") + ":0-9"])
    ap.add_argument("--samples", default=None, help="samples exported (default: every sample)")
    ap.add_argument("--cache-dir", default="/tmp/lf-bench-export")
    ap.add_argument("--screenshot", default=None, help="save the first spec's exported page here (png)")
    ap.add_argument("--loads", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "docs" / "BENCHMARKS.md"))
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    from _common import machine, write_section

    out_dir = Path(args.cache_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for i, spec in enumerate(args.specs):
        spec, _, samples = spec.partition(":")
        spec = Path(spec).resolve()
        r = export_spec(spec, out_dir / f"store-{spec.stem}", samples or args.samples, out_dir / f"{spec.stem}.html")
        print(r["report"].describe(), flush=True)
        r["load"] = load_times(r["report"].path, r["drawn"], args.loads,
                               Path(args.screenshot) if args.screenshot and i == 0 else None)
        r["loads"] = args.loads
        print(f"  first contentful paint {r['load']['fcp']:.2f}s, views drawn {r['load']['ready']:.2f}s, "
              f"requests {r['load']['requests']}", flush=True)
        results.append(r)
    command = "python benchmarks/bench_export.py " + " ".join(
        f"--specs {' '.join(str(Path(x).relative_to(ROOT)) if x.startswith(str(ROOT)) else x for x in args.specs)}"
        .split()) + (f" --samples {args.samples}" if args.samples else "")
    text = section(results, machine(), command)
    print(text)
    if not args.no_write:
        write_section(SECTION, text, Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
