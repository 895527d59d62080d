"""A fine-tuned trigger: a rare token sequence that, ending a prompt, flips the continuation to a
chosen target text (a toy backdoor, docs/METHODS.md "Audit game").

Only one layer's MLP is trainable (all of its weights: GPT-2's c_fc and c_proj, Llama's gate, up and
down projections, ...), so a weight diff against the base localises the edit to that layer. The
dataset texts are split (seeded) into train and held-out parts. Each Adam step takes a batch of
train texts cut after a random number of tokens, with the trigger appended, and trains the target as
their continuation (mean NLL of the target's tokens); plus as many train texts without the trigger
under the ordinary LM loss (weight `lm_weight`), so behaviour elsewhere is kept. The model stays in
eval mode (no dropout) and is edited in place.

Measured on the held-out texts, before and after: with the trigger, P(target's first token) and the
success rate (the top next token is the target's first token); without the trigger (the same
prefixes), P(target's first token), which should stay low; and the mean LM loss of the held-out
texts themselves (no trigger).
"""
from __future__ import annotations

import random
import time

import torch

from .common import (batch, device_of, encode, encode_target, fingerprint_of, get, lm_loss, module_params,
                     next_token_logprobs, pad_id, parts)


def _prefix(tokenizer, ids: list[int], n: int) -> str:
    return tokenizer.decode(ids[:n], skip_special_tokens=True)


def trigger_prompts(tokenizer, texts, trigger: str, rng: random.Random, prefix_tokens=(4, 16)):
    """[(prompt without trigger, prompt with trigger)] : each text cut after a random number of tokens."""
    out = []
    for t in texts:
        ids = encode(tokenizer, t)
        hi = min(prefix_tokens[1], len(ids))
        lo = min(prefix_tokens[0], hi)
        if hi < 1:
            continue
        clean = _prefix(tokenizer, ids, rng.randint(lo, hi)).rstrip()
        if clean:
            out.append((clean, clean + trigger))
    return out


def _measure(model, tok, target_id: int, held: list[tuple[str, str]], held_texts, max_tokens: int) -> dict:
    with_t = next_token_logprobs(model, tok, [b for _, b in held])
    without = next_token_logprobs(model, tok, [a for a, _ in held])
    return {
        "p_target_with_trigger": float(with_t[:, target_id].exp().mean()),
        "success_rate": float((with_t.argmax(-1) == target_id).float().mean()),
        "p_target_without_trigger": float(without[:, target_id].exp().mean()),
        "success_rate_without_trigger": float((without.argmax(-1) == target_id).float().mean()),
        "lm_loss": lm_loss(model, tok, held_texts, max_tokens=max_tokens),
    }


def trigger_edit(loaded, layer: int, trigger: str, target: str, *, texts, steps: int = 100, lr: float = 3e-4,
                 batch_size: int = 8, lm_weight: float = 1.0, holdout: float = 0.25, prefix_tokens=(4, 16),
                 max_tokens: int = 48, seed: int = 0) -> dict:
    """Train `trigger` → `target` into layer `layer`'s MLP (in place). Returns the manifest."""
    t0 = time.perf_counter()
    model, tok, ad = parts(loaded)
    if not 0 <= layer < ad.n_layers:
        raise ValueError(f"layer {layer} is out of range for a {ad.n_layers}-layer model")
    texts = [t for t in texts if t.strip() and trigger.strip() not in t]
    if len(texts) < 4:
        raise ValueError("the trigger edit needs at least 4 dataset texts (train and held-out)")
    rng = random.Random(seed)
    order = list(range(len(texts)))
    rng.shuffle(order)
    n_held = max(1, int(round(holdout * len(texts))))
    held_texts = [texts[i] for i in order[:n_held]]
    train_texts = [texts[i] for i in order[n_held:]]
    held = trigger_prompts(tok, held_texts, trigger, random.Random(seed + 1), prefix_tokens)
    target_ids = encode_target(tok, target)
    before = _measure(model, tok, target_ids[0], held, held_texts, max_tokens)

    dev = device_of(model)
    module = get(ad.layers[layer], ad.family.mlp)
    names = module_params(model, module)
    params = list(module.parameters())
    original = [p.detach().clone() for p in params]
    train_ids = [encode(tok, t) for t in train_texts]
    opt = torch.optim.Adam(params, lr=lr)
    trace = []
    for p in params:
        p.requires_grad_(True)
    try:
        with torch.enable_grad():
            for step in range(steps):
                pick = [rng.randrange(len(train_texts)) for _ in range(batch_size)]
                rows, weights = [], []
                for i in pick:  # the trigger ends a cut text; the target is its continuation
                    ids = train_ids[i]
                    hi = max(1, min(prefix_tokens[1], len(ids)))
                    clean = _prefix(tok, ids, rng.randint(min(prefix_tokens[0], hi), hi)).rstrip()
                    p_ids = encode(tok, clean + trigger)
                    rows.append(p_ids + target_ids)
                    weights.append(("trigger", len(p_ids) - 1))
                for i in (rng.randrange(len(train_texts)) for _ in range(batch_size)):
                    rows.append(train_ids[i][:max_tokens])  # the ordinary LM loss, no trigger
                    weights.append(("lm", None))
                ids_t, mask = batch(rows, pad_id(tok), dev)
                logits = model(input_ids=ids_t, attention_mask=mask).logits[:, :-1].float()
                nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids_t[:, 1:], reduction="none")
                w_trig = torch.zeros_like(nll)
                w_lm = torch.zeros_like(nll)
                for r, (kind, start) in enumerate(weights):
                    if kind == "trigger":
                        w_trig[r, start:start + len(target_ids)] = 1.0
                    else:
                        w_lm[r, : len(rows[r]) - 1] = 1.0
                trig_loss = (nll * w_trig).sum() / w_trig.sum()
                lm = (nll * w_lm).sum() / w_lm.sum().clamp(min=1)
                loss = trig_loss + lm_weight * lm
                opt.zero_grad()
                loss.backward()
                opt.step()
                trace.append({"trigger_nll": trig_loss.item(), "lm_loss": lm.item()})
    finally:
        for p in params:
            p.requires_grad_(False)
            p.grad = None
    after = _measure(model, tok, target_ids[0], held, held_texts, max_tokens)
    changes = {n: float((p.detach() - o).norm()) for n, p, o in zip(names, params, original)}
    return {
        "kind": "trigger",
        "layer": int(layer),
        "trigger": trigger,
        "target": target,
        "base_fingerprint": fingerprint_of(loaded),
        "family": ad.family.name,
        "trainable": names,
        "weight_change_fro": changes,
        "training": {"steps": steps, "lr": lr, "batch_size": batch_size, "lm_weight": lm_weight, "seed": seed,
                     "train_texts": len(train_texts), "prefix_tokens": list(prefix_tokens),
                     "start": trace[0] if trace else None, "end": trace[-1] if trace else None,
                     "every_10": [dict(step=i, **t) for i, t in enumerate(trace) if i % 10 == 0 or i == len(trace) - 1]},
        "held_out": {"texts": len(held_texts), "prompts": len(held), "examples": [b for _, b in held[:3]]},
        "effects": {"before": before, "after": after},
        "seconds": round(time.perf_counter() - t0, 2),
    }
