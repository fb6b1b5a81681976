"""Interop: every cosign fixture made by the real tools (cosign, containers/image,
sigstore-conformance) gives the result its README states, and changing one byte, or
using the wrong key, turns every valid case into a rejection."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from regwarden.signatures import (
    COSIGN_SIGN_PREDICATE,
    SLSA_PROVENANCE_V1,
    CosignPolicy,
    KeyFormatError,
    KeylessIdentity,
    SignatureCandidate,
    SignatureLayer,
    TrustedRoot,
    load_private_key,
    load_public_key,
    parse_bundle,
    parse_containers_signature,
    sign_legacy,
    verify_bundle,
    verify_candidates,
)
from regwarden.signatures._rekor import verify_entry
from regwarden.signatures.keys import encrypt_private_key

FIXTURES = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures" / "cosign"
pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(not FIXTURES.is_dir(), reason="../shared/fixtures is absent"),
]
LEGACY = FIXTURES / "legacy"
BUNDLES = FIXTURES / "bundles"
BEACON = (
    "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/"
    ".github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main"
)
ACTIONS_ISSUER = "https://token.actions.githubusercontent.com"


# --------------------------------------------------------------------------- helpers


def image_digest(case: str) -> str:
    return "sha256:" + hashlib.sha256((LEGACY / case / "manifest.json").read_bytes()).hexdigest()


def legacy_candidates(case: str) -> list[SignatureCandidate]:
    return [
        parse_containers_signature(p.read_bytes())
        for p in sorted((LEGACY / case).glob("signature-*"))
    ]


def cosign_policy(**kwargs: Any) -> CosignPolicy:
    return CosignPolicy(keys=(load_public_key((LEGACY / "cosign.pub").read_bytes()),), **kwargs)


def public_good() -> TrustedRoot:
    return TrustedRoot.from_json(
        (FIXTURES / "trusted-roots" / "trusted_root.public-good.json").read_bytes()
    )


def bundle_doc(case: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((BUNDLES / case / "bundle.sigstore.json").read_bytes())
    return doc


def message_digest(doc: dict[str, Any]) -> str:
    """What a message-signature bundle claims to sign (the artifact is not shipped)."""
    return "sha256:" + base64.b64decode(doc["messageSignature"]["messageDigest"]["digest"]).hex()


def flip(b64: str, index: int = -3) -> str:
    raw = bytearray(base64.b64decode(b64))
    raw[index] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


# --------------------------------------------------------------------------- legacy .sig


def test_valid() -> None:
    [result] = verify_candidates(
        legacy_candidates("dir-img-cosign-valid"),
        image_digest=image_digest("dir-img-cosign-valid"),
        policy=cosign_policy(),
    )
    assert result.verified, result.reason


def test_valid_2_both_signatures() -> None:
    results = verify_candidates(
        legacy_candidates("dir-img-cosign-valid-2"),
        image_digest=image_digest("dir-img-cosign-valid-2"),
        policy=cosign_policy(),
    )
    assert len(results) == 2 and all(r.verified for r in results)
    assert results[0].digest == results[1].digest  # same payload, two signatures


def test_mixed_one_unknown_key_one_valid() -> None:
    results = verify_candidates(
        legacy_candidates("dir-img-cosign-mixed"),
        image_digest=image_digest("dir-img-cosign-mixed"),
        policy=cosign_policy(),
    )
    assert sorted(r.verified for r in results) == [False, True]
    bad = next(r for r in results if not r.verified)
    assert "does not verify with any of the 1 configured key" in bad.reason
    assert any(r.verified for r in results)  # accepted under --require any


def test_modified_manifest_is_rejected() -> None:
    case = "dir-img-cosign-modified-manifest"
    [result] = verify_candidates(
        legacy_candidates(case), image_digest=image_digest(case), policy=cosign_policy()
    )
    assert not result.verified
    assert result.signer is not None  # the signature itself verified ...
    assert f"expected {image_digest(case)}" in result.reason  # ... but for another manifest


def test_other_attachment_is_not_counted() -> None:
    case = "dir-img-cosign-other-attachment"
    cands = legacy_candidates(case)
    assert [c.layer.media_type for c in cands] == ["text/plain"]
    assert verify_candidates(cands, image_digest=image_digest(case), policy=cosign_policy()) == []


def test_unknown_key_signature_is_rejected() -> None:
    cand = parse_containers_signature((LEGACY / "unknown-cosign-key.signature").read_bytes())
    [result] = verify_candidates(
        [cand], image_digest=image_digest("dir-img-cosign-valid"), policy=cosign_policy()
    )
    assert not result.verified and "does not verify" in result.reason


@pytest.mark.parametrize("case", ["dir-img-cosign-valid", "dir-img-cosign-valid-2"])
def test_valid_cases_reject_the_wrong_key(case: str) -> None:
    wrong = load_public_key((BUNDLES / "managed-key-happy-path" / "key.pub").read_bytes())
    results = verify_candidates(
        legacy_candidates(case), image_digest=image_digest(case), policy=CosignPolicy(keys=(wrong,))
    )
    assert results and not any(r.verified for r in results)


def _payload_byte(c: SignatureCandidate) -> SignatureCandidate:
    blob = bytearray(c.blob)
    blob[blob.index(b"192.168")] ^= 0x01
    layer = SignatureLayer(
        c.layer.media_type,
        "sha256:" + hashlib.sha256(blob).hexdigest(),
        len(blob),
        c.layer.annotations,
    )
    return SignatureCandidate(c.manifest_digest, layer, bytes(blob))


def _signature_byte(c: SignatureCandidate) -> SignatureCandidate:
    annotations = dict(c.layer.annotations)
    annotations["dev.cosignproject.cosign/signature"] = flip(
        annotations["dev.cosignproject.cosign/signature"]
    )
    return SignatureCandidate(
        c.manifest_digest,
        SignatureLayer(c.layer.media_type, c.layer.digest, c.layer.size, annotations),
        c.blob,
    )


def _blob_only(c: SignatureCandidate) -> SignatureCandidate:
    blob = bytearray(c.blob)
    blob[-2] ^= 0x01
    return SignatureCandidate(c.manifest_digest, c.layer, bytes(blob))


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (_payload_byte, "does not verify"),
        (_signature_byte, "does not verify"),
        (_blob_only, "not to layer digest"),
    ],
)
def test_one_changed_byte_is_rejected(
    change: Callable[[SignatureCandidate], SignatureCandidate], reason: str
) -> None:
    [cand] = legacy_candidates("dir-img-cosign-valid")
    [result] = verify_candidates(
        [change(cand)], image_digest=image_digest("dir-img-cosign-valid"), policy=cosign_policy()
    )
    assert not result.verified and reason in result.reason


def test_one_changed_byte_in_the_image_digest_is_rejected() -> None:
    digest = image_digest("dir-img-cosign-valid")
    changed = digest[:-1] + ("0" if digest[-1] != "0" else "1")
    [result] = verify_candidates(
        legacy_candidates("dir-img-cosign-valid"), image_digest=changed, policy=cosign_policy()
    )
    assert not result.verified and "another image" in result.reason


def test_docker_reference_from_the_fixture_payload() -> None:
    cands = legacy_candidates("dir-img-cosign-valid")
    digest = image_digest("dir-img-cosign-valid")
    ok = cosign_policy(docker_reference="192.168.64.2:5000/cosign-signed-single-sample")
    assert verify_candidates(cands, image_digest=digest, policy=ok)[0].verified
    bad = cosign_policy(docker_reference="192.168.64.2:5000/other")
    assert not verify_candidates(cands, image_digest=digest, policy=bad)[0].verified


def test_rekor_pub_is_the_public_good_log() -> None:
    rekor = load_public_key((LEGACY / "rekor.pub").read_bytes())
    [log] = TrustedRoot.from_rekor_keys(rekor).tlogs
    assert public_good().tlog(log.log_id) is not None
    assert (
        base64.b64encode(log.log_id).decode()
        == bundle_doc("managed-key-happy-path")["verificationMaterial"]["tlogEntries"][0]["logId"][
            "keyId"
        ]
    )


# --------------------------------------------------------------------------- keys


@pytest.mark.parametrize(
    ("name", "label"),
    [
        ("cosign-n32768.key", b"ENCRYPTED COSIGN PRIVATE KEY"),
        ("sigstore-n32768.key", b"ENCRYPTED SIGSTORE PRIVATE KEY"),
    ],
)
def test_encrypted_keys_decrypt_and_sign(name: str, label: bytes) -> None:
    pem = (FIXTURES / "keys" / name).read_bytes()
    assert label in pem
    key = load_private_key(pem, "hello")
    assert key.algorithm == "ecdsa-p256"
    with pytest.raises(KeyFormatError, match="wrong password"):
        load_private_key(pem, "hellO")
    assert load_private_key(pem, env={"COSIGN_PASSWORD": "hello"}).public_key == key.public_key
    # sign with the cosign-made key, verify, and re-encrypt it in cosign's format
    digest = image_digest("dir-img-cosign-valid")
    art = sign_legacy(image_digest=digest, docker_reference="registry.example/app", key=key)
    layer_doc = json.loads(art.manifest)["layers"][0]
    layer = SignatureLayer(
        layer_doc["mediaType"], layer_doc["digest"], layer_doc["size"], layer_doc["annotations"]
    )
    [result] = verify_candidates(
        [SignatureCandidate(art.digest, layer, art.blobs[layer.digest])],
        image_digest=digest,
        policy=CosignPolicy(keys=(key.public_key,)),
    )
    assert result.verified, result.reason
    again = load_private_key(
        encrypt_private_key(key, "hello", pem_type=label.decode(), scrypt_n=32768), "hello"
    )
    assert again.pkcs8_der() == key.pkcs8_der()


# --------------------------------------------------------------------------- bundles, key-based


def managed_key_policy(**kwargs: Any) -> CosignPolicy:
    key = load_public_key((BUNDLES / "managed-key-happy-path" / "key.pub").read_bytes())
    return CosignPolicy(keys=(key,), trusted_root=public_good(), **kwargs)


def test_managed_key_happy_path() -> None:
    doc = bundle_doc("managed-key-happy-path")
    raw = json.dumps(doc).encode()
    pol = managed_key_policy(require_tlog=True, require_timestamp=True)
    result = verify_bundle(raw, expected_digest=message_digest(doc), policy=pol).result
    assert result.verified, result.reason
    assert (
        "tlog entry 771488337" in result.reason
        and "timestamped 2025-12-18T17:04:39" in result.reason
    )
    assert parse_bundle(raw).public_key_hint == pol.keys[0].hint


def test_managed_key_with_only_the_rekor_key() -> None:
    doc = bundle_doc("managed-key-happy-path")
    key = load_public_key((BUNDLES / "managed-key-happy-path" / "key.pub").read_bytes())
    root = TrustedRoot.from_rekor_keys(load_public_key((LEGACY / "rekor.pub").read_bytes()))
    pol = CosignPolicy(keys=(key,), trusted_root=root, require_tlog=True)
    assert verify_bundle(
        json.dumps(doc).encode(), expected_digest=message_digest(doc), policy=pol
    ).result.verified


def _tamper_signature(doc: dict[str, Any]) -> None:
    doc["messageSignature"]["signature"] = flip(doc["messageSignature"]["signature"])


def _tamper_digest(doc: dict[str, Any]) -> None:
    doc["messageSignature"]["messageDigest"]["digest"] = flip(
        doc["messageSignature"]["messageDigest"]["digest"]
    )


def _tamper_set(doc: dict[str, Any]) -> None:
    promise = doc["verificationMaterial"]["tlogEntries"][0]["inclusionPromise"]
    promise["signedEntryTimestamp"] = flip(promise["signedEntryTimestamp"], 10)


def _tamper_proof(doc: dict[str, Any]) -> None:
    hashes = doc["verificationMaterial"]["tlogEntries"][0]["inclusionProof"]["hashes"]
    hashes[3] = flip(hashes[3], 0)


def _tamper_body(doc: dict[str, Any]) -> None:
    entry = doc["verificationMaterial"]["tlogEntries"][0]
    entry["canonicalizedBody"] = flip(entry["canonicalizedBody"], 40)


def _tamper_checkpoint(doc: dict[str, Any]) -> None:
    proof = doc["verificationMaterial"]["tlogEntries"][0]["inclusionProof"]
    proof["checkpoint"]["envelope"] = proof["checkpoint"]["envelope"].replace(
        "649584076", "649584077", 1
    )
    proof["treeSize"] = "649584077"


def _tamper_timestamp(doc: dict[str, Any]) -> None:
    ts = doc["verificationMaterial"]["timestampVerificationData"]["rfc3161Timestamps"][0]
    ts["signedTimestamp"] = flip(ts["signedTimestamp"], -10)


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (_tamper_signature, "message signature does not verify"),
        (_tamper_set, "signed entry timestamp does not verify"),
        (_tamper_proof, "inclusion proof leads to root"),
        (_tamper_body, "transparency-log entry rejected"),
        (_tamper_checkpoint, "inclusion proof"),
        (_tamper_timestamp, "RFC 3161 timestamp not verified"),
    ],
)
def test_managed_key_one_changed_byte_is_rejected(
    tamper: Callable[[dict[str, Any]], None], reason: str
) -> None:
    doc = bundle_doc("managed-key-happy-path")
    expected = message_digest(doc)
    tamper(doc)
    pol = managed_key_policy(require_tlog=True, require_timestamp=True)
    result = verify_bundle(json.dumps(doc).encode(), expected_digest=expected, policy=pol).result
    assert not result.verified and reason in result.reason


def test_managed_key_changed_digest_is_rejected() -> None:
    doc = bundle_doc("managed-key-happy-path")
    expected = message_digest(doc)
    _tamper_digest(doc)
    result = verify_bundle(
        json.dumps(doc).encode(), expected_digest=expected, policy=managed_key_policy()
    ).result
    assert not result.verified
    # and the untouched bundle against another artifact digest
    other = "sha256:" + "0" * 64
    result = verify_bundle(
        json.dumps(bundle_doc("managed-key-happy-path")).encode(),
        expected_digest=other,
        policy=managed_key_policy(),
    ).result
    assert not result.verified and f"expected {other}" in result.reason


def test_managed_key_wrong_key() -> None:
    doc = bundle_doc("managed-key-happy-path")
    result = verify_bundle(
        json.dumps(doc).encode(),
        expected_digest=message_digest(doc),
        policy=cosign_policy(trusted_root=public_good()),
    ).result
    assert (
        not result.verified and "does not verify with any of the 1 configured key" in result.reason
    )


def test_managed_key_wrong_key_fail_key_does_not_parse() -> None:
    with pytest.raises(KeyFormatError, match="cannot load public key"):
        load_public_key((BUNDLES / "managed-key-wrong-key_fail" / "key.pub").read_bytes())


# ------------------------------------------------ our Rekor checks on the conformance cases


def _entry_check(case: str) -> str | None:
    doc = bundle_doc(case)
    bundle = parse_bundle(json.dumps(doc).encode())
    cert = bundle.certificates[0] if bundle.certificates else None
    signatures = list(bundle.envelope.signatures) if bundle.envelope else [bundle.signature]
    return verify_entry(
        bundle.tlog_entries[0],
        public_good(),
        signatures=signatures,
        data_digest=bundle.signed_data_digest,
        cert_der=cert,
    )


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("happy-path-v0.3-new-mediaType", None),
        ("set-invalid-signature_fail", "signed entry timestamp does not verify"),
        ("signature-mismatch_fail", "records a different signature"),
        ("dsse-mismatch-sig_fail", "signatures do not match the envelope"),
    ],
)
def test_transparency_log_checks_on_conformance_cases(case: str, reason: str | None) -> None:
    got = _entry_check(case)
    if reason is None:
        assert got is None
    else:
        assert got is not None and reason in got


# ------------------------------------------------ bundles, keyless (sigstore-python)


def keyless_policy(
    identity: KeylessIdentity, predicate: str = COSIGN_SIGN_PREDICATE
) -> CosignPolicy:
    pytest.importorskip("sigstore", reason="keyless verification needs the 'keyless' extra")
    return CosignPolicy(
        identities=(identity,), trusted_root=public_good(), predicate_types=frozenset({predicate})
    )


def test_keyless_happy_path_v03() -> None:
    doc = bundle_doc("happy-path-v0.3-new-mediaType")
    raw = json.dumps(doc).encode()
    exact = keyless_policy(KeylessIdentity(subject=BEACON, issuer=ACTIONS_ISSUER))
    result = verify_bundle(raw, expected_digest=message_digest(doc), policy=exact).result
    assert result.verified, result.reason
    assert result.signer == f"{BEACON} ({ACTIONS_ISSUER})"
    regex = keyless_policy(
        KeylessIdentity(
            subject_regex=r"https://github\.com/sigstore-conformance/.*",
            issuer_regex=r"https://token\.actions\..*",
        )
    )
    assert verify_bundle(raw, expected_digest=message_digest(doc), policy=regex).result.verified


@pytest.mark.parametrize(
    "identity",
    [
        KeylessIdentity(
            subject="https://github.com/someone/else/.github/workflows/x.yml@refs/heads/main",
            issuer=ACTIONS_ISSUER,
        ),
        KeylessIdentity(subject=BEACON, issuer="https://accounts.google.com"),
        KeylessIdentity(
            subject_regex=r"https://github\.com/sigstore-conformance/x.*", issuer=ACTIONS_ISSUER
        ),
    ],
)
def test_keyless_wrong_identity_is_rejected(identity: KeylessIdentity) -> None:
    doc = bundle_doc("happy-path-v0.3-new-mediaType")
    result = verify_bundle(
        json.dumps(doc).encode(),
        expected_digest=message_digest(doc),
        policy=keyless_policy(identity),
    ).result
    assert not result.verified and "certificate identity got" in result.reason


def test_keyless_changed_signature_byte_is_rejected() -> None:
    doc = bundle_doc("happy-path-v0.3-new-mediaType")
    _tamper_signature(doc)
    pol = keyless_policy(KeylessIdentity(subject=BEACON, issuer=ACTIONS_ISSUER))
    result = verify_bundle(
        json.dumps(doc).encode(),
        expected_digest=message_digest(bundle_doc("happy-path-v0.3-new-mediaType")),
        policy=pol,
    ).result
    assert not result.verified


@pytest.mark.parametrize("case", ["signature-mismatch_fail", "set-invalid-signature_fail"])
def test_keyless_message_failures(case: str) -> None:
    doc = bundle_doc(case)
    pol = keyless_policy(KeylessIdentity(subject_regex=".*", issuer_regex=".*"))
    result = verify_bundle(
        json.dumps(doc).encode(), expected_digest=message_digest(doc), policy=pol
    ).result
    assert not result.verified and "keyless verification failed" in result.reason


def test_keyless_dsse_mismatch_fails() -> None:
    doc = bundle_doc("dsse-mismatch-sig_fail")
    statement = json.loads(base64.b64decode(doc["dsseEnvelope"]["payload"]))
    subject = "sha256:" + statement["subject"][0]["digest"]["sha256"]
    pol = keyless_policy(
        KeylessIdentity(subject_regex=".*", issuer_regex=".*"), predicate=SLSA_PROVENANCE_V1
    )
    result = verify_bundle(json.dumps(doc).encode(), expected_digest=subject, policy=pol).result
    assert not result.verified and "keyless verification failed" in result.reason


def test_keyless_bundle_without_identity_is_rejected() -> None:
    doc = bundle_doc("happy-path-v0.3-new-mediaType")
    result = verify_bundle(
        json.dumps(doc).encode(), expected_digest=message_digest(doc), policy=cosign_policy()
    ).result
    assert not result.verified and "no keyless identity configured" in result.reason
