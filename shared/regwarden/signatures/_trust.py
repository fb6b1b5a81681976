"""Sigstore trust material: the `trusted_root.json` format (and bare Rekor keys).

Only what regwarden verifies itself is modelled: transparency-log keys (Rekor SETs and
checkpoints) and timestamp authorities (RFC 3161). Certificate authorities and CT logs are
kept as raw JSON and handed to sigstore-python for keyless verification.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography import x509

from ._errors import SignatureFormatError
from ._util import array, b64decode, load_json_object, obj, opt_obj, string
from .keys import PublicKey, public_key_from_der

_WHAT = "trusted root"
_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)")


def parse_rfc3339(text: str, what: str) -> datetime:
    m = _RFC3339.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        raise SignatureFormatError(f"{what}: got {text!r}, expected an RFC 3339 time")
    base, frac, zone = m.groups()
    micro = (frac or "0")[:6].ljust(6, "0")
    zone = "+00:00" if zone == "Z" else zone
    try:
        return datetime.fromisoformat(f"{base}.{micro}{zone}").astimezone(UTC)
    except ValueError:
        raise SignatureFormatError(f"{what}: got {text!r}, expected an RFC 3339 time") from None


@dataclass(frozen=True, slots=True)
class Validity:
    start: datetime | None = None
    end: datetime | None = None

    def contains(self, when: datetime) -> bool:
        return (self.start is None or self.start <= when) and (self.end is None or when <= self.end)


def _validity(doc: dict[str, Any] | None, what: str) -> Validity:
    if doc is None:
        return Validity()
    start = doc.get("start")
    end = doc.get("end")
    return Validity(
        start=parse_rfc3339(start, f"{what}.start") if start is not None else None,
        end=parse_rfc3339(end, f"{what}.end") if end is not None else None,
    )


@dataclass(frozen=True, slots=True)
class TransparencyLog:
    """A Rekor (or CT) log: its id is sha256 of the key's SPKI DER."""

    log_id: bytes
    key: PublicKey
    base_url: str = ""
    validity: Validity = Validity()

    @property
    def log_id_hex(self) -> str:
        return self.log_id.hex()

    @classmethod
    def from_key(cls, key: PublicKey, *, base_url: str = "") -> TransparencyLog:
        return cls(log_id=hashlib.sha256(key.der).digest(), key=key, base_url=base_url)


@dataclass(frozen=True, slots=True)
class TimestampAuthority:
    """An RFC 3161 TSA: certificate chain leaf first, root last."""

    chain: tuple[x509.Certificate, ...]
    validity: Validity = Validity()
    uri: str = ""


@dataclass(frozen=True, slots=True)
class TrustedRoot:
    """Parsed `trusted_root.json` (`application/vnd.dev.sigstore.trustedroot+json`)."""

    tlogs: tuple[TransparencyLog, ...] = ()
    timestamp_authorities: tuple[TimestampAuthority, ...] = ()
    raw: bytes = b""
    """The original JSON, passed unchanged to sigstore-python for keyless checks."""

    @classmethod
    def from_json(cls, data: bytes | str) -> TrustedRoot:
        raw = data.encode() if isinstance(data, str) else data
        doc = load_json_object(raw, _WHAT)
        tlogs = tuple(
            _tlog(entry, f"{_WHAT}.tlogs[{i}]")
            for i, entry in enumerate(array(doc, "tlogs", _WHAT))
        )
        tsas = tuple(
            _tsa(entry, f"{_WHAT}.timestampAuthorities[{i}]")
            for i, entry in enumerate(
                array(doc, "timestampAuthorities", _WHAT, alt="timestamp_authorities")
            )
        )
        return cls(tlogs=tlogs, timestamp_authorities=tsas, raw=raw)

    @classmethod
    def from_rekor_keys(cls, *keys: PublicKey) -> TrustedRoot:
        """A root that only knows Rekor keys (`--rekor-public-key` style, legacy SETs)."""
        return cls(tlogs=tuple(TransparencyLog.from_key(k) for k in keys))

    def tlog(self, log_id: bytes) -> TransparencyLog | None:
        for log in self.tlogs:
            if log.log_id == log_id:
                return log
        return None

    @property
    def has_keyless_material(self) -> bool:
        return bool(self.raw)


def _tlog(entry: object, what: str) -> TransparencyLog:
    if not isinstance(entry, dict):
        raise SignatureFormatError(f"{what}: expected an object")
    public = obj(entry, "publicKey", what, alt="public_key")
    der = b64decode(string(public, "rawBytes", what, alt="raw_bytes"), f"{what}.publicKey.rawBytes")
    key = public_key_from_der(der)
    log_id_doc = opt_obj(entry, "logId", what, alt="log_id")
    log_id = (
        b64decode(string(log_id_doc, "keyId", what, alt="key_id"), f"{what}.logId.keyId")
        if log_id_doc is not None
        else hashlib.sha256(der).digest()
    )
    base_url = entry.get("baseUrl", "")
    return TransparencyLog(
        log_id=log_id,
        key=key,
        base_url=base_url if isinstance(base_url, str) else "",
        validity=_validity(opt_obj(public, "validFor", what, alt="valid_for"), f"{what}.validFor"),
    )


def _tsa(entry: object, what: str) -> TimestampAuthority:
    if not isinstance(entry, dict):
        raise SignatureFormatError(f"{what}: expected an object")
    chain_doc = obj(entry, "certChain", what, alt="cert_chain")
    certs = []
    for i, cert in enumerate(array(chain_doc, "certificates", what)):
        if not isinstance(cert, dict):
            raise SignatureFormatError(f"{what}.certChain.certificates[{i}]: expected an object")
        der = b64decode(string(cert, "rawBytes", what, alt="raw_bytes"), f"{what} certificate")
        try:
            certs.append(x509.load_der_x509_certificate(der))
        except ValueError as exc:
            raise SignatureFormatError(f"{what}: certificate {i} does not parse: {exc}") from None
    if not certs:
        raise SignatureFormatError(f"{what}: empty certificate chain")
    uri = entry.get("uri", "")
    return TimestampAuthority(
        chain=tuple(certs),
        validity=_validity(opt_obj(entry, "validFor", what, alt="valid_for"), f"{what}.validFor"),
        uri=uri if isinstance(uri, str) else "",
    )
