"""Tuned lens vs logit lens on SmolLM2: held-out KL to the final layer, per layer.

    python benchmarks/bench_tuned_lens.py [--limit 100] [--max-tokens 48] [--train-tokens 2048]
                                          [--steps 150] [--out docs/BENCHMARKS.md]

Trains lensframe's tuned lens (lensframe.ops.tuned_lens) on fortunes through a spec, exactly as a
user's `lens: tuned` view does, and reports for every layer the mean KL(p_final || p_l) on held-out
test tokens (15% of the sampled tokens, never used for training or for choosing checkpoints) for
the logit lens (the baseline, same tokens) and the tuned lens, and the time per training step.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

SECTION = "Tuned lens vs logit lens (SmolLM2, fortunes)"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--train-tokens", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)

    from _common import machine, write_section

    from lensframe.board import Board

    spec = f"""lensframe: 1
model: builtin:smollm2-135m
dataset: {{source: builtin:fortunes, label: topic, limit: {args.limit}, max_tokens: {args.max_tokens}, seed: 7}}
views:
  tuned: {{type: logit_lens, lens: tuned, tuned: {{train_tokens: {args.train_tokens}, steps: {args.steps}, lr: {args.lr}, batch_tokens: 32}}}}
"""
    with tempfile.TemporaryDirectory() as tmp:
        board = Board.from_text(spec, base_dir=Path(tmp), cache_dir=Path(tmp) / "store")
        node = board.views["tuned"].tuned_node(args.max_tokens)
        board.executor.model("main")
        t0 = time.perf_counter()
        board.compute(progress=True)
        seconds = time.perf_counter() - t0
        t = board.result(node)
    logit, tuned = t["test_kl_logit"], t["test_kl_tuned"]
    rows = ["| layer | logit lens KL (nats) | tuned lens KL (nats) | tuned / logit |", "|---:|---:|---:|---:|"]
    labels = ["embed"] + [str(l) for l in range(len(logit) - 1)]
    for name, a, b in zip(labels, logit, tuned):
        rows.append(f"| {name} | {a:.3f} | {b:.3f} | {b / a:.2f} |" if a > 0 else f"| {name} | {a:.3f} | {b:.3f} | - |")
    worse = [labels[i] for i in range(len(logit)) if tuned[i] > logit[i] + 1e-6]
    m = machine()
    body = f"""The tuned lens (Belrose et al. 2023) as lensframe trains it for a `lens: tuned` view: affine
translators per layer, zero-initialised, trained with Adam on {t.meta['tokens']['train']} token positions of
{t.meta['texts']['train']} of {args.limit} fortunes (≤ {args.max_tokens} tokens each), {args.steps} steps of 32
tokens, all layers together, each layer keeping its best checkpoint on {t.meta['texts']['val']} validation texts
(identity if training never beat it). KL(p_final || p_l) is measured on {t.meta['texts']['test']} **test texts**
({t.meta['tokens']['test']} tokens) that gave no token to training or to choosing checkpoints (the split is by
text); the logit lens on the same tokens is the baseline. The final layer is the model's output and is not translated (KL 0 for both).

Tuned lens at or below the logit lens at every layer: **{'yes' if not worse else 'no: ' + ', '.join(worse)}**.
Mean over layers: logit {logit.mean():.3f}, tuned {tuned.mean():.3f} nats ({tuned.mean() / logit.mean():.2f}×).
The whole compute (two dataset passes, the sampling and the training) took {seconds:.0f} s
({seconds / args.steps:.2f} s per training step on average, passes included).

{chr(10).join(rows)}

Machine: {m['cores']} cores, {m['cpu']}, torch {m['torch']} ({args.threads} threads); load average at the
end: {m['load']}. Date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}. Command:

    python benchmarks/bench_tuned_lens.py --limit {args.limit} --max-tokens {args.max_tokens} --train-tokens {args.train_tokens} --steps {args.steps} --out docs/BENCHMARKS.md
"""
    print(body)
    if args.out:
        write_section(SECTION, body, Path(args.out))
    return 0 if not worse else 1


if __name__ == "__main__":
    sys.exit(main())
