"""Access-event parsers over events/access/ and malformed input (clear IntakeError paths)."""

from __future__ import annotations

import copy
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from regwarden.access import (
    AccessEvent,
    parse_acr_diagnostics_access,
    parse_cloudtrail_access,
    parse_cloudtrail_access_body,
    parse_distribution_access,
    parse_gcp_audit_access,
    parse_harbor_access,
)
from regwarden.errors import IntakeError
from regwarden.intake import harbor_delivery_id

EVENTS = Path(__file__).resolve().parents[3] / "events" / "access"
D1 = "sha256:74b474db2395fc03a97e9ba41b1604376e352181cff1464ec1a44304a40c7e45"
D2 = "sha256:3f1e7c0d9b8a7f6e5d4c3b2a19080706f5e4d3c2b1a09f8e7d6c5b4a39281706"
JSON = "application/json"
DIST = "application/vnd.docker.distribution.events.v1+json"


def raw(name: str) -> bytes:
    return (EVENTS / name).read_bytes()


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(raw(name))
    return data


def dumps(obj: object) -> bytes:
    return json.dumps(obj).encode()


# -- distribution ---------------------------------------------------------------------------


def test_distribution_pull_keeps_the_manifest_and_drops_the_layer() -> None:
    events = parse_distribution_access(raw("distribution-pull.json"), content_type=DIST)
    assert events == [
        AccessEvent(
            source="distribution",
            event_id="0d7e1c52-3a44-4f0e-9d61-6a2f3c8b9e01",
            action="pull",
            registry="registry.example.com:5000",
            repository="payments/api",
            digest=D1,
            tag="1.4.2",
            principal="system:serviceaccount:prod:deployer",
            principal_type="user",
            source_ip="10.2.3.4",
            user_agent="containerd/v1.7.13",
            time=datetime(2026, 3, 2, 8, 15, 4, 123456, tzinfo=UTC),
        )
    ]


@pytest.mark.parametrize("fast", [True, False])
def test_distribution_manifest_head_is_a_probe_not_a_pull(
    fast: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real registry (distribution 2.8) notifies a manifest HEAD as `action: pull` with
    `request.method: HEAD`: an existence check, kept as a `probe` (a use of the image, not
    a pull to count or alert on); a GET, and a pull with no method, are pulls."""
    from regwarden.access import _parse_distribution as module

    if not fast:
        monkeypatch.setattr(module, "_fast", lambda ev, registry: module._SLOW)
    doc = load("distribution-pull.json")
    head = copy.deepcopy(doc["events"][0])
    head["request"]["method"] = "HEAD"
    head["id"] = "head-1"
    bare = copy.deepcopy(doc["events"][0])
    bare["request"].pop("method")
    bare["id"] = "bare-1"
    doc["events"] = [head, bare, *doc["events"]]
    events = parse_distribution_access(dumps(doc), content_type=DIST)
    assert [(e.event_id, e.probe) for e in events] == [
        ("head-1", True),
        ("bare-1", False),
        ("0d7e1c52-3a44-4f0e-9d61-6a2f3c8b9e01", False),
    ]


def test_distribution_quarantine_pull_ipv6_address_and_override() -> None:
    (event,) = parse_distribution_access(
        raw("distribution-pull-quarantine.json"), content_type=None, registry="reg.internal"
    )
    assert (event.repository, event.digest, event.tag) == ("quarantine/payments/api", D2, None)
    assert (event.source_ip, event.principal, event.registry) == (
        "2001:db8::7",
        "mallory",
        "reg.internal",
    )
    assert event.reference == f"reg.internal/quarantine/payments/api@{D2}"


def test_distribution_push_is_an_access_too() -> None:
    (event,) = parse_distribution_access(raw("distribution-push.json"), content_type=DIST)
    assert (event.action, event.principal, event.tag, event.source_ip) == (
        "push",
        "alice",
        "1.5.0",
        "192.0.2.10",
    )


def test_distribution_anonymous_pull_names_nobody_and_deletes_mounts_are_dropped() -> None:
    doc = load("distribution-pull.json")
    first = doc["events"][0]
    first["actor"] = {}
    mount = copy.deepcopy(first)
    mount["action"] = "mount"
    delete = copy.deepcopy(first)
    delete["action"] = "delete"
    doc["events"] = [first, mount, delete]
    (event,) = parse_distribution_access(dumps(doc), content_type=DIST)
    assert event.principal is None and event.principal_type is None


@pytest.mark.parametrize(
    ("mutate", "where"),
    [
        (lambda e: e.__setitem__("action", "fetch"), "events[0].action"),
        (lambda e: e["target"].__setitem__("digest", "sha256:nothex"), "events[0].target.digest"),
        (
            lambda e: e["target"].__setitem__("repository", "Bad Name"),
            "events[0].target.repository",
        ),
        (lambda e: e.__setitem__("timestamp", "yesterday"), "events[0].timestamp"),
        (lambda e: e["request"].pop("host"), "events[0].request.host"),
        (lambda e: e.__setitem__("id", 7), "events[0].id"),
    ],
)
def test_distribution_bad_event_names_its_path(mutate: Any, where: str) -> None:
    doc = load("distribution-pull.json")
    mutate(doc["events"][0])
    pattern = r"invalid distribution notification at " + re.escape(where)
    with pytest.raises(IntakeError, match=pattern):
        parse_distribution_access(dumps(doc), content_type=DIST)


def test_distribution_not_an_envelope() -> None:
    with pytest.raises(IntakeError, match="not valid JSON"):
        parse_distribution_access(b"{", content_type=None)
    with pytest.raises(IntakeError, match="expected an envelope"):
        parse_distribution_access(b'{"event": []}', content_type=None)
    with pytest.raises(IntakeError, match="Content-Type"):
        parse_distribution_access(raw("distribution-pull.json"), content_type="text/plain")


# -- Harbor ---------------------------------------------------------------------------------


def test_harbor_default_pull() -> None:
    (event,) = parse_harbor_access(raw("harbor-pull-artifact.json"), content_type=JSON)
    when = datetime.fromtimestamp(1772439304, tz=UTC)
    assert event == AccessEvent(
        source="harbor",
        event_id=harbor_delivery_id("PULL_ARTIFACT", when, "payments/api", D1, "1.4.2"),
        action="pull",
        registry="harbor.example.com",
        repository="payments/api",
        digest=D1,
        tag="1.4.2",
        principal="robot$prod+deployer",
        principal_type="robot",
        source_ip=None,
        user_agent=None,
        time=when,
    )


def test_harbor_cloudevents_pull_by_digest_and_push() -> None:
    (pull,) = parse_harbor_access(raw("harbor-cloudevents-pull.json"), content_type=None)
    assert (pull.event_id, pull.tag, pull.digest, pull.principal) == (
        "7f3c2a10-2d4e-4b8a-9c61-0e5f4a3b2c1d",
        None,
        D1,
        "system:serviceaccount:prod:deployer",
    )
    (push,) = parse_harbor_access(raw("harbor-push-artifact.json"), content_type=None)
    assert (push.action, push.principal_type, push.tag) == ("push", "user", "1.5.0")


def test_harbor_other_types_give_nothing() -> None:
    doc = load("harbor-push-artifact.json")
    doc["type"] = "DELETE_ARTIFACT"
    assert parse_harbor_access(dumps(doc), content_type=None) == []
    ce = load("harbor-cloudevents-pull.json")
    ce["type"] = "harbor.scan.completed"
    assert parse_harbor_access(dumps(ce), content_type=None) == []


def test_harbor_several_resources_get_indexed_ids() -> None:
    ce = load("harbor-cloudevents-pull.json")
    ce["data"]["resources"].append(
        {"digest": D2, "tag": "1.5.0", "resource_url": "harbor.example.com/payments/api:1.5.0"}
    )
    ids = [e.event_id for e in parse_harbor_access(dumps(ce), content_type=None)]
    assert ids == [f"{ce['id']}#0", f"{ce['id']}#1"]


def test_harbor_bad_input_names_its_path() -> None:
    doc = load("harbor-pull-artifact.json")
    doc["event_data"]["resources"][0]["resource_url"] = "elsewhere/other/repo:1"
    with pytest.raises(IntakeError, match=r"event_data\.resources\[0\]\.resource_url"):
        parse_harbor_access(dumps(doc), content_type=None)
    with pytest.raises(IntakeError, match="neither"):
        parse_harbor_access(b"{}", content_type=None)


# -- CloudTrail -----------------------------------------------------------------------------


def test_cloudtrail_pull_by_tag_names_the_role_not_the_session() -> None:
    (event,) = parse_cloudtrail_access(load("cloudtrail-batchgetimage-tag.json"))
    assert event == AccessEvent(
        source="aws.cloudtrail",
        event_id="c84f5880-c2f9-4585-9757-28fa5c1065df",
        action="pull",
        registry="123456789012.dkr.ecr.us-east-2.amazonaws.com",
        repository="payments/api",
        digest=None,
        tag="1.4.2",
        principal="arn:aws:iam::123456789012:role/eks-prod-node",
        principal_type="AssumedRole",
        source_ip="10.2.3.4",
        user_agent="containerd/v1.7.13",
        time=datetime(2026, 3, 2, 8, 15, 4, tzinfo=UTC),
    )


def test_cloudtrail_pull_by_digest_iam_user_and_registry_naming() -> None:
    (event,) = parse_cloudtrail_access(
        load("cloudtrail-batchgetimage-digest.json"),
        registry_for_account=lambda account, region: f"ecr-{account}-{region}.local",
    )
    assert (event.digest, event.tag, event.principal, event.principal_type) == (
        D2,
        None,
        "arn:aws:iam::123456789012:user/Mary_Major",
        "IAMUser",
    )
    assert event.registry == "ecr-123456789012-us-east-2.local"


def test_cloudtrail_aws_service_and_denied_and_other_calls() -> None:
    (internal,) = parse_cloudtrail_access(load("cloudtrail-batchgetimage-aws-internal.json"))
    assert (internal.principal, internal.principal_type, internal.source_ip) == (
        "ecr.amazonaws.com",
        "aws-service",
        None,
    )
    assert parse_cloudtrail_access(load("cloudtrail-batchgetimage-denied.json")) == []
    layer = load("cloudtrail-batchgetimage-digest.json")
    layer["detail"]["eventName"] = "GetDownloadUrlForLayer"
    assert parse_cloudtrail_access(layer) == []


def test_cloudtrail_put_image_is_a_push_of_the_response_digest() -> None:
    (event,) = parse_cloudtrail_access(load("cloudtrail-putimage.json"))
    assert (event.action, event.digest, event.tag, event.principal) == (
        "push",
        D2,
        "1.5.0",
        "arn:aws:iam::123456789012:role/ci-deploy",
    )


def test_cloudtrail_several_image_ids_one_event_each() -> None:
    doc = load("cloudtrail-batchgetimage-tag.json")
    doc["detail"]["requestParameters"]["imageIds"] = [{"imageTag": "1.4.2"}, {"imageDigest": D2}]
    events = parse_cloudtrail_access(doc)
    assert [(e.event_id[-2:], e.tag, e.digest) for e in events] == [
        ("#0", "1.4.2", None),
        ("#1", None, D2),
    ]


def test_cloudtrail_sqs_batch_bodies() -> None:
    batch = load("cloudtrail-sqs-batch.json")
    events = [e for r in batch["Records"] for e in parse_cloudtrail_access_body(r["body"])]
    assert [e.action for e in events] == ["pull", "push"]


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda d: d.__setitem__("source", "aws.s3"), r"at source: got 'aws.s3'"),
        (lambda d: d.__setitem__("detail-type", "ECR Image Action"), r"at detail-type"),
        (
            lambda d: d["detail"]["requestParameters"].__setitem__("imageIds", [{}]),
            r"at detail\.requestParameters\.imageIds\[0\]",
        ),
        (
            lambda d: d["detail"]["requestParameters"]["imageIds"][0].update(imageTag="b@d"),
            r"at detail\.requestParameters\.imageIds\[0\]\.imageTag",
        ),
        (lambda d: d["detail"].__setitem__("eventTime", 1.5e30), r"at detail\.eventTime"),
    ],
)
def test_cloudtrail_bad_input_names_its_path(mutate: Any, match: str) -> None:
    doc = load("cloudtrail-batchgetimage-tag.json")
    mutate(doc)
    with pytest.raises(IntakeError, match=match):
        parse_cloudtrail_access(doc)


def test_cloudtrail_put_image_without_response() -> None:
    doc = load("cloudtrail-putimage.json")
    doc["detail"]["responseElements"] = None
    with pytest.raises(IntakeError, match=r"at detail\.responseElements: got null"):
        parse_cloudtrail_access(doc)
    with pytest.raises(IntakeError, match="not valid JSON"):
        parse_cloudtrail_access_body("not json")


# -- GCP audit logs (prepared) ---------------------------------------------------------------


def test_gcp_get_manifest_is_a_pull() -> None:
    (event,) = parse_gcp_audit_access(raw("gcp-auditlog-docker-getmanifest.json"))
    assert (event.source, event.action, event.registry, event.repository) == (
        "gcp.auditlog",
        "pull",
        "europe-west1-docker.pkg.dev",
        "acme-prod/payments/api",
    )
    assert (event.digest, event.tag, event.principal, event.principal_type) == (
        D1,
        None,
        "deployer@acme-prod.iam.gserviceaccount.com",
        "serviceAccount",
    )
    assert (event.source_ip, event.event_id) == ("10.2.3.4", "1rtjfyxd1d41")


def test_gcp_put_manifest_by_tag_and_dropped_methods() -> None:
    (push,) = parse_gcp_audit_access(load("gcp-auditlog-docker-putmanifest.json"))
    assert (push.action, push.tag, push.digest) == ("push", "1.5.0", None)
    head = load("gcp-auditlog-docker-getmanifest.json")
    head["protoPayload"]["methodName"] = "Docker-HeadManifest"
    assert parse_gcp_audit_access(head) == []
    failed = load("gcp-auditlog-docker-getmanifest.json")
    failed["protoPayload"]["status"] = {"code": 5, "message": "not found"}
    assert parse_gcp_audit_access(failed) == []
    internal = load("gcp-auditlog-docker-getmanifest.json")
    internal["protoPayload"]["requestMetadata"]["callerIp"] = "gcp-internal-ip"
    assert parse_gcp_audit_access(internal)[0].source_ip is None


def test_gcp_bad_input_names_its_path() -> None:
    doc = load("gcp-auditlog-docker-getmanifest.json")
    doc["protoPayload"]["request"]["requestUrl"] = "/v2/acme-prod/payments/api/blobs/x"
    with pytest.raises(IntakeError, match=r"at protoPayload\.request\.requestUrl"):
        parse_gcp_audit_access(doc)
    other = load("gcp-auditlog-docker-getmanifest.json")
    other["protoPayload"]["serviceName"] = "storage.googleapis.com"
    with pytest.raises(IntakeError, match=r"at protoPayload\.serviceName"):
        parse_gcp_audit_access(other)


# -- ACR diagnostics (prepared) ----------------------------------------------------------------


def test_acr_records_pull_and_push_only_successful() -> None:
    events = parse_acr_diagnostics_access(raw("acr-diagnostics-repository-events.json"))
    assert [(e.action, e.tag, e.digest, e.principal) for e in events] == [
        ("pull", "1.4.2", D1, "2a1b3c4d-5e6f-4071-8293-a4b5c6d7e8f9"),
        ("push", "1.5.0", D2, "ci-bot"),
    ]
    first = events[0]
    assert (first.registry, first.source_ip, first.event_id, first.source) == (
        "acmeprod.azurecr.io",
        "10.2.3.4",
        "7a6b5c4d-3e2f-4a1b-9c8d-7e6f5a4b3c2d",
        "azure.acr-diagnostics",
    )


def test_acr_pascal_case_fields_and_registry_from_resource_id() -> None:
    doc = load("acr-diagnostics-repository-events.json")
    record = doc["records"][0]
    props = record.pop("properties")
    for key in ("repository", "tag", "digest", "identity", "callerIpAddress"):
        record[key[0].upper() + key[1:]] = props[key]
    doc["records"] = [record]
    (event,) = parse_acr_diagnostics_access(dumps(doc))
    assert (event.registry, event.repository, event.principal) == (
        "acmeprod.azurecr.io",
        "payments/api",
        "2a1b3c4d-5e6f-4071-8293-a4b5c6d7e8f9",
    )


def test_acr_bad_input_names_its_path() -> None:
    doc = load("acr-diagnostics-repository-events.json")
    doc["records"][0]["properties"]["digest"] = "md5:abc"
    with pytest.raises(IntakeError, match=r"at records\[0\]\.properties\.digest"):
        parse_acr_diagnostics_access(dumps(doc))
    del doc["records"][0]["properties"]["repository"]
    with pytest.raises(IntakeError, match=r"at records\[0\]: a pull record names no repository"):
        parse_acr_diagnostics_access(dumps(doc))
    with pytest.raises(IntakeError, match=r"at records: got nothing"):
        parse_acr_diagnostics_access(b"{}")


# -- the distribution parser's fast path agrees with the checked one -------------------------


@pytest.mark.parametrize(
    "mutate",
    [
        lambda e: None,
        lambda e: e.__setitem__("actor", {}),
        lambda e: e.__setitem__("actor", {"name": "  "}),
        lambda e: e["request"].pop("useragent"),
        lambda e: e["request"].__setitem__("addr", "[2001:db8::1]:443"),
        lambda e: e["request"].__setitem__("addr", ""),
        lambda e: e["target"].pop("tag", None),
        lambda e: e["target"].__setitem__("tag", ""),
        lambda e: e["target"].pop("mediaType"),
        lambda e: e.__setitem__("timestamp", 1772439304),
        lambda e: e.__setitem__("action", "push"),
        lambda e: e.__setitem__("action", "mount"),
        lambda e: e["request"].__setitem__("method", "HEAD"),
        lambda e: e["request"].__setitem__("method", "head"),
        lambda e: e["request"].pop("method"),
    ],
)
def test_distribution_fast_path_matches_the_checked_path(
    mutate: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from regwarden.access import _parse_distribution as module

    doc = load("distribution-pull.json")
    for event in doc["events"]:
        mutate(event)
    fast = parse_distribution_access(dumps(doc), content_type=DIST, registry=None)
    monkeypatch.setattr(module, "_fast", lambda ev, registry: module._SLOW)
    slow = parse_distribution_access(dumps(doc), content_type=DIST, registry=None)
    assert fast == slow
    overridden = parse_distribution_access(dumps(doc), content_type=DIST, registry="r.local")
    assert all(e.registry == "r.local" for e in overridden)
