"""Text deep dream (Bäuerle and Wexler 2020, "What does BERT dream of?"; docs/METHODS.md).

A span of n input positions is a relaxed one-hot Z [n, V]. The model reads soft tokens
softmax(Z / T) · W_E through `inputs_embeds` (so whatever the model adds to embeddings, positions or
scaling, it still adds), Adam raises the target, and the temperature T is annealed so the soft
tokens approach real ones. Every step the snapped text (argmax of Z) is evaluated too: the honest
headline is the snapped activation, not the soft one.

Only Z is optimised: gradients are taken with torch.autograd.grad(loss, [Z]), so autograd never
computes, let alone accumulates, a gradient for any weight. Everything model-specific comes from the
Adapter (embedding matrix, hook names, where to stop the forward); there are no per-family branches.

Two-model targets (logit_diff, kl) compare a model with a reference (the audit game's suspect with
its base): both read the same soft tokens, each through its own embedding matrix (an edit may have
touched one), so each step runs two forwards and the gradient reaches Z through both.

This module is pure computation: no store, no Panel. lensframe.dreams runs it for a board.
"""
from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

VERSION = 2  # bump when a change alters what a dream with the same settings returns


from ..dream_spec import DreamSettings, DreamTarget


@dataclass
class DreamStep:
    step: int
    temperature: float
    soft: float  # target on the soft input (nan at step 0, before any optimisation)
    snapped: float  # target on the argmax tokens
    ids: list[int]  # the argmax tokens of the span


@dataclass
class DreamTrace:
    """Everything a dream recorded; the view draws it live, the store keeps it."""

    target: DreamTarget
    settings: DreamSettings
    prefix: list[int]
    start: list[int]
    steps: list[DreamStep] = field(default_factory=list)
    top_ids: Optional[np.ndarray] = None  # [n, k] most probable tokens per position at the end
    top_probs: Optional[np.ndarray] = None
    stopped: bool = False  # stopped before its step budget
    out_of_time: bool = False  # stopped by its time budget (then `stopped` too)
    seconds: float = 0.0

    @property
    def best(self) -> DreamStep:
        """The step whose snapped text scored highest (annealing can lose it later: keep it)."""
        return max(self.steps, key=lambda s: s.snapped)

    @property
    def seconds_per_step(self) -> float:
        return self.seconds / max(1, len(self.steps) - 1)


class _StopForward(Exception):
    """Raised from a hook once the target is captured: later layers cannot change it."""


def _objective(adapter, target: DreamTarget):
    """(hooks, layer after which the forward may stop or None, fn(captures, logits) -> [B] targets)."""
    import torch

    pos = target.position
    if target.kind == "neuron":
        hook = f"mlp_post.{target.layer}"
        return {hook}, target.layer, lambda cap, logits: cap[hook][:, pos, target.index].float()
    if target.kind in ("direction", "edit_direction"):
        hook = f"{'resid_post' if target.kind == 'direction' else 'mlp_post'}.{target.layer}"
        d = torch.as_tensor(target.direction, dtype=torch.float32, device=adapter.embed_weight.device)
        d = target.sign * d / d.norm()
        return {hook}, target.layer, lambda cap, logits: cap[hook][:, pos].float() @ d
    return set(), None, lambda cap, logits: torch.log_softmax(logits[:, pos].float(), -1)[:, target.index]


def compare_logits(target: DreamTarget, logits, other_logits):
    """A two-model target from both models' logits [B, T, V]: [B] values."""
    import torch

    a = torch.log_softmax(logits[:, target.position].float(), -1)
    b = torch.log_softmax(other_logits[:, target.position].float().to(a.device), -1)
    if target.kind == "logit_diff":
        return a[:, target.index] - b[:, target.index]
    return (a.exp() * (a - b)).sum(-1)  # KL(P ‖ Q) = Σ p (log p − log q)


def evaluate(adapter, input_ids, target: DreamTarget, other=None) -> np.ndarray:
    """The target on real token ids [B, T] (no gradients): what the snapped text scores. `other`:
    the reference model's Adapter, for a two-model target (it embeds the ids with its own W_E)."""
    import torch

    with torch.no_grad():
        if target.two_models:
            ids_b = input_ids.to(other.embed_weight.device)
            return _value(adapter, other, target, {"input_ids": input_ids}, {"input_ids": ids_b}).cpu().numpy()
        return _run(adapter, target, input_ids=input_ids).cpu().numpy()


def _value(adapter, other, target: DreamTarget, inputs: dict, other_inputs: dict | None = None):
    """The target for one batch of inputs (the reference model reads `other_inputs`)."""
    if target.two_models:
        logits = adapter.model(**inputs, use_cache=False).logits
        return compare_logits(target, logits, other.model(**other_inputs, use_cache=False).logits)
    return _run(adapter, target, **inputs)


def _run(adapter, target: DreamTarget, **inputs):
    hooks, stop_layer, value = _objective(adapter, target)
    with adapter.capture(hooks) as cap, adapter.stop_after(stop_layer, _StopForward):
        logits = None
        try:
            logits = adapter.model(**inputs, use_cache=False).logits
        except _StopForward:
            pass
        return value(cap, logits)


def allowed_tokens(tokenizer, vocab: int) -> np.ndarray:
    """Tokens a dream may use: the tokenizer's real tokens, without special ones (rows of W_E past
    the tokenizer's vocabulary are padding and never trained)."""
    ok = np.zeros(vocab, dtype=bool)
    ok[: min(vocab, len(tokenizer))] = True
    ok[[i for i in tokenizer.all_special_ids if i < vocab]] = False
    return ok


def dream(adapter, start: list[int], target: DreamTarget, settings: DreamSettings, *, prefix: list[int] = (),
          allowed: np.ndarray | None = None, top_k: int = 20, lock=None,
          on_step: Callable[[DreamStep], None] | None = None, should_stop: Callable[[], bool] | None = None,
          other=None, budget_s: float | None = None) -> DreamTrace:
    """Optimise a span that starts as `start` (token ids) after a fixed `prefix`.

    lock: a context manager held around each step's forwards (the server shares the model with
    focus passes, and hooks live on the shared modules; for a two-model target it must hold both
    models). on_step is called after every step; should_stop is polled before each, and ends the
    run early (trace.stopped). other: the reference model's Adapter (two-model targets). budget_s:
    seconds of optimisation after which the run stops with what it has (trace.out_of_time).
    """
    import torch

    t0 = time.perf_counter()
    lock = lock if lock is not None else nullcontext()
    W = adapter.embed_weight.detach()
    V, dev = W.shape[0], W.device
    W_other = prefix_emb_other = None
    if target.two_models:
        if other is None:
            raise ValueError(f"a {target.kind} target needs the reference model's adapter (other=)")
        W_other = other.embed_weight.detach()
        if W_other.shape[0] != V:
            raise ValueError(f"the models' vocabularies differ ({V} and {W_other.shape[0]} embedding rows)")
    n, prefix = len(start), list(prefix)
    allowed_t = torch.as_tensor(allowed if allowed is not None else np.ones(V, bool), device=dev)
    gen = torch.Generator(device="cpu").manual_seed(settings.seed)
    start_t = torch.as_tensor(start, dtype=torch.long, device=dev)
    # the start token gets logit L, the others 0, with softmax at T0 giving it init_prob
    L = settings.temp_start * (math.log(settings.init_prob / (1 - settings.init_prob)) + math.log(max(1, int(allowed_t.sum()) - 1)))
    Z = torch.zeros(n, V, device=dev)
    Z[torch.arange(n), start_t] = L
    Z.requires_grad_(True)
    opt = torch.optim.Adam([Z], lr=settings.lr)
    mask = torch.where(allowed_t, 0.0, -1e9)
    prefix_emb = adapter.embed(torch.as_tensor([prefix], dtype=torch.long, device=dev)).detach() if prefix else None
    if W_other is not None and prefix:
        prefix_emb_other = other.embed(torch.as_tensor([prefix], dtype=torch.long, device=W_other.device)).detach()
    trace = DreamTrace(target, settings, prefix, list(map(int, start)))

    def snapped_ids():
        return (Z.detach() + mask).argmax(-1)

    scored: dict[tuple, float] = {}  # the snapped text changes rarely: score each text once

    def snap_value(ids):
        key = tuple(ids.tolist())
        if key not in scored:
            full = torch.cat([torch.as_tensor(prefix, dtype=torch.long, device=dev), ids])[None]
            scored[key] = float(evaluate(adapter, full, target, other)[0])
        return scored[key]

    with lock:
        ids = snapped_ids()
        first = DreamStep(0, settings.temperature(0), float("nan"), snap_value(ids), ids.tolist())
    trace.steps.append(first)
    if on_step:
        on_step(first)
    began = time.perf_counter()  # the time budget counts optimisation, not the setup and step 0
    for step in range(1, settings.steps + 1):
        if should_stop and should_stop():
            trace.stopped = True
            break
        if budget_s is not None and time.perf_counter() - began >= budget_s:
            trace.stopped = trace.out_of_time = True
            break
        T = settings.temperature(step - 1)
        with torch.enable_grad():  # also when the caller runs under no_grad (a notebook might)
            logits = Z + mask
            if settings.gumbel:
                u = torch.rand(Z.shape, generator=gen).to(dev).clamp(1e-9, 1 - 1e-9)
                logits = logits - torch.log(-torch.log(u))
            soft = torch.softmax(logits / T, -1)
            emb = (soft @ W.to(soft.dtype)).to(W.dtype)[None]
            if prefix_emb is not None:
                emb = torch.cat([prefix_emb, emb], 1)
            emb_other = None
            if W_other is not None:  # the same soft tokens, through the reference model's own W_E
                emb_other = (soft.to(W_other.device) @ W_other.to(soft.dtype)).to(W_other.dtype)[None]
                if prefix_emb_other is not None:
                    emb_other = torch.cat([prefix_emb_other, emb_other], 1)
        with lock:
            with torch.enable_grad():
                value = _value(adapter, other, target, {"inputs_embeds": emb}, {"inputs_embeds": emb_other})[0]
                (grad,) = torch.autograd.grad(-value, [Z])
            ids = snapped_ids()
            record = DreamStep(step, T, float(value.detach()), snap_value(ids), ids.tolist())
        Z.grad = grad
        opt.step()
        trace.steps.append(record)
        if on_step:
            on_step(record)
    final = torch.softmax((Z.detach() + mask) / settings.temperature(len(trace.steps) - 1), -1)
    top = final.topk(min(top_k, V), -1)
    trace.top_ids, trace.top_probs = top.indices.cpu().numpy(), top.values.cpu().numpy()
    trace.seconds = time.perf_counter() - t0
    return trace
