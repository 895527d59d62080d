"""YAML with positions: safe_load semantics, plus the line and column of every key and value.

Errors must point at the exact place in the user's file, so instead of yaml.safe_load we compose
the node tree and build plain data while recording where each path came from. Only plain YAML
values are built: a tag outside YAML's standard safe set (`!!python/object:...`, `!foo`) is an
error at the tagged node, whether it sits on a scalar, a sequence or a mapping, so a spec cannot
construct Python objects. Duplicate keys, which PyYAML silently resolves to the last one, are
reported as errors. Merge keys (`<<: *base`) work as in safe_load; explicit keys win.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from ..errors import SpecIssue

MAP_TAG = "tag:yaml.org,2002:map"
SEQ_TAG = "tag:yaml.org,2002:seq"
MERGE_TAG = "tag:yaml.org,2002:merge"
# Values built from one spec, counting every alias expansion: stops "billion laughs" specs.
MAX_VALUES = 200_000
# A spec is a layout, not data: bigger than this is refused before the YAML is parsed, and a
# parse stops at MAX_VALUES nodes, so a huge file costs neither minutes nor gigabytes.
MAX_BYTES = 2 * 2**20
MAX_NODES = 50_000  # YAML nodes composed (before aliases are expanded): ~1 s of PyYAML


class _CountingLoader(yaml.SafeLoader):
    """PyYAML's safe loader that stops composing after MAX_NODES nodes."""

    def compose_node(self, parent, index):
        self._lf_nodes = getattr(self, "_lf_nodes", 0) + 1
        if self._lf_nodes > MAX_NODES:
            raise _TooLarge
        return super().compose_node(parent, index)


@dataclass
class Positions:
    """Maps a spec path, e.g. ("views", "lens", "top_k"), to 1-based (line, column).

    `values` holds where each value starts, `keys` where each mapping key starts; `ends` where each
    value ends and `styles` the style of scalar values ('|', '>', '"', "'" or None for plain), so
    the rows of a block scalar (the layout) can be located line by line.
    """

    values: dict = field(default_factory=dict)
    keys: dict = field(default_factory=dict)
    ends: dict = field(default_factory=dict)
    styles: dict = field(default_factory=dict)

    def of(self, path: tuple, key: bool = False) -> tuple[int, int] | None:
        """Position of `path` (its key's position with key=True), or of its nearest known ancestor."""
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


def _end(node) -> tuple[int, int]:
    return node.end_mark.line + 1, node.end_mark.column + 1


def short_tag(tag: str) -> str:
    """'tag:yaml.org,2002:python/object:os.Foo' -> '!!python/object:os.Foo' (as the user wrote it)."""
    prefix = "tag:yaml.org,2002:"
    return "!!" + tag[len(prefix):] if tag.startswith(prefix) else tag


class _TooLarge(Exception):
    pass


class _Builder:
    def __init__(self, file: str):
        self.file = file
        self.positions = Positions()
        self.issues: list[SpecIssue] = []
        self.constructor = yaml.constructor.SafeConstructor()
        self.count = 0
        self.active: set[int] = set()  # ids of the container nodes being built (recursive aliases)

    def issue(self, message: str, path: tuple, hint: str | None, node) -> None:
        self.issues.append(SpecIssue(message, path, hint, self.file, *_mark(node)))

    def refuse_tag(self, node, path: tuple) -> None:
        self.issue(f"the tag {short_tag(node.tag)!r} is not allowed in a spec", path,
                   "a spec holds plain YAML values only (strings, numbers, lists, mappings)", node)

    def build(self, node, path: tuple) -> Any:
        self.count += 1
        if self.count > MAX_VALUES:
            raise _TooLarge
        self.positions.values[path] = _mark(node)
        self.positions.ends[path] = _end(node)
        if isinstance(node, yaml.ScalarNode):
            self.positions.styles[path] = node.style
            try:
                return self.constructor.construct_object(node, deep=True)
            except yaml.constructor.ConstructorError as exc:
                if "could not determine a constructor" in str(getattr(exc, "problem", "")):
                    self.refuse_tag(node, path)
                else:
                    self.issue(f"invalid value: {getattr(exc, 'problem', exc)}", path, None, node)
                return None
        if id(node) in self.active:
            self.issue("an alias refers to the value that contains it", path, "remove the recursive alias", node)
            return None
        if isinstance(node, yaml.SequenceNode) and node.tag != SEQ_TAG or isinstance(node, yaml.MappingNode) and node.tag != MAP_TAG:
            self.refuse_tag(node, path)
            return None
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return [self.build(child, path + (i,)) for i, child in enumerate(node.value)]
            return self.build_mapping(node, path)
        finally:
            self.active.discard(id(node))

    def build_mapping(self, node, path: tuple) -> dict:
        out: dict = {}
        merges = []
        for key_node, value_node in node.value:
            if key_node.tag == MERGE_TAG:
                merges.append(value_node)
                continue
            key = self.key(key_node, path)
            if key is _SKIP:
                continue
            if key in out:
                first = self.positions.keys[path + (key,)][0]
                self.issue(f"duplicate key {key!r} (first defined on line {first})", path + (key,),
                           "each key may appear once; remove or rename one of them", key_node)
                continue
            self.positions.keys[path + (key,)] = _mark(key_node)
            out[key] = self.build(value_node, path + (key,))
        # `<<: *base` or `<<: [*a, *b]`: merged keys fill in what is not given explicitly (the
        # first merged mapping wins over later ones), as in yaml.safe_load.
        for merge in merges:
            sources = merge.value if isinstance(merge, yaml.SequenceNode) else [merge]
            for src in sources:
                if not isinstance(src, yaml.MappingNode) or src.tag != MAP_TAG:
                    self.issue("a merge key (<<) needs a mapping or a list of mappings", path, None, src)
                    continue
                if id(src) in self.active:
                    self.issue("an alias refers to the value that contains it", path, "remove the recursive alias", src)
                    continue
                self.active.add(id(src))
                try:
                    merged = self.build_mapping(src, path + ("<merge>",))
                finally:
                    self.active.discard(id(src))
                for k, v in merged.items():
                    if k not in out:
                        out[k] = v
                        self._move(path + ("<merge>", k), path + (k,))
                self._drop(path + ("<merge>",))
        return out

    def key(self, key_node, path: tuple):
        if not isinstance(key_node, yaml.ScalarNode):
            self.issue("a mapping key must be a plain name", path, None, key_node)
            return _SKIP
        key = self.build(key_node, path + ("<key>",))
        for table in (self.positions.values, self.positions.ends, self.positions.styles):
            table.pop(path + ("<key>",), None)  # a scalar key records nothing deeper
        if key is None and key_node.tag != "tag:yaml.org,2002:null":
            return _SKIP  # a refused tag: already reported
        if not isinstance(key, (str, int, float, bool)):
            self.issue("a mapping key must be a plain name", path, None, key_node)
            return _SKIP
        return key

    def _move(self, old: tuple, new: tuple) -> None:
        """Re-home the positions recorded under `old` (a merged value) to `new`."""
        n = len(old)
        for table in (self.positions.values, self.positions.keys, self.positions.ends, self.positions.styles):
            for p in [p for p in table if p[:n] == old]:
                table.setdefault(new + p[n:], table[p])

    def _drop(self, prefix: tuple) -> None:
        n = len(prefix)
        for table in (self.positions.values, self.positions.keys, self.positions.ends, self.positions.styles):
            for p in [p for p in table if p[:n] == prefix]:
                del table[p]


_SKIP = object()


def _yaml_error(exc: yaml.YAMLError, file: str, hint: str) -> SpecIssue:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    line, col = (mark.line + 1, mark.column + 1) if mark else (None, None)
    problem = getattr(exc, "problem", None) or str(exc)
    context, cmark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    # PyYAML's parser words, said the way a spec author thinks of them
    if problem.startswith("expected <block end>"):
        problem = "bad indentation: this line does not line up with the keys above it"
        hint = "indent the keys of one mapping by the same number of spaces"
    elif problem.startswith("found character '\\t'"):
        problem = "a tab character; YAML indents with spaces only"
        hint = "replace the tab with spaces"
    elif problem == "mapping values are not allowed here":
        problem = "unexpected ':' (mapping values are not allowed here)"
        hint = "quote a value that contains ': ', or check the indentation of this line"
    if context and cmark is not None and (cmark.line, cmark.column) != (getattr(mark, "line", None), getattr(mark, "column", None)):
        hint = f"{context} at line {cmark.line + 1}, column {cmark.column + 1}; {hint}"
    return SpecIssue(f"invalid YAML: {problem}", (), hint, file, line, col)


def too_big(file: str, size: int) -> SpecIssue:
    return SpecIssue(f"the spec is too large: {size:,} bytes (the limit is {MAX_BYTES:,})", (),
                     "a spec names its data (dataset: source: jsonl:..., parquet:..., hf:...) rather than holding it",
                     file, 1, 1)


def load_yaml(text: str, file: str) -> tuple[Any, Positions, list[SpecIssue]]:
    """Parse `text`; returns (data, positions, issues). A syntax error is returned as an issue."""
    size = len(text.encode("utf-8", errors="replace"))
    if size > MAX_BYTES:
        return None, Positions(), [too_big(file, size)]
    try:
        node = yaml.compose(text, Loader=_CountingLoader)
    except _TooLarge:
        return None, Positions(), [SpecIssue(f"the spec is too large: more than {MAX_NODES:,} YAML nodes", (),
                                             "a spec names its data (dataset: source: ...) rather than holding it",
                                             file, 1, 1)]
    except yaml.YAMLError as exc:
        return None, Positions(), [_yaml_error(exc, file, "check indentation and quoting")]
    if node is None:
        return None, Positions(), [SpecIssue("the spec is empty", (), "start with `lensframe: 1`", file, 1, 1)]
    builder = _Builder(file)
    try:
        data = builder.build(node, ())
    except _TooLarge:
        return None, builder.positions, [SpecIssue(
            f"the spec is too large: more than {MAX_VALUES} values once aliases are expanded", (),
            "use fewer nested aliases (*name)", file, 1, 1)]
    except yaml.YAMLError as exc:  # defensive: the builder reports tag problems as issues
        return None, builder.positions, [_yaml_error(exc, file, "specs may only use plain YAML values")]
    return data, builder.positions, builder.issues
