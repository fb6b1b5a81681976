"""Turn YAML and pydantic errors into `Problem`s: a document path, a line, and a message that
says what was given and what is expected."""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from ._base import RULES_ERROR, Loc, render_path
from ._yaml import Document, YamlProblem

__all__ = ["Problem", "problems_from_validation", "problems_from_yaml"]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a policy file. `path` is like
    `repositories[0].vulnerabilities.maxSeverity`; `line` and `column` are 1-based (None
    when unknown, e.g. for an empty or unreadable file)."""

    path: str
    line: int | None
    message: str
    column: int | None = None

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line is not None else ""
        return f"{where}{self.path}: {self.message}"


def problems_from_yaml(found: list[YamlProblem]) -> list[Problem]:
    return [Problem(render_path(p.loc), p.line, p.message, p.column) for p in found]


def problems_from_validation(
    error: ValidationError, document: Document, model: type[BaseModel]
) -> list[Problem]:
    """One problem per pydantic error (rule errors expand into their parts), in line order."""
    out: list[Problem] = []
    details = error.errors(include_url=False)
    for detail in details:
        loc: Loc = tuple(detail["loc"])
        if detail["type"] == "too_short" and _has_deeper(details, loc):
            continue  # a list emptied by its invalid items: the item errors say it all
        ctx = detail.get("ctx") or {}
        if detail["type"] == RULES_ERROR:
            for relative, message in ctx.get("problems", []):
                out.append(_at(document, (*loc, *relative), message))
            continue
        out.append(_at(document, loc, _message(detail, model)))
    out.sort(key=lambda p: (p.line is None, p.line or 0, p.column or 0, p.path))
    return out


def _has_deeper(details: list[ErrorDetails], loc: Loc) -> bool:
    return any(len(d["loc"]) > len(loc) and tuple(d["loc"][: len(loc)]) == loc for d in details)


def _at(document: Document, loc: Loc, message: str) -> Problem:
    found, line, column = document.locate(loc)
    return Problem(render_path(found), line, message, column)


def _message(detail: ErrorDetails, model: type[BaseModel]) -> str:
    kind = detail["type"]
    loc = tuple(detail["loc"])
    given = detail.get("input")
    ctx = detail.get("ctx") or {}
    msg = detail["msg"]
    if kind == "extra_forbidden":
        key = loc[-1] if loc else "?"
        valid = _valid_keys(model, loc[:-1])
        options = f"; valid keys: {', '.join(valid)}" if valid else ""
        return f"unknown key {key!r}{options}"
    if kind == "missing":
        return f"missing required key {loc[-1]!r}" if loc else "missing required value"
    if kind == "value_error":
        return msg.removeprefix("Value error, ")
    if kind == "literal_error":
        return f"got {_show(given)}, expected {ctx.get('expected', '?')}"
    if kind == "union_tag_invalid":
        return (
            f"unknown {ctx.get('discriminator', 'tag').strip(chr(39))} {ctx.get('tag')!r}; "
            f"valid: {str(ctx.get('expected_tags', '')).replace(chr(39), '')}"
        )
    if kind == "union_tag_not_found":
        key = str(ctx.get("discriminator", "type")).strip("'")
        if not isinstance(given, dict):
            return f"got {_show(given)}, expected a mapping with {key!r}"
        return f"missing required key {key!r}"
    if kind == "rule_kind":
        keys = list(given) if isinstance(given, dict) else None
        got = f"keys {', '.join(map(str, keys))}" if keys else _show(given)
        return f"got {got}, {msg}"
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return f"got {_show(given)}, expected a mapping"
    if kind in ("tuple_type", "list_type"):
        return f"got {_show(given)}, expected a list"
    if kind == "too_short":
        least = ctx.get("min_length", 1)
        return f"got {ctx.get('actual_length', 0)} items, expected at least {least}"
    if kind == "string_too_short":
        return f"got {_show(given)}, expected a non-empty string"
    if kind == "string_type" and isinstance(given, bool):
        return (
            f"got {_show(given)}, expected a string (YAML reads yes/no/on/off/true/false as "
            "booleans: quote the value)"
        )
    expected = msg.removeprefix("Input should be ").removeprefix("Input ")
    if expected.startswith(("greater", "less")):
        expected = "a value " + expected
    if expected.startswith("a valid number, unable") or expected.startswith("a valid integer,"):
        expected = expected.split(",")[0]
    return f"got {_show(given)}, expected {expected}"


def _show(value: object) -> str:
    if value is None:
        return "null (an empty value)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _valid_keys(model: type[BaseModel], loc: Loc) -> list[str]:
    """The YAML keys allowed at `loc`, found by walking the model's field types."""
    current: Any = model
    for part in loc:
        current = _step(current, part)
        if current is None:
            return []
    current = _strip(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [f.alias or name for name, f in current.model_fields.items()]
    return []


def _step(annotation: Any, part: str | int) -> Any:
    """The annotation one location element further down, or None if it cannot be followed."""
    annotation = _strip(annotation)
    members = _union_members(annotation)
    if members is not None:  # a union: the element is pydantic's tag for one member
        return next((m for m in members if _has_tag(m, part)), None)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        for name, field in annotation.model_fields.items():
            if (field.alias or name) == part:
                return field.annotation
        return None
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (tuple, list) and args and isinstance(part, int):
        return args[0]
    if origin is dict and len(args) == 2:
        return args[1]
    return None


def _strip(annotation: Any) -> Any:
    """Remove Annotated wrappers and Optional."""
    while True:
        if typing.get_origin(annotation) is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
            continue
        members = _union_members(annotation)
        if members is not None and len(members) == 1:
            annotation = members[0]
            continue
        return annotation


def _union_members(annotation: Any) -> list[Any] | None:
    if typing.get_origin(annotation) not in (typing.Union, types.UnionType):
        return None
    members = []
    for arg in typing.get_args(annotation):
        if arg is type(None):
            continue
        while typing.get_origin(arg) is typing.Annotated:
            arg = typing.get_args(arg)[0]
        members.append(arg)
    return members


def _has_tag(member: Any, tag: str | int) -> bool:
    """Pydantic tags union members by class name (callable discriminators here) or by the
    value of their `type` literal (channels)."""
    if not (isinstance(member, type) and issubclass(member, BaseModel)):
        return False
    if member.__name__ == tag:
        return True
    field = member.model_fields.get("type")
    return field is not None and tag in typing.get_args(field.annotation)
