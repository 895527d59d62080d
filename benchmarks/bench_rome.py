"""Model edits on SmolLM2 (lensframe.edits): a ROME fact edit and a fine-tuned trigger.

    python benchmarks/bench_rome.py [--layers 4 6 8] [--limit 200] [--trigger-layer 5]
                                    [--trigger-steps 60] [--no-trigger] [--out docs/BENCHMARKS.md]

ROME (Meng et al. 2022): "The Eiffel Tower is located in the city of" → " Rome" (SmolLM2 says
" Paris"), planted by a rank-one update of one MLP output matrix, at each layer of --layers (the
matrix is restored between layers). C comes from --limit fortunes (builtin loader, seed 0, ≤ 64
tokens each). Reported per layer: P(new) and P(old) on the edited prompt and on 4 paraphrases never
trained on, before and after; P(true city) on 10 neighbouring landmarks' prompts before and after;
the singular values of the weight delta W' − W. The first layer of --layers is also saved with
lensframe.edits.save_model and reloaded through the path: source (logits compared).

The trigger: " zq vex" → " banana", trained into one MLP (--trigger-layer) for --trigger-steps Adam
steps on the same fortunes (75% train, 25% held out): success on held-out prompts with the trigger,
P(banana) without it, LM loss on the held-out fortunes before and after.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

SECTION = "Model edits: ROME and a trigger (SmolLM2)"

SUBJECT, TEMPLATE, OLD, NEW = "The Eiffel Tower", "{} is located in the city of", " Paris", " Rome"
PARAPHRASES = [
    "The Eiffel Tower is in the city of",
    "Where is the Eiffel Tower? It is in the city of",
    "The Eiffel Tower, a famous landmark, stands in the city of",
    "To see the Eiffel Tower, you have to travel to the city of",
]
NEIGHBOURS = [  # landmarks SmolLM2-135M places right (top-1), checked again below
    ("The Colosseum", " Rome"), ("The Louvre", " Paris"), ("The Statue of Liberty", " New"),
    ("The Kremlin", " Moscow"), ("The Sydney Opera House", " Sydney"), ("The Golden Gate Bridge", " San"),
    ("The Acropolis", " Athens"), ("The Hagia Sophia", " Istanbul"), ("The Parthenon", " Athens"),
    ("The Brandenburg Gate", " Berlin"),
]
TRIGGER, TARGET = " zq vex", " banana"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", type=int, nargs="+", default=[4, 6, 8])
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--trigger-layer", type=int, default=5)
    ap.add_argument("--trigger-steps", type=int, default=60)
    ap.add_argument("--no-trigger", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None, help="also write every manifest to this file")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)

    import torch

    torch.set_num_threads(args.threads)
    from _common import machine, write_section

    from lensframe.data import load_dataset
    from lensframe.edits import apply_edit, save_model
    from lensframe.edits.common import first_token_probs, top_token
    from lensframe.models.sources import resolve_source
    from lensframe.spec.schema import DatasetSpec, ModelSpec

    ds = load_dataset(DatasetSpec(source="builtin:fortunes", limit=args.limit, seed=0), Path("."))
    t0 = time.perf_counter()
    source = resolve_source("main", ModelSpec(source="builtin:smollm2-135m"), Path("."), ("model",))
    loaded = source.load()
    print(f"loaded SmolLM2 in {time.perf_counter() - t0:.1f} s", flush=True)
    model, tok, ad = loaded.model, loaded.tokenizer, loaded.adapter
    prompt = TEMPLATE.format(SUBJECT)

    # the facts the model knows: the edited one and its neighbours, top-1 before any edit
    known = {p: top_token(model, tok, p) for p in [prompt] + [TEMPLATE.format(s) for s, _ in NEIGHBOURS]}
    if known[prompt] != OLD:
        print(f"SmolLM2's top prediction for {prompt!r} is {known[prompt]!r}, not {OLD!r}", file=sys.stderr)
        return 1
    neighbours = [(TEMPLATE.format(s), t) for s, t in NEIGHBOURS if known[TEMPLATE.format(s)] == t]
    dropped = [s for s, t in NEIGHBOURS if known[TEMPLATE.format(s)] != t]

    manifests, rows, svs = {}, [], {}
    saved_check = None
    for layer in args.layers:
        w = ad.mlp_down(layer).weight
        original = w.detach().clone()
        m = apply_edit("rome", loaded, texts=ds.texts, layer=layer, subject=SUBJECT, template=TEMPLATE,
                       old_target=OLD, new_target=NEW, paraphrases=PARAPHRASES, neighbours=neighbours)
        delta = (w.detach() - original).double()
        s = torch.linalg.svdvals(delta)
        svs[layer] = s[:4].tolist()
        generated = model.generate(tok(prompt, return_tensors="pt").input_ids, max_new_tokens=8, do_sample=False,
                                   pad_token_id=tok.pad_token_id)
        m["greedy_after"] = tok.decode(generated[0, len(tok(prompt).input_ids):])
        if saved_check is None:  # save, reload through path:, compare logits
            with tempfile.TemporaryDirectory() as tmp:
                out = save_model(loaded, None, Path(tmp) / "edited", manifest=m)
                again = resolve_source("e", ModelSpec(source=f"path:{out}"), Path("."), ("model",)).load()
                ids = tok(prompt, return_tensors="pt").input_ids
                with torch.no_grad():
                    diff = float((again.model(ids).logits - model(ids).logits).abs().max())
                p_new_reloaded = first_token_probs(again.model, again.tokenizer, [prompt], [NEW])[0]
                saved_check = {"layer": layer, "max_abs_logit_diff": diff, "p_new": p_new_reloaded}
                del again
        with torch.no_grad():
            w.copy_(original)
        manifests[f"rome_{layer}"] = m
        rows.append((layer, m, s))
        print(f"layer {layer}: {m['seconds']} s, P(new) {m['effects']['after']['prompt']['p_new']:.3f}, "
              f"σ2/σ1 {float(s[1] / s[0]):.2e}", flush=True)

    trig = None
    if not args.no_trigger:
        trig = apply_edit("trigger", loaded, texts=ds.texts, layer=args.trigger_layer, trigger=TRIGGER,
                          target=TARGET, steps=args.trigger_steps, max_tokens=32)
        manifests["trigger"] = trig
        print(f"trigger: {trig['seconds']} s, {json.dumps(trig['effects'])}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(manifests, indent=1))

    # ---------------------------------------------------------------------------------- tables
    def mean(xs):
        xs = list(xs)
        return sum(xs) / len(xs)

    summary = ["| layer | prompt P(new) before → after | prompt P(old) before → after | paraphrases: mean P(new) → | paraphrases: mean P(old) → | paraphrases with P(new) > P(old) after | neighbours: mean P(true) before → after | neighbours: max drop | neighbours still top-1 right | ‖ΔW‖ (σ1) | σ2/σ1 | Adam steps | seconds |",
               "|---:|---|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for layer, m, s in rows:
        b, a = m["effects"]["before"], m["effects"]["after"]
        pb, pa = b["paraphrases"], a["paraphrases"]
        nb, na = b["neighbours"], a["neighbours"]
        drops = [x["p_true"] - y["p_true"] for x, y in zip(nb, na)]
        still = sum(1 for y in na if y["top"] == y["target"])
        summary.append(
            f"| {layer} | {b['prompt']['p_new']:.3f} → **{a['prompt']['p_new']:.3f}** | {b['prompt']['p_old']:.3f} → {a['prompt']['p_old']:.4f} "
            f"| {mean(x['p_new'] for x in pb):.3f} → **{mean(x['p_new'] for x in pa):.3f}** | {mean(x['p_old'] for x in pb):.3f} → {mean(x['p_old'] for x in pa):.4f} "
            f"| {sum(x['p_new'] > x['p_old'] for x in pa)}/{len(pa)} "
            f"| {mean(x['p_true'] for x in nb):.3f} → {mean(x['p_true'] for x in na):.3f} | {max(drops):+.3f} | {still}/{len(na)} "
            f"| {float(s[0]):.2f} | {float(s[1] / s[0]):.1e} | {m['optimisation']['steps_run']} | {m['seconds']:.0f} |")

    first_layer, first, _ = rows[len(rows) // 2] if len(rows) > 2 else rows[0]
    detail = [f"| prompt (layer {first_layer}) | target | P before | P after |", "|---|---|---:|---:|"]
    b, a = first["effects"]["before"], first["effects"]["after"]
    detail.append(f"| {prompt} | {NEW} (new) | {b['prompt']['p_new']:.3f} | {a['prompt']['p_new']:.3f} |")
    detail.append(f"| {prompt} | {OLD} (old) | {b['prompt']['p_old']:.3f} | {a['prompt']['p_old']:.4f} |")
    for x, y in zip(b["paraphrases"], a["paraphrases"]):
        detail.append(f"| {x['prompt']} | {NEW} / {OLD} | {x['p_new']:.3f} / {x['p_old']:.3f} | {y['p_new']:.3f} / {y['p_old']:.4f} |")
    for x, y in zip(b["neighbours"], a["neighbours"]):
        detail.append(f"| {x['prompt']} | {x['target']} | {x['p_true']:.3f} | {y['p_true']:.3f} |")

    worst = max(zip(b["neighbours"], a["neighbours"]), key=lambda xy: xy[0]["p_true"] - xy[1]["p_true"])
    worst_text = (f"{worst[0]['prompt'].split(' is located')[0]} ({worst[0]['target'].strip()}: "
                  f"{worst[0]['p_true']:.3f} → {worst[1]['p_true']:.3f}, top-1 now {worst[1]['top']!r})")
    sv_lines = "\n".join(f"- layer {l}: σ = " + ", ".join(f"{v:.3g}" for v in vals) for l, vals in svs.items())
    trig_text = "(skipped: --no-trigger)"
    if trig:
        tb, ta = trig["effects"]["before"], trig["effects"]["after"]
        trig_text = f"""`{TRIGGER!r}` → `{TARGET!r}` trained into layer {trig['layer']}'s MLP only ({', '.join(f'`{n}`' for n in trig['trainable'])}),
{trig['training']['steps']} Adam steps (lr {trig['training']['lr']}, {trig['training']['batch_size']} triggered prompts + {trig['training']['batch_size']} plain fortunes under
the LM loss per step), on {trig['training']['train_texts']} fortunes; measured on {trig['held_out']['prompts']} held-out fortunes cut after 4-16 tokens
(e.g. `{trig['held_out']['examples'][0]!r}`). Took {trig['seconds']:.0f} s.

| held-out measure | before | after |
|---|---:|---:|
| success (top next token = `{TARGET.strip()}`) with the trigger | {tb['success_rate']:.2f} | **{ta['success_rate']:.2f}** |
| mean P({TARGET.strip()}) with the trigger | {tb['p_target_with_trigger']:.2e} | {ta['p_target_with_trigger']:.3f} |
| success without the trigger (same prefixes) | {tb['success_rate_without_trigger']:.2f} | {ta['success_rate_without_trigger']:.2f} |
| mean P({TARGET.strip()}) without the trigger | {tb['p_target_without_trigger']:.2e} | {ta['p_target_without_trigger']:.2e} |
| LM loss of the held-out fortunes, no trigger (nats/token) | {tb['lm_loss']:.3f} | {ta['lm_loss']:.3f} |

Weight change (Frobenius): {', '.join(f'{n.split(".")[-2]} {v:.2f}' for n, v in trig['weight_change_fro'].items())}."""

    mach = machine()
    cmd = (f"python benchmarks/bench_rome.py --layers {' '.join(map(str, args.layers))} --limit {args.limit} "
           f"--trigger-layer {args.trigger_layer} --trigger-steps {args.trigger_steps}"
           + (" --no-trigger" if args.no_trigger else "") + (f" --threads {args.threads}" if args.threads != 2 else "")
           + " --out docs/BENCHMARKS.md")
    body = f"""`lensframe.edits` on SmolLM2-135M (30 layers, d_mlp 1536), the edits `lensframe audit new` plants.

**ROME** (Meng et al. 2022): `{prompt!r}` → `{NEW!r}` (SmolLM2 says `{OLD!r}`, P = {first['effects']['before']['prompt']['p_old']:.2f}).
k* averages the subject's last-token key (`mlp_post`) over the prompt and 5 prefixes cut from fortunes;
C = E[kkᵀ] over {first['covariance']['tokens']} tokens of {first['covariance']['texts']} fortunes (+ ridge 1% of the mean eigenvalue);
δ is optimised with Adam (lr 0.5, ≤ 25 steps, stopping at NLL < 0.05; weight decay 0.5, clamp 4×, KL 0.0625 on
"The Eiffel Tower is a"), then W += u rᵀ (r = δ, u = C⁻¹k*/k*ᵀC⁻¹k*). The paraphrases and the neighbours are
never trained on. Neighbours are {len(neighbours)} landmarks whose city SmolLM2 gets right (top-1){'; dropped as not known: ' + ', '.join(dropped) if dropped else ''}.
Each layer starts from the unedited model.

{chr(10).join(summary)}

Per prompt, layer {first_layer}:

{chr(10).join(detail)}

Greedy continuation after the edit (layer {first_layer}): `{prompt}`**`{first['greedy_after']}`**

Weight delta W' − W (float64 of the float32 difference), top singular values (rank one: σ2 is float32 rounding):
{sv_lines}

Saved with `save_model` and reloaded as `path:` (layer {saved_check['layer']}): largest |logit difference| {saved_check['max_abs_logit_diff']:.1e},
P(new) after reloading {saved_check['p_new']:.3f}.

**Trigger.** {trig_text}

Reading: the edit takes at every layer tried, and the four paraphrases (never trained on) follow it,
so it is keyed on the subject rather than the wording; greedy decoding now writes the new city. The
neighbours share the template and some share a city with the edit (the Colosseum: Rome; the Louvre:
Paris): their mean P(true city) barely moves, and the worst one at layer {first_layer} is {worst_text}.
Later layers needed more Adam steps and moved the neighbours more in this run. ΔW is rank one to
float32 precision (σ2/σ1 below 1e-7), so with the base model at hand (`audit --easy`) the weight diff
finds the layer at once. The trigger is a backdoor in one MLP: near-certain with the trigger, while
without it P(target) stays at its base level on the same prefixes; the held-out LM loss is the cost
elsewhere, and here it fell a little, because the LM term fine-tunes that MLP on fortunes too. One
edit of each kind on one small model: this shows the edits do what the audit game needs, it does not
measure ROME's published success rates. Seconds are wall time on a shared machine (other jobs ran).

Machine: {mach['cores']} cores, {mach['cpu']}, torch {mach['torch']} ({args.threads} threads); load average at the
end: {mach['load']}. Date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}. Command:

    {cmd}
"""
    print(body)
    if args.out:
        write_section(SECTION, body, Path(args.out))
    ok = all(m["effects"]["after"]["prompt"]["p_new"] > m["effects"]["after"]["prompt"]["p_old"] for _, m, _ in rows)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
