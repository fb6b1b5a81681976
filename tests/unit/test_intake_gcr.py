"""Artifact Registry's `gcr` messages → ImageEvent, against every events/gcp sample."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.fuzz import json_documents

from regwarden.errors import IntakeError
from regwarden.intake import PARSERS, gcr_events, is_occurrence_delivery, parse_gcr
from regwarden.intake.pubsub import PubSubMessage
from regwarden.model import EventKind, ImageEvent
from regwarden.service import detect_source, parse_body

EVENTS = Path(__file__).resolve().parents[2] / "events" / "gcp"
IMAGE = "us-docker.pkg.dev/demo-proj/apps/api"
DIGEST = "sha256:" + hashlib.sha256(b"regwarden demo api 1.4.2").hexdigest()
REFERRER = "sha256:" + hashlib.sha256(b"regwarden demo api 1.4.2 bundle").hexdigest()
WHEN = datetime(2026, 11, 27, 10, 15, 2, tzinfo=UTC)

#: sample stem → (kind, image, delivery id, subject digest)
EXPECTED: dict[str, tuple[EventKind, str, str, str | None]] = {
    "gcr-insert-digest": (EventKind.PUSHED, f"{IMAGE}@{DIGEST}", "11720356119283650", None),
    "gcr-insert-tag": (EventKind.PUSHED, f"{IMAGE}:1.4.2@{DIGEST}", "11720356119283651", None),
    "gcr-delete-tag": (EventKind.DELETED, f"{IMAGE}:1.4.1", "11720356119283702", None),
    # cosign's `sha256-<hex>.sig` tag: the subject is re-evaluated, never judged itself
    "gcr-cosign-sig": (EventKind.SIGNED, f"{IMAGE}@{DIGEST}", "11720356119283733", DIGEST),
    # an OCI 1.1 referrer pushed by digest: PUSHED; the pipeline reads its `subject`
    "gcr-referrer": (EventKind.PUSHED, f"{IMAGE}@{REFERRER}", "11720356119283740", None),
}
NOT_GCR = [
    "occurrence-vulnerability.push.json",
    "occurrence-vulnerability.cloudevent.json",
    "occurrence-discovery.push.json",
    "retention-tick.push.json",
    "retention-work.push.json",
    "alert.push.json",
]


def _gcr_files() -> list[Path]:
    return sorted(EVENTS.glob("gcr-*.json"))


def _message(data: Any, *, when: datetime | None = WHEN, message_id: str = "42") -> PubSubMessage:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return PubSubMessage(data=raw, message_id=message_id, publish_time=when)


def _one(data: Any) -> ImageEvent:
    (event,) = gcr_events(_message(data))
    return event


def test_the_samples_cover_every_message_kind_in_every_delivery() -> None:
    names = {p.name for p in _gcr_files()}
    for stem in EXPECTED:
        assert {f"{stem}.push.json", f"{stem}.cloudevent.json"} <= names
    assert "gcr-insert-tag.binary.json" in names
    assert len(names) == 2 * len(EXPECTED) + 1


@pytest.mark.parametrize("path", _gcr_files(), ids=lambda p: p.name)
def test_each_gcr_sample_is_detected_and_parsed(path: Path) -> None:
    body = path.read_bytes()
    assert detect_source(body) == "gcr"
    (event,) = parse_body("gcr", body, "application/json")
    kind, image, delivery, subject = EXPECTED[path.name.split(".")[0]]
    assert event.kind is kind
    assert str(event.image) == image
    assert event.delivery_id == delivery
    assert event.subject_digest == subject
    assert event.source == "gcr"
    assert event.time.tzinfo is not None and event.time.year == 2026


def test_push_and_cloudevent_deliveries_of_a_message_give_the_same_event() -> None:
    for stem in EXPECTED:
        push = parse_gcr((EVENTS / f"{stem}.push.json").read_bytes(), "application/json")
        structured = (EVENTS / f"{stem}.cloudevent.json").read_bytes()
        assert parse_gcr(structured, "application/cloudevents+json") == push
        assert parse_gcr(structured, None) == push
    binary = parse_gcr((EVENTS / "gcr-insert-tag.binary.json").read_bytes(), None)
    assert binary == parse_gcr((EVENTS / "gcr-insert-tag.push.json").read_bytes(), None)


def test_the_parser_is_registered_for_invoke_and_not_for_the_receiver() -> None:
    parser = PARSERS.get("gcr")
    assert parser.webhook is False
    assert "gcr" in parser.described


@pytest.mark.parametrize("name", NOT_GCR)
def test_other_gcp_messages_are_not_taken_for_gcr(name: str) -> None:
    doc = json.loads((EVENTS / name).read_bytes())
    assert not PARSERS.get("gcr").detect(doc)
    assert not PARSERS.get("harbor").detect(doc)  # a Google CloudEvent is not Harbor's
    assert is_occurrence_delivery(doc) is name.startswith("occurrence-")


def test_a_harbor_cloudevent_is_still_harbors() -> None:
    body = (EVENTS.parent / "harbor" / "harbor-cloudevents-push.json").read_bytes()
    assert detect_source(body) == "harbor"


# -- the cases the samples do not show ------------------------------------------------------


@pytest.mark.parametrize("suffix", [".sig", ".att", ".sbom", ""])
def test_signature_attestation_and_referrers_tags_re_evaluate_the_subject(suffix: str) -> None:
    tag = DIGEST.replace(":", "-") + suffix
    other = "sha256:" + "e" * 64
    event = _one({"action": "INSERT", "digest": f"{IMAGE}@{other}", "tag": f"{IMAGE}:{tag}"})
    assert (event.kind, event.subject_digest) == (EventKind.SIGNED, DIGEST)
    assert (event.image.digest, event.image.tag) == (DIGEST, None)


def test_a_signature_tag_deleted_is_a_plain_delete() -> None:
    tag = DIGEST.replace(":", "-") + ".sig"
    event = _one({"action": "DELETE", "tag": f"{IMAGE}:{tag}"})
    assert (event.kind, event.image.tag, event.subject_digest) == (EventKind.DELETED, tag, None)


def test_a_tag_only_insert_is_pushed_by_tag_for_the_pipeline_to_resolve() -> None:
    event = _one({"action": "INSERT", "tag": f"{IMAGE}:2.0"})
    assert (event.kind, event.image.tag, event.image.digest) == (EventKind.PUSHED, "2.0", None)
    assert event.image.repository == "demo-proj/apps/api"


def test_a_delete_by_digest_and_an_insert_by_digest_only() -> None:
    gone = _one({"action": "DELETE", "digest": f"{IMAGE}@{DIGEST}"})
    assert (gone.kind, gone.image.digest, gone.image.tag) == (EventKind.DELETED, DIGEST, None)


def test_gcr_io_and_nested_image_paths_keep_their_whole_repository() -> None:
    event = _one({"action": "INSERT", "digest": f"gcr.io/demo-proj/team/sub/app@{DIGEST}"})
    assert (event.image.registry, event.image.repository) == ("gcr.io", "demo-proj/team/sub/app")
    nested = _one({"action": "INSERT", "digest": f"europe-west1-docker.pkg.dev/p/r/a/b@{DIGEST}"})
    assert nested.image.registry == "europe-west1-docker.pkg.dev"
    assert nested.image.repository == "p/r/a/b"


def test_the_message_id_and_publish_time_become_delivery_id_and_time() -> None:
    (event,) = gcr_events(
        _message({"action": "INSERT", "digest": f"{IMAGE}@{DIGEST}"}, message_id="99")
    )
    assert (event.delivery_id, event.time) == ("99", WHEN)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (
            {"action": "UPDATE", "digest": f"{IMAGE}@{DIGEST}"},
            r"at action: got 'UPDATE', expected one of INSERT, DELETE",
        ),
        ({"digest": f"{IMAGE}@{DIGEST}"}, r"at action: got nothing"),
        ({"action": "INSERT"}, r"at digest: .*expected a digest or a tag"),
        (
            {"action": "INSERT", "digest": f"demo-proj/apps/api@{DIGEST}"},
            r"at digest: .*with its registry host",
        ),
        (
            {"action": "INSERT", "digest": f"{IMAGE}:1.0"},
            r"at digest: .*expected a reference by digest",
        ),
        ({"action": "INSERT", "digest": f"{IMAGE}:1.0@{DIGEST}"}, r"at digest: .*by digest"),
        (
            {"action": "INSERT", "digest": f"{IMAGE}@sha256:6ec128e26cd5..."},
            r"at digest: .*full image reference",
        ),
        (
            {"action": "DELETE", "tag": f"{IMAGE}@{DIGEST}"},
            r"at tag: .*expected a reference by tag",
        ),
        (
            {"action": "INSERT", "tag": "https://us-docker.pkg.dev/p/r/i:1"},
            r"at tag: .*no URL scheme",
        ),
        (
            {
                "action": "INSERT",
                "digest": f"{IMAGE}@{DIGEST}",
                "tag": "us-docker.pkg.dev/p/r/other:1",
            },
            r"at tag: .*expected a tag of the same image as digest",
        ),
        ({"action": "INSERT", "digest": 5}, r"at digest: got 5, expected a string"),
        ([1], r"at the top level: got a list, expected an object"),
        (b"\xff", r"invalid gcr message: not valid JSON"),
    ],
)
def test_malformed_messages_name_the_field(data: Any, match: str) -> None:
    with pytest.raises(IntakeError, match=match):
        gcr_events(_message(data))


def test_a_message_without_a_publish_time_is_refused() -> None:
    with pytest.raises(IntakeError, match=r"no publish time"):
        gcr_events(_message({"action": "INSERT", "digest": f"{IMAGE}@{DIGEST}"}, when=None))


def test_a_delivery_that_is_not_pubsub_is_refused_by_the_parser() -> None:
    with pytest.raises(IntakeError, match=r"expected a Pub/Sub push body"):
        parse_gcr(b'{"events": []}', "application/json")
    bad = json.loads((EVENTS / "gcr-insert-digest.push.json").read_bytes())
    bad["message"]["data"] = base64.b64encode(b'{"action": "INSERT"}').decode()
    with pytest.raises(IntakeError, match=r"invalid gcr message at digest"):
        parse_gcr(json.dumps(bad).encode(), None)


# -- whatever arrives: events or IntakeError, nothing else -------------------------------------

_KEYS = [
    "message", "subscription", "data", "attributes", "messageId", "message_id", "publishTime",
    "publish_time", "specversion", "type", "id", "time", "source", "data_base64", "headers",
    "body", "action", "digest", "tag",
]  # fmt: skip
_PLAUSIBLE = [
    "INSERT", "DELETE", "1.0", "google.cloud.pubsub.topic.v1.messagePublished",
    "2026-11-27T10:15:02.417Z", f"{IMAGE}@{DIGEST}", f"{IMAGE}:1.0", "e30=", "eyJ9", "",
    f"{IMAGE}:{DIGEST.replace(':', '-')}.sig", "gcr.io/p/i@" + DIGEST,
]  # fmt: skip
_FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_FUZZ
@given(doc=json_documents(_KEYS, _PLAUSIBLE), structured=st.booleans())
def test_any_delivery_is_events_or_an_intake_error(doc: Any, structured: bool) -> None:
    body = json.dumps(doc).encode()
    content_type = "application/cloudevents+json" if structured else "application/json"
    try:
        events = parse_gcr(body, content_type)
    except IntakeError:
        return
    assert all(isinstance(e, ImageEvent) for e in events)


@_FUZZ
@given(data=json_documents(_KEYS, _PLAUSIBLE))
def test_any_message_data_is_events_or_an_intake_error(data: Any) -> None:
    doc = json.loads((EVENTS / "gcr-insert-tag.push.json").read_bytes())
    doc["message"]["data"] = base64.b64encode(json.dumps(data).encode()).decode()
    try:
        events = parse_gcr(json.dumps(doc).encode(), None)
    except IntakeError:
        return
    assert len(events) == 1
