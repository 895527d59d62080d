"""`lensframe dream SPEC --layer L --neuron I`: a dream from the command line, for scripted use.

It builds a board holding only what the dream needs (the tokens and the top examples of the layer,
shared with the spec's own top_examples or dream views when they index it, so `serve` and `dream`
reuse each other's results), runs the dataset pass if needed, then the dream with a progress bar.
The settings are the dream view's params, so a dream from here and one from the dashboard with the
same settings are the same stored result.

Targets that compare two models name the reference with --other (default: the spec's other model):
`--target logit-diff --token " New"`, `--target kl`, `--target edit-direction --layer 7` (or with
--direction-file, a direction over the layer's neurons found without the base). With --json the
progress goes to stderr as one JSON object per line (every --every steps) and the outcome to stdout;
--seconds stops the optimisation after that long with the best text so far.
"""
from __future__ import annotations

import dataclasses
import json
import math
import sys
import time

from .errors import did_you_mean


def add_arguments(p) -> None:
    p.add_argument("--layer", type=int, help="the neuron's layer (the direction's layer)")
    p.add_argument("--neuron", type=int, help="the neuron's index in its layer")
    p.add_argument("--model", help="which model of the spec (default: the first)")
    p.add_argument("--target", choices=TARGETS, default="neuron",
                   help="neuron activation, residual along the neuron's value vector, a token's log-prob; comparing "
                   "with --other: log p(model) - log p(other) of --token (logit-diff), KL(model || other) of the "
                   "next token (kl), or --layer's neurons along the top input direction of the change to its MLP "
                   "output matrix (edit-direction)")
    p.add_argument("--token", help="--target logit or logit-diff: the token, as text")
    p.add_argument("--other", help="logit-diff, kl, edit-direction: the model compared with --model, e.g. the base "
                   "(default: the spec's other model)")
    p.add_argument("--flip", action="store_true", help="edit-direction: raise the opposite side of the direction")
    p.add_argument("--direction-file", help="edit-direction without a base: the direction over the layer's "
                   "neurons (length d_mlp), a .npy file or a JSON list")
    p.add_argument("--start", choices=["example", "text", "random"], default=None,
                   help="best dataset example (default for neurons), a text, or random tokens (default otherwise)")
    p.add_argument("--text", help="--start text: the starting text")
    p.add_argument("--span", type=int, default=8, help="input positions optimised (default 8)")
    p.add_argument("--position", type=int, default=-1, help="where the target is read (default -1: the last token)")
    from .dream_spec import DreamSettings

    d = DreamSettings()  # the defaults, shared with the dream view and Board.dream
    p.add_argument("--steps", type=int, default=d.steps, help="optimisation steps (default %(default)s)")
    p.add_argument("--lr", type=float, default=d.lr, help="Adam learning rate (default %(default)s)")
    p.add_argument("--temp-start", type=float, default=d.temp_start, help="temperature at the start (default %(default)s)")
    p.add_argument("--warmup", type=int, default=d.warmup, help="steps before the temperature decays (default %(default)s)")
    p.add_argument("--decay", type=float, default=d.decay, help="temperature factor per step (default %(default)s)")
    p.add_argument("--temp-floor", type=float, default=d.temp_floor, help="lowest temperature (default %(default)s)")
    p.add_argument("--gumbel", action="store_true", help="add Gumbel noise before the softmax")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--top-k", type=int, default=5, help="tokens per position in the final result")
    p.add_argument("--no-reuse", action="store_true", help="run again even if the store has this dream")
    p.add_argument("--json", action="store_true", help="print the outcome as JSON on stdout, and progress as JSON "
                   "lines on stderr (no progress bar)")
    p.add_argument("--every", type=int, default=10, help="--json: a progress line every N steps (default 10)")
    p.add_argument("--seconds", type=float, help="stop after this many seconds of optimisation, with the best so "
                   "far (such a dream is not stored: its steps depend on the machine)")


TARGETS = ["neuron", "direction", "logit", "logit-diff", "kl", "edit-direction"]
COMPARING = ("logit-diff", "kl", "edit-direction")


def _params(args, layers, k):
    """The dream view's params from the arguments; pydantic's complaints become --flag messages."""
    from pydantic import ValidationError

    from lensframe.views.dream import DreamView

    from .dreams import DreamError

    raw = {"target": args.target.replace("-", "_"), "token": args.token, "start": args.start, "text": args.text,
           "span": args.span, "other": args.other if args.target in COMPARING else None, "flip": args.flip,
           "position": args.position,
           "steps": args.steps, "lr": args.lr, "gumbel": args.gumbel, "seed": args.seed, "top_k": args.top_k,
           "layers": layers, "k": k, "pin": {"layer": args.layer, "neuron": args.neuron},
           "temperature": {"start": args.temp_start, "warmup": args.warmup, "decay": args.decay, "floor": args.temp_floor}}
    flags = {"start": "--temp-start", "floor": "--temp-floor"}
    try:
        return DreamView.Params.model_validate(raw)
    except ValidationError as err:
        issues = []
        for e in err.errors():
            loc = [str(x) for x in e["loc"]]
            flag = flags.get(loc[-1], "--" + loc[-1].replace("_", "-")) if loc[0] == "temperature" else "--" + loc[-1].replace("_", "-")
            issues.append((f"{flag}: {e['msg'].lower()} (got {e.get('input')!r})", None))
        raise DreamError(issues)


def _examples_layers(spec, model: str, layer: int | None):
    """(layers, k) of a top_examples or dream view of the spec that indexes `layer`, so the dream
    reads the same stored result; else just that layer."""
    for entry in spec.views.values():
        if entry.model == model and entry.type in ("top_examples", "dream"):
            layers = entry.params.layers
            if layers == "all" or layer in layers:
                return layers, entry.params.k
    return ([layer] if layer is not None else [0]), 10


def dream_command(args) -> int:
    from lensframe.views.dream import DreamView

    from . import dreams
    from .board import Board
    from .dream_spec import DreamTarget, check_dream
    from .spec.validate import ViewEntry, load_spec

    spec = load_spec(args.spec, allow_local_views=args.allow_local_views)
    model = args.model or next(iter(spec.models))
    if model not in spec.models:
        hint = did_you_mean(model, spec.models) or f"models: {', '.join(spec.models)}"
        raise dreams.DreamError([(f"--model: no model {model!r} in {args.spec}", hint)])
    if args.target in ("neuron", "direction") and (args.layer is None or args.neuron is None):
        raise dreams.DreamError([(f"--target {args.target} needs --layer and --neuron", None)])
    if args.target in ("logit", "logit-diff") and not args.token:
        raise dreams.DreamError([(f"--target {args.target} needs --token", "e.g. --token ' Paris'")])
    if args.target == "edit-direction" and args.layer is None:
        raise dreams.DreamError([("--target edit-direction needs --layer (the layer whose MLP changed)",
                                  "model_diff or the layer finder names it")])
    if args.target not in COMPARING and args.other:
        raise dreams.DreamError([(f"--other is for --target {' / '.join(COMPARING)} (target is {args.target})", None)])
    if args.target != "edit-direction" and (args.flip or args.direction_file):
        flag = "--flip" if args.flip else "--direction-file"
        raise dreams.DreamError([(f"{flag} is for --target edit-direction (target is {args.target})", None)])
    if args.seconds is not None and not args.seconds > 0:
        raise dreams.DreamError([(f"--seconds must be positive (got {args.seconds})", None)])
    if args.every < 1:
        raise dreams.DreamError([(f"--every must be at least 1 (got {args.every})", None)])
    args.start = args.start or ("example" if args.target == "neuron" else "random")
    if args.start == "text" and not args.text:
        raise dreams.DreamError([("--start text needs --text", None)])
    layers, k = _examples_layers(spec, model, args.layer)
    options = dict(cache_dir=args.cache_dir, device=args.device or "cpu", trust_remote_code=args.trust_remote_code)
    shapes = Board(spec, **options)  # the spec as written: its own errors first, then shapes
    info = shapes.infos[model]
    direction = _direction_file(args.direction_file, info.d_mlp) if args.direction_file else None
    other = None
    if args.target in COMPARING and direction is None:
        other = args.other or next((name for name in spec.models if name != model), None)
        problems = dreams.reference_issues(shapes, model, other, same_shape=args.target == "edit-direction")
        if problems:
            raise dreams.DreamError([(f"--other: {m}" if other is not None else m,
                                      h.replace("`other:` (on the command line, --other)", "--other") if h else h)
                                     for m, h in problems])
        args.other = other
    params = _params(args, layers, k)
    view = DreamView("dream", params, model)
    view.infos = shapes.infos
    # the arguments against the model's shapes, before any weight loads
    at = args.position
    probe = {"neuron": DreamTarget("neuron", args.layer, args.neuron, position=at),
             "direction": DreamTarget("direction", args.layer, direction=(0.0,) * info.d_model, position=at),
             "logit": DreamTarget("logit", index=0, position=at),
             "logit-diff": DreamTarget("logit_diff", index=0, position=at, other=other),
             "kl": DreamTarget("kl", position=at, other=other),
             "edit-direction": DreamTarget("edit_direction", args.layer, position=at,
                                           direction=direction or (1.0,) * info.d_mlp)}[args.target]
    issues = check_dream(info, probe, view.settings(), args.span, other=shapes.infos.get(other) if other else None)
    if args.target == "direction" and args.neuron is not None and not 0 <= args.neuron < info.d_mlp:
        issues.append((f"neuron {args.neuron} is out of range ({info.d_mlp} neurons per layer: 0..{info.d_mlp - 1})", None))
    if issues:
        raise dreams.DreamError([(m.replace("layer ", "--layer ", 1).replace("neuron ", "--neuron ", 1)
                                  .replace("steps must", "--steps must", 1), h) for m, h in issues])
    only_dream = dataclasses.replace(spec, views={"dream": ViewEntry("dream", "dream", DreamView, params, model)})
    board = Board(only_dream, **options)
    if args.target == "neuron":  # the best dataset example: the start, and the bar to beat
        board.compute(progress=not args.json)
    target = view.resolve_target(board, args.layer, args.neuron, direction=direction)
    settings = view.settings()
    start = dreams.resolve_start(board, model, target, args.span, args.start, args.text, args.seed)
    best = dreams.best_example(board, model, args.layer, args.neuron) if args.target == "neuron" else None
    from_store = not args.no_reuse and dreams.stored(board, model, target, settings, start) is not None
    label = target.label(model, args.token)
    bar = None
    if not args.json and not from_store:
        from tqdm.auto import tqdm

        bar = tqdm(total=settings.steps, desc=f"dream {label}", unit="step")
    progress = JsonProgress(board, model, args.every) if args.json else None

    def on_step(s):
        if bar is not None and s.step > 0:
            bar.update(1)
            bar.set_postfix(soft=f"{s.soft:+.3f}", snapped=f"{s.snapped:+.3f}", T=f"{s.temperature:.2f}", refresh=False)
        if progress is not None:
            progress.step(s)

    try:
        trace = dreams.run(board, model, target, settings, start, on_step=on_step, reuse=not args.no_reuse,
                           budget_s=args.seconds)
    finally:
        if bar is not None:
            bar.close()
    if progress is not None and not from_store:
        progress.last(trace.steps[-1])
    out = summary(board, model, trace, start, best, from_store, args.top_k, label=label, budget_s=args.seconds)
    if args.json:
        print(json.dumps(out))
    else:
        print_summary(out)
    return 0


def _direction_file(path: str, d_mlp: int) -> tuple:
    """A direction over a layer's neurons from a .npy file or a JSON list."""
    import numpy as np

    from .dreams import DreamError

    try:
        v = np.load(path) if path.endswith(".npy") else np.asarray(json.loads(open(path).read()), dtype=float)
    except (OSError, ValueError) as err:
        raise DreamError([(f"--direction-file: cannot read {path}: {err}", "a .npy file or a JSON list of numbers")])
    v = np.asarray(v, dtype=float).reshape(-1)
    if v.size != d_mlp or not np.isfinite(v).all() or not np.any(v):
        raise DreamError([(f"--direction-file: need {d_mlp} finite numbers, not all zero (the layer's neurons); "
                           f"got {v.size}", None)])
    return tuple(float(x) for x in v)


class JsonProgress:
    """--json progress: one JSON object per line on stderr, at step 0, every `every` steps and the
    last step (step, temperature, soft and snapped values, the best snapped so far, the text)."""

    def __init__(self, board, model: str, every: int):
        self.board, self.model, self.every = board, model, every
        self.best, self.written, self.t0 = -math.inf, -1, time.perf_counter()

    def step(self, s) -> None:
        self.best = max(self.best, s.snapped)
        if s.step % self.every == 0:
            self._write(s)

    def last(self, s) -> None:
        if s.step != self.written:
            self._write(s)

    def _write(self, s) -> None:
        from .dreams import decode

        line = {"step": s.step, "temperature": round(s.temperature, 6), "soft": _finite(s.soft),
                "snapped": _finite(s.snapped), "best": _finite(self.best),
                "text": "".join(decode(self.board, self.model, s.ids)),
                "elapsed": round(time.perf_counter() - self.t0, 3)}
        sys.stderr.write(json.dumps(line) + "\n")
        sys.stderr.flush()
        self.written = s.step


def _finite(x: float):
    """JSON has no NaN (the soft value at step 0): None instead."""
    return None if x is None or not math.isfinite(x) else x


def summary(board, model, trace, start, best, from_store: bool, top_k: int = 5, label: str | None = None,
            budget_s: float | None = None) -> dict:
    from .dreams import decode

    text = lambda ids: "".join(decode(board, model, ids))  # noqa: E731
    b, last, first = trace.best, trace.steps[-1], trace.steps[0]
    ref = best.value if best else None
    return {
        "target": label or trace.target.label(model), "kind": trace.target.kind, "model": model,
        "other": trace.target.other, "settings": dataclasses.asdict(trace.settings),
        "start": {"kind": start.kind, "note": start.note, "text": text(start.ids), "snapped": first.snapped},
        "best_example": dataclasses.asdict(best) if best else None,
        "best": {"step": b.step, "snapped": b.snapped, "text": text(b.ids), "ids": b.ids},
        "final": {"step": last.step, "snapped": last.snapped, "soft": _finite(last.soft),
                  "temperature": last.temperature, "text": text(last.ids)},
        "ratio": (b.snapped / ref) if ref and ref > 0 else None,
        "top_tokens": [decode(board, model, ids[:top_k]) for ids in trace.top_ids],
        "steps_run": len(trace.steps) - 1, "seconds": round(trace.seconds, 3),
        "seconds_per_step": round(trace.seconds_per_step, 4), "from_store": from_store,
        "stopped": trace.stopped, "out_of_time": trace.out_of_time, "budget_s": budget_s,
    }


def print_summary(out: dict) -> None:
    w = sys.stdout.write
    w(f"dream of {out['target']}\n")
    if out["best_example"]:
        e = out["best_example"]
        w(f"  best dataset example: {e['value']:+.4f} (sample {e['sample']}, position {e['position']})\n")
    w(f"  start ({out['start']['note']}): {out['start']['snapped']:+.4f}  {out['start']['text']!r}\n")
    w(f"  best snapped (step {out['best']['step']}): {out['best']['snapped']:+.4f}  {out['best']['text']!r}\n")
    w(f"  final snapped (step {out['final']['step']}, T={out['final']['temperature']:.3f}): "
      f"{out['final']['snapped']:+.4f}  {out['final']['text']!r}\n")
    if out["ratio"] is not None:
        w(f"  best snapped / best dataset example: {out['ratio']:.3f}\n")
    w("  top tokens per position at the end: " + " | ".join(" ".join(repr(t) for t in row) for row in out["top_tokens"]) + "\n")
    how = "from the store" if out["from_store"] else f"{out['steps_run']} steps in {out['seconds']:.1f}s " \
          f"({out['seconds_per_step'] * 1000:.0f} ms/step)"
    if out["out_of_time"]:
        how += f", stopped by the time budget ({out['budget_s']:g}s) before step {out['settings']['steps']}"
    w(f"  {how}\n")
