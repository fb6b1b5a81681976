"""Interop: `regwarden verify --certificate-identity-regexp / --certificate-oidc-issuer-regexp`
search the certificate's SAN and issuer as cosign does (Go's MatchString: the pattern
anywhere in the value), on a keyless bundle the real Sigstore stack made (the handbook's
sigstore-conformance fixture, signed by the conformance beacon's GitHub workflow)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from support.cli import run_cli

from regwarden.cli._signing import keyless_identities
from regwarden.signatures import COSIGN_SIGN_PREDICATE, CosignPolicy, TrustedRoot, verify_bundle

FIXTURES = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures" / "cosign"
pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(not FIXTURES.is_dir(), reason="../shared/fixtures is absent"),
]
ISSUER = "https://token.actions.githubusercontent.com"


def verified(subject_regexp: str, issuer_regexp: str) -> bool:
    pytest.importorskip("sigstore", reason="keyless verification needs the 'keyless' extra")
    doc: dict[str, Any] = json.loads(
        (
            FIXTURES / "bundles" / "happy-path-v0.3-new-mediaType" / "bundle.sigstore.json"
        ).read_bytes()
    )
    digest = "sha256:" + base64.b64decode(doc["messageSignature"]["messageDigest"]["digest"]).hex()
    root = TrustedRoot.from_json(
        (FIXTURES / "trusted-roots" / "trusted_root.public-good.json").read_bytes()
    )
    policy = CosignPolicy(
        identities=keyless_identities([], [subject_regexp], None, issuer_regexp),
        trusted_root=root,
        predicate_types=frozenset({COSIGN_SIGN_PREDICATE}),
    )
    result = verify_bundle(json.dumps(doc).encode(), expected_digest=digest, policy=policy).result
    return result.verified


@pytest.mark.parametrize(
    ("subject", "issuer", "ok"),
    [
        ("sigstore-conformance/extremely-dangerous", "githubusercontent", True),  # found inside
        (r"^https://github\.com/sigstore-conformance/", r"^https://token\.actions\.", True),
        (r"^https://github\.com/sigstore-conformance/.*@refs/heads/main$", ISSUER, True),
        ("^sigstore-conformance", "githubusercontent", False),  # anchors are kept
        (r"@refs/heads/main$", r"^https://accounts\.google\.com$", False),  # issuer differs
        ("sigstore-conformance/other-repo", "githubusercontent", False),
    ],
)
def test_regexps_are_searched_as_cosign_does(subject: str, issuer: str, ok: bool) -> None:
    assert verified(subject, issuer) is ok


def test_an_invalid_regexp_is_a_usage_error_said_once() -> None:
    proc = run_cli(
        "verify",
        "127.0.0.1:1/app:1",
        "--certificate-identity-regexp",
        "acme/(unclosed",
        "--certificate-oidc-issuer",
        ISSUER,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "400"},
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("--certificate-identity-regexp: invalid regex 'acme/(unclosed'") == 1
