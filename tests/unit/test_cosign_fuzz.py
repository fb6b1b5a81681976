"""Hypothesis fuzzing of every cosign parser: arbitrary input never escapes as anything
but the package's own SignatureFormatError, and verifiers never raise for bad signatures."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from regwarden.signatures import (
    BUNDLE_V03_MEDIA_TYPE,
    SIMPLE_SIGNING_MEDIA_TYPE,
    CosignPolicy,
    SignatureCandidate,
    SignatureFormatError,
    SignatureLayer,
    parse_bundle,
    parse_containers_signature,
    parse_payload,
    parse_signature_manifest,
    verify_attestations,
    verify_bundle,
    verify_candidates,
)
from regwarden.signatures.keys import generate_private_key

KEY = generate_private_key()
POLICY = CosignPolicy(keys=(KEY.public_key,))
IMAGE = "sha256:" + "ab" * 32
DIGEST = re.compile(r"sha(256:[0-9a-f]{64}|384:[0-9a-f]{96}|512:[0-9a-f]{128})")
FIELDS = [
    "critical",
    "Critical",
    "identity",
    "image",
    "type",
    "Type",
    "docker-manifest-digest",
    "docker-reference",
    "optional",
    "schemaVersion",
    "mediaType",
    "layers",
    "digest",
    "size",
    "annotations",
    "subject",
    "artifactType",
    "verificationMaterial",
    "publicKey",
    "hint",
    "tlogEntries",
    "logIndex",
    "logId",
    "keyId",
    "integratedTime",
    "inclusionPromise",
    "inclusionProof",
    "hashes",
    "rootHash",
    "treeSize",
    "checkpoint",
    "envelope",
    "canonicalizedBody",
    "dsseEnvelope",
    "payload",
    "payloadType",
    "signatures",
    "sig",
    "messageSignature",
    "messageDigest",
    "algorithm",
    "signature",
    "certificate",
    "rawBytes",
    "x509CertificateChain",
    "certificates",
    "timestampVerificationData",
    "rfc3161Timestamps",
    "signedTimestamp",
    "mimeType",
]
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.text(max_size=30),
    st.sampled_from(
        [
            IMAGE,
            "sha256:" + "0" * 64,
            SIMPLE_SIGNING_MEDIA_TYPE,
            BUNDLE_V03_MEDIA_TYPE,
            "application/vnd.dev.sigstore.bundle+json;version=0.1",
            "cosign container image signature",
            "application/vnd.in-toto+json",
            "SHA2_256",
            "AAAA",
            "MEUCIQ==",
            "2",
            "application/vnd.oci.image.manifest.v1+json",
        ]
    ),
)
JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(FIELDS), inner, max_size=6)
    ),
    max_leaves=25,
)
DOCUMENTS = st.one_of(
    st.binary(max_size=200),
    JSON.map(lambda v: json.dumps(v).encode()),
)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def parsed(fn: Any, data: bytes) -> Any:
    """`fn(data)`, or None when it raised SignatureFormatError (with a message)."""
    try:
        return fn(data)
    except SignatureFormatError as exc:
        message = str(exc)
    assert message
    return None


@FUZZ
@given(DOCUMENTS)
def test_payload_parser(data: bytes) -> None:
    claims = parsed(parse_payload, data)
    if claims is not None:
        assert isinstance(claims.type, str) and isinstance(claims.manifest_digest, str)
        assert claims.optional is None or isinstance(claims.optional, dict)


@FUZZ
@given(DOCUMENTS)
def test_manifest_parser(data: bytes) -> None:
    manifest = parsed(parse_signature_manifest, data)
    if manifest is not None:
        assert all(DIGEST.fullmatch(layer.digest) for layer in manifest.layers)
        assert all(
            isinstance(v, str) for layer in manifest.layers for v in layer.annotations.values()
        )


@FUZZ
@given(DOCUMENTS)
def test_bundle_parser(data: bytes) -> None:
    bundle = parsed(parse_bundle, data)
    if bundle is not None:
        assert (bundle.envelope is None) != (bundle.message_signature is None)
        assert bundle.version in ("0.1", "0.2", "0.3")


@FUZZ
@given(DOCUMENTS)
def test_containers_signature_parser(data: bytes) -> None:
    assert parsed(parse_containers_signature, data[:1] + b"not-the-prefix" + data) is None
    cand = parsed(parse_containers_signature, b"\x00sigstore-json\n" + data)
    if cand is not None:
        assert cand.layer.digest == "sha256:" + hashlib.sha256(cand.blob).hexdigest()


@FUZZ
@given(DOCUMENTS)
def test_bundle_verifier_never_raises(data: bytes) -> None:
    result = verify_bundle(data, expected_digest=IMAGE, policy=POLICY).result
    assert not result.verified and result.reason


@FUZZ
@given(
    st.sampled_from(
        [SIMPLE_SIGNING_MEDIA_TYPE, BUNDLE_V03_MEDIA_TYPE, "application/vnd.dsse.envelope.v1+json"]
    ),
    DOCUMENTS,
    st.dictionaries(
        st.sampled_from(
            ["dev.cosignproject.cosign/signature", "dev.sigstore.cosign/bundle", "predicateType"]
        ),
        st.one_of(
            st.text(max_size=40),
            JSON.map(json.dumps),
            st.just(base64.b64encode(b"x" * 70).decode()),
        ),
        max_size=3,
    ),
    st.booleans(),
)
def test_candidate_verifiers_never_raise(
    media_type: str, blob: bytes, annotations: dict[str, str], match: bool
) -> None:
    digest = "sha256:" + (hashlib.sha256(blob).hexdigest() if match else "0" * 64)
    cand = SignatureCandidate("", SignatureLayer(media_type, digest, len(blob), annotations), blob)
    for result in verify_candidates([cand], image_digest=IMAGE, policy=POLICY):
        assert not result.verified and result.reason
    for att in verify_attestations([cand], image_digest=IMAGE, policy=POLICY):
        assert not att.result.verified and att.result.reason
