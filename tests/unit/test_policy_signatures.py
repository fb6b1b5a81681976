"""The `signatures` and `attestations` keys of the policy, and the adapters that turn them
into the verifiers' inputs: real keys, trusted roots and Notation trust stores made here,
real signatures verified with what the adapters build."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from regwarden.errors import NotImplementedYet, PolicyError, RegistryError, UsageError
from regwarden.policy import (
    SIGNATURE_FORMATS,
    EffectiveRepositoryPolicy,
    Policy,
    Problem,
    load_policy,
    load_policy_text,
    validate_text,
)
from regwarden.signatures import (
    ATTESTATION_PREDICATES,
    COSIGN_SIGN_PREDICATE,
    COSIGN_VULN_PREDICATE,
    SLSA_PROVENANCE_V02,
    SLSA_PROVENANCE_V1,
    KeylessIdentity,
    NotationTrust,
    PrivateKey,
    SignatureCandidate,
    attest_legacy,
    attestation_policy,
    clear_cache,
    cosign_policy,
    notation_trust,
    parse_signature_manifest,
    result_formats,
    searched,
    sign_legacy,
    signature_repository,
    verify_attestations,
    verify_candidates,
)
from regwarden.signatures.keys import generate_private_key
from regwarden.signatures.notation import (
    MEDIA_TYPE_JWS,
    Target,
    TrustPolicyDocument,
    TrustStore,
    verify_notation,
)
from regwarden.signatures.notation._sign import SigningIdentity, sign_jws

HEAD = "apiVersion: regwarden/v1\nkind: Policy\n"
IMAGE = "sha256:" + hashlib.sha256(b"the image manifest").hexdigest()
REF = "registry.example.com/payments/api"
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
NO_ENV: dict[str, str] = {}


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    clear_cache()
    yield
    clear_cache()


@pytest.fixture(scope="module")
def signer() -> PrivateKey:
    return generate_private_key()


@pytest.fixture(scope="module")
def other() -> PrivateKey:
    return generate_private_key("ecdsa-p384")


def load(text: str, base_dir: Path | str = "/policies") -> Policy:
    return load_policy_text(text, source="test.yaml", base_dir=base_dir)


def effective(
    text: str, base_dir: Path | str = "/policies", repository: str = "payments/api"
) -> EffectiveRepositoryPolicy:
    return load(text, base_dir).for_repository(repository)


def only(text: str) -> Problem:
    found = validate_text(text)
    assert len(found) == 1, found
    return found[0]


def write_key(path: Path, key: PrivateKey) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(key.public_key.pem)
    return path


def candidates(key: PrivateKey) -> list[SignatureCandidate]:
    """A real legacy `.sig` signature of IMAGE, as discovery hands it over."""
    art = sign_legacy(image_digest=IMAGE, docker_reference=REF, key=key)
    parsed = parse_signature_manifest(art.manifest)
    digest = "sha256:" + hashlib.sha256(art.manifest).hexdigest()
    return [SignatureCandidate(digest, layer, art.blobs[layer.digest]) for layer in parsed.layers]


def trusted_root_json(*log_keys: PrivateKey) -> bytes:
    """A `trusted_root.json` whose transparency logs use the given keys."""
    tlogs = [
        {
            "baseUrl": "https://rekor.example.com",
            "hashAlgorithm": "SHA2_256",
            "publicKey": {
                "rawBytes": base64.b64encode(k.public_key.der).decode(),
                "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                "validFor": {"start": "2020-01-01T00:00:00Z"},
            },
            "logId": {"keyId": base64.b64encode(bytes.fromhex(k.public_key.key_id)).decode()},
        }
        for k in log_keys
    ]
    doc = {
        "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
        "tlogs": tlogs,
        "certificateAuthorities": [],
        "ctlogs": [],
        "timestampAuthorities": [],
    }
    return json.dumps(doc).encode()


# -- the policy keys: valid --------------------------------------------------------------------

FULL = (
    HEAD
    + """\
repositories:
  - match: "payments/**"
    signatures:
      cosign:
        keys: ["file://keys/release.pub", "awskms:///alias/release"]
        identities:
          - {issuer: "https://token.actions.githubusercontent.com", subjectRegex: "^https://github\\\\.com/acme/"}
          - {issuerRegex: "^https://accounts\\\\.google\\\\.com$", subject: "release@acme.dev"}
        trustedRoot: "file://sigstore/trusted_root.json"
        requireTlog: true
        requireTimestamp: true
      notation: {trustPolicy: "file://notation/trustpolicy.json", trustStore: "file://notation/store"}
      formats: [cosign-bundle, notation]
      require: all
      threshold: 3
      repository: "signatures/{repository}"
      gracePeriod: 2m
    attestations:
      keys: ["file://keys/attest.pub"]
      identities: [{issuer: "https://token.actions.githubusercontent.com", subject: "ci@acme.dev"}]
"""
)


def test_every_signature_key_loads() -> None:
    eff = effective(FULL)
    sig = eff.signatures
    assert sig is not None and sig.cosign is not None and sig.notation is not None
    assert [k.raw for k in sig.cosign.keys] == [
        "file://keys/release.pub",
        "awskms:///alias/release",
    ]
    first, second = sig.cosign.identities
    assert first.issuer == "https://token.actions.githubusercontent.com"
    assert (
        first.subject_regex is not None
        and first.subject_regex.pattern == r"^https://github\.com/acme/"
    )
    assert second.issuer_regex is not None and second.subject == "release@acme.dev"
    assert sig.cosign.trusted_root is not None
    assert sig.cosign.trusted_root.target == "sigstore/trusted_root.json"
    assert (sig.cosign.require_tlog, sig.cosign.require_timestamp) == (True, True)
    assert sig.formats == ("cosign-bundle", "notation")
    assert (sig.require, sig.threshold, sig.grace_period) == ("all", 3, timedelta(minutes=2))
    assert sig.repository == "signatures/{repository}"
    assert eff.attestations is not None
    assert [k.target for k in eff.attestations.keys] == ["keys/attest.pub"]
    assert eff.attestations.identities[0].subject == "ci@acme.dev"


def test_defaults_of_the_new_signature_keys() -> None:
    sig = effective(
        HEAD + "defaults:\n  signatures: {cosign: {keys: ['file://k.pub']}}\n"
    ).signatures
    assert sig is not None and sig.cosign is not None
    assert sig.formats is None
    assert sig.effective_formats() == ("cosign", "cosign-bundle")
    assert (sig.require, sig.threshold, sig.repository) == ("any", 1, None)
    assert sig.cosign.identities == () and sig.cosign.trusted_root is None
    assert sig.cosign.rekor_key is None
    assert (sig.cosign.require_tlog, sig.cosign.require_timestamp) == (False, False)
    assert SIGNATURE_FORMATS == ("cosign", "cosign-bundle", "notation")


def test_signature_policy_round_trips() -> None:
    policy = load(FULL)
    dumped = policy.model_dump(mode="json", exclude_none=True)
    cosign = dumped["repositories"][0]["signatures"]["cosign"]
    assert cosign["identities"][0]["subjectRegex"] == r"^https://github\.com/acme/"
    assert "keys" not in load(HEAD).model_dump(mode="json", exclude_none=True)["defaults"]
    again = load(yaml.safe_dump(dumped, sort_keys=False))
    assert again == policy


# -- the policy keys: invalid, with path and line ----------------------------------------------


@pytest.mark.parametrize(
    ("snippet", "line", "path", "message"),
    [
        (
            "defaults:\n  signatures:\n    cosign: {keys: [file://k]}\n    formats: [sigstore]\n",
            6,
            "defaults.signatures.formats[0]",
            "got 'sigstore', expected 'cosign', 'cosign-bundle' or 'notation'",
        ),
        (
            "defaults:\n  signatures:\n    cosign: {keys: [file://k]}\n    formats: [notation]\n",
            6,
            "defaults.signatures.formats[0]",
            "got 'notation', but no 'notation' verifier is configured; configured formats: "
            "cosign, cosign-bundle",
        ),
        (
            "defaults:\n  signatures:\n    cosign: {keys: [file://k]}\n"
            "    formats: [cosign, cosign]\n",
            6,
            "defaults.signatures.formats[1]",
            "duplicate format 'cosign' (first at formats[0])",
        ),
        (
            "defaults:\n  signatures:\n    cosign: {keys: [file://k]}\n    formats: []\n",
            6,
            "defaults.signatures.formats",
            "got 0 items, expected at least 1",
        ),
        (
            "defaults:\n  signatures:\n    cosign: {keys: [file://k]}\n    require: most\n",
            6,
            "defaults.signatures.require",
            "got 'most', expected 'all' or 'any'",
        ),
        (
            "defaults:\n  signatures:\n    cosign: {keys: [file://k]}\n    threshold: 0\n",
            6,
            "defaults.signatures.threshold",
            "got 0, expected a value greater than or equal to 1",
        ),
        (
            "defaults:\n  signatures:\n    cosign: {keys: [file://k]}\n    threshold: yes\n",
            6,
            "defaults.signatures.threshold",
            "got true, expected a valid integer",
        ),
        (
            "defaults:\n  signatures:\n    cosign: {keys: [file://a, file://b]}\n"
            "    threshold: 3\n",
            6,
            "defaults.signatures.threshold",
            "got 3, but only 2 key(s) are configured, so the threshold can never be met; "
            "expected at most 2",
        ),
        (
            "defaults:\n  signatures:\n    cosign: {keys: [file://k]}\n"
            "    repository: 'sigs/{repo}'\n",
            6,
            "defaults.signatures.repository",
            "unknown placeholder {repo} in 'sigs/{repo}'; valid: {repository}",
        ),
        (
            "defaults:\n  signatures:\n    cosign: {keys: [file://k]}\n"
            "    repository: 'ghcr.io:443/sigs'\n",
            6,
            "defaults.signatures.repository",
            "not a valid repository name (lower-case components separated by '/')",
        ),
        (
            "defaults:\n  signatures:\n    cosign: {keys: [file://k]}\n    repositry: x\n",
            6,
            "defaults.signatures.repositry",
            "unknown key 'repositry'; valid keys: required, cosign, notation, formats, require, "
            "threshold, repository, gracePeriod",
        ),
        (
            "defaults:\n  signatures:\n    cosign: {}\n",
            5,
            "defaults.signatures.cosign",
            "cosign trusts nothing: expected 'keys' and/or 'identities'",
        ),
        (
            "defaults:\n  signatures:\n    cosign: {identities: []}\n",
            5,
            "defaults.signatures.cosign.identities",
            "got 0 items, expected at least 1",
        ),
        (
            "defaults:\n  signatures:\n    cosign:\n      trustedRoot: file://tr.json\n"
            "      identities:\n        - {issuer: i, issuerRegex: '^i$', subject: s}\n",
            8,
            "defaults.signatures.cosign.identities[0].issuerRegex",
            "got both 'issuer' and 'issuerRegex', expected exactly one of them",
        ),
        (
            "defaults:\n  signatures:\n    cosign:\n      trustedRoot: file://tr.json\n"
            "      identities:\n        - {issuer: i}\n",
            8,
            "defaults.signatures.cosign.identities[0].subject",
            "missing required key 'subject' (or 'subjectRegex')",
        ),
        (
            "defaults:\n  signatures:\n    cosign:\n      trustedRoot: file://tr.json\n"
            "      identities:\n        - {issuer: i, subjectRegex: '(unclosed'}\n",
            8,
            "defaults.signatures.cosign.identities[0].subjectRegex",
            "invalid regular expression '(unclosed'",
        ),
        (
            "defaults:\n  signatures:\n    cosign:\n      trustedRoot: file://tr.json\n"
            "      identities:\n        - {issuer: i, subject: s, email: e}\n",
            8,
            "defaults.signatures.cosign.identities[0].email",
            "unknown key 'email'; valid keys: issuer, issuerRegex, subject, subjectRegex",
        ),
        (
            "defaults:\n  signatures:\n    cosign:\n      identities: [{issuer: i, subject: s}]\n",
            6,
            "defaults.signatures.cosign.identities",
            "keyless identities need 'trustedRoot' (it holds the Fulcio CA); 'rekorKey' alone "
            "is not enough",
        ),
        (
            "defaults:\n  signatures:\n    cosign:\n      keys: [file://k]\n"
            "      trustedRoot: file://tr.json\n      rekorKey: file://rekor.pub\n",
            8,
            "defaults.signatures.cosign.rekorKey",
            "got both 'trustedRoot' and 'rekorKey', expected one",
        ),
        (
            "defaults:\n  signatures:\n    cosign:\n      keys: [file://k]\n"
            "      requireTlog: true\n",
            7,
            "defaults.signatures.cosign.requireTlog",
            "requireTlog needs 'trustedRoot' or 'rekorKey'",
        ),
        (
            "defaults:\n  signatures:\n    cosign:\n      keys: [file://k]\n"
            "      rekorKey: file://rekor.pub\n      requireTimestamp: true\n",
            8,
            "defaults.signatures.cosign.requireTimestamp",
            "requireTimestamp needs 'trustedRoot' (it holds the timestamp authorities)",
        ),
        (
            "defaults:\n  signatures:\n    cosign:\n      keys: [file://k]\n"
            "      trustedRoot: secret://root\n",
            7,
            "defaults.signatures.cosign.trustedRoot",
            "got secret:// for a Sigstore trusted root, expected one of: file://PATH",
        ),
        (
            "defaults:\n  signatures:\n    cosign:\n      keys: [file://k]\n"
            "      rekorKey: rekor.pub\n",
            7,
            "defaults.signatures.cosign.rekorKey",
            "did you mean 'file://rekor.pub'?",
        ),
        (
            "defaults:\n  signatures:\n    cosign:\n      keys: [file://k]\n"
            "      requireTlog: yes-please\n",
            7,
            "defaults.signatures.cosign.requireTlog",
            "got 'yes-please', expected a valid boolean",
        ),
        (
            "defaults:\n  attestations: {}\n",
            4,
            "defaults.attestations",
            "attestations trust nothing: expected 'keys' and/or 'identities'",
        ),
        (
            "defaults:\n  attestations:\n    keys: [attest.pub]\n",
            5,
            "defaults.attestations.keys[0]",
            "did you mean 'file://attest.pub'?",
        ),
        (
            "defaults:\n  attestations:\n    keys: [file://a.pub]\n    predicates: [x]\n",
            6,
            "defaults.attestations.predicates",
            "unknown key 'predicates'; valid keys: keys, identities",
        ),
        (
            "defaults:\n  attestations:\n    identities: [{issuer: i, subject: s}]\n",
            5,
            "defaults.attestations.identities",
            "keyless attestation identities need 'signatures.cosign.trustedRoot'",
        ),
    ],
)
def test_invalid_signature_keys(snippet: str, line: int, path: str, message: str) -> None:
    problem = only(HEAD + snippet)
    assert (problem.line, problem.path) == (line, path)
    assert message in problem.message


def test_threshold_is_not_bounded_by_keys_with_identities_or_notation() -> None:
    text = HEAD + (
        "defaults:\n  signatures:\n    cosign: {keys: [file://k]}\n"
        "    notation: {trustPolicy: file://p.json, trustStore: file://s}\n    threshold: 5\n"
    )
    assert validate_text(text) == []


def test_attestation_identities_need_a_root_in_every_effective_policy() -> None:
    ok = HEAD + (
        "defaults:\n"
        "  signatures:\n"
        "    cosign: {keys: [file://k], trustedRoot: file://tr.json}\n"
        "  attestations:\n"
        "    identities: [{issuer: i, subject: s}]\n"
    )
    assert validate_text(ok) == []
    # an entry replaces `signatures` with a section that has no trusted root
    broken = ok + "repositories:\n  - match: legacy/**\n    signatures: {required: false}\n"
    problem = only(broken)
    assert (problem.line, problem.path) == (7, "defaults.attestations.identities")
    assert "(as it applies to repositories[0])" in problem.message
    # an entry's own attestations are checked against its effective signatures
    entry = HEAD + (
        "repositories:\n  - match: a/**\n"
        "    attestations: {identities: [{issuer: i, subject: s}]}\n"
    )
    problem = only(entry)
    assert (problem.line, problem.path) == (5, "repositories[0].attestations.identities")


# -- cosign_policy: keys from every supported location -----------------------------------------


def test_cosign_policy_from_a_key_file_verifies_a_real_signature(
    tmp_path: Path, signer: PrivateKey, other: PrivateKey
) -> None:
    write_key(tmp_path / "keys" / "release.pub", signer)
    text = HEAD + "defaults:\n  signatures:\n    cosign: {keys: ['file://keys/release.pub']}\n"
    policy = cosign_policy(effective(text, tmp_path), base_dir=tmp_path, env=NO_ENV)
    assert policy is not None
    assert policy.keys == (signer.public_key,)
    assert policy.predicate_types == frozenset({COSIGN_SIGN_PREDICATE})
    [good] = verify_candidates(candidates(signer), image_digest=IMAGE, policy=policy)
    assert good.verified and good.signer == signer.public_key.key_id
    [bad] = verify_candidates(candidates(other), image_digest=IMAGE, policy=policy)
    assert not bad.verified


def test_absolute_key_files_need_no_base_dir(tmp_path: Path, signer: PrivateKey) -> None:
    path = write_key(tmp_path / "abs.pub", signer)
    text = HEAD + f"defaults:\n  signatures:\n    cosign: {{keys: ['file://{path}']}}\n"
    policy = cosign_policy(effective(text), base_dir=None, env=NO_ENV)
    assert policy is not None and policy.keys == (signer.public_key,)


def test_inline_pem_and_secret_keys(signer: PrivateKey, other: PrivateKey) -> None:
    pem = signer.public_key.pem.decode()
    block = "".join(f"          {line}\n" for line in pem.strip().splitlines())
    text = HEAD + (
        "defaults:\n  signatures:\n    cosign:\n      keys:\n        - |\n"
        + block
        + "        - secret://regwarden/keys/ci\n"
    )
    env = {"REGWARDEN_SECRET_REGWARDEN_KEYS_CI": other.public_key.pem.decode()}
    policy = cosign_policy(effective(text), base_dir=None, env=env)
    assert policy is not None
    assert policy.keys == (signer.public_key, other.public_key)
    for key in (signer, other):
        [result] = verify_candidates(candidates(key), image_digest=IMAGE, policy=policy)
        assert result.verified and result.signer == key.public_key.key_id

    with pytest.raises(UsageError) as missing:
        cosign_policy(effective(text), base_dir=None, env=NO_ENV)
    assert str(missing.value).startswith(
        "defaults.signatures.cosign.keys[1]: secret 'regwarden/keys/ci' not found: environment "
        "variable REGWARDEN_SECRET_REGWARDEN_KEYS_CI is not set"
    )
    not_a_key = {"REGWARDEN_SECRET_REGWARDEN_KEYS_CI": "hunter2"}
    with pytest.raises(PolicyError) as garbage:
        cosign_policy(effective(text), base_dir=None, env=not_a_key)
    message = str(garbage.value)
    assert message.startswith("defaults.signatures.cosign.keys[1]: secret 'regwarden/keys/ci': ")
    assert "expected a PEM 'PUBLIC KEY' block" in message
    assert "hunter2" not in message


def test_key_errors_name_the_policy_path(tmp_path: Path) -> None:
    text = HEAD + (
        "repositories:\n  - match: payments/**\n    signatures:\n"
        "      cosign: {keys: ['file://keys/release.pub']}\n"
    )
    with pytest.raises(PolicyError) as missing:
        cosign_policy(effective(text, tmp_path), base_dir=tmp_path, env=NO_ENV)
    assert str(missing.value) == (
        "repositories[0].signatures.cosign.keys[0]: file not found: keys/release.pub"
    )
    assert missing.value.problems == [
        ("repositories[0].signatures.cosign.keys[0]", "file not found: keys/release.pub")
    ]
    assert missing.value.exit_code == 2

    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "release.pub").write_text("not a key\n")
    with pytest.raises(PolicyError, match=r"^repositories\[0\]\.signatures\.cosign\.keys\[0\]: "):
        cosign_policy(effective(text, tmp_path), base_dir=tmp_path, env=NO_ENV)

    (tmp_path / "keys" / "release.pub").unlink()
    (tmp_path / "keys" / "release.pub").mkdir()
    with pytest.raises(PolicyError, match=r"keys/release\.pub is not a file"):
        cosign_policy(effective(text, tmp_path), base_dir=tmp_path, env=NO_ENV)

    with pytest.raises(UsageError, match="the policy was not loaded from a file"):
        cosign_policy(effective(text), base_dir=None, env=NO_ENV)


def test_keys_in_the_defaults_are_named_by_their_defaults_path(tmp_path: Path) -> None:
    text = HEAD + (
        "defaults:\n  signatures: {cosign: {keys: ['file://gone.pub']}}\n"
        "repositories:\n  - match: payments/**\n    team: payments\n"
    )
    eff = effective(text, tmp_path)
    assert eff.source == "repositories[0]"
    with pytest.raises(PolicyError, match=r"^defaults\.signatures\.cosign\.keys\[0\]: file not"):
        cosign_policy(eff, base_dir=tmp_path, env=NO_ENV)


@pytest.mark.parametrize(
    ("location", "message"),
    [
        ("s3://bucket/release.pub", "reading a public key from s3:// is not implemented yet"),
        ("https://keys.example.com/r.pub", "reading a public key from https:// is not"),
        ("gcpkms://projects/p/locations/l/keyRings/r/cryptoKeys/k", "gcpkms:// keys are not"),
        ("azurekms://vault.vault.azure.net/release", "azurekms:// keys are not supported yet"),
    ],
)
def test_unsupported_key_locations_are_not_implemented_yet(location: str, message: str) -> None:
    text = HEAD + f"defaults:\n  signatures:\n    cosign: {{keys: ['{location}']}}\n"
    with pytest.raises(NotImplementedYet) as exc:
        cosign_policy(effective(text), base_dir=None, env=NO_ENV)
    assert str(exc.value).startswith("defaults.signatures.cosign.keys[0]: ")
    assert message in str(exc.value)


class CountingKms:
    """A real (moto) KMS client that counts `get_public_key` calls."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.calls = 0

    def get_public_key(self, **kwargs: Any) -> Any:
        self.calls += 1
        return self.client.get_public_key(**kwargs)


def test_aws_kms_keys_are_fetched_once_and_verify_kms_signatures() -> None:
    boto3 = pytest.importorskip("boto3")
    moto = pytest.importorskip("moto")
    with moto.mock_aws():
        client = boto3.client("kms", region_name="us-east-1")
        created = client.create_key(KeyUsage="SIGN_VERIFY", KeySpec="ECC_NIST_P256")
        key_id = created["KeyMetadata"]["KeyId"]
        client.create_alias(AliasName="alias/release", TargetKeyId=key_id)
        der = client.get_public_key(KeyId=key_id)["PublicKey"]
        counting = CountingKms(client)
        one = HEAD + "defaults:\n  signatures:\n    cosign: {keys: ['awskms:///alias/release']}\n"
        first = cosign_policy(effective(one), base_dir=None, env=NO_ENV, kms_client=counting)
        second = cosign_policy(effective(one), base_dir=None, env=NO_ENV, kms_client=counting)
        assert first is not None and second is not None
        assert first.keys[0].key_id == hashlib.sha256(der).hexdigest()
        assert second.keys == first.keys
        assert counting.calls == 1  # fetched once, then cached

        message = b"signed in kms"
        signature = client.sign(
            KeyId=key_id, Message=message, MessageType="RAW", SigningAlgorithm="ECDSA_SHA_256"
        )["Signature"]
        assert first.keys[0].verify(signature, message)

        two = HEAD + (
            "defaults:\n  signatures:\n    cosign:\n"
            "      keys: ['awskms:///alias/release', 'awskms:///alias/missing']\n"
        )
        with pytest.raises(PolicyError) as refused:
            cosign_policy(effective(two), base_dir=None, env=NO_ENV, kms_client=counting)
        assert str(refused.value).startswith(
            "defaults.signatures.cosign.keys[1]: AWS KMS refused get_public_key"
        )
        assert counting.calls == 2  # only the missing key was asked for


class UnreachableKms:
    def get_public_key(self, **kwargs: Any) -> Any:
        raise ConnectionError("connect timeout on kms.us-east-1.amazonaws.com")


def test_an_unreachable_kms_is_an_infrastructure_error_with_the_path() -> None:
    text = HEAD + "defaults:\n  signatures:\n    cosign: {keys: ['awskms:///alias/release']}\n"
    with pytest.raises(RegistryError) as exc:
        cosign_policy(effective(text), base_dir=None, env=NO_ENV, kms_client=UnreachableKms())
    assert str(exc.value).startswith("defaults.signatures.cosign.keys[0]: AWS KMS unreachable")
    assert exc.value.exit_code == 3


def test_key_files_are_cached_per_path_mtime_and_size(
    tmp_path: Path, signer: PrivateKey, other: PrivateKey
) -> None:
    path = write_key(tmp_path / "release.pub", signer)
    text = HEAD + "defaults:\n  signatures:\n    cosign: {keys: ['file://release.pub']}\n"
    eff = effective(text, tmp_path)
    first = cosign_policy(eff, base_dir=tmp_path, env=NO_ENV)
    assert first is not None and first.keys == (signer.public_key,)

    # same size and mtime: the cached key is used and the file is not read again
    stat = path.stat()
    path.write_bytes(b"x" * stat.st_size)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    cached = cosign_policy(eff, base_dir=tmp_path, env=NO_ENV)
    assert cached is not None and cached.keys == (signer.public_key,)

    # a new mtime: read again (and this content is not a key)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    with pytest.raises(PolicyError, match=r"keys\[0\]: cannot load public key"):
        cosign_policy(eff, base_dir=tmp_path, env=NO_ENV)

    write_key(path, other)  # rotated
    rotated = cosign_policy(eff, base_dir=tmp_path, env=NO_ENV)
    assert rotated is not None and rotated.keys == (other.public_key,)
    clear_cache()
    path.write_bytes(b"x" * path.stat().st_size)
    with pytest.raises(PolicyError, match="cannot load public key"):
        cosign_policy(eff, base_dir=tmp_path, env=NO_ENV)


# -- keyless identities, trusted roots, Rekor keys ---------------------------------------------


def test_keyless_identities_and_a_trusted_root(tmp_path: Path, signer: PrivateKey) -> None:
    rekor = generate_private_key()
    (tmp_path / "sigstore").mkdir()
    (tmp_path / "sigstore" / "trusted_root.json").write_bytes(trusted_root_json(rekor))
    text = HEAD + (
        "defaults:\n  signatures:\n    cosign:\n"
        "      identities:\n"
        "        - issuer: https://token.actions.githubusercontent.com\n"
        "          subjectRegex: '^https://github\\.com/acme/'\n"
        "        - {issuerRegex: 'google', subject: release@acme.dev}\n"
        "      trustedRoot: file://sigstore/trusted_root.json\n"
        "      requireTlog: true\n"
    )
    policy = cosign_policy(effective(text, tmp_path), base_dir=tmp_path, env=NO_ENV)
    assert policy is not None
    assert policy.keys == () and policy.require_tlog is True
    assert policy.trusted_root is not None and policy.trusted_root.raw
    assert policy.trusted_root.tlog(bytes.fromhex(rekor.public_key.key_id)) is not None
    github, google = policy.identities
    assert github.subject_regex is not None and github.issuer is not None
    issuer = "https://token.actions.githubusercontent.com"
    assert github.matches(
        {"https://github.com/acme/app/.github/workflows/r.yml@refs/tags/v1"}, issuer
    )
    assert not github.matches({"https://evil.dev/?https://github.com/acme/"}, issuer)  # anchored
    assert not github.matches({"https://github.com/acme/app"}, "https://evil.dev")
    # unanchored regexes are searched, as the docs say (and as cosign does)
    assert google.matches({"release@acme.dev"}, "https://accounts.google.com")
    assert not google.matches({"release@acme.dev"}, "https://accounts.example.com")


def test_trusted_root_errors_name_the_path(tmp_path: Path) -> None:
    text = HEAD + (
        "defaults:\n  signatures:\n    cosign:\n      keys: ['file://k.pub']\n"
        "      trustedRoot: file://trusted_root.json\n"
    )
    write_key(tmp_path / "k.pub", generate_private_key())
    with pytest.raises(PolicyError) as missing:
        cosign_policy(effective(text, tmp_path), base_dir=tmp_path, env=NO_ENV)
    assert str(missing.value) == (
        "defaults.signatures.cosign.trustedRoot: file not found: trusted_root.json"
    )
    (tmp_path / "trusted_root.json").write_text("{not json")
    with pytest.raises(PolicyError) as broken:
        cosign_policy(effective(text, tmp_path), base_dir=tmp_path, env=NO_ENV)
    assert str(broken.value).startswith(
        "defaults.signatures.cosign.trustedRoot: not a usable trusted_root.json: "
    )
    remote = text.replace("file://trusted_root.json", "https://tuf.example.com/trusted_root.json")
    with pytest.raises(NotImplementedYet, match=r"trustedRoot: reading a trusted root from https"):
        cosign_policy(effective(remote, tmp_path), base_dir=tmp_path, env=NO_ENV)


def test_a_rekor_key_makes_a_root_that_knows_that_log(tmp_path: Path, signer: PrivateKey) -> None:
    rekor = generate_private_key()
    write_key(tmp_path / "k.pub", signer)
    write_key(tmp_path / "rekor.pub", rekor)
    text = HEAD + (
        "defaults:\n  signatures:\n    cosign:\n      keys: ['file://k.pub']\n"
        "      rekorKey: file://rekor.pub\n      requireTlog: true\n"
    )
    policy = cosign_policy(effective(text, tmp_path), base_dir=tmp_path, env=NO_ENV)
    assert policy is not None and policy.trusted_root is not None
    assert [t.key for t in policy.trusted_root.tlogs] == [rekor.public_key]
    # a signature without a transparency-log entry fails when the policy requires one
    [result] = verify_candidates(candidates(signer), image_digest=IMAGE, policy=policy)
    assert not result.verified


_PATTERNS = [
    r"^https://github\.com/acme/",
    r"acme",
    r"(?i)ACME",
    r"(?x) acme  # a verbose comment",
    r"release@acme\.dev$",
    r"\bacme\b",
    r"^$",
    r"a|b",
    r"(?s)a.b",
    r"(?i)(?m)^x",
]


@settings(max_examples=300, deadline=None)
@given(
    pattern=st.sampled_from(_PATTERNS),
    text=st.text(alphabet="acmeACMEbx@./:\n -hgithubs", max_size=30),
)
def test_searched_regexes_match_whole_values_exactly_when_searched(pattern: str, text: str) -> None:
    compiled = re.compile(pattern)
    wrapped = searched(compiled)
    assert (re.fullmatch(wrapped, text) is not None) is (compiled.search(text) is not None)


def test_identity_regexes_are_handed_over_in_the_search_form() -> None:
    ident = KeylessIdentity(subject_regex=searched(re.compile("acme")), issuer="i")
    assert ident.matches({"https://github.com/acme/app"}, "i")
    assert not ident.matches({"https://github.com/other/app"}, "i")


# -- formats, repository ------------------------------------------------------------------------

BOTH = HEAD + (
    "defaults:\n  signatures:\n    cosign: {keys: ['file:///k.pub']}\n"
    "    notation: {trustPolicy: file:///p.json, trustStore: file:///s}\n"
)


def test_formats_select_the_verifiers_and_result_formats() -> None:
    assert result_formats(effective(BOTH)) == {
        "cosign-legacy",
        "cosign-bundle",
        "notation-jws",
        "notation-cose",
    }
    notation_only = effective(BOTH + "    formats: [notation]\n")
    assert cosign_policy(notation_only, base_dir=None, env=NO_ENV) is None
    assert result_formats(notation_only) == {"notation-jws", "notation-cose"}
    cosign_only = effective(BOTH + "    formats: [cosign-bundle]\n")
    assert notation_trust(cosign_only, base_dir=None) is None
    assert result_formats(cosign_only) == {"cosign-bundle"}
    assert result_formats(effective(HEAD)) == frozenset()
    assert cosign_policy(effective(HEAD), base_dir=None, env=NO_ENV) is None
    assert notation_trust(effective(HEAD), base_dir=None) is None


@pytest.mark.parametrize(
    ("template", "repository", "expected"),
    [
        ("signatures/{repository}", "payments/api", "signatures/payments/api"),
        ("signatures", "payments/api", "signatures"),
        ("{repository}-sigs", "payments/api", "payments/api-sigs"),
        ("{repository}", "payments/api", None),  # the image's own repository
    ],
)
def test_signature_repository(template: str, repository: str, expected: str | None) -> None:
    text = HEAD + (
        "defaults:\n  signatures:\n    cosign: {keys: ['file:///k.pub']}\n"
        f"    repository: '{template}'\n"
    )
    assert signature_repository(effective(text, repository=repository)) == expected
    assert signature_repository(effective(BOTH)) is None
    assert signature_repository(effective(HEAD)) is None


# -- attestation_policy ---------------------------------------------------------------------------


def test_attestation_policy_defaults_to_the_signature_keys(
    tmp_path: Path, signer: PrivateKey
) -> None:
    write_key(tmp_path / "k.pub", signer)
    text = HEAD + "defaults:\n  signatures:\n    cosign: {keys: ['file://k.pub']}\n"
    policy = attestation_policy(effective(text, tmp_path), base_dir=tmp_path, env=NO_ENV)
    assert policy is not None
    assert policy.keys == (signer.public_key,)
    assert policy.predicate_types == ATTESTATION_PREDICATES
    assert {
        COSIGN_VULN_PREDICATE,
        SLSA_PROVENANCE_V02,
        SLSA_PROVENANCE_V1,
    } == ATTESTATION_PREDICATES
    assert attestation_policy(effective(HEAD), base_dir=None, env=NO_ENV) is None


def test_attestation_keys_replace_the_signature_keys_and_verify_attestations(
    tmp_path: Path, signer: PrivateKey, other: PrivateKey
) -> None:
    write_key(tmp_path / "sign.pub", signer)
    write_key(tmp_path / "attest.pub", other)
    text = HEAD + (
        "defaults:\n  signatures:\n    cosign: {keys: ['file://sign.pub']}\n"
        "  attestations:\n    keys: ['file://attest.pub']\n"
    )
    policy = attestation_policy(effective(text, tmp_path), base_dir=tmp_path, env=NO_ENV)
    assert policy is not None and policy.keys == (other.public_key,)

    def attested(key: PrivateKey) -> list[SignatureCandidate]:
        art = attest_legacy(
            image_digest=IMAGE,
            repository=REF,
            key=key,
            predicate_type="slsaprovenance",
            predicate={"builder": {"id": "https://ci.acme.dev/b"}},
        )
        parsed = parse_signature_manifest(art.manifest)
        digest = "sha256:" + hashlib.sha256(art.manifest).hexdigest()
        return [SignatureCandidate(digest, lay, art.blobs[lay.digest]) for lay in parsed.layers]

    [good] = verify_attestations(attested(other), image_digest=IMAGE, policy=policy)
    assert good.result.verified, good.result.reason
    assert good.predicate_type == SLSA_PROVENANCE_V02
    [bad] = verify_attestations(attested(signer), image_digest=IMAGE, policy=policy)
    assert not bad.result.verified
    # attestation-only trust: no signatures section at all
    alone = HEAD + "defaults:\n  attestations: {keys: ['file://attest.pub']}\n"
    policy = attestation_policy(effective(alone, tmp_path), base_dir=tmp_path, env=NO_ENV)
    assert policy is not None and policy.keys == (other.public_key,)
    assert policy.trusted_root is None


def test_attestation_key_errors_name_the_attestations_path(tmp_path: Path) -> None:
    text = HEAD + "repositories:\n  - match: a/**\n    attestations: {keys: ['file://no.pub']}\n"
    with pytest.raises(PolicyError) as exc:
        attestation_policy(effective(text, tmp_path, "a/b"), base_dir=tmp_path, env=NO_ENV)
    assert str(exc.value) == "repositories[0].attestations.keys[0]: file not found: no.pub"


def test_keyless_attestations_use_the_signature_trusted_root(tmp_path: Path) -> None:
    (tmp_path / "tr.json").write_bytes(trusted_root_json(generate_private_key()))
    write_key(tmp_path / "k.pub", generate_private_key())
    text = HEAD + (
        "defaults:\n  signatures:\n    cosign:\n      keys: ['file://k.pub']\n"
        "      trustedRoot: file://tr.json\n      requireTlog: true\n"
        "  attestations:\n"
        "    identities: [{issuer: https://issuer.example, subject: ci@acme.dev}]\n"
    )
    policy = attestation_policy(effective(text, tmp_path), base_dir=tmp_path, env=NO_ENV)
    assert policy is not None
    assert policy.keys == ()
    assert [str(i) for i in policy.identities] == ["ci@acme.dev (https://issuer.example)"]
    assert policy.trusted_root is not None and policy.trusted_root.raw
    assert policy.require_tlog is True


# -- notation_trust -------------------------------------------------------------------------------


def _name(common: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "WA"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "acme test"),
            x509.NameAttribute(NameOID.COMMON_NAME, common),
        ]
    )


def _certificate(
    subject: str, key: ec.EllipticCurvePrivateKey, issuer: tuple[x509.Certificate, Any] | None
) -> x509.Certificate:
    ca = issuer is None
    issuer_name, signing = (
        (_name(subject), key) if issuer is None else (issuer[0].subject, issuer[1])
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=1 if ca else None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=not ca,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    if not ca:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False
        )
    return builder.sign(signing, hashes.SHA256())


@pytest.fixture(scope="module")
def pki() -> tuple[SigningIdentity, x509.Certificate]:
    """A self-signed root CA and a code-signing leaf it issued."""
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = _certificate("acme test root", root_key, None)
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = _certificate("acme test signer", leaf_key, (root, root_key))
    return SigningIdentity(leaf_key, (leaf, root)), root


def write_notation(tmp_path: Path, root: x509.Certificate) -> None:
    store = tmp_path / "notation" / "truststore" / "x509" / "ca" / "acme"
    store.mkdir(parents=True)
    (store / "root.pem").write_bytes(root.public_bytes(serialization.Encoding.PEM))
    policy = {
        "version": "1.0",
        "trustPolicies": [
            {
                "name": "payments",
                "registryScopes": ["registry.example.com/payments/api"],
                "signatureVerification": {"level": "strict"},
                "trustStores": ["ca:acme"],
                "trustedIdentities": [
                    "x509.subject: C=US, ST=WA, O=acme test, CN=acme test signer"
                ],
            }
        ],
    }
    (tmp_path / "notation" / "trustpolicy.json").write_text(json.dumps(policy))


NOTATION = HEAD + (
    "repositories:\n  - match: payments/**\n    signatures:\n      notation:\n"
    "        trustPolicy: file://notation/trustpolicy.json\n"
    "        trustStore: file://notation/truststore\n"
)


def test_notation_trust_loads_and_verifies_a_real_signature(
    tmp_path: Path, pki: tuple[SigningIdentity, x509.Certificate]
) -> None:
    identity, root = pki
    write_notation(tmp_path, root)
    trust = notation_trust(effective(NOTATION, tmp_path), base_dir=tmp_path)
    assert isinstance(trust, NotationTrust)
    assert isinstance(trust.policy, TrustPolicyDocument)
    assert isinstance(trust.store, TrustStore)
    assert trust.policy.kind == "oci"
    assert [s.name for s in trust.policy.trust_policies] == ["payments"]
    assert trust.store.get("ca", "acme") == (root,)

    target = Target("application/vnd.oci.image.manifest.v1+json", IMAGE, 1234)
    envelope = sign_jws(identity, target, signing_time=NOW - timedelta(hours=1))
    result = verify_notation(
        envelope,
        MEDIA_TYPE_JWS,
        target=target,
        reference=f"{REF}@{IMAGE}",
        trust_policy=trust.policy,
        trust_store=trust.store,
        now=NOW,
    )
    assert result.verified, result.reason

    again = notation_trust(effective(NOTATION, tmp_path), base_dir=tmp_path)
    assert again is not None
    assert again.policy is trust.policy and again.store is trust.store  # cached


def test_a_changed_trust_store_is_read_again(
    tmp_path: Path, pki: tuple[SigningIdentity, x509.Certificate]
) -> None:
    _, root = pki
    write_notation(tmp_path, root)
    eff = effective(NOTATION, tmp_path)
    first = notation_trust(eff, base_dir=tmp_path)
    other_key = ec.generate_private_key(ec.SECP256R1())
    other_root = _certificate("another root", other_key, None)
    extra = tmp_path / "notation" / "truststore" / "x509" / "ca" / "acme" / "other.crt"
    extra.write_bytes(other_root.public_bytes(serialization.Encoding.DER))
    second = notation_trust(eff, base_dir=tmp_path)
    assert first is not None and second is not None
    assert second.store is not first.store
    assert isinstance(second.store, TrustStore)
    assert set(second.store.get("ca", "acme")) == {root, other_root}


def test_notation_errors_name_the_policy_path(
    tmp_path: Path, pki: tuple[SigningIdentity, x509.Certificate]
) -> None:
    eff = effective(NOTATION, tmp_path)
    with pytest.raises(PolicyError) as missing:
        notation_trust(eff, base_dir=tmp_path)
    assert str(missing.value) == (
        "repositories[0].signatures.notation.trustPolicy: file not found: notation/trustpolicy.json"
    )

    write_notation(tmp_path, pki[1])
    trust_policy = tmp_path / "notation" / "trustpolicy.json"
    good_policy = trust_policy.read_bytes()
    trust_policy.write_text('{"version": "1.0"}')
    with pytest.raises(PolicyError) as invalid:
        notation_trust(eff, base_dir=tmp_path)
    assert str(invalid.value).startswith(
        "repositories[0].signatures.notation.trustPolicy: invalid trust policy"
    )
    assert invalid.value.problems[0][0] == "repositories[0].signatures.notation.trustPolicy"
    trust_policy.write_bytes(good_policy)

    def with_store(location: str) -> EffectiveRepositoryPolicy:
        return effective(NOTATION.replace("file://notation/truststore", location), tmp_path)

    with pytest.raises(PolicyError) as no_store:
        notation_trust(with_store("file://nowhere"), base_dir=tmp_path)
    assert str(no_store.value) == (
        "repositories[0].signatures.notation.trustStore: directory not found: nowhere"
    )
    (tmp_path / "empty").mkdir()
    with pytest.raises(PolicyError, match=r"trustStore: trust store .* has no x509/ directory"):
        notation_trust(with_store("file://empty"), base_dir=tmp_path)
    with pytest.raises(PolicyError, match=r"trustStore: notation/trustpolicy.json is not a dir"):
        notation_trust(with_store("file://notation/trustpolicy.json"), base_dir=tmp_path)
    with pytest.raises(NotImplementedYet, match=r"trustStore: reading a trust store from s3://"):
        notation_trust(with_store("s3://bucket/truststore"), base_dir=tmp_path)

    link = tmp_path / "linked.json"
    link.symlink_to(trust_policy)
    linked = NOTATION.replace("file://notation/trustpolicy.json", "file://linked.json")
    with pytest.raises(PolicyError, match=r"trustPolicy: .*linked.json is a symlink"):
        notation_trust(effective(linked, tmp_path), base_dir=tmp_path)


# -- the shipped example ---------------------------------------------------------------------------


def test_the_shipped_example_builds_every_verifier() -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "regwarden.yaml"
    policy = load_policy(example)
    eff = policy.for_repository("payments/api")
    cosign = cosign_policy(eff, base_dir=policy.base_dir, env=NO_ENV)
    notation = notation_trust(eff, base_dir=policy.base_dir)
    attest = attestation_policy(eff, base_dir=policy.base_dir, env=NO_ENV)
    assert cosign is not None and len(cosign.keys) == 1
    assert notation is not None
    assert attest is not None and attest.keys == cosign.keys
    assert (
        cosign_policy(policy.for_repository("web/app"), base_dir=policy.base_dir, env=NO_ENV)
        is None
    )


def test_the_docs_examples_of_signatures_and_attestations_validate() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "policy.md").read_text("utf-8")
    blocks = {
        block.split(":", 1)[0]: block
        for block in re.findall(r"```yaml\n(.*?)```", docs, re.DOTALL)
        if block.startswith(("signatures:", "attestations:"))
    }
    assert set(blocks) == {"signatures", "attestations"}
    text = (
        HEAD
        + "defaults:\n"
        + "".join(f"  {line}\n" for block in blocks.values() for line in block.splitlines())
    )
    assert validate_text(text) == []
    sig = effective(text).signatures
    assert sig is not None and sig.cosign is not None
    assert sig.formats == ("cosign-bundle",) and sig.require == "all" and sig.threshold == 3
    assert signature_repository(effective(text)) == "signatures/payments/api"
