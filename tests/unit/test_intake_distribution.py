"""Distribution notifications → ImageEvent, against the sample envelopes in events/oci/."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from regwarden.errors import IntakeError
from regwarden.intake import parse_distribution, parse_distribution_batch
from regwarden.model import EventKind

EVENTS = Path(__file__).resolve().parents[2] / "events" / "oci"
V1 = "application/vnd.docker.distribution.events.v1+json"
V2 = "application/vnd.docker.distribution.events.v2+json"
MANIFEST_FILES = [
    "distribution-push.json",
    "distribution-push-index.json",
    "distribution-pull.json",
    "distribution-delete.json",
    "distribution-signature-push.json",
]


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return data


def body(envelope: dict[str, Any]) -> bytes:
    return json.dumps(envelope).encode()


def one_event(name: str) -> dict[str, Any]:
    events: list[dict[str, Any]] = load(name)["events"]
    assert len(events) == 1
    return events[0]


def expected_time(raw: str) -> datetime:
    return datetime.fromisoformat(raw).astimezone(UTC)


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("distribution-push.json", EventKind.PUSHED),
        ("distribution-push-index.json", EventKind.PUSHED),
        ("distribution-pull.json", EventKind.PULLED),
    ],
)
def test_manifest_events_map_every_field(name: str, kind: EventKind) -> None:
    raw = one_event(name)
    [event] = parse_distribution((EVENTS / name).read_bytes(), content_type=V1)
    assert event.kind is kind
    assert event.source == "distribution"
    assert event.delivery_id == raw["id"]
    assert event.time == expected_time(raw["timestamp"])
    assert event.image.registry == raw["request"]["host"]
    assert event.image.repository == raw["target"]["repository"]
    assert event.image.digest == raw["target"]["digest"]
    assert event.image.tag == raw["target"]["tag"]
    assert event.media_type == raw["target"]["mediaType"]
    assert event.user_agent == raw["request"]["useragent"]
    assert event.actor == (raw["actor"].get("name") or None)
    assert event.subject_digest is None


def test_pull_with_empty_actor_has_no_actor() -> None:
    raw = one_event("distribution-pull.json")
    assert raw["actor"] == {}
    [event] = parse_distribution(body(load("distribution-pull.json")), content_type=V2)
    assert event.actor is None


def test_delete_carries_only_digest_and_repository() -> None:
    raw = one_event("distribution-delete.json")
    assert set(raw["target"]) == {"digest", "repository"}
    [event] = parse_distribution(body(load("distribution-delete.json")), content_type=V1)
    assert event.kind is EventKind.DELETED
    assert event.image.digest == raw["target"]["digest"]
    assert event.image.tag is None
    assert event.media_type is None


def test_signature_push_becomes_signed_for_the_subject() -> None:
    raw = one_event("distribution-signature-push.json")
    tag = raw["target"]["tag"]
    subject = "sha256:" + tag.removeprefix("sha256-").removesuffix(".sig")
    [event] = parse_distribution(body(load("distribution-signature-push.json")), content_type=V1)
    assert event.kind is EventKind.SIGNED
    assert event.subject_digest == subject
    assert event.image.digest == subject
    assert event.image.tag is None
    assert event.image.repository == raw["target"]["repository"]
    assert event.delivery_id == raw["id"]


@pytest.mark.parametrize("suffix", [".att", ".sbom", ""])
def test_attestation_sbom_and_referrers_tag_pushes_are_signed(suffix: str) -> None:
    envelope = load("distribution-signature-push.json")
    target = envelope["events"][0]["target"]
    target["tag"] = target["tag"].removesuffix(".sig") + suffix
    [event] = parse_distribution(body(envelope), content_type=V1)
    assert event.kind is EventKind.SIGNED
    assert event.subject_digest == "sha256:" + target["tag"][7:71]


def test_pull_of_a_signature_tag_stays_a_pull() -> None:
    envelope = load("distribution-signature-push.json")
    envelope["events"][0]["action"] = "pull"
    [event] = parse_distribution(body(envelope), content_type=V1)
    assert event.kind is EventKind.PULLED
    assert event.subject_digest is None
    assert event.image.tag == envelope["events"][0]["target"]["tag"]


def test_blob_pushes_pulls_and_mounts_are_dropped() -> None:
    envelope = load("distribution-blob-push.json")
    actions = {e["action"] for e in envelope["events"]}
    assert {"push", "pull", "mount"} <= actions
    assert parse_distribution(body(envelope), content_type=V1) == []


def test_interleaved_envelope_keeps_only_manifest_events_in_order() -> None:
    blobs = load("distribution-blob-push.json")["events"]
    manifests = [one_event(n) for n in MANIFEST_FILES]
    mixed: list[dict[str, Any]] = []
    for i, manifest in enumerate(manifests):
        mixed.append(blobs[i % len(blobs)])
        mixed.append(manifest)
    events = parse_distribution(body({"events": mixed}), content_type=V1)
    assert [e.delivery_id for e in events] == [m["id"] for m in manifests]


def test_registry_override_replaces_request_host() -> None:
    [event] = parse_distribution(
        (EVENTS / "distribution-push.json").read_bytes(),
        content_type=V1,
        registry="127.0.0.1:5000",
    )
    assert event.image.registry == "127.0.0.1:5000"
    assert event.image.is_loopback


def test_internal_host_without_a_dot_is_kept_as_the_registry() -> None:
    envelope = load("distribution-push.json")
    envelope["events"][0]["request"]["host"] = "registry"
    [event] = parse_distribution(body(envelope), content_type=V1)
    assert event.image.registry == "registry"
    assert event.image.repository == envelope["events"][0]["target"]["repository"]


def test_docker_hub_host_is_normalised_like_image_refs() -> None:
    envelope = load("distribution-push.json")
    envelope["events"][0]["request"]["host"] = "index.docker.io"
    envelope["events"][0]["target"]["repository"] = "alpine"
    [event] = parse_distribution(body(envelope), content_type=V1)
    assert (event.image.registry, event.image.repository) == ("docker.io", "library/alpine")


@pytest.mark.parametrize(
    "content_type",
    [V1, V2, "application/json", f"{V1}; charset=utf-8", "Application/JSON", None],
)
def test_accepted_content_types(content_type: str | None) -> None:
    events = parse_distribution(
        (EVENTS / "distribution-push.json").read_bytes(), content_type=content_type
    )
    assert len(events) == 1


def test_other_content_type_is_refused_with_the_valid_list() -> None:
    with pytest.raises(IntakeError, match=r"got Content-Type 'text/plain'.*events\.v1\+json"):
        parse_distribution(b'{"events": []}', content_type="text/plain")


def test_tag_delete_is_deleted_with_the_tag_and_repository_delete_is_dropped() -> None:
    envelope = load("distribution-delete.json")
    base = envelope["events"][0]
    tag_delete = copy.deepcopy(base)
    tag_delete["id"] = base["id"] + "-tag"
    tag_delete["target"] = {"repository": base["target"]["repository"], "tag": "1.4.2"}
    repo_delete = copy.deepcopy(base)
    repo_delete["id"] = base["id"] + "-repo"
    repo_delete["target"] = {"repository": base["target"]["repository"]}
    events = parse_distribution(body({"events": [tag_delete, repo_delete]}), content_type=V1)
    assert len(events) == 1
    assert events[0].kind is EventKind.DELETED
    assert (events[0].image.tag, events[0].image.digest) == ("1.4.2", None)


def test_blob_delete_that_says_so_is_dropped() -> None:
    blob = load("distribution-blob-push.json")["events"][0]
    blob["action"] = "delete"
    assert parse_distribution(body({"events": [blob]}), content_type=V1) == []


def test_empty_envelope_gives_no_events() -> None:
    assert parse_distribution(b"{}", content_type=V1) == []
    assert parse_distribution(b'{"events": []}', content_type=V1) == []


def test_timestamp_with_offset_is_normalised_to_utc() -> None:
    raw = one_event("distribution-pull.json")
    assert not raw["timestamp"].endswith("Z")
    [event] = parse_distribution(body(load("distribution-pull.json")), content_type=V1)
    assert event.time.utcoffset() is not None
    assert event.time.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    assert event.time == expected_time(raw["timestamp"])


def mutate(path: list[str | int], value: Any) -> bytes:
    envelope = load("distribution-push.json")
    node: Any = envelope
    for step in path[:-1]:
        node = node[step]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return body(envelope)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (
            ["events", 0, "target", "digest"],
            "sha256:abc",
            r"events\[0\]\.target\.digest: got 'sha256:abc', expected a digest",
        ),
        (["events", 0, "target", "digest"], KeyError, r"events\[0\]\.target\.digest: got nothing"),
        (
            ["events", 0, "id"],
            KeyError,
            r"events\[0\]\.id: got nothing \(the key is missing\), expected a string",
        ),
        (["events", 0, "id"], 7, r"events\[0\]\.id: got 7, expected a string"),
        (
            ["events", 0, "action"],
            "replicate",
            r"events\[0\]\.action: got 'replicate', expected one of push, pull, mount, delete",
        ),
        (
            ["events", 0, "timestamp"],
            "yesterday",
            r"events\[0\]\.timestamp: got 'yesterday', expected an RFC 3339",
        ),
        (
            ["events", 0, "target", "repository"],
            "Payments/API",
            r"events\[0\]\.target\.repository: got 'Payments/API', expected a repository",
        ),
        (
            ["events", 0, "target", "tag"],
            "bad tag!",
            r"events\[0\]\.target\.tag: got 'bad tag!', expected a tag",
        ),
        (["events", 0, "target"], [], r"events\[0\]\.target: got a list, expected an object"),
        (
            ["events", 0, "request", "host"],
            KeyError,
            r"no registry host in the event \(request\.host\); pass registry=",
        ),
        (
            ["events", 0, "request", "host"],
            "bad host!",
            r"events\[0\]\.request\.host: got 'bad host!', expected a registry host",
        ),
        (["events"], {"a": 1}, r"at events: got an object, expected a list"),
    ],
)
def test_malformed_events_name_the_field(path: list[str | int], value: Any, message: str) -> None:
    with pytest.raises(IntakeError, match=message):
        parse_distribution(mutate(path, value), content_type=V1)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", r"not valid JSON"),
        (b"\xff\xfe\x00", r"not valid JSON"),
        (b"[1, 2]", r"at the top level: got a list, expected an object"),
        (b'{"events": [], "type": "PUSH_ARTIFACT"}', r"got an object with keys 'type'"),
        (b'{"events": [{"id": NaN}]}', r"not valid JSON"),
        (b"[" * 100_000, r"nested deeper than 64 levels \(the limit\)"),
    ],
)
def test_bodies_that_are_not_envelopes(raw: bytes, message: str) -> None:
    with pytest.raises(IntakeError, match=message):
        parse_distribution(raw, content_type=None)


def test_invalid_registry_override_is_refused() -> None:
    with pytest.raises(IntakeError, match=r"invalid registry argument: got 'https://x'"):
        parse_distribution(b'{"events": []}', content_type=V1, registry="https://x")


def test_batch_keeps_good_events_and_reports_each_bad_one() -> None:
    good = one_event("distribution-push.json")
    bad = copy.deepcopy(good)
    bad["target"]["digest"] = "md5:nope"
    worse = copy.deepcopy(good)
    worse["action"] = 3
    envelope = body({"events": [bad, good, worse]})
    batch = parse_distribution_batch(envelope, content_type=V1)
    assert [e.delivery_id for e in batch.events] == [good["id"]]
    assert len(batch.errors) == 2
    assert "events[0].target.digest" in str(batch.errors[0])
    assert "events[2].action" in str(batch.errors[1])
    with pytest.raises(IntakeError, match=r"events\[0\].*and 1 more bad events"):
        parse_distribution(envelope, content_type=V1)
