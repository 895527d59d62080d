"""Dreams on a board: where a dream starts, its store key, and running it beside the dashboard.

The optimiser is lensframe.ops.dream (pure torch). This module binds it to a board: the start comes
from the dataset pass's top examples (the focused neuron's best example, ending at its peak), from
a text, or from random tokens; a finished dream is stored under a key made of everything that
determines it (model fingerprint, target, settings, start tokens), so the same dream is never run
twice; each step holds the model's lock, so focus passes of other views interleave with a dream.
A server whose store is read-only keeps its finished dreams in memory instead (this process only).

Targets that compare two models (logit_diff, kl) also key on the reference model's fingerprint,
hold both models' locks per step (never waiting for one while holding the other), and refuse
two tokenizers that do not map text to the same ids. edit_target() makes the edit_direction target
from the two models' weights (lensframe.weight_directions).
"""
from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Callable, Literal, Optional

import numpy as np

from .errors import LensframeError
from .graph import STORE_FORMAT
from .jobs import BackgroundJob
from .ops.base import Result
from .dream_spec import DreamSettings, DreamTarget, check_dream
from .ops.dream import VERSION, DreamStep, DreamTrace, allowed_tokens, dream

KEPT_DREAMS = 64  # finished dreams a read-only server keeps in memory (a few KB each)
_kept: OrderedDict[str, Result] = OrderedDict()
_kept_lock = threading.Lock()


class DreamError(LensframeError):
    """A dream that cannot run (bad target, span or settings): printed without a traceback."""

    def __init__(self, issues: list[tuple[str, str | None]]):
        self.issues = issues
        super().__init__("\n".join(f"dream: {m}" + (f"\n    hint: {h}" if h else "") for m, h in issues))


@dataclass(frozen=True)
class BestExample:
    """The dataset's most activating token for a neuron (from a neuron_top_examples result)."""

    value: float
    sample: int
    position: int


@dataclass
class DreamStart:
    kind: Literal["example", "text", "random"]
    prefix: list[int]  # fixed tokens before the span (the tokenizer's BOS, if it adds one)
    ids: list[int]  # the span's starting tokens
    note: str  # where they came from, for people


def best_example(board, model: str, layer: int, neuron: int) -> Optional[BestExample]:
    """From any computed top-examples result of `model` that indexes `layer` (None if there is none)."""
    for planned in board.plan.of_kind("dataset", model):
        if planned.node.op != "neuron_top_examples":
            continue
        res = board.result(planned.node)
        if res is None or layer not in res.meta["layers"]:
            continue
        li = res.meta["layers"].index(layer)
        sample = int(res["samples"][li, neuron, 0])
        if sample >= 0:
            return BestExample(float(res["values"][li, neuron, 0]), sample, int(res["positions"][li, neuron, 0]))
    return None


def special_prefix(tokenizer) -> list[int]:
    """What the tokenizer puts before any text (e.g. Llama's BOS): kept fixed, never dreamed."""
    return list(tokenizer("", add_special_tokens=True)["input_ids"])


def resolve_start(board, model: str, target: DreamTarget, span: int, start: str = "example",
                  text: str | None = None, seed: int = 0) -> DreamStart:
    """The span's first tokens. "example": the best dataset example's last `span` tokens up to and
    including its peak (so the target position, the last, is where the neuron fired); "text": the
    last `span` tokens of `text`; "random": uniform over the allowed tokens, from `seed`."""
    loaded = board.executor.model(model)
    tok = loaded.tokenizer
    prefix = special_prefix(tok)
    if start == "example":
        if target.kind != "neuron":
            raise DreamError([("start: example needs a neuron target (the best example is a neuron's)",
                               "start from a text or from random tokens")])
        best = best_example(board, model, target.layer, target.index)
        if best is None:
            raise DreamError([(f"no top examples of layer {target.layer} have been computed",
                               "add a top_examples view indexing that layer, run `lensframe compute`, or start "
                               "from a text or random tokens")])
        ids = board.executor.tokens(model)["ids"][best.sample]
        lo = min(max(len(prefix), best.position - span + 1), best.position)
        window = [int(i) for i in ids[lo : best.position + 1]]
        return DreamStart("example", prefix if lo >= len(prefix) else [], window,
                          f"best example: sample {best.sample}, positions {lo}..{best.position} ({best.value:+.3f})")
    if start == "text":
        if not text:
            raise DreamError([("start: text needs a text", "set `text:` or pass --text")])
        ids = tok(text, add_special_tokens=False)["input_ids"][-span:]
        if not ids:
            raise DreamError([(f"the start text {text!r} has no tokens", None)])
        return DreamStart("text", prefix, list(ids), f"text {text!r}")
    allowed = np.flatnonzero(allowed_tokens(tok, loaded.adapter.embed_weight.shape[0]))
    rng = np.random.default_rng(seed)
    return DreamStart("random", prefix, rng.choice(allowed, size=span).tolist(), f"random tokens (seed {seed})")


def check(board, model: str, target: DreamTarget, settings: DreamSettings, span: int, prefix: int = 0) -> None:
    issues = reference_issues(board, model, target.other) if target.two_models else []
    if not issues:
        other = board.infos.get(target.other) if target.other is not None else None
        issues = check_dream(board.infos[model], target, settings, span, prefix, other=other)
    if issues:
        raise DreamError(issues)


def reference_issues(board, model: str, other: str | None, same_shape: bool = False) -> list[tuple[str, str | None]]:
    """What is wrong with `other` as the reference model of a dream of `model` (from the spec's
    shapes, before any weight loads); same_shape: ΔW needs one architecture too."""
    if other is None:
        return [("this target compares two models: it needs the reference (base) model",
                 "name it with `other:` (on the command line, --other)")]
    if other not in board.infos:
        from .errors import did_you_mean

        return [(f"no model {other!r} to compare with", did_you_mean(other, board.infos) or
                 f"models: {', '.join(board.infos)}")]
    if other == model:
        return [(f"compares model {model!r} with itself", "name the other model (e.g. the base)")]
    a, b = board.infos[model], board.infos[other]
    if a.vocab_size != b.vocab_size:
        return [(f"models {model!r} and {other!r} have different vocabularies ({a.vocab_size} and {b.vocab_size} "
                 "tokens): both must read the same soft tokens", None)]
    if same_shape:
        shape = lambda i: (i.family, i.n_layers, i.d_model, i.d_mlp)  # noqa: E731
        if shape(a) != shape(b):
            return [(f"models {model!r} and {other!r} differ in shape ({shape(a)} vs {shape(b)}): a weight change "
                     "needs two versions of one model", None)]
    return []


def same_tokenizer(board, model: str, other: str) -> None:
    """Both models must turn a text into the same ids (the soft one-hot means the same tokens to
    both): raises DreamError if their vocabularies differ."""
    a, b = board.executor.model(model).tokenizer, board.executor.model(other).tokenizer
    if a.get_vocab() != b.get_vocab() or list(a.all_special_ids) != list(b.all_special_ids):
        raise DreamError([(f"models {model!r} and {other!r} have different tokenizers: a dream that compares them "
                           "needs one vocabulary", None)])


def edit_target(board, model: str, other: str | None, layer: int, position: int = -1, flip: bool = False,
                direction=None) -> DreamTarget:
    """The edit_direction target at `layer`: ΔW's top input direction of the layer's MLP output
    matrix between `model` and `other` (lensframe.weight_directions, oriented by its sign rule;
    flip: the opposite side), or `direction` (length d_mlp) when given, which needs no base."""
    if direction is None:
        issues = reference_issues(board, model, other, same_shape=True)
        if not issues and not 0 <= layer < board.infos[model].n_layers:
            issues = [(f"layer {layer} is beyond the model's depth ({board.infos[model].n_layers} layers)", None)]
        if issues:
            raise DreamError(issues)
        direction = _mlp_edit_direction(board, model, other, layer)
    else:
        other = None
    return DreamTarget("edit_direction", layer=layer, direction=tuple(float(x) for x in direction), position=position,
                       other=other, sign=-1 if flip else 1)


_directions: OrderedDict[tuple, tuple] = OrderedDict()  # (fingerprints, layer) -> v, memoized: a focus change re-asks


def _mlp_edit_direction(board, model: str, other: str, layer: int) -> tuple:
    from .weight_directions import mlp_out_edit_direction

    key = (board.sources[model].fingerprint(), board.sources[other].fingerprint(), layer)
    with _kept_lock:
        if key in _directions:
            return _directions[key]
    a, b = board.executor.model(model).adapter, board.executor.model(other).adapter
    try:
        found = mlp_out_edit_direction(a, b, layer)
    except ValueError as err:
        raise DreamError([(f"layer {layer}'s MLP output matrix: {err}", "pick a layer whose weights changed "
                           "(model_diff lists them)")]) from None
    v = tuple(float(x) for x in found.v.tolist())
    with _kept_lock:
        _directions[key] = v
        while len(_directions) > KEPT_DREAMS:
            _directions.popitem(last=False)
    return v


class ModelsLock:
    """The locks of several models as one reusable context manager (a dream enters it every step).

    Other code holds one model's lock while it waits for another's (model_kl's dataset pass holds its
    model, then takes the reference's), in no global order, so this never waits while holding: it
    takes the first lock, tries the others briefly, and if one is busy lets everything go and
    starts again."""

    def __init__(self, board, names):
        self.locks = [board.executor.model_lock(name) for name in dict.fromkeys(names)]

    def __enter__(self):
        first, rest = self.locks[0], self.locks[1:]
        while True:
            first.acquire()
            taken = []
            for lock in rest:
                if not lock.acquire(timeout=0.05):
                    break
                taken.append(lock)
            if len(taken) == len(rest):
                return self
            for lock in reversed(taken):
                lock.release()
            first.release()
            time.sleep(0.01)  # let the holder finish its step

    def __exit__(self, *exc):
        for lock in reversed(self.locks):
            lock.release()


def dream_key(board, model: str, target: DreamTarget, settings: DreamSettings, start: DreamStart) -> str:
    t = target.to_json()
    if target.other is not None:  # the reference model by what it is, not by the spec's name for it
        t["other"] = board.sources[target.other].fingerprint()
    doc = [STORE_FORMAT, "dream", VERSION, board.sources[model].fingerprint(), t, asdict(settings),
           start.prefix, start.ids]
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def trace_to_result(trace: DreamTrace, start: DreamStart) -> Result:
    arrays = {
        "temperature": np.array([s.temperature for s in trace.steps], np.float32),
        "soft": np.array([s.soft for s in trace.steps], np.float32),
        "snapped": np.array([s.snapped for s in trace.steps], np.float32),
        "ids": np.array([s.ids for s in trace.steps], np.int32),
        "top_ids": trace.top_ids.astype(np.int32),
        "top_probs": trace.top_probs.astype(np.float32),
    }
    meta = {"target": trace.target.to_json(), "settings": asdict(trace.settings), "prefix": trace.prefix,
            "start": trace.start, "start_kind": start.kind, "start_note": start.note, "stopped": trace.stopped,
            "out_of_time": trace.out_of_time, "seconds": trace.seconds}
    return Result(arrays, meta)


def result_to_trace(res: Result) -> DreamTrace:
    t = dict(res.meta["target"])
    t["direction"] = tuple(t["direction"]) if t["direction"] is not None else None
    trace = DreamTrace(DreamTarget(**t), DreamSettings(**res.meta["settings"]), res.meta["prefix"], res.meta["start"],
                       stopped=res.meta["stopped"], out_of_time=res.meta.get("out_of_time", False),
                       seconds=res.meta["seconds"])
    trace.steps = [DreamStep(i, float(T), float(soft), float(snap), ids.tolist())
                   for i, (T, soft, snap, ids) in enumerate(zip(res["temperature"], res["soft"], res["snapped"], res["ids"]))]
    trace.top_ids, trace.top_probs = res["top_ids"], res["top_probs"]
    return trace


def stored(board, model: str, target: DreamTarget, settings: DreamSettings, start: DreamStart) -> Optional[DreamTrace]:
    key = dream_key(board, model, target, settings, start)
    res = board.store.get(key)
    if res is None:
        with _kept_lock:
            res = _kept.get(key)
    return result_to_trace(res) if res is not None else None


def _keep(board, key: str, result: Result, label: str, models: list[str]) -> None:
    """Store a finished dream; a read-only store is shared by servers that must not write, so this
    process keeps it in memory instead."""
    if not board.store.read_only:
        board.store.put(key, result, label, refs={"models": [board.sources[m].fingerprint() for m in models]})
        return
    with _kept_lock:
        _kept[key] = result
        while len(_kept) > KEPT_DREAMS:
            _kept.popitem(last=False)


def run(board, model: str, target: DreamTarget, settings: DreamSettings, start: DreamStart,
        on_step: Callable[[DreamStep], None] | None = None, should_stop: Callable[[], bool] | None = None,
        reuse: bool = True, budget_s: float | None = None) -> DreamTrace:
    """Run (or load) a dream; a run that finished its step budget is stored, a stopped one (by the
    caller or by the time budget `budget_s`, whose steps depend on the machine's speed) is not."""
    check(board, model, target, settings, len(start.ids), len(start.prefix))
    if reuse:
        done = stored(board, model, target, settings, start)
        if done is not None:
            return done
    loaded = board.executor.model(model)
    other = None
    if target.two_models:
        same_tokenizer(board, model, target.other)
        other = board.executor.model(target.other).adapter
    names = [model, target.other] if target.two_models else [model]
    trace = dream(loaded.adapter, start.ids, target, settings, prefix=start.prefix,
                  allowed=allowed_tokens(loaded.tokenizer, loaded.adapter.embed_weight.shape[0]),
                  lock=ModelsLock(board, names), on_step=on_step, should_stop=should_stop,
                  other=other, budget_s=budget_s)
    if not trace.stopped:
        _keep(board, dream_key(board, model, target, settings, start), trace_to_result(trace, start),
              f"dream({target.label(model)}) @{model}", [model] + ([target.other] if target.other else []))
    return trace


def decode(board, model: str, ids) -> list[str]:
    tok = board.executor.model(model).tokenizer
    return tok.batch_decode([[int(i)] for i in ids], clean_up_tokenization_spaces=False)


class DreamJob(BackgroundJob):
    """A dream in a background thread, for the dashboard (or a notebook): read `steps` while it
    runs, `stop()` it, and find the outcome in `trace` (or `error`) once `done`."""

    thread_name = "lensframe-dream"

    def __init__(self, board, model: str, target: DreamTarget, settings: DreamSettings, start: DreamStart):
        super().__init__()
        self.board, self.model, self.target, self.settings, self.start_at = board, model, target, settings, start
        self.steps: list[DreamStep] = []
        self.trace: DreamTrace | None = None
        self.error: str | None = None
        self.from_store = False

    def start(self) -> "DreamJob":
        done = stored(self.board, self.model, self.target, self.settings, self.start_at)
        if done is not None:  # the same dream ran before: show it at once
            on_disk = self.board.store.has(dream_key(self.board, self.model, self.target, self.settings, self.start_at))
            self.trace, self.steps, self.from_store, self.done = done, done.steps, on_disk, True
            return self
        self._launch()
        return self

    def _work(self) -> None:
        self.trace = run(self.board, self.model, self.target, self.settings, self.start_at,
                         on_step=self.steps.append, should_stop=self._stop.is_set, reuse=False)
