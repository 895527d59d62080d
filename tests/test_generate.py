"""The generate view and its computation: greedy continuation equals transformers' model.generate
on every tiny family (a dataset sample and a probe, two models in one spec) and on SmolLM2; each
token's probability equals the softmax of a plain forward's logits; sampling is reproducible by
seed and follows softmax(logits / T); a full context and an EOS end a generation as generate()
says; the view marks where two models first diverge, streams from a background job, and a click
on a token extends the focused text so the other views show that position."""
from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from tests.conftest import tiny_spec

N = 12  # new tokens: enough for two tiny models to diverge, quick on CPU


def _models_spec(paths: dict[str, Path], views: str, **kw) -> str:
    """A tiny spec whose `models:` block names each path (the first one's dataset and settings)."""
    first = next(iter(paths.values()))
    block = "models:\n" + "".join(f"  {name}: {{source: 'path:{p}'}}\n" for name, p in paths.items())
    return tiny_spec(first, views, **kw).replace(f"model: path:{first}\n", block)


def _perturbed_copy(src: Path, dst: Path, scale: float = 0.03, seed: int = 1) -> Path:
    """A copy of a tiny Llama with noise on its last MLP: close enough to the original that their
    greedy continuations agree for a few tokens, then part."""
    import torch
    from transformers import AutoModelForCausalLM

    shutil.copytree(src, dst, dirs_exist_ok=True)
    model = AutoModelForCausalLM.from_pretrained(dst)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        w = model.model.layers[-1].mlp.down_proj.weight
        w += torch.randn(w.shape, generator=g) * scale
    model.save_pretrained(dst)
    return dst


def _hf(path: Path):
    """The model loaded independently of lensframe (eager attention, as lensframe loads it)."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager").eval()


def _eos(model) -> set[int]:
    eos = model.generation_config.eos_token_id
    return set(eos if isinstance(eos, list) else [eos]) if eos is not None else set()


def _hf_greedy(model, prompt, n: int) -> list[int]:
    """model.generate's greedy continuation, up to and including its first EOS."""
    import torch

    ids = torch.tensor([list(prompt)])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                         pad_token_id=model.generation_config.pad_token_id)[0, ids.shape[1]:].tolist()
    ends = _eos(model)
    stop = next((i for i, t in enumerate(out) if t in ends), None)
    return out if stop is None else out[: stop + 1]


def _plain_probs(model, prompt, new) -> np.ndarray:
    """Each new token's probability from a full forward (no cache) of everything before it."""
    import torch

    seq = list(prompt) + list(new)
    with torch.no_grad():
        logits = model(torch.tensor([seq]), use_cache=False).logits[0].float()
    probs = torch.softmax(logits, -1)
    return np.array([float(probs[len(prompt) + i - 1, t]) for i, t in enumerate(new)])


@pytest.fixture(scope="module")
def boards(tiny_models, tmp_path_factory):
    """One single-model board per tiny family."""
    from lensframe.board import Board

    out = {}
    for kind, path in tiny_models.items():
        root = tmp_path_factory.mktemp(f"gen-{kind}")
        out[kind] = Board.from_text(tiny_spec(path, "  text: {type: text}\n  gen: {type: generate, tokens: 12}"),
                                    base_dir=root, cache_dir=root / "c")
    return out


@pytest.fixture(scope="module")
def pair(tiny_models, tmp_path_factory):
    """Two models in one spec: the tiny Llama and a perturbed copy of it."""
    from lensframe.board import Board

    root = tmp_path_factory.mktemp("gen-pair")
    paths = {"base": tiny_models["llama"], "noisy": _perturbed_copy(tiny_models["llama"], root / "noisy")}
    views = ("  text: {type: text, model: base}\n  text_b: {type: text, model: noisy}\n"
             f"  gen: {{type: generate, tokens: {N}}}")
    board = Board.from_text(_models_spec(paths, views), base_dir=root, cache_dir=root / "c")
    board.paths = paths
    return board


@pytest.mark.parametrize("kind", ["gpt2", "llama", "neox"])
def test_greedy_equals_model_generate_on_a_sample_and_a_probe(boards, tiny_models, kind):
    from lensframe.generate import generate
    from lensframe.probes import Probe

    board, hf = boards[kind], _hf(tiny_models[kind])
    for subject in (0, 5, Probe("The cat")):
        prompt = board.executor.sample_ids("main", subject)
        res = generate(board.executor, "main", subject, N)
        want = _hf_greedy(hf, prompt, N)
        assert res["ids"].tolist() == want, (kind, subject)
        assert res.meta["prompt_len"] == len(prompt)
        assert res.meta["stopped"] == ("eos" if want[-1] in _eos(hf) else "length")
        np.testing.assert_array_equal(res["sample_probs"], 1.0)  # greedy: drawn from a point mass


@pytest.mark.parametrize("kind", ["gpt2", "llama", "neox"])
def test_probabilities_are_the_softmax_of_a_plain_forward(boards, tiny_models, kind):
    from lensframe.generate import generate
    from lensframe.probes import Probe

    board, hf = boards[kind], _hf(tiny_models[kind])
    for subject in (2, Probe("Never trust a")):
        prompt = board.executor.sample_ids("main", subject)
        res = generate(board.executor, "main", subject, N)
        np.testing.assert_allclose(res["probs"], _plain_probs(hf, prompt, res["ids"]), rtol=1e-4, atol=1e-5)
        assert (res["probs"] > 0).all() and (res["probs"] <= 1).all()


def test_greedy_equals_model_generate_for_two_models_in_one_spec(pair):
    from lensframe.generate import generate
    from lensframe.probes import Probe

    for name in ("base", "noisy"):
        hf = _hf(pair.paths[name])
        for subject in (0, Probe("The cat")):
            res = generate(pair.executor, name, subject, N)
            assert res["ids"].tolist() == _hf_greedy(hf, pair.executor.sample_ids(name, subject), N), (name, subject)


def test_sampling_is_reproducible_differs_by_seed_and_follows_the_tempered_softmax(boards, tiny_models):
    import torch

    from lensframe.generate import generate
    from lensframe.probes import Probe

    board, hf, probe, T = boards["llama"], _hf(tiny_models["llama"]), Probe("The law is"), 1.5
    a = generate(board.executor, "main", probe, N, temperature=T, seed=3)
    board.executor.generations.clear()  # compute it again, not from the memo
    again = generate(board.executor, "main", probe, N, temperature=T, seed=3)
    other = generate(board.executor, "main", probe, N, temperature=T, seed=4)
    assert a["ids"].tolist() == again["ids"].tolist()
    assert a["ids"].tolist() != other["ids"].tolist()
    assert a.meta["temperature"] == T and a.meta["seed"] == 3
    # independently: the same seeded draws from softmax(plain forward's logits / T), token by token
    g, prompt = torch.Generator().manual_seed(3), list(board.executor.sample_ids("main", probe))
    seq = list(prompt)
    for i, token in enumerate(a["ids"]):
        with torch.no_grad():
            logits = hf(torch.tensor([seq]), use_cache=False).logits[0, -1].float()
        tempered = torch.softmax(logits / T, -1)
        assert int(torch.multinomial(tempered, 1, generator=g)) == token
        assert a["sample_probs"][i] == pytest.approx(float(tempered[token]), abs=1e-5)
        assert a["probs"][i] == pytest.approx(float(torch.softmax(logits, -1)[token]), abs=1e-5)
        seq.append(int(token))
    assert len(seq) == len(prompt) + len(a["ids"])


def test_memoized_and_not_counted_as_focus_forwards(boards):
    from lensframe.generate import generate, generation_steps, memoized

    ex = boards["gpt2"].executor
    ex.generations.clear()
    passes, steps = ex.forward_passes, generation_steps(ex)
    assert memoized(ex, "main", 6, 7) is None
    first = generate(ex, "main", 6, 7)
    # one forward of the prompt gives the first token, one per token after it; none is a focus pass
    assert generation_steps(ex) - steps == len(first["ids"]) and ex.forward_passes == passes
    seen = []
    again = generate(ex, "main", 6, 7, on_token=lambda i, t, p: seen.append((i, t, p)))
    assert again is first and generation_steps(ex) - steps == len(first["ids"])
    assert [t for _, t, _ in seen] == first["ids"].tolist()  # a memo hit still streams its tokens
    # greedy ignores the seed: one entry
    assert generate(ex, "main", 6, 7, seed=9) is first


def test_a_full_context_and_an_eos_end_the_generation(boards):
    import dataclasses

    from lensframe.generate import GenerateError, generate

    board = boards["neox"]
    ex, loaded = board.executor, board.executor.model("main")
    prompt = ex.sample_ids("main", 1)
    full = generate(ex, "main", 1, 8)
    assert full.meta["stopped"] == "length" and len(full["ids"]) == 8  # (the random model says no EOS here)
    info = loaded.info
    try:  # a context of prompt + 3 positions (the real one, 128, would take 112 steps to fill)
        loaded.info = dataclasses.replace(info, max_positions=len(prompt) + 3)
        ex.generations.clear()
        res = generate(ex, "main", 1, 8)
        assert res.meta["stopped"] == "context" and res["ids"].tolist() == full["ids"][:3].tolist()
        loaded.info = dataclasses.replace(info, max_positions=len(prompt))
        ex.generations.clear()
        with pytest.raises(GenerateError, match="fills the model's context"):
            generate(ex, "main", 1, 8)
    finally:
        loaded.info = info
    # make the greedy continuation's third token an EOS: both loops stop there, and say so
    config = loaded.model.generation_config
    saved = config.eos_token_id
    config.eos_token_id = int(full["ids"][2])
    try:
        ex.generations.clear()
        res = generate(ex, "main", 1, 8)
        assert res.meta["stopped"] == "eos" and len(res["ids"]) == 3
        assert res["ids"].tolist() == _hf_greedy(loaded.model, prompt, 8)
    finally:
        config.eos_token_id = saved
        ex.generations.clear()


def test_stop_ends_a_job_and_it_is_not_memoized(boards):
    from lensframe.generate import GenerateJob, generate, memoized

    ex = boards["llama"].executor
    job = GenerateJob(ex, "main", 7, 40)
    job.stop()  # before its first step
    job.run()
    assert job.done and job.error is None and job.result.meta["stopped"] == "stopped" and job.ids == []
    assert memoized(ex, "main", 7, 40) is None
    streamed = GenerateJob(ex, "main", 7, 40).start()
    streamed.wait(60)
    assert streamed.done and streamed.error is None
    assert streamed.ids == generate(ex, "main", 7, 40)["ids"].tolist()
    assert streamed.probs == pytest.approx(generate(ex, "main", 7, 40)["probs"].tolist())
    again = GenerateJob(ex, "main", 7, 40).start()  # memoized: done at once, no thread
    assert again.done and again._thread is None and again.ids == streamed.ids and again.result is not None


def test_first_divergence_by_ids_and_by_text():
    from lensframe.generate import first_divergence

    same = {"a": ([1, 2, 3], ["x", "y", "z"]), "b": ([1, 2, 4], ["x", "y", "w"])}
    assert first_divergence(same, True) == {"a": 2, "b": 2}
    assert first_divergence({"a": ([1, 2], ["x", "y"]), "b": ([1, 2], ["x", "y"])}, True) is None
    # one ended (EOS) where the other goes on: they differ there; still running: not yet
    ended = {"a": ([1, 2], ["x", "y"]), "b": ([1, 2, 5], ["x", "y", "v"])}
    assert first_divergence(ended, True, {"a": True, "b": True}) == {"a": 2, "b": 2}
    assert first_divergence(ended, True, {"a": False, "b": True}) is None
    # different tokenizers: the first different character, and the token holding it in each
    texts = {"a": ([7, 8], [" the", " cat"]), "b": ([1, 2, 3], [" th", "e", " dog"])}
    assert first_divergence(texts, False) == {"a": 1, "b": 2}


def _render(board, view_id, focus=None):
    from lensframe.context import ViewContext
    from lensframe.server.app import render_view

    view = board.views[view_id]
    ctx = ViewContext(board, focus or board.focus, view)
    card = render_view(view, ctx)
    assert "lf-error-card" not in card.css_classes, getattr(card, "object", card)
    return card, ctx


def _parts(card):
    from lensframe.views.generate import gen_strip

    strip = next(o for o in card.objects if isinstance(o, gen_strip()))
    html = "".join(getattr(o, "object", "") or "" for o in card.objects if o is not strip)
    return strip, html


def test_the_view_marks_where_two_models_first_diverge(pair):
    from lensframe.focus import Focus

    hf = {m: _hf(p) for m, p in pair.paths.items()}
    focus = Focus(model="base", sample=0)
    card, ctx = _render(pair, "gen", focus)
    assert "lf-view-generate" in card.css_classes
    strip, html = _parts(card)
    want = {m: _hf_greedy(hf[m], pair.executor.sample_ids(m, 0), N) for m in hf}
    k = next(i for i, (x, y) in enumerate(zip(want["base"], want["noisy"])) if x != y)
    assert 0 < k < N  # the perturbed copy agrees for a while: the mark is not trivially at 0
    assert [r["model"] for r in strip.rows] == ["base", "noisy"]
    for row in strip.rows:
        assert [t["id"] for t in row["tokens"]] == want[row["model"]]
        assert [i for i, t in enumerate(row["tokens"]) if t["diverge"]] == [k]
        assert row["state"] == "done" and len(row["prompt"]) == 6  # the prompt's last tokens, greyed
        assert all(0 < t["prob"] <= 1 for t in row["tokens"])
    assert "data-state='done'" in html and "lf-gen-status" in html
    assert f"first divergence at new token <b class='lf-gen-diverge-at'>{k}</b>" in html
    assert "greedy" in html and "sample <b class='lf-sample-index'>0</b>" in html
    assert "own next-token distribution" in html
    for cls in ("lf-gen-token", "lf-gen-diverge", "data-index", "dataset.model"):  # what the page draws
        assert cls.replace("data-index", "dataset.index") in strip._esm


def test_the_view_streams_from_a_job_and_polls_until_done(pair):
    """Served (a document to stream to): generation runs in a background job and a periodic
    callback redraws until it ends, then stops; the result is the synchronous one's."""
    import panel as pn
    from bokeh.document import Document

    from lensframe.focus import Focus
    from lensframe.generate import generate
    from lensframe.probes import Probe

    probe = Probe("Love is a")
    pair.executor.generations.clear()
    focus = Focus(model="base", text=probe.text)
    pn.state.curdoc = Document()
    try:
        card, ctx = _render(pair, "gen", focus)
        jobs = ctx.state["jobs"]
        for job in jobs.values():
            job.wait(60)
        poll = ctx.state["poll"]
        assert poll is not None
        poll.callback()  # the periodic callback's tick after the jobs ended
        assert ctx.state["poll"] is None
    finally:
        pn.state.curdoc = None
    strip, html = _parts(card)
    assert "data-state='done'" in html and "probe <b class='lf-probe-name'>" in html
    for row in strip.rows:
        assert [t["id"] for t in row["tokens"]] == generate(pair.executor, row["model"], probe, N)["ids"].tolist()


def test_a_sampled_view_says_so_and_its_settings_are_validated(tiny_models, tmp_path):
    from lensframe.board import Board
    from lensframe.errors import SpecError

    spec = tiny_spec(tiny_models["gpt2"], "  gen: {type: generate, tokens: 5, temperature: 0.8, seed: 2}")
    board = Board.from_text(spec, base_dir=tmp_path, cache_dir=tmp_path / "c")
    card, _ = _render(board, "gen")
    strip, html = _parts(card)
    assert "sampled (T=0.8, seed 2)" in html and len(strip.rows) == 1 and len(strip.rows[0]["tokens"]) <= 5
    bad = _models_spec({"a": tiny_models["gpt2"], "b": tiny_models["llama"]},
                       "  gen: {type: generate, models: [a, bb, a]}")
    with pytest.raises(SpecError) as err:
        Board.from_text(bad, base_dir=tmp_path, cache_dir=tmp_path / "c2")
    text = str(err.value)
    assert "views.gen.models.1: unknown model 'bb'" in text and "did you mean 'b'" in text
    assert "listed twice" in text
    with pytest.raises(SpecError, match="tokens"):
        Board.from_text(tiny_spec(tiny_models["gpt2"], "  gen: {type: generate, tokens: 0}"), base_dir=tmp_path)


def test_clicking_a_token_extends_the_focused_text_for_every_view(pair):
    from lensframe.focus import Focus
    from lensframe.generate import REPLACEMENT
    from lensframe.probes import Probe

    focus = Focus(model="base", text="The cat")
    card, ctx = _render(pair, "gen", focus)
    strip, _ = _parts(card)
    row = next(r for r in strip.rows if r["model"] == "noisy")
    k = 3
    for callback in strip._msg__callbacks:  # what a click's message from the browser runs
        callback(SimpleNamespace(data={"model": "noisy", "index": k}))
    tok = pair.executor.model("noisy").tokenizer
    prompt = pair.executor.sample_ids("noisy", Probe("The cat")).tolist()
    ids = [t["id"] for t in row["tokens"]]
    upto = tok.decode(prompt + ids[: k + 1], skip_special_tokens=True)
    assert focus.text.startswith(upto) and upto.startswith("The cat")
    if not upto.endswith(REPLACEMENT):  # else it may take the rest of a split character
        assert focus.text == upto
    assert focus.position is None  # the last token: the clicked one
    _, text_ctx = _render(pair, "text_b", focus)
    assert text_ctx.probe == Probe(focus.text)
    probe_ids = pair.executor.probe_tokens("noisy", text_ctx.probe)["ids"].tolist()
    assert tok.decode(probe_ids) == focus.text  # the other views read exactly the extended text
    tokens = text_ctx.tokens()
    clicked_text = "".join(t["text"] for t in row["tokens"][: k + 1])
    if REPLACEMENT not in clicked_text:  # whole characters: the text view ends on the clicked tokens
        assert "".join(tokens).endswith(clicked_text)
    assert text_ctx.position(len(tokens)) == len(tokens) - 1
    # a chip of the old strip, still on the page as the focus moved: it extends the text it showed
    extended = focus.text
    for callback in strip._msg__callbacks:
        callback(SimpleNamespace(data={"model": "noisy", "index": k}))
    assert focus.text == extended
    # the generate view itself now continues the extended text
    card, ctx = _render(pair, "gen", focus)
    assert ctx.state["jobs"]["noisy"].sample == Probe(focus.text)


def test_a_click_inside_a_split_character_takes_the_whole_character(boards):
    from lensframe.generate import REPLACEMENT, extend_text
    from lensframe.probes import Probe

    ex = boards["gpt2"].executor
    tok = ex.model("main").tokenizer
    emoji = tok("\N{GRINNING FACE}", add_special_tokens=False)["input_ids"]
    assert len(emoji) == 4  # four UTF-8 bytes, one byte token each in the tiny vocabulary
    probe = Probe("The cat")
    assert extend_text(ex, "main", probe, emoji[:1]).endswith(REPLACEMENT)  # nothing follows: as clicked
    assert extend_text(ex, "main", probe, emoji[:1], emoji[1:] + [emoji[0]]) == "The cat\N{GRINNING FACE}"
    assert extend_text(ex, "main", probe, emoji, [emoji[0]]) == "The cat\N{GRINNING FACE}"  # whole: no more taken
    assert extend_text(ex, "main", 0, []) == tok.decode(ex.sample_ids("main", 0), skip_special_tokens=True)


@pytest.mark.slow
def test_smollm2_greedy_equals_model_generate_and_a_click_focuses_the_token(smollm2_board):
    from lensframe.context import ViewContext
    from lensframe.focus import Focus
    from lensframe.generate import extend_text, generate
    from lensframe.probes import Probe

    board = smollm2_board
    model = next(iter(board.spec.models))
    loaded = board.executor.model(model)
    for subject in (0, Probe("The capital of France is")):
        prompt = board.executor.sample_ids(model, subject)
        res = generate(board.executor, model, subject, 8)
        assert res["ids"].tolist() == _hf_greedy(loaded.model, prompt, 8), subject
        np.testing.assert_allclose(res["probs"], _plain_probs(loaded.model, prompt, res["ids"]), rtol=1e-4, atol=1e-5)
    # real words round-trip through the tokenizer: the text view ends on the clicked token
    probe = Probe("The capital of France is")
    res = generate(board.executor, model, probe, 8)
    focus = Focus(model=model, text=extend_text(board.executor, model, probe, res["ids"][:3]))
    view = board.views["text"]
    tokens = ViewContext(board, focus, view).tokens()
    want = loaded.tokenizer.batch_decode([[int(i)] for i in res["ids"][:3]], clean_up_tokenization_spaces=False)
    assert tokens[-3:] == want and len(tokens) == len(board.executor.sample_ids(model, probe)) + 3


@pytest.mark.browser
@pytest.mark.slow
def test_browser_streams_marks_the_divergence_and_a_click_moves_the_text_view(pair, tmp_path):
    """`lensframe serve` on the two tiny models, in Chromium: the chips stream in and end 'done',
    the divergence is marked in both columns, and clicking a chip focuses the extended text (the
    text view shows the probe, the generate view continues it). No error card, no JS error."""
    pytest.importorskip("playwright.sync_api")
    from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, serving

    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}")
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=30_000)
    short = ["A rolling", "The cat", "Love is a"]  # short prompts: a click stays inside the focus limit
    views = "  text: {type: text, model: noisy}\n  gen: {type: generate, tokens: 12}"
    spec = tmp_path / "spec.yaml"
    spec.write_text(_models_spec(pair.paths, views, texts=short, labels=["a", "b", "c"]) + "layout: |\n  text\n  gen\n")
    with serving(spec, tmp_path / "c", tmp_path) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(url)
            gen, text = page.locator(".lf-card-gen"), page.locator(".lf-card-text")
            expect(gen.locator(".lf-gen-status[data-state='done']")).to_have_count(1)
            for model in ("base", "noisy"):
                expect(gen.locator(f".lf-gen-token[data-model='{model}']").first).to_be_visible()
            marked = gen.locator(".lf-gen-token.lf-gen-diverge")  # "A rolling": the two part after a few tokens
            expect(marked).to_have_count(2)
            at = {marked.nth(i).get_attribute("data-index") for i in range(2)}
            assert len(at) == 1 and at == {gen.locator(".lf-gen-diverge-at").inner_text()}
            n_prompt = text.locator(".lf-token").count()
            k = 2
            gen.locator(f".lf-gen-token[data-model='noisy'][data-index='{k}']").click()
            expect(text.locator(".lf-probe-name")).to_have_count(1)
            expect(gen.locator(".lf-gen-caption .lf-probe-name")).to_have_count(1)
            expect(gen.locator(".lf-gen-status[data-state='done']")).to_have_count(1)
            assert text.locator(".lf-token").count() >= n_prompt + 1  # the generated tokens joined the text
            expect(page.locator(".lf-error")).to_have_count(0)
            assert not errors, errors
        finally:
            browser.close()
