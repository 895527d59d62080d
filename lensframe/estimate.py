"""Memory and time of each pass of a plan, before anything runs (`lensframe plan`, `--max-memory`).

Memory comes from shapes, without loading weights: the weights (parameters counted on torch's meta
device from the config, times the dtype's size), the runtime (this process's resident memory once
torch and transformers are imported), and per batch what coexists while it runs: the captured hook
tensors, the model's own working memory (logits, one block's intermediates, and autograd's saved
tensors when an op reads gradients), each op's working memory in its update (e.g. the logit lens's
[rows, vocab] decode buffers), and the reduction states (the ops' `estimate_bytes`). Batch shapes are
the real ones: the dataset is tokenized (tokenizer only) and cut into batches as the executor does.

Time needs a measurement, so it is opt-in (`--calibrate`): it loads the weights and runs the pass's
longest batch twice through the real forward and the real reductions (the second run is timed; the
first pays one-off allocations), then extrapolates by tokens to every batch. That costs seconds to
minutes on a CPU, and `plan` should answer at once, so it is not the default. Calibration also
measures the process's peak resident memory during those batches (Linux: VmHWM after resetting it),
which then stands next to the estimate (and, when higher, is what --max-memory checks); resetting it
also resets what /usr/bin/time reports for the plan process. It writes nothing to the store. Finalize steps (training a
tuned lens) and derived results are not timed.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

from .errors import LensframeError

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
          "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_size(text: str) -> int:
    """'500MB', '2GB', '1.5GiB', '123456' -> bytes (kB/MB/GB are powers of 10, KiB/MiB/GiB of 2)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    unit = m and m.group(2).lower()
    if not m or unit not in _UNITS:
        raise LensframeError(f"--max-memory: cannot read {text!r} as a size\n    hint: write e.g. 500MB, 2GB, 1.5GiB "
                             f"or a number of bytes")
    return int(float(m.group(1)) * _UNITS[unit])


def fmt(n: float) -> str:
    for unit, size in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if n >= size:
            return f"{n / size:.{(2 if unit == 'GB' else 1) if n < 10 * size else 0}f} {unit}"
    return f"{int(n)} B"


@dataclass
class PassEstimate:
    kind: str  # "dataset" or "focus"
    model: str
    nodes: list  # PlannedNode of the pass (those that would run)
    cached: bool
    batches: list[tuple[int, int]]  # (samples, tokens) of each batch; a focus pass: its longest sample
    parts: dict[str, int]  # bytes by what holds them (see _parts)
    seconds_per_batch: float | None = None  # calibrated, on the longest batch
    seconds: float | None = None  # extrapolated to every batch
    measured_peak: int | None = None  # resident memory high-water mark during calibration
    note: str = ""
    views: list[str] = field(default_factory=list)
    loaded: list[str] = field(default_factory=list)  # models whose weights are in memory by then
    lengths: object = None  # tokens per sample (numpy), for "what if" estimates and calibration

    @property
    def peak(self) -> int:
        return sum(self.parts.values())

    @property
    def worst(self) -> int:
        """What --max-memory is checked against: the estimate, or the measured peak if higher."""
        return max(self.peak, self.measured_peak or 0)

    @property
    def title(self) -> str:
        return f"{self.kind} pass on {self.model}"

    def to_json(self) -> dict:
        return {"kind": self.kind, "model": self.model, "batches": len(self.batches),
                "batch_shape": list(self.batches[0]) if self.batches else None, "peak_bytes": self.peak,
                "parts_bytes": dict(self.parts), "seconds_per_batch": self.seconds_per_batch,
                "seconds": self.seconds, "measured_peak_bytes": self.measured_peak, "cached": self.cached,
                "note": self.note or None}

    def describe(self) -> str:
        B, T = self.batches[0] if self.batches else (0, 0)
        if self.kind == "dataset":
            shape = f"{len(self.batches)} batches of ≤ {B} × {T} tokens"
        else:
            shape = f"one forward of ≤ {T} tokens per focused sample"
        if self.cached:
            return f"  {self.title}: all cached, no forward"
        if self.seconds is not None:
            per = "batch" if self.kind == "dataset" else "focus change"
            when = f"≈ {self.seconds:.1f} s (calibrated: {self.seconds_per_batch:.2f} s per {per})"
        else:
            when = "time: run with --calibrate"
        parts = " + ".join(f"{k} {fmt(v)}" for k, v in self.parts.items() if v)
        measured = f"; measured peak {fmt(self.measured_peak)}" if self.measured_peak else ""
        note = f"; {self.note}" if self.note else ""
        return f"  {self.title}: {shape}, peak ≈ {fmt(self.peak)}, {when}\n      {parts}{measured}{note}"


# --- shapes -----------------------------------------------------------------------------------
def _elements_per_token(hook: str, info, T: int) -> int:
    kind = hook.split(".")[0]
    if kind == "mlp_post":
        return info.d_mlp
    if kind == "attn_pattern":  # [heads, query, key]: one row of T keys per head and query token
        return info.n_heads * T
    if kind == "unembed":
        return info.vocab_size
    return info.d_model  # resid_*, attn_out, mlp_in, mlp_out, final_norm


def capture_bytes(hooks, info, B: int, T: int, dsize: int) -> int:
    """The captured tensors of one batch [B, T, width] in the model's dtype: they live until the
    batch's reductions are done."""
    return sum(B * T * _elements_per_token(h, info, T) for h in hooks) * dsize


def forward_bytes(info, B: int, T: int, dsize: int, full_logits: bool = True) -> int:
    """The forward's own working memory: the logits ([B, T, vocab]; [B, 1, vocab] where nothing
    reads them, Executor._forward's logits=False), and one block's intermediates (residual, norms,
    q/k/v, the MLP's hidden layers, eager attention's scores and probabilities)."""
    block = B * T * (4 * info.d_model + 3 * info.d_mlp) + 2 * B * info.n_heads * T * T
    return (B * (T if full_logits else 1) * info.vocab_size + block) * dsize


def backward_bytes(info, B: int, T: int, dsize: int, grad_hooks) -> int:
    """A forward + backward (ops that read gradients): autograd keeps every block's inputs of its
    matmuls, norms and softmax (~8 d + 4 d_mlp + 2 heads·T per token), the float32 log-softmax of
    the logits and its gradient, and the gradients of the hooks read."""
    saved = B * T * info.n_layers * (8 * info.d_model + 4 * info.d_mlp + 2 * info.n_heads * T) * dsize
    return saved + 2 * B * T * info.vocab_size * 4 + capture_bytes(grad_hooks, info, B, T, dsize)


def _lens_work(node, info, B, T):
    """decode_layers: the [ROWS_PER_MATMUL, vocab] logits and exp/scratch buffers (kept for the
    whole pass, the same whatever the batch), and three float32 copies of the rows decoded; with
    `decode: bf16_screen` also the bfloat16 copy of the unembedding and a bfloat16 logits buffer."""
    from .ops.lens import ROWS_PER_MATMUL, LogitLensOp

    L1, R, V = info.n_layers + 1, B * T, info.vocab_size
    screen = 2 * (V * info.d_model + ROWS_PER_MATMUL * V) if node.param("decode", "fp32") != "fp32" else 0
    return LogitLensOp.shared_key(node), 2 * ROWS_PER_MATMUL * V * 4 + 3 * L1 * R * info.d_model * 4 + screen


def _top_examples_work(node, info, B, T):
    """One layer at a time: masked copy, int64 bucket indices of the real tokens, the windows
    around the peaks merged with the state's."""
    from .ops.neurons import WINDOW

    W = sum(WINDOW) + 1
    return node, B * T * info.d_mlp * 24 + 2 * info.d_mlp * (node.param("k") + B) * W * 4


def _model_kl_work(node, info, B, T):
    """The other model's logits, both log-softmaxes, exp and difference: [B, T, vocab] float32 each."""
    return node, 5 * B * T * info.vocab_size * 4


# Ops whose update needs more than a float32 copy of what they read. An op may define
# working_bytes(node, info, B, T) -> (share key, bytes) itself; that takes precedence.
_WORK = {"logit_lens": _lens_work, "neuron_top_examples": _top_examples_work, "model_kl": _model_kl_work}


def op_work_bytes(nodes, info, B: int, T: int) -> int:
    from .ops import get_op

    shared = {}
    for node in nodes:
        op = get_op(node.op)
        fn = getattr(op, "working_bytes", None) or _WORK.get(node.op)
        if fn is not None:
            key, n = fn(node, info, B, T)
        else:  # a float32 copy of what it reads (a mask, a product)
            key, n = node, capture_bytes(op.hooks(node, info) | op.grad_hooks(node, info), info, B, T, 4)
        shared[key] = max(shared.get(key, 0), n)  # lens nodes of one stream share one decode
    return sum(shared.values())


# --- what is fixed: runtime, weights ----------------------------------------------------------
_RUNTIME: list[int] = []
_WEIGHTS: dict = {}


def _rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _hwm() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current resident size (Linux >= 4.0)
        return True
    except OSError:
        return False


def runtime_bytes() -> int:
    """Resident memory of Python with torch and transformers imported (measured once per process)."""
    if not _RUNTIME:
        import torch  # noqa: F401
        from transformers import AutoModelForCausalLM  # noqa: F401

        try:
            _RUNTIME.append(_rss())
        except OSError:  # not Linux: no runtime term
            _RUNTIME.append(0)
    return _RUNTIME[0]


def dtype_size(board, model: str) -> int:
    import torch

    return torch.empty((), dtype=getattr(torch, board.spec.models[model].dtype)).element_size()


def weights_bytes(board, model: str) -> int:
    """Parameters counted on the meta device (no memory, no weights read) times the dtype's size;
    tied embeddings count once, as they are stored once."""
    src = board.sources[model]
    key = (src.folder(), board.spec.models[model].dtype)
    if key not in _WEIGHTS:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        kw = dict(trust_remote_code=src.spec.trust_remote_code, **src.load_kwargs())
        cfg = AutoConfig.from_pretrained(src.folder(), **kw)
        with torch.device("meta"):
            m = AutoModelForCausalLM.from_config(cfg, trust_remote_code=src.spec.trust_remote_code)
        _WEIGHTS[key] = sum(p.numel() for p in m.parameters()) * dtype_size(board, model)
    return _WEIGHTS[key]


# --- batches ----------------------------------------------------------------------------------
def token_lengths(board, model: str):
    """Tokens per sample, as the executor will see them: the stored tokens result when cached,
    else the dataset tokenized with the model's tokenizer (no weights, nothing stored)."""
    import numpy as np

    node = next(p for p in board.plan.of_kind("prepare", model) if p.node.op == "tokens")
    if node.cached:
        return np.asarray(board.result(node.node)["lengths"])
    from transformers import AutoTokenizer

    from .ops.tokens import tokenize

    src = board.sources[model]
    tok = AutoTokenizer.from_pretrained(src.folder(), trust_remote_code=src.spec.trust_remote_code, **src.load_kwargs())
    ids = tokenize(tok, board.dataset.texts, node.node.param("max_tokens"))
    return np.array([len(x) for x in ids], dtype=np.int32)


def batch_shapes(lengths, batch_size: int, max_tokens: int | None = None) -> list[tuple[int, int]]:
    """(samples, padded tokens) of each batch: sorted by length, then cut, as Executor does."""
    import numpy as np

    lengths = np.minimum(lengths, max_tokens) if max_tokens else np.asarray(lengths)
    order = np.sort(lengths)[::-1]
    return [(len(order[i : i + batch_size]), int(order[i])) for i in range(0, len(order), batch_size)]


# --- passes -----------------------------------------------------------------------------------
def _hooks(nodes, info):
    from .ops import get_op

    hooks, grads = set(), set()
    for n in nodes:
        hooks |= get_op(n.op).hooks(n, info)
        grads |= get_op(n.op).grad_hooks(n, info)
    return hooks, grads


def _parts(board, kind, model, nodes, shapes, loaded, n_samples) -> dict[str, int]:
    """Bytes of what coexists at the pass's worst batch: the runtime, the loaded models' weights, the
    batch's captures, the forward (+ backward), the ops' working memory, and the results (reduction
    states for a dataset pass; the focus memo of FOCUS_MEMO_SIZE samples for a focus pass)."""
    from .executor import FOCUS_MEMO_SIZE
    from .ops import get_op

    info, dsize = board.infos[model], dtype_size(board, model)
    hooks, grads = _hooks(nodes, info)
    T_max = max(T for _, T in shapes)

    def transient(B, T):
        full_logits = bool(grads) or "unembed" in hooks  # the loss's logits, or a hook on the head
        fwd = forward_bytes(info, B, T, dsize, full_logits) + (backward_bytes(info, B, T, dsize, grads) if grads else 0)
        return capture_bytes(hooks | grads, info, B, T, dsize), fwd, op_work_bytes(nodes, info, B, T)

    worst = max((transient(B, T) for B, T in shapes), key=sum)
    results = sum(get_op(n.op).estimate_peak_bytes(n, info, n_samples, T_max) for n in nodes)
    if kind == "focus":
        results *= min(FOCUS_MEMO_SIZE, n_samples)
    tokens = n_samples * T_max * 4 * 3  # the tokens result every pass reads
    return {"runtime": runtime_bytes(), "weights": sum(weights_bytes(board, m) for m in loaded),
            "captures": worst[0], ("forward+backward" if grads else "forward"): worst[1], "ops' work": worst[2],
            "results": results + tokens}


def estimate_plan(board, calibrate: bool = False, batch_size: int | None = None,
                  max_tokens: int | None = None) -> list[PassEstimate]:
    """One PassEstimate per entry of board.plan.passes(), in the same order. batch_size and
    max_tokens default to the spec's (other values answer "what if")."""
    from .graph import dataset_stages

    plan = board.plan
    bs = batch_size or board.spec.run.batch_size
    out, loaded = [], []
    n = len(board.dataset)
    for model in plan.models:
        lengths = token_lengths(board, model)
        shapes = batch_shapes(lengths, bs, max_tokens)
        for stage in dataset_stages(plan.of_kind("dataset", model)):
            todo = [p for p in stage if not p.cached]
            others = [p.node.param("other") for p in todo if p.node.param("other")]
            for m in [model] + others:
                if todo and m not in loaded:
                    loaded.append(m)
            nodes, have = [p.node for p in (todo or stage)], list(loaded or [model])
            out.append(PassEstimate("dataset", model, todo or stage, not todo, shapes,
                                    _parts(board, "dataset", model, nodes, shapes, have, n),
                                    views=_views(todo or stage), loaded=have, lengths=lengths))
        focus = plan.of_kind("focus", model)
        if focus:  # the server loads every model of the plan
            T = max(T for _, T in shapes)
            out.append(PassEstimate("focus", model, focus, False, [(1, T)],
                                    _parts(board, "focus", model, [p.node for p in focus], [(1, T)], plan.models, n),
                                    views=_views(focus), loaded=list(plan.models), lengths=lengths))
    if calibrate:
        for est in out:
            if not est.cached:
                _calibrate(board, est)
    return out


def _views(planned) -> list[str]:
    return sorted({v for p in planned for v in p.views})


# --- calibration --------------------------------------------------------------------------------
def _calibrate(board, est: PassEstimate) -> None:
    """Run the pass's longest batch twice (real forward, real reductions on throwaway states), time
    the second, and record the resident high-water mark over both."""
    import numpy as np
    import torch

    from .executor import PassContext
    from .ops import Batch, get_op
    from .ops.tokens import tokenize

    ex = board.executor
    loaded = ex.model(est.model)
    nodes = [p.node for p in est.nodes]
    inputs = {i: board.result(i) for nd in nodes for i in nd.inputs if i.kind == "dataset"}
    missing = [i.label() for i, r in inputs.items() if r is None]
    if missing:
        est.note = f"not calibrated: reads {', '.join(missing)}, computed by an earlier pass"
        return
    B, T = est.batches[0]
    lengths = est.lengths
    samples = np.argsort(-lengths, kind="stable")[:B]
    texts = [board.dataset.texts[i] for i in samples]
    rows = tokenize(loaded.tokenizer, texts, T)
    pad = loaded.tokenizer.pad_token_id or 0
    ids = torch.full((B, T), -1, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.as_tensor(r[:T])
    mask = ids >= 0
    ids = ids.masked_fill(~mask, pad).to(loaded.device)
    mask = mask.to(loaded.device)
    hooks, grads = _hooks(nodes, loaded.info)
    ctx = PassContext(loaded.info, loaded.adapter, loaded.tokenizer, board.dataset, int(lengths.max()), loaded.device,
                      nodes=tuple(nodes), inputs=inputs, progress=False, executor=ex)
    ops = [(nd, get_op(nd.op)) for nd in nodes]
    states = {nd: op.init(nd, ctx) for nd, op in ops} if est.kind == "dataset" else {}
    reset = _reset_hwm()
    seconds = []
    for _ in range(2):
        t0 = time.perf_counter()
        captures, grad_out = {}, {}
        with ex.model_lock(est.model):
            if grads:
                ex._forward_backward(loaded, ids, mask, hooks, grads, captures, grad_out)
            else:
                ex._forward(loaded, ids, mask, hooks, captures)
        if est.kind == "dataset":
            batch = Batch(samples, ids, mask, captures, grads=grad_out)
            for nd, op in ops:
                states[nd] = op.update(nd, states[nd], batch, ctx)
        else:
            fctx = PassContext(loaded.info, loaded.adapter, loaded.tokenizer, board.dataset, T, loaded.device,
                               executor=ex)
            for nd, op in ops:
                op.extract(nd, captures, fctx)
        seconds.append(time.perf_counter() - t0)
        del captures, grad_out
    est.seconds_per_batch = seconds[-1]
    per_token = seconds[-1] / (B * T)  # extrapolate by padded tokens: batches get shorter
    est.seconds = est.seconds_per_batch if est.kind == "focus" else sum(b * t for b, t in est.batches) * per_token
    if reset:
        est.measured_peak = _hwm()


# --- --max-memory -------------------------------------------------------------------------------
def check_fits(board, estimates: list[PassEstimate], limit: int) -> None:
    """Raise a LensframeError naming the pass that does not fit `limit` bytes, its biggest parts,
    and settings (with numbers) that would fit."""
    over = [e for e in estimates if not e.cached and e.worst > limit]
    if not over:
        return
    e = max(over, key=lambda e: e.worst)
    biggest = sorted(((v, k) for k, v in e.parts.items() if v), reverse=True)[:3]
    measured = f" (measured {fmt(e.measured_peak)})" if e.measured_peak and e.measured_peak > e.peak else ""
    lines = [f"{e.title} needs ≈ {fmt(e.peak)}{measured}, more than --max-memory {fmt(limit)} "
             f"(biggest: {', '.join(f'{k} {fmt(v)}' for v, k in biggest)})"]
    hints = []
    B, T = e.batches[0]
    peak_at = lambda **kw: _peak_of(board, e, **kw)  # noqa: E731
    if e.kind == "dataset" and B > 1:
        fits = next((b for b in range(B - 1, 0, -1) if peak_at(batch_size=b) <= limit), None)
        if fits:
            hints.append(f"set `run: {{batch_size: {fits}}}` (peak ≈ {fmt(peak_at(batch_size=fits))})")
        else:
            hints.append(f"a smaller batch is not enough: batch_size 1 still needs ≈ {fmt(peak_at(batch_size=1))}")
    bs = board.spec.run.batch_size if e.kind == "dataset" else 1
    # fewer than 8 tokens a sample is not worth suggesting
    t_fit = next((t for t in range(T - 1, 7, -1) if peak_at(max_tokens=t) <= limit), None)
    if t_fit:
        hints.append(f"fewer tokens: `dataset: {{max_tokens: {t_fit}}}` at batch_size {bs} "
                     f"(peak ≈ {fmt(peak_at(max_tokens=t_fit))})")
    info = board.infos[e.model]
    for p in e.nodes:
        if p.node.param("layers", "absent") in (None, "all") and info.n_layers > 1:
            from .ops import get_op

            hooks = get_op(p.node.op).hooks(p.node, info)
            one = capture_bytes(hooks, info, B, T, dtype_size(board, e.model)) // info.n_layers
            hints.append(f"capture fewer layers: view {', '.join(p.views)} reads all {info.n_layers} layers "
                         f"(≈ {fmt(one)} a layer per batch): list the ones you need in its `layers:`")
    fixed = e.parts["runtime"] + e.parts["weights"]
    if fixed > limit:
        hints.append(f"the runtime and weights alone take {fmt(fixed)}: give it more memory, or load the model "
                     f"in a smaller dtype (`dtype: bfloat16` in the model)")
    if not hints:
        hints.append("give it more memory")
    raise LensframeError("\n".join(lines + [f"    hint: {'or ' if i and 'not enough' not in hints[i - 1] else ''}{h}"
                                             for i, h in enumerate(hints)]))


def _peak_of(board, est: PassEstimate, batch_size: int | None = None, max_tokens: int | None = None) -> int:
    """The peak of the same pass with another batch size or token limit."""
    if est.kind == "focus":
        shapes = [(1, min(int(est.lengths.max()), max_tokens or 10**9))]
    else:
        shapes = batch_shapes(est.lengths, batch_size or board.spec.run.batch_size, max_tokens)
    parts = _parts(board, est.kind, est.model, [p.node for p in est.nodes], shapes, est.loaded, len(board.dataset))
    return sum(parts.values())
