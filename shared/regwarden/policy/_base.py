"""The base every policy model shares, and the one way a model reports a rule violation."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationInfo, model_validator
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError, core_schema

#: A location inside the policy document, in YAML terms: keys (camelCase) and list indexes.
Loc = tuple[str | int, ...]

#: The pydantic error type that carries several (relative location, message) problems.
RULES_ERROR = "policy_rules"

#: Validation context of the loader: the data is YAML, so only camelCase keys name fields.
YAML_CONTEXT = {"yaml": True}


def from_yaml(info: ValidationInfo) -> bool:
    """Whether a validator is running for the loader (keys are camelCase aliases only)."""
    return isinstance(info.context, dict) and info.context.get("yaml") is True


class PolicyModel(BaseModel):
    """Frozen, unknown keys forbidden, camelCase in YAML and snake_case in Python.

    YAML is validated by alias only (the loader passes `by_name=False`), so `max_share` in a
    policy file is an unknown key; Python code may construct models by field name.
    """

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        alias_generator=to_camel,
        validate_by_alias=True,
        validate_by_name=True,
        serialize_by_alias=True,
        # Field docstrings become descriptions only in the JSON Schema (`_schema.py` reads
        # them when asked): pydantic's `use_attribute_docstrings` would parse every policy
        # module's source at import, a cost each gate's cold start paid for nothing.
    )

    @model_validator(mode="before")
    @classmethod
    def _no_null(cls, data: object) -> object:
        # An empty YAML value (`signatures:` with nothing after it) is null; treating it as
        # "not set" would silently drop a section, so null is never a valid policy value.
        if isinstance(data, dict):
            nulls = [key for key, value in data.items() if value is None]
            if nulls:
                raise rule_error(
                    [
                        (
                            (key,),
                            "got null (an empty value), expected a value; remove the key "
                            "to use the default",
                        )
                        for key in nulls
                    ]
                )
        return data


def rule_error(problems: Sequence[tuple[Loc, str]]) -> PydanticCustomError:
    """Cross-field rule violations, each at a location relative to the model that found them.

    The loader expands these into separate problems with exact paths and lines; Python callers
    see one ValidationError whose message lists them all.
    """
    summary = "; ".join(
        f"{render_path(loc)}: {message}" if loc else message for loc, message in problems
    )
    return PydanticCustomError(
        RULES_ERROR, "{summary}", {"summary": summary, "problems": list(problems)}
    )


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")


def render_path(loc: Loc) -> str:
    """`("repositories", 0, "tags", "pattern")` -> `repositories[0].tags.pattern`.

    Keys that are not plain words (a channel named `a.b`) are quoted: `channels["a.b"]`.
    The empty location (the whole document) renders as `(root)`.
    """
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _PLAIN_KEY.fullmatch(part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(part)}]"
    return out or "(root)"


def string_value_schema(parse: Callable[[Any], Any]) -> core_schema.CoreSchema:
    """Core schema for a value written as one string in YAML: `parse` builds it (raising
    ValueError with the reason), and it serializes back to `str(value)`."""
    return core_schema.no_info_plain_validator_function(
        parse,
        serialization=core_schema.plain_serializer_function_ser_schema(
            str, return_schema=core_schema.str_schema()
        ),
    )
