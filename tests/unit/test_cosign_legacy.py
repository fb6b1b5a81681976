"""Cosign legacy `.sig` signatures: sign → manifest → candidates → verify, and every way
a signature can be wrong. Real keys and real signatures throughout; a test Rekor key signs
real SETs."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest

from regwarden.errors import UsageError
from regwarden.signatures import (
    SIMPLE_SIGNING_MEDIA_TYPE,
    CosignPolicy,
    PrivateKey,
    SignatureCandidate,
    SignatureFormatError,
    SignatureLayer,
    TrustedRoot,
    parse_payload,
    parse_signature_manifest,
    sign_legacy,
    signature_tag,
    simple_signing_payload,
    verify_candidates,
)
from regwarden.signatures.keys import generate_private_key

IMAGE = "sha256:" + hashlib.sha256(b"an image manifest").hexdigest()
OTHER = "sha256:" + hashlib.sha256(b"another image manifest").hexdigest()
REF = "registry.example.com/team/app"
ALGORITHMS = ["ecdsa-p256", "ecdsa-p384", "ecdsa-p521", "rsa", "ed25519"]


@pytest.fixture(scope="module")
def keys() -> dict[str, PrivateKey]:
    return {name: generate_private_key(name, rsa_bits=2048) for name in ALGORITHMS}  # type: ignore[arg-type]


def candidates_of(manifest: bytes, blobs: dict[str, bytes]) -> list[SignatureCandidate]:
    """What discovery does: parse the manifest and fetch each layer blob."""
    parsed = parse_signature_manifest(manifest)
    digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    return [SignatureCandidate(digest, layer, blobs[layer.digest]) for layer in parsed.layers]


def signed(key: PrivateKey, **kwargs: Any) -> tuple[list[SignatureCandidate], bytes]:
    art = sign_legacy(image_digest=IMAGE, docker_reference=REF, key=key, **kwargs)
    return candidates_of(art.manifest, dict(art.blobs)), art.manifest


def policy(*keys: PrivateKey, **kwargs: Any) -> CosignPolicy:
    return CosignPolicy(keys=tuple(k.public_key for k in keys), **kwargs)


def resign(candidate: SignatureCandidate, key: PrivateKey, blob: bytes) -> SignatureCandidate:
    """A candidate for a hand-made payload, correctly signed and digested."""
    sig = base64.b64encode(key.sign(blob)).decode()
    layer = SignatureLayer(
        media_type=SIMPLE_SIGNING_MEDIA_TYPE,
        digest="sha256:" + hashlib.sha256(blob).hexdigest(),
        size=len(blob),
        annotations={"dev.cosignproject.cosign/signature": sig},
    )
    return SignatureCandidate(candidate.manifest_digest, layer, blob)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_round_trip_every_key_type(keys: dict[str, PrivateKey], algorithm: str) -> None:
    key = keys[algorithm]
    cands, _ = signed(key)
    [result] = verify_candidates(cands, image_digest=IMAGE, policy=policy(key))
    assert result.verified, result.reason
    assert result.signer == key.public_key.key_id
    assert result.format == "cosign-legacy"
    assert result.digest == cands[0].layer.digest


def test_payload_is_byte_exact_cosign_form() -> None:
    payload = simple_signing_payload(IMAGE, REF)
    expected = (
        '{"critical":{"identity":{"docker-reference":"' + REF + '"},"image":'
        '{"docker-manifest-digest":"' + IMAGE + '"},"type":"cosign container image signature"},'
        '"optional":null}'
    )
    assert payload == expected.encode()
    with_annotations = json.loads(simple_signing_payload(IMAGE, REF, {"b": "2", "a": "<1>"}))
    assert list(with_annotations["optional"]) == ["a", "b"]
    assert b"\\u003c1\\u003e" in simple_signing_payload(IMAGE, REF, {"a": "<1>"})


def test_manifest_layout_and_tag(keys: dict[str, PrivateKey]) -> None:
    art = sign_legacy(image_digest=IMAGE, docker_reference=REF, key=keys["ecdsa-p256"])
    assert art.tag == signature_tag(IMAGE) == IMAGE.replace(":", "-") + ".sig"
    manifest = json.loads(art.manifest)
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    config = json.loads(art.blobs[manifest["config"]["digest"]])
    assert config["rootfs"]["diff_ids"] == [manifest["layers"][0]["digest"]]
    layer = manifest["layers"][0]
    assert layer["mediaType"] == SIMPLE_SIGNING_MEDIA_TYPE
    assert hashlib.sha256(art.blobs[layer["digest"]]).hexdigest() == layer["digest"][7:]
    assert layer["size"] == len(art.blobs[layer["digest"]])
    for digest, blob in art.blobs.items():
        assert digest == "sha256:" + hashlib.sha256(blob).hexdigest()


def test_appending_keeps_older_signatures(keys: dict[str, PrivateKey]) -> None:
    first = sign_legacy(image_digest=IMAGE, docker_reference=REF, key=keys["ecdsa-p256"])
    second = sign_legacy(
        image_digest=IMAGE, docker_reference=REF, key=keys["rsa"], existing_manifest=first.manifest
    )
    blobs = {**first.blobs, **second.blobs}
    cands = candidates_of(second.manifest, blobs)
    assert len(cands) == 2
    results = verify_candidates(
        cands, image_digest=IMAGE, policy=policy(keys["ecdsa-p256"], keys["rsa"])
    )
    assert [r.signer for r in results] == [
        keys["ecdsa-p256"].public_key.key_id,
        keys["rsa"].public_key.key_id,
    ]
    assert all(r.verified for r in results)
    only_first = verify_candidates(cands, image_digest=IMAGE, policy=policy(keys["ecdsa-p256"]))
    assert [r.verified for r in only_first] == [True, False]
    assert "does not verify with any of the 1 configured key" in only_first[1].reason


def test_docker_media_type_is_kept_when_appending(keys: dict[str, PrivateKey]) -> None:
    first = sign_legacy(image_digest=IMAGE, docker_reference=REF, key=keys["ecdsa-p256"])
    doc = json.loads(first.manifest)
    doc["mediaType"] = "application/vnd.docker.distribution.manifest.v2+json"
    second = sign_legacy(
        image_digest=IMAGE,
        docker_reference=REF,
        key=keys["ecdsa-p256"],
        existing_manifest=json.dumps(doc).encode(),
    )
    out = json.loads(second.manifest)
    assert out["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert out["config"]["mediaType"] == "application/vnd.docker.container.image.v1+json"
    assert len(out["layers"]) == 2


def test_wrong_image_digest_is_rejected(keys: dict[str, PrivateKey]) -> None:
    key = keys["ecdsa-p256"]
    cands, _ = signed(key)
    [result] = verify_candidates(cands, image_digest=OTHER, policy=policy(key))
    assert not result.verified
    assert f"expected {OTHER}" in result.reason and "another image" in result.reason


def test_swapped_blob_fails_the_digest_check(keys: dict[str, PrivateKey]) -> None:
    key = keys["ecdsa-p256"]
    cands, _ = signed(key)
    other, _ = signed(key)  # same payload bytes, so use a payload for another image instead
    art = sign_legacy(image_digest=OTHER, docker_reference=REF, key=key)
    foreign_blob = next(
        b for d, b in art.blobs.items() if d == json.loads(art.manifest)["layers"][0]["digest"]
    )
    swapped = SignatureCandidate(cands[0].manifest_digest, cands[0].layer, foreign_blob)
    [result] = verify_candidates([swapped], image_digest=IMAGE, policy=policy(key))
    assert not result.verified
    assert "not to layer digest" in result.reason
    assert other[0].layer.digest == cands[0].layer.digest  # deterministic payload


@pytest.mark.parametrize("position", ["payload", "signature"])
def test_one_changed_byte_is_rejected(keys: dict[str, PrivateKey], position: str) -> None:
    key = keys["ecdsa-p256"]
    cands, _ = signed(key)
    cand = cands[0]
    if position == "payload":
        blob = cand.blob.replace(b"cosign container", b"cosign containeR")
        layer = SignatureLayer(
            cand.layer.media_type,
            "sha256:" + hashlib.sha256(blob).hexdigest(),
            len(blob),
            cand.layer.annotations,
        )
        cand = SignatureCandidate(cand.manifest_digest, layer, blob)
    else:
        sig = bytearray(
            base64.b64decode(cand.layer.annotations["dev.cosignproject.cosign/signature"])
        )
        sig[-1] ^= 0x01
        annotations = {"dev.cosignproject.cosign/signature": base64.b64encode(bytes(sig)).decode()}
        cand = SignatureCandidate(
            cand.manifest_digest,
            SignatureLayer(cand.layer.media_type, cand.layer.digest, cand.layer.size, annotations),
            cand.blob,
        )
    [result] = verify_candidates([cand], image_digest=IMAGE, policy=policy(key))
    assert not result.verified
    assert "does not verify" in result.reason


def test_bad_claims_type_is_rejected(keys: dict[str, PrivateKey]) -> None:
    key = keys["ecdsa-p256"]
    cands, _ = signed(key)
    blob = cands[0].blob.replace(b"cosign container image signature", b"atomic container signature")
    [result] = verify_candidates(
        [resign(cands[0], key, blob)], image_digest=IMAGE, policy=policy(key)
    )
    assert not result.verified
    assert "critical.type got 'atomic container signature'" in result.reason


def test_old_capitalised_payload_keys_are_accepted(keys: dict[str, PrivateKey]) -> None:
    key = keys["ecdsa-p256"]
    cands, _ = signed(key)
    old = (
        '{"Critical":{"Identity":{"Docker-reference":"' + REF + '"},"Image":'
        '{"Docker-manifest-digest":"' + IMAGE + '"},"Type":"cosign container image signature"},'
        '"Optional":{"tag":"v1"}}'
    ).encode()
    claims = parse_payload(old)
    assert (claims.manifest_digest, claims.docker_reference, claims.optional) == (
        IMAGE,
        REF,
        {"tag": "v1"},
    )
    pol = policy(key, docker_reference=REF, annotations={"tag": "v1"})
    [result] = verify_candidates([resign(cands[0], key, old)], image_digest=IMAGE, policy=pol)
    assert result.verified, result.reason


def test_docker_reference_checked_only_when_asked(keys: dict[str, PrivateKey]) -> None:
    key = keys["ecdsa-p256"]
    cands, _ = signed(key)
    assert verify_candidates(cands, image_digest=IMAGE, policy=policy(key))[0].verified
    ok = policy(key, docker_reference=f"{REF}:v1.2")  # payload names the repository only
    assert not verify_candidates(cands, image_digest=IMAGE, policy=ok)[0].verified
    assert verify_candidates(cands, image_digest=IMAGE, policy=policy(key, docker_reference=REF))[
        0
    ].verified
    [bad] = verify_candidates(
        cands, image_digest=IMAGE, policy=policy(key, docker_reference="registry.example.com/x")
    )
    assert not bad.verified and "docker-reference got" in bad.reason


def test_annotations_matched_when_asked(keys: dict[str, PrivateKey]) -> None:
    key = keys["ecdsa-p256"]
    cands, _ = signed(key, annotations={"env": "prod", "sha": "abc"})
    assert verify_candidates(
        cands, image_digest=IMAGE, policy=policy(key, annotations={"env": "prod"})
    )[0].verified
    [bad] = verify_candidates(
        cands, image_digest=IMAGE, policy=policy(key, annotations={"env": "dev"})
    )
    assert not bad.verified and "annotation 'env' got 'prod', expected 'dev'" in bad.reason


def test_non_signature_layers_are_not_counted(keys: dict[str, PrivateKey]) -> None:
    key = keys["ecdsa-p256"]
    cands, _ = signed(key)
    other = SignatureCandidate(
        "",
        SignatureLayer(
            "text/plain",
            "sha256:" + hashlib.sha256(b"x").hexdigest(),
            1,
            cands[0].layer.annotations,
        ),
        b"x",
    )
    results = verify_candidates([other, *cands], image_digest=IMAGE, policy=policy(key))
    assert len(results) == 1 and results[0].verified


def test_missing_or_garbled_signature_annotation(keys: dict[str, PrivateKey]) -> None:
    key = keys["ecdsa-p256"]
    cands, _ = signed(key)
    c = cands[0]
    none = SignatureCandidate(
        "", SignatureLayer(c.layer.media_type, c.layer.digest, c.layer.size, {}), c.blob
    )
    garbled = SignatureCandidate(
        "",
        SignatureLayer(
            c.layer.media_type,
            c.layer.digest,
            c.layer.size,
            {"dev.cosignproject.cosign/signature": "!!"},
        ),
        c.blob,
    )
    r1, r2 = verify_candidates([none, garbled], image_digest=IMAGE, policy=policy(key))
    assert not r1.verified and "no dev.cosignproject.cosign/signature annotation" in r1.reason
    assert not r2.verified and "invalid base64" in r2.reason


def test_policy_and_digest_validation() -> None:
    with pytest.raises(UsageError, match="trusts nothing"):
        CosignPolicy()
    with pytest.raises(UsageError, match="need a trusted root"):
        CosignPolicy(keys=(generate_private_key().public_key,), require_tlog=True)
    with pytest.raises(SignatureFormatError, match="expected sha256:<64 lowercase hex>"):
        verify_candidates(
            [],
            image_digest="sha256:ABC",
            policy=CosignPolicy(keys=(generate_private_key().public_key,)),
        )


def test_manifest_parser_rejects_structural_problems() -> None:
    with pytest.raises(SignatureFormatError, match="expected 2"):
        parse_signature_manifest(b'{"schemaVersion": 1}')
    with pytest.raises(SignatureFormatError, match="got media type"):
        parse_signature_manifest(
            b'{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json"}'
        )
    with pytest.raises(SignatureFormatError, match="expected a digest"):
        parse_signature_manifest(
            b'{"schemaVersion": 2, "layers": [{"mediaType": "x", "digest": "md5:1"}]}'
        )
    with pytest.raises(SignatureFormatError, match="invalid JSON"):
        parse_signature_manifest(b"{")


# --------------------------------------------------------------------------- Rekor SETs


def rekor_bundle(
    rekor: PrivateKey, cand: SignatureCandidate, signer: PrivateKey, *, index: int = 7
) -> str:
    """A real `dev.sigstore.cosign/bundle` annotation signed by a test Rekor key."""
    sig_b64 = cand.layer.annotations["dev.cosignproject.cosign/signature"]
    body = {
        "apiVersion": "0.0.1",
        "kind": "hashedrekord",
        "spec": {
            "data": {
                "hash": {"algorithm": "sha256", "value": hashlib.sha256(cand.blob).hexdigest()}
            },
            "signature": {
                "content": sig_b64,
                "publicKey": {"content": base64.b64encode(signer.public_key.pem).decode()},
            },
        },
    }
    payload = {
        "body": base64.b64encode(json.dumps(body, separators=(",", ":")).encode()).decode(),
        "integratedTime": 1700000000,
        "logIndex": index,
        "logID": rekor.public_key.key_id,
    }
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    set_sig = rekor.sign(canonical)
    return json.dumps(
        {"SignedEntryTimestamp": base64.b64encode(set_sig).decode(), "Payload": payload}
    )


def with_annotation(cand: SignatureCandidate, key: str, value: str) -> SignatureCandidate:
    annotations = {**cand.layer.annotations, key: value}
    layer = SignatureLayer(cand.layer.media_type, cand.layer.digest, cand.layer.size, annotations)
    return SignatureCandidate(cand.manifest_digest, layer, cand.blob)


def test_rekor_set_verified_and_tampering_detected(keys: dict[str, PrivateKey]) -> None:
    key = keys["ecdsa-p256"]
    rekor = generate_private_key()
    root = TrustedRoot.from_rekor_keys(rekor.public_key)
    cands, _ = signed(key)
    good = with_annotation(
        cands[0], "dev.sigstore.cosign/bundle", rekor_bundle(rekor, cands[0], key)
    )
    pol = policy(key, trusted_root=root, require_tlog=True)
    [result] = verify_candidates([good], image_digest=IMAGE, policy=pol)
    assert result.verified, result.reason
    assert "Rekor entry 7 integrated 2023-11-14" in result.reason

    doc = json.loads(good.layer.annotations["dev.sigstore.cosign/bundle"])
    doc["Payload"]["integratedTime"] += 1
    tampered = with_annotation(cands[0], "dev.sigstore.cosign/bundle", json.dumps(doc))
    [bad] = verify_candidates([tampered], image_digest=IMAGE, policy=pol)
    assert not bad.verified and "signed entry timestamp does not verify" in bad.reason

    other_rekor = generate_private_key()
    foreign = with_annotation(
        cands[0], "dev.sigstore.cosign/bundle", rekor_bundle(other_rekor, cands[0], key)
    )
    [unknown] = verify_candidates([foreign], image_digest=IMAGE, policy=pol)
    assert not unknown.verified and "unknown log" in unknown.reason


def test_rekor_entry_must_record_this_signature_and_key(keys: dict[str, PrivateKey]) -> None:
    key, other = keys["ecdsa-p256"], keys["ecdsa-p384"]
    rekor = generate_private_key()
    pol = policy(key, trusted_root=TrustedRoot.from_rekor_keys(rekor.public_key))
    cands, _ = signed(key)
    second, _ = signed(key)  # another (randomised) ECDSA signature over the same payload
    entry_for_second = rekor_bundle(rekor, second[0], key)
    [r1] = verify_candidates(
        [with_annotation(cands[0], "dev.sigstore.cosign/bundle", entry_for_second)],
        image_digest=IMAGE,
        policy=pol,
    )
    assert not r1.verified and "different signature" in r1.reason
    entry_other_key = rekor_bundle(rekor, cands[0], other)
    [r2] = verify_candidates(
        [with_annotation(cands[0], "dev.sigstore.cosign/bundle", entry_other_key)],
        image_digest=IMAGE,
        policy=pol,
    )
    assert not r2.verified and "different public key" in r2.reason


def test_require_tlog_without_bundle_fails(keys: dict[str, PrivateKey]) -> None:
    key = keys["ecdsa-p256"]
    root = TrustedRoot.from_rekor_keys(generate_private_key().public_key)
    cands, _ = signed(key)
    [result] = verify_candidates(
        cands, image_digest=IMAGE, policy=policy(key, trusted_root=root, require_tlog=True)
    )
    assert not result.verified and "transparency-log entry is required" in result.reason
    assert verify_candidates(cands, image_digest=IMAGE, policy=policy(key, trusted_root=root))[
        0
    ].verified
