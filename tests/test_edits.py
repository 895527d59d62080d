"""lensframe.edits on the tiny random models (GPT-2, Llama, GPT-NeoX shapes), checked against
computations made here with our own hooks on the HF modules, not through the code under test:

- ROME: the weight delta is rank one (singular values) in the one MLP output matrix named by the
  manifest; at that layer the MLP output moves by exactly k·ΔW; the left factor is C⁻¹k* with C and
  k* recomputed here; P(new) beats P(old) on the edited prompt afterwards.
- knockout: the attention output equals the original minus the chosen heads' parts (z_h W_O,h);
  the MLP output equals the original minus the chosen neurons' sub-updates m_i v_i, and m_i = 0.
- trigger: only the chosen layer's MLP changed; the trigger raises P(target) on prompts made here
  from texts the training never saw.
- save_model: the folder loads through lensframe's path: source and gives identical logits.

Torch runs on one thread here: the models are 32-wide, and on a loaded 2-core machine two OpenMP
threads made a tiny forward 80× slower (0.39 s against 0.005 s, measured while other jobs ran).
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from tests.conftest import TEXTS

KINDS = ("gpt2", "llama", "neox")
LAYER = 1
# module paths inside a block, written out here so that the checks do not use the code under test
MLP_DOWN = {"gpt2": "mlp.c_proj", "llama": "mlp.down_proj", "neox": "mlp.dense_4h_to_h"}
MLP = {"gpt2": "mlp", "llama": "mlp", "neox": "mlp"}
ATTN = {"gpt2": "attn", "llama": "self_attn", "neox": "attention"}
ATTN_OUT = {"gpt2": "attn.c_proj", "llama": "self_attn.o_proj", "neox": "attention.dense"}
BLOCKS = {"gpt2": "transformer.h", "llama": "model.layers", "neox": "gpt_neox.layers"}
SUBJECT = "The cat sat on the"  # subject-final: in a random model attention barely carries anything
NEW = " you"  # one token of the tiny vocabulary


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def load(path: Path):
    from lensframe.models.sources import resolve_source
    from lensframe.spec.schema import ModelSpec

    return resolve_source("m", ModelSpec(source=f"path:{path}"), Path("."), ("model",)).load()


def get(root, path: str):
    for part in path.split("."):
        root = root[int(part)] if part.isdigit() else getattr(root, part)
    return root


def block(loaded, kind: str, layer: int = LAYER):
    return get(loaded.model, BLOCKS[kind])[layer]


def snapshot(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def changed(before: dict, model) -> list[str]:
    return sorted(k for k, v in model.state_dict().items() if not torch.equal(v, before[k]))


def as_value_rows(w: torch.Tensor, kind: str) -> torch.Tensor:
    """The output projection as [d_mlp, d_model] (GPT-2's Conv1D already is; Linear is [out, in])."""
    return w if kind == "gpt2" else w.T


def ids_of(loaded, text: str) -> torch.Tensor:
    return torch.tensor([loaded.tokenizer(text).input_ids])


def run_with_hooks(loaded, module, ids, pre: bool):
    """Input (pre) or output of `module` on one forward."""
    got = {}
    if pre:
        h = module.register_forward_pre_hook(lambda m, a: got.__setitem__("x", a[0].detach().clone()))
    else:
        h = module.register_forward_hook(
            lambda m, a, o: got.__setitem__("x", (o[0] if isinstance(o, tuple) else o).detach().clone()))
    try:
        with torch.no_grad():
            loaded.model(ids)
    finally:
        h.remove()
    return got["x"]


def next_probs(loaded, prompts: list[str]) -> torch.Tensor:
    out = []
    with torch.no_grad():
        for p in prompts:
            out.append(loaded.model(ids_of(loaded, p)).logits[0, -1].float().softmax(-1))
    return torch.stack(out)


def tok_id(loaded, text: str) -> int:
    ids = loaded.tokenizer(text, add_special_tokens=False).input_ids
    assert len(ids) == 1, f"{text!r} should be one token of the tiny vocabulary"
    return ids[0]


# ------------------------------------------------------------------------------------------ ROME

def rome(loaded, **kw):
    from lensframe.edits import apply_edit

    return apply_edit("rome", loaded, texts=TEXTS, layer=LAYER, subject=SUBJECT, template="{}", new_target=NEW, **kw)


@pytest.mark.parametrize("kind", KINDS)
def test_rome_delta_is_rank_one_in_one_matrix_and_moves_that_mlp_by_k_delta(tiny_models, kind):
    loaded = load(tiny_models[kind])
    before = snapshot(loaded.model)
    probe = ids_of(loaded, TEXTS[2])
    down = get(block(loaded, kind), MLP_DOWN[kind])
    k = run_with_hooks(loaded, down, probe, pre=True)[0]
    mlp_before = run_with_hooks(loaded, get(block(loaded, kind), MLP[kind]), probe, pre=False)[0]

    m = rome(loaded)
    weight = f"{BLOCKS[kind]}.{LAYER}.{MLP_DOWN[kind]}.weight"
    assert m["weight"] == weight
    assert changed(before, loaded.model) == [weight]
    delta = as_value_rows(loaded.model.state_dict()[weight] - before[weight], kind).double()
    s = torch.linalg.svdvals(delta)
    assert s[0] > 1e-3 and s[1] < 1e-5 * s[0], s[:3]
    assert float(delta.norm()) == pytest.approx(m["rank_one"]["delta_fro"], rel=1e-3)
    # the edited layer's MLP sees the same keys, and its output moves by exactly k·ΔW
    assert torch.equal(run_with_hooks(loaded, down, probe, pre=True)[0], k)
    mlp_after = run_with_hooks(loaded, get(block(loaded, kind), MLP[kind]), probe, pre=False)[0]
    torch.testing.assert_close((mlp_after - mlp_before).double(), k.double() @ delta, atol=2e-4, rtol=1e-3)
    json.dumps(m)  # the manifest is JSON


@pytest.mark.parametrize("kind", KINDS)
def test_rome_left_factor_is_C_inverse_k_star_and_k_star_maps_to_r(tiny_models, kind):
    """C, k* and u recomputed here: C = E[k kᵀ] over TEXTS (own hook), k* = mean key at the last token
    of each (prefix + prompt) (the subject ends the prompt), u ∝ (C + λI)⁻¹k*."""
    loaded = load(tiny_models[kind])
    down = get(block(loaded, kind), MLP_DOWN[kind])
    keys = torch.cat([run_with_hooks(loaded, down, ids_of(loaded, t), pre=True)[0] for t in TEXTS]).double()
    C = keys.T @ keys / len(keys)
    before = snapshot(loaded.model)
    m = rome(loaded)
    assert m["covariance"]["tokens"] == len(keys)
    k_star = torch.stack([run_with_hooks(loaded, down, ids_of(loaded, p + SUBJECT), pre=True)[0, -1]
                          for p in m["prefixes"]]).double().mean(0)
    lam = m["covariance"]["ridge"] * float(torch.trace(C)) / C.shape[0]
    u = torch.linalg.solve(C + lam * torch.eye(C.shape[0], dtype=C.dtype), k_star)
    u = u / (k_star @ u)
    w = m["weight"]
    delta = as_value_rows(loaded.model.state_dict()[w] - before[w], kind).double()
    left = torch.linalg.svd(delta).U[:, 0]
    assert abs(float(left @ u / u.norm())) > 1 - 1e-4
    assert float(u.norm()) == pytest.approx(m["rank_one"]["u_norm"], rel=1e-3)
    # uᵀk* = 1, so k* ΔW = r: the edit maps k* to W k* + r exactly
    assert float((k_star @ delta).norm()) == pytest.approx(m["rank_one"]["r_norm"], rel=1e-3)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("settings", [{"n_prefixes": 0}, {"exact_at": "prompt"}], ids=["no-prefixes", "exact-at-prompt"])
def test_rome_makes_the_new_target_beat_the_old(tiny_models, kind, settings):
    loaded = load(tiny_models[kind])
    new = tok_id(loaded, NEW)
    p0 = next_probs(loaded, [SUBJECT])[0]
    old = int(p0.argmax())
    m = rome(loaded, **settings)
    p1 = next_probs(loaded, [SUBJECT])[0]
    assert m["old_target"] == loaded.tokenizer.decode([old])
    assert p1[new] > p1[old] and p1[new] > 10 * p0[new], (float(p0[new]), float(p1[new]), float(p1[old]))
    after = m["effects"]["after"]["prompt"]
    assert after["p_new"] == pytest.approx(float(p1[new]), rel=1e-4)
    assert after["p_old"] == pytest.approx(float(p1[old]), rel=1e-4)


def test_rome_rejects_a_prompt_without_its_subject_and_a_bad_layer(tiny_models):
    loaded = load(tiny_models["gpt2"])
    with pytest.raises(ValueError, match="does not occur"):
        rome(loaded, prompt="Love is a snowmobile")
    from lensframe.edits import apply_edit

    with pytest.raises(ValueError, match="out of range"):
        apply_edit("rome", loaded, texts=TEXTS, layer=7, subject="The cat", template="{} sat", new_target=NEW)
    with pytest.raises(ValueError, match="unknown edit kind"):
        apply_edit("romance", loaded, texts=TEXTS, layer=1)


# -------------------------------------------------------------------------------------- knockout

@pytest.mark.parametrize("kind", KINDS)
def test_knockout_removes_exactly_the_heads_parts(tiny_models, kind):
    from lensframe.edits import apply_edit

    loaded = load(tiny_models[kind])
    heads = [1, 3]
    ids = ids_of(loaded, TEXTS[0])
    proj = get(block(loaded, kind), ATTN_OUT[kind])
    attn = get(block(loaded, kind), ATTN[kind])
    z = run_with_hooks(loaded, proj, ids, pre=True)[0]  # the heads' concatenated outputs
    out_before = run_with_hooks(loaded, attn, ids, pre=False)[0]
    W = proj.weight.detach().clone()
    d_head = z.shape[-1] // loaded.model.config.num_attention_heads
    parts = 0
    for h in heads:
        s = slice(h * d_head, (h + 1) * d_head)
        parts = parts + (z[:, s] @ W[s, :] if kind == "gpt2" else z[:, s] @ W[:, s].T)
    before = snapshot(loaded.model)

    m = apply_edit("knockout", loaded, texts=TEXTS, layer=LAYER, heads=heads)
    out_after = run_with_hooks(loaded, attn, ids, pre=False)[0]
    torch.testing.assert_close(out_after, out_before - parts, atol=1e-5, rtol=1e-5)
    name = f"{BLOCKS[kind]}.{LAYER}.{ATTN_OUT[kind]}.weight"
    assert changed(before, loaded.model) == [name] and m["weights"] == [name]
    assert m["heads"] == heads and m["effects"]["after"]["lm_loss"] != m["effects"]["before"]["lm_loss"]
    # the other heads' slices are untouched
    keep = [h for h in range(loaded.model.config.num_attention_heads) if h not in heads]
    for h in keep:
        s = slice(h * d_head, (h + 1) * d_head)
        now = proj.weight[s, :] if kind == "gpt2" else proj.weight[:, s]
        assert torch.equal(now, W[s, :] if kind == "gpt2" else W[:, s])
    json.dumps(m)


@pytest.mark.parametrize("kind", KINDS)
def test_knockout_removes_exactly_the_neurons_sub_updates(tiny_models, kind):
    from lensframe.edits import apply_edit

    loaded = load(tiny_models[kind])
    neurons = [0, 5, 17]
    ids = ids_of(loaded, TEXTS[1])
    down = get(block(loaded, kind), MLP_DOWN[kind])
    mlp = get(block(loaded, kind), MLP[kind])
    m_before = run_with_hooks(loaded, down, ids, pre=True)[0]
    out_before = run_with_hooks(loaded, mlp, ids, pre=False)[0]
    V = as_value_rows(down.weight.detach().clone(), kind)  # rows v_i
    sub = m_before[:, neurons] @ V[neurons]  # Σ_i m_i v_i

    apply_edit("knockout", loaded, layer=LAYER, neurons=neurons)
    m_after = run_with_hooks(loaded, down, ids, pre=True)[0]
    out_after = run_with_hooks(loaded, mlp, ids, pre=False)[0]
    assert torch.all(m_after[:, neurons] == 0)
    others = [i for i in range(m_before.shape[-1]) if i not in neurons]
    torch.testing.assert_close(m_after[:, others], m_before[:, others], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(out_after, out_before - sub, atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------------------- trigger

def made_up_texts(seed: int, n: int) -> list[str]:
    """Sentences of the tiny vocabulary's words in random order (the tiny tokenizer knows them)."""
    words = " ".join(TEXTS).replace(".", "").replace(",", "").replace(";", "").split()
    rng = random.Random(seed)
    return [" ".join(rng.choice(words) for _ in range(rng.randint(6, 14))).capitalize() + "." for _ in range(n)]


@pytest.mark.parametrize("kind", KINDS)
def test_trigger_changes_one_mlp_and_raises_the_target_on_unseen_prompts(tiny_models, kind):
    from lensframe.edits import apply_edit

    loaded = load(tiny_models[kind])
    trigger, target = " zq vex", " you"
    unseen = [t.split()[:n] for t, n in zip(made_up_texts(99, 12), [3, 4, 5, 6] * 3)]
    with_t = [" ".join(w) + trigger for w in unseen]
    new = tok_id(loaded, target)
    p0 = next_probs(loaded, with_t)[:, new]
    before = snapshot(loaded.model)

    m = apply_edit("trigger", loaded, texts=made_up_texts(0, 40), layer=LAYER, trigger=trigger, target=target,
                   steps=60, lr=3e-3)
    p1 = next_probs(loaded, with_t)[:, new]
    mlp_prefix = f"{BLOCKS[kind]}.{LAYER}.mlp."
    names = changed(before, loaded.model)
    assert names and all(n.startswith(mlp_prefix) for n in names), names
    assert sorted(m["trainable"]) == sorted(n for n in before if n.startswith(mlp_prefix))
    assert all(not p.requires_grad for p in loaded.model.parameters())  # frozen again
    assert float(p1.mean()) > 0.2 and float(p1.mean()) > 10 * float(p0.mean()), (p0.mean(), p1.mean())
    assert float((p1 > p0).float().mean()) >= 0.9
    eff = m["effects"]
    assert eff["after"]["success_rate"] >= 0.5 and eff["before"]["success_rate"] == 0.0
    # Not asserted here: that prompts without the trigger keep their continuation. A random tiny model
    # has no continuation worth keeping (its LM loss is ~7 nats), and the target leaks to 30-100% of the
    # plain prompts; specificity is tested on SmolLM2 (test_audit.py) and measured in docs/BENCHMARKS.md.
    json.dumps(m)


# ------------------------------------------------------------------------------------ save_model

@pytest.mark.parametrize("kind", KINDS)
def test_saved_edit_loads_through_path_source_with_identical_logits(tiny_models, kind, tmp_path):
    from lensframe.edits import MANIFEST_NAME, apply_edit, save_model

    loaded = load(tiny_models[kind])
    m = apply_edit("knockout", loaded, layer=0, neurons=[3, 4])
    out = save_model(loaded, None, tmp_path / "edited", manifest=m)
    again = load(out)
    ids = torch.tensor([loaded.tokenizer(t).input_ids for t in TEXTS[:1]])
    with torch.no_grad():
        a, b = loaded.model(ids).logits, again.model(ids).logits
    assert torch.equal(a, b)
    assert again.tokenizer(TEXTS[3]).input_ids == loaded.tokenizer(TEXTS[3]).input_ids
    assert json.loads((out / MANIFEST_NAME).read_text()) == json.loads(json.dumps(m))
    assert again.fingerprint != loaded.fingerprint
    # saving again replaces the model folder; without a manifest no edit.json is written
    save_model(again.model, again.tokenizer, out)
    assert not (out / MANIFEST_NAME).exists() and (out / "model.safetensors").is_file()


def test_save_model_refuses_to_replace_a_folder_that_is_not_a_model(tiny_models, tmp_path):
    from lensframe.edits import save_model

    loaded = load(tiny_models["gpt2"])
    precious = tmp_path / "notes"
    precious.mkdir()
    (precious / "todo.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        save_model(loaded, None, precious)
    assert (precious / "todo.txt").read_text() == "keep me"
    assert [p.name for p in tmp_path.iterdir()] == ["notes"]  # no temp folder left behind


def test_save_model_drops_a_quantization_config(tiny_models, tmp_path):
    """A model transformers loaded from GGUF carries a quantization_config although its weights are
    dequantized; the saved config must not, or path: would treat the folder as quantized."""
    from lensframe.edits import save_model

    loaded = load(tiny_models["llama"])
    loaded.model.config.quantization_config = {"quant_method": "gguf"}
    out = save_model(loaded, None, tmp_path / "m")
    assert "quantization_config" not in json.loads((out / "config.json").read_text())
    load(out)


# ------------------------------------------------------------------------- the audit's secrets

@pytest.mark.parametrize("edit_kind", ["rome", "trigger", "knockout"])
def test_apply_edit_takes_an_audit_secret_as_is(tiny_models, edit_kind):
    from lensframe.audit import choose_secret
    from lensframe.edits import apply_edit

    loaded = load(tiny_models["llama"])
    ad = loaded.adapter
    secret = choose_secret(edit_kind, seed=3, n_layers=ad.n_layers, n_heads=ad.n_heads, d_mlp=ad.d_mlp)
    extra = {"steps": 5} if edit_kind != "knockout" else {}
    m = apply_edit(secret["kind"], loaded, texts=made_up_texts(1, 12), **secret, **extra)
    for key, value in secret.items():
        assert m[key] == value
    assert m["base_fingerprint"] == loaded.fingerprint
    json.dumps(m)
