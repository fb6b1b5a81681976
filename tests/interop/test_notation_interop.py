"""Notation signatures made by the real notation CLI and notation-go, checked against the
expected results listed in ../shared/fixtures/README.md ("notation" section)."""

from __future__ import annotations

import hashlib
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from regwarden.errors import PolicyError
from regwarden.signatures.notation import (
    MEDIA_TYPE_COSE,
    MEDIA_TYPE_JWS,
    NotationError,
    Target,
    TrustPolicyDocument,
    TrustStore,
    ValidationType,
    load_trust_policy,
    load_trust_store,
    parse_envelope,
    parse_trust_policy,
    verify_notation,
)

FIXTURES = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures"
NOTATION = FIXTURES / "notation"
E2E = NOTATION / "cli-e2e"
GO = NOTATION / "notation-go"

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(not NOTATION.is_dir(), reason=f"interop fixtures absent at {NOTATION}"),
]

NOW = datetime(2025, 6, 1, tzinfo=UTC)  # e2e.crt is good until 2122; expired_e2e.crt ended 2023
SIGNATURE_ARTIFACT = "application/vnd.cncf.notary.signature"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def make_store(tmp_path: Path, stores: dict[tuple[str, str], list[Path]]) -> TrustStore:
    """Lay the fixture certificates out as a Notation trust store and load it from disk."""
    for (kind, name), files in stores.items():
        directory = tmp_path / "truststore" / "x509" / kind / name
        directory.mkdir(parents=True)
        for f in files:
            shutil.copy(f, directory / f.name)
    return load_trust_store(tmp_path / "truststore")


# -- OCI layouts ------------------------------------------------------------------------------


def blob(layout: Path, digest: str) -> bytes:
    algo, hexdigest = digest.split(":")
    data = (layout / "blobs" / algo / hexdigest).read_bytes()
    assert hashlib.new(algo, data).hexdigest() == hexdigest, f"{digest} is corrupt"
    return data


def layout_target(layout: Path) -> Target:
    index = json.loads((layout / "index.json").read_text())
    (desc,) = [
        m
        for m in index["manifests"]
        if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == "v1"
    ]
    assert len(blob(layout, desc["digest"])) == desc["size"]
    return Target(desc["mediaType"], desc["digest"], desc["size"])


def layout_signatures(layout: Path, target: Target) -> list[tuple[str, bytes]]:
    """(layer media type, envelope) of every Notation signature manifest referring to
    `target`, found through the referrers tag fallback index `sha256-<hex>`."""
    index = json.loads((layout / "index.json").read_text())
    tag = target.digest.replace(":", "-")
    out: list[tuple[str, bytes]] = []
    for entry in index["manifests"]:
        if entry.get("annotations", {}).get("org.opencontainers.image.ref.name") != tag:
            continue
        referrers = json.loads(blob(layout, entry["digest"]))
        for ref in referrers["manifests"]:
            if ref.get("artifactType") != SIGNATURE_ARTIFACT:
                continue
            manifest = json.loads(blob(layout, ref["digest"]))
            assert SIGNATURE_ARTIFACT in (
                manifest.get("artifactType"),
                manifest["config"]["mediaType"],
            )
            assert manifest["subject"]["digest"] == target.digest
            (layer,) = manifest["layers"]
            out.append((layer["mediaType"], blob(layout, layer["digest"])))
    return out


def strict_e2e(tmp_path: Path, cert: str, policy: str = "trustpolicy.json") -> dict[str, Any]:
    return {
        "trust_policy": load_trust_policy(E2E / "trustpolicies" / policy),
        "trust_store": make_store(tmp_path, {("ca", "e2e"): [E2E / "certs" / cert]}),
        "now": NOW,
    }


def test_unsigned_layout_has_no_signatures() -> None:
    layout = E2E / "oci-layouts" / "e2e"
    target = layout_target(layout)
    assert target == Target(MANIFEST, target.digest, 517)
    assert target.digest.startswith("sha256:b8479de3")
    assert layout_signatures(layout, target) == []


def test_valid_signature_layout(tmp_path: Path) -> None:
    layout = E2E / "oci-layouts" / "e2e-valid-signature"
    target = layout_target(layout)
    ((media_type, envelope),) = layout_signatures(layout, target)
    assert media_type == MEDIA_TYPE_JWS
    assert envelope == (E2E / "envelopes" / "valid.e2e.jws.json").read_bytes()
    ref = f"localhost:5000/e2e@{target.digest}"
    result = verify_notation(
        envelope, media_type, target=target, reference=ref, **strict_e2e(tmp_path, "e2e.crt")
    )
    assert result.verified, result.reason
    assert result.signer == "CN=e2e,O=Notary,L=Seattle,ST=WA,C=US"
    assert result.signing_agent == "Notation/1.0.0"
    assert result.certificate_chain == (
        "e38aea13f2b051f7183cca64a51ee676f4d4456f41d9fecf15eb367efc7343b9",  # manifest annotation
    )


def test_valid_signature_fails_authenticity_with_another_certificate(tmp_path: Path) -> None:
    layout = E2E / "oci-layouts" / "e2e-valid-signature"
    target = layout_target(layout)
    ((media_type, envelope),) = layout_signatures(layout, target)
    result = verify_notation(
        envelope,
        media_type,
        target=target,
        reference="localhost:5000/e2e",
        **strict_e2e(tmp_path, "new_e2e.crt"),
    )
    assert not result.verified
    assert result.reason.startswith(
        "authenticity failed: the signature is not from a trusted signer"
    )


def test_invalid_signature_layout_is_not_an_envelope(tmp_path: Path) -> None:
    layout = E2E / "oci-layouts" / "e2e-invalid-signature"
    target = layout_target(layout)
    ((media_type, envelope),) = layout_signatures(layout, target)
    assert media_type == "application/vnd.oci.image.layer.v1.tar"
    kw = strict_e2e(tmp_path, "e2e.crt")
    with pytest.raises(NotationError, match="unsupported signature envelope media type"):
        verify_notation(envelope, media_type, target=target, reference="localhost:5000/e2e", **kw)
    with pytest.raises(NotationError, match="the JWS envelope is not valid JSON"):
        verify_notation(
            envelope, MEDIA_TYPE_JWS, target=target, reference="localhost:5000/e2e", **kw
        )


def test_expired_certificate_layout(tmp_path: Path) -> None:
    layout = E2E / "oci-layouts" / "e2e-with-expired-cert"
    target = layout_target(layout)
    ((media_type, envelope),) = layout_signatures(layout, target)
    assert envelope == (E2E / "envelopes" / "expired-cert.jws.json").read_bytes()
    result = verify_notation(
        envelope,
        media_type,
        target=target,
        reference="localhost:5000/e2e",
        **strict_e2e(tmp_path, "expired_e2e.crt"),
    )
    assert not result.verified
    assert result.reason == (
        "authenticTimestamp failed: no trusted timestamp is used, so the chain must be valid "
        "now: certificate 'C=AU,ST=Some-State,O=Internet Widgits Pty Ltd' expired at "
        "2023-06-27T06:10:00+00:00"
    )
    # at the time it was signed, the same signature was fine
    then = verify_notation(
        envelope,
        media_type,
        target=target,
        reference="localhost:5000/e2e",
        **{
            **strict_e2e(tmp_path / "then", "expired_e2e.crt"),
            "now": datetime(2023, 6, 27, 6, 8, tzinfo=UTC),
        },
    )
    assert then.verified, then.reason


# -- the 14 trust policies --------------------------------------------------------------------

POLICIES: dict[str, str] = {
    "audit_trustpolicy.json": "oci",
    "blob_trust_policy.json": "blob",
    "invalid_format_trustpolicy.json": "malformed trust policy: not valid JSON",
    "malformed_trust_store_trustpolicy.json": "trust store name '' in 'ca:' must match",
    "multiple_trusted_identity_trustpolicy.json": "oci",
    "override_strict_trustpolicy.json": "oci",
    "permissive_trustpolicy.json": "oci",
    "quickstart_trustpolicy.json": "oci",
    "skip_trustpolicy.json": "oci",
    "timestamp_after_cert_expiry_trustpolicy.json": "oci",
    "timestamp_trustpolicy.json": "oci",
    "trustpolicy.blob.json": "blob",
    "trustpolicy.json": "oci",
    "valid_trusted_identity_trustpolicy.json": "oci",
}


def test_every_fixture_policy_is_covered() -> None:
    assert sorted(p.name for p in (E2E / "trustpolicies").iterdir()) == sorted(POLICIES)


@pytest.mark.parametrize(("name", "expected"), sorted(POLICIES.items()))
def test_trust_policy_loads_or_fails(name: str, expected: str) -> None:
    path = E2E / "trustpolicies" / name
    if expected in ("oci", "blob"):
        assert load_trust_policy(path).kind == expected
    else:
        with pytest.raises(PolicyError, match=expected.replace("(", r"\(")):
            load_trust_policy(path)


# Expected outcome of each OCI policy for (envelope, the certificate in ca:e2e): True when
# verified; otherwise the validation that fails. A tsa:e2e store (GlobalSign root) exists.
MATRIX: dict[str, tuple[bool | str, bool | str, bool | str]] = {
    #                                           valid+e2e     valid+new_e2e    expired+expired_e2e
    "trustpolicy.json": (True, "authenticity", "authenticTimestamp"),
    "permissive_trustpolicy.json": (True, "authenticity", True),
    "audit_trustpolicy.json": (True, True, True),
    "override_strict_trustpolicy.json": (True, True, True),
    "skip_trustpolicy.json": (True, True, True),
    "quickstart_trustpolicy.json": ("authenticity", "authenticity", "authenticity"),
    "valid_trusted_identity_trustpolicy.json": (True, "authenticity", "authenticity"),
    "multiple_trusted_identity_trustpolicy.json": (True, "authenticity", "authenticTimestamp"),
    "timestamp_trustpolicy.json": ("authenticTimestamp", "authenticity", "authenticTimestamp"),
    "timestamp_after_cert_expiry_trustpolicy.json": (True, "authenticity", "authenticTimestamp"),
}
CASES = [
    ("valid.e2e.jws.json", "e2e.crt"),
    ("valid.e2e.jws.json", "new_e2e.crt"),
    ("expired-cert.jws.json", "expired_e2e.crt"),
]


@pytest.mark.parametrize("policy_name", sorted(MATRIX))
@pytest.mark.parametrize("case", range(3))
def test_policy_matrix(tmp_path: Path, policy_name: str, case: int) -> None:
    envelope_name, cert = CASES[case]
    expected = MATRIX[policy_name][case]
    store = make_store(
        tmp_path,
        {
            ("ca", "e2e"): [E2E / "certs" / cert],
            ("tsa", "e2e"): [GO / "truststore" / "tsa" / "globalsignRoot.cer"],
        },
    )
    envelope = (E2E / "envelopes" / envelope_name).read_bytes()
    target = parse_envelope(envelope, MEDIA_TYPE_JWS).target
    result = verify_notation(
        envelope,
        MEDIA_TYPE_JWS,
        target=target,
        reference=f"localhost:5000/e2e@{target.digest}",
        trust_policy=load_trust_policy(E2E / "trustpolicies" / policy_name),
        trust_store=store,
        now=NOW,
    )
    if expected is True:
        assert result.verified, result.reason
        if result.warnings:  # logged failures leave the outcome as 'failed' with action 'log'
            assert all(o.action.value == "log" for o in result.outcomes if o.status == "failed")
    else:
        assert not result.verified
        assert result.reason.startswith(f"{expected} failed: ")


# -- blob signatures --------------------------------------------------------------------------


def _blob_target() -> Target:
    data = (E2E / "blob" / "LICENSE.signed-blob").read_bytes()
    return Target(
        "application/octet-stream", "sha256:" + hashlib.sha256(data).hexdigest(), len(data)
    )


@pytest.mark.parametrize(
    ("name", "media_type"), [("blob.jws.sig", MEDIA_TYPE_JWS), ("blob.cose.sig", MEDIA_TYPE_COSE)]
)
def test_blob_signatures(tmp_path: Path, name: str, media_type: str) -> None:
    envelope = (E2E / "blob" / name).read_bytes()
    info = parse_envelope(envelope, media_type)
    assert info.target == _blob_target()
    # the signing certificate is self-signed and was made for the test run: trust it as e2e
    own = tmp_path / "signer.crt"
    from cryptography.hazmat.primitives.serialization import Encoding

    own.write_bytes(info.chain[0].public_bytes(Encoding.PEM))
    store = make_store(
        tmp_path,
        {("ca", "e2e"): [own], ("tsa", "e2e"): [GO / "truststore" / "tsa" / "globalsignRoot.cer"]},
    )
    doc = load_trust_policy(E2E / "trustpolicies" / "trustpolicy.blob.json")
    signed_at = info.signing_time
    assert signed_at is not None

    def run(policy_name: str | None, now: datetime) -> Any:
        return verify_notation(
            envelope,
            media_type,
            target=_blob_target(),
            trust_policy=doc,
            trust_store=store,
            now=now,
            policy_name=policy_name,
        )

    assert run("test-blob-statement", signed_at).verified
    assert run(None, signed_at).policy == "test-blob-global-statement"
    assert run(None, signed_at).verified
    later = run("test-blob-statement", NOW)  # "certificates now expired"
    assert not later.verified and "expired at" in later.reason
    stamped = run("test-blob-with-timestamping", signed_at)
    assert not stamped.verified
    if info.timestamp_token is not None:  # a Microsoft TSA stamped it; its root is not ours
        assert "does not chain to a trusted TSA root" in stamped.reason
    else:
        assert "but the signature has none" in stamped.reason
    with pytest.raises(NotationError):  # the blob's digest must match, so a blob policy too
        verify_notation(
            envelope,
            "application/octet-stream",
            target=_blob_target(),
            trust_policy=doc,
            trust_store=store,
            now=signed_at,
        )


def test_malformed_blob_signature() -> None:
    with pytest.raises(NotationError, match="the JWS envelope is not valid JSON"):
        parse_envelope((E2E / "blob" / "malformed.jws.sig").read_bytes(), MEDIA_TYPE_JWS)


# -- notation-go envelopes --------------------------------------------------------------------


def _go_layout_target() -> Target:
    layout = GO / "oci-layout"
    (desc,) = json.loads((layout / "index.json").read_text())["manifests"]
    assert len(blob(layout, desc["digest"])) == desc["size"]
    return Target(desc["mediaType"], desc["digest"], desc["size"])


@pytest.mark.parametrize(
    ("name", "media_type"),
    [("jws_signature.sig", MEDIA_TYPE_JWS), ("cose_signature.sig", MEDIA_TYPE_COSE)],
)
def test_notation_go_signatures(tmp_path: Path, name: str, media_type: str) -> None:
    envelope = (GO / name).read_bytes()
    info = parse_envelope(envelope, media_type)
    assert info.chain[0].not_valid_after_utc.year == 2123
    own = tmp_path / "alpine.crt"
    from cryptography.hazmat.primitives.serialization import Encoding

    own.write_bytes(info.chain[0].public_bytes(Encoding.DER))
    doc = parse_trust_policy(
        {
            "version": "1.0",
            "trustPolicies": [
                {
                    "name": "alpine",
                    "registryScopes": ["localhost:5000/alpine"],
                    "signatureVerification": {"level": "strict"},
                    "trustStores": ["ca:alpine"],
                    "trustedIdentities": [
                        "x509.subject: C=US, ST=WA, L=Seattle, O=Notary, CN=alpine"
                    ],
                }
            ],
        }
    )
    target = _go_layout_target()
    result = verify_notation(
        envelope,
        media_type,
        target=target,
        reference="localhost:5000/alpine:v2",
        trust_policy=doc,
        trust_store=make_store(tmp_path, {("ca", "alpine"): [own]}),
        now=NOW,
    )
    assert result.verified, result.reason
    assert result.envelope_format == ("jws" if media_type == MEDIA_TYPE_JWS else "cose")
    other = verify_notation(
        envelope,
        media_type,
        target=target._replace(size=480),
        reference="localhost:5000/alpine",
        trust_policy=doc,
        trust_store=make_store(tmp_path / "x", {("ca", "alpine"): [own]}),
        now=NOW,
    )
    assert not other.verified and "targetArtifact size is 481" in other.reason


MOCK_TARGET = Target(
    "application/vnd.docker.distribution.manifest.v2+json",
    "sha256:60043cf45eaebc4c0867fea485a039b598f52fd09fd5b07b0b2d2f88fad9d74e",
    528,
)


def _ca_policy(level: str = "strict") -> TrustPolicyDocument:
    return parse_trust_policy(
        {
            "version": "1.0",
            "trustPolicies": [
                {
                    "name": "test",
                    "registryScopes": ["*"],
                    "signatureVerification": {"level": level},
                    "trustStores": ["ca:valid-trust-store"],
                    "trustedIdentities": ["*"],
                }
            ],
        }
    )


def _mock(tmp_path: Path, name: str, level: str = "strict") -> Any:
    store = make_store(
        tmp_path, {("ca", "valid-trust-store"): [GO / "truststore" / "ca" / "NotationTestRoot.pem"]}
    )
    return verify_notation(
        (GO / "mock-envelopes" / name).read_bytes(),
        MEDIA_TYPE_JWS,
        target=MOCK_TARGET,
        reference="localhost:5000/net-monitor",
        trust_policy=_ca_policy(level),
        trust_store=store,
        now=NOW,
    )


def test_mock_valid_envelope(tmp_path: Path) -> None:
    result = _mock(tmp_path, "ca_valid_sig_env.json")
    assert result.verified, result.reason
    assert result.expiry == datetime(2120, 11, 9, 7, tzinfo=UTC)
    assert len(result.certificate_chain) == 2


def test_mock_invalid_signature(tmp_path: Path) -> None:
    # its payload was altered (re-encoded with padding), so it no longer is what was signed
    with pytest.raises(NotationError, match="the JWS payload is not unpadded base64url text"):
        _mock(tmp_path, "ca_invalid_sig_env.json")


def test_mock_expired_envelope(tmp_path: Path) -> None:
    result = _mock(tmp_path, "ca_expired_sig_env.json")
    assert not result.verified
    assert result.reason == "expiry failed: the signature expired at 2022-07-29T23:59:00+00:00"
    permissive = _mock(tmp_path / "p", "ca_expired_sig_env.json", "permissive")
    assert permissive.verified and permissive.warnings


def test_mock_envelope_with_metadata(tmp_path: Path) -> None:
    envelope = (GO / "mock-envelopes" / "sig_env_with_metadata.json").read_bytes()
    info = parse_envelope(envelope, MEDIA_TYPE_JWS)
    own = tmp_path / "wabbit.pem"
    from cryptography.hazmat.primitives.serialization import Encoding

    own.write_bytes(info.chain[0].public_bytes(Encoding.PEM))
    store = make_store(tmp_path, {("ca", "valid-trust-store"): [own]})
    signed_at = info.signing_time
    assert signed_at is not None

    def run(meta: dict[str, str]) -> Any:
        return verify_notation(
            envelope,
            MEDIA_TYPE_JWS,
            target=info.target,
            reference="r.io/a/b",
            trust_policy=_ca_policy(),
            trust_store=store,
            now=signed_at,
            user_metadata=meta,
        )

    ok = run({"io.wabbit-networks.buildId": "123"})
    assert ok.verified, ok.reason
    assert ok.annotations == {
        "io.wabbit-networks.buildId": "123",
        "io.wabbit-networks.buildTime": "1672944615",
    }
    assert not run({"io.wabbit-networks.buildId": "124"}).verified
    # the trust store's wabbit-networks.io.crt is another certificate with the same subject
    other = make_store(
        tmp_path / "o",
        {("ca", "valid-trust-store"): [GO / "truststore" / "ca" / "wabbit-networks.io.crt"]},
    )
    result = verify_notation(
        envelope,
        MEDIA_TYPE_JWS,
        target=info.target,
        reference="r.io/a/b",
        trust_policy=_ca_policy(),
        trust_store=other,
        now=signed_at,
    )
    assert not result.verified and result.reason.startswith("authenticity failed")


# -- RFC 3161 timestamps ----------------------------------------------------------------------


def _ts_policy(**verification: Any) -> TrustPolicyDocument:
    return parse_trust_policy(
        {
            "version": "1.0",
            "trustPolicies": [
                {
                    "name": "ts",
                    "registryScopes": ["*"],
                    "signatureVerification": {"level": "strict", **verification},
                    "trustStores": ["ca:valid-trust-store", "tsa:test-timestamp"],
                    "trustedIdentities": ["*"],
                }
            ],
        }
    )


def _ts(tmp_path: Path, name: str, now: datetime, **verification: Any) -> Any:
    store = make_store(
        tmp_path,
        {
            ("ca", "valid-trust-store"): [GO / "truststore" / "ca" / "TestTimestamp.crt"],
            ("tsa", "test-timestamp"): [GO / "truststore" / "tsa" / "globalsignRoot.cer"],
        },
    )
    envelope = (GO / "timestamp-envelopes" / name).read_bytes()
    target = parse_envelope(envelope, MEDIA_TYPE_JWS).target
    return verify_notation(
        envelope,
        MEDIA_TYPE_JWS,
        target=target,
        reference="r.io/a/b",
        trust_policy=_ts_policy(**verification),
        trust_store=store,
        now=now,
    )


def test_timestamped_signature_verifies_with_the_tsa_store(tmp_path: Path) -> None:
    result = _ts(tmp_path, "jwsWithTimestamp.sig", NOW, skipTimestampRevocationCheck=True)
    assert result.verified, result.reason
    assert result.timestamp == datetime(2024, 6, 18, 6, 29, 37, tzinfo=UTC)
    outcome = result.outcome(ValidationType.AUTHENTIC_TIMESTAMP)
    assert outcome is not None and outcome.reason == "timestamped at 2024-06-18T06:29:37+00:00"


def test_timestamp_outlives_the_signing_certificate(tmp_path: Path) -> None:
    # TestTimestamp.crt ends 2033-05-10; the GlobalSign TSA chain was valid when it stamped
    after = datetime(2034, 1, 1, tzinfo=UTC)
    assert _ts(tmp_path, "jwsWithTimestamp.sig", after, skipTimestampRevocationCheck=True).verified
    unstamped = _ts(
        tmp_path / "u", "withoutTimestamp.sig", after, verifyTimestamp="afterCertExpiry"
    )
    assert not unstamped.verified
    assert "requires a timestamp countersignature" in unstamped.reason


def test_tsa_revocation_is_unknown_offline(tmp_path: Path) -> None:
    result = _ts(tmp_path, "jwsWithTimestamp.sig", NOW)
    assert not result.verified
    assert result.reason == (
        "authenticTimestamp failed: revocation status of timestamping certificate "
        "'CN=Globalsign TSA for Advanced - G4 - 202311,O=GlobalSign nv-sa,C=BE' is unknown: it "
        "names OCSP/CRL endpoints, which regwarden does not query (set "
        "skipTimestampRevocationCheck to accept)"
    )


def test_signature_without_timestamp_fails_when_policy_requires_one(tmp_path: Path) -> None:
    result = _ts(tmp_path, "withoutTimestamp.sig", NOW, skipTimestampRevocationCheck=True)
    assert not result.verified
    assert result.reason == (
        "authenticTimestamp failed: the trust policy requires a timestamp countersignature "
        "(tsa store test-timestamp), but the signature has none"
    )
    # afterCertExpiry only asks for one once the certificate has expired
    lenient = _ts(tmp_path / "l", "withoutTimestamp.sig", NOW, verifyTimestamp="afterCertExpiry")
    assert lenient.verified, lenient.reason


def test_timestamp_not_yet_valid_certificate_is_not_trusted(tmp_path: Path) -> None:
    store = make_store(
        tmp_path,
        {
            ("ca", "valid-trust-store"): [
                GO / "truststore" / "ca" / "TestTimestampNotYetValid.crt"
            ],
            ("tsa", "test-timestamp"): [GO / "truststore" / "tsa" / "globalsignRoot.cer"],
        },
    )
    envelope = (GO / "timestamp-envelopes" / "jwsWithTimestamp.sig").read_bytes()
    target = parse_envelope(envelope, MEDIA_TYPE_JWS).target
    result = verify_notation(
        envelope,
        MEDIA_TYPE_JWS,
        target=target,
        reference="r.io/a/b",
        trust_policy=_ts_policy(),
        trust_store=store,
        now=NOW,
    )
    assert not result.verified and result.reason.startswith("authenticity failed")


def test_fixture_trust_store_certificates_load(tmp_path: Path) -> None:
    store = make_store(
        tmp_path,
        {
            ("ca", "all"): sorted((GO / "truststore" / "ca").iterdir()),
            ("tsa", "gs"): [GO / "truststore" / "tsa" / "globalsignRoot.cer"],
        },
    )
    assert len(store.get("ca", "all")) == 5
    assert (
        store.get("tsa", "gs")[0].subject.rfc4514_string()
        == "CN=GlobalSign,O=GlobalSign,OU=GlobalSign Root CA - R6"
    )
