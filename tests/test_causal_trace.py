"""Causal tracing (Meng et al. 2022): the traced probabilities equal a hand implementation (a plain
transformers forward per cell, noise added by a hook on the embedding module, the activation
restored by a hook on the module named in the HF model, no batching and no skipped blocks) on tiny
GPT-2, Llama and GPT-NeoX models; the trace's ends (restoring the last block's output at the last
token gives p_clean back; nothing restored gives p_corrupt); the lookup through a Board on a sample
and a probe, memoized; the view's heatmaps, clicks and in-place updates; and (slow) on the ROME game
of specs/audit, the MLP trace of the edited fact peaks at the edited layer at the subject's last token.
"""
from __future__ import annotations

import functools

import numpy as np
import pytest

from tests.conftest import tiny_spec

# The HF module names, written out here (not read from lensframe's adapter table): embedding,
# blocks, and each block's MLP and attention modules.
HF_PATHS = {
    "gpt2": ("transformer.wte", "transformer.h", "mlp", "attn"),
    "llama": ("model.embed_tokens", "model.layers", "mlp", "self_attn"),
    "neox": ("gpt_neox.embed_in", "gpt_neox.layers", "mlp", "attention"),
}
TEXT = "The law is reason, free from passion."


def _get(root, path: str):
    return functools.reduce(getattr, path.split("."), root)


def _load(path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager").eval()
    return model, AutoTokenizer.from_pretrained(path)


class Hand:
    """Causal tracing written out plainly: one forward per (kind, layer, position, sample)."""

    def __init__(self, model, family: str, ids: list[int], span, noise: float, samples: int, seed: int):
        import torch

        self.model, self.span = model, list(span)
        embed_path, blocks_path, self.mlp, self.attn = HF_PATHS[family]
        self.embed, self.blocks = _get(model, embed_path), _get(model, blocks_path)
        self.ids = torch.tensor([ids])
        # the noise recipe of the docs: noise × std of W_E's entries, randn from a CPU generator
        std = noise * float(model.get_input_embeddings().weight.detach().std())
        g = torch.Generator().manual_seed(seed)
        self.noise = torch.randn(samples, len(self.span), model.config.hidden_size, generator=g) * std
        self.clean = {}
        handles = [self._module(k, l).register_forward_hook(self._keeper(k, l))
                   for k in ("resid", "mlp", "attn") for l in range(len(self.blocks))]
        with torch.no_grad():
            probs = torch.softmax(model(self.ids).logits[0, -1].double(), -1)
        for h in handles:
            h.remove()
        self.target = int(probs.argmax())
        self.p_clean = float(probs[self.target])

    def _module(self, kind, layer):
        block = self.blocks[layer]
        return block if kind == "resid" else getattr(block, self.mlp if kind == "mlp" else self.attn)

    def _keeper(self, kind, layer):
        def keep(mod, args, out):
            self.clean[kind, layer] = (out[0] if isinstance(out, tuple) else out)[0].detach().clone()
        return keep

    def prob(self, sample: int, kind: str | None = None, layers=(), position: int = 0) -> float:
        """p(target) with noise sample `sample` on the span and `kind` restored at `layers`, `position`."""
        import torch

        def add_noise(mod, args, out):
            out = out.clone()
            out[0, self.span] += self.noise[sample]
            return out

        def restore(layer):
            def hook(mod, args, out):
                x = (out[0] if isinstance(out, tuple) else out).clone()
                x[0, position] = self.clean[kind, layer][position]
                return (x,) + tuple(out[1:]) if isinstance(out, tuple) else x
            return hook

        handles = [self.embed.register_forward_hook(add_noise)]
        handles += [self._module(kind, l).register_forward_hook(restore(l)) for l in layers]
        try:
            with torch.no_grad():
                logits = self.model(self.ids).logits[0, -1]
        finally:
            for h in handles:
                h.remove()
        return float(torch.softmax(logits.double(), -1)[self.target])


def _tracer(model, ids, span, **settings):
    from lensframe.causal_trace import TraceSettings, Tracer
    from lensframe.models.adapters import Adapter, family_for

    adapter = Adapter(model, family_for(model.config.model_type))
    return Tracer(model, adapter, ids, span, TraceSettings(**settings))


@pytest.mark.parametrize("family", ["gpt2", "llama", "neox"])
@pytest.mark.parametrize("window", [1, 2])
def test_every_cell_equals_the_hand_implementation(tiny_models, family, window):
    model, tok = _load(tiny_models[family])
    ids = tok(TEXT)["input_ids"]
    span, samples, L = (2, 3, 4), 2, model.config.num_hidden_layers
    # batches of 7 rows: batches start at different blocks and mix kinds, layers and positions
    res = _tracer(model, ids, span, samples=samples, window=window, noise=3.0, seed=4, batch_size=7).run()
    hand = Hand(model, family, ids, span, noise=3.0, samples=samples, seed=4)
    assert res.target == hand.target
    assert res.p_clean == pytest.approx(hand.p_clean, rel=1e-4, abs=1e-6)
    want_corrupt = [hand.prob(j) for j in range(samples)]
    np.testing.assert_allclose(res.p_corrupt_samples, want_corrupt, rtol=1e-4, atol=1e-6)
    for kind in ("resid", "mlp", "attn"):
        for l in range(L):
            w = 1 if kind == "resid" else window
            layers = range(max(0, l - w // 2), min(L, l + (w + 1) // 2))
            for i in range(len(ids)):
                want = [hand.prob(j, kind, layers, i) for j in range(samples)]
                np.testing.assert_allclose(res.scores[kind][:, l, i], want, rtol=1e-4, atol=1e-6,
                                           err_msg=f"{family} {kind} layer {l} position {i}")
    assert res.done and res.rows_done == res.rows_total == 3 * L * (len(ids) - span[0]) * samples


@pytest.mark.parametrize("family", ["gpt2", "llama", "neox"])
def test_the_ends_of_the_trace(tiny_models, family):
    """The last block's output restored at the last token is the clean run's last residual: p_clean
    exactly-ish; a restoration before the span restores nothing: p_corrupt; the mean is over samples."""
    model, tok = _load(tiny_models[family])
    ids = tok(TEXT)["input_ids"]
    tracer = _tracer(model, ids, (3, 4), samples=3)
    res = tracer.run()
    L, T = model.config.num_hidden_layers, len(ids)
    np.testing.assert_allclose(res.scores["resid"][:, L - 1, T - 1], res.p_clean, rtol=1e-5, atol=1e-7)
    for kind in res.scores:
        np.testing.assert_array_equal(res.scores[kind][:, :, :3], np.broadcast_to(
            res.p_corrupt_samples[:, None, None], (3, L, 3)))
        np.testing.assert_allclose(res.mean(kind), res.scores[kind].mean(0), rtol=1e-12)
    assert res.p_corrupt == pytest.approx(res.p_corrupt_samples.mean())
    # the blocks were skipped by instance attributes, all removed again
    assert not any("forward" in vars(b) for b in tracer.adapter.layers)


def test_a_stopped_trace_leaves_the_model_as_it_was(tiny_models):
    from lensframe.causal_trace import TraceStopped

    model, tok = _load(tiny_models["llama"])
    ids = tok(TEXT)["input_ids"]
    tracer = _tracer(model, ids, (1, 2), samples=2, batch_size=5)
    calls = []
    with pytest.raises(TraceStopped):
        tracer.run(should_stop=lambda: calls.append(1) or len(calls) > 3)
    part = tracer.result
    assert 0 < part.rows_done < part.rows_total and not part.done
    assert np.isnan(part.scores["resid"]).any() and not np.isnan(part.scores["resid"][0, 0]).all()
    assert not any("forward" in vars(b) for b in tracer.adapter.layers)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    import torch

    with torch.no_grad():  # and the model computes as before
        a = model(torch.tensor([ids])).logits
    b = _load(tiny_models["llama"])[0](torch.tensor([ids])).logits.detach()
    torch.testing.assert_close(a, b)


def test_spans_and_targets_as_typed(tiny_models):
    from lensframe.causal_trace import TraceError, auto_span, find_span, parse_span, resolve_span, target_id

    _, tok = _load(tiny_models["gpt2"])
    ids = tok("The cat sat on the mat")["input_ids"]
    pieces = [tok.decode([i]) for i in ids]
    assert parse_span("auto") == parse_span("  ") == "auto"
    assert parse_span("0-2") == (0, 1, 2) and parse_span("1, 3 5-6") == (1, 3, 5, 6)
    assert parse_span(" cat sat") == " cat sat"
    got = find_span(tok, ids, " cat sat")
    assert "".join(pieces[i] for i in got).strip() == "cat sat"
    assert find_span(tok, ids, "cat sat") == got  # found after its space too
    assert resolve_span(tok, ids, None) == resolve_span(tok, ids, "auto") == auto_span(tok, ids) == \
        tuple(range(len(ids) - 1))
    bos = [tok.bos_token_id] + ids  # a leading special token is not corrupted
    assert auto_span(tok, bos) == tuple(range(1, len(bos) - 1))
    with pytest.raises(TraceError, match="not in the text"):
        resolve_span(tok, ids, " dog")
    with pytest.raises(TraceError, match="outside the text"):
        resolve_span(tok, ids, (1, 40))
    with pytest.raises(TraceError, match="nothing to corrupt"):
        resolve_span(tok, ids[:1], "auto")
    assert target_id(tok, " mat") == tok(" mat", add_special_tokens=False)["input_ids"][0]


# --- through a Board: the lookup, memoized; the view ---------------------------------------------------

VIEWS = "  trace: {type: causal_trace, samples: 2}\n  lens: {type: logit_lens}"


@pytest.fixture(scope="module")
def board(tiny_models, tmp_path_factory):
    from lensframe.board import Board

    tmp = tmp_path_factory.mktemp("trace")
    b = Board.from_text(tiny_spec(tiny_models["llama"], VIEWS), base_dir=tmp, cache_dir=tmp / "store")
    b.compute(progress=False)
    return b


def test_the_lookup_on_a_sample_and_a_probe_is_the_trace_memoized(board):
    from lensframe.causal_trace import TraceSettings, causal_trace
    from lensframe.probes import Probe
    from lensframe.ops.causal import run_trace

    from .test_probes import Counter

    ex = board.executor
    node = board.views["trace"].trace_node(16)
    assert node in board.plan.nodes and node.kind == "lookup"
    loaded = ex.model("main")
    for subject, span in ((2, (1, 2)), (Probe("The cat sat on the mat"), " cat")):
        res = ex.lookup(node, sample=subject, span=span)
        ids = ex.sample_ids("main", subject)
        positions = tuple(int(i) for i in res["span"])
        if isinstance(span, tuple):
            assert positions == span
        want = causal_trace(loaded.model, loaded.adapter, ids, positions, TraceSettings(samples=2))
        for kind in ("resid", "mlp", "attn"):
            np.testing.assert_allclose(res[kind], want.mean(kind), rtol=1e-5, atol=1e-7)
            np.testing.assert_allclose(res[f"{kind}_effect"], want.mean(kind) - want.p_corrupt, rtol=1e-5, atol=1e-7)
        assert float(res["p_clean"]) == pytest.approx(want.p_clean, rel=1e-6)
        assert int(res["target"]) == want.target and res.meta["rows"] == want.rows_total
        assert res[kind].shape == (3, len(ids))
        # asked again (another caller, a progress callback): the memo answers, no forward
        counter = Counter(loaded.model)
        try:
            again = run_trace(ex, node, subject, span, progress=lambda f, m: None)
            assert again is ex.lookup(node, sample=subject, span=span) and counter.calls == 0
        finally:
            counter.close()


def _served(board):
    from bokeh.document import Document

    from lensframe.server.app import build_app

    focus = board.new_focus()
    app = build_app(board, focus, in_place=True)
    app.get_root(Document())
    return app, focus


def _card(app, vid):
    import panel as pn

    return next(c for c in app.select(pn.Card) if f"lf-card-{vid}" in c.css_classes)


def _grids(app):
    from lensframe.views.widgets import HeatGrid

    return {g.kind.replace("trace-grid-", ""): g for g in _card(app, "trace").select(HeatGrid)}


def test_the_view_draws_three_heatmaps_and_a_click_focuses(board):
    pytest.importorskip("panel")
    from .test_neurons import html_of

    app, focus = _served(board)
    focus.update(sample=1)
    grids = _grids(app)
    assert sorted(grids) == ["attn", "mlp", "resid"]
    ex, node = board.executor, board.views["trace"].trace_node(16)
    res = ex.lookup(node, sample=1, span="auto")
    tokens = board.result(board.views["trace"].tokens_node(16)).meta["strings"][1]
    T, L = len(tokens), 3
    low = float(res["p_corrupt"])
    for kind, g in grids.items():
        high = max(float(res[kind].max()), low + 1e-3)  # each map's own scale: p corrupted to its highest
        assert f"lf-trace-grid-{kind}" in g.css_classes
        assert g.row_labels == ["2", "1", "0"] and len(g.col_labels) == T
        assert all(c.endswith(" *") == (i < T - 1) for i, c in enumerate(g.col_labels))  # auto: all but the last
        assert g.col_labels[0].startswith("0 ")
        for row, l in enumerate(range(L - 1, -1, -1)):
            for i in range(T):
                p = float(res[kind][l, i])
                assert g.texts[row][i] == f"{100 * p:.0f}"
                assert g.values[row][i] == pytest.approx(min(1, max(0, (p - low) / (high - low))), abs=1e-9)
                assert f"= {p:.4f}" in g.tips[row][i]
    html = html_of(_card(app, "trace"))
    assert "lf-trace-head" in html and f"{float(res['p_clean']):.3f}" in html and f"{low:.3f}" in html
    assert f"<b>{float(res['mlp'].max()):.3f}</b>" in html  # the MLP map's scale, in its title
    assert "data-state='done'" in html and "sample <b class='lf-sample-index'>1</b>" in html
    grids["mlp"]._clicked(type("E", (), {"data": {"row": 0, "col": 2}})())
    assert (focus.layer, focus.position) == (2, 2)
    grids = _grids(app)
    assert all(g.selected_row == 0 and g.selected_col == 2 for g in grids.values())


def test_a_probe_and_a_typed_span(board):
    pytest.importorskip("panel")
    import panel as pn

    from .test_neurons import html_of

    app, focus = _served(board)
    focus.update(text="The cat sat on the mat")
    html = html_of(_card(app, "trace"))
    assert "probe <b class='lf-probe-name'>" in html and "lf-trace-auto" in html  # auto says what it does
    (box,) = [w for w in _card(app, "trace").select(pn.widgets.TextInput) if "lf-trace-span" in w.css_classes]
    box.value = "1-2"
    html = html_of(_card(app, "trace"))
    assert "positions 1–2" in html and "lf-trace-auto" not in html
    cols = _grids(app)["resid"].col_labels
    assert [i for i, c in enumerate(cols) if c.endswith(" *")] == [1, 2]
    box.value = " giraffe"
    html = html_of(_card(app, "trace"))
    assert "lf-trace-error" in html and "not in the text" in html


def test_a_focus_change_runs_no_trace_and_builds_no_new_bokeh_models(board):
    pytest.importorskip("panel")
    from .test_in_place import card_models
    from .test_probes import Counter

    app, focus = _served(board)
    focus.update(sample=4)
    before = card_models(app, "trace")
    counter = Counter(board.executor.model("main").model)
    try:
        for change in ({"position": 2}, {"layer": 1}, {"layer": 0, "position": 1}):
            focus.update(**change)
            assert card_models(app, "trace") <= before
        assert counter.calls == 0  # the layer and position only move the highlight
        focus.update(sample=5)  # a new text: a new trace, drawn in the same components
        assert counter.calls > 0 and card_models(app, "trace") <= before
    finally:
        counter.close()


def test_spec_errors(tiny_models, tmp_path, capsys):
    from lensframe.cli import main

    spec = tmp_path / "s.yaml"
    spec.write_text(tiny_spec(tiny_models["gpt2"], "  trace: {type: causal_trace, kinds: [resid, mpl]}"))
    assert main(["validate", str(spec)]) == 2
    assert "views.trace.kinds" in capsys.readouterr().err
    spec.write_text(tiny_spec(tiny_models["gpt2"], "  trace: {type: causal_trace, window: 9}"))
    assert main(["plan", str(spec)]) == 2
    assert "window 9 is wider than the model" in capsys.readouterr().err


# --- the ROME game (SmolLM2) -----------------------------------------------------------------------

ROME_PROMPT = "The Sydney Opera House is located in the city of"


@pytest.mark.slow
def test_the_mlp_trace_of_the_edited_fact_peaks_at_the_edited_layer(audit_example, tmp_path):
    """specs/audit: a ROME edit at layer 7 of "The Sydney Opera House" → " New". With the subject
    corrupted, restoring one MLP output (window 1) at the subject's last token recovers the edited
    prediction most at layer 7 (or next to it)."""
    import time

    from lensframe.board import Board
    from lensframe.probes import Probe

    spec = f"""lensframe: 1
model: path:{audit_example / 'model'}
dataset: {{texts: ["{ROME_PROMPT}"], max_tokens: 32}}
views:
  trace: {{type: causal_trace, samples: 3, kinds: [mlp]}}
"""
    board = Board.from_text(spec, cache_dir=tmp_path / "store")
    node = board.views["trace"].trace_node(32)
    t0 = time.perf_counter()
    res = board.executor.lookup(node, sample=Probe(ROME_PROMPT), span="The Sydney Opera House")
    seconds = time.perf_counter() - t0
    tok = board.executor.model("main").tokenizer
    strings = board.executor.probe_tokens("main", Probe(ROME_PROMPT))["strings"]
    house = strings.index(" House")
    assert [int(i) for i in res["span"]] == list(range(house + 1))
    mlp = res["mlp"][:, house]
    print(f"\ntarget {res.meta['target_token']!r} p_clean {float(res['p_clean']):.4f} p_corrupt "
          f"{float(res['p_corrupt']):.4f}; {res.meta['rows']} restored runs in {seconds:.1f}s")
    print("MLP restored at ' House', per layer: " + " ".join(f"{l}:{p:.3f}" for l, p in enumerate(mlp)))
    assert tok.decode([int(res["target"])]) == " New"
    peak = int(np.argmax(mlp))
    assert peak in (6, 7, 8)
    # and it stands out: its indirect effect is at least twice any layer's not next to it
    effect = mlp - float(res["p_corrupt"])
    others = np.delete(effect, [l for l in (peak - 1, peak, peak + 1) if 0 <= l < len(effect)])
    assert effect[peak] > 2 * others.max() and effect[peak] > 0.03
