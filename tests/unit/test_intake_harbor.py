"""Harbor webhooks (default JSON and CloudEvents) → ImageEvent, against events/harbor/."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from regwarden.errors import IntakeError
from regwarden.intake import harbor_delivery_id, parse_harbor, parse_harbor_results
from regwarden.model import EventKind, Severity
from regwarden.scanning import ScanStatus

EVENTS = Path(__file__).resolve().parents[2] / "events" / "harbor"
JSON = "application/json"
VULN_REPORT = "application/vnd.security.vulnerability.report; version=1.1"
TYPE_TO_CE = {
    "PUSH_ARTIFACT": "harbor.artifact.pushed",
    "PULL_ARTIFACT": "harbor.artifact.pulled",
    "DELETE_ARTIFACT": "harbor.artifact.deleted",
    "SCANNING_COMPLETED": "harbor.scan.completed",
    "SCANNING_FAILED": "harbor.scan.failed",
    "SCANNING_STOPPED": "harbor.scan.stopped",
}


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return data


def body(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload).encode()


def as_cloudevent(payload: dict[str, Any], event_id: str) -> dict[str, Any]:
    """The same webhook in Harbor's CloudEvents format (structured JSON)."""
    return {
        "specversion": "1.0",
        "id": event_id,
        "requestid": "req-" + event_id,
        "source": "/projects/2/webhook/policies/15",
        "type": TYPE_TO_CE[payload["type"]],
        "datacontenttype": "application/json",
        "time": datetime.fromtimestamp(payload["occur_at"], UTC).isoformat(),
        "data": payload["event_data"],
        "operator": payload["operator"],
    }


def resource_of(payload: dict[str, Any]) -> dict[str, Any]:
    resources: list[dict[str, Any]] = payload["event_data"]["resources"]
    assert len(resources) == 1
    return resources[0]


def host_of(resource: dict[str, Any]) -> str:
    host: str = resource["resource_url"].split("/", 1)[0]
    return host


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("push-artifact.json", EventKind.PUSHED),
        ("pull-artifact.json", EventKind.PULLED),
        ("delete-artifact.json", EventKind.DELETED),
        ("scanning-completed.json", EventKind.SCANNED),
        ("scanning-failed.json", EventKind.SCANNED),
    ],
)
def test_default_format_maps_every_field(name: str, kind: EventKind) -> None:
    payload = load(name)
    resource = resource_of(payload)
    [event] = parse_harbor((EVENTS / name).read_bytes(), content_type=JSON)
    assert event.kind is kind
    assert event.source == "harbor"
    assert event.time == datetime.fromtimestamp(payload["occur_at"], UTC)
    assert event.actor == payload["operator"]
    assert event.image.registry == host_of(resource)
    assert event.image.repository == payload["event_data"]["repository"]["repo_full_name"]
    assert event.image.digest == resource["digest"]
    tag = resource.get("tag")
    assert event.image.tag == (None if tag in (None, resource["digest"]) else tag)
    assert event.delivery_id == harbor_delivery_id(
        payload["type"], event.time, event.image.repository, resource["digest"], event.image.tag
    )


def test_push_by_digest_puts_the_digest_in_tag_which_is_not_a_tag() -> None:
    resource = resource_of(load("pull-artifact.json"))
    assert resource["tag"] == resource["digest"]
    [event] = parse_harbor((EVENTS / "pull-artifact.json").read_bytes(), content_type=JSON)
    assert event.image.tag is None


def test_derived_delivery_id_is_stable_and_distinguishes_deliveries() -> None:
    raw = (EVENTS / "push-artifact.json").read_bytes()
    first = parse_harbor(raw, content_type=JSON)[0].delivery_id
    assert first == parse_harbor(raw, content_type=JSON)[0].delivery_id
    assert first.startswith("harbor-")
    later = load("push-artifact.json")
    later["occur_at"] += 1
    assert parse_harbor(body(later), content_type=JSON)[0].delivery_id != first
    other_type = load("push-artifact.json")
    other_type["type"] = "PULL_ARTIFACT"
    assert parse_harbor(body(other_type), content_type=JSON)[0].delivery_id != first


def test_cloudevents_push_matches_the_default_format_and_uses_its_id() -> None:
    payload = load("harbor-cloudevents-push.json")
    [ce] = parse_harbor(
        (EVENTS / "harbor-cloudevents-push.json").read_bytes(),
        content_type="application/cloudevents+json",
    )
    [default] = parse_harbor((EVENTS / "push-artifact.json").read_bytes(), content_type=JSON)
    assert ce.kind is EventKind.PUSHED
    assert ce.delivery_id == payload["id"]
    assert ce.time == datetime.fromisoformat(payload["time"])
    assert ce.actor == payload["operator"]
    assert ce.image == default.image


@pytest.mark.parametrize(
    "name",
    [
        "push-artifact.json",
        "pull-artifact.json",
        "delete-artifact.json",
        "scanning-completed.json",
        "scanning-failed.json",
    ],
)
def test_every_default_sample_reads_the_same_as_a_cloudevent(name: str) -> None:
    payload = load(name)
    [default] = parse_harbor_results(body(payload), content_type=JSON)
    [ce] = parse_harbor_results(body(as_cloudevent(payload, "ce-1")), content_type=None)
    assert ce.event.delivery_id == "ce-1"
    assert ce.event.model_copy(update={"delivery_id": "x"}) == default.event.model_copy(
        update={"delivery_id": "x"}
    )
    assert (ce.scan_status, ce.scan_summary) == (default.scan_status, default.scan_summary)


def test_scanning_completed_carries_the_overview_counts() -> None:
    payload = load("scanning-completed.json")
    overview = resource_of(payload)["scan_overview"][VULN_REPORT]
    raw_counts = overview["summary"]["summary"]
    [result] = parse_harbor_results(body(payload), content_type=JSON)
    assert result.scan_status is ScanStatus.SUCCEEDED
    summary = result.scan_summary
    assert summary is not None
    assert summary.digest == result.event.image.digest
    assert summary.total == overview["summary"]["total"]
    assert summary.fixable == overview["summary"]["fixable"]
    counts = summary.counts()
    for name, count in raw_counts.items():
        assert counts[Severity[name.upper()]] == count
    assert sum(counts.values()) == sum(raw_counts.values())
    assert summary.highest == max(Severity[n.upper()] for n, c in raw_counts.items() if c)
    assert summary.scanned_at == datetime.fromisoformat(overview["end_time"])
    assert overview["scanner"]["name"] in summary.scanner


def test_scanning_failed_is_scanned_with_failed_status_and_no_counts() -> None:
    [result] = parse_harbor_results(
        (EVENTS / "scanning-failed.json").read_bytes(), content_type=JSON
    )
    assert result.event.kind is EventKind.SCANNED
    assert result.scan_status is ScanStatus.FAILED
    assert result.scan_summary is None


def test_completed_webhook_whose_overview_says_error_is_a_failure() -> None:
    payload = load("scanning-completed.json")
    overview = resource_of(payload)["scan_overview"][VULN_REPORT]
    overview["scan_status"] = "Error"
    [result] = parse_harbor_results(body(payload), content_type=JSON)
    assert result.scan_status is ScanStatus.FAILED
    assert result.scan_summary is None


def test_scanning_stopped_is_scanned_with_stopped_status() -> None:
    payload = load("scanning-failed.json")
    payload["type"] = "SCANNING_STOPPED"
    resource_of(payload)["scan_overview"][VULN_REPORT]["scan_status"] = "Stopped"
    [result] = parse_harbor_results(body(payload), content_type=JSON)
    assert result.scan_status is ScanStatus.STOPPED
    assert result.scan_summary is None


def test_completed_without_a_vulnerability_overview_has_no_counts() -> None:
    payload = load("scanning-completed.json")
    resource = resource_of(payload)
    resource["scan_overview"] = {
        "application/vnd.security.sbom.report+json; version=1.0": {"scan_status": "Success"}
    }
    [result] = parse_harbor_results(body(payload), content_type=JSON)
    assert result.scan_status is ScanStatus.SUCCEEDED
    assert result.scan_summary is None


def test_non_scan_events_have_no_scan_fields() -> None:
    [result] = parse_harbor_results((EVENTS / "push-artifact.json").read_bytes(), content_type=JSON)
    assert (result.scan_status, result.scan_summary) == (None, None)


def test_cosign_signature_push_is_signed_for_the_subject() -> None:
    payload = load("push-artifact.json")
    resource = resource_of(payload)
    subject = resource["digest"]
    sig_tag = subject.replace("sha256:", "sha256-") + ".sig"
    resource["tag"] = sig_tag
    resource["digest"] = "sha256:" + "5" * 64
    resource["resource_url"] = f"{host_of(resource)}/library/nginx:{sig_tag}"
    [event] = parse_harbor(body(payload), content_type=JSON)
    assert event.kind is EventKind.SIGNED
    assert event.subject_digest == subject
    assert event.image.digest == subject
    assert event.image.tag is None


def test_several_resources_give_several_events_with_distinct_ids() -> None:
    payload = load("push-artifact.json")
    first = resource_of(payload)
    second = copy.deepcopy(first)
    second["tag"] = "stable"
    second["resource_url"] = first["resource_url"].rsplit(":", 1)[0] + ":stable"
    payload["event_data"]["resources"] = [first, second]
    events = parse_harbor(body(payload), content_type=JSON)
    assert [e.image.tag for e in events] == [first["tag"], "stable"]
    assert len({e.delivery_id for e in events}) == 2
    ce_events = parse_harbor(body(as_cloudevent(payload, "abc")), content_type=JSON)
    assert [e.delivery_id for e in ce_events] == ["abc#0", "abc#1"]


def test_repository_from_namespace_and_name_when_full_name_is_absent() -> None:
    payload = load("push-artifact.json")
    repo = payload["event_data"]["repository"]
    full = repo.pop("repo_full_name")
    [event] = parse_harbor(body(payload), content_type=JSON)
    assert event.image.repository == full == f"{repo['namespace']}/{repo['name']}"


def test_registry_override_and_missing_resource_url() -> None:
    payload = load("scanning-failed.json")
    del resource_of(payload)["resource_url"]
    with pytest.raises(IntakeError, match=r"resource_url.*pass registry="):
        parse_harbor(body(payload), content_type=JSON)
    [event] = parse_harbor(body(payload), content_type=JSON, registry="127.0.0.1:8080")
    assert event.image.registry == "127.0.0.1:8080"


@pytest.mark.parametrize("event_type", ["QUOTA_EXCEED", "QUOTA_WARNING", "REPLICATION"])
def test_valid_but_irrelevant_harbor_types_give_nothing(event_type: str) -> None:
    payload = load("push-artifact.json")
    payload["type"] = event_type
    assert parse_harbor(body(payload), content_type=JSON) == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"type": "PUSH_IMAGE"}, r"at type: got 'PUSH_IMAGE', expected one of PUSH_ARTIFACT"),
        ({"occur_at": "soon"}, r"at occur_at: got 'soon', expected an RFC 3339"),
        ({"occur_at": True}, r"at occur_at: got true, expected a date-time"),
        ({"event_data": None}, r"at event_data: got null, expected an object"),
    ],
)
def test_malformed_envelopes_name_the_field(change: dict[str, Any], message: str) -> None:
    payload = load("push-artifact.json") | change
    with pytest.raises(IntakeError, match=message):
        parse_harbor(body(payload), content_type=JSON)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("digest", "sha256:XYZ", r"resources\[0\]\.digest: got 'sha256:XYZ', expected a digest"),
        ("tag", "a b", r"resources\[0\]\.tag: got 'a b', expected a tag"),
        ("resource_url", "harbor.example.com/other/repo:1", r"resource_url: got .*library/nginx"),
    ],
)
def test_malformed_resources_name_the_field(key: str, value: str, message: str) -> None:
    payload = load("push-artifact.json")
    resource_of(payload)[key] = value
    with pytest.raises(IntakeError, match=message):
        parse_harbor(body(payload), content_type=JSON)


def test_malformed_scan_overview_names_the_path() -> None:
    payload = load("scanning-completed.json")
    overview = resource_of(payload)["scan_overview"][VULN_REPORT]
    overview["summary"]["summary"]["High"] = -3
    with pytest.raises(IntakeError, match=r"event_data\.resources\[0\]\.scan_overview\..*High"):
        parse_harbor(body(payload), content_type=JSON)


def test_empty_resources_and_foreign_bodies_are_refused() -> None:
    payload = load("push-artifact.json")
    payload["event_data"]["resources"] = []
    with pytest.raises(IntakeError, match=r"resources: got a list, expected at least one"):
        parse_harbor(body(payload), content_type=JSON)
    with pytest.raises(IntakeError, match=r"expected a Harbor webhook"):
        parse_harbor(b'{"events": []}', content_type=JSON)


def test_cloudevents_version_and_type_are_checked() -> None:
    ce = load("harbor-cloudevents-push.json")
    with pytest.raises(IntakeError, match=r"at specversion: got '0\.3', expected '1\.0'"):
        parse_harbor(body(ce | {"specversion": "0.3"}), content_type=JSON)
    with pytest.raises(IntakeError, match=r"at type: got 'harbor\.x', expected one of harbor\."):
        parse_harbor(body(ce | {"type": "harbor.x"}), content_type=JSON)


def test_content_type_is_checked() -> None:
    with pytest.raises(IntakeError, match=r"got Content-Type 'text/xml'.*cloudevents\+json"):
        parse_harbor((EVENTS / "push-artifact.json").read_bytes(), content_type="text/xml")
