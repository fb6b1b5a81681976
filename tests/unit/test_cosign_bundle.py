"""Sigstore bundles and attestations: sign → referrer → verify for every key type, and a
test transparency log (real Merkle tree, real checkpoint and SET signatures) for the
offline tlog checks."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from regwarden.errors import UsageError
from regwarden.signatures import (
    BUNDLE_V03_MEDIA_TYPE,
    COSIGN_SIGN_PREDICATE,
    COSIGN_VULN_PREDICATE,
    SLSA_PROVENANCE_V1,
    CosignPolicy,
    PrivateKey,
    SignatureCandidate,
    TrustedRoot,
    attest_bundle,
    attest_legacy,
    parse_bundle,
    parse_signature_manifest,
    resolve_predicate_type,
    sign_bundle,
    verify_attestations,
    verify_bundle,
    verify_candidates,
)
from regwarden.signatures._rekor import merkle_root_from_proof
from regwarden.signatures.keys import generate_private_key

MANIFEST = b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}'
IMAGE = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()
OTHER = "sha256:" + "1" * 64
SUBJECT = {
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "digest": IMAGE,
    "size": len(MANIFEST),
}
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
ALGORITHMS = ["ecdsa-p256", "ecdsa-p384", "ecdsa-p521", "rsa", "ed25519"]


@pytest.fixture(scope="module")
def keys() -> dict[str, PrivateKey]:
    return {name: generate_private_key(name, rsa_bits=2048) for name in ALGORITHMS}  # type: ignore[arg-type]


def candidates_of(manifest: bytes, blobs: dict[str, bytes]) -> list[SignatureCandidate]:
    digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    return [
        SignatureCandidate(digest, layer, blobs[layer.digest])
        for layer in parse_signature_manifest(manifest).layers
    ]


def bundle_bytes(key: PrivateKey) -> bytes:
    art = sign_bundle(subject=SUBJECT, key=key, created=NOW)
    layer = json.loads(art.manifest)["layers"][0]
    return art.blobs[layer["digest"]]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_bundle_round_trip_every_key_type(keys: dict[str, PrivateKey], algorithm: str) -> None:
    key = keys[algorithm]
    art = sign_bundle(subject=SUBJECT, key=key, created=NOW)
    [result] = verify_candidates(
        candidates_of(art.manifest, dict(art.blobs)),
        image_digest=IMAGE,
        policy=CosignPolicy(keys=(key.public_key,)),
    )
    assert result.verified, result.reason
    assert result.format == "cosign-bundle"
    assert result.signer == key.public_key.key_id


def test_referrer_manifest_shape(keys: dict[str, PrivateKey]) -> None:
    art = sign_bundle(subject=SUBJECT, key=keys["ecdsa-p256"], created=NOW)
    manifest = json.loads(art.manifest)
    assert art.tag is None and art.subject == SUBJECT
    assert manifest["artifactType"] == BUNDLE_V03_MEDIA_TYPE
    assert manifest["config"] == {
        "mediaType": "application/vnd.oci.empty.v1+json",
        "size": 2,
        "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
    }
    assert manifest["subject"] == SUBJECT
    assert manifest["annotations"] == {
        "dev.sigstore.bundle.content": "dsse-envelope",
        "dev.sigstore.bundle.predicateType": COSIGN_SIGN_PREDICATE,
        "org.opencontainers.image.created": "2026-01-02T03:04:05Z",
    }
    bundle = json.loads(art.blobs[manifest["layers"][0]["digest"]])
    assert bundle["mediaType"] == BUNDLE_V03_MEDIA_TYPE
    assert bundle["verificationMaterial"] == {
        "publicKey": {"hint": keys["ecdsa-p256"].public_key.hint}
    }
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    assert statement == {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"digest": {"sha256": IMAGE[7:]}}],
        "predicateType": COSIGN_SIGN_PREDICATE,
        "predicate": {},
    }


def test_bundle_for_another_image_wrong_key_and_tampering(keys: dict[str, PrivateKey]) -> None:
    key = keys["ecdsa-p256"]
    raw = bundle_bytes(key)
    pol = CosignPolicy(keys=(key.public_key,))
    assert verify_bundle(raw, expected_digest=IMAGE, policy=pol).result.verified
    other = verify_bundle(raw, expected_digest=OTHER, policy=pol).result
    assert not other.verified and f"do not include {OTHER}" in other.reason
    wrong = verify_bundle(
        raw, expected_digest=IMAGE, policy=CosignPolicy(keys=(keys["rsa"].public_key,))
    ).result
    assert not wrong.verified and "DSSE signature does not verify" in wrong.reason
    doc = json.loads(raw)
    statement = json.loads(base64.b64decode(doc["dsseEnvelope"]["payload"]))
    statement["subject"][0]["digest"]["sha256"] = OTHER[7:]
    doc["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    forged = verify_bundle(json.dumps(doc).encode(), expected_digest=OTHER, policy=pol).result
    assert not forged.verified and "does not verify" in forged.reason


def test_bundle_predicate_and_payload_type_checked(keys: dict[str, PrivateKey]) -> None:
    key = keys["ecdsa-p256"]
    art = attest_bundle(
        subject=SUBJECT, key=key, predicate_type="vuln", predicate={"scanner": {}}, created=NOW
    )
    raw = art.blobs[json.loads(art.manifest)["layers"][0]["digest"]]
    result = verify_bundle(
        raw, expected_digest=IMAGE, policy=CosignPolicy(keys=(key.public_key,))
    ).result
    assert not result.verified and f"predicate type got '{COSIGN_VULN_PREDICATE}'" in result.reason
    # a vuln attestation bundle is not an image signature: verify_candidates skips it
    assert (
        verify_candidates(
            candidates_of(art.manifest, dict(art.blobs)),
            image_digest=IMAGE,
            policy=CosignPolicy(keys=(key.public_key,)),
        )
        == []
    )


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_legacy_attestation_round_trip(keys: dict[str, PrivateKey], algorithm: str) -> None:
    key = keys[algorithm]
    predicate = {"scanner": {"uri": "pkg:github/aquasecurity/trivy@0.50.0"}, "metadata": {}}
    art = attest_legacy(
        image_digest=IMAGE,
        repository="registry.example.com/app",
        key=key,
        predicate_type="vuln",
        predicate=predicate,
    )
    assert art.tag == IMAGE.replace(":", "-") + ".att"
    layer = json.loads(art.manifest)["layers"][0]
    assert layer["mediaType"] == "application/vnd.dsse.envelope.v1+json"
    assert layer["annotations"] == {"predicateType": COSIGN_VULN_PREDICATE}
    pol = CosignPolicy(keys=(key.public_key,), predicate_types=frozenset({COSIGN_VULN_PREDICATE}))
    [att] = verify_attestations(
        candidates_of(art.manifest, dict(art.blobs)), image_digest=IMAGE, policy=pol
    )
    assert att.result.verified, att.result.reason
    assert att.predicate_type == COSIGN_VULN_PREDICATE
    assert att.statement is not None and att.statement["predicate"] == predicate
    [other] = verify_attestations(
        candidates_of(art.manifest, dict(art.blobs)), image_digest=OTHER, policy=pol
    )
    assert not other.result.verified and other.statement is None


def test_bundle_attestation_and_appended_att(keys: dict[str, PrivateKey]) -> None:
    key = keys["ecdsa-p384"]
    slsa = attest_bundle(
        subject=SUBJECT,
        key=key,
        predicate_type="slsaprovenance1",
        predicate={"buildDefinition": {}},
        created=NOW,
    )
    pol = CosignPolicy(keys=(key.public_key,), predicate_types=frozenset({SLSA_PROVENANCE_V1}))
    [att] = verify_attestations(
        candidates_of(slsa.manifest, dict(slsa.blobs)), image_digest=IMAGE, policy=pol
    )
    assert att.result.verified and att.predicate_type == SLSA_PROVENANCE_V1
    first = attest_legacy(
        image_digest=IMAGE, repository="r", key=key, predicate_type="vuln", predicate={}
    )
    second = attest_legacy(
        image_digest=IMAGE,
        repository="r",
        key=key,
        predicate_type="slsaprovenance",
        predicate={},
        existing_manifest=first.manifest,
    )
    assert len(json.loads(second.manifest)["layers"]) == 2


def test_predicate_type_aliases() -> None:
    assert resolve_predicate_type("slsaprovenance") == "https://slsa.dev/provenance/v0.2"
    assert resolve_predicate_type("https://example.com/p/v1") == "https://example.com/p/v1"
    with pytest.raises(UsageError, match="valid: vuln, slsaprovenance"):
        resolve_predicate_type("sbom")


# --------------------------------------------------------------------------- Merkle trees


def _leaf(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def mth(leaves: list[bytes]) -> bytes:
    """RFC 6962 §2.1 Merkle tree hash, written recursively (independent of the verifier)."""
    if len(leaves) == 1:
        return _leaf(leaves[0])
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return hashlib.sha256(b"\x01" + mth(leaves[:k]) + mth(leaves[k:])).digest()


def audit_path(m: int, leaves: list[bytes]) -> list[bytes]:
    """RFC 6962 §2.1.1 PATH(m, D[n])."""
    if len(leaves) == 1:
        return []
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    if m < k:
        return [*audit_path(m, leaves[:k]), mth(leaves[k:])]
    return [*audit_path(m - k, leaves[k:]), mth(leaves[:k])]


@given(st.integers(min_value=1, max_value=70), st.data())
def test_merkle_audit_paths_verify_and_wrong_ones_do_not(size: int, data: st.DataObject) -> None:
    leaves = [b"entry-%d" % i for i in range(size)]
    index = data.draw(st.integers(min_value=0, max_value=size - 1))
    root = mth(leaves)
    path = audit_path(index, leaves)
    assert merkle_root_from_proof(leaves[index], index, size, path) == root
    assert merkle_root_from_proof(leaves[index] + b"x", index, size, path) != root
    if size > 1:
        wrong_index = (index + 1) % size
        assert merkle_root_from_proof(leaves[index], wrong_index, size, path) != root
        if path:
            broken = [*path[:-1], bytes(32)]
            assert merkle_root_from_proof(leaves[index], index, size, broken) != root
    assert merkle_root_from_proof(leaves[index], index, size, [*path, bytes(32)]) is None


# --------------------------------------------------------------------------- a test log


class MiniLog:
    """A transparency log with a real key: entries, SETs, proofs and checkpoints."""

    def __init__(self, name: str = "rekor.test - 42") -> None:
        self.key = generate_private_key()
        self.name = name
        self.filler = [b"other-entry-%d" % i for i in range(5)]

    @property
    def root(self) -> TrustedRoot:
        return TrustedRoot.from_rekor_keys(self.key.public_key)

    def entry(
        self, bundle_doc: dict[str, Any], signer: PrivateKey, *, kind: str = "dsse"
    ) -> dict[str, Any]:
        env = bundle_doc["dsseEnvelope"]
        payload = base64.b64decode(env["payload"])
        body = {
            "apiVersion": "0.0.1",
            "kind": kind,
            "spec": {
                "payloadHash": {
                    "algorithm": "sha256",
                    "value": hashlib.sha256(payload).hexdigest(),
                },
                "signatures": [
                    {
                        "signature": s["sig"],
                        "verifier": base64.b64encode(signer.public_key.pem).decode(),
                    }
                    for s in env["signatures"]
                ],
            },
        }
        body_bytes = json.dumps(body, separators=(",", ":")).encode()
        leaves = [*self.filler, body_bytes]
        index = len(leaves) - 1
        root_hash = mth(leaves)
        log_id = bytes.fromhex(self.key.public_key.key_id)
        note = f"{self.name}\n{len(leaves)}\n{base64.b64encode(root_hash).decode()}\n"
        note_sig = self.key.sign(note.encode())
        checkpoint = (
            note + "\n\u2014 rekor.test " + base64.b64encode(log_id[:4] + note_sig).decode() + "\n"
        )
        set_payload = {
            "body": base64.b64encode(body_bytes).decode(),
            "integratedTime": 1767225600,
            "logID": log_id.hex(),
            "logIndex": 1000 + index,
        }
        set_sig = self.key.sign(
            json.dumps(set_payload, sort_keys=True, separators=(",", ":")).encode()
        )
        return {
            "logIndex": str(1000 + index),
            "logId": {"keyId": base64.b64encode(log_id).decode()},
            "kindVersion": {"kind": kind, "version": "0.0.1"},
            "integratedTime": "1767225600",
            "inclusionPromise": {"signedEntryTimestamp": base64.b64encode(set_sig).decode()},
            "inclusionProof": {
                "logIndex": str(index),
                "rootHash": base64.b64encode(root_hash).decode(),
                "treeSize": str(len(leaves)),
                "hashes": [base64.b64encode(h).decode() for h in audit_path(index, leaves)],
                "checkpoint": {"envelope": checkpoint},
            },
            "canonicalizedBody": base64.b64encode(body_bytes).decode(),
        }


def logged_bundle(key: PrivateKey, log: MiniLog) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(bundle_bytes(key))
    doc["verificationMaterial"]["tlogEntries"] = [log.entry(doc, key)]
    return doc


def verify_doc(doc: dict[str, Any], pol: CosignPolicy) -> str:
    result = verify_bundle(json.dumps(doc).encode(), expected_digest=IMAGE, policy=pol).result
    return "" if result.verified else result.reason


def test_tlog_entry_verified_offline(keys: dict[str, PrivateKey]) -> None:
    key = keys["ecdsa-p256"]
    log = MiniLog()
    doc = logged_bundle(key, log)
    pol = CosignPolicy(keys=(key.public_key,), trusted_root=log.root, require_tlog=True)
    result = verify_bundle(json.dumps(doc).encode(), expected_digest=IMAGE, policy=pol).result
    assert result.verified, result.reason
    assert "tlog entry 1005 integrated 2026-01-01" in result.reason
    # without a trusted root the entry is reported, not trusted
    plain = verify_bundle(
        json.dumps(doc).encode(), expected_digest=IMAGE, policy=CosignPolicy(keys=(key.public_key,))
    )
    assert plain.result.verified and "not checked" in plain.result.reason
    # the tlog is required but the bundle has none
    bare = json.loads(bundle_bytes(key))
    assert "no verified transparency-log entry" in verify_doc(bare, pol)


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda e: e.update(integratedTime="1767225601"), "signed entry timestamp does not verify"),
        (lambda e: e["inclusionProof"].update(logIndex="4"), "inclusion proof leads to root"),
        (lambda e: e["inclusionProof"]["hashes"].pop(), "inclusion proof is malformed"),
        (lambda e: e["inclusionProof"].update(treeSize="7"), "inclusion proof"),
        (
            lambda e: e["inclusionProof"]["checkpoint"].update(
                envelope=e["inclusionProof"]["checkpoint"]["envelope"].replace(
                    "rekor.test - 42", "rekor.test - 43"
                )
            ),
            "checkpoint signature does not verify",
        ),
        (
            lambda e: e.update(logId={"keyId": base64.b64encode(b"\x01" * 32).decode()}),
            "unknown log",
        ),
        (lambda e: e.pop("inclusionProof"), "no inclusion proof (required by this bundle version)"),
    ],
)
def test_tlog_tampering_is_rejected(keys: dict[str, PrivateKey], mutate, reason: str) -> None:  # type: ignore[no-untyped-def]
    key = keys["ecdsa-p256"]
    log = MiniLog()
    doc = logged_bundle(key, log)
    mutate(doc["verificationMaterial"]["tlogEntries"][0])
    pol = CosignPolicy(keys=(key.public_key,), trusted_root=log.root)
    assert reason in verify_doc(doc, pol)


def test_tlog_entry_for_another_signature_is_rejected(keys: dict[str, PrivateKey]) -> None:
    key = keys["ecdsa-p256"]
    log = MiniLog()
    doc = logged_bundle(key, log)
    other = json.loads(bundle_bytes(key))  # same statement, fresh ECDSA signature
    doc["dsseEnvelope"]["signatures"] = other["dsseEnvelope"]["signatures"]
    pol = CosignPolicy(keys=(key.public_key,), trusted_root=log.root)
    assert "signatures do not match the envelope" in verify_doc(doc, pol)


def test_require_timestamp_without_tsa_fails(keys: dict[str, PrivateKey]) -> None:
    key = keys["ecdsa-p256"]
    log = MiniLog()
    pol = CosignPolicy(keys=(key.public_key,), trusted_root=log.root, require_timestamp=True)
    assert "RFC 3161 timestamp" in verify_doc(logged_bundle(key, log), pol)


def test_bundle_parser_structural_errors(keys: dict[str, PrivateKey]) -> None:
    from regwarden.signatures import SignatureFormatError

    doc = json.loads(bundle_bytes(keys["ecdsa-p256"]))
    for mutate, message in [
        (lambda d: d.update(mediaType="application/json"), "got media type"),
        (lambda d: d.pop("dsseEnvelope"), "exactly one of dsseEnvelope, messageSignature"),
        (
            lambda d: d["verificationMaterial"].update(certificate={"rawBytes": "AA=="}),
            "exactly one of publicKey",
        ),
        (lambda d: d["dsseEnvelope"].update(signatures=[]), "no signatures"),
    ]:
        broken = json.loads(json.dumps(doc))
        mutate(broken)
        with pytest.raises(SignatureFormatError, match=message):
            parse_bundle(json.dumps(broken).encode())
        assert (
            message
            in verify_bundle(
                json.dumps(broken).encode(),
                expected_digest=IMAGE,
                policy=CosignPolicy(keys=(keys["ecdsa-p256"].public_key,)),
            ).result.reason
        )
