"""How the Table Storage ledger spells its keys, times and long texts in entities.

Keys: PartitionKey and RowKey may not hold `/ \\ # ?` nor control characters, and are
compared as strings. `part(text)` percent-encodes every character outside a small safe set
(`%`, `'`, `|` and the forbidden ones included), so a composite key joins its parts with
`|`, which no encoded part contains, and a prefix range (`ge 'p|'`, `lt 'p}'`) selects
exactly the rows whose key starts with one part. `'` is encoded too, so no key needs
quoting inside an OData filter (filters pass values as parameters anyway).

Times: stored as Edm.DateTime (the SDK's mapping of an aware datetime), which filters compare
in time order; read back as plain aware datetimes in UTC. Naive times are refused before
anything is written, as by every ledger.

Counts: a Python int is sent as Edm.Int32 (the SDK refuses one past 2**31); a count that
only grows (pulls of an image) is sent as Edm.Int64 (`_azure_table_client.int64`: the SDK is
imported there only), which reads back as an `EntityProperty`: `plain_int` reads either.

Texts: a string property holds at most 64 KiB (32 K UTF-16 code units); an entity at most
1 MiB. JSON that may be longer (an action's state holds a manifest, an alert its findings)
is split over `NAME`, `NAME_1`, … in chunks of `CHUNK` characters.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, MutableMapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

__all__ = [
    "CHUNK",
    "MAX_PART",
    "get_text",
    "part",
    "plain_int",
    "plain_time",
    "put_text",
    "short_part",
    "utc",
]

_SAFE = "-._~!$&()*+,;=:@"
MAX_PART = 400
"""Characters of a `short_part` kept as they are."""
CHUNK = 30_000
"""Characters of one string property (below the 32 K UTF-16 units Table Storage takes,
allowing for characters outside the BMP, which count twice)."""


def part(text: str) -> str:
    """One part of a key, encoded (see the module docstring)."""
    return quote(text, safe=_SAFE)


def short_part(text: str) -> str:
    """`part(text)`, or for one longer than `MAX_PART` characters `%%` and the SHA-256 of
    that encoding (which never holds `%%`: one key per text still), so a key of a few such
    parts stays within the 1 KiB a PartitionKey or RowKey may hold. For parts from the
    outside of unbounded length (a principal's name); the entity keeps the text itself."""
    encoded = part(text)
    if len(encoded) <= MAX_PART:
        return encoded
    return "%%" + hashlib.sha256(encoded.encode()).hexdigest()


def utc(when: datetime) -> datetime:
    """`when` in UTC; a naive time is refused, as by every ledger."""
    if when.tzinfo is None:
        raise ValueError("ledger times must be timezone-aware")
    return when.astimezone(UTC)


def plain_time(value: Any) -> datetime:
    """A datetime read from an entity (the SDK's `TablesEntityDatetime`) as a plain aware
    datetime in UTC, so records compare equal to what was written."""
    if not isinstance(value, datetime):
        raise TypeError(f"not a time: {value!r}")
    v = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    v = v.astimezone(UTC)
    return datetime(v.year, v.month, v.day, v.hour, v.minute, v.second, v.microsecond, tzinfo=UTC)


def put_text(entity: MutableMapping[str, Any], name: str, text: str) -> None:
    """Store `text` under `name` (split into chunks past `CHUNK` characters)."""
    chunks = [text[i : i + CHUNK] for i in range(0, len(text), CHUNK)] or [""]
    entity[name] = chunks[0]
    for n, chunk in enumerate(chunks[1:], start=1):
        entity[f"{name}_{n}"] = chunk


def get_text(entity: Mapping[str, Any], name: str) -> str:
    """The text `put_text` stored under `name`."""
    out = [str(entity[name])]
    n = 1
    while f"{name}_{n}" in entity:
        out.append(str(entity[f"{name}_{n}"]))
        n += 1
    return "".join(out)


def plain_int(value: Any) -> int:
    """An integer property as read (Int32: an int; Int64: an `EntityProperty`) or as
    written by `_azure_table_client.int64`."""
    return int(getattr(value, "value", value))
