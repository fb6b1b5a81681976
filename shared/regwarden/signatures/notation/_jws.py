"""JWS JSON flattened serialization of a Notation signature (`application/jose+json`).

    {"payload": b64url, "protected": b64url, "header": {"x5c": [b64 DER, ...],
     "io.cncf.notary.timestampSignature": b64, "io.cncf.notary.signingAgent": str},
     "signature": b64url}

The signing input is ASCII(protected "." payload), exactly as the envelope carries them.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from datetime import datetime
from typing import Any

from . import _algorithms
from ._envelope import (
    H_AUTHENTIC_SIGNING_TIME,
    H_EXPIRY,
    H_SIGNING_AGENT,
    H_SIGNING_SCHEME,
    H_SIGNING_TIME,
    H_TIMESTAMP,
    RawSignerInfo,
    SignerInfo,
    finish,
    json_object,
)
from ._errors import NotationError

_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})"
)
_STANDARD_HEADERS = {"alg", "cty", "crit"}
_NOTARY_HEADERS = {H_SIGNING_SCHEME, H_SIGNING_TIME, H_AUTHENTIC_SIGNING_TIME, H_EXPIRY}
_KNOWN_HEADERS = frozenset(_STANDARD_HEADERS | _NOTARY_HEADERS)
_TIMESTAMP_KEY = H_TIMESTAMP.lower()
_SIGNING_AGENT_KEY = H_SIGNING_AGENT.lower()
_B64URL_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


_URL_TO_STD = bytes.maketrans(b"-_", b"+/")


def b64url_decode(text: object, what: str) -> bytes:
    """Unpadded base64url (RFC 7515); anything else is refused, not repaired."""
    if not isinstance(text, str) or len(text) % 4 == 1 or "=" in text or "+" in text or "/" in text:
        raise NotationError(f"{what} is not unpadded base64url text")
    try:
        raw = text.encode("ascii")
        if raw.translate(None, _B64URL_ALPHABET):  # what is left is not base64url
            raise binascii.Error("Non-base64 digit found")
        return binascii.a2b_base64(raw.translate(_URL_TO_STD) + b"=" * (-len(raw) % 4))
    except (binascii.Error, ValueError) as exc:  # UnicodeEncodeError is a ValueError
        raise NotationError(f"{what} is not valid base64url: {exc}") from None


def b64std_decode(text: object, what: str) -> bytes:
    """Padded standard base64, as Go encodes []byte in JSON."""
    if not isinstance(text, str) or len(text) % 4:
        raise NotationError(f"{what} is not padded standard base64 text")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise NotationError(f"{what} is not padded standard base64 text: {exc}") from None


@functools.lru_cache(maxsize=512)
def _certificate_der(text: str, index: int) -> bytes:
    """x5c[index] decoded. Cached: a signer's chain recurs verbatim in its signatures, and
    the one bytes object returned keeps its hash for the certificate cache and the trust
    store lookups."""
    return b64std_decode(text, f"x5c[{index}]")


def parse_time(value: object, name: str) -> datetime:
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        raise NotationError(f"header {name!r} must be an RFC 3339 time with a zone, got {value!r}")
    text = value.upper().replace("Z", "+00:00")
    main, _, rest = text.partition(".")
    if rest:  # Python takes at most 6 fractional digits
        digits = re.match(r"\d+", rest)
        assert digits is not None
        text = f"{main}.{digits.group()[:6].ljust(6, '0')}{rest[digits.end() :]}"
    try:
        return datetime.fromisoformat(text)
    except ValueError as exc:
        raise NotationError(f"header {name!r} is not a valid time: {exc}") from None


def parse(data: bytes) -> SignerInfo:
    """Parse and structurally validate a JWS envelope; NotationError if unusable."""
    env = json_object(data, "the JWS envelope", strict_keys=False)
    if "signatures" in env:
        raise NotationError("JWS general serialization is not supported; expected flattened JSON")
    for key in ("payload", "protected", "signature"):
        if not isinstance(env.get(key), str):
            raise NotationError(f"the JWS envelope has no {key!r} string")
    protected_b64: str = env["protected"]
    payload_b64: str = env["payload"]
    protected_raw = b64url_decode(protected_b64, "the JWS protected header")
    payload = b64url_decode(payload_b64, "the JWS payload")
    signature = b64url_decode(env["signature"], "the JWS signature")

    header = env.get("header")
    if not isinstance(header, dict):
        raise NotationError("the JWS envelope has no unprotected 'header' object")
    # Notation (Go) matches these names case-insensitively; so do we.
    unprotected = {k.lower(): v for k, v in header.items()}
    if len(unprotected) != len(header):
        raise NotationError("the JWS unprotected header repeats a name (ignoring case)")
    x5c = unprotected.get("x5c")
    if not isinstance(x5c, list) or not x5c:
        raise NotationError("the JWS unprotected header has no 'x5c' certificate chain")
    chain_der = [
        _certificate_der(c, i) if isinstance(c, str) else b64std_decode(c, f"x5c[{i}]")
        for i, c in enumerate(x5c)
    ]
    token_b64 = unprotected.get(_TIMESTAMP_KEY)
    token = None if token_b64 is None else b64std_decode(token_b64, H_TIMESTAMP)
    agent = unprotected.get(_SIGNING_AGENT_KEY)
    if agent is not None and not isinstance(agent, str):
        raise NotationError(f"{H_SIGNING_AGENT!r} must be a string")

    protected = json_object(protected_raw, "the JWS protected header")
    alg = _algorithms.from_jws(protected.get("alg"))
    cty = protected.get("cty")
    if not isinstance(cty, str):
        raise NotationError("the JWS protected header has no 'cty' string")
    crit = protected.get("crit", [])
    if not isinstance(crit, list) or not all(isinstance(c, str) for c in crit):
        raise NotationError("the JWS 'crit' header must be a list of strings")
    scheme = protected.get(H_SIGNING_SCHEME)
    if not isinstance(scheme, str):
        raise NotationError(f"the JWS protected header has no {H_SIGNING_SCHEME!r} string")
    times: dict[str, datetime | None] = {}
    for name in (H_SIGNING_TIME, H_AUTHENTIC_SIGNING_TIME, H_EXPIRY):
        value = protected.get(name)
        times[name] = None if value is None else parse_time(value, name)
    extended: dict[str, Any] = {k: v for k, v in protected.items() if k not in _KNOWN_HEADERS}
    return finish(
        RawSignerInfo(
            format="jws",
            algorithm=alg,
            signed_message=f"{protected_b64}.{payload_b64}".encode("ascii"),
            signature=signature,
            payload=payload,
            content_type=cty,
            signing_scheme=scheme,
            signing_time=times[H_SIGNING_TIME],
            authentic_signing_time=times[H_AUTHENTIC_SIGNING_TIME],
            expiry=times[H_EXPIRY],
            critical=list(crit),
            extended=extended,
            chain_der=chain_der,
            timestamp_token=token,
            signing_agent=agent,
        )
    )
