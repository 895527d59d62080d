"""The README's set-up on a Python that refuses system installs (PEP 668, as stock Debian 12 and
Ubuntu 24.04 do): a copy of the working tree (what a clean clone holds), a `python3` first on PATH
that answers `python3 -m pip install` with "externally-managed-environment", and the README's two
commands run as written (the server replaced by `validate`, the test run by one quick test).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()

pytestmark = pytest.mark.slow

REFUSING_PYTHON = """#!/bin/sh
# a system Python under PEP 668: pip refuses to install into it
case " $* " in
  *" -m pip install "*) echo "error: externally-managed-environment" >&2; exit 1;;
esac
exec {real} "$@"
"""


def readme_commands() -> tuple[str, str]:
    commands = re.findall(r"```bash\n(.+?)\n```", README)
    serve = next(c for c in commands if "lensframe serve specs/demo.yaml" in c)
    test = next(c for c in commands if "pytest" in c)
    return serve, test


def test_the_readme_setup_works_where_pip_refuses_the_system_python(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    clone = tmp_path / "clone"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, clone / name)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").write_text(REFUSING_PYTHON.format(real=sys.executable))
    (bin_dir / "python3").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    refused = subprocess.run(["python3", "-m", "pip", "install", "tqdm"], env=env, capture_output=True, text=True)
    assert refused.returncode == 1 and "externally-managed-environment" in refused.stderr  # the simulation holds

    serve, test = readme_commands()
    setup, _, served = serve.partition(" && ")
    assert setup == "bash scripts/setup.sh" and served.startswith(".venv/bin/lensframe serve specs/demo.yaml")
    # the test command's set-up (a superset of the demo's), then the demo's command line with
    # `validate` for `serve` (a server never exits), then the test command's runner
    test_setup, _, runner = test.partition(" && ")
    out = subprocess.run(test_setup, shell=True, cwd=clone, env=env, capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "is set up in .venv" in out.stdout
    where = subprocess.run([".venv/bin/python", "-c", "import lensframe; print(lensframe.__file__)"], cwd=clone,
                           env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert where == str(clone / "lensframe" / "__init__.py")  # the clone's code, installed in its .venv
    check = subprocess.run(served.replace(" serve ", " validate ", 1), shell=True, cwd=clone, env=env,
                           capture_output=True, text=True, timeout=300)
    assert check.returncode == 0 and "specs/demo.yaml: ok" in check.stdout, check.stdout + check.stderr
    assert runner.startswith(".venv/bin/python -m pytest")
    quick = subprocess.run(f"{runner} tests/test_readme.py -k ci_runs -p no:cacheprovider", shell=True, cwd=clone,
                           env=env, capture_output=True, text=True, timeout=600)
    assert quick.returncode == 0 and "1 passed" in quick.stdout, quick.stdout[-3000:] + quick.stderr[-3000:]
