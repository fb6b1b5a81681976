"""RFC 3161 signed timestamps, verified offline against a trusted root's TSAs.

A Sigstore bundle's `timestampVerificationData.rfc3161Timestamps[].signedTimestamp` is a
DER `TimeStampResp`. The timestamp is good when: the status is granted; the token is CMS
SignedData over a TSTInfo whose message imprint is the hash of the artifact signature;
the signed attributes carry the TSTInfo content type and its digest (and, when present,
the hash of the TSA certificate); their signature verifies with a TSA leaf certificate
that chains to the TSA's root, has the timeStamping EKU, and was valid at `genTime`,
which must also fall in the TSA's validity window in the trusted root.

A small DER reader is enough for this: the structures are fixed and nothing is re-encoded
except the signed attributes, whose IMPLICIT [0] tag becomes SET OF for verification.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from ._trust import TimestampAuthority

_OID_SIGNED_DATA = "1.2.840.113549.1.7.2"
_OID_TST_INFO = "1.2.840.113549.1.9.16.1.4"
_OID_CONTENT_TYPE = "1.2.840.113549.1.9.3"
_OID_MESSAGE_DIGEST = "1.2.840.113549.1.9.4"
_OID_SIGNING_CERT_V2 = "1.2.840.113549.1.9.16.2.47"
_HASH_OIDS: dict[str, type[hashes.HashAlgorithm]] = {
    "2.16.840.1.101.3.4.2.1": hashes.SHA256,
    "2.16.840.1.101.3.4.2.2": hashes.SHA384,
    "2.16.840.1.101.3.4.2.3": hashes.SHA512,
}
_MAX_TIMESTAMPS = 32


class DerError(ValueError):
    """The DER does not have the expected shape."""


@dataclass(frozen=True, slots=True)
class _Tlv:
    tag: int
    content: bytes
    raw: bytes


def _read(data: bytes, offset: int = 0) -> tuple[_Tlv, int]:
    if offset + 2 > len(data):
        raise DerError("truncated DER element")
    tag = data[offset]
    if tag & 0x1F == 0x1F:
        raise DerError("multi-byte DER tags are not supported")
    first = data[offset + 1]
    pos = offset + 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or pos + count > len(data):
            raise DerError("bad DER length")
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    end = pos + length
    if end > len(data):
        raise DerError("DER element runs past the end of its container")
    return _Tlv(tag, data[pos:end], data[offset:end]), end


def _one(data: bytes, tag: int) -> _Tlv:
    tlv, _ = _read(data)
    if tlv.tag != tag:
        raise DerError(f"got DER tag 0x{tlv.tag:02x}, expected 0x{tag:02x}")
    return tlv


def _children(data: bytes) -> list[_Tlv]:
    out = []
    pos = 0
    while pos < len(data):
        tlv, pos = _read(data, pos)
        out.append(tlv)
    return out


def _oid(tlv: _Tlv) -> str:
    if tlv.tag != 0x06 or not tlv.content:
        raise DerError("expected an OBJECT IDENTIFIER")
    arcs: list[int] = []
    value = 0
    for byte in tlv.content:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(str(a) for a in [first, arcs[0] - 40 * first, *arcs[1:]])


def _generalized_time(tlv: _Tlv) -> datetime:
    if tlv.tag != 0x18:
        raise DerError("expected a GeneralizedTime")
    text = tlv.content.decode("ascii", errors="replace")
    if not text.endswith("Z") or len(text) < 15:
        raise DerError(f"unsupported GeneralizedTime {text!r}")
    main, _, frac = text[:-1].partition(".")
    try:
        when = datetime.strptime(main, "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        raise DerError(f"bad GeneralizedTime {text!r}") from None
    if frac:
        if not frac.isdigit():
            raise DerError(f"bad GeneralizedTime {text!r}")
        when = when.replace(microsecond=int(frac[:6].ljust(6, "0")))
    return when


def _hash_of(alg_id: _Tlv) -> type[hashes.HashAlgorithm]:
    parts = _children(alg_id.content)
    algo = _HASH_OIDS.get(_oid(parts[0])) if parts else None
    if algo is None:
        raise DerError("unsupported digest algorithm; valid: SHA-256, SHA-384, SHA-512")
    return algo


def _digest(algo: type[hashes.HashAlgorithm], data: bytes) -> bytes:
    h = hashes.Hash(algo())
    h.update(data)
    return h.finalize()


@dataclass(frozen=True, slots=True)
class _Token:
    gen_time: datetime
    imprint_hash: type[hashes.HashAlgorithm]
    imprint: bytes
    tst_info: bytes
    signer_serial: int | None
    signer_issuer: bytes | None
    digest_hash: type[hashes.HashAlgorithm]
    signed_attrs: bytes
    signature: bytes
    message_digest: bytes | None
    content_type_ok: bool
    cert_hash: tuple[type[hashes.HashAlgorithm], bytes] | None


def _parse(tsr: bytes) -> _Token:
    resp = _children(_one(tsr, 0x30).content)
    if len(resp) < 2:
        raise DerError("TimeStampResp has no token")
    status = _children(resp[0].content)
    if (
        not status
        or status[0].tag != 0x02
        or int.from_bytes(status[0].content, "big") not in (0, 1)
    ):
        raise DerError("timestamp status is not 'granted'")
    content_info = _children(resp[1].content)
    if (
        len(content_info) < 2
        or _oid(content_info[0]) != _OID_SIGNED_DATA
        or content_info[1].tag != 0xA0
    ):
        raise DerError("timestamp token is not CMS SignedData")
    signed_data = _children(_one(content_info[1].content, 0x30).content)
    if len(signed_data) < 4:
        raise DerError("SignedData is incomplete")
    encap = _children(signed_data[2].content)
    if len(encap) < 2 or _oid(encap[0]) != _OID_TST_INFO or encap[1].tag != 0xA0:
        raise DerError("SignedData does not encapsulate a TSTInfo")
    tst_info = _one(encap[1].content, 0x04).content
    info = _children(_one(tst_info, 0x30).content)
    if len(info) < 5:
        raise DerError("TSTInfo is incomplete")
    imprint = _children(info[2].content)
    if len(imprint) != 2 or imprint[1].tag != 0x04:
        raise DerError("TSTInfo message imprint is malformed")
    gen_time = _generalized_time(info[4])
    signer_infos = signed_data[-1]
    if signer_infos.tag != 0x31:
        raise DerError("SignedData has no signerInfos")
    signers = _children(signer_infos.content)
    if len(signers) != 1:
        raise DerError(f"got {len(signers)} signerInfos, expected exactly 1")
    si = _children(signers[0].content)
    if len(si) < 6 or si[3].tag != 0xA0:
        raise DerError("SignerInfo has no signed attributes")
    serial = issuer = None
    if si[1].tag == 0x30:
        sid = _children(si[1].content)
        if len(sid) != 2 or sid[1].tag != 0x02:
            raise DerError("SignerInfo sid is malformed")
        issuer = sid[0].raw
        serial = int.from_bytes(sid[1].content, "big", signed=True)
    message_digest = None
    content_type_ok = False
    cert_hash = None
    for attr in _children(si[3].content):
        parts = _children(attr.content)
        if len(parts) != 2 or parts[1].tag != 0x31:
            raise DerError("signed attribute is malformed")
        kind = _oid(parts[0])
        values = _children(parts[1].content)
        if len(values) != 1:
            raise DerError("signed attribute must have exactly one value")
        if kind == _OID_CONTENT_TYPE:
            content_type_ok = _oid(values[0]) == _OID_TST_INFO
        elif kind == _OID_MESSAGE_DIGEST and values[0].tag == 0x04:
            message_digest = values[0].content
        elif kind == _OID_SIGNING_CERT_V2:
            certs = _children(_children(values[0].content)[0].content)
            first = _children(certs[0].content) if certs else []
            if first:
                algo: type[hashes.HashAlgorithm] = hashes.SHA256
                idx = 0
                if first[0].tag == 0x30:
                    algo = _hash_of(first[0])
                    idx = 1
                if idx < len(first) and first[idx].tag == 0x04:
                    cert_hash = (algo, first[idx].content)
    signature = si[5]
    if signature.tag != 0x04:
        raise DerError("SignerInfo signature is not an OCTET STRING")
    return _Token(
        gen_time=gen_time,
        imprint_hash=_hash_of(imprint[0]),
        imprint=imprint[1].content,
        tst_info=tst_info,
        signer_serial=serial,
        signer_issuer=issuer,
        digest_hash=_hash_of(si[2]),
        signed_attrs=b"\x31" + si[3].raw[1:],
        signature=signature.content,
        message_digest=message_digest,
        content_type_ok=content_type_ok,
        cert_hash=cert_hash,
    )


def _verify_with(cert: x509.Certificate, token: _Token) -> bool:
    key = cert.public_key()
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(token.signature, token.signed_attrs, ec.ECDSA(token.digest_hash()))
            return True
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(token.signature, token.signed_attrs, padding.PKCS1v15(), token.digest_hash())
            return True
    except (InvalidSignature, ValueError):
        return False
    return False


def _chain_ok(chain: Sequence[x509.Certificate], when: datetime) -> str | None:
    leaf = chain[0]
    if not leaf.not_valid_before_utc <= when <= leaf.not_valid_after_utc:
        return "TSA certificate was not valid at the timestamp's time"
    try:
        eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return "TSA certificate has no extended key usage"
    if ExtendedKeyUsageOID.TIME_STAMPING not in eku:
        return "TSA certificate lacks the timeStamping extended key usage"
    try:
        for child, parent in zip(chain, [*chain[1:], chain[-1]], strict=True):
            child.verify_directly_issued_by(parent)
    except (ValueError, TypeError, InvalidSignature):
        return "TSA certificate chain does not verify"
    return None


def verify_timestamp(
    tsr: bytes, signature: bytes, authorities: Sequence[TimestampAuthority]
) -> tuple[datetime | None, str]:
    """Verify one RFC 3161 response over `signature`: (time, "") or (None, reason)."""
    try:
        token = _parse(tsr)
    except (DerError, IndexError) as exc:
        return None, f"RFC 3161 timestamp is malformed: {exc}"
    if _digest(token.imprint_hash, signature) != token.imprint:
        return None, "RFC 3161 timestamp is over a different signature"
    if not token.content_type_ok:
        return None, "RFC 3161 timestamp's signed content type is not TSTInfo"
    if token.message_digest != _digest(token.digest_hash, token.tst_info):
        return None, "RFC 3161 timestamp's signed digest does not match its TSTInfo"
    reasons = []
    for tsa in authorities:
        leaf = tsa.chain[0]
        if token.signer_serial is not None and (
            leaf.serial_number != token.signer_serial
            or leaf.issuer.public_bytes() != token.signer_issuer
        ):
            reasons.append("signed by another TSA certificate")
            continue
        if token.cert_hash is not None and token.cert_hash[1] != _digest(
            token.cert_hash[0], leaf.public_bytes(serialization.Encoding.DER)
        ):
            reasons.append("signing-certificate attribute names another certificate")
            continue
        if not _verify_with(leaf, token):
            reasons.append("signature does not verify with the TSA certificate")
            continue
        if reason := _chain_ok(tsa.chain, token.gen_time):
            reasons.append(reason)
            continue
        if not tsa.validity.contains(token.gen_time):
            reasons.append("timestamp falls outside the TSA's validity in the trusted root")
            continue
        return token.gen_time, ""
    detail = "; ".join(dict.fromkeys(reasons)) or "no timestamp authority in the trusted root"
    return None, f"RFC 3161 timestamp not verified: {detail}"


def verify_timestamps(
    responses: Sequence[bytes], signature: bytes, authorities: Sequence[TimestampAuthority]
) -> tuple[list[datetime], list[str]]:
    """All responses: the verified times and the failure reasons."""
    times: list[datetime] = []
    reasons: list[str] = []
    if len(responses) > _MAX_TIMESTAMPS:
        return [], [f"too many RFC 3161 timestamps ({len(responses)} > {_MAX_TIMESTAMPS})"]
    if len({hashlib.sha256(r).digest() for r in responses}) != len(responses):
        return [], ["duplicate RFC 3161 timestamps"]
    for tsr in responses:
        when, reason = verify_timestamp(tsr, signature, authorities)
        if when is None:
            reasons.append(reason)
        else:
            times.append(when)
    return times, reasons
