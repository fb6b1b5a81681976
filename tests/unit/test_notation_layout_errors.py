"""A Notation signature whose layer is not an envelope is an invalid signature with its
reason, never "no signatures found": in an OCI layout, through discovery, verification
and `regwarden verify oci:DIR:TAG`."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from support.notation_artifacts import add_to_layout, signature_manifest

from regwarden.cli import main
from regwarden.devtools import build_image
from regwarden.reference import ImageRef
from regwarden.signatures import LayoutSource, NotationTrust, discover, verify_image
from regwarden.signatures.notation import (
    MEDIA_TYPE_COSE,
    MEDIA_TYPE_JWS,
    Target,
    TrustStore,
    parse_trust_policy,
)
from regwarden.signatures.notation._sign import SigningIdentity, demo_identity, sign_cose, sign_jws

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
TAR = "application/vnd.oci.image.layer.v1.tar"
POLICY: dict[str, Any] = {
    "version": "1.0",
    "trustPolicies": [
        {
            "name": "everything",
            "registryScopes": ["*"],
            "signatureVerification": {"level": "strict"},
            "trustStores": ["ca:acme"],
            "trustedIdentities": ["*"],
        }
    ],
}


@pytest.fixture(scope="module")
def pki() -> tuple[SigningIdentity, x509.Certificate]:
    return demo_identity(NOW, kind="ec", size=256)


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Target]:
    """An OCI layout holding one image tagged `v1` and no signature yet."""
    root = tmp_path / "app"
    image = build_image(root, tag="v1", seed=7)
    return root, Target(image.media_type, image.manifest_digest, len(image.manifest))


def trust(root_cert: x509.Certificate) -> NotationTrust:
    return NotationTrust(
        parse_trust_policy(POLICY), TrustStore.from_certificates({("ca", "acme"): [root_cert]})
    )


def verify_layout(root: Path, root_cert: x509.Certificate) -> Any:
    source = LayoutSource(root)
    desc = source.resolve("v1")
    image = ImageRef(registry="oci-layout.local", repository="app", digest=desc.digest)
    return verify_image(source, image, cosign=None, notation=trust(root_cert), now=NOW)


BAD_SHAPES = [
    pytest.param(
        [(TAR, b"invalid signature")],
        "not a Notation signature envelope: layer sha256:",
        "notation-jws",
        id="tar-layer",
    ),
    pytest.param(
        [], "Notation signature with no layer (expected one envelope:", "notation-jws", id="none"
    ),
    pytest.param(
        [(MEDIA_TYPE_JWS, b"{}"), (MEDIA_TYPE_COSE, b"\xa0")],
        "Notation signature with 2 layers (expected one envelope:",
        "notation-jws",
        id="two-layers",
    ),
]


@pytest.mark.parametrize(("layers", "reason", "fmt"), BAD_SHAPES)
def test_manifest_without_an_envelope_is_an_invalid_signature(
    layout: tuple[Path, Target],
    pki: tuple[SigningIdentity, x509.Certificate],
    layers: list[tuple[str, bytes]],
    reason: str,
    fmt: str,
) -> None:
    root, target = layout
    sig = add_to_layout(root, signature_manifest(target, layers))

    found = discover(LayoutSource(root), "app", target.digest)
    assert found.notation == ()
    ((broken,),) = (found.broken,)
    assert (broken.format, broken.digest, broken.verified) == (fmt, sig, False)
    assert broken.reason.startswith(reason), broken.reason

    report = verify_layout(root, pki[1])
    assert not report.met
    assert report.results == (broken,)
    assert report.reason != "no signatures found"
    assert report.reason == (
        "requirement 'all' not met: no valid signature from notation trust policy"
    )


def test_tar_layer_reason_names_the_layer_and_its_media_type(layout: tuple[Path, Target]) -> None:
    root, target = layout
    # the same bytes as the notation CLI's own e2e-invalid-signature layout
    add_to_layout(root, signature_manifest(target, [(TAR, b"invalid signature\n")]))
    (broken,) = discover(LayoutSource(root), "app", target.digest).broken
    layer = "sha256:9a8decdf3775708f4eed16859f19561d730cad40b1af0dcfc37ac1e5f879a934"
    assert broken.reason == (
        f"not a Notation signature envelope: layer {layer} is {TAR} "
        "(expected application/jose+json or application/cose)"
    )


@pytest.mark.parametrize(
    ("media_type", "content", "reason"),
    [
        (MEDIA_TYPE_JWS, b"invalid signature", "the JWS envelope is not valid JSON"),
        (MEDIA_TYPE_JWS, b'{"hello": "world"}', "JWS"),
        (MEDIA_TYPE_COSE, b"invalid signature", "COSE"),
    ],
    ids=["jws-not-json", "jws-not-a-jws", "cose-not-cbor"],
)
def test_envelope_type_with_other_content_is_an_invalid_signature(
    layout: tuple[Path, Target],
    pki: tuple[SigningIdentity, x509.Certificate],
    media_type: str,
    content: bytes,
    reason: str,
) -> None:
    root, target = layout
    sig = add_to_layout(root, signature_manifest(target, [(media_type, content)]))
    report = verify_layout(root, pki[1])
    assert not report.met
    ((result),) = report.results
    assert (result.digest, result.verified) == (sig, False)
    assert result.format == ("notation-jws" if media_type == MEDIA_TYPE_JWS else "notation-cose")
    assert reason in result.reason, result.reason


@pytest.mark.parametrize("media_type", [MEDIA_TYPE_JWS, MEDIA_TYPE_COSE])
def test_a_good_signature_still_counts_beside_a_broken_one(
    layout: tuple[Path, Target], pki: tuple[SigningIdentity, x509.Certificate], media_type: str
) -> None:
    root, target = layout
    sign = sign_jws if media_type == MEDIA_TYPE_JWS else sign_cose
    good = sign(pki[0], target, signing_time=NOW - timedelta(minutes=5))
    good_digest = add_to_layout(root, signature_manifest(target, [(media_type, good)]))
    bad_digest = add_to_layout(root, signature_manifest(target, [(TAR, b"x")]))
    report = verify_layout(root, pki[1])
    assert report.met, report.reason
    by_digest = {r.digest: r for r in report.results}
    assert by_digest[good_digest].verified
    assert not by_digest[bad_digest].verified
    assert by_digest[bad_digest].reason.startswith("not a Notation signature envelope")


def _write_trust(tmp_path: Path, root_cert: x509.Certificate) -> tuple[Path, Path]:
    policy = tmp_path / "trustpolicy.json"
    policy.write_text(json.dumps(POLICY))
    store = tmp_path / "truststore"
    (store / "x509" / "ca" / "acme").mkdir(parents=True)
    (store / "x509" / "ca" / "acme" / "root.crt").write_bytes(root_cert.public_bytes(Encoding.PEM))
    return policy, store


def run_verify(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        main(["verify", *args])
    out, err = capsys.readouterr()
    code = exited.value.code
    return (code if isinstance(code, int) else 1), out, err


def test_cli_verify_of_a_layout_exits_1_with_the_reason(
    tmp_path: Path,
    layout: tuple[Path, Target],
    pki: tuple[SigningIdentity, x509.Certificate],
    capsys: pytest.CaptureFixture[str],
) -> None:
    root, target = layout
    policy, store = _write_trust(tmp_path, pki[1])
    args = (f"oci:{root}:v1", "--trust-policy", str(policy), "--trust-store", str(store))

    code, out, _ = run_verify(capsys, *args, "--output", "json")
    assert code == 1
    assert json.loads(out)["reason"] == "no signatures found"  # unsigned: nothing to report

    sig = add_to_layout(root, signature_manifest(target, [(TAR, b"invalid signature")]))
    code, out, _ = run_verify(capsys, *args, "--output", "json")
    assert code == 1
    doc = json.loads(out)
    assert doc["met"] is False
    assert doc["reason"] != "no signatures found"
    ((found),) = doc["signatures"]
    assert (found["digest"], found["verified"]) == (sig, False)
    assert found["reason"].startswith("not a Notation signature envelope: layer sha256:")
    assert TAR in found["reason"]

    code, out, _ = run_verify(capsys, *args)  # the table says it too
    assert code == 1
    assert "invalid" in out and "no signatures found" not in out
