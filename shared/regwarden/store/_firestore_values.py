"""Firestore's representation of the ledger's values and keys: document ids, and
`google.firestore.v1.Value` messages (the protobuf classes the GAPIC client sends).

Document ids: a Firestore id may not contain `/`, may not be `.` or `..`, may not match
`__.*__` and may not exceed 1500 bytes. `doc_id(*parts)` percent-encodes each part (`/`,
`%`, `#`, spaces and anything outside a readable ASCII set), joins the parts with `#`
(which the encoding escapes, so two different part lists never meet) and escapes `.` and
`_` of the rare id Firestore reserves; an id still too long becomes `%%` + its SHA-256
(an encoding never yields `%%`). Ids stay readable in the console: `sha256:ab…` is kept.

Values: None → nullValue, bool → booleanValue, int → integerValue (64-bit), float →
doubleValue, str → stringValue, bytes → bytesValue, datetime (timezone-aware) →
timestampValue (microseconds, Firestore's precision), list / tuple → arrayValue, mapping →
mapValue; read back the same way (a tuple comes back a list). The protobuf modules load on
first use only.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote

__all__ = [
    "EPOCH",
    "decode",
    "doc_id",
    "encode",
    "from_micros",
    "micros",
    "protos",
    "timestamp",
    "utc",
]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SAFE = "-._~:@!$&'()*+,;="
"""Left as they are in an id besides letters and digits: readable and harmless."""
_MAX_ID_BYTES = 1500
_INT64 = (-(2**63), 2**63 - 1)


def utc(when: datetime) -> datetime:
    """`when` in UTC; a naive time is refused, as by every ledger."""
    if when.tzinfo is None:
        raise ValueError("ledger times must be timezone-aware")
    return when.astimezone(UTC)


def doc_id(*parts: str) -> str:
    """The document id of a key made of `parts` (see the module docstring)."""
    text = "#".join(quote(part, safe=_SAFE) for part in parts)
    if text in (".", "..") or (len(text) >= 4 and text.startswith("__") and text.endswith("__")):
        text = text.replace(".", "%2E").replace("_", "%5F")  # never produced by quote()
    if not text or len(text.encode()) > _MAX_ID_BYTES:
        text = "%%" + hashlib.sha256(text.encode()).hexdigest()  # of the encoding: injective
    return text


@functools.cache
def protos() -> SimpleNamespace:
    """The protobuf message classes of Firestore's v1 API (imported on first use)."""
    from google.cloud.firestore_v1.types import common, document, firestore, query, write

    value = document.Value.pb()
    return SimpleNamespace(
        Value=value,
        MapValue=document.MapValue.pb(),
        ArrayValue=document.ArrayValue.pb(),
        Document=document.Document.pb(),
        Write=write.Write.pb(),
        Precondition=common.Precondition.pb(),
        DocumentMask=common.DocumentMask.pb(),
        CommitRequest=firestore.CommitRequest.pb(),
        BatchGetDocumentsRequest=firestore.BatchGetDocumentsRequest.pb(),
        RunQueryRequest=firestore.RunQueryRequest.pb(),
        StructuredQuery=query.StructuredQuery.pb(),
        Timestamp=type(value().timestamp_value),  # google.protobuf.Timestamp
    )


def timestamp(when: datetime) -> Any:
    """A `google.protobuf.Timestamp` of an aware datetime (exact, to the microsecond)."""
    delta = utc(when) - EPOCH
    return protos().Timestamp(
        seconds=delta.days * 86400 + delta.seconds, nanos=delta.microseconds * 1000
    )


def micros(when: datetime) -> int:
    """An aware datetime as whole microseconds since the epoch: a time kept as an integer,
    where a transform must compare it (`maximum` takes numbers only, not timestamps)."""
    return (utc(when) - EPOCH) // timedelta(microseconds=1)


def from_micros(value: int) -> datetime:
    """The aware datetime (UTC) of `micros`'s integer."""
    return EPOCH + timedelta(microseconds=value)


def _time(ts: Any) -> datetime:
    return EPOCH + timedelta(seconds=ts.seconds, microseconds=ts.nanos // 1000)


def encode(value: Any) -> Any:
    """A Python value as a Firestore `Value` message."""
    p = protos()
    if value is None:
        return p.Value(null_value=0)
    if isinstance(value, bool):  # before int: a bool is an int
        return p.Value(boolean_value=value)
    if isinstance(value, int):
        if not _INT64[0] <= value <= _INT64[1]:
            raise ValueError(f"{value} does not fit Firestore's 64-bit integers")
        return p.Value(integer_value=value)
    if isinstance(value, float):
        return p.Value(double_value=value)
    if isinstance(value, str):
        return p.Value(string_value=value)
    if isinstance(value, bytes):
        return p.Value(bytes_value=value)
    if isinstance(value, datetime):
        return p.Value(timestamp_value=timestamp(value))
    if isinstance(value, list | tuple):
        return p.Value(array_value=p.ArrayValue(values=[encode(v) for v in value]))
    if isinstance(value, Mapping):
        fields = {str(k): encode(v) for k, v in value.items()}
        return p.Value(map_value=p.MapValue(fields=fields))
    raise TypeError(f"cannot store a {type(value).__name__} in Firestore")


def decode(value: Any) -> Any:
    """A Firestore `Value` message as a Python value (the inverse of `encode`)."""
    kind = value.WhichOneof("value_type")
    if kind == "null_value" or kind is None:
        return None
    if kind == "boolean_value":
        return bool(value.boolean_value)
    if kind == "integer_value":
        return int(value.integer_value)
    if kind == "double_value":
        return float(value.double_value)
    if kind == "string_value":
        return str(value.string_value)
    if kind == "timestamp_value":
        return _time(value.timestamp_value)
    if kind == "array_value":
        return [decode(v) for v in value.array_value.values]
    if kind == "map_value":
        return {k: decode(v) for k, v in value.map_value.fields.items()}
    if kind == "bytes_value":
        return bytes(value.bytes_value)
    raise ValueError(f"the ledger stores no Firestore {kind}")
