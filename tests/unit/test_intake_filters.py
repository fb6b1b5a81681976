"""Signature-tag recognition and the "ignore this event" predicates."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from regwarden import USER_AGENT
from regwarden.errors import IntakeError
from regwarden.intake import (
    ignore_reason,
    is_self_write,
    manifest_subject,
    parse_distribution,
    parse_harbor,
    signature_subject,
)
from regwarden.model import EventKind, ImageEvent
from regwarden.quarantine_names import is_quarantine_repo, is_quarantine_tag
from regwarden.reference import ImageRef, short_digest

EVENTS = Path(__file__).resolve().parents[2] / "events"
HEX = hashlib.sha256(b"subject").hexdigest()
DIGEST = f"sha256:{HEX}"


def event(
    *,
    repository: str = "payments/api",
    tag: str | None = "1.0.0",
    digest: str | None = DIGEST,
    user_agent: str | None = "skopeo/1.9.3",
    actor: str | None = "ci",
    source: str = "distribution",
) -> ImageEvent:
    return ImageEvent(
        kind=EventKind.PUSHED,
        source=source,
        image=ImageRef(registry="127.0.0.1:5000", repository=repository, tag=tag, digest=digest),
        time=datetime(2025, 1, 1, tzinfo=UTC),
        delivery_id="d-1",
        user_agent=user_agent,
        actor=actor,
    )


@pytest.mark.parametrize("tag", [f"sha256-{HEX}.sig", f"sha256-{HEX}.att", f"sha256-{HEX}.sbom"])
def test_cosign_tags_name_their_subject(tag: str) -> None:
    assert signature_subject(tag) == DIGEST


def test_referrers_fallback_tag_names_its_subject() -> None:
    assert signature_subject(f"sha256-{HEX}") == DIGEST


@pytest.mark.parametrize(
    "tag",
    [
        None,
        "",
        "latest",
        f"sha256-{HEX.upper()}.sig",  # the schema is lowercase hex
        f"sha256-{HEX[:-1]}.sig",
        f"sha256-{HEX}.sig.bak",
        f"sha256-{HEX}.txt",
        f"sha512-{HEX}.sig",  # longer digests are truncated by the tag schema
        f"sha256:{HEX}",
    ],
)
def test_other_tags_are_not_signatures(tag: str | None) -> None:
    assert signature_subject(tag) is None


def test_manifest_subject_reads_the_referrer_subject() -> None:
    referrer = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": DIGEST, "size": 2},
        "layers": [],
        "subject": {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": DIGEST,
            "size": 1024,
        },
    }
    assert manifest_subject(json.dumps(referrer).encode()) == DIGEST
    del referrer["subject"]
    assert manifest_subject(json.dumps(referrer).encode()) is None


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"subject": {"digest": "sha256:1"}}', r"at subject\.digest: got 'sha256:1'"),
        (b'{"subject": "x"}', r"at subject: got 'x', expected an object"),
        (b"not json", r"invalid manifest: not valid JSON"),
    ],
)
def test_manifest_subject_refuses_malformed_manifests(raw: bytes, message: str) -> None:
    with pytest.raises(IntakeError, match=message):
        manifest_subject(raw)


def test_self_write_by_user_agent() -> None:
    assert is_self_write(event(user_agent=USER_AGENT))
    assert not is_self_write(event(user_agent="skopeo/1.9.3"))
    assert not is_self_write(event(user_agent=f"curl/8 {USER_AGENT}"))
    assert not is_self_write(event(user_agent=None))


def test_self_write_requires_the_actor_when_given() -> None:
    spoofed = event(user_agent=USER_AGENT, actor="mallory")
    assert is_self_write(spoofed)
    assert not is_self_write(spoofed, actor="regwarden-bot")
    assert is_self_write(event(user_agent=USER_AGENT, actor="regwarden-bot"), actor="regwarden-bot")


def test_harbor_events_have_no_user_agent_so_the_actor_decides() -> None:
    payload = json.loads((EVENTS / "harbor" / "push-artifact.json").read_text())
    payload["operator"] = "robot$regwarden"
    [harbor_event] = parse_harbor(json.dumps(payload).encode(), content_type=None)
    assert harbor_event.user_agent is None
    assert not is_self_write(harbor_event)
    assert is_self_write(harbor_event, actor="robot$regwarden")
    assert not is_self_write(harbor_event, actor="robot$other")


@pytest.mark.parametrize(
    ("repository", "template", "expected"),
    [
        ("quarantine/payments/api", "quarantine/{repository}", True),
        ("quarantine", "quarantine/{repository}", False),
        ("payments/api", "quarantine/{repository}", False),
        ("payments/quarantine/api", "quarantine/{repository}", False),
        ("payments/api-quarantine", "{repository}-quarantine", True),
        ("payments/api", "{repository}-quarantine", False),
        ("jail", "jail", True),
        ("jail/x", "jail", False),
        ("q.x/a", "q.x/{repository}", True),
        ("qax/a", "q.x/{repository}", False),  # the template is literal, not a regex
    ],
)
def test_quarantine_repository_templates(repository: str, template: str, expected: bool) -> None:
    assert is_quarantine_repo(repository, template) is expected


def test_quarantine_tags_bound_to_their_digest() -> None:
    own = f"quarantined-{short_digest(DIGEST)}"
    assert is_quarantine_tag(own)
    assert is_quarantine_tag(own, DIGEST)
    assert is_quarantine_tag("quarantined-anything")
    assert not is_quarantine_tag("quarantined-anything", DIGEST)
    assert not is_quarantine_tag("1.0.0", DIGEST)
    assert not is_quarantine_tag(None)


def test_ignore_reason_for_each_rule_and_none_otherwise() -> None:
    assert ignore_reason(event()) is None
    reason = ignore_reason(event(user_agent=USER_AGENT))
    assert reason is not None
    assert "own write" in reason
    reason = ignore_reason(event(repository="quarantine/payments/api"))
    assert reason is not None
    assert "quarantine repository" in reason
    reason = ignore_reason(event(tag=f"quarantined-{short_digest(DIGEST)}"))
    assert reason is not None
    assert "quarantine tag" in reason
    assert ignore_reason(event(tag="quarantined-evil")) is None
    custom = ignore_reason(
        event(repository="api-jail"), quarantine_templates=("{repository}-jail",)
    )
    assert custom is not None


def test_ignore_reason_on_a_parsed_distribution_event() -> None:
    envelope = json.loads((EVENTS / "oci" / "distribution-push.json").read_text())
    [plain] = parse_distribution(json.dumps(envelope).encode(), content_type=None)
    assert ignore_reason(plain) is None
    envelope["events"][0]["request"]["useragent"] = USER_AGENT
    [own] = parse_distribution(json.dumps(envelope).encode(), content_type=None)
    assert ignore_reason(own) is not None
