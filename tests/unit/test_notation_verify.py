"""Notation verification against envelopes signed here, with certificates made here."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from regwarden.errors import InvalidReference, UsageError
from regwarden.model import SignatureResult
from regwarden.reference import ImageRef
from regwarden.signatures.notation import (
    MEDIA_TYPE_COSE,
    MEDIA_TYPE_JWS,
    NotationError,
    NotationResult,
    Target,
    TrustPolicyDocument,
    TrustStore,
    ValidationType,
    _sign,
    parse_trust_policy,
    verify_notation,
)
from regwarden.signatures.notation._algorithms import Algorithm
from regwarden.signatures.notation._sign import SigningIdentity, Timestamper, issue, name, new_key

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
SIGNED = NOW - timedelta(hours=1)
TARGET = Target("application/vnd.oci.image.manifest.v1+json", "sha256:" + "ab" * 32, 1234)
REF = "registry.example.com/team/app@" + TARGET.digest
IDENTITY = "x509.subject: C=US, ST=WA, O=regwarden test"
FORMATS = [(_sign.sign_jws, MEDIA_TYPE_JWS), (_sign.sign_cose, MEDIA_TYPE_COSE)]
Signer = Callable[..., bytes]


def policy(
    level: str = "strict",
    *,
    stores: tuple[str, ...] = ("ca:acme",),
    identities: tuple[str, ...] = ("*",),
    scopes: tuple[str, ...] = ("*",),
    **verification: Any,
) -> TrustPolicyDocument:
    statement: dict[str, Any] = {
        "name": "acme",
        "registryScopes": list(scopes),
        "signatureVerification": {"level": level, **verification},
    }
    if level != "skip":
        statement |= {"trustStores": list(stores), "trustedIdentities": list(identities)}
    return parse_trust_policy({"version": "1.0", "trustPolicies": [statement]})


@pytest.fixture(scope="module")
def rsa_pki() -> tuple[SigningIdentity, x509.Certificate]:
    return _sign.demo_identity(NOW, kind="rsa", size=2048)


@pytest.fixture(scope="module")
def ec_pki() -> tuple[SigningIdentity, x509.Certificate]:
    return _sign.demo_identity(NOW, kind="ec", size=256)


@pytest.fixture(scope="module")
def tsa() -> tuple[Timestamper, x509.Certificate]:
    return _sign.demo_timestamper(SIGNED)


def store_of(*roots: x509.Certificate, tsa_root: x509.Certificate | None = None) -> TrustStore:
    stores: dict[tuple[str, str], list[x509.Certificate]] = {("ca", "acme"): list(roots)}
    if tsa_root is not None:
        stores[("tsa", "stamps")] = [tsa_root]
    return TrustStore.from_certificates(stores)


def verify(
    envelope: bytes,
    media_type: str,
    store: TrustStore,
    doc: TrustPolicyDocument | None = None,
    **kw: Any,
) -> NotationResult:
    args: dict[str, Any] = {"target": TARGET, "reference": REF, "now": NOW}
    args.update(kw)
    return verify_notation(
        envelope, media_type, trust_policy=doc or policy(), trust_store=store, **args
    )


# -- the happy paths ---------------------------------------------------------------------


@pytest.mark.parametrize(("sign", "media_type"), FORMATS)
@pytest.mark.parametrize(
    ("kind", "size"), [("rsa", 2048), ("rsa", 3072), ("ec", 256), ("ec", 384), ("ec", 521)]
)
def test_valid_signature_verifies(sign: Signer, media_type: str, kind: str, size: int) -> None:
    ident, root = _sign.demo_identity(NOW, kind=kind, size=size)
    env = sign(ident, TARGET, signing_time=SIGNED, annotations={"build": "42"})
    result = verify(env, media_type, store_of(root), policy(identities=(IDENTITY,)))
    assert result.verified, result.reason
    assert result.reason == "verified by trust policy statement 'acme' (strict)"
    assert result.signer == ident.chain[0].subject.rfc4514_string()
    assert result.target == TARGET
    assert result.annotations == {"build": "42"}
    assert result.envelope_format == ("jws" if media_type == MEDIA_TYPE_JWS else "cose")
    assert [o.type.value for o in result.outcomes] == [
        "integrity",
        "authenticity",
        "expiry",
        "authenticTimestamp",
        "revocation",
    ]  # notation-go's order
    assert all(o.status == "passed" for o in result.outcomes)
    assert result.signing_time == SIGNED.replace(microsecond=0)
    result.raise_if_failed()


def test_result_maps_to_signature_result(rsa_pki: tuple[SigningIdentity, x509.Certificate]) -> None:
    ident, root = rsa_pki
    result = verify(
        _sign.sign_cose(ident, TARGET, signing_time=SIGNED), MEDIA_TYPE_COSE, store_of(root)
    )
    sr = result.to_signature_result("sha256:" + "cd" * 32)
    assert isinstance(sr, SignatureResult)
    assert (sr.format, sr.verified, sr.signer) == ("notation-cose", True, result.signer)


def test_image_ref_selects_the_exact_scope_over_the_wildcard(
    rsa_pki: tuple[SigningIdentity, x509.Certificate],
    ec_pki: tuple[SigningIdentity, x509.Certificate],
) -> None:
    ident, root = rsa_pki
    _, other_root = ec_pki
    doc = parse_trust_policy(
        {
            "version": "1.0",
            "trustPolicies": [
                {
                    "name": "global",
                    "registryScopes": ["*"],
                    "signatureVerification": {"level": "strict"},
                    "trustStores": ["ca:acme"],
                    "trustedIdentities": ["*"],
                },
                {
                    "name": "exact",
                    "registryScopes": ["registry.example.com/team/app"],
                    "signatureVerification": {"level": "strict"},
                    "trustStores": ["ca:other"],
                    "trustedIdentities": ["*"],
                },
            ],
        }
    )
    store = TrustStore.from_certificates({("ca", "acme"): [root], ("ca", "other"): [other_root]})
    env = _sign.sign_jws(ident, TARGET, signing_time=SIGNED)
    exact = verify(env, MEDIA_TYPE_JWS, store, doc, reference=ImageRef.parse(REF))
    assert not exact.verified
    assert exact.policy == "exact"
    assert "is in trust store ca:other" in exact.reason
    other = verify(env, MEDIA_TYPE_JWS, store, doc, reference="registry.example.com/team/lib:v1")
    assert other.verified and other.policy == "global"


# -- integrity -----------------------------------------------------------------------------


@pytest.mark.parametrize(("sign", "media_type"), FORMATS)
@pytest.mark.parametrize(
    ("target", "field"),
    [
        (TARGET._replace(digest="sha256:" + "00" * 32), "digest"),
        (TARGET._replace(size=1235), "size"),
        (TARGET._replace(media_type="application/vnd.oci.image.index.v1+json"), "mediaType"),
    ],
)
def test_payload_must_name_the_artifact(
    rsa_pki: tuple[SigningIdentity, x509.Certificate],
    sign: Signer,
    media_type: str,
    target: Target,
    field: str,
) -> None:
    ident, root = rsa_pki
    env = sign(ident, TARGET, signing_time=SIGNED)
    result = verify(env, media_type, store_of(root), target=target)
    assert not result.verified
    assert result.reason.startswith(
        f"integrity failed: the signed payload's targetArtifact {field}"
    )
    assert repr(getattr(target, {"mediaType": "media_type"}.get(field, field))) in result.reason


def test_integrity_is_enforced_even_under_audit(
    rsa_pki: tuple[SigningIdentity, x509.Certificate],
) -> None:
    ident, root = rsa_pki
    env = _sign.sign_jws(ident, TARGET, signing_time=SIGNED)
    result = verify(
        env, MEDIA_TYPE_JWS, store_of(root), policy("audit"), target=TARGET._replace(size=1)
    )
    assert not result.verified
    assert "integrity failed" in result.reason


def _tamper_jws(env: bytes, **changes: Any) -> bytes:
    doc = json.loads(env)
    doc.update(changes)
    return json.dumps(doc).encode()


def test_tampered_jws_signature_fails_integrity(
    rsa_pki: tuple[SigningIdentity, x509.Certificate],
) -> None:
    ident, root = rsa_pki
    env = _sign.sign_jws(ident, TARGET, signing_time=SIGNED)
    sig = json.loads(env)["signature"]
    flipped = ("A" if sig[10] != "A" else "B").join((sig[:10], sig[11:]))
    result = verify(_tamper_jws(env, signature=flipped), MEDIA_TYPE_JWS, store_of(root))
    assert not result.verified
    assert result.reason == (
        "integrity failed: the signature does not verify with the signing certificate's key"
    )


def test_payload_swapped_after_signing_fails(
    rsa_pki: tuple[SigningIdentity, x509.Certificate],
) -> None:
    ident, root = rsa_pki
    env = _sign.sign_jws(ident, TARGET, signing_time=SIGNED)
    other = base64.urlsafe_b64encode(_sign.payload(TARGET._replace(size=1))).rstrip(b"=").decode()
    result = verify(
        _tamper_jws(env, payload=other),
        MEDIA_TYPE_JWS,
        store_of(root),
        target=TARGET._replace(size=1),
    )
    assert not result.verified
    assert "the signature does not verify" in result.reason


def test_tampered_cose_signature_fails_integrity(
    ec_pki: tuple[SigningIdentity, x509.Certificate],
) -> None:
    ident, root = ec_pki
    env = bytearray(_sign.sign_cose(ident, TARGET, signing_time=SIGNED))
    env[-5] ^= 0x01  # inside the signature, the last item of the array
    result = verify(bytes(env), MEDIA_TYPE_COSE, store_of(root))
    assert not result.verified
    assert "the signature does not verify" in result.reason


def test_algorithm_must_match_the_signing_key(
    rsa_pki: tuple[SigningIdentity, x509.Certificate],
) -> None:
    ident, root = rsa_pki
    env = _sign.sign_jws(ident, TARGET, signing_time=SIGNED, algorithm=Algorithm.PS384)
    result = verify(env, MEDIA_TYPE_JWS, store_of(root))
    assert not result.verified
    assert result.reason == (
        "integrity failed: the envelope names algorithm PS384 but the signing certificate's "
        "key requires PS256"
    )


@pytest.mark.parametrize(("sign", "media_type"), FORMATS)
def test_unknown_critical_header_is_rejected(
    rsa_pki: tuple[SigningIdentity, x509.Certificate], sign: Signer, media_type: str
) -> None:
    ident, root = rsa_pki
    env = sign(
        ident,
        TARGET,
        signing_time=SIGNED,
        extra_protected={"io.example.policy": "x"},
        extra_critical=["io.example.policy"],
    )
    with pytest.raises(NotationError, match=r"unknown critical header 'io\.example\.policy'"):
        verify(env, media_type, store_of(root))


def test_non_critical_extended_header_is_allowed(
    rsa_pki: tuple[SigningIdentity, x509.Certificate],
) -> None:
    ident, root = rsa_pki
    env = _sign.sign_jws(
        ident, TARGET, signing_time=SIGNED, extra_protected={"io.example.note": "hi"}
    )
    assert verify(env, MEDIA_TYPE_JWS, store_of(root)).verified


@pytest.mark.parametrize("critical", [True, False])
def test_verification_plugin_requirement_is_refused(
    rsa_pki: tuple[SigningIdentity, x509.Certificate], critical: bool
) -> None:
    ident, root = rsa_pki
    env = _sign.sign_jws(
        ident,
        TARGET,
        signing_time=SIGNED,
        extra_protected={"io.cncf.notary.verificationPlugin": "com.example.plugin"},
        extra_critical=["io.cncf.notary.verificationPlugin"] if critical else [],
    )
    with pytest.raises(NotationError, match=r"requires verification plugin 'com\.example\.plugin'"):
        verify(env, MEDIA_TYPE_JWS, store_of(root))


def test_critical_header_that_is_absent_is_rejected(
    rsa_pki: tuple[SigningIdentity, x509.Certificate],
) -> None:
    ident, root = rsa_pki
    env = _sign.sign_jws(ident, TARGET, signing_time=SIGNED, extra_critical=["io.example.gone"])
    with pytest.raises(
        NotationError, match=r"'io\.example\.gone' is marked critical but is not present"
    ):
        verify(env, MEDIA_TYPE_JWS, store_of(root))


@pytest.mark.parametrize(("sign", "media_type"), FORMATS)
def test_expiry_must_be_marked_critical(
    rsa_pki: tuple[SigningIdentity, x509.Certificate], sign: Signer, media_type: str
) -> None:
    ident, root = rsa_pki
    header = "io.cncf.notary.expiry"
    value: Any = "2030-01-01T00:00:00Z"
    if media_type == MEDIA_TYPE_COSE:
        value = cbor2.CBORTag(1, int(datetime(2030, 1, 1, tzinfo=UTC).timestamp()))
    env = sign(ident, TARGET, signing_time=SIGNED, extra_protected={header: value})
    with pytest.raises(
        NotationError, match=r"must be marked critical but are not: \['io.cncf.notary.expiry'\]"
    ):
        verify(env, media_type, store_of(root))


def test_unsupported_media_type_raises(rsa_pki: tuple[SigningIdentity, x509.Certificate]) -> None:
    ident, root = rsa_pki
    env = _sign.sign_jws(ident, TARGET, signing_time=SIGNED)
    with pytest.raises(
        NotationError, match="unsupported signature envelope media type 'text/plain'"
    ):
        verify(env, "text/plain", store_of(root))


# -- certificate rules (part of integrity) -------------------------------------------------


def _chain_with(
    *,
    leaf_eku: tuple[x509.ObjectIdentifier, ...] | None = (ExtendedKeyUsageOID.CODE_SIGNING,),
    leaf_days: int = 30,
    leaf_start: datetime = NOW - timedelta(days=1),
    leaf_usage: dict[str, bool] | None = None,
    root_usage: dict[str, bool] | None = None,
    leaf_ca: bool = False,
) -> tuple[SigningIdentity, x509.Certificate]:
    root_key = new_key()
    root = issue(
        name("rules root"),
        root_key,
        ca=True,
        not_before=NOW - timedelta(days=10),
        not_after=NOW + timedelta(days=100),
        key_usage=root_usage,
    )
    leaf_key = new_key()
    leaf = issue(
        name("rules leaf"),
        leaf_key,
        issuer=(root, root_key),
        ca=leaf_ca,
        eku=leaf_eku,
        not_before=leaf_start,
        not_after=leaf_start + timedelta(days=leaf_days),
        key_usage=leaf_usage,
    )
    return SigningIdentity(leaf_key, (leaf, root)), root


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        (
            {"leaf_eku": (ExtendedKeyUsageOID.SERVER_AUTH,)},
            "extended key usage must not contain serverAuth",
        ),
        (
            {"leaf_eku": (ExtendedKeyUsageOID.CODE_SIGNING, ExtendedKeyUsageOID.CLIENT_AUTH)},
            "extended key usage must not contain clientAuth",
        ),
        ({"leaf_eku": (x509.ObjectIdentifier("1.3.6.1.4.1.99999.7"),)}, "lacks codeSigning"),
        (
            {"leaf_usage": {"key_encipherment": True}},
            "digitalSignature only, but also has keyEncipherment",
        ),
        (
            {"leaf_usage": {"digital_signature": False, "content_commitment": True}},
            "key usage must include digitalSignature",
        ),
        (
            {"root_usage": {"key_cert_sign": False, "digital_signature": True}},
            "key usage must include keyCertSign",
        ),
        (  # a leaf key usage, so that only the basic constraints rule is broken
            {
                "leaf_ca": True,
                "leaf_usage": {
                    "digital_signature": True,
                    "key_cert_sign": False,
                    "crl_sign": False,
                },
            },
            "is a CA certificate; the signing certificate must have basicConstraints",
        ),
    ],
)
def test_certificate_rules(kwargs: dict[str, Any], reason: str) -> None:
    ident, root = _chain_with(**kwargs)
    result = verify(
        _sign.sign_jws(ident, TARGET, signing_time=SIGNED), MEDIA_TYPE_JWS, store_of(root)
    )
    assert not result.verified
    assert result.reason.startswith("integrity failed: invalid certificate chain:")
    assert reason in result.reason


def test_leaf_without_eku_is_accepted() -> None:
    ident, root = _chain_with(leaf_eku=None)
    assert verify(
        _sign.sign_jws(ident, TARGET, signing_time=SIGNED), MEDIA_TYPE_JWS, store_of(root)
    ).verified


def test_chain_must_end_in_a_self_signed_root(
    rsa_pki: tuple[SigningIdentity, x509.Certificate],
) -> None:
    ident, root = rsa_pki
    only_leaf = SigningIdentity(ident.key, ident.chain[:1])
    result = verify(
        _sign.sign_jws(only_leaf, TARGET, signing_time=SIGNED), MEDIA_TYPE_JWS, store_of(root)
    )
    assert not result.verified
    assert "is alone in the chain but is not self-signed" in result.reason


def test_chain_out_of_order_fails(
    rsa_pki: tuple[SigningIdentity, x509.Certificate],
    ec_pki: tuple[SigningIdentity, x509.Certificate],
) -> None:
    ident, root = rsa_pki
    _, stranger = ec_pki
    mixed = SigningIdentity(ident.key, (ident.chain[0], stranger))
    result = verify(
        _sign.sign_jws(mixed, TARGET, signing_time=SIGNED), MEDIA_TYPE_JWS, store_of(root, stranger)
    )
    assert not result.verified
    # both roots are named "regwarden test root": the names chain, the signature does not
    assert "does not validate: signature does not match" in result.reason
    other_name = issue(name("stranger root"), new_key(), ca=True, not_before=NOW, not_after=NOW)
    mixed = SigningIdentity(ident.key, (ident.chain[0], other_name))
    result = verify(
        _sign.sign_jws(mixed, TARGET, signing_time=SIGNED), MEDIA_TYPE_JWS, store_of(root)
    )
    assert not result.verified
    assert (
        "certificate 'CN=regwarden test signer,O=regwarden test,ST=WA,C=US' is not issued by "
        "the next certificate 'CN=stranger root,O=regwarden test,ST=WA,C=US'" in result.reason
    )


def test_path_length_is_enforced() -> None:
    root_key, mid_key, leaf_key = new_key(), new_key(), new_key()
    start, end = NOW - timedelta(days=1), NOW + timedelta(days=30)
    root = issue(name("pl root"), root_key, ca=True, path_length=0, not_before=start, not_after=end)
    mid = issue(
        name("pl mid"), mid_key, issuer=(root, root_key), ca=True, not_before=start, not_after=end
    )
    leaf = issue(name("pl leaf"), leaf_key, issuer=(mid, mid_key), not_before=start, not_after=end)
    env = _sign.sign_jws(SigningIdentity(leaf_key, (leaf, mid, root)), TARGET, signing_time=SIGNED)
    result = verify(env, MEDIA_TYPE_JWS, store_of(root))
    assert not result.verified
    assert result.reason == (
        "integrity failed: invalid certificate chain: the chain of "
        "'CN=pl leaf,O=regwarden test,ST=WA,C=US' does not validate: path length constraint "
        "violated"
    )


def test_intermediate_chain_verifies() -> None:
    root_key, mid_key, leaf_key = new_key(), new_key("ec", 384), new_key("ec", 256)
    start, end = NOW - timedelta(days=1), NOW + timedelta(days=30)
    root = issue(name("i root"), root_key, ca=True, path_length=1, not_before=start, not_after=end)
    mid = issue(
        name("i mid"),
        mid_key,
        issuer=(root, root_key),
        ca=True,
        path_length=0,
        not_before=start,
        not_after=end,
    )
    leaf = issue(name("i leaf"), leaf_key, issuer=(mid, mid_key), not_before=start, not_after=end)
    env = _sign.sign_cose(SigningIdentity(leaf_key, (leaf, mid, root)), TARGET, signing_time=SIGNED)
    result = verify(env, MEDIA_TYPE_COSE, store_of(root))
    assert result.verified, result.reason
    assert len(result.certificate_chain) == 3


@pytest.fixture(scope="module")
def sha1_pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[SigningIdentity, x509.Certificate]:
    """A SHA-1-signed root and a SHA-256 leaf under it, made by the openssl CLI."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not installed")
    d = tmp_path_factory.mktemp("sha1")
    (d / "root.ext").write_text(
        "[v3]\nbasicConstraints=critical,CA:true\nkeyUsage=critical,keyCertSign,cRLSign\n"
    )
    (d / "leaf.ext").write_text(
        "basicConstraints=critical,CA:false\nkeyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=codeSigning\n"
    )

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    run(
        "req",
        "-x509",
        "-sha1",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "root.key",
        "-out",
        "root.pem",
        "-days",
        "30",
        "-subj",
        "/C=US/ST=WA/O=sha1 test/CN=sha1 root",
        "-config",
        "root.ext",
        "-extensions",
        "v3",
    )
    run(
        "req",
        "-new",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "leaf.key",
        "-out",
        "leaf.csr",
        "-subj",
        "/C=US/ST=WA/O=sha1 test/CN=sha1 leaf",
    )
    run(
        "x509",
        "-req",
        "-sha256",
        "-in",
        "leaf.csr",
        "-CA",
        "root.pem",
        "-CAkey",
        "root.key",
        "-CAcreateserial",
        "-out",
        "leaf.pem",
        "-days",
        "30",
        "-extfile",
        "leaf.ext",
    )
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    key = load_pem_private_key((d / "leaf.key").read_bytes(), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    leaf = x509.load_pem_x509_certificate((d / "leaf.pem").read_bytes())
    root = x509.load_pem_x509_certificate((d / "root.pem").read_bytes())
    return SigningIdentity(key, (leaf, root)), root


def test_sha1_anywhere_in_the_chain_is_rejected(
    sha1_pki: tuple[SigningIdentity, x509.Certificate],
) -> None:
    ident, root = sha1_pki
    assert (
        root.signature_hash_algorithm is not None and root.signature_hash_algorithm.name == "sha1"
    )
    signing_time = ident.chain[0].not_valid_before_utc + timedelta(minutes=1)
    env = _sign.sign_jws(ident, TARGET, signing_time=signing_time)
    result = verify(env, MEDIA_TYPE_JWS, store_of(root), now=signing_time + timedelta(minutes=1))
    assert not result.verified
    assert "certificate 'CN=sha1 root,O=sha1 test,ST=WA,C=US' is signed with SHA-1" in result.reason


# -- authenticity --------------------------------------------------------------------------


@pytest.mark.parametrize(("sign", "media_type"), FORMATS)
def test_untrusted_root_fails_authenticity(
    rsa_pki: tuple[SigningIdentity, x509.Certificate],
    ec_pki: tuple[SigningIdentity, x509.Certificate],
    sign: Signer,
    media_type: str,
) -> None:
    ident, _ = rsa_pki
    _, other_root = ec_pki
    result = verify(sign(ident, TARGET, signing_time=SIGNED), media_type, store_of(other_root))
    assert not result.verified
    assert result.reason == (
        "authenticity failed: the signature is not from a trusted signer: no certificate of the "
        "chain of 'CN=regwarden test signer,O=regwarden test,ST=WA,C=US' is in trust store ca:acme"
    )
    assert result.outcome(ValidationType.AUTHENTICITY) is not None
    assert [o.type for o in result.outcomes] == [
        ValidationType.INTEGRITY,
        ValidationType.AUTHENTICITY,
    ]


def test_trusted_identity_mismatch(rsa_pki: tuple[SigningIdentity, x509.Certificate]) -> None:
    ident, root = rsa_pki
    doc = policy(identities=("x509.subject: C=US, ST=WA, O=someone else",))
    result = verify(
        _sign.sign_jws(ident, TARGET, signing_time=SIGNED), MEDIA_TYPE_JWS, store_of(root), doc
    )
    assert not result.verified
    assert (
        "matches none of the trusted identities ['x509.subject: C=US, ST=WA, O=someone else']"
        in result.reason
    )


def test_trusted_identity_subset_match(rsa_pki: tuple[SigningIdentity, x509.Certificate]) -> None:
    ident, root = rsa_pki
    doc = policy(
        identities=("x509.subject: CN=regwarden test signer, O=regwarden test, ST=WA, C=US",)
    )
    assert verify(
        _sign.sign_jws(ident, TARGET, signing_time=SIGNED), MEDIA_TYPE_JWS, store_of(root), doc
    ).verified


def test_missing_named_store_fails_authenticity(
    rsa_pki: tuple[SigningIdentity, x509.Certificate],
) -> None:
    ident, root = rsa_pki
    result = verify(
        _sign.sign_jws(ident, TARGET, signing_time=SIGNED),
        MEDIA_TYPE_JWS,
        store_of(root),
        policy(stores=("ca:absent",)),
    )
    assert not result.verified
    assert "trust store ca:absent does not exist (have: ca:acme)" in result.reason


def test_audit_level_logs_authenticity_but_passes(
    rsa_pki: tuple[SigningIdentity, x509.Certificate],
    ec_pki: tuple[SigningIdentity, x509.Certificate],
) -> None:
    ident, _ = rsa_pki
    _, other_root = ec_pki
    result = verify(
        _sign.sign_jws(ident, TARGET, signing_time=SIGNED),
        MEDIA_TYPE_JWS,
        store_of(other_root),
        policy("audit"),
    )
    assert result.verified
    assert result.level == "audit"
    assert result.reason.endswith("(audit) with 1 logged failure(s)")
    assert len(result.warnings) == 1
    assert result.warnings[0].startswith(
        "authenticity failed (logged, not enforced): the signature is not from a trusted signer"
    )
    outcome = result.outcome(ValidationType.AUTHENTICITY)
    assert outcome is not None and (outcome.status, outcome.action) == ("failed", "log")


def test_skip_level_does_not_read_the_envelope() -> None:
    result = verify(b"not an envelope at all", MEDIA_TYPE_JWS, TrustStore({}), policy("skip"))
    assert result.verified and result.skipped
    assert result.reason == "trust policy statement 'acme' skips verification"
    assert result.outcomes == ()


def test_scope_mismatch_has_no_applicable_policy(
    rsa_pki: tuple[SigningIdentity, x509.Certificate],
) -> None:
    ident, root = rsa_pki
    doc = policy(scopes=("registry.example.com/other/app",))
    result = verify(
        _sign.sign_jws(ident, TARGET, signing_time=SIGNED), MEDIA_TYPE_JWS, store_of(root), doc
    )
    assert not result.verified
    assert result.reason == (
        "no trust policy statement applies to 'registry.example.com/team/app'; "
        "scopes: registry.example.com/other/app"
    )


def test_bad_reference_is_a_usage_error(rsa_pki: tuple[SigningIdentity, x509.Certificate]) -> None:
    ident, root = rsa_pki
    env = _sign.sign_jws(ident, TARGET, signing_time=SIGNED)
    with pytest.raises(InvalidReference, match="registry scope 'nohost' is not valid"):
        verify(env, MEDIA_TYPE_JWS, store_of(root), reference="nohost")
    with pytest.raises(UsageError, match="needs the artifact reference"):
        verify(env, MEDIA_TYPE_JWS, store_of(root), reference=None)
    with pytest.raises(UsageError, match="timezone-aware"):
        verify(env, MEDIA_TYPE_JWS, store_of(root), now=datetime(2025, 1, 1))


# -- time: expiry, validity and timestamps --------------------------------------------------


@pytest.mark.parametrize(("sign", "media_type"), FORMATS)
def test_expired_leaf_fails_without_timestamp(sign: Signer, media_type: str) -> None:
    ident, root = _chain_with(leaf_start=NOW - timedelta(days=40), leaf_days=30)
    signed = NOW - timedelta(days=20)
    result = verify(sign(ident, TARGET, signing_time=signed), media_type, store_of(root))
    assert not result.verified
    assert result.reason.startswith(
        "authenticTimestamp failed: no trusted timestamp is used, so the chain must be valid "
        "now: certificate 'CN=rules leaf,O=regwarden test,ST=WA,C=US' expired at"
    )
    permissive = verify(
        sign(ident, TARGET, signing_time=signed), media_type, store_of(root), policy("permissive")
    )
    assert permissive.verified and len(permissive.warnings) == 1


def test_signature_expiry(rsa_pki: tuple[SigningIdentity, x509.Certificate]) -> None:
    ident, root = rsa_pki
    env = _sign.sign_cose(ident, TARGET, signing_time=SIGNED, expiry=NOW - timedelta(minutes=1))
    result = verify(env, MEDIA_TYPE_COSE, store_of(root))
    assert not result.verified
    assert result.reason.startswith("expiry failed: the signature expired at 2025-06-01T11:59:00")
    logged = verify(env, MEDIA_TYPE_COSE, store_of(root), policy(override={"expiry": "log"}))
    assert logged.verified and logged.level == "custom"
    assert verify(env, MEDIA_TYPE_COSE, store_of(root), now=NOW - timedelta(minutes=2)).verified


def test_expiry_before_signing_time_is_malformed(
    rsa_pki: tuple[SigningIdentity, x509.Certificate],
) -> None:
    ident, root = rsa_pki
    env = _sign.sign_jws(ident, TARGET, signing_time=SIGNED, expiry=SIGNED - timedelta(days=1))
    with pytest.raises(NotationError, match="is not after the signing time"):
        verify(env, MEDIA_TYPE_JWS, store_of(root))


@pytest.mark.parametrize(("sign", "media_type"), FORMATS)
def test_timestamp_keeps_an_expired_leaf_valid(
    tsa: tuple[Timestamper, x509.Certificate], sign: Signer, media_type: str
) -> None:
    stamper, tsa_root = tsa
    ident, root = _chain_with(leaf_start=SIGNED - timedelta(days=1), leaf_days=2)
    env = sign(ident, TARGET, signing_time=SIGNED, timestamper=stamper)
    later = NOW + timedelta(days=300)  # the leaf has long expired; the TSA chain has not
    doc = policy(stores=("ca:acme", "tsa:stamps"), skipTimestampRevocationCheck=False)
    result = verify(env, media_type, store_of(root, tsa_root=tsa_root), doc, now=later)
    assert result.verified, result.reason
    assert result.timestamp == SIGNED
    note = result.outcome(ValidationType.AUTHENTIC_TIMESTAMP)
    assert note is not None and note.reason == f"timestamped at {SIGNED.isoformat()}"


def test_timestamp_required_but_missing(
    rsa_pki: tuple[SigningIdentity, x509.Certificate], tsa: tuple[Timestamper, x509.Certificate]
) -> None:
    ident, root = rsa_pki
    _, tsa_root = tsa
    doc = policy(stores=("ca:acme", "tsa:stamps"))
    result = verify(
        _sign.sign_jws(ident, TARGET, signing_time=SIGNED),
        MEDIA_TYPE_JWS,
        store_of(root, tsa_root=tsa_root),
        doc,
    )
    assert not result.verified
    assert result.reason == (
        "authenticTimestamp failed: the trust policy requires a timestamp countersignature "
        "(tsa store stamps), but the signature has none"
    )
    after = policy(stores=("ca:acme", "tsa:stamps"), verifyTimestamp="afterCertExpiry")
    assert verify(
        _sign.sign_jws(ident, TARGET, signing_time=SIGNED),
        MEDIA_TYPE_JWS,
        store_of(root, tsa_root=tsa_root),
        after,
    ).verified


def test_timestamp_from_an_untrusted_tsa(
    rsa_pki: tuple[SigningIdentity, x509.Certificate], tsa: tuple[Timestamper, x509.Certificate]
) -> None:
    ident, root = rsa_pki
    stamper, _ = tsa
    _, unrelated_root = _sign.demo_timestamper(SIGNED)
    env = _sign.sign_jws(ident, TARGET, signing_time=SIGNED, timestamper=stamper)
    result = verify(
        env,
        MEDIA_TYPE_JWS,
        store_of(root, tsa_root=unrelated_root),
        policy(stores=("ca:acme", "tsa:stamps")),
    )
    assert not result.verified
    assert "timestamp countersignature: the TSA certificate 'CN=regwarden test TSA" in result.reason
    assert "does not chain to a trusted TSA root" in result.reason


def test_timestamp_over_another_signature(
    rsa_pki: tuple[SigningIdentity, x509.Certificate], tsa: tuple[Timestamper, x509.Certificate]
) -> None:
    ident, root = rsa_pki
    stamper, tsa_root = tsa
    env = json.loads(_sign.sign_jws(ident, TARGET, signing_time=SIGNED))
    env["header"]["io.cncf.notary.timestampSignature"] = base64.b64encode(
        stamper.stamp(b"other")
    ).decode()
    result = verify(
        json.dumps(env).encode(),
        MEDIA_TYPE_JWS,
        store_of(root, tsa_root=tsa_root),
        policy(stores=("ca:acme", "tsa:stamps")),
    )
    assert not result.verified
    assert "message imprint mismatch" in result.reason


def test_timestamp_after_leaf_expiry_fails(tsa: tuple[Timestamper, x509.Certificate]) -> None:
    stamper, tsa_root = tsa
    ident, root = _chain_with(leaf_start=SIGNED - timedelta(days=10), leaf_days=2)
    env = _sign.sign_jws(ident, TARGET, signing_time=SIGNED, timestamper=stamper)
    result = verify(
        env,
        MEDIA_TYPE_JWS,
        store_of(root, tsa_root=tsa_root),
        policy(stores=("ca:acme", "tsa:stamps")),
    )
    assert not result.verified
    assert "authenticTimestamp failed: at the timestamp" in result.reason
    assert "certificate 'CN=rules leaf,O=regwarden test,ST=WA,C=US' expired at" in result.reason


@pytest.mark.parametrize(
    ("eku", "critical", "reason"),
    [
        (
            (ExtendedKeyUsageOID.CODE_SIGNING,),
            True,
            "timestamping certificate 'CN=bad tsa,O=regwarden test,ST=WA,C=US' must have "
            "timeStamping as its only extended key usage",
        ),
        (
            (ExtendedKeyUsageOID.TIME_STAMPING, ExtendedKeyUsageOID.CODE_SIGNING),
            True,
            "must have timeStamping as its only extended key usage",
        ),
        (
            (ExtendedKeyUsageOID.TIME_STAMPING,),
            False,
            "certificate 'CN=bad tsa,O=regwarden test,ST=WA,C=US': the extended key usage "
            "extension 2.5.29.37 must be critical",
        ),
        (
            None,
            False,
            "certificate 'CN=bad tsa,O=regwarden test,ST=WA,C=US': the extended key usage "
            "extension 2.5.29.37 must be present",
        ),
    ],
)
def test_tsa_extended_key_usage_rules(
    rsa_pki: tuple[SigningIdentity, x509.Certificate],
    eku: tuple[x509.ObjectIdentifier, ...] | None,
    critical: bool,
    reason: str,
) -> None:
    ident, root = rsa_pki
    tsa_root_key, tsa_key = new_key(), new_key()
    start = SIGNED - timedelta(days=1)
    tsa_root = issue(
        name("bad tsa root"),
        tsa_root_key,
        ca=True,
        not_before=start,
        not_after=NOW + timedelta(days=9),
    )
    tsa_leaf = issue(
        name("bad tsa"),
        tsa_key,
        issuer=(tsa_root, tsa_root_key),
        not_before=start,
        not_after=NOW + timedelta(days=9),
        eku=eku,
        eku_critical=critical,
    )
    stamper = Timestamper(tsa_key, (tsa_leaf, tsa_root), SIGNED)
    env = _sign.sign_jws(ident, TARGET, signing_time=SIGNED, timestamper=stamper)
    result = verify(
        env,
        MEDIA_TYPE_JWS,
        store_of(root, tsa_root=tsa_root),
        policy(stores=("ca:acme", "tsa:stamps")),
    )
    assert not result.verified
    assert result.reason.startswith("authenticTimestamp failed: timestamp countersignature: ")
    assert reason in result.reason


def test_signing_authority_scheme(rsa_pki: tuple[SigningIdentity, x509.Certificate]) -> None:
    ident, root = rsa_pki
    env = _sign.sign_jws(ident, TARGET, signing_time=SIGNED, scheme="notary.x509.signingAuthority")
    sa_store = TrustStore.from_certificates({("signingAuthority", "aws"): [root]})
    ok = verify(env, MEDIA_TYPE_JWS, sa_store, policy(stores=("signingAuthority:aws",)))
    assert ok.verified, ok.reason
    assert ok.signing_scheme == "notary.x509.signingAuthority"
    wrong = verify(env, MEDIA_TYPE_JWS, store_of(root))
    assert not wrong.verified
    assert (
        "lists no signingAuthority trust store, which signing scheme "
        "notary.x509.signingAuthority needs" in wrong.reason
    )
    # after the leaf expires the authentic signing time still vouches for the signature
    assert verify(
        env,
        MEDIA_TYPE_JWS,
        sa_store,
        policy(stores=("signingAuthority:aws",)),
        now=NOW + timedelta(days=3000),
    ).verified


# -- revocation and user metadata ----------------------------------------------------------


def test_revocable_certificate_has_unknown_status_offline() -> None:
    root_key, leaf_key = new_key(), new_key()
    start, end = NOW - timedelta(days=1), NOW + timedelta(days=30)
    root = issue(name("crl root"), root_key, ca=True, not_before=start, not_after=end)
    builder = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
                    x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "WA"),
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "crl"),
                    x509.NameAttribute(NameOID.COMMON_NAME, "crl leaf"),
                ]
            )
        )
        .issuer_name(root.subject)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False), True
        )
        .add_extension(
            x509.CRLDistributionPoints(
                [
                    x509.DistributionPoint(
                        [x509.UniformResourceIdentifier("http://crl.example.com/root.crl")],
                        None,
                        None,
                        None,
                    )
                ]
            ),
            False,
        )
    )
    leaf = builder.sign(root_key, hashes.SHA256())
    env = _sign.sign_jws(SigningIdentity(leaf_key, (leaf, root)), TARGET, signing_time=SIGNED)
    strict = verify(env, MEDIA_TYPE_JWS, store_of(root))
    assert not strict.verified
    assert strict.reason.startswith(
        "revocation failed: revocation status of 'CN=crl leaf,O=crl,ST=WA,C=US' is unknown"
    )
    skipped = verify(env, MEDIA_TYPE_JWS, store_of(root), policy(override={"revocation": "skip"}))
    assert skipped.verified
    rev = skipped.outcome(ValidationType.REVOCATION)
    assert rev is not None and rev.status == "skipped"


def test_user_metadata(rsa_pki: tuple[SigningIdentity, x509.Certificate]) -> None:
    ident, root = rsa_pki
    env = _sign.sign_jws(ident, TARGET, signing_time=SIGNED, annotations={"team": "payments"})
    assert verify(env, MEDIA_TYPE_JWS, store_of(root), user_metadata={"team": "payments"}).verified
    bad = verify(env, MEDIA_TYPE_JWS, store_of(root), user_metadata={"team": "search"})
    assert not bad.verified
    assert bad.reason.startswith("user metadata team='search' is not in the signature")
    with pytest.raises(NotationError, match="user metadata team='search'"):
        bad.raise_if_failed()


def test_blob_policy_selects_by_name(rsa_pki: tuple[SigningIdentity, x509.Certificate]) -> None:
    ident, root = rsa_pki
    doc = parse_trust_policy(
        {
            "version": "1.0",
            "trustPolicies": [
                {
                    "name": "global",
                    "globalPolicy": True,
                    "signatureVerification": {"level": "strict"},
                    "trustStores": ["ca:acme"],
                    "trustedIdentities": ["*"],
                },
                {
                    "name": "never",
                    "signatureVerification": {"level": "strict"},
                    "trustStores": ["ca:nobody"],
                    "trustedIdentities": ["*"],
                },
            ],
        }
    )
    assert doc.kind == "blob"
    env = _sign.sign_jws(ident, TARGET, signing_time=SIGNED)
    assert verify(env, MEDIA_TYPE_JWS, store_of(root), doc, reference=None).verified
    named = verify(env, MEDIA_TYPE_JWS, store_of(root), doc, reference=None, policy_name="never")
    assert not named.verified and "trust store ca:nobody does not exist" in named.reason
    missing = verify(env, MEDIA_TYPE_JWS, store_of(root), doc, reference=None, policy_name="nope")
    assert missing.reason == "no blob trust policy statement is named 'nope'; valid: global, never"


def test_trust_store_from_disk(
    tmp_path: Path, rsa_pki: tuple[SigningIdentity, x509.Certificate]
) -> None:
    from cryptography.hazmat.primitives.serialization import Encoding

    from regwarden.signatures.notation import load_trust_store

    ident, root = rsa_pki
    named = tmp_path / "x509" / "ca" / "acme"
    named.mkdir(parents=True)
    (named / "root.crt").write_bytes(root.public_bytes(Encoding.DER))
    (named / "notes.txt").write_text("ignored")
    (named / "old").mkdir()
    store = load_trust_store(tmp_path)
    assert store.get("ca", "acme") == (root,)
    env = _sign.sign_jws(ident, TARGET, signing_time=SIGNED)
    assert verify(env, MEDIA_TYPE_JWS, store).verified
