"""MLP neurons and FFN value vectors (Geva et al. 2022) against independent computations.

Every expected value here comes from plain torch on the weights, or from plain transformers forwards
of a separately loaded copy of the tiny model with this file's own hooks; lensframe's adapter is only
used where the brief is about it (the sum of sub-updates) and never to compute a reference.
Families: GPT-2 (Conv1D, v_i a row of c_proj.weight), Llama (gated MLP, v_i a column of
down_proj.weight) and GPT-NeoX (parallel residual, v_i a column of dense_4h_to_h.weight).
"""
from __future__ import annotations

import functools
import operator
import re
from collections import defaultdict

import numpy as np
import pytest
import torch

from lensframe.board import Board

from .conftest import TEXTS, float32_atol, tiny_spec
from .test_lens_numbers import check_lens
from .test_sharing import ForwardCounter

FAMILIES = ["gpt2", "llama", "neox"]
MAX_TOKENS = 32  # the texts are 22 to 41 tokens: samples of different lengths, padded batches
BASE_VIEWS = """  text: {type: text}
  lens: {type: logit_lens, top_k: 4}
  attn: {type: attention}
"""
NEURON_VIEWS = """  neurons: {type: neurons}
  top: {type: top_examples, k: 3}
  ffn: {type: ffn_vocab, top_n: 7, k: 5}
"""
VIEWS = BASE_VIEWS + NEURON_VIEWS

# Module paths written out from the transformers modeling code (not read from lensframe's Family table).
PATHS = {
    "gpt2": dict(blocks="transformer.h", attn="attn", ln_mid="ln_2", mlp="mlp", down="mlp.c_proj",
                 norm="transformer.ln_f", unembed="lm_head"),
    "llama": dict(blocks="model.layers", attn="self_attn", ln_mid="post_attention_layernorm", mlp="mlp",
                  down="mlp.down_proj", norm="model.norm", unembed="lm_head"),
    "neox": dict(blocks="gpt_neox.layers", attn="attention", ln_mid="post_attention_layernorm", mlp="mlp",
                 down="mlp.dense_4h_to_h", norm="gpt_neox.final_layer_norm", unembed="lm_head"),
}


# --- the reference: a separately loaded copy of the model, its weights, and its own hooks ------------

@functools.lru_cache(maxsize=None)
def reference(path: str):
    """(model, tokenizer) loaded with plain transformers, independent of the board's copy."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager").eval()
    return model, AutoTokenizer.from_pretrained(path)


def edit_hooks(model, kind: str, edits) -> list:
    """Pre-hooks on each edited layer's down projection that set m_i = value at (position, neuron) of
    a batch of one: the reference for lensframe's neuron edits. Returns the handles to remove."""
    def edit(items):
        def hook(mod, args):
            x = args[0].clone()
            for position, neuron, value in items:
                x[0, position, neuron] = value
            return (x,) + tuple(args[1:])
        return hook

    by_layer = defaultdict(list)
    for layer, position, neuron, value in edits:
        by_layer[layer].append((position, neuron, value))
    return [part(model, kind, "down", layer).register_forward_pre_hook(edit(items)) for layer, items in by_layer.items()]


def part(model, kind: str, what: str, layer: int | None = None):
    if layer is None:
        return operator.attrgetter(PATHS[kind][what])(model)
    block = operator.attrgetter(PATHS[kind]["blocks"])(model)[layer]
    return block if what == "block" else operator.attrgetter(PATHS[kind][what])(block)


def n_layers(model, kind) -> int:
    return len(operator.attrgetter(PATHS[kind]["blocks"])(model))


def value_vectors(model, kind: str, layer: int) -> torch.Tensor:
    """[d_mlp, d_model]: GPT-2's Conv1D c_proj.weight is [in, out] (v_i = row i); an nn.Linear
    weight is [out, in] (v_i = column i)."""
    w = part(model, kind, "down", layer).weight.detach()
    return w if kind == "gpt2" else w.T


def unembed(model, kind: str) -> torch.Tensor:
    return part(model, kind, "unembed").weight.detach()


def sample_ids(path, sample: int) -> torch.Tensor:
    _, tok = reference(str(path))
    ids = tok(TEXTS[sample], truncation=True, max_length=MAX_TOKENS)["input_ids"]
    return torch.tensor([ids])


def _first(x):
    return x[0] if isinstance(x, (tuple, list)) else x


def trace(path, kind: str, ids: torch.Tensor, edits=(), output_attentions: bool = False):
    """One forward of the reference model with hooks. Returns (output, captures) where captures[name]
    is [layers, T, ...] for: resid_pre (block input), attn_out (attention output), ln_mid_in (input of
    the norm before the MLP), m (input of the down projection: the neuron activations), mlp_out (MLP
    module output), resid_post (block output). `edits` (layer, position, neuron, value) set m by a
    pre-hook of this file's own, registered before the capture so `m` shows the edited values."""
    model, _ = reference(str(path))
    got = defaultdict(dict)
    handles = []

    def keep(name, layer, value):
        got[name][layer] = value[0].detach().clone()

    def pre(name, layer):
        def hook(mod, args, kwargs):
            keep(name, layer, args[0] if args else kwargs["hidden_states"])
        return hook

    def post(name, layer):
        return lambda mod, args, out: keep(name, layer, _first(out))

    handles += edit_hooks(model, kind, edits)
    L = n_layers(model, kind)
    for l in range(L):
        handles += [
            part(model, kind, "block", l).register_forward_pre_hook(pre("resid_pre", l), with_kwargs=True),
            part(model, kind, "block", l).register_forward_hook(post("resid_post", l)),
            part(model, kind, "attn", l).register_forward_hook(post("attn_out", l)),
            part(model, kind, "ln_mid", l).register_forward_pre_hook(pre("ln_mid_in", l), with_kwargs=True),
            part(model, kind, "down", l).register_forward_pre_hook(pre("m", l), with_kwargs=True),
            part(model, kind, "mlp", l).register_forward_hook(post("mlp_out", l)),
        ]
    try:
        with torch.no_grad():
            out = model(input_ids=ids, output_attentions=output_attentions, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return out, {name: torch.stack([got[name][l] for l in range(L)]) for name in got}


def lens_top(model, kind, h: torch.Tensor, k: int):
    """Top-k of softmax(E norm_f(h)), the logit lens, by hand."""
    with torch.no_grad():
        p = torch.softmax(part(model, kind, "norm")(h) @ unembed(model, kind).T, -1)
    return p.topk(k)


# --- boards -----------------------------------------------------------------------------------------

def make_board(path, tmp_path, views: str = VIEWS, compute: bool = True) -> Board:
    text = tiny_spec(path, views)
    assert "max_tokens: 16" in text
    text = text.replace("max_tokens: 16", f"max_tokens: {MAX_TOKENS}")
    b = Board.from_text(text, base_dir=tmp_path, cache_dir=tmp_path / "store")
    if compute:
        b.compute(progress=False)
    return b


@pytest.fixture(scope="module")
def boards(tiny_models, tmp_path_factory) -> dict[str, Board]:
    """One computed board per family with every view (shared by the tests that count nothing)."""
    return {kind: make_board(tiny_models[kind], tmp_path_factory.mktemp(f"nb-{kind}")) for kind in FAMILIES}


def ffn_nodes(board: Board) -> dict:
    return board.views["ffn"].nodes(board.spec.dataset.max_tokens)


def html_of(viewable) -> str:
    import panel as pn

    return "\n".join(str(pane.object) for pane in viewable.select(pn.pane.HTML))


# --- 1. static view: E v_i ----------------------------------------------------------------------------

@pytest.mark.parametrize("kind", FAMILIES)
def test_ffn_static_is_E_times_the_value_vector(kind, tiny_models, boards):
    b, path = boards[kind], tiny_models[kind]
    model, _ = reference(str(path))
    E, k = unembed(model, kind), 5
    d_mlp = value_vectors(model, kind, 0).shape[0]
    assert d_mlp == (128 if kind == "gpt2" else 64)  # GPT-2's n_inner defaults to 4 * n_embd
    before = b.executor.forward_passes
    for layer, neuron in [(0, 0), (1, 17), (2, d_mlp - 1)]:
        w = part(model, kind, "down", layer).weight.detach()
        v = w[neuron] if kind == "gpt2" else w[:, neuron]  # row i of c_proj.weight / column i of down
        scores = E @ v  # no final norm, as LM-Debugger
        up = torch.argsort(scores, descending=True)[:k]
        down = torch.argsort(scores)[:k]
        res = b.executor.lookup(ffn_nodes(b)["static"], layer=layer, neuron=neuron)
        np.testing.assert_array_equal(res["promoted_ids"], up.numpy())
        np.testing.assert_allclose(res["promoted"], scores[up].numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(res["suppressed_ids"], down.numpy())
        np.testing.assert_allclose(res["suppressed"], scores[down].numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(res["norm"], v.norm().item(), rtol=1e-6)
        assert (np.diff(res["promoted"]) <= 0).all() and (np.diff(res["suppressed"]) >= 0).all()
    assert b.executor.forward_passes == before  # from the weights alone


def final_norm_by_hand(model, kind: str, x: torch.Tensor) -> torch.Tensor:
    """The model's final norm written out: RMSNorm g ⊙ x / sqrt(mean x² + eps) (Llama), LayerNorm
    g ⊙ (x − mean) / sqrt(var + eps) + b (GPT-2, NeoX)."""
    norm = part(model, kind, "norm")
    w = norm.weight.detach()
    if kind == "llama":
        eps = model.config.rms_norm_eps
        return w * x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps)
    eps = norm.eps
    c = x - x.mean(-1, keepdim=True)
    return w * c / torch.sqrt((c * c).mean(-1, keepdim=True) + eps) + norm.bias.detach()


@pytest.mark.parametrize("kind", FAMILIES)
def test_ffn_with_final_norm_is_E_times_the_normed_value_vector(kind, tiny_models, boards):
    """final_norm: true reads v_i (and each sub-update m_i v_i) through the final norm, as the logit
    lens reads a residual: E norm_f(v_i)."""
    from lensframe.graph import Node

    b, path = boards[kind], tiny_models[kind]
    model, _ = reference(str(path))
    E, k = unembed(model, kind), 5
    static = Node.make("ffn_static", "main", k=k, final_norm=True)
    for layer, neuron in [(0, 3), (2, 11)]:
        v = value_vectors(model, kind, layer)[neuron]
        scores = E @ final_norm_by_hand(model, kind, v)
        up, down = torch.argsort(scores, descending=True)[:k], torch.argsort(scores)[:k]
        res = b.executor.lookup(static, layer=layer, neuron=neuron)
        np.testing.assert_array_equal(res["promoted_ids"], up.numpy())
        np.testing.assert_allclose(res["promoted"], scores[up].numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(res["suppressed_ids"], down.numpy())
    plain = b.executor.lookup(ffn_nodes(b)["static"], layer=2, neuron=11)
    normed = b.executor.lookup(static, layer=2, neuron=11)
    assert not np.allclose(plain["promoted"], normed["promoted"])  # the option changes the numbers
    nodes = ffn_nodes(b)
    dyn = Node.make("ffn_dynamic", "main", inputs=nodes["dynamic"].inputs, top_n=4, k=3, final_norm=True)
    res = b.executor.lookup(dyn, sample=1, layer=1, position=2)
    for i, m, ids in zip(res["neurons"], res["m"], res["token_ids"]):
        sub = final_norm_by_hand(model, kind, float(m) * value_vectors(model, kind, 1)[int(i)])
        np.testing.assert_array_equal(ids, torch.argsort(E @ sub, descending=True)[:3].numpy())


# --- 2. dynamic view: sub-updates ranked by |m_i| ||v_i|| -------------------------------------------------

@pytest.mark.parametrize("kind", FAMILIES)
def test_ffn_dynamic_ranks_sub_updates_by_size(kind, tiny_models, boards):
    b, path = boards[kind], tiny_models[kind]
    model, _ = reference(str(path))
    E, top_n, k = unembed(model, kind), 7, 3
    for sample in (0, 5):
        ids = sample_ids(path, sample)
        n = ids.shape[1]
        _, cap = trace(path, kind, ids)
        for layer in range(3):
            V = value_vectors(model, kind, layer)
            norms = V.norm(dim=1)
            for position in (0, n // 2, n - 1):
                m = cap["m"][layer, position]
                size = m.abs() * norms
                order = torch.argsort(size, descending=True)[:top_n]
                res = b.executor.lookup(ffn_nodes(b)["dynamic"], sample=sample, layer=layer, position=position)
                np.testing.assert_array_equal(res["neurons"], order.numpy())
                np.testing.assert_allclose(res["m"], m[order].numpy(), rtol=1e-5, atol=1e-6)
                np.testing.assert_allclose(res["norm"], norms[order].numpy(), rtol=1e-5)
                np.testing.assert_allclose(res["size"], size[order].numpy(), rtol=1e-5, atol=1e-6)
                # the tokens each sub-update m_i v_i promotes
                sub = (E @ (V[order] * m[order, None]).T).T  # [top_n, vocab]
                np.testing.assert_array_equal(res["token_ids"], sub.topk(k, -1).indices.numpy())
                # the residual before the MLP (after attention) and after the block, through the lens
                mid = cap["resid_pre"][layer, position] + cap["attn_out"][layer, position]
                for h, name in ((mid, "before"), (cap["resid_post"][layer, position], "after")):
                    top = lens_top(model, kind, h, 10)
                    np.testing.assert_array_equal(res[f"{name}_ids"], top.indices.numpy())
                    np.testing.assert_allclose(res[f"{name}_probs"], top.values.numpy(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kind", FAMILIES)
def test_the_neurons_view_ranks_the_reference_activations(kind, tiny_models, boards):
    """The neurons view's two rankings, their notes and the focused neuron's strip, against the
    activations m (the down projection's input) of this file's own hooked forward."""
    pytest.importorskip("panel")
    from lensframe.context import ViewContext
    from lensframe.views.base import neuron_label
    from lensframe.views.widgets import BarList, PatchedHTML, TokenStrip

    b, path = boards[kind], tiny_models[kind]
    sample, layer, position, neuron = 2, 1, 3, 5
    _, got = trace(path, kind, sample_ids(path, sample))
    m = got["m"][layer].numpy()  # [T, d_mlp]
    model, _ = reference(str(path))
    size = np.abs(m[position]) * value_vectors(model, kind, layer).norm(dim=-1).numpy()
    view = b.views["neurons"]
    focus = b.new_focus()
    focus.update(sample=sample, layer=layer, position=position, neuron=neuron)
    layout = view.render(ViewContext(b, focus, view))
    by_act, by_size = layout.select(BarList)
    n = view.p.top_n
    for bars, score in ((by_act, m[position]), (by_size, size)):
        keys = [it["key"] for it in bars.items]
        ranked = score[keys]
        assert len(keys) == n and (np.diff(ranked) <= 1e-5).all()  # descending ...
        assert ranked[-1] >= np.sort(score)[-n] - 1e-5  # ... and the top n
        assert [it["label"] for it in bars.items] == [neuron_label(layer, k) for k in keys]
        assert bars.selected == neuron
    for it in by_act.items:  # "m +0.532"
        assert float(it["note"].removeprefix("m ")) == pytest.approx(m[position, it["key"]], abs=1e-3)
    for it in by_size.items:  # "0.532 (m +0.310)"
        shown, act = re.fullmatch(r"(\S+) \(m (\S+)\)", it["note"]).groups()
        assert float(shown) == pytest.approx(size[it["key"]], abs=1e-3)
        assert float(act) == pytest.approx(m[position, it["key"]], abs=1e-3)
    (strip,) = layout.select(TokenStrip)
    assert strip.visible and strip.selected == position
    np.testing.assert_allclose(strip.shade, np.maximum(0, m[:, neuron] / np.abs(m[:, neuron]).max()), atol=1e-4)
    assert f"{neuron_label(layer, neuron)} m = {m[position, neuron]:+.4f}" in strip.tips[position]
    text = "\n".join(p.object for p in layout.select(PatchedHTML))
    assert f"<b class='lf-neuron'>{neuron_label(layer, neuron)}</b>" in text

    focus.update(neuron=None)  # no neuron: the strip is hidden, not removed (the view updates in place)
    layout = view.render(ViewContext(b, focus, view))
    (strip,) = layout.select(TokenStrip)
    assert not strip.visible and "class='lf-neuron'" not in "".join(p.object for p in layout.select(PatchedHTML))


# --- 3. the sub-updates sum to the MLP output ------------------------------------------------------------

@pytest.mark.parametrize("kind", FAMILIES)
def test_sub_updates_sum_to_the_mlp_output(kind, tiny_models, boards):
    b, path = boards[kind], tiny_models[kind]
    acts_node = ffn_nodes(b)["acts"]
    adapter = b.executor.model("main").adapter
    for sample in (1, 6):
        _, cap = trace(path, kind, sample_ids(path, sample))
        acts = torch.as_tensor(b.executor.focus("main", sample)[acts_node]["acts"])  # [layers, T, d_mlp]
        torch.testing.assert_close(acts, cap["m"], rtol=1e-5, atol=1e-5)  # lensframe's m is the down input
        for layer in range(3):
            bias = adapter.mlp_out_bias(layer)
            assert (bias is None) == (kind == "llama")
            total = acts[layer] @ adapter.value_vectors(layer).float() + (0 if bias is None else bias)
            torch.testing.assert_close(total, cap["mlp_out"][layer], rtol=1e-4, atol=1e-4)
            # and sub-update by sub-update: sum_i m_i v_i, spelled out
            subs = acts[layer, :, :, None] * adapter.value_vectors(layer)[None]  # [T, d_mlp, d]
            torch.testing.assert_close(subs.sum(1) + (0 if bias is None else bias), cap["mlp_out"][layer],
                                       rtol=1e-4, atol=1e-4)


# --- 4. top examples: the streaming top-k equals a brute-force pass --------------------------------------

def brute_force_acts(path, kind) -> list[torch.Tensor]:
    """m for every sample, one forward per sample: [layers, n_tokens, d_mlp] each."""
    return [trace(path, kind, sample_ids(path, s))[1]["m"] for s in range(len(TEXTS))]


@pytest.mark.parametrize("layers", ["all", [0, 2]], ids=["all", "0-2"])
@pytest.mark.parametrize("kind", FAMILIES)
def test_top_examples_equal_a_brute_force_pass(kind, layers, tiny_models, tmp_path):
    path = tiny_models[kind]
    spec_layers = "" if layers == "all" else f", layers: {layers}"
    b = make_board(path, tmp_path, BASE_VIEWS + f"  top: {{type: top_examples, k: 3{spec_layers}}}\n")
    res = b.result(b.views["top"].node(MAX_TOKENS))
    want_layers = [0, 1, 2] if layers == "all" else layers
    assert res.meta["layers"] == want_layers
    before, after = res.meta["window"]
    width = before + after + 1
    acts = brute_force_acts(path, kind)
    lengths = [a.shape[1] for a in acts]
    np.testing.assert_array_equal(b.executor.tokens("main")["lengths"], lengths)
    assert len(set(lengths)) > 2  # batches of 3 with padding: masks matter
    d_mlp, k = acts[0].shape[-1], 3
    assert res["values"].shape == res["samples"].shape == res["positions"].shape == (len(want_layers), d_mlp, k)
    assert res["windows"].shape == (len(want_layers), d_mlp, k, width)
    edges = res["edges"]
    for li, layer in enumerate(want_layers):
        peak = torch.stack([a[layer].max(0).values for a in acts])  # [samples, d_mlp]
        where = torch.stack([a[layer].argmax(0) for a in acts])
        top = peak.T.topk(k, dim=1)  # [d_mlp, k] over samples
        np.testing.assert_allclose(res["values"][li], top.values.numpy(), rtol=1e-5, atol=1e-5)
        # (sample, position): the brute-force top-k up to exact ties. Ties are real: samples 0 and 4
        # both start with "The", and NeoX's layer-0 MLP reads ln(embedding) only (no position
        # embedding, parallel residual), so a token has the same m wherever it occurs.
        samples, positions = res["samples"][li], res["positions"][li]
        want = np.full((d_mlp, k, width), np.nan, dtype=np.float32)  # the context windows
        for neuron in range(d_mlp):
            assert len(set(samples[neuron])) == k
            for r in range(k):
                s, p, value = int(samples[neuron, r]), int(positions[neuron, r]), res["values"][li, neuron, r]
                assert 0 <= p < lengths[s]
                np.testing.assert_allclose(acts[s][layer, p, neuron], value, rtol=1e-5, atol=1e-5)  # holds it
                np.testing.assert_allclose(peak[s, neuron], value, rtol=1e-5, atol=1e-5)  # the sample's max
                if (s, p) != (int(top.indices[neuron, r]), int(where[top.indices[neuron, r], neuron])):
                    np.testing.assert_allclose(top.values[neuron, r], value, rtol=1e-5, atol=1e-5)  # a tie
                for j in range(width):  # m of the neuron on the tokens around its peak, NaN outside
                    q = p - before + j
                    if 0 <= q < lengths[s]:
                        want[neuron, r, j] = acts[s][layer, q, neuron]
        assert np.isnan(want[..., before + 1 :]).any()  # some peaks near a sample's end: windows clipped
        got = res["windows"][li].astype(np.float32)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-3, equal_nan=True)  # stored as float16
        np.testing.assert_allclose(got[..., before], res["values"][li], rtol=2e-3, atol=2e-3)
        # the histogram counts every real token once per neuron, in the bin its activation falls in
        hist = res["hist"][li]
        assert (hist.sum(-1) == sum(lengths)).all()
        real = torch.cat([a[layer] for a in acts]).numpy()  # [tokens, d_mlp]
        bins = np.searchsorted(edges[1:-1], real, side="left")  # bucketize: edges[i-1] < x <= edges[i]
        want_hist = np.stack([np.bincount(bins[:, i], minlength=len(edges) - 1) for i in range(d_mlp)])
        near_edge = (np.abs(real[..., None] - edges[1:-1]) < 1e-4).sum()  # batched vs single forwards
        assert np.abs(hist - want_hist).sum() <= 2 * near_edge


# --- 5. interventions --------------------------------------------------------------------------------------

def biggest_sub_update(path, kind, sample, layer, position) -> int:
    model, _ = reference(str(path))
    _, cap = trace(path, kind, sample_ids(path, sample))
    return int((cap["m"][layer, position].abs() * value_vectors(model, kind, layer).norm(dim=1)).argmax())


@pytest.mark.parametrize("value", [0.0, 40.0], ids=["off", "up"])
@pytest.mark.parametrize("kind", FAMILIES)
def test_edit_equals_a_manual_forward_and_leaves_the_weights(kind, value, tiny_models, tmp_path):
    path = tiny_models[kind]
    b = make_board(path, tmp_path, compute=False)  # interventions need no dataset pass
    loaded = b.executor.model("main")
    weights = {name: t.clone() for name, t in loaded.model.state_dict().items()}
    sample, layer = 2, 1
    ids = sample_ids(path, sample)
    n = ids.shape[1]
    position = n // 2
    neuron = biggest_sub_update(path, kind, sample, layer, position)
    edits = ((layer, position, neuron, value), (2, n - 1, 3, value))

    base, _ = trace(path, kind, ids)
    edited, cap = trace(path, kind, ids, edits=edits)
    assert cap["m"][layer, position, neuron] == value  # the reference edit took
    base_lp = torch.log_softmax(base.logits[0], -1)
    ref = torch.log_softmax(edited.logits[0], -1)

    got = b.executor.intervene("main", sample, edits)
    np.testing.assert_allclose(got, ref.numpy(), atol=2e-5, rtol=1e-5)
    np.testing.assert_allclose(got[:position], base_lp[:position].numpy(), atol=2e-5)  # causal: earlier unchanged
    assert np.abs(got[position] - base_lp[position].numpy()).max() > 1e-3  # the edit matters

    k = 10
    res = b.executor.lookup(ffn_nodes(b)["edit"], sample=sample, position=position, edits=edits)
    np.testing.assert_array_equal(res["edited_top"], torch.argsort(ref[position], descending=True)[:k].numpy())
    assert res["edited_top"][0] == int(ref[position].argmax())  # the prediction, as the manual edit makes it
    np.testing.assert_allclose(res["edited_probs"], ref[position, res["ids"]].exp().numpy(), rtol=1e-4, atol=1e-6)
    # the unedited side is the focus pass's float16 log-probs: equal to the plain forward up to that
    np.testing.assert_allclose(res["base_probs"], base_lp[position, res["ids"]].exp().numpy(), rtol=1e-2, atol=1e-4)
    assert set(res["base_top"]) <= set(res["ids"]) and set(res["edited_top"]) <= set(res["ids"])
    kth = base_lp[position].exp().sort(descending=True).values[k - 1].item()
    assert (base_lp[position, res["base_top"]].exp().numpy() >= kth * (1 - 1e-2)).all()

    after = loaded.model.state_dict()
    assert after.keys() == weights.keys()
    for name, t in weights.items():
        assert torch.equal(after[name], t), f"{name} changed"
    for l in range(3):  # and no hook is left behind
        assert not part(loaded.model, kind, "down", l)._forward_pre_hooks
    # an unedited forward of the board's model after the edits is the plain one
    with torch.no_grad():
        again = loaded.model(input_ids=ids).logits[0]
    torch.testing.assert_close(torch.log_softmax(again, -1), base_lp, rtol=1e-5, atol=2e-5)


# --- 6. GPT-NeoX through the generic paths (and the residual stream on every family) --------------------------

def test_logit_lens_on_neox(boards):
    for sample in range(len(TEXTS)):
        check_lens(boards["neox"], sample)


def test_attention_on_neox_equals_output_attentions(tiny_models, boards):
    b, path = boards["neox"], tiny_models["neox"]
    for sample in (0, 4):
        ids = sample_ids(path, sample)
        n = ids.shape[1]
        res = b.executor.focus("main", sample)[b.views["attn"].attention_node(MAX_TOKENS)]["pattern"]
        out, _ = trace(path, "neox", ids, output_attentions=True)
        assert res.shape == (3, 4, n, n)
        info = b.infos["main"]
        np.testing.assert_allclose(res, torch.stack([a[0] for a in out.attentions]).numpy(),
                                   atol=float32_atol(info.n_layers, info.d_model))


@pytest.mark.parametrize("kind", FAMILIES)
def test_residuals_equal_own_hooks(kind, tiny_models, boards):
    """resid_mid = resid_pre + attn_out on every family; on GPT-2 and Llama that is the input of the
    norm before the MLP, on the parallel-residual NeoX no module sees it (the MLP reads resid_pre)."""
    b, path = boards[kind], tiny_models[kind]
    assert b.executor.model("main").adapter.parallel == (kind == "neox")
    for sample in (3, 7):
        out, cap = trace(path, kind, sample_ids(path, sample))
        res = b.executor.focus("main", sample)[ffn_nodes(b)["resid"]]
        mid = cap["resid_pre"] + cap["attn_out"]
        np.testing.assert_allclose(res["mid"], mid.numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(res["post"], cap["resid_post"].numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(res["post"], (mid + cap["mlp_out"]).numpy(), rtol=1e-4, atol=1e-4)
        if kind == "neox":
            np.testing.assert_allclose(cap["ln_mid_in"].numpy(), cap["resid_pre"].numpy())  # parallel: MLP reads x
            assert np.abs(res["mid"] - cap["resid_pre"].numpy()).max() > 1e-2  # and mid is not that
        else:
            np.testing.assert_allclose(res["mid"], cap["ln_mid_in"].numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(res["logprobs"].astype(np.float32),
                                   torch.log_softmax(out.logits[0], -1).numpy(), rtol=2e-3, atol=2e-3)


# --- 7. sharing: no extra dataset pass, one forward per focus change, memoized lookups ----------------------

@pytest.mark.parametrize("kind", FAMILIES)
def test_neuron_views_add_no_dataset_pass(kind, tiny_models, tmp_path):
    n_batches = -(-len(TEXTS) // 3)
    calls = {}
    for name, views in (("base", BASE_VIEWS), ("neurons", VIEWS)):
        b = make_board(tiny_models[kind], tmp_path / name, views, compute=False)
        counter = ForwardCounter(b.executor.model("main").model)
        report = b.compute(progress=False)
        calls[name] = counter.calls
        assert counter.calls == report.forward_passes == report.batches == n_batches
    assert calls["neurons"] == calls["base"]
    passes = b.plan.passes()
    assert [(p["kind"], len(p["nodes"])) for p in passes] == [("dataset", 2), ("focus", 3)]
    assert {n.split("(")[0] for n in passes[0]["nodes"]} == {"logit_lens", "neuron_top_examples"}  # fused
    assert {n.split("(")[0] for n in passes[1]["nodes"]} == {"attention", "neuron_acts", "residuals"}


@pytest.mark.parametrize("kind", FAMILIES)
def test_one_forward_per_focus_change_with_neuron_views(kind, tiny_models, tmp_path):
    pytest.importorskip("panel")
    from lensframe.focus import Focus
    from lensframe.server.app import build_app

    b = make_board(tiny_models[kind], tmp_path)
    counter = ForwardCounter(b.executor.model("main").model)
    focus = Focus(model="main")
    app = build_app(b, focus)  # every view renders once: one focus pass for sample 0
    assert counter.calls == 1
    focus.update(sample=2)  # every view re-renders; one forward for all of them
    assert counter.calls == 2
    focus.update(layer=1, position=3, neuron=5)  # same sample: static, dynamic, top examples: no forward
    assert counter.calls == 2
    text = html_of(app)
    assert "lf-error" not in text
    # neuron ids are written L1/N5 (layer 1, neuron 5), never "1.5", which reads as a number
    assert "value vector <b class='lf-neuron'>L1/N5</b>" in text and "neuron <b class='lf-neuron'>L1/N5</b>" in text
    assert "'>1.5<" not in text
    focus.update(sample=0)  # memoized from the first render
    assert counter.calls == 2


@pytest.mark.parametrize("kind", FAMILIES)
def test_lookups_are_memoized_and_an_edit_costs_one_forward(kind, tiny_models, tmp_path):
    b = make_board(tiny_models[kind], tmp_path)
    ex, nodes = b.executor, ffn_nodes(b)
    counter = ForwardCounter(ex.model("main").model)
    ex.lookup(nodes["static"], layer=2, neuron=9)  # weights only
    assert counter.calls == 0
    ex.focus("main", 4)
    assert counter.calls == 1
    for layer in range(3):
        ex.lookup(nodes["dynamic"], sample=4, layer=layer, position=2)
        ex.lookup(nodes["static"], layer=layer, neuron=layer + 1)
    assert counter.calls == 1  # both read the memoized focus pass (or the weights)
    edits = ((1, 2, 7, 0.0),)
    first = ex.lookup(nodes["edit"], sample=4, position=2, edits=edits)
    assert counter.calls == 2  # the focus pass is memoized: the edit is the only forward
    again = ex.lookup(nodes["edit"], sample=4, position=2, edits=edits)
    assert counter.calls == 2 and again is first
    ex.lookup(nodes["edit"], sample=4, position=2, edits=((1, 2, 7, 5.0),))  # another edit: one more
    assert counter.calls == 3


# --- regression: the residual decoded in ffn_dynamic on a half-precision model ---------------------------------

@pytest.mark.parametrize("kind", ["gpt2", "neox"])  # the LayerNorm families: a LayerNorm rejects mixed dtypes
def test_ffn_lookups_on_a_bfloat16_model(kind, tiny_models, tmp_path):
    path = tiny_models[kind]
    text = tiny_spec(path, NEURON_VIEWS).replace(f"model: path:{path}",
                                                 f"models:\n  main: {{source: path:{path}, dtype: bfloat16}}")
    b = Board.from_text(text, base_dir=tmp_path, cache_dir=tmp_path / "store")
    b.compute(progress=False)
    nodes = ffn_nodes(b)
    dyn = b.executor.lookup(nodes["dynamic"], sample=1, layer=1, position=3)
    for name in ("before", "after"):
        probs = dyn[f"{name}_probs"]
        assert np.isfinite(probs).all() and (np.diff(probs) <= 0).all() and 0 < probs.sum() <= 1 + 1e-3
    assert np.isfinite(b.executor.lookup(nodes["static"], layer=1, neuron=2)["promoted"]).all()
    edit = b.executor.lookup(nodes["edit"], sample=1, position=3, edits=((1, 3, 2, 0.0),))
    assert np.isfinite(edit["edited_probs"]).all()
