"""Registry of ops (computations a Node can name)."""
from __future__ import annotations

from .base import Batch, Op, Result

_OPS: dict[str, Op] = {}


def register(op_cls):
    _OPS[op_cls.name] = op_cls()
    return op_cls


def get_op(name: str) -> Op:
    from . import attention, compare, groups, importance, lens, neurons, tokens, tuned_lens  # noqa: F401  (register the built-in ops)

    return _OPS[name]


__all__ = ["Batch", "Op", "Result", "get_op", "register"]
