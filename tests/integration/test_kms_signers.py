"""The KMS signers of verdict attestations (`regwarden.attest._signer_aws/_gcp/_azure`):
each signs a legacy `.att` DSSE envelope that our verifier accepts with the public key
its scheme yields (`fetch_public_key` for awskms://, the KMS's own public key for the
others) and refuses with another key. AWS KMS runs in moto (server mode, a real
ECC_NIST_P256 key); Cloud KMS and Key Vault are the loopback fakes, each holding a real
private key."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from support import moto_server as moto_support
from support.fake_gcpkms import FakeCloudKms
from support.fake_keyvault import RESOURCE, FakeKeyVault
from support.moto_server import MotoServer, watch

from regwarden.attest._signer import SIGNERS, Signer
from regwarden.attest._signer_aws import RAW_MESSAGE_LIMIT, AwsKmsSigner
from regwarden.attest._signer_azure import AzureKmsSigner
from regwarden.attest._signer_gcp import GcpKmsSigner, crc32c
from regwarden.errors import UsageError
from regwarden.signatures import (
    DSSE_MEDIA_TYPE,
    CosignPolicy,
    KeyFormatError,
    PublicKey,
    SignatureCandidate,
    SignatureLayer,
    in_toto_statement,
    load_public_key,
    verify_attestations,
)
from regwarden.signatures._dsse import pae
from regwarden.signatures._util import digest_of, go_json
from regwarden.signatures.keys import fetch_public_key, generate_private_key

moto_server, moto = moto_support.moto_server, moto_support.moto

PREDICATE = "https://regwarden.dev/attestations/verdict/v1"
IMAGE = "sha256:" + "ab" * 32
KEY = "projects/p/locations/global/keyRings/regwarden/cryptoKeys/verdicts"


def _candidate(signer: Signer, *, padding: int = 0) -> SignatureCandidate:
    """A legacy `.att` layer as cosign writes it, signed by `signer`."""
    predicate = {"verdict": "PASSED", "note": "x" * padding}
    statement = in_toto_statement(IMAGE, PREDICATE, predicate, name="reg/app", v1=False)
    signature = signer.sign(pae("application/vnd.in-toto+json", statement))
    envelope = go_json(
        {
            "payloadType": "application/vnd.in-toto+json",
            "payload": base64.b64encode(statement).decode(),
            "signatures": [{"keyid": "", "sig": base64.b64encode(signature).decode()}],
        }
    )
    layer = SignatureLayer(DSSE_MEDIA_TYPE, digest_of(envelope), len(envelope))
    return SignatureCandidate("sha256:" + "cd" * 32, layer, envelope)


def _verified(candidate: SignatureCandidate, key: PublicKey) -> bool:
    policy = CosignPolicy(keys=(key,), predicate_types=frozenset({PREDICATE}))
    [result] = verify_attestations([candidate], image_digest=IMAGE, policy=policy)
    return result.result.verified


def _other_key() -> PublicKey:
    return generate_private_key().public_key


# -- AWS KMS (moto) ---------------------------------------------------------------------------


def _aws_key(kms: Any, spec: str = "ECC_NIST_P256", usage: str = "SIGN_VERIFY") -> str:
    key_id = str(kms.create_key(KeySpec=spec, KeyUsage=usage)["KeyMetadata"]["KeyId"])
    kms.create_alias(AliasName="alias/regwarden-verdicts", TargetKeyId=key_id)
    return key_id


def test_aws_kms_signs_a_verdict_attestation_that_verifies(moto: MotoServer) -> None:
    kms = moto.client("kms")
    _aws_key(kms)
    signer = AwsKmsSigner("awskms:///alias/regwarden-verdicts", client=kms)
    public = fetch_public_key("awskms:///alias/regwarden-verdicts", kms_client=kms)
    calls = watch(kms, "kms")

    candidate = _candidate(signer)

    assert signer.public_key() == public
    assert signer.algorithm == "ecdsa-p256"
    assert _verified(candidate, public)
    assert not _verified(candidate, _other_key())
    [sent] = calls.of("Sign")
    assert sent["SigningAlgorithm"] == "ECDSA_SHA_256"
    assert sent["MessageType"] == "RAW"
    assert calls.count("GetPublicKey") == 1  # the key is described once per signer
    _candidate(signer)
    assert calls.count("GetPublicKey") == 1


def test_aws_kms_rsa_key_signs_with_pss(moto: MotoServer) -> None:
    kms = moto.client("kms")
    key_id = _aws_key(kms, "RSA_2048")
    signer = AwsKmsSigner(f"awskms:///{key_id}", client=kms)
    calls = watch(kms, "kms")

    candidate = _candidate(signer)

    assert signer.algorithm == "rsa"
    assert _verified(candidate, fetch_public_key(f"awskms:///{key_id}", kms_client=kms))
    assert calls.of("Sign")[0]["SigningAlgorithm"] == "RSASSA_PSS_SHA_256"


def test_aws_kms_long_payload_is_sent_as_its_digest(moto: MotoServer) -> None:
    """Over KMS's 4096-byte message limit the SHA-256 digest goes with MessageType
    DIGEST. moto signs whatever Message it gets as RAW (it ignores MessageType), so here
    only the request is checked, not the signature."""
    kms = moto.client("kms")
    _aws_key(kms)
    signer = AwsKmsSigner("awskms:///alias/regwarden-verdicts", client=kms)
    calls = watch(kms, "kms")
    data = b"p" * (RAW_MESSAGE_LIMIT + 1)

    signer.sign(data)

    [sent] = calls.of("Sign")
    assert sent["MessageType"] == "DIGEST"
    assert base64.b64decode(sent["Message"]) == hashlib.sha256(data).digest()


def test_aws_kms_key_that_cannot_sign_is_refused(moto: MotoServer) -> None:
    kms = moto.client("kms")
    key_id = _aws_key(kms, "SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT")

    with pytest.raises(KeyFormatError, match="SIGN_VERIFY"):
        AwsKmsSigner(f"awskms:///{key_id}", client=kms).sign(b"data")
    with pytest.raises(KeyFormatError, match="refused get_public_key"):
        AwsKmsSigner("awskms:///alias/none", client=kms).public_key()


def test_aws_kms_signer_from_the_registry_uses_the_environment_endpoint(
    moto: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    _aws_key(moto.client("kms"))
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", moto.endpoint_url)

    signer = SIGNERS.get("awskms")("awskms:///alias/regwarden-verdicts")

    assert isinstance(signer, AwsKmsSigner)
    assert _verified(_candidate(signer), signer.public_key())


# -- Cloud KMS (fake) -------------------------------------------------------------------------


@pytest.fixture
def cloudkms() -> Iterator[FakeCloudKms]:
    with FakeCloudKms() as fake:
        yield fake


def test_crc32c_known_answer() -> None:
    # RFC 3720 B.4: 32 bytes of zeros.
    assert crc32c(bytes(32)) == 0x8A9136AA
    assert crc32c(b"123456789") == 0xE3069283


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("EC_SIGN_P256_SHA256", "ecdsa-p256"),
        ("EC_SIGN_P384_SHA384", "ecdsa-p384"),
        ("RSA_SIGN_PSS_2048_SHA256", "rsa"),
        ("RSA_SIGN_PKCS1_2048_SHA256", "rsa"),
        ("EC_SIGN_ED25519", "ed25519"),
    ],
)
def test_cloud_kms_signs_a_verdict_attestation_that_verifies(
    cloudkms: FakeCloudKms, algorithm: str, expected: str
) -> None:
    name = cloudkms.add_version(KEY, algorithm)
    env = {"REGWARDEN_GCP_ENDPOINT_CLOUDKMS": cloudkms.url}
    signer = GcpKmsSigner(f"gcpkms://{name}", env)

    candidate = _candidate(signer)

    assert signer.algorithm == expected
    assert signer.public_key() == load_public_key(cloudkms.public_pem(name))
    assert _verified(candidate, load_public_key(cloudkms.public_pem(name)))
    assert not _verified(candidate, _other_key())
    [sign] = cloudkms.calls("POST", rf"/v1/{name}:asymmetricSign")
    assert sign.headers.get("authorization") is None  # loopback http: no token


def test_cloud_kms_without_a_version_uses_the_newest_enabled_one(
    cloudkms: FakeCloudKms,
) -> None:
    cloudkms.page_size = 1  # the list is read across pages
    first = cloudkms.add_version(KEY)
    second = cloudkms.add_version(KEY)
    third = cloudkms.add_version(KEY)
    cloudkms.set_state(third, "DISABLED")

    signer = SIGNERS.get("gcpkms")(f"gcpkms://{KEY}")
    candidate = _candidate(signer)

    assert isinstance(signer, GcpKmsSigner)  # the registry's factory, env from os.environ
    assert _verified(candidate, load_public_key(cloudkms.public_pem(second)))
    assert not _verified(candidate, load_public_key(cloudkms.public_pem(first)))
    assert len(cloudkms.calls("GET", rf"/v1/{KEY}/cryptoKeyVersions")) == 2  # two pages


@pytest.fixture(autouse=True)
def _gcp_endpoint(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if "cloudkms" in request.fixturenames:
        fake: FakeCloudKms = request.getfixturevalue("cloudkms")
        monkeypatch.setenv("REGWARDEN_GCP_ENDPOINT_CLOUDKMS", fake.url)


def test_cloud_kms_refusals(cloudkms: FakeCloudKms) -> None:
    env = {"REGWARDEN_GCP_ENDPOINT_CLOUDKMS": cloudkms.url}
    name = cloudkms.add_version(KEY, "RSA_SIGN_PSS_4096_SHA512")
    with pytest.raises(KeyFormatError, match="cannot make a cosign signature"):
        GcpKmsSigner(f"gcpkms://{name}", env).sign(b"data")
    with pytest.raises(KeyFormatError, match="NOT_FOUND"):
        GcpKmsSigner(f"gcpkms://{KEY}/cryptoKeyVersions/9", env).public_key()
    with pytest.raises(KeyFormatError, match="expected gcpkms://projects"):
        GcpKmsSigner("gcpkms://keyRings/r", env)
    with pytest.raises(UsageError):
        GcpKmsSigner(f"gcpkms://{name}", {"REGWARDEN_GCP_ENDPOINT_CLOUDKMS": "http://kms.test"})


# -- Azure Key Vault (fake) -------------------------------------------------------------------


@pytest.fixture
def vault() -> Iterator[FakeKeyVault]:
    with FakeKeyVault() as fake:
        yield fake


def _vault_env(vault: FakeKeyVault) -> dict[str, str]:
    return {
        "REGWARDEN_AZURE_ENDPOINT_KEYVAULT": vault.url,
        "REGWARDEN_AZURE_CA_BUNDLE": vault.ca_file,
    }


def _pem(key: Any) -> bytes:
    return bytes(
        key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


@pytest.mark.parametrize(
    ("kty", "crv", "expected"),
    [("EC", "P-256", "ecdsa-p256"), ("EC", "P-384", "ecdsa-p384"), ("RSA", "", "rsa")],
)
def test_key_vault_signs_a_verdict_attestation_that_verifies(
    vault: FakeKeyVault, kty: str, crv: str, expected: str
) -> None:
    pytest.importorskip("azure.core")
    vault.add_key("verdicts", kty=kty, crv=crv or "P-256")
    credential = vault.credential()
    signer = AzureKmsSigner(
        "azurekms://acme.vault.azure.net/verdicts", _vault_env(vault), credential=credential
    )

    candidate = _candidate(signer)
    _candidate(signer)

    public = load_public_key(_pem(vault.key_public("verdicts")))
    assert signer.algorithm == expected
    assert signer.public_key() == public
    assert _verified(candidate, public)
    assert not _verified(candidate, _other_key())
    # the challenge once: one 401, then every request with the token for the vault's resource
    statuses = [seen.status for seen in vault.requests]
    assert statuses == [401, 200, 200, 200]
    assert credential.scopes == [(RESOURCE + "/.default",)]


def test_key_vault_pinned_version_and_refusals(vault: FakeKeyVault) -> None:
    pytest.importorskip("azure.core")
    old = vault.add_key("verdicts")
    vault.add_key("verdicts")
    env = _vault_env(vault)
    credential = vault.credential()

    pinned = AzureKmsSigner(f"azurekms://acme/verdicts/{old}", env, credential=credential)
    assert _verified(_candidate(pinned), load_public_key(_pem(vault.key_public("verdicts", old))))

    with pytest.raises(KeyFormatError, match="HTTP 404 KeyNotFound"):
        AzureKmsSigner("azurekms://acme/none", env, credential=credential).public_key()
    vault.disable_key("verdicts")
    with pytest.raises(KeyFormatError, match="HTTP 403 Forbidden"):
        AzureKmsSigner("azurekms://acme/verdicts", env, credential=credential).sign(b"x")
    with pytest.raises(KeyFormatError, match="expected azurekms://"):
        AzureKmsSigner("azurekms://acme/bad_name", env, credential=credential)


def test_key_vault_challenge_for_another_domain_is_refused(vault: FakeKeyVault) -> None:
    """Against a real vault host the challenge's resource must be the vault's domain; the
    fake names vault.azure.net while it listens on 127.0.0.1, so with the check on (no
    stand-in variable: only the CA bundle) no token is asked for."""
    pytest.importorskip("azure.core")
    vault.add_key("verdicts")
    credential = vault.credential()
    signer = AzureKmsSigner(
        f"azurekms://{vault.host}/verdicts",
        {"REGWARDEN_AZURE_CA_BUNDLE": vault.ca_file},
        credential=credential,
    )

    with pytest.raises(KeyFormatError, match="not its own domain"):
        signer.public_key()
    assert credential.scopes == []
