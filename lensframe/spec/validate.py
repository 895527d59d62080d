"""Spec validation: YAML -> normalized Spec, with every error of the file at once.

Stages, each reporting all its problems with file:line:column:
  1. YAML syntax, duplicate keys (yaml_loader)
  2. the spec's own schema (schema.SpecV1)
  3. each view against its type's Params (from the view registry), model references, pins
  4. the layout (rectangles of known view ids; every view placed)
Capability checks that need the model's config or the dataset run later, in Board.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..errors import SpecError, SpecIssue, did_you_mean
from .layout import Layout, default_layout, parse_layout
from .schema import DatasetSpec, ModelSpec, RunSpec, SpecV1
from .yaml_loader import Positions, load_yaml


@dataclass
class ViewEntry:
    id: str
    type: str
    cls: type
    params: Any  # the view type's Params instance
    model: str


@dataclass
class Spec:
    """A validated, normalized spec (shorthands expanded, defaults filled)."""

    file: str
    base_dir: Path
    title: str
    models: dict[str, ModelSpec]
    dataset: DatasetSpec
    run: RunSpec
    views: dict[str, ViewEntry]
    layout: Layout
    positions: Positions = field(default_factory=Positions, repr=False)

    def issue(self, message: str, path: tuple, hint: str | None = None, key: bool = False) -> SpecIssue:
        """An issue positioned at `path` (or its nearest ancestor) in this spec's file."""
        line, col = self.positions.of(path, key=key) or (None, None)
        return SpecIssue(message, tuple(path), hint, self.file, line, col)

    def locate(self, err: SpecError) -> SpecError:
        """Fill in file/line/column of issues raised below the spec layer (they carry only a path)."""
        for i in err.issues:
            if i.file is None:
                i.file = self.file
                i.line, i.column = self.positions.of(i.path) or (None, None)
        return err

    def normalized(self) -> dict:
        return {
            "lensframe": 1,
            "title": self.title,
            "models": {n: m.model_dump() for n, m in self.models.items()},
            "dataset": self.dataset.model_dump(exclude_none=True),
            "run": self.run.model_dump(exclude_none=True),
            "views": {v.id: {"type": v.type, **v.params.model_dump(exclude_none=True)} for v in self.views.values()},
            "layout": self.layout.template + "\n",
        }


def _pydantic_issues(exc: ValidationError, prefix: tuple, file: str, pos: Positions, known: dict[tuple, list]) -> list[SpecIssue]:
    issues = []
    for e in exc.errors():
        loc = prefix + tuple(e["loc"])
        kind = e["type"]
        hint = None
        if kind == "extra_forbidden":
            parent = loc[:-1]
            choices = known.get(parent, [])
            msg = f"unknown key {loc[-1]!r}"
            hint = did_you_mean(loc[-1], choices) or (f"known keys: {', '.join(choices)}" if choices else None)
            line, col = pos.of(loc, key=True) or (None, None)
        else:
            msg = _message(e)
            line, col = pos.of(loc) or (None, None)
        issues.append(SpecIssue(msg, loc, hint, file, line, col))
    return issues


def _message(e: dict) -> str:
    kind, got = e["type"], e.get("input")
    ctx = e.get("ctx") or {}
    if kind == "missing":
        return "required key is missing"
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        op = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}[kind]
        bound = next(iter(ctx.values()))
        return f"must be {op} {bound} (got {got!r})"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')} (got {got!r})"
    if kind == "value_error":
        return str(ctx.get("error", e["msg"]))
    return f"{e['msg'].lower()} (got {got!r})"


def _fields(model_cls) -> list[str]:
    return list(model_cls.model_fields)


def validate_spec(text: str, file: str, base_dir: Path | None = None) -> Spec:
    """Validate spec text; raises SpecError with every issue found."""
    from ..registry import view_types

    base_dir = Path(base_dir) if base_dir else Path(file).resolve().parent
    data, pos, issues = load_yaml(text, file)
    if data is None:
        raise SpecError(issues)
    if not isinstance(data, dict):
        raise SpecError(issues + [SpecIssue("the spec must be a mapping (key: value lines)", (), "start with `lensframe: 1`", file, 1, 1)])

    known_keys: dict[tuple, list] = {
        (): _fields(SpecV1), ("dataset",): _fields(DatasetSpec), ("run",): _fields(RunSpec)}
    for name in (data.get("models") or {}) if isinstance(data.get("models"), dict) else {}:
        known_keys[("models", name)] = _fields(ModelSpec)

    raw_views = data.get("views") if isinstance(data.get("views"), dict) else {}
    spec_obj = None
    try:
        spec_obj = SpecV1.model_validate({**data, "views": {k: {} for k in raw_views} if raw_views else data.get("views")})
    except ValidationError as exc:
        issues += _pydantic_issues(exc, (), file, pos, known_keys)

    # models: `model: src` is shorthand for {main: {source: src}}
    models: dict[str, ModelSpec] = {}
    if spec_obj is not None:
        if spec_obj.model and spec_obj.models:
            issues.append(SpecIssue("give either `model` or `models`, not both", ("model",), None, file, *(pos.of(("model",), key=True) or (None, None))))
        elif spec_obj.model:
            try:
                models = {"main": ModelSpec(source=spec_obj.model)}
            except ValidationError as exc:
                issues += [SpecIssue(_message(e), ("model",), "e.g. model: builtin:smollm2-135m", file, *(pos.of(("model",)) or (None, None))) for e in exc.errors()]
        elif spec_obj.models:
            models = dict(spec_obj.models)
        else:
            issues.append(SpecIssue("no model given", ("model",), "add `model: builtin:smollm2-135m`", file, 1, 1))
        if not raw_views and spec_obj.views is not None:
            issues.append(SpecIssue("no views given", ("views",), "add e.g. `text: {type: text}` under views", file, *(pos.of(("views",)) or (1, 1))))

    # views: each against its type's own Params model
    types = view_types()
    entries: dict[str, ViewEntry] = {}
    for vid, raw in raw_views.items():
        where = ("views", vid)
        if not isinstance(raw, dict):
            issues.append(SpecIssue("a view must be a mapping with a `type`", where, "e.g. {type: text}", file, *(pos.of(where) or (None, None))))
            continue
        vtype = raw.get("type")
        if vtype is None:
            issues.append(SpecIssue("the view has no `type`", where, f"types: {', '.join(types)}", file, *(pos.of(where) or (None, None))))
            continue
        if vtype not in types:
            issues.append(SpecIssue(f"unknown view type {vtype!r}", where + ("type",),
                                    did_you_mean(vtype, types) or f"types: {', '.join(types)}", file, *(pos.of(where + ("type",)) or (None, None))))
            continue
        cls = types[vtype]
        known_keys[where] = ["type"] + _fields(cls.Params)
        known_keys[where + ("pin",)] = list(cls.Params.model_fields["pin"].annotation.model_fields) if "pin" in cls.Params.model_fields else []
        try:
            params = cls.Params.model_validate({k: v for k, v in raw.items() if k != "type"})
        except ValidationError as exc:
            issues += _pydantic_issues(exc, where, file, pos, known_keys)
            continue
        model = params.model or (next(iter(models)) if models else "main")
        if models and model not in models:
            issues.append(SpecIssue(f"unknown model {model!r}", where + ("model",),
                                    did_you_mean(model, models) or f"models: {', '.join(models)}", file, *(pos.of(where + ("model",)) or (None, None))))
            continue
        entries[vid] = ViewEntry(vid, vtype, cls, params, model)

    # layout
    layout = None
    if raw_views:
        text_layout = data.get("layout") if isinstance(data.get("layout"), str) else default_layout(list(raw_views))
        layout, problems = parse_layout(text_layout, list(raw_views))
        lpos = pos.of(("layout",))
        for row, msg, hint in problems:
            issues.append(SpecIssue(msg, ("layout",), hint, file, *_layout_line(text, lpos, row)))

    if issues:
        raise SpecError(issues)
    return Spec(file, base_dir, spec_obj.title, models, spec_obj.dataset, spec_obj.run, entries, layout, pos)


def _layout_line(text: str, lpos, row: int) -> tuple[int | None, int | None]:
    """Line of the `row`-th non-empty row of a block-scalar layout (the value starts after `|`)."""
    if not lpos:
        return None, None
    lines = text.splitlines()
    start = lpos[0] - 1
    if lines[start].rstrip().endswith(("|", ">", "|-", ">-", "|+")):
        start += 1
    seen = -1
    for i in range(start, len(lines)):
        if lines[i].strip():
            seen += 1
            if seen == row:
                return i + 1, len(lines[i]) - len(lines[i].lstrip()) + 1
    return lpos


def load_spec(path) -> Spec:
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SpecError(SpecIssue("spec file not found", (), "check the path", str(path))) from None
    except OSError as exc:
        raise SpecError(SpecIssue(f"cannot read spec file: {exc.strerror}", (), None, str(path))) from None
    return validate_spec(text, str(path), path.resolve().parent)
