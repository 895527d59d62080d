"""Probes (typed text focused like a dataset sample) against independent computations.

Every expected number comes from a plain `transformers` forward of the same text on a separately
loaded copy of the tiny model (eager attention), with this file's own hooks and its own lens math
(softmax(lm_head(final_norm(h))) in float64); lensframe is only the thing under test. Tolerances
are those of float32 arithmetic on these tiny models (|logits| of a few tens, vocab ~300).
Also: one forward per probe and model (rendering every view, or the server's page, adds none),
memoized repeats, interventions, the cut at run.probe_max_tokens, templates and probe sets on two
models (one batched forward each), the paired lens of model_diff, nothing written to the store, two
browser sessions that do not see each other's probe, and the messages for text that cannot be a probe.
"""
from __future__ import annotations

import operator
import re
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch

from lensframe.board import Board
from lensframe.context import ViewContext
from lensframe.focus import Focus
from lensframe.probes import (MAX_CHARS, MAX_PROBES, Probe, ProbeError, clean_text, expand_template,
                              parse_probes)

from .conftest import SMALL_SPEC, TEXTS, tiny_spec
from .test_model_diff import assert_moved_tokens
from .test_neurons import PATHS, edit_hooks, part, reference  # noqa: F401  (PATHS: the module paths `part` reads)

FAMILIES = ["gpt2", "llama", "neox"]
DATASET_TOKENS = 16  # tiny_spec's dataset.max_tokens: it bounds the dataset pass, not a probe
PROBE_MAX = 40  # run.probe_max_tokens of these boards (the tiny tokenizer spends a token on a few characters)
K = 4
VIEWS = """  text: {type: text}
  lens: {type: logit_lens, top_k: 4}
  lens_mid: {type: logit_lens, top_k: 4, stream: resid_mid, metric: kl}
  tuned: {type: logit_lens, top_k: 4, metric: entropy, lens: tuned, tuned: {train_tokens: 64, steps: 5, lr: 0.01}}
  attn: {type: attention}
  neurons: {type: neurons, top_n: 5}
  top: {type: top_examples, k: 3}
  ffn: {type: ffn_vocab, top_n: 7, k: 5}
"""
PROBE = "The dog sat on a log, reading minds."  # not a dataset text; 21 tokens, more than the dataset's 16

# Module paths written out from the transformers modeling code (not read from lensframe's adapters).
# --- the reference: plain transformers (test_neurons' copy of each model and its module paths), this
# file's hooks, lens math by hand ---------------------------------------------------------------------------


def n_layers_of(model, kind: str) -> int:
    return len(operator.attrgetter(PATHS[kind]["blocks"])(model))


def value_vectors(model, kind: str, layer: int) -> torch.Tensor:
    """[d_mlp, d_model]: GPT-2's Conv1D weight is [in, out] (v_i = row i), nn.Linear's [out, in]."""
    w = part(model, kind, "down", layer).weight.detach()
    return w if kind == "gpt2" else w.T


def ref_ids(path, text: str) -> list[int]:
    _, tok = reference(str(path))
    return tok(text, add_special_tokens=True)["input_ids"]


def _first(x):
    return x[0] if isinstance(x, (tuple, list)) else x


def plain_forward(path, kind: str, ids, edits=()) -> dict:
    """One plain forward (hidden states and attentions from transformers itself) with this file's hooks:
    resid_pre (block input), attn_out (attention output), m (input of the MLP's down projection: the
    neuron activations). `edits` (layer, position, neuron, value) set m by a pre-hook of this file."""
    model, _ = reference(str(path))
    ids = torch.as_tensor([list(ids)], dtype=torch.long)
    got, handles = defaultdict(dict), []

    def keep(name, layer):
        def hook(mod, args, kwargs, *out):
            value = _first(out[0]) if out else (args[0] if args else kwargs["hidden_states"])
            got[name][layer] = value[0].detach().clone()
        return hook

    handles += edit_hooks(model, kind, edits)  # registered first: `m` below shows the edited values
    L = n_layers_of(model, kind)
    for l in range(L):
        handles += [
            part(model, kind, "block", l).register_forward_pre_hook(keep("resid_pre", l), with_kwargs=True),
            part(model, kind, "attn", l).register_forward_hook(keep("attn_out", l), with_kwargs=True),
            part(model, kind, "down", l).register_forward_pre_hook(keep("m", l), with_kwargs=True),
        ]
    try:
        with torch.no_grad():
            out = model(input_ids=ids, output_hidden_states=True, output_attentions=True, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    cap = {name: torch.stack([got[name][l] for l in range(L)]) for name in got}
    return {"logits": out.logits[0], "hidden": [h[0] for h in out.hidden_states],
            "attentions": torch.stack([a[0] for a in out.attentions]), **cap}


def lens_logp(model, kind: str, h: torch.Tensor) -> torch.Tensor:
    """log softmax(lm_head(final_norm(h))), the logit lens by hand (float64 softmax)."""
    with torch.no_grad():
        z = model.lm_head(part(model, kind, "norm")(h))
    return torch.log_softmax(z.double(), -1)


def lens_rows(path, kind: str, ref: dict, stream: str, tuned=None) -> torch.Tensor:
    """[rows, T, V] log-probs of every lens row. resid_post: the embedding and each block's output
    (transformers' hidden_states[0..L-1]; hidden_states[L] already carries the final norm, so the
    last row is the model's own output). resid_mid: resid_pre + attn_out of each block, then the output.
    tuned: (A, b) translators applied to each resid_post row but the last, h + A h + b."""
    model, _ = reference(str(path))
    L = n_layers_of(model, kind)
    if stream == "resid_post":
        hs = [ref["hidden"][l] for l in range(L)]
    else:
        hs = [ref["resid_pre"][l] + ref["attn_out"][l] for l in range(L)]
    if tuned is not None:
        A, b = (torch.as_tensor(x) for x in tuned)
        hs = [h + h @ A[l].T + b[l] for l, h in enumerate(hs)]
    final = torch.log_softmax(ref["logits"].double(), -1)
    return torch.stack([lens_logp(model, kind, h) for h in hs] + [final])


def check_lens_row(row, logps: torch.Tensor, k: int = K) -> None:
    """A lens row of lensframe ([rows, T, ...]) against reference log-probs [rows, T, V]."""
    R, T, _ = logps.shape
    assert row["ids"].shape == (R, T, k) and row["prob"].shape == (R, T)
    p = logps.exp()
    top = p.topk(k, -1)
    # the top-k: lensframe's probabilities are the reference's top-k, and each of its ids has the
    # probability it reports (so its ids are the reference's up to exact ties)
    np.testing.assert_allclose(row["probs"], top.values.numpy(), atol=2e-5, rtol=1e-4)
    got_ids = torch.as_tensor(row["ids"].astype(np.int64))
    np.testing.assert_allclose(p.gather(-1, got_ids).numpy(), row["probs"], atol=2e-5, rtol=1e-4)
    top1_gap = top.values[..., 0] - top.values[..., 1]
    same = row["ids"][..., 0] == top.indices[..., 0].numpy()
    assert (same | (top1_gap.numpy() < 1e-5)).all()
    final = logps[-1]
    y = final.argmax(-1)
    lt = logps.gather(-1, y.view(1, T, 1).expand(R, T, 1))  # log p_l(y*)
    np.testing.assert_allclose(row["prob"], lt.squeeze(-1).exp().numpy(), atol=2e-5, rtol=1e-4)
    ent = -(p * logps).sum(-1)
    kl = (final.exp() * (final - logps)).sum(-1)
    np.testing.assert_allclose(row["entropy"], ent.numpy(), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(row["kl"], kl.numpy(), atol=1e-4, rtol=1e-4)
    # rank of y*: tokens whose log-prob is higher; within float32 noise of y*'s, either way
    lo = (logps > lt + 1e-4).sum(-1).numpy()
    hi = (logps > lt - 1e-4).sum(-1).numpy() - 1
    assert ((lo <= row["rank"]) & (row["rank"] <= hi)).all()
    assert (row["kl"][-1] == 0).all() and (row["rank"][-1] == 0).all()  # the final row is the output


def check_top(ids, probs, ref_p: torch.Tensor, k: int) -> None:
    """top-k ids and probabilities against a reference distribution [V] (ids up to exact ties)."""
    top = ref_p.topk(k)
    np.testing.assert_allclose(probs, top.values.numpy(), atol=2e-5, rtol=1e-4)
    np.testing.assert_allclose(ref_p[torch.as_tensor(np.asarray(ids, dtype=np.int64))].numpy(), probs,
                               atol=2e-5, rtol=1e-4)


# --- boards and rendering ----------------------------------------------------------------------------

class Counter:
    """Calls of an HF model's forward, counted by a hook on the model (not by lensframe's counter)."""

    def __init__(self, model):
        self.calls = 0
        self.handle = model.register_forward_hook(self._hook)

    def _hook(self, *_):
        self.calls += 1

    def close(self):
        self.handle.remove()


def spec_text(path, views: str, extra: str = "") -> str:
    """A tiny_spec whose probes are cut at PROBE_MAX tokens."""
    text = tiny_spec(path, views, extra)
    assert f"max_tokens: {DATASET_TOKENS}" in text and "keep_focus_mb: 0}" in text
    return text.replace("keep_focus_mb: 0}", f"keep_focus_mb: 0, probe_max_tokens: {PROBE_MAX}}}")


@pytest.fixture(scope="module")
def boards(tiny_models, tmp_path_factory) -> dict[str, Board]:
    """One computed board per family with the lens (both streams, and tuned), attention, neuron
    and FFN views; each in its own folder, the store inside it."""
    out = {}
    for kind in FAMILIES:
        base = tmp_path_factory.mktemp(f"probes-{kind}")
        b = Board.from_text(spec_text(tiny_models[kind], VIEWS), base_dir=base, cache_dir=base / "store")
        b.compute(progress=False)
        out[kind] = b
    return out


def nodes_of(b: Board) -> dict:
    mt = b.spec.dataset.max_tokens
    v = b.views
    return {"lens": v["lens"].lens_node(mt), "lens_mid": v["lens_mid"].lens_node(mt),
            "tuned": v["tuned"].lens_node(mt), "tuned_lens": v["tuned"].tuned_node(mt),
            "attn": v["attn"].attention_node(mt), **v["ffn"].nodes(mt)}


def rendered(viewable) -> str:
    """What a view shows as text: its HTML panes, and the tokens and items of its widgets."""
    import panel as pn

    parts = []
    for obj in viewable.select(pn.viewable.Viewable):
        value = getattr(obj, "object", None)
        if isinstance(value, str):
            parts.append(value)
        for name in ("tokens", "items"):
            if name in getattr(obj, "param", {}) and isinstance(getattr(obj, name), list):
                parts.append(repr(getattr(obj, name)))
    return "\n".join(parts)


def render_all(b: Board, focus: Focus, only=None) -> dict[str, str]:
    """Every view of the board (or those in `only`) rendered for one session's focus, as the server
    renders it."""
    from lensframe.server.app import render_view

    out = {}
    for vid, view in b.views.items():
        if only is not None and vid not in only:
            continue
        text = rendered(render_view(view, ViewContext(b, focus, view)))
        assert "lf-error" not in text and "lf-waiting" not in text, f"{vid}: {text[:2000]}"
        out[vid] = text
    return out


def files_under(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))}


# --- 1. a probe's numbers equal a plain transformers forward of its text -------------------------------

@pytest.mark.parametrize("kind", FAMILIES)
def test_probe_focus_equals_a_plain_forward(kind, tiny_models, boards):
    b, path = boards[kind], tiny_models[kind]
    ex, nodes = b.executor, nodes_of(b)
    model, _ = reference(str(path))
    probe = Probe(PROBE)
    ids = ref_ids(path, PROBE)
    T = len(ids)
    assert DATASET_TOKENS < T <= PROBE_MAX  # a probe is not cut at the dataset's max_tokens
    tok = ex.probe_tokens("main", probe)
    assert tok["ids"].tolist() == ids and tok["cut"] == 0 and len(tok["strings"]) == T
    np.testing.assert_array_equal(ex.sample_ids("main", probe), ids)
    ref = plain_forward(path, kind, ids)
    got = ex.focus("main", probe)
    L = n_layers_of(model, kind)

    # logit lens, both streams: all four metrics and the top-k
    for name, stream in (("lens", "resid_post"), ("lens_mid", "resid_mid")):
        row = got[nodes[name]]
        assert row.meta["layers"][-1] == ("final" if stream == "resid_mid" else str(L - 1))
        check_lens_row(row, lens_rows(path, kind, ref, stream))
    # the tuned lens: the probe's residuals through the stored translators
    trained = b.result(nodes["tuned_lens"])
    assert np.abs(trained["A"]).max() > 0  # trained: the tuned row is not the logit lens's
    check_lens_row(got[nodes["tuned"]], lens_rows(path, kind, ref, "resid_post", (trained["A"], trained["b"])))
    assert np.abs(got[nodes["tuned"]]["kl"] - got[nodes["lens"]]["kl"]).max() > 1e-3

    # what a lens view reads for a session focused on the probe is this row
    focus = Focus(model="main", text=PROBE)
    ctx = ViewContext(b, focus, b.views["lens"])
    assert ctx.subject == probe and ctx.row(nodes["lens"]) is got[nodes["lens"]]
    assert ctx.tokens() == tok["strings"]

    # attention patterns, every layer and head
    pattern = got[nodes["attn"]]["pattern"]
    assert pattern.shape == tuple(ref["attentions"].shape) == (L, 4, T, T)
    np.testing.assert_allclose(pattern, ref["attentions"].numpy(), atol=1e-5, rtol=1e-5)

    # neuron activations (mlp_post: the input of the down projection) and the residual stream
    acts = got[nodes["acts"]]["acts"]
    assert acts.shape == tuple(ref["m"].shape)
    np.testing.assert_allclose(acts, ref["m"].numpy(), atol=1e-5, rtol=1e-5)
    res = got[nodes["resid"]]
    np.testing.assert_allclose(res["mid"], (ref["resid_pre"] + ref["attn_out"]).numpy(), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(res["post"][:-1], torch.stack(ref["hidden"][1:L]).numpy(), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(res["logprobs"], torch.log_softmax(ref["logits"], -1).numpy(), atol=1e-4, rtol=1e-5)

    # FFN sub-updates at the probe's tokens: m_i, |m_i| ||v_i||, the tokens each promotes, the lens
    # of the residual before and after the MLP
    E = model.lm_head.weight.detach()
    for layer in range(L):
        V = value_vectors(model, kind, layer)
        norms = V.norm(dim=1)
        for position in (0, T // 2, T - 1):
            m = ref["m"][layer, position]
            size = m.abs() * norms
            order = torch.argsort(size, descending=True)[:7]
            dyn = ex.lookup(nodes["dynamic"], sample=probe, layer=layer, position=position)
            np.testing.assert_array_equal(dyn["neurons"], order.numpy())
            np.testing.assert_allclose(dyn["m"], m[order].numpy(), atol=1e-5, rtol=1e-5)
            np.testing.assert_allclose(dyn["norm"], norms[order].numpy(), rtol=1e-5)
            np.testing.assert_allclose(dyn["size"], size[order].numpy(), atol=1e-5, rtol=1e-5)
            sub = (E @ (V[order] * m[order, None]).T).T  # [top_n, vocab]: E (m_i v_i)
            tops = sub.topk(3, -1)
            np.testing.assert_allclose(dyn["token_scores"], tops.values.numpy(), atol=1e-4, rtol=1e-5)
            np.testing.assert_allclose(sub.gather(-1, torch.as_tensor(dyn["token_ids"].astype(np.int64))).numpy(),
                                       dyn["token_scores"], atol=1e-4, rtol=1e-5)
            mid = ref["resid_pre"][layer, position] + ref["attn_out"][layer, position]
            post = ref["hidden"][layer + 1][position] if layer < L - 1 else None
            check_top(dyn["before_ids"], dyn["before_probs"], lens_logp(model, kind, mid).exp(), 10)
            after = lens_logp(model, kind, post).exp() if post is not None else \
                torch.softmax(ref["logits"][position].double(), -1)
            check_top(dyn["after_ids"], dyn["after_probs"], after, 10)


# --- 2. one forward per probe and model; views add none; a repeat is memoized ------------------------------

@pytest.mark.parametrize("kind", FAMILIES)
def test_a_probe_costs_one_forward_and_its_views_none(kind, boards):
    b = boards[kind]
    ex = b.executor
    counter = Counter(ex.model("main").model)
    try:
        text = f"Never trust a {kind} who reads the mat."  # new to this board: not memoized
        probe = Probe(text)
        before = ex.forward_passes
        got = ex.focus("main", probe)
        assert ex.forward_passes == before + 1 and counter.calls == 1
        # every focus node and every per-sample dataset node (the three lens rows) from that forward
        planned = {p.node for p in b.plan.of_kind("focus", "main")} | set(ex.per_sample_nodes("main"))
        assert set(got) == planned and len(ex.per_sample_nodes("main")) == 3
        focus = Focus(model="main")
        focus.text = text
        html = render_all(b, focus)
        focus.update(layer=1, position=2, neuron=5)  # the neuron, static and dynamic FFN parts too
        html2 = render_all(b, focus)
        assert ex.forward_passes == before + 1 and counter.calls == 1  # rendering read the memo
        assert "lf-probe-name" in html["text"] and "lf-probe-name" in html["lens"]
        assert "lf-probe-place" in html2["top"]  # top_examples places the probe's peak activation
        assert "value vector <b class='lf-neuron'>L1/N5</b>" in html2["ffn"]
        assert ex.focus("main", Probe(text)) is got  # the same text again: memoized, no forward
        assert ex.forward_passes == before + 1 and counter.calls == 1
    finally:
        counter.close()


def in_thread(fn, timeout: float = 30):
    """fn() in a daemon thread: a deadlock fails the test instead of hanging the suite (the stuck
    thread keeps only its own board's locks, so give such a call a board of its own)."""
    import threading

    out = []
    worker = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    worker.start()
    worker.join(timeout)
    assert not worker.is_alive(), f"{getattr(fn, '__name__', fn)} never returned (a deadlock)"
    return out[0]


def test_a_served_session_focused_on_a_probe_renders_with_one_forward(tiny_models, tmp_path):
    """The server's page (build_app) for a session focused on a probe: every view, one forward."""
    from lensframe.server.app import build_app

    b = Board.from_text(spec_text(tiny_models["gpt2"], VIEWS), base_dir=tmp_path, cache_dir=tmp_path / "store")
    b.compute(progress=False)
    focus = b.new_focus()
    focus.update(text="A served probe about the cat.", position=None)
    before = b.executor.forward_passes
    page = in_thread(lambda: build_app(b, focus))
    shown = rendered(page)
    assert "lf-error" not in shown and "lf-probe-name" in shown
    assert b.executor.forward_passes == before + 1


def test_focus_ready_answers_for_a_probe(tiny_models, tmp_path):
    """Whether a probe's focus is memoized (the server's spinner asks this). Run in a thread on a board
    of its own: a deadlock inside the executor must fail this test, not hang the suite."""
    b = Board.from_text(spec_text(tiny_models["llama"], "  attn: {type: attention}\n"), base_dir=tmp_path,
                        cache_dir=tmp_path / "store")
    probe = Probe("Is this one memoized yet?")

    def ask():
        first = b.executor.focus_ready("main", probe)
        b.executor.focus("main", probe)
        return first, b.executor.focus_ready("main", probe)

    assert in_thread(ask) == (False, True)


# --- 3. an FFN edit on a probe: one forward, equal to a hand-written hooked forward ---------------------------

@pytest.mark.parametrize("kind", FAMILIES)
def test_ffn_edit_on_a_probe_equals_a_hooked_forward(kind, tiny_models, boards):
    b, path = boards[kind], tiny_models[kind]
    ex, nodes = b.executor, nodes_of(b)
    model, _ = reference(str(path))
    probe = Probe(PROBE)
    ids = ref_ids(path, PROBE)
    T, L = len(ids), n_layers_of(model, kind)
    position = T - 1
    base = plain_forward(path, kind, ids)
    base_lp = torch.log_softmax(base["logits"], -1)
    # an edit that changes the prediction at `position`, found with the reference alone: the
    # largest sub-updates of the last layer there, turned up or off
    size = base["m"][L - 1, position].abs() * value_vectors(model, kind, L - 1).norm(dim=1)
    edits, edited = None, None
    for neuron in torch.argsort(size, descending=True)[:8].tolist():
        for value in (0.0, 20.0, -20.0):
            cand = ((L - 1, position, neuron, value),)
            out = plain_forward(path, kind, ids, cand)
            if out["logits"][position].argmax() != base["logits"][position].argmax():
                edits, edited = cand, out
                break
        if edits:
            break
    assert edits is not None, "no single sub-update edit changes this probe's prediction"
    assert edited["m"][L - 1, position, edits[0][2]] == edits[0][3]  # the reference edit took
    ref = torch.log_softmax(edited["logits"], -1)

    ex.focus("main", probe)  # the unedited side: the probe's focus forward, memoized
    before = ex.forward_passes
    res = ex.lookup(nodes["edit"], sample=probe, position=position, edits=edits)
    assert ex.forward_passes == before + 1  # the edited forward only
    assert res["edited_top"][0] == int(ref[position].argmax()) != res["base_top"][0]
    assert res["base_top"][0] == int(base_lp[position].argmax())
    np.testing.assert_allclose(res["edited_probs"], ref[position, res["ids"]].exp().numpy(), atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(res["base_probs"], base_lp[position, res["ids"]].exp().numpy(), atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(ex.intervene("main", probe, edits), ref.numpy(), atol=1e-4, rtol=1e-5)
    assert ex.forward_passes == before + 2
    assert ex.lookup(nodes["edit"], sample=probe, position=position, edits=edits) is res  # memoized
    assert ex.forward_passes == before + 2
    for l in range(L):  # no hook left behind: the next focus forward is the plain one
        assert not part(ex.model("main").model, kind, "down", l)._forward_pre_hooks


# --- 4. text past max_tokens ---------------------------------------------------------------------------

def test_a_long_probe_is_cut_to_max_tokens(tiny_models, boards):
    kind = "llama"
    b, path = boards[kind], tiny_models[kind]
    ex, nodes = b.executor, nodes_of(b)
    text = " ".join(TEXTS[:3])
    full = ref_ids(path, text)
    assert len(full) > PROBE_MAX + 5
    probe = Probe(text)
    tok = ex.probe_tokens("main", probe)
    assert tok["cut"] == len(full) - PROBE_MAX > 0 and tok["limit"] == PROBE_MAX
    assert tok["ids"].tolist() == full[:PROBE_MAX] and len(tok["strings"]) == PROBE_MAX
    got = ex.focus("main", probe)
    assert got[nodes["attn"]]["pattern"].shape[-2:] == (PROBE_MAX, PROBE_MAX)
    assert got[nodes["acts"]]["acts"].shape[1] == PROBE_MAX
    ref = plain_forward(path, kind, full[:PROBE_MAX])  # the probe is its first probe_max_tokens tokens
    check_lens_row(got[nodes["lens"]], lens_rows(path, kind, ref, "resid_post"))
    html = render_all(b, Focus(model="main", text=text))
    head = re.search(r"<div class='lf-sample-head'>.*?</div>", html["text"], re.S).group(0)
    assert "lf-cut-note" in head and f"first {PROBE_MAX} tokens" in head and f"{tok['cut']} more" in head
    assert f" {PROBE_MAX} tokens · " in head
    # a probe that fits shows no such note
    assert "lf-cut-note" not in render_all(b, Focus(model="main", text=PROBE))["text"]


# --- 5. never stored; two sessions do not see each other's probe --------------------------------------------

def test_probes_are_never_stored_and_stay_in_their_session(boards):
    b = boards["gpt2"]
    folder = Path(b.spec.base_dir)  # the board's folder; its store is folder/store
    before = files_under(folder)
    assert sum(p.startswith("store") for p in before) > 3  # the computed results are there
    text = "Zebras juggle umbrellas at noon."
    session1, session2 = b.new_focus(), b.new_focus()  # two browser sessions, as the server opens them
    session1.text = text
    session1.probes = parse_probes("Zebras juggle umbrellas at noon.\nA second probe")[0]
    ex = b.executor
    html1, html2 = render_all(b, session1), render_all(b, session2)
    ex.focus("main", Probe(text))
    b.compare_probes(session1.probes)  # a probe set too (one model: top token and probability)
    ex.lookup(nodes_of(b)["edit"], sample=Probe(text), position=1, edits=((1, 1, 3, 0.0),))
    render_all(b, session1)
    assert files_under(folder) == before  # nothing new, nothing rewritten

    # session 1 follows its probe
    assert "lf-probe-name" in html1["text"] and "Zebras juggle umbrellas at noon." in html1["text"]
    # session 2 still shows the dataset sample, in every view
    assert session2.text is None and session2.probes == [] and len(session1.probes) == 2
    assert b.focus.text is None and b.focus.probes == []  # nor is the board's own focus touched
    for vid, shown in html2.items():
        assert "Zebras" not in shown and "lf-probe" not in shown, vid
    assert "sample <b class='lf-sample-index'>0</b>" in html2["text"]
    assert repr(b.result(b.views["text"].tokens_node(DATASET_TOKENS)).meta["strings"][0]) in html2["text"]  # its tokens
    nodes = nodes_of(b)
    ctx2 = ViewContext(b, session2, b.views["lens"])
    assert ctx2.probe is None and ctx2.subject == 0
    stored = b.result(nodes["lens"])
    n0 = int(ex.tokens("main")["lengths"][0])
    for name in ("ids", "probs", "prob", "kl"):
        np.testing.assert_array_equal(ctx2.row(nodes["lens"])[name], stored[name][0])
    assert ViewContext(b, session2, b.views["attn"]).focus_result(nodes["attn"])["pattern"].shape[-1] == n0
    # a view pinned to a sample shows that sample even in the probing session
    pinned = b.views["lens"]
    old = pinned.p.pin
    try:
        pinned.p.pin = type(old)(sample=3)
        assert ViewContext(b, session1, pinned).probe is None and ViewContext(b, session1, pinned).subject == 3
    finally:
        pinned.p.pin = old


# --- 6. text that cannot be a probe --------------------------------------------------------------------------

@pytest.mark.parametrize("text, message", [
    ("", "the text is empty"),
    ("   \n\t  ", "the text is empty"),
    ("\x00\x07\x1b", "the text is empty"),  # control characters only: nothing left once removed
    (b"", "the text is empty"),
    (b" \n ", "the text is empty"),
    ("x" * (MAX_CHARS + 1), f"at most {MAX_CHARS:,}"),
], ids=["empty", "whitespace", "controls-only", "empty-bytes", "whitespace-bytes", "too-long"])
def test_empty_or_oversized_text_is_refused(text, message):
    for fn in (clean_text, parse_probes):
        with pytest.raises(ProbeError, match=re.escape(message)):
            fn(text)


def test_bad_characters_are_removed_or_replaced_with_a_note():
    assert clean_text("Paris is in") == ("Paris is in", [])
    assert clean_text("tabs\tand\nlines") == ("tabs\tand\nlines", [])  # kept: they are text
    text, notes = clean_text("a\x00b\x07c\x1bd")
    assert text == "abcd" and len(notes) == 1 and "removed 3 control character(s)" in notes[0]
    assert clean_text(b"caf\xc3\xa9") == ("café", [])  # valid UTF-8 bytes: decoded, no note
    text, notes = clean_text(b"ab\xff\xfecd")
    assert text == "ab\ufffd\ufffdcd" and len(notes) == 1 and "not valid UTF-8" in notes[0]
    text.encode("utf-8")
    text, notes = clean_text("a\ud800b\udfffc")  # lone surrogates (e.g. from a JSON \ud800 escape)
    assert "\ud800" not in text and "\udfff" not in text and text.startswith("a") and text.endswith("c")
    assert len(notes) == 1 and "surrogates" in notes[0]
    text.encode("utf-8")  # a tokenizer can take it
    probes, notes = parse_probes(b"bad \xff byte\x00")
    assert probes == [Probe("bad \ufffd byte")] and len(notes) == 2


@pytest.mark.parametrize("template, fillers, message", [
    ("Paris is located in", "France, Italy", "no line has {}"),
    ("{} is located in the city of", " , ", "filler 1 of 2 is empty"),
    ("{} is located in the city of", "Eiffel Tower, ", "filler 2 of 2 is empty"),
])
def test_bad_templates_are_refused(template, fillers, message):
    with pytest.raises(ProbeError, match=re.escape(message)):
        parse_probes(template, fillers)


def test_expand_template_refuses_missing_slot_and_fillers():
    with pytest.raises(ProbeError, match="no \\{\\} for the fillers"):
        expand_template("Paris is located in", ["x"])
    for fillers in ([], None):
        with pytest.raises(ProbeError, match="no fillers"):
            expand_template("{} is located in", fillers)
    with pytest.raises(ProbeError, match="filler 2 of 3 is empty"):
        expand_template("{} is located in", ["a", "  ", "b"])


def test_too_many_probes_are_refused():
    ok, _ = parse_probes("\n".join(f"probe number {i}" for i in range(MAX_PROBES)))
    assert len(ok) == MAX_PROBES
    with pytest.raises(ProbeError, match=f"{MAX_PROBES + 1} probes at once; a set takes at most {MAX_PROBES}"):
        parse_probes("\n".join(f"probe number {i}" for i in range(MAX_PROBES + 1)))
    with pytest.raises(ProbeError, match=f"at most {MAX_PROBES}"):
        parse_probes("{} is located in", ", ".join(f"place {i}" for i in range(MAX_PROBES + 1)))


@pytest.mark.parametrize("text", [
    "\u200b", "\ufeffhello", "a\r\nb", "\x85\x85x", "{}", "{}\n{}", "\n\n\nx\n\n", "\udcff", b"\xed\xa0\x80",
    "\U0001F600 emoji", "x" * MAX_CHARS, "\t", "\x7f", b"\x00",
], ids=lambda t: ascii(t)[:24])
def test_odd_input_gives_probes_or_a_probe_error_only(text):
    for fillers in ("", "a, b"):
        try:
            probes, notes = parse_probes(text, fillers)
        except ProbeError as err:
            assert str(err)  # a message for the page
            continue
        assert probes and all(isinstance(p, Probe) and p.text.strip() for p in probes)
        for p in probes:
            p.text.encode("utf-8")
            assert not any(ord(ch) < 32 and ch not in "\n\t" for ch in p.text)
        assert all(isinstance(n, str) for n in notes)


# --- 7. templates and probe sets on two models ---------------------------------------------------------------

TEMPLATE = "{} is located in the city of"
FILLERS = ["The cat", "A rolling stone", "Love", "The law of science"]


@pytest.fixture(scope="module")
def pair(tiny_models, tmp_path_factory):
    """The tiny Llama (a) and a copy of it (b) with one weight perturbed: its last block's MLP down
    projection, so the models share the tokens and differ in their next-token distributions."""
    from transformers import AutoModelForCausalLM

    a = tiny_models["llama"]
    b = tmp_path_factory.mktemp("perturbed-llama")
    shutil.copytree(a, b, dirs_exist_ok=True)
    model = AutoModelForCausalLM.from_pretrained(b)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        w = model.model.layers[2].mlp.down_proj.weight
        w += 0.3 * torch.randn(w.shape, generator=g)
    model.save_pretrained(b)
    base = tmp_path_factory.mktemp("pair")
    views = ("  text: {type: text}\n  lens: {type: logit_lens, model: a}\n"
             "  diff: {type: model_diff, model: a, other: b}\n  probes: {type: probes, token: ' the'}\n")
    fillers = ", ".join(FILLERS)
    extra = f"probes:\n  - {{template: '{TEMPLATE}', fillers: [{fillers}]}}\n"  # the set sessions open with
    spec = spec_text(a, views, extra).replace(f"model: path:{a}\n",
                                       f"models: {{a: {{source: 'path:{a}'}}, b: {{source: 'path:{b}'}}}}\n")
    assert "models: {a:" in spec
    board = Board.from_text(spec, base_dir=base, cache_dir=base / "store")
    board.compute(progress=False)  # model_diff's dataset KL, so its view renders
    return board, {"a": a, "b": b}


def test_template_expands_to_the_expected_texts():
    want = ["The cat is located in the city of", "A rolling stone is located in the city of",
            "Love is located in the city of", "The law of science is located in the city of"]
    assert expand_template(TEMPLATE, FILLERS) == want
    assert expand_template(TEMPLATE, [" Love  "]) == ["Love is located in the city of"]  # fillers are stripped
    probes, notes = parse_probes(TEMPLATE, "The cat, A rolling stone,Love\nThe law of science")
    assert [p.text for p in probes] == want and notes == []
    # several lines: each a probe (templates among them expanded), blank lines and repeats dropped
    probes, _ = parse_probes(f"Paris\n\n{TEMPLATE}\nParis\n", "Rome, Oslo")
    assert [p.text for p in probes] == ["Paris", "Rome is located in the city of", "Oslo is located in the city of"]
    assert parse_probes(TEMPLATE)[0] == [Probe(TEMPLATE)]  # no fillers: the line as typed


def test_a_probe_set_compares_two_models_in_one_forward_each(pair):
    board, paths = pair
    ex = board.executor
    # the spec's probes: section is the set every session opens with
    probes = board.new_focus().probes
    assert [p.text for p in probes] == expand_template(TEMPLATE, FILLERS) and board.new_focus().text is None
    counters = {m: Counter(ex.model(m).model) for m in ("a", "b")}
    try:
        before = ex.forward_passes
        rows = board.compare_probes(probes, token=" the")
        assert ex.forward_passes == before + 2 and {m: c.calls for m, c in counters.items()} == {"a": 1, "b": 1}
        assert board.compare_probes(probes, token=" the") == rows  # memoized
        sets = {m: ex.probe_set(m, probes) for m in ("a", "b")}
        html = render_all(board, board.new_focus(), only=["probes"])["probes"]  # it reads the same two forwards
        assert "lf-probes-empty" not in html and "KL(" in html
        assert ex.forward_passes == before + 2 and counters["a"].calls == counters["b"].calls == 1
        # typed in a session: the board's own focus takes the set and focuses its first probe
        other = board.probe("{} is located in", fillers=FILLERS[:2])
        assert [p.text for p in other] == ["The cat is located in", "A rolling stone is located in"]
        assert board.focus.probes == other and board.focus.text == other[0].text and board.focus.position is None
        assert len(board.compare_probes(token=" the")) == 2  # default: board.focus.probes
        assert ex.forward_passes == before + 4 and counters["a"].calls == counters["b"].calls == 2
    finally:
        for c in counters.values():
            c.close()

    _, tok = reference(str(paths["a"]))
    token_id = tok(" the", add_special_tokens=False)["input_ids"][0]
    lengths = []
    moved = 0.0
    for probe, row in zip(probes, rows):
        ids = ref_ids(paths["a"], probe.text)
        lengths.append(len(ids))
        lp = {}
        for m in ("a", "b"):
            model, _ = reference(str(paths[m]))
            with torch.no_grad():
                lp[m] = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0, -1].double(), -1)
            np.testing.assert_allclose(sets[m]["logprobs"][probes.index(probe)], lp[m].numpy(), atol=1e-4, rtol=1e-5)
            p = lp[m].exp()
            assert row[f"top_id:{m}"] == int(p.argmax()) or float(p.max() - p[row[f"top_id:{m}"]]) < 1e-5
            assert row[f"top:{m}"] == tok.decode([row[f"top_id:{m}"]], clean_up_tokenization_spaces=False)
            assert row[f"p:{m}"] == pytest.approx(float(p.max()), abs=1e-5, rel=1e-4)
            assert row[f"p_token:{m}"] == pytest.approx(float(p[token_id]), abs=1e-5, rel=1e-4)
        kl = float((lp["a"].exp() * (lp["a"] - lp["b"])).sum())
        assert row["kl"] == pytest.approx(kl, abs=1e-5, rel=1e-4)
        delta = float(lp["b"][token_id].exp() - lp["a"][token_id].exp())
        assert row["delta_token"] == pytest.approx(delta, abs=1e-5)
        assert row["probe"] == probe.text and row["tokens"] == len(ids) and row["cut"] == 0
        moved = max(moved, kl)
    assert len(set(lengths)) > 1  # probes of different lengths: padded in the batch
    np.testing.assert_array_equal(sets["a"]["lengths"], lengths)
    assert moved > 1e-3  # the perturbed model does predict differently


def test_pair_lens_on_a_probe_equals_both_plain_forwards(pair):
    board, paths = pair
    ex = board.executor
    node = board.views["diff"].lens_node()
    probe = Probe("Love is located in the city of")
    ids = ref_ids(paths["a"], probe.text)
    T = len(ids)
    for i, position in enumerate((None, 2)):
        before = ex.forward_passes
        res = ex.lookup(node, sample=probe, position=position, top=5)
        assert ex.forward_passes == before + (2 if i == 0 else 0)  # one forward per model, memoized
        pos = T - 1 if position is None else position
        assert res.meta["position"] == pos
        finals = {}
        for tag, m in (("a", "a"), ("b", "b")):
            model, _ = reference(str(paths[m]))
            ref = plain_forward(paths[m], "llama", ids)
            L = n_layers_of(model, "llama")
            # rows: the embedding and the output of blocks 0..L-2 through the lens, then the model's own output
            ps = [lens_logp(model, "llama", ref["hidden"][l][pos]).exp() for l in range(L)]
            ps.append(torch.softmax(ref["logits"][pos].double(), -1))
            ps = torch.stack(ps)
            top = ps.max(-1)
            np.testing.assert_allclose(res[f"prob_{tag}"], top.values.numpy(), atol=2e-5, rtol=1e-4)
            got = ps.gather(-1, torch.as_tensor(res[f"top_{tag}"].astype(np.int64))[:, None]).squeeze(-1)
            np.testing.assert_allclose(got.numpy(), res[f"prob_{tag}"], atol=2e-5, rtol=1e-4)
            finals[tag] = ps[-1]
        assert_moved_tokens(res, finals, k=5, atol=2e-5)
    # the model_diff view follows the probe
    html = render_all(board, Focus(model="a", text=probe.text))
    assert "lf-probe-name" in html["diff"] and "lf-probe-name" in html["lens"]


# --- 8. SmolLM2 ----------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_probe_on_smollm2_equals_a_plain_forward(smollm2_board, smollm2_cache):
    b = smollm2_board
    text = "The capital of France is"
    probe = Probe(text)
    loaded = b.executor.model("main")
    model, tok = loaded.model, loaded.tokenizer
    ids = tok(text, add_special_tokens=True)["input_ids"]
    assert b.executor.probe_tokens("main", probe)["ids"].tolist() == ids
    before = b.executor.forward_passes
    got = b.executor.focus("main", probe)
    assert b.executor.forward_passes == before + 1
    row = got[b.views["lens"].lens_node(b.spec.dataset.max_tokens)]
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids]), output_hidden_states=True, use_cache=False)
    hs, L = out.hidden_states, len(out.hidden_states) - 1
    norm, E = model.model.norm, model.lm_head.weight
    with torch.no_grad():  # hidden_states[L] carries the final norm: the last row is the output itself
        logps = torch.stack([torch.log_softmax((norm(hs[l][0]) @ E.T).double(), -1) for l in range(L)]
                            + [torch.log_softmax(out.logits[0].double(), -1)])
    p = logps.exp()
    y = logps[-1].argmax(-1)
    top = p.topk(5, -1)
    # probabilities over a 49k vocabulary in float32: 1e-4 is float32 precision there
    np.testing.assert_allclose(row["probs"], top.values.numpy(), atol=1e-4, rtol=1e-3)
    gap = (top.values[..., 0] - top.values[..., 1]).numpy()
    assert ((row["ids"][..., 0] == top.indices[..., 0].numpy()) | (gap < 1e-4)).all()
    assert row["ids"][-1, -1, 0] == int(out.logits[0, -1].argmax())
    np.testing.assert_allclose(row["prob"], p.gather(-1, y.view(1, -1, 1).expand(L + 1, -1, 1)).squeeze(-1).numpy(),
                               atol=1e-4, rtol=1e-3)
    np.testing.assert_allclose(row["kl"], (logps[-1].exp() * (logps[-1] - logps)).sum(-1).numpy(), atol=1e-3, rtol=1e-3)

    # neuron activations at one layer: a board on the same store and dataset with a neurons view only
    # (no dataset pass to run), against this file's hook on that layer's down projection
    spec = SMALL_SPEC.read_text().split("\nviews:")[0] + "\nviews:\n  neurons: {type: neurons}\n"
    assert "run: {batch_size: 4}" in spec
    spec = spec.replace("run: {batch_size: 4}", "run: {batch_size: 4, keep_focus_mb: 0}")  # no kept-focus pass
    nb = Board.from_text(spec, base_dir=SMALL_SPEC.parent, cache_dir=smollm2_cache)
    assert nb.compute(progress=False).forward_passes == 0
    layer = 10
    acts = nb.executor.focus("main", probe)[nb.views["neurons"].acts_node(nb.spec.dataset.max_tokens)]["acts"]
    seen = {}
    handle = model.model.layers[layer].mlp.down_proj.register_forward_pre_hook(
        lambda mod, args: seen.__setitem__("m", args[0][0].detach().clone()))
    try:
        with torch.no_grad():
            model(input_ids=torch.tensor([ids]), use_cache=False)
    finally:
        handle.remove()
    assert acts.shape == (L, len(ids), seen["m"].shape[-1])
    np.testing.assert_allclose(acts[layer], seen["m"].numpy(), atol=1e-4, rtol=1e-4)
