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
from dataclasses import asdict, dataclass, field
from typing import Callable, Literal, Optional

import numpy as np

VERSION = 2  # bump when a change alters what a dream with the same settings returns


@dataclass(frozen=True)
class DreamTarget:
    """What to maximise, measured at `position` of the input (negative counts from the end).

    neuron:    mlp_post.{layer}[position, index]            (the neuron's activation)
    direction: resid_post.{layer}[position] · d / |d|        (d = `direction`, length d_model)
    logit:     log_softmax(logits[position])[index]          (the token's log-probability: a logit
                                                             normalised by the others, so raising it
                                                             cannot be done by inflating all logits)
    logit_diff: log p_model(index) − log p_other(index) at position (two models, one soft input)
    kl:        KL(P_model ‖ P_other) of the next-token distributions at position
    edit_direction: mlp_post.{layer}[position] · d / |d|     (d over the layer's neurons, length d_mlp:
                                                             ΔW's top input direction of the MLP output
                                                             matrix, lensframe.weight_directions, or
                                                             any direction given)

    `other` names the reference model: needed at run time by logit_diff and kl; for edit_direction
    it records which base the direction came from (None: a direction given without a base).
    `sign` (direction, edit_direction): −1 raises the opposite side, −k · d / |d|. An SVD direction's
    sign is a convention (lensframe.weight_directions), so the input that fires an edit may lie on
    either side.
    """

    kind: Literal["neuron", "direction", "logit", "logit_diff", "kl", "edit_direction"]
    layer: Optional[int] = None
    index: Optional[int] = None  # neuron index (neuron) or token id (logit, logit_diff)
    position: int = -1
    direction: Optional[tuple] = None
    other: Optional[str] = None
    sign: int = 1

    @property
    def two_models(self) -> bool:
        """Whether each step runs the reference model too."""
        return self.kind in TWO_MODEL_KINDS

    def label(self, model: str | None = None, token: str | None = None) -> str:
        """What is raised, in words; `model` and `token` (the token's text) name them when known."""
        at = "" if self.position == -1 else f" at position {self.position}"
        me, tok = model or "model", repr(token) if token is not None else f"token {self.index}"
        if self.kind == "neuron":
            return f"neuron L{self.layer}/N{self.index}{at}"  # as the views write it: not the number 7.808
        if self.kind == "logit":
            return f"log-prob of {tok}{at}"
        if self.kind == "logit_diff":
            return f"log p({me}) − log p({self.other}) of {tok}{at}"
        if self.kind == "kl":
            return f"KL({me} ‖ {self.other}) of the next token{at}"
        side = "−" if self.sign < 0 else ""
        if self.kind == "edit_direction":
            whence = f"ΔW's top input direction ({self.other} → {me})" if self.other else "a given direction"
            return f"layer {self.layer} MLP neurons along {side}{whence}{at}"
        return f"residual {side}direction after layer {self.layer}{at}"

    def to_json(self) -> dict:
        d = asdict(self)
        d["direction"] = None if self.direction is None else [float(x) for x in self.direction]
        for name, default in (("other", None), ("sign", 1)):  # so that older targets keep their store keys
            if d[name] == default:
                del d[name]
        return d


TWO_MODEL_KINDS = ("logit_diff", "kl")


@dataclass(frozen=True)
class DreamSettings:
    """The one definition of a dream's settings and their defaults: the dream view's params, the
    `lensframe dream` options and Board.dream take theirs from here. Adam lr 0.1; T from 2.0, after
    200 warm-up steps × 0.9995 per step, down to 0.1 (docs/METHODS.md; reaching the floor takes about
    6,200 steps, more than the 500 steps a run makes by default: a run can be continued)."""

    steps: int = 500
    lr: float = 0.1
    temp_start: float = 2.0
    warmup: int = 200
    decay: float = 0.9995
    temp_floor: float = 0.1
    gumbel: bool = False  # add Gumbel noise to Z before the softmax (Gumbel-softmax sampling)
    seed: int = 0
    # Z starts at init_prob's logit on the start token: softmax(Z / temp_start) then gives the start
    # token probability init_prob. (A raw one-hot would give it e^(1/T)/V: the start would be lost.)
    init_prob: float = 0.9

    def temperature(self, step: int) -> float:
        """T at optimisation step `step` (0-based)."""
        return max(self.temp_floor, self.temp_start * self.decay ** max(0, step - self.warmup))


def check_dream(info, target: DreamTarget, settings: DreamSettings, span: int, prefix: int = 0,
                other=None) -> list[tuple[str, str | None]]:
    """(message, hint) for a dream that cannot run on a model with `info` (and the reference model
    with `other`, a ModelInfo, for two-model targets), before either loads."""
    issues = []
    if target.kind in ("neuron", "direction", "edit_direction"):
        if target.layer is None or not 0 <= target.layer < info.n_layers:
            issues.append((f"layer {target.layer} is beyond the model's depth ({info.n_layers} layers: "
                           f"0..{info.n_layers - 1})", None))
    if target.kind == "neuron" and (target.index is None or not 0 <= target.index < info.d_mlp):
        issues.append((f"neuron {target.index} is out of range ({info.d_mlp} neurons per layer: 0..{info.d_mlp - 1})", None))
    if target.kind in ("logit", "logit_diff"):
        if target.index is None or not 0 <= target.index < info.vocab_size:
            issues.append((f"token id {target.index} is out of range (vocabulary of {info.vocab_size})", None))
    if target.kind in ("logit", *TWO_MODEL_KINDS) and not info.has_lm_head:
        issues.append((f"a {target.kind} target needs a model with an LM head", "dream a neuron or a direction instead"))
    if target.two_models:
        if other is None:
            issues.append((f"a {target.kind} target compares two models: it needs the reference model",
                           "name it with `other:` (on the command line, --other)"))
        else:
            if not other.has_lm_head:
                issues.append((f"the reference model {target.other!r} has no LM head", None))
            if other.vocab_size != info.vocab_size:
                issues.append((f"the reference model {target.other!r} has another vocabulary ({other.vocab_size} "
                               f"tokens against {info.vocab_size}): both models must read the same tokens", None))
    if target.sign not in (1, -1):
        issues.append((f"sign must be 1 or -1 (got {target.sign})", None))
    if target.kind == "edit_direction" and (target.direction is None or len(target.direction) != info.d_mlp):
        got = None if target.direction is None else len(target.direction)
        issues.append((f"an edit_direction target needs a vector over the layer's neurons, length d_mlp = "
                       f"{info.d_mlp} (got {got})", None))
    if target.kind == "direction" and (target.direction is None or len(target.direction) != info.d_model):
        got = None if target.direction is None else len(target.direction)
        issues.append((f"a direction target needs a vector of length d_model = {info.d_model} (got {got})", None))
    if settings.steps < 1:
        issues.append((f"steps must be at least 1 (got {settings.steps})", "try --steps 500"))
    if span < 1:
        issues.append((f"the span must have at least one position (got {span})", None))
    elif info.max_positions and span + prefix > info.max_positions:
        issues.append((f"a span of {span} tokens{f' (+{prefix} fixed)' if prefix else ''} is longer than the "
                       f"model's context ({info.max_positions} positions)", f"use a span of at most {info.max_positions - prefix}"))
    elif not -span - prefix <= target.position < span + prefix:
        issues.append((f"position {target.position} is outside the input ({span + prefix} tokens)", "use -1, the last token"))
    if not (0 < settings.init_prob < 1 and settings.lr > 0 and settings.temp_start > 0 and settings.temp_floor > 0
            and 0 < settings.decay <= 1 and settings.warmup >= 0):
        issues.append(("settings out of range: need 0 < init_prob < 1, lr > 0, temperatures > 0, 0 < decay <= 1, "
                       "warmup >= 0", None))
    return issues


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
