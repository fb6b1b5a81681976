"""RFC 3161 tokens from real TSAs: Sigstore's (cosign bundles) verifies on rfc3161-client;
GlobalSign's (a Notation signature) does not decode there, and Notation's BER reader takes
it. The second test is why regwarden has two RFC 3161 readers: if it starts failing
because the library accepts the token, Notation could move onto the library too."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509

from regwarden import der
from regwarden.signatures import _tsa
from regwarden.signatures._trust import TrustedRoot
from regwarden.signatures.notation import MEDIA_TYPE_JWS, parse_envelope
from regwarden.signatures.notation._timestamp import verify_token

FIXTURES = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures"
pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"interop fixtures absent at {FIXTURES}"),
]
COSIGN = FIXTURES / "cosign"
GO = FIXTURES / "notation" / "notation-go"


def test_sigstore_tsa_token_verifies_against_the_public_good_root() -> None:
    doc = json.loads(
        (COSIGN / "bundles" / "managed-key-happy-path" / "bundle.sigstore.json").read_bytes()
    )
    material = doc["verificationMaterial"]["timestampVerificationData"]["rfc3161Timestamps"]
    tsr = base64.b64decode(material[0]["signedTimestamp"])
    signature = base64.b64decode(doc["messageSignature"]["signature"])
    root = TrustedRoot.from_json(
        (COSIGN / "trusted-roots" / "trusted_root.public-good.json").read_bytes()
    )
    when, reason = _tsa.verify_timestamp(tsr, signature, root.timestamp_authorities)
    assert reason == ""
    assert when is not None and when.replace(microsecond=0) == datetime(
        2025, 12, 18, 17, 4, 39, tzinfo=UTC
    )
    when, reason = _tsa.verify_timestamp(tsr, signature + b"!", root.timestamp_authorities)
    assert (when, reason) == (None, "RFC 3161 timestamp is over a different signature")


def test_globalsign_token_is_refused_by_the_library_and_read_by_notation() -> None:
    info = parse_envelope(
        (GO / "timestamp-envelopes" / "jwsWithTimestamp.sig").read_bytes(), MEDIA_TYPE_JWS
    )
    assert info.timestamp_token is not None
    root = x509.load_der_x509_certificate(
        (GO / "truststore" / "tsa" / "globalsignRoot.cer").read_bytes()
    )
    stamped = verify_token(info.timestamp_token, info.signature, [root])
    assert stamped.gen_time == datetime(2024, 6, 18, 6, 29, 37, tzinfo=UTC)
    tsr = der.der_seq(der.der_seq(der.der_int(0)), info.timestamp_token)
    when, reason = _tsa.verify_timestamp(tsr, info.signature, [])
    assert when is None
    assert reason.startswith("RFC 3161 timestamp is malformed: ") and "SetOrdering" in reason
