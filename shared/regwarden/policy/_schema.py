"""The policy file's JSON Schema, for editors (`regwarden policy schema`)."""

from __future__ import annotations

import ast
import functools
import inspect
import textwrap
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from ._model import Policy

__all__ = ["policy_json_schema"]

_DIALECT = "https://json-schema.org/draft/2020-12/schema"


@functools.cache
def _own_docstrings(cls: type) -> dict[str, str]:
    """The string literal right after each annotated attribute in `cls`'s own body
    (`name: T = ...` then `\"\"\"docstring\"\"\"`), cleaned as pydantic cleans them."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):  # no source (a dynamically made class)
        return {}
    docs: dict[str, str] = {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.ClassDef):
            continue
        for first, second in zip(node.body, node.body[1:], strict=False):
            if (
                isinstance(first, ast.AnnAssign)
                and isinstance(first.target, ast.Name)
                and isinstance(second, ast.Expr)
                and isinstance(second.value, ast.Constant)
                and isinstance(second.value.value, str)
            ):
                docs[first.target.id] = inspect.cleandoc(second.value.value)
        break  # the class itself, not classes nested in it
    return docs


def _field_docstrings(cls: type[BaseModel]) -> dict[str, str]:
    """Field name → its docstring, from the class that declares the field (a subclass
    that annotates a field again declares it, with or without a docstring)."""
    found: dict[str, str] = {}
    for name, field in cls.model_fields.items():
        if field.description is not None:
            continue
        owner = next((c for c in cls.__mro__ if name in getattr(c, "__annotations__", {})), None)
        doc = _own_docstrings(owner).get(name) if owner is not None else None
        if doc is not None:
            found[name] = doc
    return found


class _PolicySchema(GenerateJsonSchema):
    """Pydantic's generator, adjusted to what the loader accepts: optional keys may be
    omitted but never null, and field titles (`Graceperiod`) are left out. A field's
    docstring is its description (read here, not when the models are built)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._descriptions: dict[int, str] = {}

    def model_schema(self, schema: core_schema.ModelSchema) -> JsonSchemaValue:
        inner: Any = schema["schema"]
        while inner.get("type") != "model-fields" and isinstance(inner.get("schema"), dict):
            inner = inner["schema"]  # under the model's validators
        if inner.get("type") == "model-fields":
            docs = _field_docstrings(schema["cls"])
            for name, field in inner["fields"].items():
                if name in docs:
                    self._descriptions[id(field)] = docs[name]
        return super().model_schema(schema)

    def model_field_schema(self, schema: core_schema.ModelField) -> JsonSchemaValue:
        out = super().model_field_schema(schema)
        doc = self._descriptions.get(id(schema))
        # where pydantic puts a field's description: over the field's own schema, under
        # the field's other JSON Schema updates
        return out if doc is None else {**out, "description": doc}

    def nullable_schema(self, schema: core_schema.NullableSchema) -> JsonSchemaValue:
        return self.generate_inner(schema["schema"])

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        out = super().default_schema(schema)
        if schema.get("default", ...) is None:
            out.pop("default", None)
        return out

    def encode_default(self, dft: Any) -> Any:
        if isinstance(dft, BaseModel):
            return dft.model_dump(mode="json", by_alias=True, exclude_none=True)
        return super().encode_default(dft)

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False


def policy_json_schema() -> dict[str, Any]:
    """JSON Schema (2020-12) of `regwarden.yaml`, keys as written in YAML (camelCase).

    The schema checks structure only; cross-field rules (route targets exist, unreachable
    entries, …) are checked by `regwarden policy validate`.
    """
    schema = Policy.model_json_schema(
        by_alias=True, mode="validation", schema_generator=_PolicySchema
    )
    return {
        "$schema": _DIALECT,
        "title": "regwarden policy (regwarden/v1)",
        **{k: v for k, v in schema.items() if k != "title"},
    }
