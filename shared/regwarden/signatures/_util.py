"""Small strict helpers shared by the signature modules: base64, JSON, digests."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from ._errors import SignatureFormatError

_SHA256_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_DIGEST = re.compile(r"(sha256:[0-9a-f]{64}|sha384:[0-9a-f]{96}|sha512:[0-9a-f]{128})")
_HASHERS = {"sha256": hashlib.sha256, "sha384": hashlib.sha384, "sha512": hashlib.sha512}


def b64decode(text: object, what: str) -> bytes:
    """Decode standard base64 (padding optional, URL-safe alphabet tolerated) strictly."""
    if not isinstance(text, str):
        raise SignatureFormatError(f"{what}: got {type(text).__name__}, expected a base64 string")
    data = text.strip()
    if "-" in data or "_" in data:
        data = data.replace("-", "+").replace("_", "/")
    data += "=" * (-len(data) % 4)
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureFormatError(f"{what}: got invalid base64 {text[:40]!r}") from None


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def load_json_object(data: bytes | str, what: str) -> dict[str, Any]:
    """Parse JSON that must be an object; any failure is a SignatureFormatError."""
    try:
        value = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise SignatureFormatError(f"{what}: invalid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise SignatureFormatError(f"{what}: got JSON {type(value).__name__}, expected an object")
    return value


def obj(
    parent: Mapping[str, Any], key: str, what: str, *, alt: str | None = None
) -> dict[str, Any]:
    """The object at `key` (or its snake_case alias `alt`); required."""
    value = parent.get(key, parent.get(alt) if alt else None)
    if not isinstance(value, dict):
        raise SignatureFormatError(f"{what}: field {key!r} got {_kind(value)}, expected an object")
    return value


def opt_obj(
    parent: Mapping[str, Any], key: str, what: str, *, alt: str | None = None
) -> dict[str, Any] | None:
    value = parent.get(key, parent.get(alt) if alt else None)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise SignatureFormatError(f"{what}: field {key!r} got {_kind(value)}, expected an object")
    return value


def string(parent: Mapping[str, Any], key: str, what: str, *, alt: str | None = None) -> str:
    value = parent.get(key, parent.get(alt) if alt else None)
    if not isinstance(value, str):
        raise SignatureFormatError(f"{what}: field {key!r} got {_kind(value)}, expected a string")
    return value


def array(parent: Mapping[str, Any], key: str, what: str, *, alt: str | None = None) -> list[Any]:
    value = parent.get(key, parent.get(alt) if alt else None)
    if value is None:
        return []
    if not isinstance(value, list):
        raise SignatureFormatError(f"{what}: field {key!r} got {_kind(value)}, expected a list")
    return value


def integer(parent: Mapping[str, Any], key: str, what: str, *, alt: str | None = None) -> int:
    """An int64 field; protobuf JSON writes these as decimal strings, so accept both."""
    value = parent.get(key, parent.get(alt) if alt else None)
    if isinstance(value, bool):
        raise SignatureFormatError(f"{what}: field {key!r} got a boolean, expected an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?[0-9]{1,19}", value):
        return int(value)
    raise SignatureFormatError(f"{what}: field {key!r} got {_kind(value)}, expected an integer")


def _kind(value: object) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, str):
        return f"string {value[:40]!r}"
    return type(value).__name__


def check_digest(value: str, what: str) -> str:
    if not isinstance(value, str) or not _DIGEST.fullmatch(value):
        raise SignatureFormatError(
            f"{what}: got {value!r}, expected a digest like sha256:<64 lowercase hex>"
        )
    return value


def is_sha256_digest(value: object) -> bool:
    return isinstance(value, str) and _SHA256_DIGEST.fullmatch(value) is not None


def digest_of(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{_HASHERS[algorithm](data).hexdigest()}"


def matches_digest(data: bytes, digest: str) -> bool:
    """True when `data` hashes to `digest` (sha256/384/512)."""
    algo, _, hexpart = digest.partition(":")
    hasher = _HASHERS.get(algo)
    return hasher is not None and hasher(data).hexdigest() == hexpart


def go_json(value: Any) -> bytes:
    """Serialise like Go's encoding/json: compact, dict order kept, HTML characters escaped."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    for char, escaped in (
        ("&", "\\u0026"),
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, escaped)
    return text.encode("utf-8")


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no whitespace: the form Rekor signs its entry timestamps over."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
