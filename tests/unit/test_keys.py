"""Keys: PEM public keys, cosign-encrypted private keys, key references and AWS KMS."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from regwarden.errors import NotImplementedYet
from regwarden.signatures import KeyFormatError, SignatureFormatError
from regwarden.signatures.keys import (
    COSIGN_PASSWORD_ENV,
    KeyRef,
    encrypt_private_key,
    fetch_public_key,
    generate_private_key,
    load_private_key,
    load_public_key,
)

ALGORITHMS = ["ecdsa-p256", "ecdsa-p384", "ecdsa-p521", "rsa", "ed25519"]


@pytest.fixture(scope="module", params=ALGORITHMS)
def private_key(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    return generate_private_key(request.param, rsa_bits=2048)


def test_public_key_loads_and_reports_spki_sha256_as_key_id(private_key) -> None:  # type: ignore[no-untyped-def]
    pem = private_key.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    key = load_public_key(pem)
    der = private_key.key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert key.key_id == hashlib.sha256(der).hexdigest()
    assert base64.b64decode(key.hint) == hashlib.sha256(der).digest()
    assert key.algorithm == private_key.algorithm
    assert load_public_key(pem) is key  # cached


def test_sign_verify_both_styles(private_key) -> None:  # type: ignore[no-untyped-def]
    public = private_key.public_key
    for style in ("legacy", "bundle"):
        sig = private_key.sign(b"payload", style=style)
        assert public.verify(sig, b"payload")
        assert not public.verify(sig, b"payloaD")
        assert not public.verify(sig[:-1] + bytes([sig[-1] ^ 1]), b"payload")


def test_ecdsa_accepts_sha256_and_the_curve_hash() -> None:
    raw = ec.generate_private_key(ec.SECP384R1())
    key = load_public_key(
        raw.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    assert key.verify(raw.sign(b"m", ec.ECDSA(hashes.SHA256())), b"m")
    assert key.verify(raw.sign(b"m", ec.ECDSA(hashes.SHA384())), b"m")
    assert not key.verify(raw.sign(b"m", ec.ECDSA(hashes.SHA512())), b"m")


def test_rsa_accepts_pkcs1v15_and_pss() -> None:
    raw = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key = load_public_key(
        raw.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
    assert key.verify(raw.sign(b"m", padding.PKCS1v15(), hashes.SHA256()), b"m")
    assert key.verify(raw.sign(b"m", pss, hashes.SHA256()), b"m")
    digest = hashlib.sha256(b"m").digest()
    assert key.verify_digest(raw.sign(b"m", padding.PKCS1v15(), hashes.SHA256()), digest, "sha256")


def test_ed25519_accepts_pure_and_prehashed() -> None:
    private = generate_private_key("ed25519")
    pure = private.key.sign(b"m")  # type: ignore[call-arg]
    ph = private.sign(b"m", style="legacy")
    assert pure != ph
    assert private.public_key.verify(pure, b"m")
    assert private.public_key.verify(ph, b"m")
    assert not private.public_key.verify(ph, b"n")
    # Ed25519 cannot be checked from a digest alone
    assert not private.public_key.verify_digest(pure, hashlib.sha256(b"m").digest(), "sha256")


def test_small_rsa_and_unsupported_curves_are_refused() -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505
    pem = small.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(KeyFormatError, match="got 1024 bits, expected at least 2048"):
        load_public_key(pem)
    k1 = ec.generate_private_key(ec.SECP256K1()).public_key()
    with pytest.raises(KeyFormatError, match="valid: P-256, P-384, P-521"):
        load_public_key(
            k1.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
    with pytest.raises(KeyFormatError, match="expected a PEM 'PUBLIC KEY'"):
        load_public_key(b"not a key")


@pytest.mark.parametrize(
    "pem_type", ["ENCRYPTED SIGSTORE PRIVATE KEY", "ENCRYPTED COSIGN PRIVATE KEY"]
)
def test_encrypt_decrypt_round_trip_every_algorithm(private_key, pem_type: str) -> None:  # type: ignore[no-untyped-def]
    pem = encrypt_private_key(private_key, "s3cret", pem_type=pem_type, scrypt_n=32768)
    assert pem.startswith(f"-----BEGIN {pem_type}-----\n".encode())
    body = b"".join(pem.splitlines()[1:-1])
    doc = json.loads(base64.b64decode(body))
    assert doc["kdf"]["params"] == {"N": 32768, "r": 8, "p": 1}
    assert doc["cipher"]["name"] == "nacl/secretbox"
    assert len(base64.b64decode(doc["kdf"]["salt"])) == 32
    loaded = load_private_key(pem, "s3cret")
    assert loaded.pkcs8_der() == private_key.pkcs8_der()
    with pytest.raises(KeyFormatError, match="wrong password"):
        load_private_key(pem, "wrong")


def test_default_work_factor_and_env_password() -> None:
    key = generate_private_key()
    pem = encrypt_private_key(key, "from-env")  # N=65536 like cosign generate-key-pair
    assert b"ENCRYPTED SIGSTORE PRIVATE KEY" in pem
    loaded = load_private_key(pem, env={COSIGN_PASSWORD_ENV: "from-env"})
    assert loaded.public_key == key.public_key
    with pytest.raises(KeyFormatError, match=COSIGN_PASSWORD_ENV):
        load_private_key(pem, env={})


def test_empty_password_is_allowed() -> None:
    key = generate_private_key("ed25519")
    pem = encrypt_private_key(key, "", scrypt_n=32768)
    assert load_private_key(pem, env={}).public_key == key.public_key


def _pem(doc: object, label: str = "ENCRYPTED SIGSTORE PRIVATE KEY") -> bytes:
    body = base64.b64encode(json.dumps(doc).encode()).decode()
    return f"-----BEGIN {label}-----\n{body}\n-----END {label}-----\n".encode()


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"N": 1024, "r": 8, "p": 1}, "expected N in 32768, 65536, 131072"),
        ({"N": 32768, "r": 16, "p": 1}, "r=8 p=1"),
        ({"N": 32768, "r": 8, "p": 2}, "r=8 p=1"),
        ({"N": "32768", "r": 8, "p": 1}, "expected N in"),
        ({"N": 2**40, "r": 8, "p": 1}, "expected N in"),
    ],
)
def test_scrypt_parameters_outside_cosigns_set_are_refused(
    params: dict[str, object], message: str
) -> None:
    doc = {
        "kdf": {"name": "scrypt", "params": params, "salt": base64.b64encode(b"s" * 32).decode()},
        "cipher": {"name": "nacl/secretbox", "nonce": base64.b64encode(b"n" * 24).decode()},
        "ciphertext": base64.b64encode(b"c" * 48).decode(),
    }
    with pytest.raises(KeyFormatError, match=message):
        load_private_key(_pem(doc), "x")


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["kdf"].update(name="argon2"), "expected 'scrypt'"),
        (lambda d: d["cipher"].update(name="aes-gcm"), "expected 'nacl/secretbox'"),
        (lambda d: d["cipher"].update(nonce=base64.b64encode(b"x" * 12).decode()), "expected 24"),
        (lambda d: d.pop("ciphertext"), "missing field 'ciphertext'"),
        (lambda d: d["kdf"].update(salt="%%%"), "not base64"),
    ],
)
def test_malformed_encrypted_keys_name_the_problem(mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    pem = encrypt_private_key(generate_private_key(), "pw", scrypt_n=32768)
    doc = json.loads(base64.b64decode(b"".join(pem.splitlines()[1:-1])))
    mutate(doc)
    with pytest.raises(KeyFormatError, match=message):
        load_private_key(_pem(doc), "pw")


def test_plain_pkcs8_and_unknown_pem_types() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    assert load_private_key(pem).public_key.algorithm == "ecdsa-p256"
    with pytest.raises(KeyFormatError, match="unsupported PEM block 'CERTIFICATE'"):
        load_private_key(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    with pytest.raises(KeyFormatError, match="no PEM block"):
        load_private_key(b"")


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    st.one_of(
        st.binary(max_size=300),
        st.recursive(
            st.none() | st.integers() | st.text(max_size=20) | st.booleans(),
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(
                    st.sampled_from(
                        [
                            "kdf",
                            "name",
                            "params",
                            "N",
                            "r",
                            "p",
                            "salt",
                            "cipher",
                            "nonce",
                            "ciphertext",
                        ]
                    ),
                    inner,
                    max_size=5,
                )
            ),
            max_leaves=12,
        ).map(_pem),
    )
)
def test_fuzz_encrypted_key_parser_raises_only_key_errors(data: bytes) -> None:
    try:
        key_id = load_private_key(data, "pw").public_key.key_id
    except KeyFormatError as exc:
        key_id = ""
        message = str(exc)
    else:  # only reachable for a well-formed key encrypted under "pw"
        message = "loaded"
    assert message
    assert key_id == "" or len(key_id) == 64


@pytest.mark.parametrize(
    ("text", "scheme", "value", "endpoint"),
    [
        ("cosign.pub", "file", "cosign.pub", None),
        ("file:///etc/keys/cosign.pub", "file", "/etc/keys/cosign.pub", None),
        (
            "awskms:///1234abcd-12ab-34cd-56ef-1234567890ab",
            "awskms",
            "1234abcd-12ab-34cd-56ef-1234567890ab",
            None,
        ),
        ("awskms:///alias/release", "awskms", "alias/release", None),
        ("awskms://localhost:4566/alias/release", "awskms", "alias/release", "localhost:4566"),
        (
            "awskms:///arn:aws:kms:eu-west-1:111122223333:key/abc",
            "awskms",
            "arn:aws:kms:eu-west-1:111122223333:key/abc",
            None,
        ),
        (
            "gcpkms://projects/p/locations/l/keyRings/r/cryptoKeys/k",
            "gcpkms",
            "projects/p/locations/l/keyRings/r/cryptoKeys/k",
            None,
        ),
        (
            "azurekms://vault.vault.azure.net/release",
            "azurekms",
            "vault.vault.azure.net/release",
            None,
        ),
    ],
)
def test_key_ref_parse(text: str, scheme: str, value: str, endpoint: str | None) -> None:
    ref = KeyRef.parse(text)
    assert (ref.scheme, ref.value, ref.endpoint) == (scheme, value, endpoint)


def test_key_ref_region_and_errors() -> None:
    assert KeyRef.parse("awskms:///arn:aws:kms:eu-west-1:1:key/abc").aws_region == "eu-west-1"
    assert KeyRef.parse("awskms:///alias/x").aws_region is None
    with pytest.raises(KeyFormatError, match="got scheme 'hashivault'"):
        KeyRef.parse("hashivault://key")
    with pytest.raises(KeyFormatError, match="awskms:///KEY-ID"):
        KeyRef.parse("awskms://")
    assert KeyRef.parse("-----BEGIN PUBLIC KEY-----\nx\n-----END PUBLIC KEY-----").scheme == "pem"


def test_fetch_file_and_inline(tmp_path) -> None:  # type: ignore[no-untyped-def]
    key = generate_private_key()
    path = tmp_path / "cosign.pub"
    path.write_bytes(key.public_key.pem)
    assert fetch_public_key(f"file://{path}") == key.public_key
    assert fetch_public_key(str(path)) == key.public_key
    assert fetch_public_key(key.public_key.pem.decode()) == key.public_key
    with pytest.raises(KeyFormatError, match="cannot read key file"):
        fetch_public_key(f"file://{tmp_path}/missing.pub")


@pytest.mark.parametrize(
    "ref", ["gcpkms://projects/p/locations/l/keyRings/r/cryptoKeys/k", "azurekms://v/k"]
)
def test_gcp_and_azure_kms_are_not_implemented(ref: str) -> None:
    with pytest.raises(NotImplementedYet, match="valid today: inline PEM, file://, awskms://"):
        fetch_public_key(ref)


def test_aws_kms_public_key_via_moto() -> None:
    boto3 = pytest.importorskip("boto3")
    moto = pytest.importorskip("moto")
    with moto.mock_aws():
        client = boto3.client("kms", region_name="us-east-1")
        created = client.create_key(KeyUsage="SIGN_VERIFY", KeySpec="ECC_NIST_P256")
        key_id = created["KeyMetadata"]["KeyId"]
        client.create_alias(AliasName="alias/release", TargetKeyId=key_id)
        der = client.get_public_key(KeyId=key_id)["PublicKey"]
        by_id = fetch_public_key(f"awskms:///{key_id}", kms_client=client)
        by_alias = fetch_public_key("awskms:///alias/release", kms_client=client)
        assert by_id.key_id == hashlib.sha256(der).hexdigest() == by_alias.key_id
        assert by_id.algorithm == "ecdsa-p256"
        message = b"signed by kms"
        sig = client.sign(
            KeyId=key_id, Message=message, MessageType="RAW", SigningAlgorithm="ECDSA_SHA_256"
        )["Signature"]
        assert by_id.verify(sig, message)
        with pytest.raises(KeyFormatError, match="AWS KMS refused"):
            fetch_public_key("awskms:///alias/missing", kms_client=client)


def test_key_errors_are_signature_format_errors_with_config_exit_code() -> None:
    assert issubclass(KeyFormatError, SignatureFormatError)
    assert KeyFormatError.exit_code == 2


def test_ed25519_pure_signature_from_cryptography_is_accepted() -> None:
    raw = ed25519.Ed25519PrivateKey.generate()
    pem = raw.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert load_public_key(pem).verify(raw.sign(b"x"), b"x")
