"""Spec validation: YAML -> normalized Spec, with every error of the file at once.

Stages, each reporting all its problems with file:line:column:
  1. YAML syntax, duplicate keys, refused tags (yaml_loader)
  2. the spec's own schema (schema.SpecV1), in pydantic's strict mode: YAML has real numbers and
     booleans, so a quoted "5" or "yes" is a wrong type, not something to coerce
  3. the model(s), checked from the raw data so a mistake elsewhere never hides one here
  4. each view against its type's Params (from the view registry, or a local file only when
     allow_local_views: it runs code), model references, pins
  5. the layout (rectangles of known view ids; every view placed), positioned at the row and cell
A stage never stops the next: every issue of the file is raised at once, sorted by position.
Capability checks that need the model's config or the dataset run later, in Board.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..errors import SpecError, SpecIssue, closest, did_you_mean
from .layout import Layout, default_layout, parse_layout
from .schema import MODEL_SCHEMES, DatasetSpec, ModelSpec, RunSpec, SpecV1, TemplateProbe
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
    allow_local_views: bool = False  # validated with --allow-local-views (a Dask worker must be too)
    probes: list = field(default_factory=list)  # lensframe.probes.Probe: the probe set sessions open with
    raw_probes: list = field(default_factory=list)  # as written (str or TemplateProbe), for normalized()

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
            **({"probes": [p if isinstance(p, str) else p.model_dump() for p in self.raw_probes]} if self.raw_probes else {}),
        }


_TYPE_WORDS = {
    "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
    "float_type": "a number", "float_parsing": "a number", "string_type": "a string",
    "bool_type": "true or false", "bool_parsing": "true or false", "list_type": "a list",
    "tuple_type": "a list", "set_type": "a list", "dict_type": "a mapping", "model_type": "a mapping",
    "model_attributes_type": "a mapping", "none_required": "empty (null)",
}
_MISSING_HINTS = {
    ("lensframe",): "start the spec with `lensframe: 1`",
    ("dataset",): "e.g. dataset: {source: builtin:fortunes}",
    ("views",): "e.g. views: {text: {type: text}}",
}
_BOUNDS = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}


def _unwrap(annotation):
    """The pydantic model reached through Optional[...], list[...], dict[..., ...], or None."""
    from typing import get_args

    from pydantic import BaseModel

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in reversed(get_args(annotation)):  # dict[str, M]: the value type is last
        found = _unwrap(arg)
        if found is not None:
            return found
    return None


def _known_keys(model_cls, loc: tuple) -> list[str]:
    """Field names of the pydantic model that holds the last key of `loc` (relative to model_cls)."""
    cls = model_cls
    for part in loc[:-1]:
        if cls is None:
            return []
        if isinstance(part, str) and part in cls.model_fields:
            cls = _unwrap(cls.model_fields[part].annotation)
        # else: a dict key or list index: stay on the value type found above
    return list(cls.model_fields) if cls is not None else []


def _pydantic_issues(exc: ValidationError, prefix: tuple, file: str, pos: Positions, model_cls,
                     extra_keys: tuple = ()) -> list[SpecIssue]:
    issues = []
    for e in exc.errors():
        rel = tuple(p for p in e["loc"] if p != "[key]")
        loc = prefix + rel
        kind = e["type"]
        hint = None
        if kind == "extra_forbidden":
            choices = list(extra_keys if len(rel) == 1 else ()) + _known_keys(model_cls, rel)
            msg = f"unknown key {rel[-1]!r}"
            hint = did_you_mean(rel[-1], choices) or (f"known keys: {', '.join(choices)}" if choices else None)
            line, col = pos.of(loc, key=True) or (None, None)
        else:
            msg = _message(e)
            if kind == "literal_error":
                hint = did_you_mean(e.get("input"), re.findall(r"'([^']*)'", str((e.get("ctx") or {}).get("expected", ""))))
            elif kind == "missing":
                hint = _MISSING_HINTS.get(loc)
            elif kind == "string_pattern_mismatch":
                hint = did_you_mean(e.get("input"), _pattern_choices(e) or [])
            line, col = pos.of(loc, key="[key]" in e["loc"]) or (None, None)
            if "[key]" in e["loc"]:
                msg = "a key " + msg
        issues.append(SpecIssue(msg, loc, hint, file, line, col))
    return issues


def _pattern_choices(e: dict) -> list[str] | None:
    m = re.fullmatch(r"\^\(([\w|.-]+)\)\$", str((e.get("ctx") or {}).get("pattern", "")))
    return m.group(1).split("|") if m else None


def _message(e: dict) -> str:
    kind, got = e["type"], e.get("input")
    ctx = e.get("ctx") or {}
    if kind == "missing":
        return "required key is missing"
    if kind in _BOUNDS:
        bound = next(iter(ctx.values()))
        return f"must be {_BOUNDS[kind]} {bound} (got {got!r})"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')} (got {got!r})"
    if kind == "string_pattern_mismatch" and _pattern_choices(e):
        choices = [repr(c) for c in _pattern_choices(e)]
        return f"must be one of {', '.join(choices[:-1])} or {choices[-1]} (got {got!r})"
    if kind == "value_error":
        return str(ctx.get("error", e["msg"]))
    if kind in _TYPE_WORDS:
        return f"must be {_TYPE_WORDS[kind]} (got {_show(got)})"
    if kind in ("too_short", "too_long"):
        return f"{e['msg'][0].lower()}{e['msg'][1:]} (got {len(got) if hasattr(got, '__len__') else got!r})"
    return f"{e['msg'][0].lower()}{e['msg'][1:]} (got {_show(got)})"


def _show(value) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return "null" if value is None else repr(value)


def _source_hint(source: str) -> str | None:
    """A hint for a model source with an unknown scheme: the close scheme, or the three forms."""
    scheme, sep, rest = source.partition(":")
    if not sep:
        return f"did you mean 'hf:{source}' (or 'path:{source}' for a folder)?"
    close = closest(scheme, MODEL_SCHEMES)
    if close:
        return f"did you mean '{close}:{rest}'?"
    return "e.g. model: builtin:smollm2-135m, model: hf:gpt2 or model: path:./models/mine"


def _under(path: tuple, reported: set) -> bool:
    return any(path[:len(r)] == r for r in reported)


def _pos(pos: Positions, path: tuple, key: bool = False) -> tuple:
    return pos.of(path, key=key) or (None, None)


LOCAL_REFUSED = "a view from a local Python file runs code from the spec; pass --allow-local-views to allow it"
LOCAL_HINT = ("only for a spec you trust: lensframe serve SPEC --allow-local-views; or package the view "
              "(docs/WRITING_VIEWS.md)")


def _type_hint(vtype: str, types: dict) -> str:
    """Why a view type is unknown: a plugin that failed to load, a close name, a file without a class."""
    from ..registry import view_type_problems

    problem = view_type_problems().get(vtype)
    if problem:
        return problem
    if vtype.endswith(".py"):
        return f"name the class too: {vtype if vtype.startswith(('.', '/')) else './' + vtype}:ClassName"
    return did_you_mean(vtype, types) or (f"types: {', '.join(types)} (a view type from another package needs "
                                          "that package installed)")


def validate_spec(text: str, file: str, base_dir: Path | None = None, allow_local_views: bool = False) -> Spec:
    """Validate spec text; raises SpecError with every issue found. A view type naming a local file
    (`./my_views.py:MyView`) imports that file, so it is refused unless `allow_local_views`."""
    from ..registry import LocalViewError, is_local_view, local_view, view_types

    base_dir = Path(base_dir) if base_dir else Path(file).resolve().parent
    data, pos, issues = load_yaml(text, file)
    if data is None:
        raise SpecError(issues)
    if not isinstance(data, dict):
        raise SpecError(issues + [SpecIssue("the spec must be a mapping (key: value lines)", (), "start with `lensframe: 1`", file, 1, 1)])
    reported = {i.path for i in issues}  # the loader already blamed these (refused tags, ...)

    def add(found: list[SpecIssue]) -> None:
        issues.extend(i for i in found if not _under(i.path, reported))

    raw_views = data.get("views") if isinstance(data.get("views"), dict) else {}
    spec_obj = None
    try:
        # strict: a quoted "5" is not an integer, "yes" is not a boolean (YAML has real ones)
        # views and probes are checked entry by entry below, with their own paths and hints
        spec_obj = SpecV1.model_validate({**data, "views": {k: {} for k in raw_views} if raw_views else data.get("views"),
                                          "probes": []}, strict=True)
    except ValidationError as exc:
        add(_pydantic_issues(exc, (), file, pos, SpecV1))

    # models: `model: src` is shorthand for {main: {source: src}}. Checked from the raw data, so a
    # mistake elsewhere in the file does not hide a mistake here.
    models: dict[str, ModelSpec] = {}
    model_names: list = []
    raw_model, raw_models = data.get("model"), data.get("models")
    if raw_model is not None and raw_models is not None:
        issues.append(SpecIssue("give either `model` or `models`, not both", ("model",), None, file, *_pos(pos, ("model",), key=True)))
    elif raw_model is not None:
        model_names = ["main"]
        if isinstance(raw_model, str):  # a wrong type is reported by SpecV1 above
            try:
                models = {"main": ModelSpec.model_validate({"source": raw_model}, strict=True)}
            except ValidationError as exc:
                add([SpecIssue(_message(e), ("model",), _source_hint(raw_model), file, *_pos(pos, ("model",))) for e in exc.errors()])
    elif raw_models is not None:
        if isinstance(raw_models, dict):
            model_names = list(raw_models)
            for name, m in raw_models.items():
                try:
                    models[name] = ModelSpec.model_validate(m, strict=True)
                except ValidationError:  # reported by SpecV1 above; add a hint to a bad source
                    if isinstance(m, dict) and isinstance(m.get("source"), str):
                        for i in issues:
                            if i.path == ("models", name, "source") and i.hint is None:
                                i.hint = _source_hint(m["source"])
            if not raw_models and ("models",) not in reported:
                issues.append(SpecIssue("no models given", ("models",), "e.g. models: {main: {source: hf:gpt2}}", file, *_pos(pos, ("models",))))
    elif not _under(("model",), reported):
        issues.append(SpecIssue("no model given", ("model",), "add `model: builtin:smollm2-135m`", file, 1, 1))
    if isinstance(data.get("views"), dict) and not raw_views:
        issues.append(SpecIssue("no views given", ("views",), "add e.g. `text: {type: text}` under views", file, *_pos(pos, ("views",))))

    # views: each against its type's own Params model
    types = view_types()
    entries: dict[str, ViewEntry] = {}
    for vid, raw in raw_views.items():
        where = ("views", vid)
        if _under(where, reported):
            continue
        if not isinstance(raw, dict):
            issues.append(SpecIssue("a view must be a mapping with a `type`", where, "e.g. {type: text}", file, *_pos(pos, where)))
            continue
        vtype = raw.get("type")
        if where + ("type",) in reported:
            continue
        if vtype is None:
            issues.append(SpecIssue("the view has no `type`", where, f"types: {', '.join(types)}", file, *_pos(pos, where)))
            continue
        if not isinstance(vtype, str):
            issues.append(SpecIssue(f"must be a view type name (got {_show(vtype)})", where + ("type",),
                                    f"types: {', '.join(types)}", file, *_pos(pos, where + ("type",))))
            continue
        if is_local_view(vtype):  # `./my_views.py:MyView`: code from the spec's folder, only when asked
            at = (file, *_pos(pos, where + ("type",)))
            if not allow_local_views:
                issues.append(SpecIssue(LOCAL_REFUSED, where + ("type",), LOCAL_HINT, *at))
                continue
            try:
                cls = local_view(vtype, base_dir)
            except LocalViewError as exc:
                issues.append(SpecIssue(exc.message, where + ("type",), exc.hint, *at))
                continue
        elif vtype not in types:
            issues.append(SpecIssue(f"unknown view type {vtype!r}", where + ("type",), _type_hint(vtype, types),
                                    file, *_pos(pos, where + ("type",))))
            continue
        else:
            cls = types[vtype]
        try:
            params = cls.Params.model_validate({k: v for k, v in raw.items() if k != "type"}, strict=True)
        except ValidationError as exc:
            add(_pydantic_issues(exc, where, file, pos, cls.Params, extra_keys=("type",)))
            continue
        model = params.model or (model_names[0] if model_names else "main")
        if model_names and model not in model_names:
            issues.append(SpecIssue(f"unknown model {model!r}", where + ("model",),
                                    did_you_mean(model, model_names) or f"models: {', '.join(map(str, model_names))}",
                                    file, *_pos(pos, where + ("model",))))
            continue
        if params.pin.model is not None and model_names and params.pin.model not in model_names:
            issues.append(SpecIssue(f"unknown model {params.pin.model!r}", where + ("pin", "model"),
                                    did_you_mean(params.pin.model, model_names) or f"models: {', '.join(map(str, model_names))}",
                                    file, *_pos(pos, where + ("pin", "model"))))
            continue
        others = [(key, getattr(params, key)) for key in getattr(cls, "model_params", ())
                  if getattr(params, key) is not None and model_names and getattr(params, key) not in model_names]
        for key, value in others:  # params that name a second model (e.g. model_diff's `other`)
            issues.append(SpecIssue(f"unknown model {value!r}", where + (key,),
                                    did_you_mean(value, model_names) or f"models: {', '.join(map(str, model_names))}",
                                    file, *_pos(pos, where + (key,))))
        if others:
            continue
        entries[vid] = ViewEntry(vid, vtype, cls, params, model)

    raw_probes, probes = _check_probes(data.get("probes"), file, pos, issues)

    # layout
    layout = None
    if raw_views:
        given = data.get("layout")
        text_layout = given if isinstance(given, str) else default_layout(list(raw_views))
        layout, problems = parse_layout(text_layout, list(raw_views))
        for p in problems:
            line, col = _layout_position(text, pos, p.row, p.cell) if isinstance(given, str) else _pos(pos, ("views",), key=True)
            issues.append(SpecIssue(p.message, ("layout",), p.hint, file, line, col))

    if issues:
        raise SpecError(issues)
    return Spec(file, base_dir, spec_obj.title, models, spec_obj.dataset, spec_obj.run, entries, layout, pos,
                allow_local_views, probes, raw_probes)


def _check_probes(raw, file: str, pos: Positions, issues: list) -> tuple[list, list]:
    """The `probes:` section: each entry a prompt or a {template, fillers} mapping, positioned at
    the entry; returns (entries as written, the probe set)."""
    from ..probes import ProbeError, clean_text, probes_from_spec

    if raw is None:
        return [], []
    if not isinstance(raw, list):
        issues.append(SpecIssue(f"must be a list of prompts or templates (got {_show(raw)})", ("probes",),
                                '- "The Eiffel Tower is in" or - {template: "{} is in", fillers: [Paris]}',
                                file, *_pos(pos, ("probes",))))
        return [], []
    entries, bad = [], False
    for i, entry in enumerate(raw):
        where = ("probes", i)
        if isinstance(entry, str):
            try:
                clean_text(entry)
                entries.append(entry)
            except ProbeError as err:
                issues.append(SpecIssue(str(err), where, None, file, *_pos(pos, where)))
                bad = True
        elif isinstance(entry, dict):
            try:
                entries.append(TemplateProbe.model_validate(entry, strict=True))
            except ValidationError as exc:
                issues.extend(_pydantic_issues(exc, where, file, pos, TemplateProbe))
                bad = True
        else:
            issues.append(SpecIssue(f"must be a prompt or a {{template, fillers}} mapping (got {_show(entry)})", where,
                                    '- "a prompt" or - {template: "{} is in", fillers: [Paris]}', file, *_pos(pos, where)))
            bad = True
    if bad:
        return entries, []
    try:
        return entries, probes_from_spec(entries)
    except ProbeError as err:  # too many probes in all
        issues.append(SpecIssue(str(err), ("probes",), None, file, *_pos(pos, ("probes",))))
        return entries, []


def _layout_position(text: str, pos: Positions, row: int, cell: int | None) -> tuple[int | None, int | None]:
    """Line and column of the `row`-th non-empty row (and its `cell`-th name) of the layout value.

    A block scalar (`layout: |`) has one row per line, starting on the line after the `|` (which
    may carry a comment). A one-line plain or quoted value is row 0 on its own line. Anything else
    (a multi-line quoted string) points at the value's start.
    """
    start = pos.of(("layout",))
    if not start:
        return None, None
    style = pos.styles.get(("layout",))
    end = pos.ends.get(("layout",), start)
    lines = text.splitlines()
    if style in ("|", ">"):
        seen = -1
        for i in range(start[0], min(end[0], len(lines))):  # 0-based index of the line after `|`
            if lines[i].strip():
                seen += 1
                if seen == row:
                    return i + 1, _cell_column(lines[i], 0, cell)
        return start
    if end[0] == start[0] and row == 0:
        quote = 1 if style in ('"', "'") else 0
        return start[0], _cell_column(lines[start[0] - 1], start[1] - 1 + quote, cell)
    return start


def _cell_column(line: str, offset: int, cell: int | None) -> int:
    """1-based column of the `cell`-th whitespace-separated name in line[offset:] (its first name if None)."""
    names = list(re.finditer(r"\S+", line[offset:]))
    if not names:
        return offset + 1
    m = names[min(cell or 0, len(names) - 1)]
    return offset + m.start() + 1


def load_spec(path, allow_local_views: bool = False) -> Spec:
    from .yaml_loader import MAX_BYTES, too_big

    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:  # refused before it is read: a 60 MB file costs nothing
            raise SpecError(too_big(str(path), size))
        text = path.read_text()
    except FileNotFoundError:
        raise SpecError(SpecIssue("spec file not found", (), "check the path", str(path))) from None
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[:exc.start].count(b"\n") + 1
        raise SpecError(SpecIssue(f"the spec is not UTF-8 text (byte {exc.start})", (), "save it as UTF-8",
                                  str(path), line, 1)) from None
    except OSError as exc:
        raise SpecError(SpecIssue(f"cannot read spec file: {exc.strerror}", (), None, str(path))) from None
    return validate_spec(text, str(path), path.resolve().parent, allow_local_views)
