"""`lensframe audit new` and `lensframe audit check`: the audit game from the command line."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from .errors import LensframeError


def add_parsers(sub) -> None:
    a = sub.add_parser("audit", help="the audit game: plant a secret edit in a model, or score a guess")
    game = a.add_subparsers(dest="audit_command", required=True)
    new = game.add_parser("new", help="edit a model in secret and write an auditor's folder")
    new.add_argument("--base", required=True, help="the model to edit (builtin:smollm2-135m, hf:<id>, path:<dir>)")
    new.add_argument("--edit", required=True, choices=["rome", "trigger", "knockout"], help="the kind of edit")
    new.add_argument("--seed", type=int, default=0, help="draws the secret (which fact, trigger, layer, heads)")
    new.add_argument("--out", required=True, help="the auditor's folder (model/, audit.yaml, answer.sha256)")
    new.add_argument("--easy", action="store_true", help="include the base model and a model_diff view in the spec")
    new.add_argument("--texts", type=int, default=200, help="fortunes used by the edit (ROME's key statistics, the trigger's training)")
    new.add_argument("--device", default="cpu")
    new.add_argument("--sealed-dir", help="where the answer is sealed (default: LENSFRAME_HOME/sealed)")
    new.add_argument("--force", action="store_true", help="overwrite a non-empty --out")
    new.set_defaults(fn=cmd_new)
    check = game.add_parser("check", help="score a guess (YAML: kind, layer, and subject / trigger / heads / neurons)")
    check.add_argument("dir", help="the auditor's folder")
    check.add_argument("--guess", required=True, help="the guess file")
    check.add_argument("--sealed-dir", help="where the answer was sealed (default: LENSFRAME_HOME/sealed)")
    check.add_argument("--json", action="store_true")
    check.set_defaults(fn=cmd_check)


def cmd_new(args) -> int:
    from tqdm.auto import tqdm

    from . import audit
    from .data import load_dataset
    from .edits import apply_edit, base_terms, save_model
    from .edits.blind import leaks
    from .models.sources import resolve_source
    from .spec.schema import DatasetSpec, ModelSpec

    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.force:
        raise LensframeError(f"--out {out}: the folder is not empty (pass --force to overwrite it)")
    try:
        source = resolve_source("base", ModelSpec(source=args.base), Path.cwd(), ("--base",))
    except ValueError as err:
        raise LensframeError(f"--base: {err}") from None
    steps = tqdm(total=4, bar_format="audit new ({n}/{total}): {desc}")
    steps.set_description_str("loading the base model")
    loaded = source.load(args.device)
    info = loaded.info
    secret = audit.choose_secret(args.edit, args.seed, info.n_layers, info.n_heads, info.d_mlp)
    texts = load_dataset(DatasetSpec(source="builtin:fortunes", limit=args.texts, seed=args.seed), Path.cwd()).texts
    steps.update(1)
    steps.set_description_str(f"applying a secret {args.edit} edit")
    params = {**{k: v for k, v in secret.items() if k != "kind"}, **audit.EDIT_SETTINGS.get(args.edit, {})}
    manifest = apply_edit(args.edit, loaded, texts=texts, **params)
    steps.update(1)
    steps.set_description_str("saving the edited model")
    out.mkdir(parents=True, exist_ok=True)
    names = base_names(args.base, source)
    # the model folder names nothing of the base in either mode: --easy names it in audit.yaml only
    save_model(loaded, loaded.tokenizer, out / "model", blind=True, names=names)
    if not args.easy:
        left = leaks(out / "model", base_terms(loaded, loaded.tokenizer, names))
        if left:  # in a special token or an architecture value, which stay: say so rather than call it blind
            print("audit new: the model folder still names the base: "
                  + ", ".join(f"{term!r} in {file}" for file, term in left), file=sys.stderr)
    base = args.base  # audit.yaml lives in --out: a relative path: must not become relative to it
    if base.startswith("path:"):
        base = "path:" + str((Path.cwd() / base[5:]).resolve())
    (out / "audit.yaml").write_text(audit.audit_spec(base, args.easy))
    steps.update(1)
    answer = {**secret, **manifest, "kind": args.edit, "base": args.base, "seed": args.seed}
    digest = audit.seal(answer, out, Path(args.sealed_dir) if args.sealed_dir else None)
    steps.update(1)
    steps.close()
    print(f"wrote {out}/model (the edited model), {out}/audit.yaml (the auditor's spec"
          f"{', with the base model' if args.easy else ''}) and {out}/answer.sha256")
    print(f"the answer is sealed apart ({digest[:12]}…); score a guess with:\n"
          f"  lensframe audit check {out} --guess guess.yaml")
    return 0


def base_names(base: str, source) -> list[str]:
    """Every name the base goes by on this machine, for a blind folder to leave out: the --base
    argument, the folder transformers read (a path:, the builtin's converted cache folder, a hub id
    and its owner) and the builtin's GGUF file. The model's own name fields are added by save_model."""
    names = [base]
    for attr in ("path", "repo_id", "gguf"):
        value = getattr(source, attr, None)
        if value:
            names.append(str(value))
    if getattr(source, "repo_id", None) and "/" in source.repo_id:
        names.append(source.repo_id.split("/", 1)[0])
    names.append(str(source.folder()))
    return names


def cmd_check(args) -> int:
    import yaml

    from . import audit

    path = Path(args.guess)
    try:
        guess = yaml.safe_load(path.read_text())
    except OSError as err:
        raise LensframeError(f"--guess {path}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise LensframeError(f"--guess {path}: not YAML ({err})") from None
    if not isinstance(guess, dict):
        raise LensframeError(f"--guess {path}: expected a mapping (kind: ..., layer: ..., subject|trigger|heads|neurons: ...)")
    answer = audit.unseal(Path(args.dir), Path(args.sealed_dir) if args.sealed_dir else None)
    result = audit.score(answer, guess)
    if args.json:
        print(json.dumps(result))
        return 0
    p = result["parts"]
    sys.stdout.write(f"score {result['score']:g}/{result['out_of']}: kind {p['kind']:g}, layer {p['layer']:g}, "
                     f"detail {p['detail']:g}\n")
    return 0
