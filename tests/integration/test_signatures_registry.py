"""Signatures against the real local registry: made by `regwarden sign`, found by discovery
(tags and the referrers tag schema; distribution 2.8 has no referrers API), verified by
`regwarden verify`. Forged, misplaced and tampered signatures fail closed."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from support.cli import run_cli
from support.registries import PushImage

from regwarden.devtools import LocalRegistry, make_multiarch, push_image
from regwarden.oci import RegistryClient, referrers_tag
from regwarden.reference import ImageRef
from regwarden.signatures import (
    CosignPolicy,
    discover,
    publish,
    sign_bundle,
    sign_legacy,
    signature_tag,
    verify_image,
)
from regwarden.signatures.keys import encrypt_private_key, generate_private_key

pytestmark = pytest.mark.integration
NOW = datetime(2026, 11, 27, tzinfo=UTC)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two signing keys (cosign-encrypted, password 'pw') and their public halves."""
    root = tmp_path_factory.mktemp("keys")
    out: dict[str, Path] = {}
    for name, algo in (("a", "ecdsa-p256"), ("b", "ed25519"), ("c", "ecdsa-p384")):
        key = generate_private_key(algo)  # type: ignore[arg-type]
        (root / f"{name}.key").write_bytes(encrypt_private_key(key, "pw", scrypt_n=32768))
        pem = key.public_key.pem
        (root / f"{name}.pub").write_bytes(pem if isinstance(pem, bytes) else pem.encode())
        out[name] = root / f"{name}.key"
        out[f"{name}.pub"] = root / f"{name}.pub"
    return out


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, env={"COSIGN_PASSWORD": "pw", "PATH": "/usr/bin:/bin"})


def verify_json(*args: str) -> tuple[int, dict[str, object]]:
    proc = cli("verify", *args, "--output", "json")
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, (json.loads(proc.stdout) if proc.stdout else {})


@pytest.mark.parametrize("fmt", ["legacy", "bundle"])
def test_sign_then_verify_by_tag_resolves_to_digest(
    registry: LocalRegistry, repo: str, push: PushImage, keys: dict[str, Path], fmt: str
) -> None:
    image = push(repo, "1.0.0", seed=11)
    ref = f"{registry.host}/{repo}:1.0.0"
    signed = cli("sign", ref, "--key", str(keys["a"]), "--format", fmt)
    assert signed.returncode == 0, signed.stderr
    code, report = verify_json(ref, "--key", str(keys["a.pub"]))
    assert code == 0, report
    assert report["digest"] == image.manifest_digest
    sigs = report["signatures"]
    assert isinstance(sigs, list) and len(sigs) == 1
    assert sigs[0]["verified"] is True
    assert sigs[0]["format"] == ("cosign-legacy" if fmt == "legacy" else "cosign-bundle")
    # the wrong key: the signature is reported, the requirement is not met
    code, report = verify_json(ref, "--key", str(keys["b.pub"]))
    assert code == 1
    assert report["met"] is False


def test_unsigned_image_fails_and_table_says_why(
    registry: LocalRegistry, repo: str, push: PushImage, keys: dict[str, Path]
) -> None:
    push(repo, "v1", seed=12)
    proc = cli("verify", f"{registry.host}/{repo}:v1", "--key", str(keys["a.pub"]))
    assert proc.returncode == 1
    assert "no signatures found" in proc.stdout


def test_bundle_is_found_through_the_referrers_tag_schema(
    registry: LocalRegistry,
    client: RegistryClient,
    repo: str,
    push: PushImage,
    keys: dict[str, Path],
) -> None:
    image = push(repo, "v1", seed=13)
    assert (
        cli(
            "sign", f"{registry.host}/{repo}:v1", "--key", str(keys["a"]), "--format", "bundle"
        ).returncode
        == 0
    )
    # distribution 2.8 has no referrers API: the signer kept the sha256-<hex> index tag
    index = client.get_manifest(repo, referrers_tag(image.manifest_digest))
    assert index.is_index and len(index.manifests) == 1
    found = discover(client, repo, image.manifest_digest)
    assert len(found.cosign) == 1 and found.cosign[0].layer.media_type.startswith(
        "application/vnd.dev.sigstore.bundle"
    )


def test_multi_signature_sig_manifest_and_require_all(
    registry: LocalRegistry,
    client: RegistryClient,
    repo: str,
    push: PushImage,
    keys: dict[str, Path],
) -> None:
    image = push(repo, "v1", seed=14)
    ref = f"{registry.host}/{repo}@{image.manifest_digest}"
    for k in ("a", "b"):
        assert cli("sign", ref, "--key", str(keys[k])).returncode == 0
    sig = client.get_manifest(repo, signature_tag(image.manifest_digest, "sig"))
    assert len(sig.data["layers"]) == 2  # appended, not replaced
    both = ("--key", str(keys["a.pub"]), "--key", str(keys["b.pub"]))
    assert verify_json(ref, *both)[0] == 0
    code, report = verify_json(ref, *both, "--key", str(keys["c.pub"]))
    assert code == 1 and report["unmet"] and "key" in str(report["unmet"])
    assert verify_json(ref, *both, "--key", str(keys["c.pub"]), "--require", "any")[0] == 0


def test_signature_copied_to_another_digest_fails(
    registry: LocalRegistry,
    client: RegistryClient,
    repo: str,
    push: PushImage,
    keys: dict[str, Path],
) -> None:
    signed = push(repo, "signed", seed=15)
    other = push(repo, "other", seed=16)
    assert cli("sign", f"{registry.host}/{repo}:signed", "--key", str(keys["a"])).returncode == 0
    sig = client.get_manifest(repo, signature_tag(signed.manifest_digest, "sig"))
    client.put_manifest(repo, signature_tag(other.manifest_digest, "sig"), sig.raw, sig.media_type)
    code, report = verify_json(f"{registry.host}/{repo}:other", "--key", str(keys["a.pub"]))
    assert code == 1
    (result,) = report["signatures"]  # type: ignore[misc]
    assert result["verified"] is False
    assert signed.manifest_digest in result["reason"] or "digest" in result["reason"]


def test_swapped_payload_blob_fails(
    registry: LocalRegistry,
    client: RegistryClient,
    repo: str,
    push: PushImage,
    keys: dict[str, Path],
) -> None:
    image = push(repo, "v1", seed=17)
    ref = f"{registry.host}/{repo}:v1"
    assert cli("sign", ref, "--key", str(keys["a"])).returncode == 0
    tag = signature_tag(image.manifest_digest, "sig")
    sig = client.get_manifest(repo, tag)
    # an attacker re-points the layer at a different payload (same claims, extra field)
    doc = json.loads(sig.raw)
    payload = client.get_blob(repo, doc["layers"][0]["digest"])
    forged = payload.replace(b'"optional":null', b'"optional":{"evil":"1"}')
    assert forged != payload
    digest = client.push_blob(repo, forged)
    doc["layers"][0]["digest"], doc["layers"][0]["size"] = digest, len(forged)
    client.put_manifest(repo, tag, json.dumps(doc).encode(), sig.media_type)
    code, report = verify_json(ref, "--key", str(keys["a.pub"]))
    assert code == 1
    (result,) = report["signatures"]  # type: ignore[misc]
    assert result["verified"] is False and "signature" in result["reason"]


def test_index_signed_at_the_index_digest(
    registry: LocalRegistry, client: RegistryClient, repo: str, keys: dict[str, Path]
) -> None:
    index = make_multiarch(seed=18)
    push_image(client, repo, index, tag="multi")
    ref = f"{registry.host}/{repo}:multi"
    assert cli("sign", ref, "--key", str(keys["a"]), "--format", "bundle").returncode == 0
    code, report = verify_json(ref, "--key", str(keys["a.pub"]))
    assert code == 0 and report["digest"] == index.manifest_digest
    # a child is a different digest: the index signature does not cover it
    child = index.children[0].manifest_digest
    assert verify_json(f"{registry.host}/{repo}@{child}", "--key", str(keys["a.pub"]))[0] == 1


def test_python_api_signature_in_another_repository(
    registry: LocalRegistry,
    client: RegistryClient,
    repo: str,
    push: PushImage,
    keys: dict[str, Path],
) -> None:
    from regwarden.signatures.keys import load_private_key, load_public_key

    image = push(repo, "v1", seed=19)
    key = load_private_key(keys["a"].read_bytes(), "pw")
    art = sign_legacy(
        image_digest=image.manifest_digest, docker_reference=f"{registry.host}/{repo}", key=key
    )
    publish(client, f"{repo}-signatures", art)
    art2 = sign_bundle(
        subject={
            "mediaType": image.media_type,
            "digest": image.manifest_digest,
            "size": len(image.manifest),
        },
        key=key,
        created=NOW,
    )
    publish(client, f"{repo}-signatures", art2)
    policy = CosignPolicy(keys=(load_public_key(keys["a.pub"].read_bytes()),))
    img = ImageRef.parse(f"{registry.host}/{repo}@{image.manifest_digest}")
    alone = verify_image(client, img, cosign=policy, notation=None, now=NOW)
    assert not alone.met  # nothing in the image's own repository
    elsewhere = verify_image(
        client, img, cosign=policy, notation=None, now=NOW, signature_repo=f"{repo}-signatures"
    )
    assert elsewhere.met and len([r for r in elsewhere.results if r.verified]) == 2
    code, _ = verify_json(
        str(img), "--key", str(keys["a.pub"]), "--signature-repository", f"{repo}-signatures"
    )
    assert code == 0
