"""Trust policy documents, trusted-identity DNs and trust stores, as Notation defines them."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from regwarden.errors import PolicyError
from regwarden.signatures.notation import (
    ValidationAction,
    ValidationType,
    _sign,
    load_trust_policy,
    load_trust_store,
    parse_trust_policy,
)
from regwarden.signatures.notation._x509 import DNError, is_subset, parse_dn

NOW = datetime(2025, 6, 1, tzinfo=UTC)


def statement(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "s",
        "registryScopes": ["*"],
        "signatureVerification": {"level": "strict"},
        "trustStores": ["ca:acme"],
        "trustedIdentities": ["*"],
    }
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


def doc(*statements: dict[str, Any], version: str = "1.0") -> dict[str, Any]:
    return {"version": version, "trustPolicies": list(statements)}


def test_levels_resolve_to_notation_actions() -> None:
    E, L = ValidationAction.ENFORCE, ValidationAction.LOG
    for level, expected in {
        "strict": [E, E, E, E, E],
        "permissive": [E, E, L, L, L],
        "audit": [E, L, L, L, L],
    }.items():
        parsed = parse_trust_policy(doc(statement(signatureVerification={"level": level})))
        actions = parsed.trust_policies[0].signature_verification.actions()
        assert [actions[t] for t in ValidationType] == expected


def test_override_changes_only_named_validations() -> None:
    parsed = parse_trust_policy(
        doc(
            statement(
                signatureVerification={
                    "level": "strict",
                    "override": {"revocation": "skip", "expiry": "log"},
                }
            )
        )
    )
    sv = parsed.trust_policies[0].signature_verification
    assert sv.level_name == "custom"
    assert sv.actions()[ValidationType.REVOCATION] is ValidationAction.SKIP
    assert sv.actions()[ValidationType.EXPIRY] is ValidationAction.LOG
    assert sv.actions()[ValidationType.AUTHENTICITY] is ValidationAction.ENFORCE


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (
            doc(statement(), version="2.0"),
            "trust policy version '2.0' is not supported; valid: 1.0",
        ),
        (doc(), "the trust policy document has no statements"),
        (doc(statement(), statement()), "two trust policy statements are named 's'"),
        (doc(statement(name="")), "empty name"),
        (doc(statement(signatureVerification={"level": "lenient"})), "signatureVerification.level"),
        (
            doc(
                statement(
                    signatureVerification={"level": "strict", "override": {"integrity": "log"}}
                )
            ),
            "'integrity' cannot be overridden",
        ),
        (
            doc(
                statement(signatureVerification={"level": "strict", "override": {"expiry": "skip"}})
            ),
            "'expiry' cannot be skipped; only 'revocation' takes 'skip'",
        ),
        (
            doc(
                statement(
                    signatureVerification={"level": "skip", "override": {"expiry": "log"}},
                    trustStores=None,
                    trustedIdentities=None,
                )
            ),
            "level 'skip' cannot be customised",
        ),
        (
            doc(statement(signatureVerification={"level": "skip"})),
            "skips verification but lists trust stores or trusted identities",
        ),
        (doc(statement(trustedIdentities=None)), "needs both trustStores and trustedIdentities"),
        (
            doc(statement(trustStores=["ca:"])),
            "trust store name '' in 'ca:' must match [a-zA-Z0-9_.-]+",
        ),
        (
            doc(statement(trustStores=["acme"])),
            "trust store 'acme' is malformed; expected <type>:<name>",
        ),
        (
            doc(statement(trustStores=["x509:acme"])),
            "trust store type 'x509' in 'x509:acme' is not supported; "
            "valid: ca, signingAuthority, tsa",
        ),
        (
            doc(statement(trustedIdentities=["*", "x509.subject: C=US, ST=WA, O=a"])),
            "the wildcard identity '*' cannot be combined with others",
        ),
        (
            doc(statement(trustedIdentities=["x509.subject: C=US, O=a"])),
            "lacks ST; it must contain C, ST and O",
        ),
        (
            doc(statement(trustedIdentities=["email: a@b.c"])),
            "trusted identity type 'email' is not supported; valid: x509.subject, *",
        ),
        (
            doc(
                statement(
                    trustedIdentities=[
                        "x509.subject: C=US, ST=WA, O=a",
                        "x509.subject: C=US, ST=WA, O=a, OU=b",
                    ]
                )
            ),
            "overlap",
        ),
        (
            doc(statement(registryScopes=["*", "r.io/a"])),
            "the wildcard scope '*' cannot be combined",
        ),
        (
            doc(statement(registryScopes=["r.io/team/*"])),
            "has a wildcard; only '*' alone is allowed",
        ),
        (doc(statement(registryScopes=["r.io"])), "registry scope 'r.io' is not valid"),
        (
            doc(statement(registryScopes=["https://r.io/a"])),
            "registry scope 'https://r.io/a' is not valid",
        ),
        (doc(statement(registryScopes=[])), "has no registryScopes"),
        (
            doc(statement(), statement(name="t")),
            "registry scope '*' appears in more than one statement",
        ),
        (doc(statement(globalPolicy=True)), "'globalPolicy' belongs to blob trust policies"),
        (
            doc(
                statement(registryScopes=None, globalPolicy=True),
                statement(name="t", registryScopes=None, globalPolicy=True),
            ),
            "more than one blob trust policy statement sets globalPolicy",
        ),
        (
            doc(statement(unknownKey=1)),
            "trustPolicies.0.unknownKey: Extra inputs are not permitted",
        ),
        (
            doc(
                statement(signatureVerification={"level": "strict", "verifyTimestamp": "sometimes"})
            ),
            "verifyTimestamp",
        ),
    ],
)
def test_invalid_documents(document: dict[str, Any], message: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse_trust_policy(document)
    assert message in str(info.value)
    assert info.value.exit_code == 2


@pytest.mark.parametrize("wrapper", ["trustPolicyDoc", "trustPolicyDocument"])
def test_embedded_document_is_unwrapped(wrapper: str) -> None:
    parsed = parse_trust_policy({wrapper: doc(statement(name="embedded"))})
    assert parsed.trust_policies[0].name == "embedded"
    with pytest.raises(PolicyError, match="trustPolicies"):
        parse_trust_policy({wrapper: doc(statement()), "other": 1})


def test_kind_detection_and_explicit_kind() -> None:
    oci = parse_trust_policy(doc(statement()))
    blob = parse_trust_policy(doc(statement(registryScopes=None)))
    assert (oci.kind, blob.kind) == ("oci", "blob")
    with pytest.raises(PolicyError, match="'registryScopes' belongs to OCI trust policies"):
        parse_trust_policy(doc(statement()), kind="blob")
    with pytest.raises(PolicyError, match="has no registryScopes"):
        parse_trust_policy(doc(statement(registryScopes=None)), kind="oci")


def test_scope_selection() -> None:
    parsed = parse_trust_policy(
        doc(
            statement(name="global"),
            statement(name="exact", registryScopes=["r.io/team/app", "r.io/team/lib"]),
        )
    )
    assert parsed.for_scope("r.io/team/app").name == "exact"  # type: ignore[union-attr]
    assert parsed.for_scope("r.io/team/other").name == "global"  # type: ignore[union-attr]
    only_exact = parse_trust_policy(doc(statement(registryScopes=["r.io/team/app"])))
    assert only_exact.for_scope("r.io/team/other") is None


def test_malformed_json_and_files(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text('{"version": "1.0", "trustPolicies": [}')
    with pytest.raises(PolicyError, match="malformed trust policy: not valid JSON"):
        load_trust_policy(tmp_path / "bad.json")
    with pytest.raises(PolicyError, match="cannot read trust policy"):
        load_trust_policy(tmp_path / "absent.json")
    (tmp_path / "good.json").write_text(json.dumps(doc(statement())))
    os.symlink(tmp_path / "good.json", tmp_path / "link.json")
    with pytest.raises(PolicyError, match="is a symlink"):
        load_trust_policy(tmp_path / "link.json")
    assert load_trust_policy(tmp_path / "good.json").trust_policies[0].name == "s"
    with pytest.raises(PolicyError, match="expected a JSON object"):
        parse_trust_policy("[]")


# -- distinguished names -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dn", "expected"),
    [
        ("C=US, ST=WA, O=acme", {"C": "US", "ST": "WA", "O": "acme"}),
        (
            "CN=e2e,O=Notary,L=Seattle,ST=WA,C=US",
            {"CN": "e2e", "O": "Notary", "L": "Seattle", "ST": "WA", "C": "US"},
        ),
        ("C=US; S=WA; O=acme", {"C": "US", "ST": "WA", "O": "acme"}),
        (r"C=US, ST=WA, O=acme\, inc.", {"C": "US", "ST": "WA", "O": "acme, inc."}),
        (r"C=US, ST=WA, O=\ padded\ ", {"C": "US", "ST": "WA", "O": " padded "}),
        (r"C=US, ST=WA, O=caf\C3\A9", {"C": "US", "ST": "WA", "O": "café"}),
        (r"C=US, ST=WA, O=back\\slash", {"C": "US", "ST": "WA", "O": "back\\slash"}),
    ],
)
def test_parse_dn(dn: str, expected: dict[str, str]) -> None:
    assert parse_dn(dn) == expected


@pytest.mark.parametrize(
    ("dn", "message"),
    [
        ("C=US, ST=WA", "lacks O"),
        ("C=US, ST=WA, O=a, O=b", "repeats the attribute O"),
        ("C=US+ST=WA, O=a", "multi-valued RDN"),
        ("C=US, ST=WA, Oacme", "without 'type=value'"),
        ("C=US, ST=WA, O=#04024869", "hex-encoded values are not supported"),
        ("C=US, ST=WA, O=a\\", "lone backslash"),
        ("  ", "empty"),
    ],
)
def test_parse_dn_rejects(dn: str, message: str) -> None:
    with pytest.raises(DNError, match=message):
        parse_dn(dn)


def test_subset_matching() -> None:
    have = {"C": "US", "ST": "WA", "O": "acme", "CN": "signer"}
    assert is_subset({"C": "US", "ST": "WA", "O": "acme"}, have)
    assert not is_subset({"C": "US", "ST": "WA", "O": "ACME"}, have)  # values are case-sensitive
    assert not is_subset({"C": "US", "ST": "WA", "O": "acme", "OU": "x"}, have)


# -- trust stores on disk ------------------------------------------------------------------


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_trust_store_layout_and_problems(tmp_path: Path) -> None:
    ident, root = _sign.demo_identity(NOW)
    tsa, tsa_root = _sign.demo_timestamper(NOW)
    x = tmp_path / "x509"
    _write(x / "ca" / "good" / "root.pem", root.public_bytes(Encoding.PEM))
    _write(x / "ca" / "good" / "again.cer", root.public_bytes(Encoding.DER))
    _write(x / "ca" / "leafonly" / "leaf.pem", ident.chain[0].public_bytes(Encoding.PEM))
    _write(x / "ca" / "garbage" / "bad.crt", b"not a certificate")
    (x / "ca" / "empty").mkdir(parents=True)
    _write(x / "tsa" / "stamps" / "root.crt", tsa_root.public_bytes(Encoding.DER))
    _write(x / "tsa" / "leaf" / "tsa.crt", tsa.chain[0].public_bytes(Encoding.DER))
    _write(x / "signingAuthority" / "sa" / "root.pem", root.public_bytes(Encoding.PEM))
    (x / "ca" / "linked").mkdir()
    os.symlink(x / "ca" / "good" / "root.pem", x / "ca" / "linked" / "root.pem")
    os.symlink(x / "ca" / "good", x / "ca" / "dirlink")
    (x / "unknown").mkdir()

    store = load_trust_store(tmp_path)
    assert store.get("ca", "good") == (root, root)
    assert store.get("tsa", "stamps") == (tsa_root,)
    assert store.get("signingAuthority", "sa") == (root,)
    problems = {
        ("ca", "leafonly"): "neither a CA certificate nor a self-signed signing certificate",
        ("ca", "garbage"): "is not a PEM or DER certificate",
        ("ca", "empty"): "holds no X.509 certificates",
        ("tsa", "leaf"): "is not a self-issued CA root",
        ("ca", "linked"): "is a symlink",
        ("ca", "dirlink"): "is a symlink",
        ("ca", "absent"): "does not exist",
    }
    for (kind, name), message in problems.items():
        with pytest.raises(LookupError, match=message):
            store.get(kind, name)


def test_trust_store_needs_x509_dir(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="has no x509/ directory"):
        load_trust_store(tmp_path)


def test_self_signed_leaf_is_allowed_in_a_ca_store(tmp_path: Path) -> None:
    key = _sign.new_key()
    leaf = _sign.issue(
        _sign.name("self"),
        key,
        not_before=NOW - timedelta(days=1),
        not_after=NOW + timedelta(days=1),
    )
    _write(tmp_path / "x509" / "ca" / "self" / "self.pem", leaf.public_bytes(Encoding.PEM))
    assert load_trust_store(tmp_path).get("ca", "self") == (leaf,)
