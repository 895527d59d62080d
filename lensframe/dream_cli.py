"""`lensframe dream SPEC --layer L --neuron I`: a dream from the command line, for scripted use.

It builds a board holding only what the dream needs (the tokens and the top examples of the layer,
shared with the spec's own top_examples or dream views when they index it, so `serve` and `dream`
reuse each other's results), runs the dataset pass if needed, then the dream with a progress bar.
The settings are the dream view's params, so a dream from here and one from the dashboard with the
same settings are the same stored result.
"""
from __future__ import annotations

import dataclasses
import json
import sys

from .errors import did_you_mean


def add_arguments(p) -> None:
    p.add_argument("--layer", type=int, help="the neuron's layer (the direction's layer)")
    p.add_argument("--neuron", type=int, help="the neuron's index in its layer")
    p.add_argument("--model", help="which model of the spec (default: the first)")
    p.add_argument("--target", choices=["neuron", "direction", "logit"], default="neuron",
                   help="neuron activation, residual along the neuron's value vector, or a token's log-prob")
    p.add_argument("--token", help="--target logit: the token, as text")
    p.add_argument("--start", choices=["example", "text", "random"], default=None,
                   help="best dataset example (default for neurons), a text, or random tokens (default otherwise)")
    p.add_argument("--text", help="--start text: the starting text")
    p.add_argument("--span", type=int, default=8, help="input positions optimised (default 8)")
    p.add_argument("--position", type=int, default=-1, help="where the target is read (default -1: the last token)")
    p.add_argument("--steps", type=int, default=500, help="optimisation steps (default 500)")
    p.add_argument("--lr", type=float, default=0.1, help="Adam learning rate (default 0.1)")
    p.add_argument("--temp-start", type=float, default=2.0, help="temperature at the start (default 2.0)")
    p.add_argument("--warmup", type=int, default=200, help="steps before the temperature decays (default 200)")
    p.add_argument("--decay", type=float, default=0.9995, help="temperature factor per step (default 0.9995)")
    p.add_argument("--temp-floor", type=float, default=0.1, help="lowest temperature (default 0.1)")
    p.add_argument("--gumbel", action="store_true", help="add Gumbel noise before the softmax")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--top-k", type=int, default=5, help="tokens per position in the final result")
    p.add_argument("--no-reuse", action="store_true", help="run again even if the store has this dream")
    p.add_argument("--json", action="store_true", help="print the outcome as JSON (no progress bar)")


def _params(args, layers, k):
    """The dream view's params from the arguments; pydantic's complaints become --flag messages."""
    from pydantic import ValidationError

    from lensframe.views.dream import DreamView

    from .dreams import DreamError

    raw = {"target": args.target, "token": args.token, "start": args.start, "text": args.text, "span": args.span,
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
    from .ops.dream import DreamTarget, check_dream
    from .spec.validate import ViewEntry, load_spec

    spec = load_spec(args.spec, allow_local_views=args.allow_local_views)
    model = args.model or next(iter(spec.models))
    if model not in spec.models:
        hint = did_you_mean(model, spec.models) or f"models: {', '.join(spec.models)}"
        raise dreams.DreamError([(f"--model: no model {model!r} in {args.spec}", hint)])
    if args.target != "logit" and (args.layer is None or args.neuron is None):
        raise dreams.DreamError([(f"--target {args.target} needs --layer and --neuron", None)])
    if args.target == "logit" and not args.token:
        raise dreams.DreamError([("--target logit needs --token", "e.g. --token ' Paris'")])
    args.start = args.start or ("example" if args.target == "neuron" else "random")
    if args.start == "text" and not args.text:
        raise dreams.DreamError([("--start text needs --text", None)])
    layers, k = _examples_layers(spec, model, args.layer)
    params = _params(args, layers, k)
    view = DreamView("dream", params, model)
    options = dict(cache_dir=args.cache_dir, device=args.device or "cpu", trust_remote_code=args.trust_remote_code)
    info = Board(spec, **options).infos[model]  # the spec as written: its own errors first, then shapes
    # the arguments against the model's shapes, before any weight loads
    at = args.position
    probe = {"neuron": DreamTarget("neuron", args.layer, args.neuron, position=at),
             "direction": DreamTarget("direction", args.layer, direction=(0.0,) * info.d_model, position=at),
             "logit": DreamTarget("logit", index=0, position=at)}[args.target]
    issues = check_dream(info, probe, view.settings(), args.span)
    if args.target == "direction" and args.neuron is not None and not 0 <= args.neuron < info.d_mlp:
        issues.append((f"neuron {args.neuron} is out of range ({info.d_mlp} neurons per layer: 0..{info.d_mlp - 1})", None))
    if issues:
        raise dreams.DreamError([(m.replace("layer ", "--layer ", 1).replace("neuron ", "--neuron ", 1)
                                  .replace("steps must", "--steps must", 1), h) for m, h in issues])
    only_dream = dataclasses.replace(spec, views={"dream": ViewEntry("dream", "dream", DreamView, params, model)})
    board = Board(only_dream, **options)
    if args.target == "neuron":  # the best dataset example: the start, and the bar to beat
        board.compute(progress=not args.json)
    target = view.resolve_target(board.executor.model(model), args.layer, args.neuron)
    settings = view.settings()
    start = dreams.resolve_start(board, model, target, args.span, args.start, args.text, args.seed)
    best = dreams.best_example(board, model, args.layer, args.neuron) if args.target == "neuron" else None
    from_store = not args.no_reuse and dreams.stored(board, model, target, settings, start) is not None
    bar = None
    if not args.json and not from_store:
        from tqdm.auto import tqdm

        bar = tqdm(total=settings.steps, desc=f"dream {target.label()}", unit="step")

    def on_step(s):
        if bar is not None and s.step > 0:
            bar.update(1)
            bar.set_postfix(soft=f"{s.soft:+.3f}", snapped=f"{s.snapped:+.3f}", T=f"{s.temperature:.2f}", refresh=False)

    try:
        trace = dreams.run(board, model, target, settings, start, on_step=on_step, reuse=not args.no_reuse)
    finally:
        if bar is not None:
            bar.close()
    out = summary(board, model, trace, start, best, from_store, args.top_k)
    if args.json:
        print(json.dumps(out))
    else:
        print_summary(out)
    return 0


def summary(board, model, trace, start, best, from_store: bool, top_k: int = 5) -> dict:
    from .dreams import decode

    text = lambda ids: "".join(decode(board, model, ids))  # noqa: E731
    b, last, first = trace.best, trace.steps[-1], trace.steps[0]
    ref = best.value if best else None
    return {
        "target": trace.target.label(), "settings": dataclasses.asdict(trace.settings),
        "start": {"kind": start.kind, "note": start.note, "text": text(start.ids), "snapped": first.snapped},
        "best_example": dataclasses.asdict(best) if best else None,
        "best": {"step": b.step, "snapped": b.snapped, "text": text(b.ids), "ids": b.ids},
        "final": {"step": last.step, "snapped": last.snapped, "soft": last.soft, "temperature": last.temperature,
                  "text": text(last.ids)},
        "ratio": (b.snapped / ref) if ref and ref > 0 else None,
        "top_tokens": [decode(board, model, ids[:top_k]) for ids in trace.top_ids],
        "steps_run": len(trace.steps) - 1, "seconds": round(trace.seconds, 3),
        "seconds_per_step": round(trace.seconds_per_step, 4), "from_store": from_store,
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
    w(f"  {how}\n")
