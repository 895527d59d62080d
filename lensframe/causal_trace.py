"""Causal tracing (Meng et al. 2022, "Locating and Editing Factual Associations in GPT", arXiv
2202.05262, section 2.1): which hidden states carry a prediction.

Three runs of one text:
- clean: the model as is; its top-1 next token at the last position (or a given target) and its
  probability p_clean;
- corrupted: Gaussian noise added to the input embeddings of a span of tokens (Meng corrupt the
  subject), with std `noise` × the std of the embedding matrix's entries, several seeded noise
  samples; the target's probability falls to p_corrupt (the mean over samples);
- corrupted with one activation restored: for each layer l and position i, and for each kind — the
  residual (the output of block l), the MLP output and the attention output of block l — that
  activation is set back to its clean value (for mlp and attn, in a window of `window` layers
  around l, as Meng do) and the target's probability is read again.

A restoration that brings the probability back towards p_clean marks a state that carries the
prediction. The restored runs are batched: each row of a batch is one (layer, kind, position,
noise sample). Two shortcuts, both exact up to float rounding:
- a restoration at a position before the span's first token changes nothing (a causal model's
  states there do not depend on the noise), so those cells are p_corrupt of their sample;
- the blocks before the first restored layer of a batch compute exactly what the corrupted run
  computed, so they are skipped: the batch starts at that block from the corrupted run's residual
  (about half the model's work on average).

Pure torch on a transformers model and its lensframe Adapter; no stores, no Panel.
"""
from __future__ import annotations

import re
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch

from .errors import LensframeError

# kind -> the normalized hook whose value is restored (lensframe.models.adapters)
KINDS = {"resid": "resid_post", "mlp": "mlp_out", "attn": "attn_out"}
YIELD_S = 0.002  # pause between batches, outside the model's lock
KIND_NAMES = {"resid": "residual (block output)", "mlp": "MLP output", "attn": "attention output"}
BATCH_ROWS = 64  # restored runs per forward


class TraceError(LensframeError):
    """A span or target that does not apply to the text; `message` and `hint` apart for a page."""

    def __init__(self, message: str, hint: str | None = None):
        self.message, self.hint = message, hint
        super().__init__(message + (f"\n    hint: {hint}" if hint else ""))


class TraceStopped(Exception):
    """The trace was stopped before it finished (a job's stop())."""


@dataclass(frozen=True)
class TraceSettings:
    noise: float = 3.0  # × the std of the embedding matrix's entries
    samples: int = 5  # noise samples; every restoration is run once per sample and averaged
    window: int = 1  # layers restored together for mlp and attn (centred on l, as Meng's code)
    kinds: tuple[str, ...] = ("resid", "mlp", "attn")
    seed: int = 0
    batch_size: int = BATCH_ROWS


@dataclass
class TraceResult:
    """A trace, filled as its batches finish: `scores[kind]` is [samples, layers, T], NaN where not
    computed yet."""

    target: int
    p_clean: float
    p_corrupt_samples: np.ndarray  # [samples]
    span: tuple[int, ...]
    n_tokens: int
    n_layers: int
    settings: TraceSettings
    noise_std: float  # the absolute std of the noise added to the embeddings
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    rows_done: int = 0
    rows_total: int = 0
    seconds: float = 0.0
    done: bool = False

    @property
    def p_corrupt(self) -> float:
        return float(np.mean(self.p_corrupt_samples))

    def mean(self, kind: str) -> np.ndarray:
        """[layers, T]: the restored probability averaged over the noise samples (NaN where no
        sample is done yet)."""
        s = self.scores[kind]
        done = ~np.isnan(s)
        with np.errstate(invalid="ignore"):
            return np.where(done.any(0), np.nansum(s, 0) / np.maximum(done.sum(0), 1), np.nan)


def window_layers(layer: int, window: int, n_layers: int) -> range:
    """The layers restored together for a cell of layer `layer` (Meng et al.'s code:
    max(0, l − w//2) … min(L, l + ⌈w/2⌉) − 1)."""
    return range(max(0, layer - window // 2), min(n_layers, layer - (-window // 2)))


def noise_std(adapter, noise: float) -> float:
    """`noise` × the standard deviation of the input embedding matrix's entries (Meng use 3 × the
    std of the subject tokens' embeddings over a corpus; W_E's entries need no corpus)."""
    return float(noise) * float(adapter.embed_weight.detach().float().std())


def corruption_noise(n_samples: int, n_span: int, d_model: int, std: float, seed: int) -> torch.Tensor:
    """[samples, span, d_model] Gaussian noise, float32, from a CPU generator seeded with `seed`:
    the same on every machine and for every caller (tests rebuild it)."""
    g = torch.Generator().manual_seed(int(seed))
    return torch.randn(n_samples, n_span, d_model, generator=g) * std


def auto_span(tokenizer, ids) -> tuple[int, ...]:
    """Every token but the last, less a leading special token (a BOS carries no content)."""
    ids = [int(i) for i in ids]
    first = 1 if len(ids) > 1 and ids[0] in set(tokenizer.all_special_ids or ()) else 0
    return tuple(range(first, len(ids) - 1))


def find_span(tokenizer, ids, text: str) -> tuple[int, ...]:
    """The positions of the tokens that spell the first occurrence of `text` in the decoded tokens
    (each token decoded alone and joined, so character offsets map to tokens; a text given without
    its leading space is also found after one)."""
    pieces = tokenizer.batch_decode([[int(i)] for i in ids], clean_up_tokenization_spaces=False)
    joined = "".join(pieces)
    at = joined.find(text)
    if at < 0 and text.strip():
        at = joined.find(text.strip())
        text = text.strip()
    if at < 0 or not text:
        raise TraceError(f"{text!r} is not in the text ({joined!r})",
                             "give span as text that occurs in the focused text, or as positions")
    ends = np.cumsum([len(p) for p in pieces])
    starts = ends - np.array([len(p) for p in pieces])
    return tuple(int(i) for i in np.flatnonzero((starts < at + len(text)) & (ends > at)))


def parse_span(text: str):
    """A span as typed: "auto" (or nothing), positions ("3", "0-3", "0,2,5", "1-3 7"), or else a piece of
    the text to find (kept as typed, leading space included: ' House' is the word, not 'Houses')."""
    stripped = text.strip()
    if not stripped or stripped.lower() == "auto":
        return "auto"
    if re.fullmatch(r"\d+(\s*[-–]\s*\d+)?(\s*[,\s]\s*\d+(\s*[-–]\s*\d+)?)*", stripped):
        positions = []
        for a, b in re.findall(r"(\d+)(?:\s*[-–]\s*(\d+))?", stripped):
            positions += range(int(a), int(b or a) + 1)
        return tuple(sorted(set(positions)))
    return text


def resolve_span(tokenizer, ids, span) -> tuple[int, ...]:
    """A span as given (None or "auto", positions, or a piece of the text) as sorted positions."""
    T = len(ids)
    if span is None or span == "auto":
        out = auto_span(tokenizer, ids)
    elif isinstance(span, str):
        out = find_span(tokenizer, ids, span)
    else:
        out = tuple(sorted({int(p) for p in span}))
        bad = [p for p in out if not 0 <= p < T]
        if bad:
            raise TraceError(f"span position {bad[0]} is outside the text ({T} tokens: 0..{T - 1})",
                                 "give positions of the focused text's tokens")
    if not out:
        raise TraceError(f"nothing to corrupt: the text has {T} token(s)",
                             "a causal trace needs a span of tokens before the predicted one")
    return out


def target_id(tokenizer, target: str | None) -> int | None:
    """A target given as text: its first token (without special tokens), as the probes view reads it."""
    if target is None:
        return None
    ids = tokenizer(target, add_special_tokens=False)["input_ids"]
    if not ids:
        raise TraceError(f"target {target!r} is no token", "give the predicted token as text, e.g. ' Paris'")
    return int(ids[0])


# --- hooks ----------------------------------------------------------------------------------------

def _first(out):
    return out[0] if isinstance(out, tuple) else out


def _with_first(out, value):
    return (value,) + tuple(out[1:]) if isinstance(out, tuple) else value


@contextmanager
def patching(adapter, patches: dict) -> Iterator[None]:
    """Restore activations during a forward: patches maps a hook name (resid_post.l, mlp_out.l,
    attn_out.l: module outputs) to (rows, positions, values): the output at [rows[j], positions[j]]
    is replaced by values[j]. A forward hook returns the patched output (a copy: the module's own
    output tensor is left as it was)."""
    handles = []
    for name, (rows, positions, values) in patches.items():
        module, where, _ = adapter._point(name)
        if where != "post":
            raise ValueError(f"patching reads a module's output; {name} is a module's input")

        def hook(mod, args, out, _r=rows, _p=positions, _v=values):
            x = _first(out).clone()
            x[_r, _p] = _v.to(x.dtype)
            return _with_first(out, x)

        handles.append(module.register_forward_hook(hook))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextmanager
def starting_at(adapter, block: int, resid: torch.Tensor | None) -> Iterator[None]:
    """Run the model from block `block` on: blocks before it pass their input through untouched, and
    block `block` reads `resid` ([B, T, d], the residual entering it) instead of what reaches it.
    For rows whose blocks before `block` would compute what `resid` already holds."""
    if block <= 0 or resid is None:
        yield
        return
    layers = adapter.layers

    def passthrough(hidden_states, *args, **kwargs):
        return hidden_states

    def inject(mod, args, kwargs):
        if args:
            return (resid.to(args[0].dtype),) + tuple(args[1:]), kwargs
        return args, {**kwargs, "hidden_states": resid.to(kwargs["hidden_states"].dtype)}

    skipped = [layers[i] for i in range(block)]
    for b in skipped:  # an instance attribute shadows the class's forward; removed below
        b.forward = passthrough
    handle = layers[block].register_forward_pre_hook(inject, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()
        for b in skipped:
            del b.forward


# --- the trace ------------------------------------------------------------------------------------

class Tracer:
    """One causal trace of one text. Construction runs the clean and the corrupted forwards; run()
    the restored ones, batch by batch, filling `result` as it goes (so a dashboard can show a trace
    half done). `lock` is entered around each forward (the executor's model lock: other views'
    forwards interleave between batches)."""

    def __init__(self, model, adapter, ids, span, settings: TraceSettings = TraceSettings(),
                 target: int | None = None, lock: Callable = nullcontext):
        unknown = [k for k in settings.kinds if k not in KINDS]
        if unknown or not settings.kinds:
            raise ValueError(f"kinds must be some of {sorted(KINDS)} (got {list(settings.kinds)})")
        self.model, self.adapter, self.settings, self.lock = model, adapter, settings, lock
        self.device = adapter.embed_weight.device
        self.ids = torch.as_tensor(np.asarray(ids, dtype=np.int64), device=self.device)[None]
        T = self.ids.shape[1]
        self.span = tuple(int(p) for p in span)
        if not self.span or not all(0 <= p < T for p in self.span):
            raise ValueError(f"span {self.span} must be positions of the {T}-token text")
        L = adapter.n_layers
        self.t0 = time.perf_counter()
        with torch.no_grad():
            self.embeds = adapter.embed(self.ids)  # [1, T, d]: what the noise is added to
            clean_hooks = {f"{KINDS[k]}.{l}" for k in settings.kinds for l in range(L)}
            with self.lock(), adapter.capture(clean_hooks) as cap:
                probs = self._probs(self.embeds)
            self.clean = {name: v[0].detach() for name, v in cap.items()}  # hook -> [T, d]
            tgt = int(probs[0].argmax()) if target is None else int(target)
            std = noise_std(adapter, settings.noise)
            self.noise = corruption_noise(settings.samples, len(self.span), self.embeds.shape[-1], std,
                                          settings.seed).to(self.device)
            corrupted = self._corrupted(torch.arange(settings.samples))
            with self.lock(), adapter.capture({f"resid_pre.{l}" for l in range(L)}) as cap:
                p_corrupt = self._probs(corrupted)[:, tgt]
            # the residual entering each block in each corrupted run: where a batch starts
            self.resid_pre = torch.stack([cap[f"resid_pre.{l}"] for l in range(L)], 1)  # [S, L, T, d]
        self.result = TraceResult(
            target=tgt, p_clean=float(probs[0, tgt]), p_corrupt_samples=p_corrupt.cpu().numpy().astype(np.float64),
            span=self.span, n_tokens=T, n_layers=L, settings=settings, noise_std=std,
            scores={k: np.full((settings.samples, L, T), np.nan) for k in settings.kinds})
        self.rows = self._rows()
        self.result.rows_total = len(self.rows)

    def _corrupted(self, samples: torch.Tensor) -> torch.Tensor:
        """The input embeddings of noise samples `samples`, [len(samples), T, d]."""
        x = self.embeds.expand(len(samples), -1, -1).clone()
        span = torch.as_tensor(self.span, device=self.device)
        x[:, span] += self.noise[samples.to(self.device)].to(x.dtype)
        return x

    def _probs(self, embeds: torch.Tensor) -> torch.Tensor:
        """Next-token probabilities at the last position, [B, V], float32."""
        kwargs = {"logits_to_keep": 1} if _keeps_logits(self.model) else {}
        out = self.model(inputs_embeds=embeds, attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long,
                         device=embeds.device), use_cache=False, **kwargs)
        return torch.softmax(out.logits[:, -1].float(), -1)

    def _rows(self) -> list[tuple[int, str, int, int]]:
        """(first block run, kind, layer, position, sample) of every restored run, sorted by the
        first block so that each batch skips as many blocks as it can. Positions before the span
        are not run (their cells are p_corrupt: see the module's docstring)."""
        s, L, T = self.settings, self.adapter.n_layers, self.ids.shape[1]
        rows = []
        for l in range(L):
            for kind in s.kinds:
                first = l if kind == "resid" else window_layers(l, s.window, L)[0]
                for i in range(self.span[0], T):
                    rows += [(first, kind, l, i, j) for j in range(s.samples)]
        rows.sort(key=lambda r: r[0])
        return rows

    def _fill_before_span(self) -> None:
        for kind, scores in self.result.scores.items():
            scores[:, :, : self.span[0]] = self.result.p_corrupt_samples[:, None, None]

    def run(self, progress=None, should_stop: Callable[[], bool] | None = None) -> TraceResult:
        """Run the restored forwards (progress: a lensframe.progress.progress_bar argument: True
        for tqdm, a callback(fraction, message), or None). Raises TraceStopped when should_stop()
        turns true between batches."""
        from .progress import progress_bar

        s, L = self.settings, self.adapter.n_layers
        self._fill_before_span()
        batches = [self.rows[i: i + s.batch_size] for i in range(0, len(self.rows), s.batch_size)]
        bar = progress_bar(progress, len(batches), f"causal trace ({len(self.rows)} restored runs)")
        try:
            for batch in batches:
                if should_stop is not None and should_stop():
                    raise TraceStopped()
                self._run_batch(batch, L)
                self.result.rows_done += len(batch)
                bar.update(1)
        finally:
            bar.close()
        self.result.seconds = round(time.perf_counter() - self.t0, 3)
        self.result.done = True
        return self.result

    @torch.no_grad()
    def _run_batch(self, batch, L: int) -> None:
        s = self.settings
        samples = torch.tensor([r[4] for r in batch])
        start = min(r[0] for r in batch)
        patches: dict[str, list] = {}
        for row, (_, kind, layer, pos, _) in enumerate(batch):
            restored = [layer] if kind == "resid" else window_layers(layer, s.window, L)
            for l in restored:
                patches.setdefault(f"{KINDS[kind]}.{l}", []).append((row, pos))
        plan = {}
        for name, pairs in patches.items():
            rows = torch.tensor([r for r, _ in pairs], device=self.device)
            pos = torch.tensor([p for _, p in pairs], device=self.device)
            plan[name] = (rows, pos, self.clean[name][pos])
        embeds = self._corrupted(samples)
        resid = self.resid_pre[samples.to(self.device), start] if start > 0 else None
        with self.lock(), starting_at(self.adapter, start, resid), patching(self.adapter, plan):
            p = self._probs(embeds)[:, self.result.target].cpu().numpy()
        # A lock is not fair: without a pause outside it, this loop takes it back before a view
        # waiting for the model (a click's render) wakes, and the page waits for the whole trace.
        time.sleep(YIELD_S)
        for row, (_, kind, layer, pos, j) in enumerate(batch):
            self.result.scores[kind][j, layer, pos] = p[row]


def causal_trace(model, adapter, ids, span, settings: TraceSettings = TraceSettings(), target: int | None = None,
                 progress=None, should_stop=None, lock: Callable = nullcontext) -> TraceResult:
    """The whole trace of one text (token ids) with the tokens at positions `span` corrupted."""
    return Tracer(model, adapter, ids, span, settings, target, lock).run(progress, should_stop)


def _keeps_logits(model) -> bool:
    from .models.adapters import keeps_logits

    return keeps_logits(model)
