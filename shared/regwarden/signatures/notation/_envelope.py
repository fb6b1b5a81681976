"""What a parsed Notation envelope holds, whatever its format, and the checks both share.

A JWS or COSE parser fills a `RawSignerInfo`; `finish()` applies the signature
specification's rules on signed attributes, parses the payload and the certificate chain,
and returns a `SignerInfo`. Anything that makes the envelope unusable raises NotationError.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Any, Literal, NamedTuple

from cryptography import x509

from ._algorithms import Algorithm
from ._errors import NotationError
from ._x509 import CERT_ERRORS, Cert, cert_of

MEDIA_TYPE_JWS = "application/jose+json"
MEDIA_TYPE_COSE = "application/cose"
PAYLOAD_CONTENT_TYPE = "application/vnd.cncf.notary.payload.v1+json"

SCHEME_X509 = "notary.x509"
SCHEME_SIGNING_AUTHORITY = "notary.x509.signingAuthority"
SIGNING_SCHEMES = (SCHEME_X509, SCHEME_SIGNING_AUTHORITY)

H_SIGNING_SCHEME = "io.cncf.notary.signingScheme"
H_SIGNING_TIME = "io.cncf.notary.signingTime"
H_AUTHENTIC_SIGNING_TIME = "io.cncf.notary.authenticSigningTime"
H_EXPIRY = "io.cncf.notary.expiry"
H_VERIFICATION_PLUGIN = "io.cncf.notary.verificationPlugin"
H_VERIFICATION_PLUGIN_MIN = "io.cncf.notary.verificationPluginMinVersion"
H_TIMESTAMP = "io.cncf.notary.timestampSignature"
H_SIGNING_AGENT = "io.cncf.notary.signingAgent"

_MAX_CHAIN = 10
_DIGEST = re.compile(r"(sha256:[0-9a-f]{64}|sha384:[0-9a-f]{96}|sha512:[0-9a-f]{128})")


class Target(NamedTuple):
    """The artifact a signature is about: OCI descriptor fields that must match."""

    media_type: str
    digest: str
    size: int


@dataclass
class RawSignerInfo:
    """Fields lifted out of an envelope before the shared rules are applied."""

    format: Literal["jws", "cose"]
    algorithm: Algorithm
    signed_message: bytes
    signature: bytes
    payload: bytes
    content_type: str
    signing_scheme: str
    signing_time: datetime | None
    authentic_signing_time: datetime | None
    expiry: datetime | None
    critical: list[str]
    extended: dict[str, Any]
    chain_der: list[bytes]
    timestamp_token: bytes | None
    signing_agent: str | None


class SignerInfo(NamedTuple):
    """A structurally valid Notation signature (nothing cryptographic checked yet).

    Immutable; a NamedTuple rather than a frozen dataclass because it is built on every
    verification and a frozen dataclass of this size costs several times more to build."""

    format: Literal["jws", "cose"]
    algorithm: Algorithm
    signed_message: bytes
    signature: bytes
    signing_scheme: str
    signing_time: datetime | None
    authentic_signing_time: datetime | None
    expiry: datetime | None
    chain_der: tuple[bytes, ...]
    chain: tuple[x509.Certificate, ...]
    certs: tuple[Cert, ...]  # the same chain, parsed for the checks
    timestamp_token: bytes | None
    signing_agent: str | None
    target: Target
    annotations: Mapping[str, str]
    extended: Mapping[str, Any] = MappingProxyType({})


_KNOWN_CRITICAL = {H_SIGNING_SCHEME, H_EXPIRY, H_AUTHENTIC_SIGNING_TIME}


def finish(raw: RawSignerInfo) -> SignerInfo:
    """Apply the signature specification's rules shared by JWS and COSE."""
    scheme = raw.signing_scheme
    if scheme not in SIGNING_SCHEMES:
        raise NotationError(
            f"unsupported signing scheme {scheme!r}; expected one of {', '.join(SIGNING_SCHEMES)}"
        )
    if scheme == SCHEME_X509:
        if raw.signing_time is None:
            raise NotationError(f"{H_SIGNING_TIME!r} is required for signing scheme {scheme}")
        if raw.authentic_signing_time is not None:
            raise NotationError(
                f"{H_AUTHENTIC_SIGNING_TIME!r} must not be present for signing scheme {scheme}"
            )
    else:
        if raw.authentic_signing_time is None:
            raise NotationError(
                f"{H_AUTHENTIC_SIGNING_TIME!r} is required for signing scheme {scheme}"
            )
        if raw.signing_time is not None:
            raise NotationError(
                f"{H_SIGNING_TIME!r} must not be present for signing scheme {scheme}"
            )
    _check_critical(raw)
    signed_at = raw.signing_time or raw.authentic_signing_time
    if raw.expiry is not None and signed_at is not None and raw.expiry <= signed_at:
        raise NotationError(
            f"expiry {raw.expiry.isoformat()} is not after the signing time {signed_at.isoformat()}"
        )
    if raw.content_type != PAYLOAD_CONTENT_TYPE:
        raise NotationError(
            f"unsupported payload content type {raw.content_type!r}; "
            f"expected {PAYLOAD_CONTENT_TYPE!r}"
        )
    if not raw.signature:
        raise NotationError("the envelope carries an empty signature")
    target, annotations = parse_payload(raw.payload)
    certs = parse_chain(raw.chain_der)
    return SignerInfo(
        format=raw.format,
        algorithm=raw.algorithm,
        signed_message=raw.signed_message,
        signature=raw.signature,
        signing_scheme=scheme,
        signing_time=raw.signing_time,
        authentic_signing_time=raw.authentic_signing_time,
        expiry=raw.expiry,
        chain_der=tuple(raw.chain_der),
        chain=tuple([c.cert for c in certs]),
        certs=certs,
        timestamp_token=raw.timestamp_token,
        signing_agent=raw.signing_agent,
        target=target,
        annotations=annotations,
        extended=dict(raw.extended),
    )


def _check_critical(raw: RawSignerInfo) -> None:
    crit = raw.critical
    if not crit:
        raise NotationError(
            f"the protected header has no 'crit' list; it must name {H_SIGNING_SCHEME!r}"
        )
    if len(set(crit)) != len(crit):
        raise NotationError(f"the 'crit' list names a header more than once: {crit}")
    required = {H_SIGNING_SCHEME}
    if raw.expiry is not None:
        required.add(H_EXPIRY)
    if raw.signing_scheme == SCHEME_SIGNING_AUTHORITY:
        required.add(H_AUTHENTIC_SIGNING_TIME)
    missing = sorted(required - set(crit))
    if missing:
        raise NotationError(f"these headers must be marked critical but are not: {missing}")
    for name in crit:
        if name in required:
            continue
        if name in _KNOWN_CRITICAL or name not in raw.extended:
            raise NotationError(f"header {name!r} is marked critical but is not present")
    if H_VERIFICATION_PLUGIN in raw.extended or H_VERIFICATION_PLUGIN_MIN in raw.extended:
        # Notation insists on the plugin whether or not the header is critical.
        plugin = raw.extended.get(H_VERIFICATION_PLUGIN)
        raise NotationError(
            f"the signature requires verification plugin {plugin!r} "
            f"({H_VERIFICATION_PLUGIN!r}); regwarden runs no Notation plugins, so it cannot "
            "verify it"
        )
    for name in crit:
        if name in required:
            continue
        raise NotationError(
            f"unknown critical header {name!r}; understood critical headers: "
            f"{', '.join(sorted(_KNOWN_CRITICAL))}"
        )


def parse_payload(payload: bytes) -> tuple[Target, dict[str, str]]:
    try:
        doc = _loads(payload, _STRICT_DECODER)
    except (ValueError, RecursionError) as exc:
        raise NotationError(f"the signed payload is not JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("targetArtifact"), dict):
        raise NotationError("the signed payload has no 'targetArtifact' object")
    desc: dict[str, Any] = doc["targetArtifact"]
    media_type = desc.get("mediaType")
    digest = desc.get("digest")
    size = desc.get("size")
    if not isinstance(media_type, str) or not media_type:
        raise NotationError("targetArtifact.mediaType is missing or not a string")
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise NotationError(f"targetArtifact.digest {digest!r} is not a valid digest")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise NotationError(f"targetArtifact.size {size!r} is not a non-negative integer")
    annotations = desc.get("annotations", {})
    if not isinstance(annotations, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()
    ):
        raise NotationError("targetArtifact.annotations must map strings to strings")
    return Target(media_type, digest, size), dict(annotations)


def parse_chain(chain_der: list[bytes]) -> tuple[Cert, ...]:
    if not chain_der:
        raise NotationError("the envelope carries no certificate chain")
    if len(chain_der) > _MAX_CHAIN:
        raise NotationError(f"certificate chain of {len(chain_der)} is longer than {_MAX_CHAIN}")
    out: list[Cert] = []
    for i, der in enumerate(chain_der):
        try:
            out.append(cert_of(der))
        except CERT_ERRORS as exc:
            raise NotationError(f"certificate #{i} of the chain is not DER X.509: {exc}") from None
    return tuple(out)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {key!r}")
            seen.add(key)
    return out


_DECODER = json.JSONDecoder()
_STRICT_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicates)


def _loads(data: bytes | str, decoder: json.JSONDecoder) -> Any:
    """json.loads with a decoder built once (json.loads builds one per call when given a
    hook): the same encoding detection and BOM rule."""
    if isinstance(data, str):
        if data.startswith("\ufeff"):
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", data, 0)
        return decoder.decode(data)
    # What json.detect_encoding answers for text that opens with "{" and no NUL: UTF-8.
    utf8 = data[:1] == b"{" and data[1:2] != b"\x00"
    return decoder.decode(
        data.decode("utf-8" if utf8 else json.detect_encoding(data), "surrogatepass")
    )


def json_object(data: bytes | str, what: str, *, strict_keys: bool = True) -> dict[str, Any]:
    """Parse a JSON object; NotationError otherwise. `strict_keys` rejects duplicate keys
    (used for signed content, where two readings of one document must be impossible)."""
    try:
        doc = _loads(data, _STRICT_DECODER if strict_keys else _DECODER)
    except (ValueError, RecursionError) as exc:
        raise NotationError(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise NotationError(f"{what} must be a JSON object, got {type(doc).__name__}")
    return doc
