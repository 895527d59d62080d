"""The command line on a tiny model: plan, compute --json, validate --normalized, views, schema."""
from __future__ import annotations

import json

from lensframe.cli import main

from .conftest import tiny_spec

VIEWS = "  text: {type: text}\n  lens: {type: logit_lens}\n  attn: {type: attention}\n"


def write_spec(tiny_models, tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(tiny_spec(tiny_models["llama"], VIEWS))
    return str(path)


def test_compute_json_then_warm(tiny_models, tmp_path, capsys):
    spec = write_spec(tiny_models, tmp_path)
    assert main(["compute", spec, "--json"]) == 0
    cold = json.loads(capsys.readouterr().out)
    assert set(cold) >= {"forward_passes", "batches", "cache_hits", "seconds"}
    assert cold["forward_passes"] == cold["batches"] == 3 and cold["cache_hits"] == 0
    assert (tmp_path / ".lensframe" / "cache").is_dir()  # default store: beside the spec
    assert main(["compute", spec, "--json"]) == 0
    warm = json.loads(capsys.readouterr().out)
    assert warm["forward_passes"] == 0 and warm["cache_hits"] == 2


def test_plan_json_shows_sharing_and_cache(tiny_models, tmp_path, capsys):
    spec = write_spec(tiny_models, tmp_path)
    assert main(["plan", spec, "--json", "--cache-dir", str(tmp_path / "c")]) == 0
    plan = json.loads(capsys.readouterr().out)
    tokens = next(n for n in plan["nodes"] if n["op"] == "tokens")
    assert sorted(tokens["views"]) == ["attn", "lens", "text"]
    assert {p["kind"] for p in plan["passes"]} == {"dataset", "focus"}
    assert not any(n["cached"] for n in plan["nodes"])
    assert all(n["estimated_bytes"] > 0 for n in plan["nodes"])
    assert main(["plan", spec]) == 0
    assert "dataset pass on main" in capsys.readouterr().out


def test_validate_normalized_expands_shorthands(tiny_models, tmp_path, capsys):
    import yaml

    spec = write_spec(tiny_models, tmp_path)
    assert main(["validate", spec, "--normalized"]) == 0
    norm = yaml.safe_load(capsys.readouterr().out)
    assert list(norm["models"]) == ["main"] and norm["models"]["main"]["source"].startswith("path:")
    assert norm["views"]["lens"] == {"type": "logit_lens", "pin": {}, "metric": "prob", "top_k": 5,
                                     "stream": "resid_post", "lens": "logit", "decode": "fp32",
                                     "tuned": {"train_tokens": 2048, "steps": 100, "lr": 0.001,
                                               "batch_tokens": 32, "seed": 0}}
    assert norm["layout"] == "text\nlens\nattn\n"


def test_views_and_schema(capsys):
    assert main(["views"]) == 0
    out = capsys.readouterr().out
    assert "logit_lens:" in out and "metric: prob | rank | kl | entropy = prob" in out
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert "views" in schema["properties"] and "view_logit_lens" in schema["$defs"]


def test_serve_watch_reaches_the_server(tiny_models, tmp_path, monkeypatch):
    """`serve --watch` asks the server to watch the spec; without it the server does not watch."""
    import lensframe.server.app as app

    calls = []
    monkeypatch.setattr(app, "serve", lambda board, **kwargs: calls.append((board, kwargs)))
    spec = write_spec(tiny_models, tmp_path)
    assert main(["serve", spec, "--watch", "--cache-dir", str(tmp_path / "c")]) == 0
    assert main(["serve", spec, "--cache-dir", str(tmp_path / "c")]) == 0
    (board, watched), (_, plain) = calls
    assert watched["watch"] is True and plain["watch"] is False
    assert board.spec.file == spec
