"""Scale: the dataset pass at 1×, 10× and 100× the demo's 100 texts (up to 10,000 texts × 64
tokens) on a tiny GPT-2-shaped model (3 layers, d 32: the model's own cost stays small, so what grows
is lensframe's), each size in a fresh process with a fresh store, with the demo's kind of views:
text, logit_lens (top 5), attention and top_examples of every layer.

Per size: seconds per 1,000 tokens (÷ the smallest size: flat means it scales linearly), the
pass's peak memory over the loaded footprint against `plan`'s estimate of the pass, the store's bytes
per token and per view's results against each op's estimate, and focus latency on that store (a
fresh board, so clicks read the store or run one forward; p50/p95 over 20 samples).

    python benchmarks/bench_scale.py [--sizes 100 1000 10000] [--max-tokens 64] [--checkpoint-batches 20]
                                     [--smollm2-sizes 200 2000] [--smollm2-tokens 32] [--out docs/BENCHMARKS.md]

The largest tiny size runs once more with a checkpoint every --checkpoint-batches batches (the
cost of resumable passes), and SmolLM2-135M runs the same views at --smollm2-sizes texts.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))
MB = 2**20
VIEWS = """  text: {type: text}
  lens: {type: logit_lens, top_k: 5}
  attn: {type: attention}
  top: {type: top_examples, layers: all, k: 10}
"""


def status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def texts(n: int, seed: int = 0) -> list[str]:
    """n texts of at least ~64 tokens: fortunes joined until long enough (the real distribution of
    words, repeated in new orders), or numbered sentences without the fortunes package."""
    from lensframe.data import FORTUNES_DIR, _clean_fortune, _split_percent

    pool = []
    if FORTUNES_DIR.is_dir():
        for f in sorted(FORTUNES_DIR.iterdir()):
            if f.is_file() and "." not in f.name:
                pool += [t for t in map(_clean_fortune, _split_percent(f.read_bytes().decode("utf-8", "replace"))) if t]
    pool = pool or [f"Sentence {i} about cats, law, food and science, said plainly." for i in range(500)]
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        parts = []
        while sum(map(len, parts)) < 400:
            parts.append(rng.choice(pool))
        out.append(" ".join(parts)[:1900])
    return out


def child(n: int, max_tokens: int, model: str, work: Path, checkpoint_every) -> dict:

    from lensframe.board import Board
    from lensframe.estimate import estimate_plan

    data = work / "data.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts(n)))
    spec = (f"lensframe: 1\nmodel: {model}\ndataset: {{source: 'jsonl:{data}', limit: {n}, "
            f"max_tokens: {max_tokens}}}\nrun: {{batch_size: 32, checkpoint_every: {json.dumps(checkpoint_every)}}}\n"
            f"views:\n{VIEWS}")
    store = work / "store"
    board = Board.from_text(spec, base_dir=work, cache_dir=store)
    estimates = {p.node.label(): p.est_bytes for p in board.plan.nodes.values() if p.node.kind == "dataset"}
    pass_estimate = [e for e in estimate_plan(board) if e.kind == "dataset"]
    loaded = board.executor.model("main")
    board.executor.tokens("main")
    for t in loaded.model.state_dict().values():
        t.sum()
    base = status_kb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")
    t0 = time.perf_counter()
    report = board.compute(progress=False)
    seconds = time.perf_counter() - t0
    peak = status_kb("VmHWM")
    tokens = int(board.executor.tokens("main")["lengths"].sum())
    stored = {}
    for p in board.plan.nodes.values():
        if p.node.kind in ("prepare", "dataset"):
            files = list(store.glob(f"{p.key[:2]}/{p.key}.*"))
            stored[p.node.label()] = sum(f.stat().st_size for f in files)
    fresh = Board.from_text(spec, base_dir=work, cache_dir=store)
    fresh.executor.model("main")
    rng = random.Random(1)
    latencies = []
    for s in rng.sample(range(len(fresh.dataset)), min(20, len(fresh.dataset))):
        t1 = time.perf_counter()
        fresh.executor.focus("main", s)
        latencies.append(1000 * (time.perf_counter() - t1))
    return {"samples": len(board.dataset), "tokens": tokens, "seconds": seconds, "forwards": report.forward_passes,
            "checkpoints": report.checkpoints, "checkpoint_every": checkpoint_every,
            # the estimate less the runtime and the weights, which the measured base already holds
            "pass_peak_mb": (peak - base) / 1024,
            "pass_estimate_mb": max(sum(v for k, v in e.parts.items() if k not in ("runtime", "weights"))
                                    for e in pass_estimate) / MB,
            "stored": stored, "estimates": estimates,
            "focus_p50_ms": statistics.median(latencies), "focus_p95_ms": sorted(latencies)[int(0.95 * len(latencies)) - 1]}


def run_child(n: int, max_tokens: int, model: str, checkpoint_every) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", str(n), "--max-tokens", str(max_tokens),
                          "--model", model, "--checkpoint-every", json.dumps(checkpoint_every)], capture_output=True,
                         text=True, env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")})
    if out.returncode:
        raise SystemExit(out.stderr[-3000:])
    row = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"{model}, {n} texts, checkpoint_every {checkpoint_every}: {row['seconds']:.1f} s, "
          f"{row['checkpoints']} checkpoint(s)", flush=True)
    return row


def table(rows: list[dict], label=lambda r: f"{r['samples']:,}") -> list[str]:
    base = rows[0]["seconds"] / rows[0]["tokens"]
    lines = ["| texts | tokens | s | ms per 1k tokens (÷ smallest) | pass peak MB over the loaded model (plan's estimate) "
             "| checkpoints written | store bytes per token | focus p50 / p95 ms |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        per = r["seconds"] / r["tokens"]
        store = sum(r["stored"].values())
        lines.append(f"| {label(r)} | {r['tokens']:,} | {r['seconds']:.1f} | {1e6 * per:.1f} ({per / base:.2f}×) | "
                     f"{r['pass_peak_mb']:.0f} ({r['pass_estimate_mb']:.0f}) | {r['checkpoints']} | {store / r['tokens']:.0f} | "
                     f"{r['focus_p50_ms']:.1f} / {r['focus_p95_ms']:.1f} |")
    return lines


def peak_sentence(rows: list[dict]) -> str:
    big, base = rows[-1], rows[0]["seconds"] / rows[0]["tokens"]
    worst = max(rows, key=lambda r: r["pass_peak_mb"] / max(r["pass_estimate_mb"], 1e-9))
    ratio = worst["pass_peak_mb"] / max(worst["pass_estimate_mb"], 1e-9)
    return (f"Time per token at {big['samples']:,} texts is {big['seconds'] / big['tokens'] / base:.2f}× the "
            f"smallest size's (below 1: the fixed costs spread over more tokens). The pass's measured peak is at "
            f"most {ratio:.2f}× `plan`'s estimate ({worst['samples']:,} texts)"
            + (": the estimate is low, and --max-memory checks against it." if ratio > 1.15 else "."))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--checkpoint-batches", type=int, default=20,
                    help="the largest tiny size once more, checkpointing every this many batches (0: skip)")
    ap.add_argument("--smollm2-sizes", type=int, nargs="*", default=[200, 2000],
                    help="the same on SmolLM2-135M (none: skip)")
    ap.add_argument("--smollm2-tokens", type=int, default=32)
    ap.add_argument("--out", default=None)
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--model", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--checkpoint-every", default='"60s"', help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child is not None:
        with tempfile.TemporaryDirectory(prefix="lf-scale-") as tmp:
            print(json.dumps(child(args.child, args.max_tokens, args.model, Path(tmp), json.loads(args.checkpoint_every))))
        return 0
    from _common import machine, write_section

    from tests.conftest import make_tiny

    model_dir = Path(tempfile.mkdtemp(prefix="lf-scale-model-")) / "gpt2"
    make_tiny("gpt2", model_dir)
    tiny = f"path:{model_dir}"
    rows = [run_child(n, args.max_tokens, tiny, "60s") for n in args.sizes]
    ckpt = run_child(args.sizes[-1], args.max_tokens, tiny, args.checkpoint_batches) if args.checkpoint_batches else None
    smol = [run_child(n, args.smollm2_tokens, "builtin:smollm2-135m", "60s") for n in args.smollm2_sizes]
    m = machine()
    cmd = (f"python benchmarks/bench_scale.py --sizes {' '.join(map(str, args.sizes))} --max-tokens {args.max_tokens} "
           f"--checkpoint-batches {args.checkpoint_batches} --smollm2-sizes {' '.join(map(str, args.smollm2_sizes))} "
           f"--smollm2-tokens {args.smollm2_tokens}")
    lines = [f"`{cmd}`, {date.today()}, {m['cores']} cores ({m['cpu']}), load {m['load']}. Views text, logit_lens "
             "(top 5), attention, top_examples (every layer, k 10); texts of joined fortunes cut to the token limit; "
             "batch 32; each row a fresh process and store, with the default `run.checkpoint_every: 60s`. Ratios are "
             "against the smallest size of the same model in the same run.", "",
             f"A tiny GPT-2-shaped model (3 layers, d 32, 300 tokens), {args.max_tokens} tokens per text:", ""]
    lines += table(rows + ([ckpt] if ckpt else []), label=lambda r: f"{r['samples']:,}" + (
        f" (checkpoint every {r['checkpoint_every']} batches)" if isinstance(r["checkpoint_every"], int) else ""))
    lines += ["", peak_sentence(rows)]
    if ckpt:
        lines += ["", f"Checkpoints every {args.checkpoint_batches} batches at {ckpt['samples']:,} texts "
                  f"({ckpt['checkpoints']} written): {ckpt['seconds'] / rows[-1]['seconds']:.2f}× the time and "
                  f"{ckpt['pass_peak_mb'] / max(rows[-1]['pass_peak_mb'], 1e-9):.2f}× the pass peak of the same pass "
                  "without (a checkpoint writes the states from their own memory, no copy)."]
    big = rows[-1]
    lines += ["", f"Stored results at {big['samples']:,} texts, per computation, against the op's estimate (`plan`):", "",
              "| result | stored MB | estimate MB |", "|---|---|---|"]
    for label, size in sorted(big["stored"].items(), key=lambda kv: -kv[1]):
        est = big["estimates"].get(label)
        lines.append(f"| `{label}` | {size / MB:.2f} | {'' if est is None else f'{est / MB:.2f}'} |")
    if smol:
        lines += ["", f"SmolLM2-135M (30 layers, d 576, 49,152 tokens), {args.smollm2_tokens} tokens per text:", ""]
        lines += table(smol)
        lines += ["", peak_sentence(smol)]
    print("\n".join(lines))
    if args.out:
        write_section("Scale: 1×, 10× and 100× the demo's texts", "\n".join(lines), Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
