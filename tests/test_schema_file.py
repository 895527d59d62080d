"""The JSON Schema editors read (schemas/lensframe.schema.json): equal to what `lensframe schema
--builtin-only` prints, named by every example spec's modeline, accepting every example spec, and
naming the exact bad key of a broken one (a view is checked by its `type`, not by a oneOf)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from lensframe.cli import main

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "schemas" / "lensframe.schema.json"
SPECS = sorted((ROOT / "specs").glob("*.yaml"))
MODELINE = "# yaml-language-server: $schema=../schemas/lensframe.schema.json"

jsonschema = pytest.importorskip("jsonschema")


@pytest.fixture(scope="module")
def validator():
    return jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text()))


def test_the_committed_schema_is_what_lensframe_schema_prints(capsys):
    assert main(["schema", "--builtin-only"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(SCHEMA.read_text()), (
        "schemas/lensframe.schema.json is stale: python -m lensframe schema --builtin-only > schemas/lensframe.schema.json")


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.name)
def test_every_example_spec_names_the_schema_and_is_valid_under_it(spec, validator):
    assert spec.read_text().splitlines()[0] == MODELINE
    errors = list(validator.iter_errors(yaml.safe_load(spec.read_text())))
    assert not errors, [e.message for e in errors]


def bad(validator, data) -> list[tuple[list, str]]:
    return [(list(e.absolute_path), e.message) for e in validator.iter_errors(data)]


def test_a_broken_spec_gets_the_bad_key_named(validator):
    demo = yaml.safe_load((ROOT / "specs" / "demo.yaml").read_text())
    data = json.loads(json.dumps(demo))
    data["views"]["lens"]["top_kk"] = 3
    assert bad(validator, data) == [(["views", "lens"], "Additional properties are not allowed ('top_kk' was unexpected)")]
    data = json.loads(json.dumps(demo))
    data["views"]["lens"]["type"] = "logit_lns"
    ((path, message),) = bad(validator, data)
    assert path == ["views", "lens", "type"] and message.startswith("'logit_lns' is not one of [")
    data = json.loads(json.dumps(demo))
    data["views"]["lens"]["top_k"] = 0
    ((path, message),) = bad(validator, data)
    assert path == ["views", "lens", "top_k"] and "minimum of 1" in message
    data = json.loads(json.dumps(demo))
    data["views"]["lens"]["type"] = "./my_views.py:MyView"  # a local view class: its keys are its own
    data["views"]["lens"]["anything"] = 1
    assert bad(validator, data) == []
