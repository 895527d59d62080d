"""Blind model folders for the audit game: a saved folder that names nothing of the model it came from.

A transformers folder carries its origin in several places: config.json's `_name_or_path` (the folder
or hub id it was loaded from; for the builtin SmolLM2, lensframe's cache path with the GGUF's hash)
and `_model_name_or_path` (the GGUF's own name, e.g. "Smollm2 135M 8k Lc100K Mix1 Ep2"),
`_commit_hash`, the tokenizer config's `name_or_path`, and the chat template's default system
prompt ("You are a helpful AI assistant named SmolLM, trained by Hugging Face"). A blind folder
(save_model(..., blind=True)) drops the name keys, replaces every other mention of the base in
config and tokenizer-config values, and leaves out a chat template that names the base: a template
is prose written by the model's makers, which no substring replacement makes anonymous, and nothing
in lensframe applies chat templates (probes, generate and dream read raw text; the special tokens
stay in the vocabulary for whoever writes the chat format by hand).

What stays: the architecture (model_type, architectures: the folder must load, and the shapes give
the family away anyway) and the vocabulary (tokenizer.json's vocab and merges, the special tokens:
changing them changes the model). `leaks` says whether a name is still in any of these.

"The base's names" (`terms`) are found by `blind_terms` from the strings given (the --base argument,
the source's folder, hub id, GGUF file) and the model's own name fields: each string, its last path
component, and its leading word without a version number ("smollm2-135m" -> "smollm"), the family's
product name as it appears in prose. Generic words (model, base, checkpoint, ...) and words shorter
than 4 characters are not names; nor is anything the architecture's identifiers contain ("llama" of
a Llama base cannot be hidden).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

# keys whose whole value is where the folder came from: dropped (transformers fills _name_or_path
# with the folder it loads from)
NAME_KEYS = frozenset({"_name_or_path", "name_or_path", "_model_name_or_path", "_commit_hash"})
# values that define the architecture or the tokens: never rewritten (they would not load, or tokenize
# differently)
ARCH_KEYS = frozenset({"model_type", "architectures", "auto_map", "tokenizer_class", "processor_class",
                       "transformers_version", "added_tokens_decoder", "additional_special_tokens",
                       "extra_special_tokens"})
CHAT_TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")
VOCAB_FILES = ("vocab.json", "merges.txt", "tokenizer.model", "spiece.model", "vocab.txt")
GENERIC = frozenset({"model", "models", "base", "checkpoint", "checkpoints", "final", "output", "outputs",
                     "snapshot", "snapshots", "main", "edited", "temp", "data", "cache", "instruct", "chat",
                     "weights", "converted", "local", "pretrained", "path", "builtin"})
NEUTRAL = "model"  # what a mention of the base becomes inside a value that is kept
MIN_LEN = 4


def _is_name_key(key) -> bool:
    return key in NAME_KEYS


def _keep(key) -> bool:
    return key in ARCH_KEYS or (isinstance(key, str) and key.endswith("_token"))


def architecture_ids(model) -> list[str]:
    """The identifiers that name the architecture (kept, so never counted as the base's name)."""
    cfg = getattr(model, "config", None)
    ids = [getattr(cfg, "model_type", None), *(getattr(cfg, "architectures", None) or []), type(model).__name__]
    return [str(i).lower() for i in ids if i]


def model_names(model, tokenizer) -> list[str]:
    """The name fields a loaded model and its tokenizer carry (config, nested sub-configs, tokenizer)."""
    found: list[str] = []

    def walk(obj):
        if isinstance(obj, dict):
            for k, v in obj.items():
                if _is_name_key(k) and isinstance(v, str):
                    found.append(v)
                else:
                    walk(v)
        elif isinstance(obj, list):
            for x in obj:
                walk(x)

    cfg = getattr(model, "config", None)
    if cfg is not None:
        walk(cfg.to_dict())
        found.append(getattr(cfg, "_name_or_path", "") or "")
    if tokenizer is not None:
        found.append(getattr(tokenizer, "name_or_path", "") or "")
        walk(getattr(tokenizer, "init_kwargs", {}) or {})
    return [f for f in found if f]


def blind_terms(names, protected=()) -> list[str]:
    """The strings a blind folder must not contain, longest first (see the module docstring)."""
    protected = [p.lower() for p in protected]
    terms: dict[str, str] = {}

    def add(term: str) -> None:
        term = term.strip().rstrip("/\\")
        low = term.lower()
        if (len(term) < MIN_LEN or low in GENERIC or not re.search(r"[a-z]", low)
                or any(low in p for p in protected)):
            return
        terms.setdefault(low, term)

    for name in names:
        name = str(name or "").strip()
        if not name:
            continue
        add(name)
        if ":" in name and not re.match(r"^[A-Za-z]:[\\/]", name):  # a source (builtin:x, path:y): its rest
            name = name.split(":", 1)[1]
            add(name)
        tail = re.split(r"[\\/]", name.rstrip("\\/"))[-1]
        add(tail)
        words = [w for w in re.findall(r"[A-Za-z0-9]+", tail) if re.search(r"[A-Za-z]", w)]
        if words:
            add(words[0])
            add(re.sub(r"[0-9]+$", "", words[0]))  # smollm2 -> smollm, as the chat template writes it
    return sorted(terms.values(), key=lambda t: (-len(t), t.lower()))


def pattern(terms) -> re.Pattern | None:
    terms = [t for t in terms if t]
    if not terms:
        return None
    return re.compile("|".join(re.escape(t) for t in sorted(terms, key=len, reverse=True)), re.IGNORECASE)


def scrub_json(obj, pat: re.Pattern | None):
    """`obj` without name keys, every other string value with the base's names replaced by NEUTRAL
    (architecture and token values kept as they are)."""
    if isinstance(obj, dict):
        return {k: (v if _keep(k) else scrub_json(v, pat)) for k, v in obj.items() if not _is_name_key(k)}
    if isinstance(obj, list):
        return [scrub_json(x, pat) for x in obj]
    if isinstance(obj, str) and pat is not None:
        return pat.sub(NEUTRAL, obj)
    return obj


def scrub_tokenizer_files(folder: Path, terms) -> list[str]:
    """Rewrite the tokenizer files `tokenizer.save_pretrained` wrote into `folder`; returns what was
    left out (chat templates that name the base). tokenizer.json and vocabulary files are not touched."""
    pat = pattern(terms)
    dropped: list[str] = []
    for path in sorted(folder.rglob("*")):
        if not path.is_file():
            continue
        rel = path.relative_to(folder).as_posix()
        if path.name in CHAT_TEMPLATE_FILES or rel.startswith("additional_chat_templates/"):
            if pat is not None and pat.search(path.read_text(errors="replace")):
                path.unlink()
                dropped.append(rel)
        elif path.suffix == ".json" and path.name not in ("tokenizer.json", "config.json", *VOCAB_FILES):
            data = json.loads(path.read_text())
            if isinstance(data, dict) and "chat_template" in data and pat is not None \
                    and pat.search(json.dumps(data["chat_template"])):
                data.pop("chat_template")
                dropped.append(f"{rel}: chat_template")
            path.write_text(json.dumps(scrub_json(data, pat), indent=2, ensure_ascii=False) + "\n")
    return dropped


def leaks(folder: Path, terms) -> list[tuple[str, str]]:
    """(file, term) for each of the base's names still in `folder`: every file read as bytes, except
    the weights (only the safetensors header: tensor names and metadata) and the vocabulary (the
    tokenizer's vocab and merges, which the model's tokens are)."""
    import struct

    pat = pattern(terms)
    if pat is None:
        return []
    bytes_pat = re.compile(pat.pattern.encode(), re.IGNORECASE)
    found = []
    for path in sorted(Path(folder).rglob("*")):
        if not path.is_file() or path.name in VOCAB_FILES:
            continue
        if path.suffix == ".safetensors":
            with path.open("rb") as f:
                blob = f.read(struct.unpack("<Q", f.read(8))[0])
        elif path.name == "tokenizer.json":
            data = json.loads(path.read_text())
            model = data.get("model") if isinstance(data.get("model"), dict) else {}
            data["model"] = {k: v for k, v in model.items() if k not in ("vocab", "merges")}
            blob = json.dumps(data, ensure_ascii=False).encode()
        else:
            blob = path.read_bytes()
        for m in sorted({m.group(0).decode(errors="replace").lower() for m in bytes_pat.finditer(blob)}):
            found.append((path.relative_to(folder).as_posix(), m))
    return found
