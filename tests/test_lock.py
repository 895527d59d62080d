"""Lock files (lensframe.lock) and spec diffs (lensframe.diff)."""
from __future__ import annotations

import pytest

from tests.conftest import TEXTS


def spec_text(model_dir, views="  lens: {type: logit_lens, top_k: 3}\n") -> str:
    return (f"lensframe: 1\nmodel: path:{model_dir}\ndataset: {{source: txt:data.txt, max_tokens: 16}}\n"
            f"run: {{batch_size: 4}}\nviews:\n{views}")


@pytest.fixture
def spec(tiny_models, tmp_path):
    (tmp_path / "data.txt").write_text("\n".join(TEXTS) + "\n")
    path = tmp_path / "demo.yaml"
    path.write_text(spec_text(tiny_models["gpt2"]))
    return path


def test_a_lock_pins_what_the_store_keys_are_made_of(spec, tiny_models, tmp_path):
    from lensframe import lock
    from lensframe.board import Board

    board = Board.from_file(spec)
    path = lock.write_lock(board)
    assert path.name == "demo.lock" and path not in set(path.parent.glob("*.yaml"))  # no spec glob takes it
    data = lock.read_lock(path)
    assert data["models"]["main"]["fingerprint"] == board.sources["main"].fingerprint()
    assert data["dataset"]["fingerprint"] == board.dataset.fingerprint and data["dataset"]["samples"] == len(TEXTS)
    assert data["ops"]["logit_lens"] == 1 and "tokens" in data["ops"]
    assert lock.check(board, frozen=True) == []
    # a colleague's copy (another folder, the same model and data) resolves to the same lock: the same keys
    other = tmp_path / "colleague"
    other.mkdir()
    (other / "data.txt").write_text((tmp_path / "data.txt").read_text())
    (other / "demo.yaml").write_text(spec.read_text())
    theirs = Board.from_file(other / "demo.yaml")
    assert lock.drift(data, lock.lock_data(theirs)) == []
    assert {p.key for p in theirs.plan.nodes.values()} == {p.key for p in board.plan.nodes.values()}


def test_a_changed_dataset_file_is_reported_and_frozen_refuses(spec):
    from lensframe import lock
    from lensframe.board import Board
    from lensframe.errors import LensframeError

    lock.write_lock(Board.from_file(spec))
    data = spec.parent / "data.txt"
    data.write_text(data.read_text().replace(TEXTS[0], TEXTS[0] + " (edited)"))
    board = Board.from_file(spec)
    lines = lock.check(board)
    assert lines == ["dataset txt:data.txt: changed since the lock (the same number of samples, other content)"]
    with pytest.raises(LensframeError, match="drifted from demo.lock"):
        lock.check(board, frozen=True)


def test_frozen_without_a_lock_is_an_error(spec):
    from lensframe import lock
    from lensframe.board import Board
    from lensframe.errors import LensframeError

    with pytest.raises(LensframeError, match="needs a lock file"):
        lock.check(Board.from_file(spec), frozen=True)
    assert lock.check(Board.from_file(spec)) == []  # without --frozen, no lock is no drift


def test_diff_names_views_data_and_the_results_computed_again(spec, tmp_path):
    from lensframe.board import Board
    from lensframe.diff import format_diff, spec_diff

    b = tmp_path / "b.yaml"
    b.write_text(spec.read_text().replace("top_k: 3", "top_k: 5") + "  top: {type: top_examples, layers: [0], k: 4}\n")
    d = spec_diff(Board.from_file(spec), Board.from_file(b))
    assert d["views"] == ["lens.top_k: 3 -> 5", "+ top (top_examples)"]
    assert d["models"] == [] and d["dataset"] == []
    # top_examples also keeps the neuron activations it places a probe with (kept_focus, within the budget)
    assert sorted(label.split("(")[0] for label in d["recomputed"]) == ["kept_focus", "logit_lens", "neuron_top_examples"]
    assert d["reused"] >= 1  # the tokens are shared
    text = format_diff(d, "demo.yaml", "b.yaml")
    assert "+ top (top_examples)" in text and "results b.yaml computes" in text
    same = spec_diff(Board.from_file(spec), Board.from_file(spec))
    assert "the specs are the same" in format_diff(same, "a", "a") and same["recomputed"] == []


def test_the_command_line_locks_reports_drift_and_frozen_exits_2(spec, capsys):
    from lensframe.cli import main

    assert main(["lock", str(spec)]) == 0
    assert (spec.parent / "demo.lock").is_file() and "wrote" in capsys.readouterr().out
    assert main(["diff", str(spec), str(spec.parent / "demo.lock")]) == 0
    assert "resolves to what" in capsys.readouterr().out
    data = spec.parent / "data.txt"
    data.write_text(data.read_text() + "One more line of text.\n")
    assert main(["compute", str(spec), "--json"]) == 0  # without --frozen: runs, and says what drifted
    err = capsys.readouterr().err
    assert "drift from the lock: dataset txt:data.txt: changed since the lock" in err
    assert main(["compute", str(spec), "--frozen"]) == 2
    err = capsys.readouterr().err
    assert "drifted from demo.lock (--frozen)" in err and "Traceback" not in err
    assert main(["diff", str(spec), str(spec.parent / "demo.lock")]) == 0
    assert "changed since the lock" in capsys.readouterr().out
