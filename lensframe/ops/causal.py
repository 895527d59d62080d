"""causal_trace (lookup): Meng et al.'s causal tracing of the focused text or probe
(lensframe/causal_trace.py computes it; this module ties it to the executor and the dashboard).

A trace is hundreds to thousands of forwards (SmolLM2, 10 tokens, 5 noise samples: 4,500 restored
runs), so it is memoized per (node key: model weights, settings; token ids; span; target) in a
memo of its own, and the dashboard runs it as a TraceJob in a thread, showing the rows as they
fill. `lookup` is the same computation, synchronous (notebooks, tests, the benchmark).
"""
from __future__ import annotations

import numpy as np

from ..causal_trace import TraceResult, TraceSettings, Tracer, resolve_span, target_id
from ..jobs import BackgroundJob
from . import register
from .base import Op, Result

TRACE_MEMO_SIZE = 32  # finished traces kept per process: a SmolLM2 trace is 3 × 30 × T floats


def settings_of(node) -> TraceSettings:
    return TraceSettings(noise=float(node.param("noise", 3.0)), samples=int(node.param("samples", 5)),
                         window=int(node.param("window", 1)),
                         kinds=tuple(node.param("kinds", ("resid", "mlp", "attn"))), seed=int(node.param("seed", 0)))


def _memo(executor):
    from ..memo import Memo

    return executor.memoized(("causal_trace:traces",), lambda: Memo(TRACE_MEMO_SIZE))


def trace_key(executor, node, sample, span=None, target: str | None = None) -> tuple:
    """What a trace of `sample` is a function of: the node (its planned key covers the weights and
    the settings), the token ids, the resolved span and the target token. Raises LensframeError for a
    span or target that does not apply to this text."""
    loaded = executor.model(node.model)
    ids = executor.sample_ids(node.model, sample)
    positions = resolve_span(loaded.tokenizer, ids, span)
    planned = executor.board.plan.nodes.get(node)
    return (planned.key if planned is not None else node, tuple(int(i) for i in ids), positions,
            target_id(loaded.tokenizer, target))


def finished(executor, key: tuple) -> Result | None:
    """The memoized trace of a trace_key, or None when it has not been run in this process."""
    return _memo(executor).get(key)


def run_trace(executor, node, sample, span=None, target: str | None = None, progress=None, should_stop=None,
              on_start=None) -> Result:
    """The trace (memoized): each batch of restored runs holds the model's lock, so other views'
    forwards interleave. on_start(tracer) sees the Tracer before its batches run (a job shows
    its partial result)."""
    key = trace_key(executor, node, sample, span, target)
    memo = _memo(executor)
    hit = memo.get(key)
    if hit is not None:
        return hit
    loaded = executor.model(node.model)
    _, ids, positions, tgt = key
    tracer = Tracer(loaded.model, loaded.adapter, np.asarray(ids), positions, settings_of(node), tgt,
                    lock=lambda: executor.model_lock(node.model))
    if on_start is not None:
        on_start(tracer)
    tracer.run(progress, should_stop)
    return memo.put(key, as_result(tracer.result, loaded.tokenizer))


def as_result(tr: TraceResult, tokenizer) -> Result:
    """A TraceResult as an op Result: per kind its [layers, T] mean restored probability and the
    indirect effect (that minus p_corrupt); p_clean, p_corrupt (per sample too), target, span."""
    arrays = {"p_clean": np.array(tr.p_clean), "p_corrupt": np.array(tr.p_corrupt),
              "p_corrupt_samples": tr.p_corrupt_samples, "target": np.array(tr.target, dtype=np.int64),
              "span": np.asarray(tr.span, dtype=np.int64)}
    for kind in tr.scores:
        arrays[kind] = tr.mean(kind)
        arrays[f"{kind}_effect"] = arrays[kind] - tr.p_corrupt
    s, token = tr.settings, tokenizer.decode([tr.target], clean_up_tokenization_spaces=False)
    return Result(arrays, {"kinds": list(tr.scores), "target_token": token,
                           "noise": s.noise, "noise_std": tr.noise_std, "samples": s.samples, "window": s.window,
                           "seed": s.seed, "rows": tr.rows_total, "seconds": tr.seconds, "n_layers": tr.n_layers,
                           "n_tokens": tr.n_tokens})


@register
class CausalTraceOp(Op):
    name = "causal_trace"
    kind = "lookup"

    def lookup(self, node, executor, sample, span=None, target: str | None = None, progress=None) -> Result:
        """The causal trace of `sample` (a dataset index or a Probe) with `span` corrupted (None or
        "auto": every token but the last, less a leading BOS; positions; or a piece of the text)
        and the clean top-1 prediction (or `target`, a token as text) traced."""
        return run_trace(executor, node, sample, span, target, progress)


class TraceJob(BackgroundJob):
    """A trace in a thread for the dashboard: `partial()` is the result so far (None until the
    clean and corrupted runs are done), `fraction` its progress, `result` the finished Result."""

    thread_name = "lensframe-causal-trace"

    def __init__(self, executor, node, sample, span=None, target: str | None = None):
        super().__init__()
        self.executor, self.node, self.sample, self.span, self.target = executor, node, sample, span, target
        self.key = trace_key(executor, node, sample, span, target)
        self.tracer: Tracer | None = None
        self.result: Result | None = None
        self.fraction = 0.0

    def start(self) -> "TraceJob":
        self._launch()
        return self

    def run(self) -> "TraceJob":
        """The job in this thread (no dashboard to poll it)."""
        self._guarded()
        return self

    def partial(self) -> TraceResult | None:
        return self.tracer.result if self.tracer is not None else None

    def _progress(self, fraction: float, message: str) -> None:
        self.fraction = fraction

    def _work(self) -> None:
        from ..causal_trace import TraceStopped

        try:
            self.result = run_trace(self.executor, self.node, self.sample, self.span, self.target, self._progress,
                                    self._stop.is_set, on_start=lambda tracer: setattr(self, "tracer", tracer))
        except TraceStopped:
            pass
