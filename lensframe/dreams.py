"""Dreams on a board: where a dream starts, its store key, and running it beside the dashboard.

The optimiser is lensframe.ops.dream (pure torch). This module binds it to a board: the start comes
from the dataset pass's top examples (the focused neuron's best example, ending at its peak), from
a text, or from random tokens; a finished dream is stored under a key made of everything that
determines it (model fingerprint, target, settings, start tokens), so the same dream is never run
twice; each step holds the model's lock, so focus passes of other views interleave with a dream.
A server whose store is read-only keeps its finished dreams in memory instead (this process only).
"""
from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Callable, Literal, Optional

import numpy as np

from .errors import LensframeError
from .graph import STORE_FORMAT
from .jobs import BackgroundJob
from .ops.base import Result
from .ops.dream import VERSION, DreamSettings, DreamStep, DreamTarget, DreamTrace, allowed_tokens, check_dream, dream

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
    issues = check_dream(board.infos[model], target, settings, span, prefix)
    if issues:
        raise DreamError(issues)


def dream_key(board, model: str, target: DreamTarget, settings: DreamSettings, start: DreamStart) -> str:
    doc = [STORE_FORMAT, "dream", VERSION, board.sources[model].fingerprint(), target.to_json(), asdict(settings),
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
            "seconds": trace.seconds}
    return Result(arrays, meta)


def result_to_trace(res: Result) -> DreamTrace:
    t = dict(res.meta["target"])
    t["direction"] = tuple(t["direction"]) if t["direction"] is not None else None
    trace = DreamTrace(DreamTarget(**t), DreamSettings(**res.meta["settings"]), res.meta["prefix"], res.meta["start"],
                       stopped=res.meta["stopped"], seconds=res.meta["seconds"])
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


def _keep(board, key: str, result: Result, label: str) -> None:
    """Store a finished dream; a read-only store is shared by servers that must not write, so this
    process keeps it in memory instead."""
    if not board.store.read_only:
        board.store.put(key, result, label)
        return
    with _kept_lock:
        _kept[key] = result
        while len(_kept) > KEPT_DREAMS:
            _kept.popitem(last=False)


def run(board, model: str, target: DreamTarget, settings: DreamSettings, start: DreamStart,
        on_step: Callable[[DreamStep], None] | None = None, should_stop: Callable[[], bool] | None = None,
        reuse: bool = True) -> DreamTrace:
    """Run (or load) a dream; a run that finished its step budget is stored, a stopped one is not."""
    check(board, model, target, settings, len(start.ids), len(start.prefix))
    if reuse:
        done = stored(board, model, target, settings, start)
        if done is not None:
            return done
    loaded = board.executor.model(model)
    trace = dream(loaded.adapter, start.ids, target, settings, prefix=start.prefix,
                  allowed=allowed_tokens(loaded.tokenizer, loaded.adapter.embed_weight.shape[0]),
                  lock=board.executor.model_lock(model), on_step=on_step, should_stop=should_stop)
    if not trace.stopped:
        _keep(board, dream_key(board, model, target, settings, start), trace_to_result(trace, start),
              f"dream({target.label()}) @{model}")
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
