"""View types: the built-ins, those other packages register, and (only when asked) local files.

Packages register view types through the `lensframe.views` entry point group (the built-ins do too,
in pyproject.toml); from an uninstalled checkout we fall back to the built-in table so the repo works
in place. A plugin that fails to import, that claims a built-in's name, or whose op claims a
registered op's name (lensframe.ops.OpNameClash), does not break lensframe: it is left out and its
problem is kept for the spec that names it (view_type_problems).

A spec may also name a class in a Python file beside it (`type: ./my_views.py:MyView`), but that runs
code from the spec, so validation refuses it unless the command line passes --allow-local-views
(docs/WRITING_VIEWS.md).
"""
from __future__ import annotations

import hashlib
import importlib.util
import re
import sys
import traceback
from functools import lru_cache
from importlib import import_module
from importlib.metadata import entry_points
from pathlib import Path

BUILTIN_VIEWS = {
    "text": "lensframe.views.text:TextView",
    "logit_lens": "lensframe.views.logit_lens:LogitLensView",
    "attention": "lensframe.views.attention:AttentionView",
    "neurons": "lensframe.views.neurons:NeuronsView",
    "top_examples": "lensframe.views.top_examples:TopExamplesView",
    "ffn_vocab": "lensframe.views.ffn_vocab:FfnVocabView",
    "neuron_clusters": "lensframe.views.neuron_clusters:NeuronClustersView",
    "text_clusters": "lensframe.views.text_clusters:TextClustersView",
    "difference": "lensframe.views.difference:DifferenceView",
    "dream": "lensframe.views.dream:DreamView",
    "model_diff": "lensframe.views.model_diff:ModelDiffView",
    "probes": "lensframe.views.probes:ProbesView",
    "generate": "lensframe.views.generate:GenerateView",
    "layer_finder": "lensframe.views.layer_finder:LayerFinderView",
    "edit_search": "lensframe.views.edit_search:EditSearchView",
    "causal_trace": "lensframe.views.causal_trace:CausalTraceView",
}

# `type: ./my_views.py:MyView`: a .py file (relative to the spec's folder) and a class in it
LOCAL_VIEW = re.compile(r"^(?P<file>[^:]+\.py):(?P<cls>[A-Za-z_]\w*)$")


def _load(target: str):
    module, _, attr = target.partition(":")
    return getattr(import_module(module), attr)


@lru_cache(maxsize=1)
def _scan() -> tuple[dict[str, type], dict[str, str]]:
    """(view types by name, problem by name of the plugins left out)."""
    from .ops import OpNameClash
    from .views.base import View

    table, problems = dict(BUILTIN_VIEWS), {}
    for ep in entry_points(group="lensframe.views"):
        dist = getattr(ep.dist, "name", None) or "a package"
        if ep.name in BUILTIN_VIEWS and ep.value != BUILTIN_VIEWS[ep.name]:
            problems[ep.name] = f"{dist} registers view type {ep.name!r}, a built-in's name (the built-in is kept)"
        elif ep.name not in BUILTIN_VIEWS:
            table[ep.name] = ep.value
    types = {}
    for name, target in sorted(table.items()):
        if name in BUILTIN_VIEWS:  # a broken built-in is a bug of lensframe: let it raise
            types[name] = _load(target)
            continue
        try:
            cls = _load(target)
        except OpNameClash as exc:  # its op would replace a built-in's (or another plugin's) for every view
            problems[name] = f"{target} is left out: {exc}"
            continue
        except Exception as exc:  # a broken plugin must not take the built-ins down with it
            problems[name] = f"{target} failed to import: {type(exc).__name__}: {exc}"
            continue
        if not (isinstance(cls, type) and issubclass(cls, View)):
            problems[name] = f"{target} is not a lensframe View class"
            continue
        types[name] = cls
    return types, problems


def view_types() -> dict[str, type]:
    """Every usable view type by name: built-ins and installed plugins."""
    return _scan()[0]


def builtin_view_types() -> dict[str, type]:
    """The built-in view types only (what the README's generated reference documents)."""
    return {name: cls for name, cls in view_types().items() if name in BUILTIN_VIEWS}


def view_type_problems() -> dict[str, str]:
    """Why a registered plugin view type is not usable, by its name."""
    return _scan()[1]


class LocalViewError(Exception):
    """A local view file that cannot be used: (message, hint), positioned by the spec validator."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message, self.hint = message, hint


def is_local_view(type_name: str) -> bool:
    return bool(LOCAL_VIEW.match(type_name))


def local_view(type_name: str, base_dir: Path) -> type:
    """The View class `type_name` (`./file.py:Class`) names, the file read from `base_dir`.

    Each file is imported once per process (under a module name derived from its resolved path),
    so validating a spec again, or in a Dask worker, finds the same class and the ops it registers.
    """
    from .views.base import View

    m = LOCAL_VIEW.match(type_name)
    path = (Path(base_dir) / m.group("file")).resolve()
    if not path.is_file():
        raise LocalViewError(f"no such file {m.group('file')} (looked for {path})", "the path is relative to the spec's folder")
    module = _import_file(path, m.group("file"))
    cls = getattr(module, m.group("cls"), None)
    if cls is None:
        from .errors import did_you_mean

        found = [n for n, v in vars(module).items() if isinstance(v, type) and issubclass(v, View) and v is not View
                 and v.__module__ == module.__name__]
        raise LocalViewError(f"{m.group('file')} has no {m.group('cls')!r}",
                             did_you_mean(m.group("cls"), found) or (f"its views: {', '.join(found)}" if found else
                                                                      "define a subclass of lensframe.views.base.View there"))
    if not (isinstance(cls, type) and issubclass(cls, View)):
        raise LocalViewError(f"{m.group('cls')} in {m.group('file')} is not a View",
                             "subclass lensframe.views.base.View (docs/WRITING_VIEWS.md)")
    return cls


def _import_file(path: Path, shown: str):
    stem = re.sub(r"\W", "_", path.stem)
    name = f"lensframe_local_views.{stem}_{hashlib.sha256(str(path).encode()).hexdigest()[:12]}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before running it: dataclasses and pickling look the module up
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        lines = [f.lineno for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename) == path]
        if isinstance(exc, SyntaxError) and exc.filename and Path(exc.filename) == path:
            lines.append(exc.lineno)
        line = lines[-1] if lines else None
        raise LocalViewError(f"importing {shown} failed{f' (line {line})' if line else ''}: {type(exc).__name__}: {exc}",
                             f"fix {path}{f':{line}' if line else ''}") from None
    return module
