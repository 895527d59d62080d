"""Dreams that compare two models (issue 15, the audit game): logit_diff and kl read one soft input
through both models (each with its own W_E), edit_direction reads the edited layer's neurons along
ΔW's top input singular vector. Values are checked against plain forwards, the direction against
torch.linalg.svd of a hand-made ΔW; the CLI writes JSON progress on stderr and stops on --seconds."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import tiny_spec

EDIT_LAYER = 1
EMBED_TOKENS = (5, 6, 7, 8, 40)  # the suspect's embedding rows that the edit also moved


def _load(folder):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lensframe.models.adapters import Adapter, family_for

    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    return Adapter(model, family_for(model.config.model_type)), AutoTokenizer.from_pretrained(folder)


def _planted(seed: int = 0):
    """A unit input direction b [d_mlp], a unit output direction a [d_model] and σ of a rank-one edit."""
    import torch

    g = torch.Generator().manual_seed(seed)
    a, b = torch.randn(32, generator=g), torch.randn(64, generator=g)
    return a / a.norm(), b / b.norm(), 2.5


@pytest.fixture(scope="module")
def suspect(tiny_models, tmp_path_factory) -> Path:
    """The tiny Llama with a planted rank-one edit σ·a bᵀ to layer 1's down_proj ([d_model, d_mlp])
    and a few embedding rows moved (so a two-model dream must embed with each model's own W_E)."""
    import torch

    folder = tmp_path_factory.mktemp("suspect")
    shutil.copytree(tiny_models["llama"], folder, dirs_exist_ok=True)
    adapter, _ = _load(folder)
    a, b, sigma = _planted()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        adapter.layers[EDIT_LAYER].mlp.down_proj.weight += sigma * torch.outer(a, b)
        rows = list(EMBED_TOKENS)
        adapter.embed_weight[rows] += 0.5 * torch.randn(len(rows), adapter.d_model, generator=g)
    adapter.model.save_pretrained(folder)
    return folder


# --- the direction ----------------------------------------------------------------------------

def test_edit_direction_is_the_top_singular_vector_with_the_sign_rule(tiny_models, suspect):
    import torch

    from lensframe.weight_directions import edit_direction, mlp_out_edit_direction

    base, _ = _load(tiny_models["llama"])
    edited, _ = _load(suspect)
    found = mlp_out_edit_direction(edited, base, EDIT_LAYER)
    a, b, sigma = _planted()
    dW = (edited.layers[EDIT_LAYER].mlp.down_proj.weight - base.layers[EDIT_LAYER].mlp.down_proj.weight).detach().double()
    U, S, Vh = torch.linalg.svd(dW)
    # the planted edit is recovered: ΔW = σ a bᵀ, up to the pair's joint sign
    assert found.sigma == pytest.approx(sigma, rel=1e-4) and float(S[0]) == pytest.approx(sigma, rel=1e-4)
    assert found.share == pytest.approx(1.0, abs=1e-4)  # rank one: σ₁ is all of ‖ΔW‖_F
    assert abs(float(found.v.double() @ b.double())) == pytest.approx(1.0, abs=1e-4)
    # the sign rule: u's largest-magnitude entry positive (sklearn's svd_flip), v flipped with it
    s = 1.0 if U[:, 0][U[:, 0].abs().argmax()] > 0 else -1.0
    assert np.allclose(found.v.numpy(), s * Vh[0].numpy(), atol=1e-5)
    assert np.allclose(found.u.numpy(), s * U[:, 0].numpy(), atol=1e-5)
    assert found.u[found.u.abs().argmax()] > 0
    # what the target maximises: u₁ᵀ ΔW k / σ₁ = v₁ᵀ k for any input k
    k = torch.randn(64, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    assert float(found.u.double() @ dW @ k) / found.sigma == pytest.approx(float(found.v.double() @ k), rel=1e-4)
    # the same by the pure function on the matrices
    again = edit_direction(edited.layers[EDIT_LAYER].mlp.down_proj.weight, base.layers[EDIT_LAYER].mlp.down_proj.weight)
    assert torch.equal(again.v, found.v)
    with pytest.raises(ValueError, match="identical"):
        mlp_out_edit_direction(edited, base, 0)  # layer 0 did not change


def test_edit_direction_reads_gpt2_conv1d_in_the_neurons_space(tiny_models):
    """GPT-2's c_proj is a Conv1D [d_mlp, d_model]: the direction is still over the neurons."""
    import torch

    from lensframe.weight_directions import mlp_out_edit_direction

    base, _ = _load(tiny_models["gpt2"])
    edited, _ = _load(tiny_models["gpt2"])
    g = torch.Generator().manual_seed(0)
    b, a = torch.randn(128, generator=g), torch.randn(32, generator=g)
    with torch.no_grad():
        edited.layers[2].mlp.c_proj.weight += torch.outer(b, a)  # ΔW (as [d, d_mlp]) = a bᵀ
    found = mlp_out_edit_direction(edited, base, 2)
    assert found.v.shape == (128,) and found.u.shape == (32,)
    assert abs(float(found.v @ (b / b.norm()))) == pytest.approx(1.0, abs=1e-4)
    assert found.sigma == pytest.approx(float(a.norm() * b.norm()), rel=1e-4)


# --- the values, against plain forwards --------------------------------------------------------

def _plain_compare(base_model, suspect_model, ids, kind, token=None, position=-1):
    """The two-model target on real ids, from two plain forwards (float64 after the logits)."""
    import torch

    with torch.no_grad():
        pa = torch.log_softmax(suspect_model(torch.tensor([ids])).logits[0, position].double(), -1)
        pb = torch.log_softmax(base_model(torch.tensor([ids])).logits[0, position].double(), -1)
    if kind == "logit_diff":
        return float(pa[token] - pb[token])
    return float((pa.exp() * (pa - pb)).sum())


def _plain_soft(base, edited, Z, mask, T, prefix, kind, token=None):
    """The soft input's value by hand: softmax((Z + mask)/T) through each model's own W_E."""
    import torch

    with torch.no_grad():
        soft = torch.softmax((Z + mask) / T, -1)
        embs = []
        for ad in (edited, base):
            e = soft @ ad.embed_weight
            embs.append(torch.cat([ad.embed_weight[prefix], e], 0)[None])
        pa = torch.log_softmax(edited.model(inputs_embeds=embs[0]).logits[0, -1].double(), -1)
        pb = torch.log_softmax(base.model(inputs_embeds=embs[1]).logits[0, -1].double(), -1)
    return float(pa[token] - pb[token]) if kind == "logit_diff" else float((pa.exp() * (pa - pb)).sum())


@pytest.mark.parametrize("kind", ["logit_diff", "kl"])
def test_two_model_targets_equal_plain_forwards(tiny_models, suspect, kind):
    import math

    import torch

    from lensframe.ops.dream import DreamSettings, DreamTarget, allowed_tokens, dream

    base, tok = _load(tiny_models["llama"])
    edited, _ = _load(suspect)
    before = {(i, k): v.clone() for i, ad in enumerate((base, edited)) for k, v in ad.model.state_dict().items()}
    V = edited.embed_weight.shape[0]
    allowed = allowed_tokens(tok, V)
    target = DreamTarget(kind, index=17 if kind == "logit_diff" else None, other="base")
    settings = DreamSettings(steps=30, decay=1.0)  # a fixed T: the soft value alone must rise
    prefix, start = [0], [5, 6, 7, 8]  # the start tokens' rows differ between the models
    trace = dream(edited, start, target, settings, prefix=prefix, allowed=allowed, other=base)
    soft = [s.soft for s in trace.steps[1:]]
    assert max(soft) > soft[0], f"{kind}: the soft value never rose"
    # every snapped text's value is that of two plain forwards on its tokens
    for s in {tuple(s.ids): s for s in trace.steps}.values():
        want = _plain_compare(base.model, edited.model, prefix + s.ids, kind, token=17)
        assert s.snapped == pytest.approx(want, rel=1e-4, abs=1e-6)
    # step 1's soft value: the start's Z through each model's own W_E
    n_allowed = int(allowed.sum())
    L = settings.temp_start * (math.log(settings.init_prob / (1 - settings.init_prob)) + math.log(n_allowed - 1))
    Z = torch.zeros(len(start), V)
    Z[torch.arange(len(start)), torch.tensor(start)] = L
    mask = torch.where(torch.as_tensor(allowed), 0.0, -1e9)
    want = _plain_soft(base, edited, Z, mask, settings.temp_start, prefix, kind, token=17)
    assert trace.steps[1].soft == pytest.approx(want, rel=1e-4, abs=1e-6)
    # and the test can tell: one W_E for both models gives another value
    wrong = _plain_soft(base, base, Z, mask, settings.temp_start, prefix, kind, token=17)
    assert abs(wrong - want) > 1e-3
    # only Z was optimised
    assert all(torch.equal(before[i, k], v) for i, ad in enumerate((base, edited))
               for k, v in ad.model.state_dict().items())
    assert all(p.grad is None for ad in (base, edited) for p in ad.model.parameters())


def test_edit_direction_value_equals_the_neurons_along_v(tiny_models, suspect):
    """The snapped value is down_proj's input at the last position · v (a hook of the test's own)."""
    import torch

    from lensframe.ops.dream import DreamSettings, DreamTarget, allowed_tokens, dream
    from lensframe.weight_directions import mlp_out_edit_direction

    base, tok = _load(tiny_models["llama"])
    edited, _ = _load(suspect)
    v = mlp_out_edit_direction(edited, base, EDIT_LAYER).v
    target = DreamTarget("edit_direction", layer=EDIT_LAYER, direction=tuple(v.tolist()), other="base")
    trace = dream(edited, [9, 10, 11], target, DreamSettings(steps=25, decay=1.0), prefix=[0],
                  allowed=allowed_tokens(tok, edited.embed_weight.shape[0]))
    soft = [s.soft for s in trace.steps[1:]]
    assert max(soft) > soft[0]
    seen = []
    down = edited.layers[EDIT_LAYER].mlp.down_proj
    handle = down.register_forward_pre_hook(lambda mod, args: seen.append(args[0][0, -1].detach().clone()))
    try:
        with torch.no_grad():
            edited.model(torch.tensor([[0] + trace.best.ids]))
    finally:
        handle.remove()
    assert trace.best.snapped == pytest.approx(float(seen[0] @ v), rel=1e-4, abs=1e-6)
    # what it drives: the change along u₁ is σ₁ times the value (ΔW k = σ₁ (v·k) u₁ for rank one)
    found = mlp_out_edit_direction(edited, base, EDIT_LAYER)
    dW = (edited.layers[EDIT_LAYER].mlp.down_proj.weight - base.layers[EDIT_LAYER].mlp.down_proj.weight).detach()
    assert float(found.u @ (dW @ seen[0])) == pytest.approx(found.sigma * trace.best.snapped, rel=1e-3, abs=1e-5)


def test_a_two_model_dream_refuses_a_reference_it_cannot_compare(tiny_models):
    from lensframe.ops.dream import DreamSettings, DreamTarget, dream

    base, _ = _load(tiny_models["llama"])
    with pytest.raises(ValueError, match="reference model"):
        dream(base, [5, 6], DreamTarget("kl", other="base"), DreamSettings(steps=2))


# --- on a board: keys, locks, the view's checks -------------------------------------------------

def _two_model_spec(base: Path, edited: Path, views: str) -> str:
    spec = tiny_spec(base, views)
    return spec.replace(f"model: path:{base}\n",
                        f"models:\n  suspect: {{source: path:{edited}}}\n  base: {{source: path:{base}}}\n")


@pytest.fixture(scope="module")
def pair_board(tiny_models, suspect, tmp_path_factory):
    from lensframe.board import Board

    views = ("  text: {type: text}\n"
             "  dream: {type: dream, model: suspect, target: kl, other: base, start: random, span: 3, steps: 12}\n"
             "  edit: {type: dream, model: suspect, target: edit_direction, start: random, span: 3, steps: 12}")
    board = Board.from_text(_two_model_spec(tiny_models["llama"], suspect, views),
                            cache_dir=tmp_path_factory.mktemp("pair-store"))
    board.compute(progress=False)
    return board


def test_a_two_model_dream_is_stored_under_both_fingerprints(pair_board):
    from lensframe import dreams

    view = pair_board.views["dream"]
    target = view.resolve_target(pair_board, 0, None)
    assert target.kind == "kl" and target.other == "base"
    start = dreams.resolve_start(pair_board, "suspect", target, 3, "random", seed=1)
    first = dreams.run(pair_board, "suspect", target, view.settings(), start)
    key = dreams.dream_key(pair_board, "suspect", target, view.settings(), start)
    assert pair_board.store.has(key)
    # the key names the reference by its fingerprint: another reference is another dream
    fp = pair_board.sources["base"].fingerprint()
    pair_board.sources["base"].fingerprint = lambda: "another model"
    try:
        assert dreams.dream_key(pair_board, "suspect", target, view.settings(), start) != key
    finally:
        pair_board.sources["base"].fingerprint = lambda: fp
    # stored: run again without a forward of either model
    calls = []
    hooks = [pair_board.executor.model(m).model.register_forward_pre_hook(lambda *a: calls.append(1))
             for m in ("suspect", "base")]
    try:
        again = dreams.run(pair_board, "suspect", target, view.settings(), start)
    finally:
        for h in hooks:
            h.remove()
    assert calls == [] and [s.ids for s in again.steps] == [s.ids for s in first.steps]
    assert again.target == target


def test_the_view_labels_and_resolves_the_comparing_targets(pair_board):
    from lensframe import dreams
    from lensframe.views.dream import DreamView, target_label, value_label

    kl = pair_board.views["dream"]
    assert target_label(kl.resolve_target(pair_board, 0, None), "suspect") == "KL(suspect ‖ base) of the next token"
    tok = pair_board.executor.model("suspect").tokenizer
    word = next(w for w in (" the", " cat", " is") if len(tok(w, add_special_tokens=False)["input_ids"]) == 1)
    params = DreamView.Params(model="suspect", target="logit_diff", other="base", token=word, start="random")
    view = DreamView("d", params, "suspect")
    view.infos = pair_board.infos
    target = view.resolve_target(pair_board, 0, None)
    assert view.label(target) == f"log p(suspect) − log p(base) of {word!r}"
    assert value_label(target, "suspect") == "log p(suspect) − log p(base) (nats)"
    assert target.index == tok(word, add_special_tokens=False)["input_ids"][0]
    bad = DreamView("d", params.model_copy(update={"token": "The cat sat on the mat"}), "suspect")
    bad.infos = pair_board.infos
    with pytest.raises(dreams.DreamError, match="is 9 tokens for this tokenizer .*; a logit_diff target needs exactly one"):
        bad.resolve_target(pair_board, 0, None)
    edit = DreamView("d", DreamView.Params(model="suspect", target="edit_direction", start="random"), "suspect")
    edit.infos = pair_board.infos  # `other` defaults to the spec's other model
    target = edit.resolve_target(pair_board, EDIT_LAYER, None)
    assert target.other == "base" and len(target.direction) == 64
    assert edit.label(target) == "layer 1 MLP neurons along ΔW's top input direction (base → suspect)"
    with pytest.raises(dreams.DreamError, match="identical"):
        edit.resolve_target(pair_board, 0, None)  # layer 0's MLP did not change
    given = edit.resolve_target(pair_board, 0, None, direction=[1.0] * 64)  # no base needed
    assert given.other is None and edit.label(given) == "layer 0 MLP neurons along a given direction"


def _render(board, view_id, **focus):
    from lensframe.context import ViewContext
    from lensframe.focus import Focus
    from lensframe.server.app import render_view

    view = board.views[view_id]
    card = render_view(view, ViewContext(board, Focus(**focus), view))
    assert "lf-error-card" not in card.css_classes, getattr(card, "object", card)
    return "".join(getattr(o, "object", "") or "" for o in card.objects if isinstance(getattr(o, "object", None), str))


def test_the_view_draws_the_comparing_targets(pair_board):
    html = _render(pair_board, "dream")
    assert "KL(suspect ‖ base) of the next token" in html and "lf-error" not in html
    html = _render(pair_board, "edit", layer=EDIT_LAYER)
    assert "layer 1 MLP neurons along ΔW&#x27;s top input direction (base → suspect)" in html, html
    html = _render(pair_board, "edit", layer=0)  # an unchanged layer: said, not a traceback
    assert "lf-error" in html and "identical" in html and "model_diff lists them" in html


@pytest.mark.parametrize("params, where, message", [
    ("target: kl", "other", "target: kl compares two models, and the spec has one"),
    ("target: logit_diff, token: ' the'", "other", "compares two models, and the spec has one"),
    ("target: neuron, other: main", "other", "`other` is for the targets that compare models"),
    ("target: neuron, flip: true", "flip", "`flip` is for target: edit_direction"),
    ("target: kl, start: random, other: mian", "other", "unknown model 'mian'"),
])
def test_one_model_spec_errors_name_the_line(tiny_models, tmp_path, params, where, message):
    _expect_plan_error(tmp_path, tiny_spec(tiny_models["llama"], f"  text: {{type: text}}\n  dream: {{type: dream, {params}}}"),
                       where, message)


@pytest.mark.parametrize("params, where, message", [
    ("target: kl, start: random, other: suspect", "other", "compares model 'suspect' with itself"),
    ("target: logit_diff, start: random", "token", "target: logit_diff needs a token"),
    ("target: edit_direction", "start", "start: example needs target: neuron"),
])
def test_two_model_spec_errors_name_the_line(tiny_models, suspect, tmp_path, params, where, message):
    _expect_plan_error(tmp_path, _two_model_spec(tiny_models["llama"], suspect, "  text: {type: text}\n"
                       f"  dream: {{type: dream, model: suspect, {params}}}"), where, message)


def _expect_plan_error(tmp_path, text, where, message):
    import contextlib
    import io

    from lensframe.cli import main

    spec = tmp_path / "s.yaml"
    spec.write_text(text)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(["plan", str(spec)]) == 2
    out = err.getvalue()
    line = next(i for i, l in enumerate(spec.read_text().splitlines(), 1) if "type: dream" in l)
    assert f"s.yaml:{line}:" in out and f"views.dream.{where}" in out and message in out, out


# --- the command line ---------------------------------------------------------------------------

def _cli(*args):
    cmd = [sys.executable, "-m", "lensframe", "dream", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def pair_spec(tiny_models, suspect, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("pair-cli")
    path = folder / "spec.yaml"
    path.write_text(_two_model_spec(tiny_models["llama"], suspect, "  text: {type: text}"))
    return path


def test_cli_json_progress_on_stderr_and_the_result_on_stdout(pair_spec, tiny_models, suspect):
    tok = _load(suspect)[1]
    word = next(w for w in (" the", " cat", " is") if len(tok(w, add_special_tokens=False)["input_ids"]) == 1)
    r = _cli(pair_spec, "--model", "suspect", "--target", "logit-diff", "--token", word, "--other", "base",
             "--span", 3, "--steps", 12, "--every", 5, "--json", "--cache-dir", pair_spec.parent / "store")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    lines = [json.loads(l) for l in r.stderr.splitlines() if l.startswith("{")]
    assert [l["step"] for l in lines] == [0, 5, 10, 12]
    assert lines[0]["soft"] is None and all(isinstance(l["text"], str) for l in lines)
    assert lines[-1]["best"] == pytest.approx(out["best"]["snapped"])
    assert out["kind"] == "logit_diff" and out["other"] == "base" and out["steps_run"] == 12
    assert out["target"] == f"log p(suspect) − log p(base) of {word!r}"
    assert not out["stopped"] and not out["out_of_time"]
    # the reported best equals two plain forwards on its tokens
    base_model, suspect_model = _load(tiny_models["llama"])[0].model, _load(suspect)[0].model
    token = tok(word, add_special_tokens=False)["input_ids"][0]
    prefix = tok("", add_special_tokens=True)["input_ids"]
    want = _plain_compare(base_model, suspect_model, prefix + out["best"]["ids"], "logit_diff", token=token)
    assert out["best"]["snapped"] == pytest.approx(want, rel=1e-4, abs=1e-6)


def test_cli_seconds_stops_with_the_best_so_far(pair_spec):
    r = _cli(pair_spec, "--model", "suspect", "--target", "edit-direction", "--layer", EDIT_LAYER, "--span", 3,
             "--steps", 1_000_000, "--seconds", 1, "--json", "--every", 1000, "--cache-dir", pair_spec.parent / "store")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["stopped"] and out["out_of_time"] and out["budget_s"] == 1
    assert 0 < out["steps_run"] < 1_000_000 and 0.9 < out["seconds"] < 30
    assert out["target"] == "layer 1 MLP neurons along ΔW's top input direction (base → suspect)"
    assert out["best"]["snapped"] >= out["start"]["snapped"]
    last = json.loads(r.stderr.strip().splitlines()[-1])
    assert last["step"] == out["steps_run"]  # the last step is always reported


@pytest.mark.parametrize("args, message", [
    (("--target", "kl", "--other", "suspect"), "--other: compares model 'suspect' with itself"),
    (("--target", "kl", "--other", "bsae"), "--other: no model 'bsae' to compare with"),
    (("--target", "edit-direction"), "--target edit-direction needs --layer"),
    (("--target", "logit-diff", "--token", "The cat sat on the mat"), "a logit_diff target needs exactly one"),
    (("--target", "neuron", "--layer", 0, "--neuron", 1, "--other", "base"), "--other is for --target"),
    (("--target", "kl", "--seconds", 0), "--seconds must be positive"),
    (("--target", "kl", "--flip"), "--flip is for --target edit-direction (target is kl)"),
])
def test_cli_comparing_errors_are_clear(pair_spec, args, message):
    r = _cli(pair_spec, "--model", "suspect", *args)
    assert r.returncode == 2, r.stdout + r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr


def test_flip_raises_the_other_side(pair_board):
    from lensframe import dreams
    from lensframe.ops.dream import evaluate

    plus = dreams.edit_target(pair_board, "suspect", "base", EDIT_LAYER)
    minus = dreams.edit_target(pair_board, "suspect", "base", EDIT_LAYER, flip=True)
    assert minus.sign == -1 and minus.direction == plus.direction
    assert minus.label("suspect") == "layer 1 MLP neurons along −ΔW's top input direction (base → suspect)"
    import torch

    ids = torch.tensor([[0, 9, 10, 11]])
    adapter = pair_board.executor.model("suspect").adapter
    assert evaluate(adapter, ids, minus)[0] == pytest.approx(-evaluate(adapter, ids, plus)[0], rel=1e-6)
    view = pair_board.views["edit"]
    start = dreams.resolve_start(pair_board, "suspect", plus, 3, "random")
    assert dreams.dream_key(pair_board, "suspect", plus, view.settings(), start) != \
        dreams.dream_key(pair_board, "suspect", minus, view.settings(), start)


def test_both_models_locked_without_deadlock(pair_board):
    """A thread holding the base's lock and then waiting for the suspect's (the other order) does
    not deadlock a two-model dream's lock: it lets go and tries again."""
    import threading
    import time

    from lensframe.dreams import ModelsLock

    ex = pair_board.executor
    holding, done = threading.Event(), []

    def other_order():
        with ex.model_lock("base"):
            holding.set()
            time.sleep(0.2)  # the dream's lock takes the suspect's meanwhile
            with ex.model_lock("suspect"):
                done.append("other")

    def dream_step():
        holding.wait(5)
        with ModelsLock(pair_board, ["suspect", "base"]):
            done.append("dream")

    threads = [threading.Thread(target=f, daemon=True) for f in (other_order, dream_step)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(done) == ["dream", "other"], f"deadlocked: {done}"


def test_cli_edit_direction_from_a_file_needs_no_base(pair_spec, tiny_models, tmp_path):
    """A direction found without the base (e.g. by the layer finder) is dreamed as given."""
    _, b, _ = _planted()
    path = tmp_path / "v.json"
    path.write_text(json.dumps(b.tolist()))
    r = _cli(pair_spec, "--model", "suspect", "--target", "edit-direction", "--layer", EDIT_LAYER, "--direction-file",
             path, "--span", 3, "--steps", 8, "--json", "--cache-dir", pair_spec.parent / "store")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["kind"] == "edit_direction" and out["other"] is None
    assert out["target"] == "layer 1 MLP neurons along a given direction"
    path.write_text(json.dumps([1.0] * 3))
    r = _cli(pair_spec, "--model", "suspect", "--target", "edit-direction", "--layer", EDIT_LAYER, "--direction-file", path)
    assert r.returncode == 2 and "--direction-file: need 64 finite numbers" in r.stderr
