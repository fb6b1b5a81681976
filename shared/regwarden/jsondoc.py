"""A small typed reader over decoded JSON that remembers where each value came from.

Every accessor either returns a value of the asked-for type or raises the reader's error
class with a message naming the path, what was found and what was expected:

    invalid Trivy report at Results[0].Vulnerabilities[3].Severity: got 7, expected a string

Shared by `regwarden.scanning` (reports) and `regwarden.intake` (event payloads). Nothing
here raises anything but the configured `IntakeError` subclass.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import NoReturn

from .errors import IntakeError
from .nesting import TooDeep, loads_json

__all__ = ["Node", "load_json", "show"]


class _Missing:
    """Marker for a key that is absent (distinct from JSON null)."""

    def __repr__(self) -> str:
        return "<missing>"


MISSING = _Missing()

_DATETIME_PREFIX = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")


def show(value: object) -> str:
    """Describe a JSON value briefly for an error message."""
    if value is MISSING:
        return "nothing (the key is missing)"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not allowed")


def load_json(data: object, *, label: str, error: type[IntakeError]) -> Node:
    """Decode `data` (bytes or str) as JSON; raise `error` naming `label` when it is not."""
    if isinstance(data, bytearray | memoryview):
        data = bytes(data)
    if not isinstance(data, bytes | str):
        raise error(f"invalid {label}: got {type(data).__name__}, expected JSON bytes")
    try:
        value = loads_json(data, parse_constant=_reject_constant)
    except TooDeep as exc:
        raise error(f"invalid {label}: {exc}") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, huge integers, NaN
        raise error(f"invalid {label}: not valid JSON ({exc})") from None
    return Node(value, "", label=label, error=error)


class Node:
    """One JSON value at a path. Accessors check the type and name the path on failure."""

    __slots__ = ("_error", "_label", "path", "value")

    def __init__(self, value: object, path: str, *, label: str, error: type[IntakeError]) -> None:
        self.value = value
        self.path = path
        self._label = label
        self._error = error

    # -- errors ----------------------------------------------------------------------------

    @property
    def where(self) -> str:
        return self.path or "the top level"

    def fail(self, expected: str, *, got: str | None = None) -> NoReturn:
        """Raise the reader's error: `invalid <label> at <path>: got X, expected Y`."""
        found = show(self.value) if got is None else got
        raise self._error(
            f"invalid {self._label} at {self.where}: got {found}, expected {expected}"
        )

    def error(self, message: str) -> IntakeError:
        """An error (to raise) about this node with a free-form message."""
        return self._error(f"invalid {self._label} at {self.where}: {message}")

    # -- navigation ------------------------------------------------------------------------

    @property
    def present(self) -> bool:
        """True unless the key is missing or the value is JSON null."""
        return self.value is not MISSING and self.value is not None

    def _child(self, value: object, step: str) -> Node:
        return Node(value, step, label=self._label, error=self._error)

    def mapping(self) -> Mapping[str, object]:
        if not isinstance(self.value, dict):
            self.fail("an object")
        return self.value

    def field(self, name: str) -> Node:
        """The member `name` of this object (MISSING when absent); fails if not an object."""
        obj = self.mapping()
        path = f"{self.path}.{name}" if self.path else name
        return self._child(obj.get(name, MISSING), path)

    def has(self, name: str) -> bool:
        return isinstance(self.value, dict) and name in self.value

    def items(self) -> list[tuple[str, Node]]:
        """Members of an object in document order."""
        return [(key, self.field(key)) for key in self.mapping()]

    def array(self) -> list[Node]:
        if not isinstance(self.value, list):
            self.fail("a list")
        return [self._child(v, f"{self.path}[{i}]") for i, v in enumerate(self.value)]

    def opt_array(self) -> list[Node]:
        """A list, or [] when missing or null."""
        return self.array() if self.present else []

    # -- scalars ---------------------------------------------------------------------------

    def text(self, *, nonempty: bool = True) -> str:
        if not isinstance(self.value, str):
            self.fail("a string")
        if nonempty and not self.value.strip():
            self.fail("a non-empty string")
        return self.value

    def opt_text(self) -> str | None:
        """A string, or None when missing, null or empty."""
        if not self.present:
            return None
        value = self.text(nonempty=False)
        return value if value.strip() else None

    def integer(self, *, minimum: int | None = None) -> int:
        if not isinstance(self.value, int) or isinstance(self.value, bool):
            self.fail("an integer")
        if minimum is not None and self.value < minimum:
            self.fail(f"an integer >= {minimum}")
        return self.value

    def number(self, *, low: float | None = None, high: float | None = None) -> float:
        value = self.value
        if not isinstance(value, int | float) or isinstance(value, bool):
            self.fail("a number")
        try:
            out = float(value)
        except OverflowError:
            self.fail("a number in range")
        if not math.isfinite(out):
            self.fail("a finite number")
        if (low is not None and out < low) or (high is not None and out > high):
            self.fail(f"a number between {low} and {high}")
        return out

    def opt_number(self, *, low: float | None = None, high: float | None = None) -> float | None:
        return self.number(low=low, high=high) if self.present else None

    def timestamp(self) -> datetime:
        """An RFC 3339 date-time string or epoch seconds, as an aware UTC datetime.

        A date-time without an offset is taken as UTC.
        """
        value = self.value
        if isinstance(value, int | float) and not isinstance(value, bool):
            try:
                return datetime.fromtimestamp(float(value), tz=UTC)
            except (OverflowError, OSError, ValueError):
                self.fail("epoch seconds in range")
        if not isinstance(value, str):
            self.fail("a date-time string or epoch seconds")
        if not _DATETIME_PREFIX.match(value):
            self.fail("an RFC 3339 date-time such as 2024-01-02T03:04:05Z")
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            self.fail("an RFC 3339 date-time such as 2024-01-02T03:04:05Z")
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        try:
            return parsed.astimezone(UTC)
        except (OverflowError, ValueError):
            self.fail("a date-time in range")

    def opt_timestamp(self) -> datetime | None:
        if not self.present or self.value == "":
            return None
        return self.timestamp()
