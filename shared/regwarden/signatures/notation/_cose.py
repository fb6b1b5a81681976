"""COSE_Sign1_Tagged Notation signatures (`application/cose`), decoded with cbor2.

    18([protected: bstr .cbor {1: alg, 2: crit, 3: content type,
                               "io.cncf.notary.signingScheme": tstr,
                               "io.cncf.notary.signingTime": 1(time), ...},
        unprotected: {33: [x5chain bstr...], "io.cncf.notary.signingAgent": tstr,
                      "io.cncf.notary.timestampSignature": bstr},
        payload: bstr, signature: bstr])

The signed bytes are the Sig_structure ["Signature1", protected, h'', payload]. Every CBOR
tag is decoded to a `Tag` (no semantic decoding), so a time is accepted only as tag 1.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import cbor2

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
)
from ._errors import NotationError

COSE_SIGN1_TAG = 18
LABEL_ALG = 1
LABEL_CRIT = 2
LABEL_CONTENT_TYPE = 3
LABEL_X5CHAIN = 33
_SYSTEM_LABELS: set[object] = {
    LABEL_ALG,
    LABEL_CRIT,
    LABEL_CONTENT_TYPE,
    H_SIGNING_SCHEME,
    H_SIGNING_TIME,
    H_AUTHENTIC_SIGNING_TIME,
    H_EXPIRY,
}
_MAX_DEPTH = 16


class Tag:
    """A CBOR tag kept as it was on the wire."""

    __slots__ = ("tag", "value")

    def __init__(self, tag: int, value: object) -> None:
        self.tag = tag
        self.value = value

    def __repr__(self) -> str:
        return f"Tag({self.tag}, {self.value!r})"


class _EveryTag(Mapping[int, Any]):
    """A semantic-decoder table that claims every tag number and keeps it raw."""

    def __getitem__(self, tag: int) -> Any:
        return lambda value, immutable: Tag(tag, value)

    def __contains__(self, tag: object) -> bool:
        return True

    def __iter__(self) -> Iterator[int]:
        return iter(())

    def __len__(self) -> int:
        return 0


_RAW_TAGS = _EveryTag()


def cbor_decode(data: bytes, what: str) -> Any:
    """Decode one CBOR item: definite lengths, no duplicate keys, tags kept raw."""
    try:
        return cbor2.loads(
            data,
            semantic_decoders=_RAW_TAGS,
            tag_hook=lambda tag, immutable: Tag(tag.tag, tag.value),
            allow_indefinite=False,
            allow_duplicate_keys=False,
            max_depth=_MAX_DEPTH,
        )
    except Exception as exc:  # cbor2 wraps most failures, but not all (e.g. MemoryError-free)
        raise NotationError(f"{what} is not valid CBOR: {exc}") from None


def sig_structure(protected: bytes, payload: bytes) -> bytes:
    return cbor2.dumps(["Signature1", protected, b"", payload])


def _time(value: object, name: str) -> datetime:
    if not isinstance(value, Tag) or value.tag != 1:
        raise NotationError(f"COSE header {name!r} must be a tag 1 epoch time, got {value!r}")
    epoch = value.value
    if isinstance(epoch, bool) or not isinstance(epoch, int | float):
        raise NotationError(f"COSE header {name!r} tag 1 must hold a number, got {epoch!r}")
    try:
        return datetime.fromtimestamp(epoch, tz=UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise NotationError(f"COSE header {name!r} is out of range: {exc}") from None


def parse(data: bytes) -> SignerInfo:
    """Parse and structurally validate a COSE_Sign1 envelope; NotationError if unusable."""
    top = cbor_decode(data, "the COSE envelope")
    if not isinstance(top, Tag) or top.tag != COSE_SIGN1_TAG:
        raise NotationError("the COSE envelope is not a COSE_Sign1_Tagged (tag 18) message")
    msg = top.value
    if not isinstance(msg, list | tuple) or len(msg) != 4:
        raise NotationError("COSE_Sign1 must be an array of 4 items")
    protected_raw, unprotected, payload, signature = msg
    if not isinstance(protected_raw, bytes) or not protected_raw:
        raise NotationError("COSE_Sign1 protected header must be a non-empty byte string")
    if not isinstance(unprotected, dict):
        raise NotationError("COSE_Sign1 unprotected header must be a map")
    if not isinstance(payload, bytes):
        raise NotationError("COSE_Sign1 payload must be an attached byte string")
    if not isinstance(signature, bytes):
        raise NotationError("COSE_Sign1 signature must be a byte string")

    protected = cbor_decode(protected_raw, "the COSE protected header")
    if not isinstance(protected, dict):
        raise NotationError("the COSE protected header must be a map")
    if any(isinstance(k, bool) for k in protected):
        raise NotationError("COSE protected header labels must be integers or text, not booleans")
    alg = _algorithms.from_cose(protected.get(LABEL_ALG))
    crit = protected.get(LABEL_CRIT, [])
    if not isinstance(crit, list | tuple):
        raise NotationError("the COSE 'crit' header must be an array of labels")
    crit_names: list[str] = []
    for label in crit:
        if isinstance(label, str):
            crit_names.append(label)
        elif isinstance(label, int) and not isinstance(label, bool):
            if label not in protected:
                raise NotationError(
                    f"COSE header label {label} is marked critical but is not present"
                )
            if label not in (LABEL_ALG, LABEL_CONTENT_TYPE):
                raise NotationError(f"unknown critical COSE header label {label}")
        else:
            raise NotationError(f"COSE 'crit' entry {label!r} is neither an integer nor text")
    cty = protected.get(LABEL_CONTENT_TYPE)
    if not isinstance(cty, str):
        raise NotationError("the COSE protected header has no content type (label 3) string")
    scheme = protected.get(H_SIGNING_SCHEME)
    if not isinstance(scheme, str):
        raise NotationError(f"the COSE protected header has no {H_SIGNING_SCHEME!r} string")
    times: dict[str, datetime | None] = {}
    for name in (H_SIGNING_TIME, H_AUTHENTIC_SIGNING_TIME, H_EXPIRY):
        times[name] = _time(protected[name], name) if name in protected else None
    extended: dict[str, Any] = {}
    for key, value in protected.items():
        if key in _SYSTEM_LABELS:
            continue
        if isinstance(key, int):
            continue  # other COSE labels are informational unless marked critical (above)
        if not isinstance(key, str):
            raise NotationError(f"COSE protected header label {key!r} is neither int nor text")
        extended[key] = value

    chain = unprotected.get(LABEL_X5CHAIN)
    if not isinstance(chain, list | tuple) or not chain:
        raise NotationError("the COSE unprotected header has no x5chain (label 33) array")
    if not all(isinstance(c, bytes) for c in chain):
        raise NotationError("every x5chain entry must be a byte string")
    token = unprotected.get(H_TIMESTAMP)
    if token is not None and not isinstance(token, bytes):
        raise NotationError(f"{H_TIMESTAMP!r} must be a byte string")
    agent = unprotected.get(H_SIGNING_AGENT)
    if agent is not None and not isinstance(agent, str):
        raise NotationError(f"{H_SIGNING_AGENT!r} must be a text string")

    return finish(
        RawSignerInfo(
            format="cose",
            algorithm=alg,
            signed_message=sig_structure(protected_raw, payload),
            signature=signature,
            payload=payload,
            content_type=cty,
            signing_scheme=scheme,
            signing_time=times[H_SIGNING_TIME],
            authentic_signing_time=times[H_AUTHENTIC_SIGNING_TIME],
            expiry=times[H_EXPIRY],
            critical=crit_names,
            extended=extended,
            chain_der=list(chain),
            timestamp_token=token,
            signing_agent=agent,
        )
    )
