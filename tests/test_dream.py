"""Text deep dream: the optimiser finds a known answer, touches only Z, works on every adapter family,
stores and reuses its result, and refuses bad targets with clear messages (CLI exit 2)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import tiny_spec

WIRED_LAYER, WIRED_NEURON, WIRED_TOKEN = 0, 3, 42
FAST = dict(steps=300, warmup=30, decay=0.98)  # anneals to the floor within the budget


def _load(folder):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lensframe.models.adapters import Adapter, family_for

    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    return Adapter(model, family_for(model.config.model_type)), AutoTokenizer.from_pretrained(folder)


@pytest.fixture(scope="module")
def wired_model(tiny_models, tmp_path_factory) -> Path:
    """The tiny GPT-2 with neuron 0.3 wired to fire on token 42 at the last of 3 positions.

    Layer 0's attention writes nothing (c_proj = 0), so its MLP reads u_v = LN(wte[v] + wpe[2]) of
    the current token v alone. The neuron's input row is 2·u_42 / |u_42| with bias +12, so its
    activation gelu(12 + 2·|u_v|·cos(u_v, u_42)) is monotone in that cosine over its whole range
    (|u_v| = sqrt(32) after the layer norm): largest at v = 42, far below it for the other (random)
    embeddings, and with no second basin for the optimiser to fall into. (A gated SiLU neuron,
    silu(a)·a, has one at a ≈ -1.3, which a dream from random tokens does fall into.)"""
    import torch

    folder = tmp_path_factory.mktemp("wired")
    shutil.copytree(tiny_models["gpt2"], folder, dirs_exist_ok=True)
    adapter, _ = _load(folder)
    m = adapter.model
    with torch.no_grad():
        block = m.transformer.h[WIRED_LAYER]
        block.attn.c_proj.weight.zero_()
        block.attn.c_proj.bias.zero_()
        u = block.ln_2(m.transformer.wte.weight[WIRED_TOKEN] + m.transformer.wpe.weight[2])
        block.mlp.c_fc.weight[:, WIRED_NEURON] = 2.0 * u / u.norm()  # Conv1D: [d_model, d_mlp]
        block.mlp.c_fc.bias[WIRED_NEURON] = 12.0
    m.save_pretrained(folder)
    return folder


def test_temperature_schedule_follows_methods_defaults():
    from lensframe.ops.dream import DreamSettings

    s = DreamSettings()
    assert (s.lr, s.temp_start, s.warmup, s.decay, s.temp_floor) == (0.1, 2.0, 200, 0.9995, 0.1)
    assert s.temperature(0) == s.temperature(200) == 2.0
    assert s.temperature(1200) == pytest.approx(2.0 * 0.9995 ** 1000)
    assert s.temperature(100_000) == 0.1


def test_dream_finds_the_wired_token_from_random_tokens(wired_model):
    from lensframe.ops.dream import DreamSettings, DreamTarget, allowed_tokens, dream, evaluate

    adapter, tok = _load(wired_model)
    import torch

    # the wiring works: token 42 at the last position beats every other token there
    V = adapter.embed_weight.shape[0]
    allowed = allowed_tokens(tok, V)
    target = DreamTarget("neuron", WIRED_LAYER, WIRED_NEURON)
    candidates = torch.tensor([[5, 6, v] for v in range(V)])
    values = evaluate(adapter, candidates, target)
    assert int(np.argmax(np.where(allowed, values, -np.inf))) == WIRED_TOKEN

    start = [int(x) for x in np.random.default_rng(0).choice(np.flatnonzero(allowed), 3)]
    assert WIRED_TOKEN not in start
    trace = dream(adapter, start, target, DreamSettings(**FAST), allowed=allowed)
    best = trace.best
    assert best.ids[-1] == WIRED_TOKEN, f"snapped {best.ids} after {len(trace.steps) - 1} steps"
    assert best.snapped == pytest.approx(float(values[WIRED_TOKEN]), rel=1e-4)
    assert trace.steps[-1].temperature == pytest.approx(0.1)
    assert trace.top_ids[-1, 0] == WIRED_TOKEN  # the soft tokens converged on it too


@pytest.mark.parametrize("kind", ["gpt2", "llama", "neox"])
def test_gradients_flow_only_into_z_on_every_family(tiny_models, kind):
    """The same optimiser on the three adapter families, for all three kinds of target; the
    weights are bit-identical afterwards and no parameter ever received a gradient."""
    import torch

    from lensframe.ops.dream import DreamSettings, DreamTarget, allowed_tokens, dream

    adapter, tok = _load(tiny_models[kind])
    before = {k: v.clone() for k, v in adapter.model.state_dict().items()}
    allowed = allowed_tokens(tok, adapter.embed_weight.shape[0])
    d = torch.randn(adapter.d_model, generator=torch.Generator().manual_seed(0))
    settings = DreamSettings(steps=25, decay=1.0)  # a fixed T: the soft target alone must rise
    for target in (DreamTarget("neuron", 1, 7), DreamTarget("direction", 2, direction=tuple(d.tolist())),
                   DreamTarget("logit", index=17)):
        trace = dream(adapter, [5, 6, 7, 8], target, settings, allowed=allowed)
        soft = [s.soft for s in trace.steps[1:]]
        assert len(soft) == 25 and max(soft) > soft[0], f"{kind} {target.kind}: the soft target never rose"
        assert all(allowed[i] for s in trace.steps for i in s.ids)
    assert all(torch.equal(before[k], v) for k, v in adapter.model.state_dict().items())
    assert all(p.grad is None for p in adapter.model.parameters())


@pytest.fixture(scope="module")
def wired_board(wired_model, tmp_path_factory):
    from lensframe.board import Board

    views = ("  top: {type: top_examples, layers: [0], k: 3}\n"
             "  dream: {type: dream, layers: [0], k: 3, span: 4, steps: 40, temperature: {warmup: 5, decay: 0.9}}")
    board = Board.from_text(tiny_spec(wired_model, views), cache_dir=tmp_path_factory.mktemp("dream-store"))
    board.compute(progress=False)
    return board


def test_the_dream_view_shares_the_top_examples_node(wired_board):
    ops = [p.node.op for p in wired_board.plan.nodes.values()]
    assert ops.count("neuron_top_examples") == 1


def test_example_start_ends_at_the_peak_and_scores_the_best_example(wired_board):
    from lensframe import dreams
    from lensframe.ops.dream import DreamTarget, evaluate

    view = wired_board.views["dream"]
    target = DreamTarget("neuron", 0, WIRED_NEURON)
    best = dreams.best_example(wired_board, "main", 0, WIRED_NEURON)
    start = dreams.resolve_start(wired_board, "main", target, 4, "example")
    ids = wired_board.executor.tokens("main")["ids"][best.sample]
    assert start.ids == [int(i) for i in ids[max(0, best.position - 3) : best.position + 1]]
    import torch

    adapter = wired_board.executor.model("main").adapter
    value = evaluate(adapter, torch.tensor([start.prefix + start.ids]), target)[0]
    assert value == pytest.approx(best.value, abs=1e-3)  # layer 0 reads the token alone: context-free
    trace = dreams.run(wired_board, "main", target, view.settings(), start)
    assert trace.steps[0].snapped == pytest.approx(best.value, abs=1e-3)
    assert trace.best.snapped >= trace.steps[0].snapped


def test_a_finished_dream_is_stored_and_reused_without_a_forward(wired_board):
    from lensframe import dreams
    from lensframe.ops.dream import DreamTarget

    view = wired_board.views["dream"]
    target = DreamTarget("neuron", 0, 5)
    start = dreams.resolve_start(wired_board, "main", target, 4, "random", seed=3)
    first = dreams.run(wired_board, "main", target, view.settings(), start)
    model = wired_board.executor.model("main").model
    calls = []
    handle = model.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        again = dreams.run(wired_board, "main", target, view.settings(), start)
        job = dreams.DreamJob(wired_board, "main", target, view.settings(), start).start()
    finally:
        handle.remove()
    assert calls == []
    assert job.from_store and job.done
    assert [s.ids for s in again.steps] == [s.ids for s in first.steps]
    assert np.allclose([s.snapped for s in again.steps], [s.snapped for s in first.steps])
    assert (again.top_ids == first.top_ids).all()
    # other settings are another dream
    other = dreams.stored(wired_board, "main", target, view.settings().__class__(steps=41), start)
    assert other is None


def test_a_stopped_job_keeps_its_steps_and_is_not_stored(wired_board):
    from lensframe import dreams
    from lensframe.ops.dream import DreamSettings, DreamTarget

    target = DreamTarget("neuron", 0, 9)
    settings = DreamSettings(steps=100_000)
    start = dreams.resolve_start(wired_board, "main", target, 4, "text", text="The cat sat on the mat")
    job = dreams.DreamJob(wired_board, "main", target, settings, start).start()
    import time

    deadline = time.time() + 60
    while len(job.steps) < 5 and time.time() < deadline:
        time.sleep(0.05)
    job.stop()
    job.wait(60)
    assert job.done and job.error is None and job.trace.stopped
    assert 5 <= len(job.trace.steps) < 100_000
    assert dreams.stored(wired_board, "main", target, settings, start) is None


def _cli(*args, cwd=None):
    env_cmd = [sys.executable, "-m", "lensframe", "dream", *map(str, args)]
    return subprocess.run(env_cmd, capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def wired_spec(wired_model, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("dream-cli")
    path = folder / "spec.yaml"
    path.write_text(tiny_spec(wired_model, "  text: {type: text}"))
    return path


def test_cli_dream_json(wired_spec):
    r = _cli(wired_spec, "--layer", 0, "--neuron", WIRED_NEURON, "--start", "random", "--span", 3,
             "--steps", 300, "--warmup", 30, "--decay", 0.98, "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["best"]["ids"][-1] == WIRED_TOKEN
    assert len(out["top_tokens"]) == 3 and len(out["top_tokens"][0]) == 5
    assert out["steps_run"] == 300 and out["seconds_per_step"] > 0 and not out["from_store"]
    assert out["best_example"]["value"] > 0  # the CLI indexed the layer's top examples itself
    r = _cli(wired_spec, "--layer", 0, "--neuron", WIRED_NEURON, "--start", "random", "--span", 3,
             "--steps", 300, "--warmup", 30, "--decay", 0.98, "--json")
    assert json.loads(r.stdout)["from_store"] is True


def test_cli_dream_prints_progress_and_a_summary(wired_spec):
    r = _cli(wired_spec, "--layer", 0, "--neuron", WIRED_NEURON, "--steps", 20)
    assert r.returncode == 0, r.stderr
    assert "best dataset example" in r.stdout and "best snapped" in r.stdout and "ms/step" in r.stdout
    assert "20/20" in r.stderr  # the tqdm bar
    assert "top tokens per position" in r.stdout


@pytest.mark.parametrize("args, message", [
    (("--layer", 7, "--neuron", 0), "--layer 7 is beyond the model's depth (3 layers: 0..2)"),
    (("--layer", 0, "--neuron", 128), "--neuron 128 is out of range (128 neurons per layer: 0..127)"),
    (("--layer", 0, "--neuron", 1, "--steps", 0), "--steps: input should be greater than or equal to 1 (got 0)"),
    (("--layer", 0, "--neuron", 1, "--span", 200), "a span of 200 tokens is longer than the model's context (128 positions)"),
    (("--layer", 0), "--target neuron needs --layer and --neuron"),
    (("--target", "logit",), "--target logit needs --token"),
    (("--layer", 0, "--neuron", 1, "--model", "mian"), "--model: no model 'mian'"),
])
def test_cli_dream_errors_are_clear(wired_spec, args, message):
    r = _cli(wired_spec, *args)
    assert r.returncode == 2, r.stdout + r.stderr
    assert message in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("params, where, message", [
    ("span: 500", "span", "a span of 500 tokens is longer than the model's context (128 positions)"),
    ("steps: 0", "steps", "must be >= 1 (got 0)"),
    ("position: 9", "position", "position 9 is outside the input (8 tokens)"),
    ("pin: {neuron: 99}", "pin.neuron", "neuron 99 is out of range"),
    ("pin: {layer: 5}", "pin.layer", "layer 5 is beyond the model's depth"),
    ("target: logit", "token", "target: logit needs a token"),
    ("target: direction", "start", "start: example needs target: neuron"),
])
def test_spec_errors_name_the_line(tiny_models, tmp_path, params, where, message):
    from lensframe.cli import main

    spec = tmp_path / "s.yaml"
    spec.write_text(tiny_spec(tiny_models["llama"], f"  text: {{type: text}}\n  dream: {{type: dream, {params}}}"))
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(["plan", str(spec)]) == 2
    text = err.getvalue()
    line = next(i for i, l in enumerate(spec.read_text().splitlines(), 1) if "type: dream" in l)
    assert f"s.yaml:{line}:" in text and f"views.dream.{where}" in text and message in text, text


def test_board_dream_from_python(wired_board):
    import torch

    with torch.no_grad():  # as a notebook might call it
        trace = wired_board.dream(0, WIRED_NEURON, span=3, start="random", steps=200, warmup=30, decay=0.97)
    assert trace.best.ids[-1] == WIRED_TOKEN and len(trace.steps) == 201
    from lensframe.dreams import DreamError

    with pytest.raises(DreamError, match="steps must be at least 1"):
        wired_board.dream(0, WIRED_NEURON, steps=0)
