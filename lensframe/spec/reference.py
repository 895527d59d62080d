"""The spec reference (README, `lensframe views`), generated from the pydantic models themselves,
so the documentation cannot drift from what the validator accepts (a test checks the README)."""
from __future__ import annotations

import typing

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from ..registry import builtin_view_types as view_types
from .schema import DatasetSpec, ModelSpec, RunSpec, SpecV1, TemplateProbe

BOUNDS = (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"), ("pattern", "matches"))
BEGIN, END = "<!-- spec-reference:begin -->", "<!-- spec-reference:end -->"


def type_name(annotation) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return " \\| ".join(repr(a).replace("'", "") for a in args)
    if origin is typing.Union:
        inner = [type_name(a) for a in args if a is not type(None)]
        return " \\| ".join(inner) + (" (optional)" if type(None) in args else "")
    if origin in (list, dict):
        return f"{origin.__name__}[{', '.join(type_name(a) for a in args)}]"
    return getattr(annotation, "__name__", str(annotation))


def default_text(field) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    if field.default_factory is not None:
        made = field.default_factory()
        return "[]" if isinstance(made, list) else "{}"
    return "" if field.default is None else f"`{field.default!r}`".replace("'", "")


def fields_table(model: type[BaseModel], skip=()) -> list[str]:
    rows = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    for name, f in model.model_fields.items():
        if name in skip:
            continue
        bounds = [f"{sym} {getattr(m, attr)}" for m in f.metadata for attr, sym in BOUNDS
                  if getattr(m, attr, None) is not None]
        desc = ((f.description or "") + (f" ({', '.join(bounds)})" if bounds else "")).replace("|", "\\|")
        rows.append(f"| `{name}` | {type_name(f.annotation)} | {default_text(f)} | {desc} |")
    return rows


def markdown() -> str:
    out = [BEGIN, "", "Top level:", ""] + fields_table(SpecV1)
    for title, model in (("`models.<name>`", ModelSpec), ("`dataset`", DatasetSpec), ("`run`", RunSpec),
                         ("a `probes` template (`probes: [{template: ..., fillers: [...]}]`)", TemplateProbe)):
        out += ["", f"{title}:", ""] + fields_table(model)
    out += ["", "Every view takes `type`, plus `model` (which model; default the first), `title`, and `pin` "
            "(focus fields fixed for this view: model, sample, position, layer, head, neuron, cluster).", ""]
    for name, cls in view_types().items():
        out += [f"View `{name}`: {cls.description}. Reads focus: {', '.join(cls.reads) or '-'}; "
                f"a click sets: {', '.join(cls.sets) or '-'}.", ""]
        table = fields_table(cls.Params, skip=("model", "title", "pin"))
        out += (table if len(table) > 2 else ["(no other params)"]) + [""]
        for pname, f in cls.Params.model_fields.items():  # nested params, e.g. logit_lens.tuned
            if pname != "pin" and isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel):
                out += [f"`{name}.{pname}`:", ""] + fields_table(f.annotation) + [""]
    out.append(END)
    return "\n".join(out)
