"""How long `lensframe validate` takes, the check a pre-commit hook or CI runs on specs: the full
check (files, columns, model configs, pins; no weights, no torch) against `--schema-only` (the
spec file alone) and against `plan` (the same checks, then the compile, with torch imported), each
a fresh process as a hook would start it, on every example spec at once.

    python benchmarks/bench_validate.py [--repeats 7] [--out docs/BENCHMARKS.md]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))


def timed(argv: list[str], repeats: int) -> float:
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "lensframe", *argv], cwd=ROOT, capture_output=True, text=True)
        runs.append(time.perf_counter() - t0)
        if out.returncode != 0:
            raise SystemExit(f"lensframe {' '.join(argv)} failed:\n{out.stderr}")
    return statistics.median(runs)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out", default=None, help="write the section of this page (docs/BENCHMARKS.md)")
    args = ap.parse_args(argv)
    from _common import machine, write_section

    specs = [str(p.relative_to(ROOT)) for p in sorted((ROOT / "specs").glob("*.yaml"))]
    # `plan` checks one spec per process; the others check them all at once: per spec, plan runs once each
    rows = [("validate --schema-only (the spec files alone)", timed(["validate", "--schema-only", *specs], args.repeats)),
            ("validate (every check that needs no weights)", timed(["validate", *specs], args.repeats)),
            ("plan, one process per spec (the checks + compile, torch imported)",
             sum(timed(["plan", s], max(1, args.repeats // 3)) for s in specs))]
    base = rows[1][1]
    m = machine()
    lines = [f"`python benchmarks/bench_validate.py --repeats {args.repeats}`, {date.today()}, {m['cores']} cores "
             f"({m['cpu']}), load {m['load']}. The {len(specs)} example specs; each command is a fresh process, the "
             "median of the runs. The ratio is against `validate` in the same run.", "",
             "| command | seconds | ÷ validate |", "|---|---|---|"]
    for name, s in rows:
        lines.append(f"| {name} | {s:.2f} | {s / base:.2f}× |")
        print(f"{name}: {s:.2f} s ({s / base:.2f}× validate)")
    if args.out:
        write_section("Validating specs (a pre-commit check)", "\n".join(lines), Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
