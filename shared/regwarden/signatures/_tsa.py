"""RFC 3161 signed timestamps in Sigstore bundles, verified offline on `rfc3161-client`.

A bundle's `timestampVerificationData.rfc3161Timestamps[].signedTimestamp` is a DER
`TimeStampResp`. `rfc3161-client` (what sigstore-python uses) decodes it strictly (DER
only) and checks the CMS SignedData with OpenSSL at `genTime`: the signed attributes'
digest of the TSTInfo, the signature, and a chain from the signer through the trusted
root's TSA certificates to its root, every certificate valid at `genTime`, the leaf's
extended key usage exactly timeStamping and critical (RFC 3161 §2.3). Ours, around it:
the granted status and the message imprint (the hash of the artifact signature), checked
first so they keep their own messages; the signer must be the TSA leaf the trusted root
names; `genTime` must fall in that TSA's validity window there; and the library's errors
become the reasons a user reads.

Notation's tokens go through `notation/_timestamp.py` instead: real TSAs (GlobalSign) send
certificate sets out of DER order, which this decoder refuses.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from datetime import UTC, datetime

from rfc3161_client import (
    PKIStatus,
    TimeStampResponse,
    VerificationError,
    VerifierBuilder,
    decode_timestamp_response,
)

from ._trust import TimestampAuthority

_MAX_TIMESTAMPS = 32
_HASHES = {
    "2.16.840.1.101.3.4.2.1": "sha256",
    "2.16.840.1.101.3.4.2.2": "sha384",
    "2.16.840.1.101.3.4.2.3": "sha512",
}
_DIGEST_MISMATCH = "RFC 3161 timestamp's signed digest does not match its TSTInfo"
_OPENSSL_REASON = re.compile(r'reason: "([^"]*)"')
_OPENSSL_DATA = re.compile(r'data: "([^"]*)"')


def _library_reason(exc: Exception) -> str:
    """What a failed library check means, in our words.

    OpenSSL's error stack (rust-openssl's rendering, inside the library's message) names a
    reason per failing step; they are stable OpenSSL strings. Anything unrecognised keeps
    the library's own first line, shortened."""
    text = str(exc)
    reasons = set(_OPENSSL_REASON.findall(text))
    detail = "; ".join(_OPENSSL_DATA.findall(text)).removeprefix("Verify error:").strip()
    if "digest failure" in reasons:
        return _DIGEST_MISMATCH
    if "certificate verify error" in reasons:
        if "has expired" in detail or "not yet valid" in detail:
            return "TSA certificate was not valid at the timestamp's time"
        if "certificate purpose" in detail:  # "unsuitable" (OpenSSL 3), "unsupported" (1.1)
            return (
                "TSA certificate is not for time stamping (extended key usage must be "
                "timeStamping only, and critical)"
            )
        return f"TSA certificate chain does not verify ({detail or 'no detail'})"
    if "signature failure" in reasons:
        return "signature does not verify with the TSA certificate"
    if "signer certificate not found" in reasons or "No leaf certificate" in text:
        return "signed by another TSA certificate"
    if "Embedded certificate does not match" in text:
        return "signed by another TSA certificate"
    first = text.splitlines()[0] if text else type(exc).__name__
    return first if len(first) <= 200 else first[:197] + "..."


def _verify_with(response: TimeStampResponse, tsa: TimestampAuthority) -> str | None:
    """None when `tsa` vouches for the response, else why not."""
    leaf, root = tsa.chain[0], tsa.chain[-1]
    builder = VerifierBuilder().tsa_certificate(leaf).add_root_certificate(root)
    for intermediate in tsa.chain[1:-1]:
        builder = builder.add_intermediate_certificate(intermediate)
    try:
        builder.build().verify(response, response.tst_info.message_imprint.message)
    except (VerificationError, ValueError) as exc:
        # ValueError: a certificate embedded in the token that does not parse
        return _library_reason(exc)
    return None


def verify_timestamp(
    tsr: bytes, signature: bytes, authorities: Sequence[TimestampAuthority]
) -> tuple[datetime | None, str]:
    """Verify one RFC 3161 response over `signature`: (time, "") or (None, reason)."""
    try:
        response = decode_timestamp_response(tsr)
        status = response.status
        info = response.tst_info
        imprint = info.message_imprint
        gen_time = info.gen_time.astimezone(UTC)
        signers = list(response.signed_data.signer_infos)
    except ValueError as exc:
        return None, f"RFC 3161 timestamp is malformed: {str(exc)[:200]}"
    if status != PKIStatus.GRANTED:
        return None, f"RFC 3161 timestamp was not granted (status {status})"
    name = _HASHES.get(imprint.hash_algorithm.dotted_string)
    if name is None:
        return None, (
            "RFC 3161 timestamp is malformed: unsupported digest algorithm; "
            "valid: SHA-256, SHA-384, SHA-512"
        )
    if hashlib.new(name, signature).digest() != imprint.message:
        return None, "RFC 3161 timestamp is over a different signature"
    if len(signers) != 1:
        return None, f"RFC 3161 timestamp has {len(signers)} signers, expected exactly 1"
    signer = signers[0]
    reasons = []
    for tsa in authorities:
        leaf = tsa.chain[0]
        if (signer.issuer, signer.serial_number) != (leaf.issuer, leaf.serial_number):
            reasons.append("signed by another TSA certificate")
            continue
        if reason := _verify_with(response, tsa):
            if reason == _DIGEST_MISMATCH:
                return None, reason  # the token itself is inconsistent, whoever signed it
            reasons.append(reason)
            continue
        if not tsa.validity.contains(gen_time):
            reasons.append("timestamp falls outside the TSA's validity in the trusted root")
            continue
        return gen_time, ""
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
