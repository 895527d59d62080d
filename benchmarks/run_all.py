"""The one command: run every benchmark in benchmarks/ with its default arguments and write
docs/BENCHMARKS.md (each benchmark replaces its own section; the page's intro is rewritten).

    python benchmarks/run_all.py [--out docs/BENCHMARKS.md] [--only NAME ...]

A benchmark is a file benchmarks/bench_*.py with a command line that takes `--out FILE`. Each runs
in its own process (a fresh interpreter: no model or allocator state carried from one to the next),
with OMP_NUM_THREADS=2 unless the environment already sets it.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))


def benchmarks() -> list[Path]:
    return sorted(HERE.glob("bench_*.py"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Run every benchmark and write docs/BENCHMARKS.md.")
    ap.add_argument("--out", default=str(ROOT / "docs" / "BENCHMARKS.md"), help="the page to write (default: %(default)s)")
    ap.add_argument("--only", nargs="*", default=None, help="run only these (e.g. sharing for bench_sharing.py)")
    args = ap.parse_args(argv)

    from _common import ensure_intro

    out = Path(args.out).resolve()
    ensure_intro(out)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    failed = []
    todo = [b for b in benchmarks() if not args.only or b.stem.removeprefix("bench_") in args.only or b.stem in args.only]
    for bench in todo:
        shown = out.relative_to(ROOT) if out.is_relative_to(ROOT) else out  # the doc shows the command
        cmd = [sys.executable, str(bench.relative_to(ROOT)), "--out", str(shown)]
        print(f"== {bench.name}: {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call(cmd, cwd=ROOT, env=env)
        print(f"== {bench.name}: exit {rc} after {time.perf_counter() - t0:.0f} s", flush=True)
        if rc:
            failed.append(bench.name)
    print(f"wrote {out}" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
