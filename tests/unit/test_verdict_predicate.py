"""The verdict predicate (pure), the attestation signers, and the writers taking a Signer:
a verdict attested with a file key verifies with the public key through the verifier's
public API, as a legacy `.att` layer and as a bundle, with the statement about the digest."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from regwarden import __version__
from regwarden.attest import (
    SIGNERS,
    VERDICT_PREDICATE,
    FileSigner,
    PolicyIdentity,
    Signer,
    build_predicate,
    policy_identity,
    signer_for,
)
from regwarden.errors import UsageError
from regwarden.gate import Facts
from regwarden.model import (
    CheckOutcome,
    CheckResult,
    Finding,
    Outcome,
    ScanReport,
    Severity,
    SignatureResult,
    Verdict,
)
from regwarden.reference import ImageRef
from regwarden.signatures import (
    CosignPolicy,
    PrivateKey,
    SignatureCandidate,
    attest_bundle,
    attest_legacy,
    parse_signature_manifest,
    verify_attestations,
)
from regwarden.signatures.keys import encrypt_private_key, generate_private_key

DIGEST = "sha256:" + "ab" * 32
NOW = datetime(2026, 12, 7, 12, 30, 5, tzinfo=UTC)
IMAGE = ImageRef(registry="reg.example:5000", repository="team/app", digest=DIGEST)


def _verdict(outcome: Outcome) -> Verdict:
    return Verdict(
        image=IMAGE,
        outcome=outcome,
        checks=(
            CheckResult(name="signatures", outcome=CheckOutcome.PASS, reason="1 valid cosign"),
            CheckResult(name="vulnerabilities", outcome=CheckOutcome.FAIL, reason="1 critical"),
        ),
        evaluated_at=NOW,
    )


def _facts() -> Facts:
    return Facts(
        image=IMAGE,
        tags=("v1",),
        pushed_at=NOW,
        signatures=(
            SignatureResult(
                format="cosign-legacy", digest="sha256:" + "11" * 32, verified=True, signer="k1"
            ),
            SignatureResult(
                format="cosign-bundle", digest="sha256:" + "22" * 32, verified=False, reason="x"
            ),
        ),
        scans=(
            ScanReport(
                digest=DIGEST,
                scanner="trivy",
                source="trivy-referrer",
                scanned_at=datetime(2026, 12, 7, 12, 0, tzinfo=UTC),
                findings=(Finding(id="CVE-1", severity=Severity.CRITICAL),),
            ),
        ),
    )


def test_predicate_shape() -> None:
    policy = PolicyIdentity(name="regwarden.yaml", digest="sha256:" + "cd" * 32)
    got = build_predicate(_verdict(Outcome.FAILED), _facts(), policy, now=NOW)
    assert got == {
        "verdict": "FAILED",
        "decidedAt": "2026-12-07T12:30:05Z",
        "image": {"registry": "reg.example:5000", "repository": "team/app", "digest": DIGEST},
        "policy": {"name": "regwarden.yaml", "digest": "sha256:" + "cd" * 32},
        "regwarden": {"version": __version__},
        "checks": [
            {"name": "signatures", "outcome": "pass", "reason": "1 valid cosign"},
            {"name": "vulnerabilities", "outcome": "fail", "reason": "1 critical"},
        ],
        "evidence": {
            # only verified signatures are evidence; the unverified bundle is not
            "signatures": [
                {"format": "cosign-legacy", "signer": "k1", "digest": "sha256:" + "11" * 32}
            ],
            "scans": [
                {
                    "source": "trivy-referrer",
                    "scanner": "trivy",
                    "scannedAt": "2026-12-07T12:00:00Z",
                    "counts": {
                        "UNKNOWN": 0,
                        "NEGLIGIBLE": 0,
                        "LOW": 0,
                        "MEDIUM": 0,
                        "HIGH": 0,
                        "CRITICAL": 1,
                    },
                }
            ],
        },
    }
    json.dumps(got)  # JSON as it stands: no datetimes or enums left


def test_policy_identity_is_stable_and_tells_policies_apart() -> None:
    a = policy_identity({"b": 1, "a": [1, 2]}, "p")
    assert a == policy_identity({"a": [1, 2], "b": 1}, "p")
    assert a.digest.startswith("sha256:") and len(a.digest) == 71
    assert a.digest != policy_identity({"a": [1, 2], "b": 2}, "p").digest


def _pkcs8(key: PrivateKey) -> bytes:
    return key.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _candidates(manifest: bytes, blobs: dict[str, bytes]) -> list[SignatureCandidate]:
    parsed = parse_signature_manifest(manifest)
    return [
        SignatureCandidate(
            manifest_digest="sha256:" + "00" * 32, layer=layer, blob=blobs[layer.digest]
        )
        for layer in parsed.layers
    ]


def _verify(signer: Signer, manifest: bytes, blobs: dict[str, bytes], digest: str) -> list[bool]:
    policy = CosignPolicy(
        keys=(signer.public_key(),), predicate_types=frozenset({VERDICT_PREDICATE})
    )
    results = verify_attestations(_candidates(manifest, blobs), image_digest=digest, policy=policy)
    return [r.result.verified for r in results]


@pytest.mark.parametrize("algorithm", ["ecdsa-p256", "ecdsa-p384", "rsa", "ed25519"])
def test_file_signer_attests_both_formats(
    tmp_path: Path, algorithm: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = generate_private_key(algorithm)  # type: ignore[arg-type]
    path = tmp_path / "cosign.key"
    if algorithm == "ecdsa-p256":  # cosign's own envelope, its password from the environment
        path.write_bytes(encrypt_private_key(key, "pw", scrypt_n=32768))
        monkeypatch.setenv("COSIGN_PASSWORD", "pw")
    else:
        path.write_bytes(_pkcs8(key))
    signer = signer_for(f"file://{path}")
    assert isinstance(signer, FileSigner) and isinstance(signer, Signer)
    assert signer.public_key() == key.public_key and signer.algorithm == algorithm
    predicate = build_predicate(
        _verdict(Outcome.PASSED), _facts(), PolicyIdentity("p", "sha256:x"), now=NOW
    )
    legacy = attest_legacy(
        image_digest=DIGEST,
        repository="reg.example:5000/team/app",
        key=signer,
        predicate_type=VERDICT_PREDICATE,
        predicate=predicate,
    )
    assert legacy.tag == "sha256-" + "ab" * 32 + ".att"
    assert _verify(signer, legacy.manifest, dict(legacy.blobs), DIGEST) == [True]
    # the statement names the repository and the digest; another digest does not verify
    layer = parse_signature_manifest(legacy.manifest).layers[0]
    assert layer.annotations["predicateType"] == VERDICT_PREDICATE
    envelope = json.loads(legacy.blobs[layer.digest])
    statement = json.loads(base64.b64decode(envelope["payload"]))
    assert statement["subject"] == [
        {"name": "reg.example:5000/team/app", "digest": {"sha256": "ab" * 32}}
    ]
    assert statement["predicate"]["verdict"] == "PASSED"
    assert _verify(signer, legacy.manifest, dict(legacy.blobs), "sha256:" + "cd" * 32) == [False]
    bundle = attest_bundle(
        subject={
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": DIGEST,
            "size": 9,
        },
        key=signer,
        predicate_type=VERDICT_PREDICATE,
        predicate=predicate,
        created=NOW,
    )
    assert json.loads(bundle.manifest)["annotations"]["dev.sigstore.bundle.predicateType"] == (
        VERDICT_PREDICATE
    )
    assert _verify(signer, bundle.manifest, dict(bundle.blobs), DIGEST) == [True]
    other = FileSigner(generate_private_key(algorithm))  # type: ignore[arg-type]
    assert _verify(other, bundle.manifest, dict(bundle.blobs), DIGEST) == [False]


class _OpaqueSigner:
    """A signer with no private key in reach (as a KMS signer): only `sign(data)`."""

    def __init__(self) -> None:
        self._key = generate_private_key("ecdsa-p256")
        self.calls = 0

    @property
    def algorithm(self) -> str:
        return "ecdsa-p256"

    def public_key(self):  # type: ignore[no-untyped-def]
        return self._key.public_key

    def sign(self, data: bytes) -> bytes:
        self.calls += 1
        return self._key.sign(data)


def test_writers_take_any_signer() -> None:
    signer = _OpaqueSigner()
    artifact = attest_legacy(
        image_digest=DIGEST,
        repository="r/app",
        key=signer,
        predicate_type=VERDICT_PREDICATE,
        predicate={"verdict": "PASSED"},
    )
    assert signer.calls == 1
    assert _verify(signer, artifact.manifest, dict(artifact.blobs), DIGEST) == [True]


def test_signers_by_scheme(tmp_path: Path) -> None:
    assert "file" in SIGNERS
    with pytest.raises(UsageError, match="unknown attestation signer 'nope'"):
        signer_for("nope://x")
    key = generate_private_key()
    pem = tmp_path / "plain.pem"
    pem.write_bytes(_pkcs8(key))
    assert signer_for(str(pem)).public_key() == key.public_key  # a bare path is a file


POLICY = {"apiVersion": "regwarden/v1", "kind": "Policy"}


def test_policy_attest_section_is_per_repository_and_off_by_default() -> None:
    from regwarden.policy import Policy

    doc = {
        **POLICY,
        "defaults": {"attest": {"key": "file://keys/cosign.key"}},
        "repositories": [
            {
                "match": "prod/**",
                "attest": {
                    "key": "awskms:///alias/regwarden",
                    "verdicts": ["PASSED", "FAILED"],
                    "format": "both",
                },
            },
            {"match": "scratch/**", "team": "t"},
        ],
    }
    policy = Policy.model_validate(doc)
    default = policy.for_repository("scratch/x").attest
    assert default is not None
    assert (default.verdicts, str(default.key), default.format) == (
        ("PASSED",),
        "file://keys/cosign.key",
        "legacy",
    )
    prod = policy.for_repository("prod/api").attest
    assert prod is not None and prod.verdicts == ("PASSED", "FAILED") and prod.format == "both"
    assert Policy.model_validate(POLICY).for_repository("x").attest is None


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"key": "s3://bucket/k"}, "got s3:// for a signing key"),
        ({"key": "file://k", "verdicts": []}, "at least 1 item"),
        ({"key": "file://k", "verdicts": ["PENDING"]}, "'PASSED', 'FAILED' or 'WARN'"),
        ({"key": "file://k", "format": "zip"}, "'legacy', 'bundle' or 'both'"),
        ({"verdicts": ["PASSED"]}, "key"),
    ],
)
def test_policy_attest_section_refuses(section: dict[str, object], message: str) -> None:
    from pydantic import ValidationError

    from regwarden.policy import Policy, policy_json_schema

    with pytest.raises(ValidationError, match=message):
        Policy.model_validate({**POLICY, "defaults": {"attest": section}})
    schema = policy_json_schema()["$defs"]["Attest"]
    assert schema["required"] == ["key"] and set(schema["properties"]) == {
        "verdicts",
        "key",
        "format",
    }
