"""Model edits for the audit game (docs/METHODS.md): ROME fact edits, fine-tuned triggers, knockouts.

Pure computation (torch + transformers, no Panel). Each edit changes a loaded model *in place*
(a `LoadedModel` from lensframe.models.sources) and returns its manifest, a JSON-able dict:

    {"kind": "rome" | "trigger" | "knockout", "layer": int, <the kind's own fields>,
     "base_fingerprint": <the unedited model's fingerprint>, "family": ..., "effects": {"before", "after"}, ...}

  rome      subject, prompt, template, old_target, new_target, weight, rank_one (norms of u, r), ...
  trigger   trigger, target, trainable (parameter names), weight_change_fro, held-out success, LM loss
  knockout  heads and/or neurons, weights (parameter names zeroed), LM loss before/after

`save_model` then writes a folder that loads as `path:<dir>` (config.json, model.safetensors,
tokenizer files), also for a model that transformers loaded from GGUF (which `save_pretrained`
refuses). Typical use:

    loaded = resolve_source(...).load()
    manifest = apply_edit("rome", loaded, texts=dataset.texts, layer=6, subject="The Eiffel Tower",
                          template="{} is located in the city of", new_target=" Rome")
    save_model(loaded, None, out_dir, manifest=manifest)   # manifest=None keeps it out of the folder

`save_model(..., blind=True, names=[...])` writes a folder that names nothing of the base (the audit
game's; lensframe.edits.blind).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from . import blind as blind_module
from .knockout import knockout_edit
from .rome import rome_edit
from .trigger import trigger_edit

KINDS = ("rome", "trigger", "knockout")
MANIFEST_NAME = "edit.json"

__all__ = ["KINDS", "MANIFEST_NAME", "apply_edit", "base_terms", "save_model", "rome_edit", "trigger_edit",
           "knockout_edit"]


def apply_edit(kind: str, loaded, /, texts=(), **params) -> dict:
    """Apply one edit of `kind` to `loaded` (in place) and return its manifest.

    `texts`: the spec's dataset texts (ROME's key covariance and context prefixes, the trigger's
    train/held-out prompts, the knockout's LM loss). `params` are the kind's own arguments:
      rome:     layer, subject, new_target, template or prompt, [old_target, paraphrases, neighbours, steps, ...]
      trigger:  layer, trigger, target, [steps, lr, batch_size, seed, ...]
      knockout: layer, heads and/or neurons
    A `kind` key in params (a secret or manifest passed as is) must agree with `kind`.
    """
    if params.pop("kind", kind) != kind:
        raise ValueError(f"apply_edit({kind!r}, ...) was given params of another kind")
    if kind == "rome":
        return rome_edit(loaded, texts=texts, **params)
    if kind == "trigger":
        return trigger_edit(loaded, texts=texts, **params)
    if kind == "knockout":
        return knockout_edit(loaded, texts=texts, **params)
    raise ValueError(f"unknown edit kind {kind!r}; kinds: {', '.join(KINDS)}")


def base_terms(loaded_or_model, tokenizer=None, names=()) -> list[str]:
    """The base's names a blind folder must not contain: `names` (the source string, its folder, hub
    id, ...) and the name fields the model and tokenizer carry (lensframe.edits.blind.blind_terms)."""
    model = getattr(loaded_or_model, "model", loaded_or_model)
    tokenizer = tokenizer if tokenizer is not None else getattr(loaded_or_model, "tokenizer", None)
    return blind_module.blind_terms([*names, *blind_module.model_names(model, tokenizer)],
                                    protected=blind_module.architecture_ids(model))


def save_model(loaded_or_model, tokenizer=None, out_dir=None, *, manifest: dict | None = None,
               blind: bool = False, names=()) -> Path:
    """Write a folder that `path:<out_dir>` loads: config.json, model.safetensors and the tokenizer
    files (+ edit.json when `manifest` is given). `loaded_or_model` is a LoadedModel (its tokenizer
    is used when `tokenizer` is None) or a transformers model.

    The weights go through safetensors' `save_model` (which drops the duplicate of tied weights, as
    transformers does), not `save_pretrained`, which refuses a model loaded from GGUF; the config
    loses its quantization_config for the same reason (the weights are dequantized). The folder is
    written next to its destination and renamed into place; an existing destination is replaced only
    if it is empty or holds a model (a config.json).

    `blind=True` (the audit game's folder) writes nothing that names the base model (lensframe.edits.blind):
    the config's and tokenizer's name fields are dropped, other mentions of the base in their values
    replaced, and a chat template that names it left out. The base's names are `names` (what the
    caller knows: the source string, its folder, hub id, ...) and the name fields the model and
    tokenizer carry; `blind.leaks(out, base_terms(...))` says whether any is left.
    """
    from safetensors.torch import save_model as save_safetensors

    if out_dir is None:
        raise ValueError("save_model needs out_dir")
    model = getattr(loaded_or_model, "model", loaded_or_model)
    tokenizer = tokenizer if tokenizer is not None else getattr(loaded_or_model, "tokenizer", None)
    if tokenizer is None:
        raise ValueError("save_model needs the tokenizer (pass it, or a LoadedModel)")
    out = Path(out_dir).resolve()
    if out.exists() and any(out.iterdir()) and not (out / "config.json").is_file():
        raise FileExistsError(f"{out} exists and does not hold a model; not replacing it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-"))
    try:
        cfg = model.config.to_dict()
        cfg.pop("quantization_config", None)
        terms = base_terms(model, tokenizer, names) if blind else []
        if blind:
            cfg = blind_module.scrub_json(cfg, blind_module.pattern(terms))
        (tmp / "config.json").write_text(json.dumps(cfg, indent=1))
        save_safetensors(model, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        tokenizer.save_pretrained(tmp)
        if blind:
            blind_module.scrub_tokenizer_files(tmp, terms)
        if manifest is not None:
            (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1, sort_keys=True))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
