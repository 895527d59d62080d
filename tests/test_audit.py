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
