"""The `clair` setting of a registry entry: what it accepts, where it makes the `clair` scan
source servable, and how the source is set up from it (the PSK read from the environment)."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, cast

import pytest

from regwarden.errors import UsageError
from regwarden.policy import Policy, load_policy_text, scan_sources, secret_env_var, validate_text
from regwarden.scanning import SCAN_SOURCES, ScanContext
from regwarden.scanning.clair import ClairScanSource

HEAD = "apiVersion: regwarden/v1\nkind: Policy\n"
VULNS = "defaults:\n  vulnerabilities: {maxSeverity: high, sources: [clair]}\n"
WITH_CLAIR = (
    "registries:\n"
    "  - host: r.example.com\n"
    "    kind: distribution\n"
    "    clair: {url: 'https://clair.example.com/', psk: 'secret://clair-psk'}\n"
)


def load(text: str) -> Policy:
    return load_policy_text(HEAD + text, source="test.yaml", base_dir="/policies")


def supported(text: str, registry: str | None = None) -> list[tuple[str, str]]:
    return [
        (p.path, p.message) for p in validate_text(HEAD + text, support=True, registry=registry)
    ]


@dataclass
class StandIn:
    host: str


def context(policy: Policy, host: str, env: dict[str, str]) -> ScanContext:
    return ScanContext(policy=policy, registry=cast("Any", StandIn(host)), env=env)


def test_a_listed_clair_is_read_as_the_clair_source_there() -> None:
    policy = load(WITH_CLAIR + VULNS)
    entry = policy.registry("r.example.com")
    assert entry is not None and entry.clair is not None
    assert entry.clair.url == "https://clair.example.com"
    assert "clair" in entry.sources()
    assert supported(WITH_CLAIR + VULNS) == []
    assert supported(WITH_CLAIR + VULNS, registry="r.example.com") == []
    effective = policy.for_repository("team/app")
    assert scan_sources(effective, policy, "r.example.com") == ("clair",)


def test_clair_on_a_registry_without_one_is_refused() -> None:
    text = "registries:\n  - {host: r.example.com, kind: distribution}\n" + VULNS
    ((path, message),) = supported(text)
    assert path == "defaults.vulnerabilities.sources[0]"
    assert "cannot serve scan source 'clair'" in message
    # an unlisted host has no Clair either
    ((_, message),) = supported(VULNS, registry="127.0.0.1:5000")
    assert "cannot serve scan source 'clair'" in message


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://clair.example.com", True),
        ("http://127.0.0.1:6060", True),
        ("http://localhost:6060", True),
        ("http://clair.example.com", False),
        ("clair.example.com", False),
        ("https://u:p@clair.example.com", False),
        ("https://clair.example.com/?x=1", False),
    ],
)
def test_clair_url_is_https_or_loopback_http(url: str, ok: bool) -> None:
    text = (
        f"registries:\n  - {{host: r.example.com, kind: distribution, clair: {{url: '{url}'}}}}\n"
    )
    found = [(p.path, p.message) for p in validate_text(HEAD + text)]
    if ok:
        assert found == []
    else:
        ((path, _),) = found
        assert path == "registries[0].clair.url"


def test_the_source_reads_the_psk_from_the_environment_and_never_shows_it() -> None:
    policy = load(WITH_CLAIR + VULNS)
    key = b"k" * 32
    env = {secret_env_var("clair-psk"): base64.b64encode(key).decode()}
    reader = SCAN_SOURCES.get("clair")(context(policy, "r.example.com", env))
    assert isinstance(reader, ClairScanSource)
    assert reader.url == "https://clair.example.com" and reader._psk == key

    with pytest.raises(UsageError, match="REGWARDEN_SECRET_CLAIR_PSK"):
        SCAN_SOURCES.get("clair")(context(policy, "r.example.com", {}))
    bad = {secret_env_var("clair-psk"): "?not-base64?"}
    with pytest.raises(UsageError, match="'clair-psk'") as raised:
        SCAN_SOURCES.get("clair")(context(policy, "r.example.com", bad))
    assert "?not-base64?" not in str(raised.value)


def test_the_source_does_not_apply_to_a_registry_without_clair() -> None:
    policy = load(WITH_CLAIR + VULNS)
    assert SCAN_SOURCES.get("clair")(context(policy, "other.example.com", {})) is None


def test_clair_without_psk_sends_no_jwt() -> None:
    text = (
        "registries:\n  - {host: r.example.com, kind: harbor, clair: {url: 'https://c.example'}}\n"
    )
    policy = load(text + VULNS)
    reader = SCAN_SOURCES.get("clair")(context(policy, "r.example.com", {}))
    assert isinstance(reader, ClairScanSource) and reader._psk is None
