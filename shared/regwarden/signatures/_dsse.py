"""DSSE envelopes and in-toto statements (cosign attestations and v3 image bundles)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._errors import SignatureFormatError
from ._model import IN_TOTO_PAYLOAD_TYPE
from ._util import array, b64decode, load_json_object, string

STATEMENT_TYPES = frozenset(
    {"https://in-toto.io/Statement/v1", "https://in-toto.io/Statement/v0.1"}
)
_MAX_SIGNATURES = 16


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE pre-authentication encoding: `DSSEv1 SP len(type) SP type SP len(body) SP body`."""
    type_bytes = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(type_bytes), type_bytes, len(payload), payload)


@dataclass(frozen=True, slots=True)
class Envelope:
    payload_type: str
    payload: bytes
    signatures: tuple[bytes, ...]

    @property
    def payload_digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.payload).hexdigest()


def parse_envelope(doc: Mapping[str, Any], what: str) -> Envelope:
    payload = b64decode(string(doc, "payload", what), f"{what}.payload")
    payload_type = string(doc, "payloadType", what, alt="payload_type")
    sigs = array(doc, "signatures", what)
    if not sigs:
        raise SignatureFormatError(f"{what}: no signatures")
    if len(sigs) > _MAX_SIGNATURES:
        raise SignatureFormatError(f"{what}: {len(sigs)} signatures, at most {_MAX_SIGNATURES}")
    out = []
    for i, sig in enumerate(sigs):
        if not isinstance(sig, dict):
            raise SignatureFormatError(f"{what}.signatures[{i}]: expected an object")
        out.append(b64decode(string(sig, "sig", what), f"{what}.signatures[{i}].sig"))
    return Envelope(payload_type=payload_type, payload=payload, signatures=tuple(out))


def parse_envelope_json(data: bytes, what: str) -> Envelope:
    return parse_envelope(load_json_object(data, what), what)


def check_statement(
    envelope: Envelope, *, image_digest: str, predicate_types: Sequence[str] | frozenset[str]
) -> tuple[dict[str, Any] | None, str]:
    """The statement if it is about `image_digest` with an accepted predicate, else a reason."""
    if envelope.payload_type != IN_TOTO_PAYLOAD_TYPE:
        return (
            None,
            f"DSSE payload type got {envelope.payload_type!r}, expected {IN_TOTO_PAYLOAD_TYPE!r}",
        )
    try:
        statement = load_json_object(envelope.payload, "in-toto statement")
    except SignatureFormatError as exc:
        return None, str(exc)
    stype = statement.get("_type")
    if stype not in STATEMENT_TYPES:
        return None, f"statement _type got {stype!r}, expected one of {sorted(STATEMENT_TYPES)}"
    predicate_type = statement.get("predicateType")
    if predicate_type not in predicate_types:
        return None, (
            f"predicate type got {predicate_type!r}, expected one of {sorted(predicate_types)}"
        )
    algo, _, hexpart = image_digest.partition(":")
    subjects = statement.get("subject")
    if not isinstance(subjects, list):
        return None, "statement has no subject list"
    for subject in subjects:
        if isinstance(subject, dict):
            digests = subject.get("digest")
            if isinstance(digests, dict) and digests.get(algo) == hexpart:
                return statement, ""
    return None, f"statement subjects do not include {image_digest}"


def predicate_type_hint(envelope_payload: bytes) -> str | None:
    """The statement's predicateType, unauthenticated: only for routing, never for trust."""
    try:
        statement = load_json_object(envelope_payload, "in-toto statement")
    except SignatureFormatError:
        return None
    value = statement.get("predicateType")
    return value if isinstance(value, str) else None
