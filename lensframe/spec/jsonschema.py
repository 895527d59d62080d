"""JSON Schema of the spec for editors, from the same pydantic models the validator uses."""
from __future__ import annotations

from ..registry import view_types
from .schema import SpecV1


def spec_json_schema() -> dict:
    schema = SpecV1.model_json_schema()
    defs = schema.setdefault("$defs", {})
    variants = []
    for name, cls in view_types().items():
        vs = cls.Params.model_json_schema(ref_template="#/$defs/{model}")
        defs.update(vs.pop("$defs", {}))
        vs["properties"] = {"type": {"const": name}, **vs.get("properties", {})}
        vs["required"] = ["type"] + vs.get("required", [])
        vs["title"] = f"view: {name}"
        defs[f"view_{name}"] = vs
        variants.append({"$ref": f"#/$defs/view_{name}"})
    schema["properties"]["views"] = {"type": "object", "additionalProperties": {"oneOf": variants},
                                     "description": "view id -> a view"}
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema
