"""Registry of ops (computations a Node can name).

The built-in ops are the modules of this package; they register when imported, and get_op imports
every one of them first. An op of another package (a plugin, or a local view file) registers the
same way (`@register`), but cannot take a name that is already taken: a built-in's (BUILTIN_OPS), or
another package's. That raises OpNameClash, so the plugin's view is left out with the reason
(lensframe.registry) and a local view file is a spec error, instead of one op silently replacing the
other for every view that asks for it.
"""
from __future__ import annotations

import pkgutil
from importlib import import_module

from ..errors import LensframeError
from .base import Batch, Op, Result

_OPS: dict[str, Op] = {}
_BUILTINS_IMPORTED = False

# Every built-in op's name and the module of lensframe.ops that defines it. A plugin's op is checked
# against this table when it registers, so the check needs no import of the built-ins (several
# import torch, and `lensframe validate` loads plugin views without torch); a test keeps the table
# equal to what the modules register.
BUILTIN_OPS = {
    "attention": "attention", "causal_trace": "causal", "describe": "groups", "ffn_dynamic": "neurons",
    "ffn_edit": "neurons", "ffn_static": "neurons", "kept_focus": "kept_focus", "layer_stats": "layer_stats",
    "lens_residuals": "compare", "logit_lens": "lens", "model_kl": "compare", "neuron_acts": "neurons",
    "neuron_clusters": "groups", "neuron_enrichment": "groups", "neuron_importance": "importance",
    "neuron_top_examples": "neurons", "pair_lens": "compare", "residuals": "neurons", "text_clusters": "groups",
    "text_embeddings": "importance", "tokens": "tokens", "tuned_lens": "tuned_lens", "value_norms": "neurons",
    "weight_diff": "compare",
}


class OpNameClash(LensframeError):
    """An op registered under a name another op class already has."""


class UnknownOp(LensframeError, KeyError):
    """No op is registered under a node's op name."""

    def __str__(self) -> str:  # KeyError's str() is the repr of its argument
        return str(self.args[0])


def _where(cls) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def is_builtin(op_cls) -> bool:
    return op_cls.__module__.startswith(__name__ + ".")


def _import_builtins() -> None:
    """Import every module of lensframe.ops (each registers its ops), once."""
    global _BUILTINS_IMPORTED
    if _BUILTINS_IMPORTED:
        return
    _BUILTINS_IMPORTED = True  # before importing: their `from . import register` comes back here
    for module in pkgutil.iter_modules(__path__):
        if module.name != "base":
            import_module(f"{__name__}.{module.name}")


def register(op_cls):
    """Class decorator: make `op_cls` (an Op subclass with a `name`) what Nodes of that op name run.

    Raises OpNameClash if another op class already has the name; the built-ins are imported before
    any other package's op registers, so a clash with a built-in is found whatever the import order."""
    name = getattr(op_cls, "name", "")
    if not (isinstance(op_cls, type) and issubclass(op_cls, Op)) or not isinstance(name, str) or not name:
        raise TypeError(f"@register needs an Op subclass with a name (got {op_cls!r})")
    if not is_builtin(op_cls) and name in BUILTIN_OPS:
        where = _where(type(_OPS[name])) if name in _OPS else f"{__name__}.{BUILTIN_OPS[name]}"
        raise OpNameClash(f"op {name!r} of {_where(op_cls)} clashes with the built-in op {name!r} of {where}; "
                          f"give {op_cls.__qualname__} another name")
    old = _OPS.get(name)
    if old is not None and _where(type(old)) != _where(op_cls):  # the same class imported again is no clash
        whose = "the built-in op" if is_builtin(type(old)) else "the op"
        raise OpNameClash(f"op {name!r} of {_where(op_cls)} clashes with {whose} {name!r} of {_where(type(old))}; "
                          f"give {op_cls.__qualname__} another name")
    _OPS[name] = op_cls()
    return op_cls


def get_op(name: str) -> Op:
    _import_builtins()
    try:
        return _OPS[name]
    except KeyError:
        raise UnknownOp(f"no op is registered as {name!r} (is the package or view file that defines it "
                        f"installed and imported?)") from None


__all__ = ["Batch", "Op", "OpNameClash", "Result", "UnknownOp", "get_op", "register"]
