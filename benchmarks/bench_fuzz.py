"""The fuzz test's larger run: seeded broken specs and data files (tests/fuzz_specs.py) through
`lensframe validate` and `plan` in this process; every case must end with exit 0 or 2, never a
traceback. Reports the cases, the exits, the slowest case and the process's peak memory, against
the same commands on the unbroken example specs (the baseline).

    python benchmarks/bench_fuzz.py [--cases 2000] [--seed 1] [--out docs/BENCHMARKS.md]
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import io
import resource
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))


def run(argv) -> tuple[object, float, str]:
    from lensframe.cli import main

    out, err = io.StringIO(), io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
        except Exception as exc:  # a traceback: the failure this run looks for
            code = f"{type(exc).__name__}: {exc}"
    return code, time.perf_counter() - t0, err.getvalue()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    from _common import machine, write_section

    from tests.fuzz_specs import SPECS, cases, write_case

    tmp = Path(tempfile.mkdtemp(prefix="lf-fuzz-"))
    base = {"validate": [], "plan": []}
    for spec in SPECS:  # the baseline: the example specs as they are (warm: imports done)
        base["validate"].append(run(["validate", str(spec)])[1])
        base["plan"].append(run(["plan", str(spec), "--cache-dir", str(tmp / "store")])[1])
    exits = {"validate": collections.Counter(), "plan": collections.Counter()}
    slowest = {"validate": (0.0, ""), "plan": (0.0, "")}
    failures, total = [], {"validate": 0.0, "plan": 0.0}
    for i, (name, spec, files) in enumerate(cases(args.cases, seed=args.seed)):
        path = write_case(tmp / name, spec, files)
        for cmd in ("validate", "plan"):
            if cmd == "plan" and i % 3:
                continue
            argv = [cmd, str(path)] + (["--cache-dir", str(tmp / "store")] if cmd == "plan" else [])
            code, s, err = run(argv)
            total[cmd] += s
            ok = code in (0, 2) and "Traceback" not in err
            exits[cmd][code if ok else "failure"] += 1
            slowest[cmd] = max(slowest[cmd], (s, name))
            if not ok:
                failures.append(f"{name} {cmd}: {code}")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    m = machine()
    lines = [f"`python benchmarks/bench_fuzz.py --cases {args.cases} --seed {args.seed}`, {date.today()}, {m['cores']} cores "
             f"({m['cpu']}), load {m['load']}. Mutations of the {len(SPECS)} example specs and of data files "
             "(tests/fuzz_specs.py), in one process; `plan` on every third case. The baseline is the same command on "
             "the unbroken example specs, in the same run.", "",
             "| command | cases | exit 0 | exit 2 | other exit or traceback | mean ms (÷ baseline) | slowest case |",
             "|---|---|---|---|---|---|---|"]
    for cmd in ("validate", "plan"):
        n = sum(exits[cmd].values())
        mean, b = total[cmd] / max(n, 1), sum(base[cmd]) / len(base[cmd])
        lines.append(f"| {cmd} | {n} | {exits[cmd][0]} | {exits[cmd][2]} | {exits[cmd]['failure']} | "
                     f"{1000 * mean:.0f} ({mean / b:.2f}×) | {1000 * slowest[cmd][0]:.0f} ms ({slowest[cmd][1]}) |")
    lines += ["", f"Peak memory of the process (ru_maxrss, imports and all): {peak_mb:.0f} MB."]
    if failures:
        lines += ["", "Failures:", *[f"- {f}" for f in failures[:20]]]
    print("\n".join(lines))
    if args.out:
        write_section("Fuzzing specs and data files", "\n".join(lines), Path(args.out))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
