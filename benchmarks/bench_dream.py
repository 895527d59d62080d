"""Text deep dream on SmolLM2 with fortunes: does the optimised span beat the dataset's best example?

    python benchmarks/bench_dream.py [--limit 200] [--max-tokens 32] [--layers 2,8,16,24] [--per-layer 3]
                                     [--span 8] [--steps 400] [--lr 0.1] [--temp-start 2.0] [--warmup 100]
                                     [--decay 0.99] [--temp-floor 0.1] [--seed 0] [--repeat 10]
                                     [--quick] [--threads 2] [--json FILE] [--out docs/BENCHMARKS.md]

One spec (builtin:smollm2-135m, builtin:fortunes) with a `top_examples` view and a `dream` view
indexing the same layers with the same k (so both read one neuron_top_examples node);
Board.from_text(...).compute() runs the dataset pass in a temporary store. Neurons are picked
deterministically: for each layer, a permutation of its neurons seeded with --seed, keeping the first
--per-layer neurons whose best dataset example is positive and peaks at position >= span - 1 (so the
start is a full span-token window of the example). Each neuron is then dreamed exactly as
`lensframe dream SPEC --layer L --neuron I` does (lensframe/dream_cli.py): the dream view's settings
and target, lensframe.dreams.resolve_start(..., "example") (the best example's last `span` tokens up
to its peak), lensframe.dreams.run. Reported per neuron: the best dataset example's activation, the
snapped activation of the start window, the best snapped activation over the run (and its step),
the final snapped activation, best / example, the best snapped text, and ms per step.

Baseline (same run, same neuron, measured right after its dream so the shared machine's load is
about the same): a plain forward of the span (the best snapped tokens, no gradients, stopped after
the target layer as the dream's forwards are), a plain forward + backward of the same span
(gradient w.r.t. its input embeddings, same stop), and the relaxation alone (softmax over the
vocabulary, soft tokens · W_E, their backward into Z, one Adam update; no model). A dream step is the
second on the soft span plus the third, plus the first for each snapped text not scored before (the
dream memoizes them), so ms/step over their sum says whether anything else costs; ms/step over one
forward + backward is the headline ratio.

--quick: a smoke test (40 fortunes, 16 tokens, layers 2 and 8, one neuron each, 30 steps).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

SECTION = "Text deep dream (SmolLM2, fortunes)"
MODEL = "main"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=200, help="fortunes sampled (default: %(default)s)")
    ap.add_argument("--max-tokens", type=int, default=32, help="tokens per text (default: %(default)s)")
    ap.add_argument("--layers", default="2,8,16,24", help="layers indexed and dreamed (default: %(default)s)")
    ap.add_argument("--per-layer", type=int, default=3, help="neurons dreamed per layer (default: %(default)s)")
    ap.add_argument("--k", type=int, default=10, help="top examples kept per neuron (default: %(default)s)")
    ap.add_argument("--span", type=int, default=8, help="positions optimised (default: %(default)s)")
    ap.add_argument("--steps", type=int, default=400, help="optimisation steps per dream (default: %(default)s)")
    ap.add_argument("--lr", type=float, default=0.1, help="Adam learning rate (default: %(default)s)")
    ap.add_argument("--temp-start", type=float, default=2.0, help="temperature at the start (default: %(default)s)")
    ap.add_argument("--warmup", type=int, default=100, help="steps before T decays (default: %(default)s)")
    ap.add_argument("--decay", type=float, default=0.99,
                    help="T factor per step after the warm-up (default: %(default)s; docs/METHODS.md's 0.9995 needs "
                         "~6,200 steps to anneal)")
    ap.add_argument("--temp-floor", type=float, default=0.1, help="lowest temperature (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0, help="seeds the dataset sample, the neuron pick and the dream")
    ap.add_argument("--repeat", type=int, default=10, help="timings of the baseline forwards, median (default: %(default)s)")
    ap.add_argument("--quick", action="store_true", help="a smoke test: tiny dataset, two neurons, 30 steps")
    ap.add_argument("--threads", type=int, default=2, help="torch threads, via OMP_NUM_THREADS (default: %(default)s)")
    ap.add_argument("--json", default=None, help="also write the per-neuron results to this JSON file")
    ap.add_argument("--out", default=None, help="write/replace this benchmark's section of this markdown file")
    args = ap.parse_args(argv)
    if args.quick:
        args.limit, args.max_tokens, args.layers, args.per_layer = 40, 16, "2,8", 1
        args.steps, args.warmup, args.decay, args.repeat = 30, 10, 0.95, 2
    return args


def make_spec(args, layers) -> str:
    ls = "[" + ", ".join(map(str, layers)) + "]"
    return f"""lensframe: 1
model: builtin:smollm2-135m
dataset:
  source: builtin:fortunes
  label: topic
  limit: {args.limit}
  max_tokens: {args.max_tokens}
  seed: {args.seed}
run:
  batch_size: 8
  threads: {args.threads}
views:
  top: {{type: top_examples, layers: {ls}, k: {args.k}}}
  dream:
    type: dream
    layers: {ls}
    k: {args.k}
    span: {args.span}
    steps: {args.steps}
    lr: {args.lr}
    seed: {args.seed}
    temperature: {{start: {args.temp_start}, warmup: {args.warmup}, decay: {args.decay}, floor: {args.temp_floor}}}
"""


def pick_neurons(board, layers, d_mlp: int, per_layer: int, span: int, seed: int):
    """Per layer: a seeded permutation of the neurons, the first `per_layer` whose best example is
    positive and peaks at position >= span - 1. Returns [(layer, neuron, BestExample)] and, per layer,
    how many were looked at."""
    import numpy as np

    from lensframe import dreams

    picked, looked = [], {}
    for layer in layers:
        rng = np.random.default_rng([seed, layer])
        n = 0
        for i, neuron in enumerate(rng.permutation(d_mlp)):
            best = dreams.best_example(board, MODEL, layer, int(neuron))
            if best is not None and best.value > 0 and best.position >= span - 1:
                picked.append((layer, int(neuron), best))
                n += 1
                if n == per_layer:
                    break
        looked[layer] = i + 1
    return picked, looked


def median_ms(fn, repeat: int) -> float:
    fn()  # warm
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def baselines(board, target, ids: list[int], repeat: int) -> dict:
    """A plain forward and a plain forward + backward of `ids` (the same stop as the dream's), and
    the relaxation alone (what a dream step adds that does not depend on the model's depth)."""
    import torch

    from lensframe.ops.dream import _run, evaluate  # the dream's own forward, so the stop is the same

    adapter = board.executor.model(MODEL).adapter
    W = adapter.embed_weight.detach()
    x = torch.as_tensor([ids], dtype=torch.long, device=W.device)
    Z = torch.zeros(len(ids), W.shape[0], device=W.device, requires_grad=True)
    opt = torch.optim.Adam([Z], lr=0.1)
    probe = torch.randn(W.shape[1], device=W.device)

    def relax():
        # softmax over the vocabulary, soft tokens · W_E, the backward of both into Z, one Adam update
        emb = torch.softmax(Z / 0.5, -1) @ W
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(-(emb @ probe).sum(), [Z])
        Z.grad = grad
        opt.step()

    def fwd():
        evaluate(adapter, x, target)

    def fwd_bwd():
        emb = adapter.embed(x).detach().requires_grad_(True)
        with torch.enable_grad():
            value = _run(adapter, target, inputs_embeds=emb)[0]
            torch.autograd.grad(-value, [emb])

    with board.executor.model_lock(MODEL):
        return {"fwd_ms": median_ms(fwd, repeat), "fwd_bwd_ms": median_ms(fwd_bwd, repeat),
                "relax_ms": median_ms(relax, repeat)}


def cell(text: str) -> str:
    """A text for a markdown table cell: escapes visible, no pipes or backticks."""
    shown = json.dumps(text, ensure_ascii=False)[1:-1].replace("`", "'").replace("|", "\\|")
    return f"`{shown}`" if shown.strip() else "(blank)"


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    layers = [int(x) for x in args.layers.split(",") if x.strip()]

    from _common import machine, write_section

    from lensframe import dreams
    from lensframe.board import Board

    load_start = os.getloadavg()
    spec = make_spec(args, layers)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        board = Board.from_text(spec, base_dir=Path(tmp), cache_dir=Path(tmp) / "store")
        board.executor.model(MODEL)  # load before the clock starts
        info = board.infos[MODEL]
        t0 = time.perf_counter()
        report = board.compute(progress=True)
        pass_seconds = time.perf_counter() - t0
        n_tokens = int(board.executor.tokens(MODEL)["lengths"].sum())
        view = board.views["dream"]
        settings = view.settings()
        picked, looked = pick_neurons(board, layers, info.d_mlp, args.per_layer, args.span, args.seed)
        text = lambda ids: "".join(dreams.decode(board, MODEL, ids))  # noqa: E731
        t_dreams = time.perf_counter()
        for layer, neuron, best in picked:
            # as dream_command does: the view's target and settings, the example start, dreams.run
            target = view.target(layer, neuron)
            start = dreams.resolve_start(board, MODEL, target, args.span, "example", None, args.seed)
            stamps = []  # time of each step's end: per-step durations, so a burst of load shows as an outlier
            trace = dreams.run(board, MODEL, target, settings, start, reuse=False,
                               on_step=lambda step: stamps.append(time.perf_counter()))
            durations = [b - a for a, b in zip(stamps, stamps[1:])]
            b, first, last = trace.best, trace.steps[0], trace.steps[-1]
            base = baselines(board, target, start.prefix + list(b.ids), args.repeat)
            row = {
                "layer": layer, "neuron": neuron,
                "example": best.value, "example_sample": best.sample, "example_position": best.position,
                "start": first.snapped, "start_text": text(start.ids),
                "best": b.snapped, "best_step": b.step, "best_temperature": b.temperature, "best_text": text(b.ids),
                "best_changed": sum(int(x != y) for x, y in zip(b.ids, start.ids)),
                # the dream scores each distinct snapped text once (memoized): that many plain forwards
                "texts": len({tuple(st.ids) for st in trace.steps}), "steps": len(trace.steps) - 1,
                "final": last.snapped, "final_step": last.step, "final_temperature": last.temperature,
                "final_soft": last.soft, "max_soft": max(s.soft for s in trace.steps[1:]),
                "final_text": text(last.ids),
                "ratio": b.snapped / best.value,
                "ms_per_step": 1000 * statistics.median(durations), "ms_per_step_mean": 1000 * trace.seconds_per_step,
                "seconds": trace.seconds, **base,
            }
            rows.append(row)
            print(f"{layer}.{neuron}: example {best.value:+.3f}, start {first.snapped:+.3f}, best {b.snapped:+.3f} "
                  f"(step {b.step}), final {last.snapped:+.3f}, ratio {row['ratio']:.2f}, "
                  f"{row['ms_per_step']:.0f} ms/step (mean {row['ms_per_step_mean']:.0f}; fwd {base['fwd_ms']:.0f}, "
                  f"fwd+bwd {base['fwd_bwd_ms']:.0f}, relaxation {base['relax_ms']:.0f} ms) "
                  f"{row['best_text']!r}", flush=True)
        dream_seconds = time.perf_counter() - t_dreams
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows, "pass_seconds": pass_seconds}, indent=1))

    # ---------------------------------------------------------------- the table
    table = ["| neuron (layer.index) | best example | start (its window) | best snapped (step) | final snapped | "
             "best / example | best snapped text | ms / step | step / (fwd+bwd) |",
             "|---|---:|---:|---:|---:|---:|---|---:|---:|"]
    for r in rows:
        table.append(f"| {r['layer']}.{r['neuron']} | {r['example']:.3f} | {r['start']:.3f} | "
                     f"{r['best']:.3f} ({r['best_step']}) | {r['final']:.3f} | **{r['ratio']:.2f}** | "
                     f"{cell(r['best_text'])} | {r['ms_per_step']:.0f} | "
                     f"{r['ms_per_step'] / r['fwd_bwd_ms']:.1f}× |")
    n = len(rows)
    beat_example = sum(r["best"] > r["example"] for r in rows)
    beat_start = sum(r["best"] > r["start"] + 1e-6 for r in rows)
    start_below = sum(r["start"] < r["example"] for r in rows)
    lost = sum(r["final"] < r["best"] - 1e-6 for r in rows)
    at_start = sum(r["best_step"] == 0 for r in rows)
    ratios = sorted(r["ratio"] for r in rows)
    med = statistics.median(ratios) if rows else float("nan")
    start_ratio = statistics.median(r["start"] / r["example"] for r in rows) if rows else float("nan")
    soft_ratio = statistics.median(r["max_soft"] / r["best"] for r in rows if r["best"] > 0) if rows else float("nan")
    changed = statistics.median(r["best_changed"] for r in rows) if rows else float("nan")
    by_layer = ", ".join(f"layer {l}: {sum(r['best'] > r['example'] for r in rows if r['layer'] == l)} of "
                         f"{sum(r['layer'] == l for r in rows)}" for l in layers)

    def expected(r):
        """A step from its parts: fwd+bwd of the soft span, the relaxation, and the snapped text's
        forward, run once per distinct text (the dream memoizes it), spread over the steps."""
        return r["fwd_bwd_ms"] + r["relax_ms"] + r["fwd_ms"] * r["texts"] / max(1, r["steps"])

    # per layer: time against the baseline forwards
    trows = ["| layer | dream step, ms | plain forward (fwd), ms | forward + backward (fwd+bwd), ms | "
             "relaxation alone, ms | distinct snapped texts | step / (fwd+bwd) | step / (fwd+bwd + relaxation + fwd × texts / steps) |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    shares = []
    for layer in layers:
        rs = [r for r in rows if r["layer"] == layer]
        if not rs:
            continue
        step = statistics.median(r["ms_per_step"] for r in rs)
        f = statistics.median(r["fwd_ms"] for r in rs)
        fb = statistics.median(r["fwd_bwd_ms"] for r in rs)
        rx = statistics.median(r["relax_ms"] for r in rs)
        nt = statistics.median(r["texts"] for r in rs)
        parts = statistics.median(expected(r) for r in rs)
        shares.append(f"{rx / step:.0%} of a step at layer {layer}")
        trows.append(f"| {layer} | {step:.0f} | {f:.0f} | {fb:.0f} | {rx:.0f} | {nt:g} | {step / fb:.1f}× | "
                     f"{step / parts:.2f}× |")
    relax_share = ", ".join(shares)
    per_fb = statistics.median(r["ms_per_step"] / r["fwd_bwd_ms"] for r in rows) if rows else float("nan")
    per_sum = statistics.median(r["ms_per_step"] / expected(r) for r in rows) if rows else float("nan")
    mean_vs_median = statistics.median(r["ms_per_step_mean"] / r["ms_per_step"] for r in rows) if rows else float("nan")

    m = machine()
    load_end = os.getloadavg()
    s = settings
    floor_step = None
    if s.decay < 1:
        import math

        floor_step = s.warmup + math.ceil(math.log(s.temp_floor / s.temp_start) / math.log(s.decay))
    t_end = s.temperature(s.steps - 1)
    cmd = (f"python benchmarks/bench_dream.py --limit {args.limit} --max-tokens {args.max_tokens} "
           f"--layers {','.join(map(str, layers))} --per-layer {args.per_layer} --span {args.span} "
           f"--steps {args.steps} --lr {args.lr} --temp-start {args.temp_start} --warmup {args.warmup} "
           f"--decay {args.decay} --temp-floor {args.temp_floor} --seed {args.seed} --repeat {args.repeat} "
           f"--threads {args.threads} --out docs/BENCHMARKS.md")
    verdict = (f"**{beat_example} of {n}** dreams beat their neuron's best dataset example (median best / example "
               f"{med:.2f}, range {ratios[0]:.2f}-{ratios[-1]:.2f})" if rows else "no neuron qualified")
    body = f"""lensframe's text deep dream (Bäuerle and Wexler 2020; `lensframe/ops/dream.py`) on SmolLM2-135M,
for {n} MLP neurons ({args.per_layer} per layer of {', '.join(map(str, layers))}). The best dataset examples
come from {len(board.dataset)} fortunes (`builtin:fortunes`, seed {args.seed}) truncated to {args.max_tokens} tokens
({n_tokens} tokens in all), indexed by one `top_examples` view and a `dream` view sharing its node (k = {args.k});
`board.compute()` (one dataset pass, {report.batches} batches of 8) took {pass_seconds:.0f} s. Neurons: per layer,
a permutation of the {info.d_mlp} neurons seeded with ({args.seed}, layer), keeping the first {args.per_layer}
whose best example is positive and peaks at position ≥ {args.span - 1}, so that the start is a full
{args.span}-token window (neurons looked at per layer to find them: {', '.join(f'{l}: {c}' for l, c in looked.items())}). Each dream runs as `lensframe dream` runs it (the dream view's settings and
target, `dreams.resolve_start(..., "example")`, `dreams.run`): the span starts as the best example's
last {args.span} tokens up to and including its peak, and the neuron is read at the span's last position.

**Settings** (all dreams): {s.steps} steps of Adam (lr {s.lr}) on Z [{args.span}, vocab] (start token at
probability {s.init_prob}), temperature T = max({s.temp_floor}, {s.temp_start} · {s.decay}^(step − {s.warmup})):
{s.warmup} warm-up steps at T = {s.temp_start}, then decaying to {t_end:.2f} at the last step
{'' if not floor_step else f'(the floor {s.temp_floor} is reached at step {floor_step})' if floor_step <= s.steps else f'(the floor {s.temp_floor} would be reached at step {floor_step})'}.
docs/METHODS.md's defaults (decay 0.9995, about 6,200 steps to the floor) do not fit the time budget on two
cores; the faster decay makes the temperature actually anneal within {s.steps} steps. No Gumbel noise, seed {s.seed}.
"Snapped" = the neuron's activation on the argmax tokens of Z, evaluated every step (the honest figure; the
soft input's activation is not comparable with a real text's). "Start" is the snapped value at step 0, the
example's window alone (without the rest of the example before it, so it can differ from the example's value);
"best" is the highest snapped value over the run (step 0 included, so best ≥ start); "final" is the last step's.

{chr(10).join(table)}

{verdict}; by layer: {by_layer}. Best above the start window: {beat_start} of {n} (the best is the start itself, step 0, in
{at_start}); the start window alone scores a median {start_ratio:.2f}× the full example (below it in {start_below}
of {n}: the window lost the context before it). The final snapped text scores below the run's best in
{lost} of {n} (annealing or later steps lost the best tokens, which is why the trace keeps the best step).
Median positions changed between the start window and the best snapped text: {changed:g} of {args.span}.
The soft input (the relaxed one-hot the optimiser sees) reached a median {soft_ratio:.1f}× the best snapped value
(highest soft value over the run / best snapped): the gap between what the relaxation scores and what any
real text scores.

**Time per step against plain passes of the same span.** "ms / step" is the median of a dream's
per-step durations (timed by its `on_step` callback, so a burst of load from other processes is an
outlier, not a shift; the mean over the run was a median {mean_vs_median:.2f}× that). Baselines, measured
right after each dream (median of {args.repeat}, the model's lock held, the forward stopped after the target
layer as the dream's forwards are): a plain forward of the best snapped span (fwd), a plain forward +
backward of it into its input embeddings (fwd+bwd), and the relaxation alone, no model: softmax over
{info.vocab_size} tokens × {args.span} positions, soft tokens · W_E, the backward of both into Z and one
Adam update. A step is fwd+bwd of the soft span + the relaxation + a forward of the snapped span, which
the dream runs only for a snapped text it has not scored yet (it memoizes them: "distinct snapped texts"
over the {s.steps} steps), so the last column ≈ 1 means these parts account for the step. Medians per
layer; all {n} dreams took {dream_seconds:.0f} s.

{chr(10).join(trows)}

Median over all dreams: a step costs **{per_fb:.1f}× one plain forward + backward** of the span, and
{per_sum:.2f}× the sum of its parts. The relaxation does not depend on the depth: {relax_share}.

Machine: {m['cores']} cores, {m['cpu']}, torch {m['torch']} ({args.threads} threads), Python {m['python']};
load average (1/5/15 min) at the start: {' / '.join(f'{x:.2f}' for x in load_start)}, at the end: {' / '.join(f'{x:.2f}' for x in load_end)}
(above 2 means other processes competed for the cores). Date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}.
Command (from the repository root):

    {cmd}
"""
    print(body)
    if args.out:
        write_section(SECTION, body, Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
