"""YAML with positions: safe_load semantics, plus the line and column of every key and value.

Errors must point at the exact place in the user's file, so instead of yaml.safe_load we compose
the node tree (safe tags only: a spec cannot construct Python objects) and build plain data while
recording where each path came from. Duplicate keys, which PyYAML silently resolves to the last one,
are reported as errors.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from ..errors import SpecIssue


@dataclass
class Positions:
    """Maps a spec path, e.g. ("views", "lens", "top_k"), to 1-based (line, column)."""

    values: dict = field(default_factory=dict)
    keys: dict = field(default_factory=dict)

    def of(self, path: tuple, key: bool = False) -> tuple[int, int] | None:
        """Position of `path`, or of its nearest known ancestor."""
        path = tuple(path)
        while True:
            table = self.keys if key and path in self.keys else self.values
            if path in table:
                return table[path]
            if not path:
                return None
            path = path[:-1]


def _mark(node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


class _Builder:
    def __init__(self, file: str):
        self.file = file
        self.positions = Positions()
        self.issues: list[SpecIssue] = []
        self.constructor = yaml.constructor.SafeConstructor()

    def build(self, node, path: tuple) -> Any:
        self.positions.values[path] = _mark(node)
        if isinstance(node, yaml.MappingNode):
            out: dict = {}
            for key_node, value_node in node.value:
                key = self.build(key_node, path + ("<key>",))
                if not isinstance(key, (str, int, float, bool)):
                    line, col = _mark(key_node)
                    self.issues.append(SpecIssue("a mapping key must be a plain name", path, None, self.file, line, col))
                    continue
                if key in out:
                    line, col = _mark(key_node)
                    first = self.positions.keys[path + (key,)][0]
                    self.issues.append(SpecIssue(
                        f"duplicate key {key!r} (first defined on line {first})", path + (key,),
                        "each key may appear once; remove or rename one of them", self.file, line, col))
                    continue
                self.positions.keys[path + (key,)] = _mark(key_node)
                out[key] = self.build(value_node, path + (key,))
            self.positions.values.pop(path + ("<key>",), None)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.build(child, path + (i,)) for i, child in enumerate(node.value)]
        return self.constructor.construct_object(node, deep=True)


def load_yaml(text: str, file: str) -> tuple[Any, Positions, list[SpecIssue]]:
    """Parse `text`; returns (data, positions, issues). A syntax error is returned as an issue."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line, col = (mark.line + 1, mark.column + 1) if mark else (None, None)
        problem = getattr(exc, "problem", None) or str(exc)
        return None, Positions(), [SpecIssue(f"invalid YAML: {problem}", (), "check indentation and quoting", file, line, col)]
    if node is None:
        return None, Positions(), [SpecIssue("the spec is empty", (), "start with `lensframe: 1`", file, 1, 1)]
    builder = _Builder(file)
    try:
        data = builder.build(node, ())
    except yaml.YAMLError as exc:  # e.g. a tag the safe constructor refuses (!!python/object)
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line, col = (mark.line + 1, mark.column + 1) if mark else (None, None)
        return None, builder.positions, [SpecIssue(f"invalid YAML: {getattr(exc, 'problem', exc)}", (), "specs may only use plain YAML values", file, line, col)]
    return data, builder.positions, builder.issues
