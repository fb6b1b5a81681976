"""The policy file's JSON Schema, for editors (`regwarden policy schema`)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from ._model import Policy

__all__ = ["policy_json_schema"]

_DIALECT = "https://json-schema.org/draft/2020-12/schema"


class _PolicySchema(GenerateJsonSchema):
    """Pydantic's generator, adjusted to what the loader accepts: optional keys may be
    omitted but never null, and field titles (`Graceperiod`) are left out."""

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
