"""JSON Schema of the spec for editors, from the same pydantic models the validator uses.

The views are a map from id to a view whose keys depend on its `type`. They are written as one
if/then per type (not a oneOf of every view): with a oneOf, a validator that meets one bad key can
only say "not valid under any of the given schemas"; with if/then on `type` it checks the one view
the type names and reports the exact key. schemas/lensframe.schema.json in the repository is this
schema for the built-in views (a test keeps it equal); `lensframe schema` adds installed plugins.
"""
from __future__ import annotations

from ..registry import LOCAL_VIEW, builtin_view_types, view_types
from .schema import SpecV1

SCHEMA_FILE = "schemas/lensframe.schema.json"  # relative to the repository root


def spec_json_schema(builtin_only: bool = False) -> dict:
    schema = SpecV1.model_json_schema()
    defs = schema.setdefault("$defs", {})
    types = builtin_view_types() if builtin_only else view_types()
    branches = []
    for name, cls in types.items():
        vs = cls.Params.model_json_schema(ref_template="#/$defs/{model}")
        defs.update(vs.pop("$defs", {}))
        vs["properties"] = {"type": {"const": name, "description": cls.description}, **vs.get("properties", {})}
        vs["required"] = ["type"] + vs.get("required", [])
        vs["title"] = f"view: {name}"
        defs[f"view_{name}"] = vs
        branches.append({"if": {"properties": {"type": {"const": name}}, "required": ["type"]},
                         "then": {"$ref": f"#/$defs/view_{name}"}})
    view = {
        "type": "object",
        "required": ["type"],
        # a type naming a Python file is a local view class (--allow-local-views); any other must be
        # a known type, so a misspelt one is reported as "not one of [...]"
        "properties": {"type": {"type": "string", "description": "a view type (lensframe views lists them), or "
                                "file.py:Class for a view class beside the spec (needs --allow-local-views)",
                                "if": {"pattern": r"\.py:"}, "then": {"pattern": LOCAL_VIEW.pattern},
                                "else": {"enum": sorted(types)}}},
        "allOf": branches,
    }
    schema["properties"]["views"] = {"type": "object", "additionalProperties": view,
                                     "description": "view id -> a view"}
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema
