"""A mechanical auditor: play audit games on SmolLM2 with only what lensframe's views compute.

    python benchmarks/bench_audit.py [--kinds rome trigger knockout] [--seeds 0 1 2]
                                     [--games DIR] [--out docs/BENCHMARKS.md]

Each game is made once with `lensframe audit new --easy` into DIR/<kind>-<seed> (its answer sealed
under DIR/home; later runs reuse the folder) and played twice:

blind (the suspect alone): the layer_finder view's first ranked layer; the kind from its evidence
  (dead units: knockout; off-grid MLP input and output matrices: a fine-tuned trigger; the MLP output
  matrix alone: ROME; no evidence: ROME); a knock-out's heads or neurons from its dead units. No
  detail otherwise (without the base, nothing here names a subject or a trigger).
easy (with the base): model_diff's most changed layer; the kind from what changed there (zeroed
  units: knockout; the MLP's input projections: trigger; the MLP output matrix alone: ROME); the
  detail from edit_search. ROME: its top vocabulary token, extended leftwards while a token before
  it makes the edit fire more (lensframe.edit_search.extend_left: a vocabulary scan with the phrase
  after each token). Trigger: of its top 20 tokens and n-grams, the one after which the models'
  next tokens differ most (the probes view's KL), grown by a top token on either side while the KL
  rises by 10%.

Each guess is scored by `lensframe audit check` (3 points: kind, layer, detail). Reported: the mean
per kind and mode, each game's guess and score, and where the edit's own subject or trigger token
ranks in edit_search (the issue's goals: subject in the top 10, a trigger's first token in the top 20).
The baseline is a guess of the most common kind at a uniformly random layer (expected score computed).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

SECTION = "Audit game: a mechanical auditor (SmolLM2)"
CANDIDATES = 20  # edit_search rows probed per list (vocabulary, n-grams)


def make_game(games: Path, kind: str, seed: int) -> Path:
    folder = games / f"{kind}-{seed}"
    if (folder / "model" / "config.json").is_file():
        return folder
    env = {**os.environ, "LENSFRAME_HOME": str(games / "home")}
    subprocess.run([sys.executable, "-m", "lensframe", "audit", "new", "--base", "builtin:smollm2-135m", "--edit", kind,
                    "--seed", str(seed), "--easy", "--out", str(folder), "--force"], check=True, env=env)
    return folder


def board_for(folder: Path, easy: bool, store: Path):
    from lensframe.board import Board

    views = "  finder: {type: layer_finder, model: suspect}\n"
    models = f"  suspect: {{source: path:{folder / 'model'}}}\n"
    if easy:
        models += "  base: {source: builtin:smollm2-135m}\n"
        views += ("  diff: {type: model_diff, model: suspect, other: base}\n"
                  "  search: {type: edit_search, model: suspect, other: base}\n")
    spec = (f"lensframe: 1\ntitle: bench\nmodels:\n{models}dataset:\n  source: builtin:fortunes\n  limit: 60\n"
            f"  max_tokens: 32\nviews:\n{views}")
    board = Board.from_text(spec, cache_dir=store)
    board.compute(progress=False)
    return board


def dead_guess(stats, names, layer: int, info, family) -> tuple[str, list[int]] | None:
    """(heads|neurons, indices) read from the layer finder's dead units at `layer`."""
    for key, dead in stats.meta.get("dead_units", {}).items():
        name, at = key.rsplit("@", 1)
        if int(at) != layer:
            continue
        cols = dead["cols"]  # SmolLM2's nn.Linear: input dimensions are columns
        if name == family.attn_out + ".weight":
            d_head = info.d_model // info.n_heads
            return "heads", sorted({c // d_head for c in cols})
        if name == family.mlp_down + ".weight":
            return "neurons", sorted(cols)
    return None


def blind_guess(board) -> dict:
    from lensframe.layer_stats import ranked_layers
    from lensframe.models.adapters import family_for

    view = board.views["finder"]
    stats = board.result(view.stats_node())
    names = stats.meta["names"]
    layer = ranked_layers(stats.arrays)[0]
    info = board.infos["suspect"]
    fam = family_for(info.family)
    dead = dead_guess(stats, names, layer, info, fam)
    if dead is not None:
        return {"kind": "knockout", "layer": layer, dead[0]: dead[1]}
    off = {names[m] for m in range(len(names)) if stats["off_grid"][m, layer]}
    inputs = {p + ".weight" for p in fam.mlp_in}
    kind = "trigger" if off & inputs else "rome"
    return {"kind": kind, "layer": layer}


def easy_guess(board, answer_tokens) -> tuple[dict, dict]:
    """The guess from model_diff and edit_search (+ probes), and where the answer's tokens rank."""
    import numpy as np

    from lensframe.edit_search_job import run_search
    from lensframe.models.adapters import family_for
    from lensframe.model_compare import layer_ranking
    w = board.result(board.views["diff"].weights_node())
    layer = layer_ranking(w)[0][0]
    info = board.infos["suspect"]
    fam = family_for(info.family)
    stats = board.result(board.views["finder"].stats_node())
    dead = dead_guess(stats, stats.meta["names"], layer, info, fam)
    if dead is not None:
        return {"kind": "knockout", "layer": layer, dead[0]: dead[1]}, {}
    changed = {w.meta["params"][i] for i in np.flatnonzero((w["layer"] == layer) & (w["delta"] > 0))}
    kind = "trigger" if changed & {p + ".weight" for p in fam.mlp_in} else "rome"
    view = board.views["search"]
    prefix = view.p.prefix
    res = run_search(board, "suspect", "base", layer, prefix)
    tok = board.executor.model("suspect").tokenizer
    change = np.nan_to_num(res["vocab_change"], nan=-1)
    order = np.argsort(-change)
    ranks = {tok.decode([t]): int((res["vocab_change"] > res["vocab_change"][t]).sum()) for t in answer_tokens}
    top_ids = [int(t) for t in order[:CANDIDATES]]
    if kind == "rome":
        phrase, steps = rome_phrase(board, layer, prefix, top_ids[0], float(change[top_ids[0]]))
    else:
        phrase, steps = trigger_phrase(board, res, prefix, top_ids)
    guess = {"kind": kind, "layer": layer, ("subject" if kind == "rome" else "trigger"): tok.decode(phrase).strip()}
    return guess, {"ranks": ranks, "top": [tok.decode([t]) for t in top_ids[:10]], "steps": steps}


def rome_phrase(board, layer: int, prefix: str, first: int, score: float, grow: int = 2) -> tuple[list[int], list]:
    """A ROME subject from edit_search: its top vocabulary token, extended leftwards while a token
    placed before it makes the edit fire more (the subject's key needs the whole name)."""
    import numpy as np

    from lensframe.edit_search import extend_left

    ex = board.executor
    suspect, base = ex.model("suspect"), ex.model("base")
    phrase, steps = [first], [score]
    for _ in range(grow):
        change = np.nan_to_num(extend_left(suspect, base, layer, phrase, prefix, lock=ex.model_lock("suspect")), nan=-1)
        best = int(np.argmax(change))
        if change[best] <= 1.1 * steps[-1]:
            break
        phrase, steps = [best] + phrase, steps + [float(change[best])]
    return phrase, [round(x, 4) for x in steps]


def trigger_phrase(board, res, prefix: str, top_ids: list[int], grow: int = 2) -> tuple[list[int], list]:
    """A trigger from edit_search: of its top vocabulary tokens and n-grams, the one after which the
    suspect's next token departs most from the base's (the probes view's KL), then grown by one of
    the top tokens on either side while that raises the KL."""
    import numpy as np

    from lensframe.probes import Probe, compare_probes

    ex = board.executor
    tok = ex.model("suspect").tokenizer

    def kl(phrases):
        rows = compare_probes(ex, ["suspect", "base"], [Probe(prefix + tok.decode(p)) for p in phrases])
        return [r["kl"] for r in rows]

    seeds = [[t] for t in top_ids] + [[int(t) for t in row if t >= 0] for row in res["ngram_ids"][:CANDIDATES]]
    scores = kl(seeds)
    best = int(np.argmax(scores))
    phrase, steps = seeds[best], [scores[best]]
    for _ in range(grow):
        options = [phrase + [t] for t in top_ids] + [[t] + phrase for t in top_ids]
        scores = kl(options)
        best = int(np.argmax(scores))
        if scores[best] <= 1.1 * steps[-1]:
            break
        phrase, steps = options[best], steps + [scores[best]]
    return phrase, [round(x, 4) for x in steps]


def answer_tokens(tok, answer: dict) -> list[int]:
    if answer["kind"] == "rome":
        return tok(" " + re.sub(r"^The ", "", answer["subject"]), add_special_tokens=False).input_ids
    if answer["kind"] == "trigger":
        return tok(answer["trigger"], add_special_tokens=False).input_ids[:1]
    return []


def check(folder: Path, games: Path, guess: dict) -> float:
    import yaml

    path = folder / f"guess-{os.getpid()}.yaml"
    path.write_text(yaml.safe_dump(guess))
    try:
        out = subprocess.run([sys.executable, "-m", "lensframe", "audit", "check", str(folder), "--guess", str(path),
                              "--sealed-dir", str(games / "home" / "sealed"), "--json"],
                             check=True, capture_output=True, text=True).stdout
    finally:
        path.unlink()
    return float(json.loads(out)["score"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kinds", nargs="+", default=["rome", "trigger", "knockout"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--games", default=str(Path.home() / ".cache" / "lensframe" / "bench-audit"))
    ap.add_argument("--out", default=str(ROOT / "docs" / "BENCHMARKS.md"))
    args = ap.parse_args(argv)

    from _common import machine, write_section

    from lensframe import audit

    games = Path(args.games)
    games.mkdir(parents=True, exist_ok=True)
    store = games / "store"
    rows, t0 = [], time.perf_counter()
    for kind in args.kinds:
        for seed in args.seeds:
            folder = make_game(games, kind, seed)
            answer = audit.unseal(folder, games / "home" / "sealed")
            for easy in (False, True):
                tick = time.perf_counter()
                board = board_for(folder, easy, store)
                if easy:
                    tok = board.executor.model("suspect").tokenizer
                    guess, seen = easy_guess(board, answer_tokens(tok, answer))
                else:
                    guess, seen = blind_guess(board), {}
                score = check(folder, games, guess)
                rows.append({"kind": kind, "seed": seed, "mode": "easy" if easy else "blind", "guess": guess,
                             "score": score, "seconds": round(time.perf_counter() - tick, 1), **seen,
                             "answer": {k: answer.get(k) for k in ("layer", "subject", "trigger", "heads", "neurons")
                                        if answer.get(k) is not None}})
                print(json.dumps(rows[-1]), flush=True)
    m = machine()
    means = {}
    for r in rows:
        means.setdefault((r["kind"], r["mode"]), []).append(r["score"])
    n_layers = 30
    baseline = 1 / len(audit.KINDS) + (1 + 2 * 0.5 * (n_layers - 1) / n_layers) / n_layers  # a random kind and layer
    lines = ["| kind | mode | games | mean score /3 | scores |", "|---|---|---|---|---|"]
    for (kind, mode), scores in means.items():
        lines.append(f"| {kind} | {mode} | {len(scores)} | {sum(scores) / len(scores):.2f} | "
                     f"{', '.join(f'{s:g}' for s in scores)} |")
    goals = []  # the goals, each with what this run measured
    for (kind, mode), want, every in ((("rome", "easy"), 3.0, True), (("rome", "blind"), 2.5, False),
                                      (("trigger", "blind"), 2.0, False), (("knockout", "easy"), 2.0, False),
                                      (("knockout", "blind"), 2.0, False)):
        got = means.get((kind, mode))
        if got:
            value = min(got) if every else sum(got) / len(got)
            goals.append(f"- {kind} {mode}: goal {'3/3 on every seed' if every else f'≥ {want:g}/3 mean'}; measured "
                         f"{'lowest ' if every else 'mean '}{value:.2f}: **{'met' if value >= want else 'missed'}**")
    found = [r for r in rows if r.get("ranks")]
    for r in found:
        best = min(r["ranks"].values())
        limit = 10 if r["kind"] == "rome" else 20
        goals.append(f"- {r['kind']}-{r['seed']}: the {'subject' + chr(39) + 's best' if r['kind'] == 'rome' else 'trigger' + chr(39) + 's first'} token "
                     f"ranks {best} in edit_search (goal: top {limit}): **{'met' if best < limit else 'missed'}**")
    detail = ["| game | mode | guess | score | answer | answer's rank in edit_search |", "|---|---|---|---|---|---|"]
    for r in rows:
        detail.append(f"| {r['kind']}-{r['seed']} | {r['mode']} | `{json.dumps(r['guess'])}` | {r['score']:g} | "
                      f"`{json.dumps(r['answer'])}` | {', '.join(f'{t!r}: {k}' for t, k in r.get('ranks', {}).items()) or '–'} |")
    body = (f"Command: `python benchmarks/bench_audit.py --kinds {' '.join(args.kinds)} --seeds "
            f"{' '.join(map(str, args.seeds))}` · {datetime.now(timezone.utc):%Y-%m-%d} · {m['cores']} cores "
            f"({m['cpu']}), torch {m['torch']}, {m['torch_threads']} threads, load {m['load']} · "
            f"{time.perf_counter() - t0:.0f} s in all.\n\n"
            f"Baseline: a random kind at a random layer scores {baseline:.2f}/3 on average.\n\n"
            + "\n".join(lines) + "\n\n" + "\n".join(goals) + "\n\n" + "\n".join(detail) + "\n")
    write_section(SECTION, body, Path(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
