"""Scalar values in the policy file: durations, sizes, severities, regexes and tag patterns.

Each is a pydantic type that parses the YAML spelling, serialises back to it, and documents
itself in the JSON Schema. Errors say what was given and what is expected.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    PlainSerializer,
    PlainValidator,
    WithJsonSchema,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

from ..model import Severity
from ._base import string_value_schema

__all__ = [
    "ByteSize",
    "Duration",
    "PolicyDate",
    "PolicySeverity",
    "PositiveDuration",
    "Regex",
    "TagPattern",
    "format_duration",
    "parse_date",
    "parse_duration",
    "parse_severity",
    "parse_size",
]

# -- durations ---------------------------------------------------------------------------------

_DURATION = re.compile(r"([0-9]+)([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_UNIT_NAMES = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_DURATION_HELP = "a duration like 30s, 5m, 12h, 7d or 2w"


def parse_duration(value: object) -> timedelta:
    """`"30s"`, `"5m"`, `"12h"`, `"7d"`, `"2w"` -> timedelta. One integer and one unit.

    Bare numbers are refused (is `300` seconds or days?), as are combined forms (`1h30m`),
    fractions and negative values.
    """
    if isinstance(value, timedelta):
        if value < timedelta(0):
            raise ValueError(
                f"got {format_duration(value)}, expected a duration that is not negative"
            )
        return value
    if isinstance(value, bool) or not isinstance(value, str):
        hint = "; add a unit, e.g. 300s or 7d" if isinstance(value, int | float) else ""
        raise ValueError(f"got {value!r}, expected {_DURATION_HELP}{hint}")
    match = _DURATION.fullmatch(value.strip())
    if match is None:
        raise ValueError(
            f"got {value!r}, expected {_DURATION_HELP} (one whole number and one unit: "
            "s, m, h, d or w)"
        )
    amount, unit = int(match.group(1)), match.group(2)
    try:
        return timedelta(**{_UNIT_NAMES[unit]: amount})
    except OverflowError:
        raise ValueError(f"got {value!r}, which is too long a duration") from None


def format_duration(value: timedelta) -> str:
    """The shortest policy spelling of `value`: 7 days -> `7d`, 90 minutes -> `90m`.

    Weeks are printed as days. A value with sub-second precision is printed as seconds with
    a fraction, which `parse_duration` does not accept (it cannot come from a policy file).
    """
    if value < timedelta(0):
        return f"-{format_duration(-value)}"
    if value.microseconds:
        return f"{value.total_seconds()}s"
    seconds = value.days * 86400 + value.seconds
    for unit in ("d", "h", "m"):
        if seconds and seconds % _UNIT_SECONDS[unit] == 0:
            return f"{seconds // _UNIT_SECONDS[unit]}{unit}"
    return f"{seconds}s"


def _positive(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError(f"got {format_duration(value)}, expected a duration greater than 0s")
    return value


_DURATION_SCHEMA = {
    "type": "string",
    "pattern": r"^[0-9]+[smhdw]$",
    "description": "A duration: a whole number and a unit s, m, h, d (days) or w (weeks).",
    "examples": ["30s", "5m", "12h", "7d", "2w"],
}

#: A duration that may be zero: `0s` means "none" (e.g. no grace period).
Duration = Annotated[
    timedelta,
    PlainValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(_DURATION_SCHEMA),
]

#: A duration greater than zero.
PositiveDuration = Annotated[Duration, AfterValidator(_positive)]

# -- sizes -------------------------------------------------------------------------------------

_SIZE = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]+)")
_SIZE_UNITS = {
    "B": 1,
    "kB": 1000,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "TB": 1000**4,
    "KiB": 1024,
    "MiB": 1024**2,
    "GiB": 1024**3,
    "TiB": 1024**4,
}
_SIZE_HELP = "a size in bytes (an integer) or a string like 500MB, 1.5GiB"


def parse_size(value: object) -> int:
    """A size in bytes: an integer, or a number and a unit: `500MB`, `1.5GiB`, `200KiB`.

    Decimal units (`kB`/`KB`, `MB`, `GB`, `TB`) are powers of 1000, binary units (`KiB`,
    `MiB`, `GiB`, `TiB`) powers of 1024. The result must be a whole number of bytes, at least 1.
    """
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"got {value!r}, expected {_SIZE_HELP}")
    if isinstance(value, int):
        size = value
    else:
        match = _SIZE.fullmatch(value.strip())
        if match is None or match.group(2) not in _SIZE_UNITS:
            units = ", ".join(_SIZE_UNITS)
            raise ValueError(f"got {value!r}, expected {_SIZE_HELP}; units: {units}")
        exact = Decimal(match.group(1)) * _SIZE_UNITS[match.group(2)]
        if exact != exact.to_integral_value():
            raise ValueError(f"got {value!r}, which is {exact} bytes; expected whole bytes")
        size = int(exact)
    if size < 1:
        raise ValueError(f"got {value!r}, expected a size of at least 1 byte")
    return size


#: A size in bytes, written as an integer or with a unit (`500MB`, `1.5GiB`); read as int.
ByteSize = Annotated[
    int,
    PlainValidator(parse_size),
    PlainSerializer(int, return_type=int),
    WithJsonSchema(
        {
            "oneOf": [
                {"type": "integer", "minimum": 1},
                {
                    "type": "string",
                    "pattern": r"^[0-9]+(\.[0-9]+)?\s*(B|kB|KB|MB|GB|TB|KiB|MiB|GiB|TiB)$",
                },
            ],
            "description": "A size: bytes as an integer, or a number with a unit: B, kB, MB, "
            "GB, TB (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024).",
            "examples": [524288000, "500MB", "1.5GiB"],
        }
    ),
]

# -- dates -----------------------------------------------------------------------------------

_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def parse_date(value: object) -> date:
    """A calendar date written `YYYY-MM-DD` (no time, no zone: dates are days in UTC)."""
    if isinstance(value, datetime):
        raise ValueError(f"got {value.isoformat()!r}, expected a date YYYY-MM-DD without a time")
    if isinstance(value, date):
        return value
    if not isinstance(value, str) or not _DATE.fullmatch(value.strip()):
        raise ValueError(f"got {value!r}, expected a date YYYY-MM-DD")
    try:
        return date.fromisoformat(value.strip())
    except ValueError as exc:
        raise ValueError(f"got {value!r}, expected a real date YYYY-MM-DD: {exc}") from None


#: A calendar day, `YYYY-MM-DD`.
PolicyDate = Annotated[
    date,
    PlainValidator(parse_date),
    PlainSerializer(date.isoformat, return_type=str),
    WithJsonSchema({"type": "string", "format": "date", "description": "A day, YYYY-MM-DD."}),
]

# -- severities --------------------------------------------------------------------------------

_SEVERITY_NAMES = tuple(str(s) for s in Severity)


def parse_severity(value: object) -> Severity:
    """One of `unknown < negligible < low < medium < high < critical` (any letter case).

    Scanner-specific spellings (`important`, `moderate`) are accepted from scanners, not in
    the policy file: the policy uses the six canonical names only.
    """
    if isinstance(value, Severity):
        return value
    if isinstance(value, str) and value.strip().lower() in _SEVERITY_NAMES:
        return Severity[value.strip().upper()]
    raise ValueError(f"got {value!r}, expected a severity; valid: {', '.join(_SEVERITY_NAMES)}")


#: A vulnerability severity, written in lower case in the policy file.
PolicySeverity = Annotated[
    Severity,
    PlainValidator(parse_severity),
    PlainSerializer(str, return_type=str),
    WithJsonSchema(
        {
            "type": "string",
            "enum": list(_SEVERITY_NAMES),
            "description": "Severity, lowest to highest: " + " < ".join(_SEVERITY_NAMES) + ".",
        }
    ),
]

# -- regular expressions -----------------------------------------------------------------------


def compile_regex(value: object) -> re.Pattern[str]:
    """Compile a Python regular expression once, at load time; the error quotes the pattern."""
    if isinstance(value, re.Pattern):
        return value
    if not isinstance(value, str):
        raise ValueError(f"got {value!r}, expected a regular expression (a string)")
    try:
        return re.compile(value)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {value!r}: {exc}") from None


def _pattern_text(value: re.Pattern[str]) -> str:
    return value.pattern


#: A Python regular expression, unanchored (`re.search`): write `^` and `$` to anchor it.
Regex = Annotated[
    re.Pattern[str],
    PlainValidator(compile_regex),
    PlainSerializer(_pattern_text, return_type=str),
    WithJsonSchema(
        {
            "type": "string",
            "format": "regex",
            "description": "A Python regular expression, searched anywhere in the text; "
            "anchor it with ^ and $.",
        }
    ),
]

# -- tag patterns ------------------------------------------------------------------------------


def is_semver_tag(tag: str) -> bool:
    """`1.2.3`, `v1.2.3`, `1.2.3-rc.1` are semver tags; `1.2`, `latest`, `v1` are not."""
    from semver import Version  # on first use: its import (with its CLI's argparse) is ~6 ms

    text = tag[1:] if tag[:1] in ("v", "V") else tag
    return Version.is_valid(text)


@dataclass(frozen=True)
class TagPattern:
    """`tags.pattern`: either the word `semver` or a regular expression every tag must match.

    `semver` accepts `MAJOR.MINOR.PATCH[-PRERELEASE]` with an optional leading `v`. A regex
    is searched in the tag (`re.search`), so anchor it (`^release-[0-9]+$`).
    """

    kind: Literal["semver", "regex"]
    regex: re.Pattern[str] | None = field(default=None, compare=False)
    text: str = "semver"

    @classmethod
    def parse(cls, value: object) -> TagPattern:
        if isinstance(value, TagPattern):
            return value
        if isinstance(value, str) and value == "semver":
            return cls(kind="semver")
        if not isinstance(value, str) or not value:
            raise ValueError(f"got {value!r}, expected 'semver' or a regular expression")
        return cls(kind="regex", regex=compile_regex(value), text=value)

    def matches(self, tag: str) -> bool:
        """Whether `tag` satisfies the pattern."""
        if self.regex is None:
            return is_semver_tag(tag)
        return self.regex.search(tag) is not None

    def __str__(self) -> str:
        return self.text

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: type[Any], handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return string_value_schema(cls.parse)

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {
            "type": "string",
            "minLength": 1,
            "description": "'semver' (MAJOR.MINOR.PATCH[-PRERELEASE], optional leading v) or a "
            "Python regular expression searched in the tag.",
            "examples": ["semver", "^release-[0-9]+$"],
        }
