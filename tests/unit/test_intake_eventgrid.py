"""ACR's Event Grid events (both schemas, CloudEvents batches and binary mode) and its own
webhook → ImageEvent, against every events/azure sample; the subscription handshake."""

from __future__ import annotations

import contextlib
import copy
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
from regwarden.intake import PARSERS
from regwarden.intake._eventgrid import (
    eventgrid_validation,
    parse_eventgrid,
    parse_eventgrid_batch,
    webhook_allowed_origin,
)
from regwarden.model import EventKind, ImageEvent
from regwarden.service import detect_source, parse_body

EVENTS = Path(__file__).resolve().parents[2] / "events" / "azure"
IMAGE = "demo.azurecr.io/apps/api"
DIGEST = "sha256:" + hashlib.sha256(b"regwarden demo api 1.4.2").hexdigest()
REFERRER = "sha256:" + hashlib.sha256(b"regwarden demo api 1.4.2 bundle").hexdigest()
WHEN = datetime(2026, 11, 27, 10, 15, 2, 654961, tzinfo=UTC)
PUSHED = (EventKind.PUSHED, f"{IMAGE}:1.4.2@{DIGEST}", None)
DELETED = (EventKind.DELETED, f"{IMAGE}@{DIGEST}", None)
SIGNED = (EventKind.SIGNED, f"{IMAGE}@{DIGEST}", DIGEST)
REFERRED = (EventKind.PUSHED, f"{IMAGE}@{REFERRER}", None)

#: sample → (kind, image, subject digest, delivery id) of its one event; None: nothing
EXPECTED: dict[str, tuple[tuple[EventKind, str, str | None], str] | None] = {
    "eventgrid-image-pushed.json": (PUSHED, "831e1650-001e-001b-66ab-eeb76e069631"),
    "eventgrid-image-pushed-unprefixed.json": (PUSHED, "831e1650-001e-001b-66ab-eeb76e069635"),
    "eventgrid-image-deleted.json": (DELETED, "831e1650-001e-001b-66ab-eeb76e069632"),
    # cosign's `sha256-<hex>.sig` tag: the subject is re-evaluated, never judged itself
    "eventgrid-cosign-sig.json": (SIGNED, "831e1650-001e-001b-66ab-eeb76e069633"),
    # an OCI 1.1 referrer pushed by digest: PUSHED; the pipeline reads its `subject`
    "eventgrid-referrer.json": (REFERRED, "831e1650-001e-001b-66ab-eeb76e069634"),
    "eventgrid-chart-pushed.json": None,
    "eventgrid-validation.json": None,
    "cloudevent-image-pushed.json": (PUSHED, "931e1650-001e-001b-66ab-eeb76e069631"),
    "cloudevent-image-deleted.json": (DELETED, "931e1650-001e-001b-66ab-eeb76e069632"),
    "cloudevent-chart-deleted.json": None,
    "cloudevents-batch-cosign-sig.json": (SIGNED, "931e1650-001e-001b-66ab-eeb76e069633"),
    "cloudevents-batch-referrer.json": (REFERRED, "931e1650-001e-001b-66ab-eeb76e069634"),
    "cloudevent-image-pushed.binary.json": (PUSHED, "a31e1650-001e-001b-66ab-eeb76e069631"),
    # the registry's quarantine policy held the push: it is the image to judge
    "webhook-quarantine.json": (PUSHED, "b2e1a9f0-2b63-4f8e-9a1c-6f0d3c1e7a10"),
}


def _doc(name: str) -> Any:
    return json.loads((EVENTS / name).read_bytes())


def _body(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def test_every_sample_is_listed() -> None:
    assert sorted(p.name for p in EVENTS.glob("*.json")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_sample_is_detected_and_parsed(name: str) -> None:
    body = (EVENTS / name).read_bytes()
    assert detect_source(body) == "eventgrid"
    events = parse_body("eventgrid", body, "application/json")
    expected = EXPECTED[name]
    if expected is None:
        assert events == []
        return
    (kind, image, subject), delivery_id = expected
    (event,) = events
    assert (event.kind, str(event.image), event.subject_digest) == (kind, image, subject)
    assert (event.source, event.delivery_id) == ("eventgrid", delivery_id)
    if not name.startswith("webhook-"):
        assert event.time == WHEN  # the envelope's time, not data.timestamp


def test_the_parser_is_registered_for_the_receiver_with_its_handshake() -> None:
    parser = PARSERS.get("eventgrid")
    assert parser.webhook is True
    assert "Event Grid" in parser.described
    assert parser.handshake is not None
    validation = (EVENTS / "eventgrid-validation.json").read_bytes()
    reply = parser.handshake("POST", validation, {})
    assert reply is not None
    assert reply.body == {"validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"}
    assert (
        parser.handshake("POST", (EVENTS / "eventgrid-image-pushed.json").read_bytes(), {}) is None
    )
    reply = parser.handshake("OPTIONS", b"", {"WebHook-Request-Origin": "eventgrid.azure.net"})
    assert reply is not None
    assert reply.headers["WebHook-Allowed-Origin"] == "eventgrid.azure.net"
    assert parser.handshake("OPTIONS", b"", {}) is None
    # the other sources need none
    assert all(PARSERS.get(n).handshake is None for n in PARSERS if n != "eventgrid")


@pytest.mark.parametrize("name", ["cloudevent-image-pushed.json", "cloudevent-chart-deleted.json"])
def test_an_azure_cloudevent_is_not_taken_for_harbors(name: str) -> None:
    assert not PARSERS.get("harbor").detect(_doc(name))
    assert not PARSERS.get("gcr").detect(_doc(name))


def test_other_sources_samples_are_not_taken_for_event_grid() -> None:
    others = [
        p for d in ("gcp", "harbor", "oci", "aws") for p in (EVENTS.parent / d).glob("*.json")
    ]
    assert others
    for path in others:
        assert not PARSERS.get("eventgrid").detect(json.loads(path.read_bytes())), path.name


def test_the_webhook_details_are_kept() -> None:
    (event,) = parse_body("eventgrid", (EVENTS / "eventgrid-image-pushed.json").read_bytes(), None)
    assert event.media_type == "application/vnd.oci.image.manifest.v1+json"
    assert (event.user_agent, event.actor) == ("skopeo/1.13.3", "regwarden-ci")


def test_every_delivery_shape_of_a_push_gives_the_same_event() -> None:
    grid = _doc("eventgrid-image-pushed.json")[0]
    cloud = _doc("cloudevent-image-pushed.json")
    shapes = [
        ([grid], "application/json"),
        (grid, "application/json"),  # one event alone, as a function trigger hands it
        (cloud, "application/cloudevents+json"),
        ([cloud], "application/cloudevents-batch+json"),
    ]
    seen = {
        (e.kind, str(e.image), e.time)
        for doc, ct in shapes
        for e in parse_body("eventgrid", _body(doc), ct)
    }
    assert seen == {(EventKind.PUSHED, f"{IMAGE}:1.4.2@{DIGEST}", WHEN)}


def test_binary_mode_reads_the_headers_in_any_case() -> None:
    recorded = _doc("cloudevent-image-pushed.binary.json")
    headers = {k.upper(): v for k, v in recorded["headers"].items()}
    batch = parse_eventgrid_batch(_body(recorded["body"]), headers)
    (event,) = batch.events
    assert (event.delivery_id, event.time) == ("a31e1650-001e-001b-66ab-eeb76e069631", WHEN)
    headers["CE-TYPE"] = "Microsoft.Storage.BlobCreated"
    (error,) = parse_eventgrid_batch(_body(recorded["body"]), headers).errors
    assert "binary mode: ce-* headers) at type: got 'Microsoft.Storage.BlobCreated'" in str(error)


@pytest.mark.parametrize("suffix", [".sig", ".att", ".sbom", ""])
def test_signature_attestation_and_referrers_tags_re_evaluate_the_subject(suffix: str) -> None:
    doc = _doc("eventgrid-image-pushed.json")
    doc[0]["data"]["target"]["tag"] = DIGEST.replace(":", "-") + suffix
    (event,) = parse_body("eventgrid", _body(doc), None)
    assert (event.kind, event.subject_digest, event.image.tag) == (EventKind.SIGNED, DIGEST, None)


def test_a_delete_never_names_a_tag_and_a_signature_delete_is_a_plain_delete() -> None:
    doc = _doc("eventgrid-image-deleted.json")
    doc[0]["data"]["target"]["tag"] = DIGEST.replace(":", "-") + ".sig"
    (event,) = parse_body("eventgrid", _body(doc), None)
    assert (event.kind, event.image.tag, event.subject_digest) == (EventKind.DELETED, None, None)


def test_a_batch_keeps_its_good_events_and_skips_charts() -> None:
    good = _doc("eventgrid-image-pushed.json")[0]
    chart = _doc("eventgrid-chart-pushed.json")[0]
    bad = copy.deepcopy(good) | {"id": "bad"}
    del bad["data"]["target"]["digest"]
    batch = parse_eventgrid(_body([good, chart, bad]), "application/json")
    assert [e.delivery_id for e in batch.events] == [good["id"]]
    assert batch.skipped == 1
    (error,) = batch.errors
    assert "[2].data.target.digest" in str(error)
    # the registered parser: the good events, the bad one logged
    assert len(parse_body("eventgrid", _body([good, chart, bad]), None)) == 1
    with pytest.raises(IntakeError, match=r"no valid event.*1 problem"):
        parse_body("eventgrid", _body([bad]), None)


def test_an_event_without_its_envelope_time_takes_the_datas() -> None:
    cloud = _doc("cloudevent-image-pushed.json")
    del cloud["time"]
    (event,) = parse_body("eventgrid", _body(cloud), None)
    assert event.time == datetime(2026, 11, 27, 10, 15, 2, 276585, tzinfo=UTC)


def test_the_registry_host_comes_from_the_request_only() -> None:
    doc = _doc("eventgrid-image-pushed.json")
    doc[0]["data"]["request"]["host"] = "Demo.AzureCR.cn"
    (event,) = parse_body("eventgrid", _body(doc), None)
    assert event.image.registry == "demo.azurecr.cn"
    del doc[0]["data"]["request"]
    # the topic names the registry but not its cloud (.io, .cn, .us): no guess from it
    with pytest.raises(IntakeError, match=r"at \[0\]\.data\.request: got nothing.*host names"):
        parse_body("eventgrid", _body(doc), None)


def _grid(**changes: Any) -> bytes:
    doc = _doc("eventgrid-image-pushed.json")
    event = doc[0]
    for path, value in changes.items():
        *parents, last = path.split("__")
        node = event
        for key in parents:
            node = node[key]
        if value is ...:
            del node[last]
        else:
            node[last] = value
    return _body(doc)


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (_grid(eventType="Microsoft.Storage.BlobCreated"), r"\[0\]\.eventType.*ImagePushed"),
        (_grid(eventType="Contoso.ImagePushed"), r"\[0\]\.eventType"),
        (_grid(eventType=7), r"\[0\]\.eventType: got 7"),
        (_grid(id=...), r"\[0\]\.id: got nothing"),
        (_grid(eventTime="yesterday"), r"\[0\]\.eventTime"),
        (_grid(data=...), r"\[0\]\.data: got nothing"),
        (_grid(data__action="delete"), r"\[0\]\.data\.action.*'push'"),
        (_grid(data__target__repository="Apps/API"), r"\[0\]\.data\.target\.repository"),
        (_grid(data__target__digest="sha256:abc"), r"\[0\]\.data\.target\.digest"),
        (_grid(data__target__tag="bad tag"), r"\[0\]\.data\.target\.tag"),
        (_grid(data__request__host="not a host"), r"\[0\]\.data\.request\.host"),
        (b"[]", r"at the top level: got a list, expected at least one event"),
        (b"[1]", r"at \[0\]: got 1, expected an object"),
        (b'{"foo": 1}', r"an array of Event Grid events"),
        (b'{"specversion": "0.3", "type": "ImagePushed"}', r"specversion.*'1.0'"),
        (b'{"action": "pull", "target": {}, "request": {}}', r"at action: got 'pull'"),
        (b"not json", r"not valid JSON"),
    ],
)
def test_malformed_deliveries_name_the_field(body: bytes, match: str) -> None:
    with pytest.raises(IntakeError, match=match):
        parse_body("eventgrid", body, None)


def test_a_content_type_that_is_no_event_grid_ones_is_refused() -> None:
    body = (EVENTS / "eventgrid-image-pushed.json").read_bytes()
    with pytest.raises(IntakeError, match=r"Content-Type 'text/xml'"):
        parse_eventgrid(body, "text/xml")
    assert parse_eventgrid(body, "application/json; charset=utf-8").events


# -- the handshake ----------------------------------------------------------------------------


def test_the_validation_event_is_answered_with_its_code() -> None:
    body = (EVENTS / "eventgrid-validation.json").read_bytes()
    answer = eventgrid_validation(body, {"Content-Type": "application/json"})
    assert answer == {"validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"}
    alone = _body(_doc("eventgrid-validation.json")[0])
    assert eventgrid_validation(alone, {}) == answer


@pytest.mark.parametrize(
    "name",
    ["eventgrid-image-pushed.json", "cloudevent-image-pushed.json", "webhook-quarantine.json"],
)
def test_other_deliveries_need_no_validation(name: str) -> None:
    assert eventgrid_validation((EVENTS / name).read_bytes(), {}) is None
    assert eventgrid_validation(b"not json", {}) is None


def test_a_validation_event_without_its_code_is_refused() -> None:
    doc = _doc("eventgrid-validation.json")
    del doc[0]["data"]["validationCode"]
    with pytest.raises(IntakeError, match=r"\[0\]\.data\.validationCode: got nothing"):
        eventgrid_validation(_body(doc), {})


def test_the_cloudevents_abuse_protection_request_is_allowed() -> None:
    assert webhook_allowed_origin({"WebHook-Request-Origin": "eventgrid.azure.net"}) == {
        "WebHook-Allowed-Origin": "eventgrid.azure.net",
        "WebHook-Allowed-Rate": "*",
    }
    assert webhook_allowed_origin({"content-type": "application/json"}) is None
    with pytest.raises(IntakeError, match="WebHook-Request-Origin"):
        webhook_allowed_origin({"webhook-request-origin": "evil\r\nSet-Cookie: x"})


# -- whatever arrives: events or IntakeError, nothing else -------------------------------------

_KEYS = [
    "id", "topic", "subject", "eventType", "eventTime", "data", "dataVersion", "specversion",
    "type", "time", "source", "data_base64", "headers", "body", "action", "target", "request",
    "mediaType", "digest", "repository", "tag", "host", "timestamp", "actor", "name",
    "validationCode", "ce-specversion", "ce-type", "ce-id",
]  # fmt: skip
_PLAUSIBLE = [
    "Microsoft.ContainerRegistry.ImagePushed", "ImageDeleted",
    "Microsoft.ContainerRegistry.ChartPushed",
    "Microsoft.EventGrid.SubscriptionValidationEvent", "1.0", "push", "delete", "quarantine",
    "chart_push", "2026-11-27T10:15:02.6549614Z", DIGEST, "apps/api", "1.4.2", "demo.azurecr.io",
    DIGEST.replace(":", "-") + ".sig", "",
]  # fmt: skip
_FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_FUZZ
@given(
    doc=json_documents(_KEYS, _PLAUSIBLE),
    content_type=st.sampled_from(
        [
            None,
            *(
                "application/json",
                "application/cloudevents+json",
                "application/cloudevents-batch+json",
            ),
        ]
    ),
)
def test_any_delivery_is_events_or_an_intake_error(doc: Any, content_type: str | None) -> None:
    body = _body(doc)
    try:
        batch = parse_eventgrid(body, content_type)
    except IntakeError:
        pass
    else:
        assert all(isinstance(e, ImageEvent) for e in batch.events)
        assert all(isinstance(e, IntakeError) for e in batch.errors)
    with contextlib.suppress(IntakeError):
        eventgrid_validation(body, {})
    PARSERS.get("eventgrid").detect(doc)  # never raises


@_FUZZ
@given(data=json_documents(_KEYS, _PLAUSIBLE), schema=st.sampled_from(["grid", "cloud", "webhook"]))
def test_any_event_data_is_one_event_or_an_intake_error(data: Any, schema: str) -> None:
    if schema == "webhook":
        body = _body(data)
    else:
        name = "eventgrid-image-pushed.json" if schema == "grid" else "cloudevent-image-pushed.json"
        doc = _doc(name)
        (doc[0] if schema == "grid" else doc)["data"] = data
        body = _body(doc)
    try:
        batch = parse_eventgrid(body, None)
    except IntakeError:
        return
    # a webhook-shaped body that is a list is a batch of events instead
    expected = len(data) if schema == "webhook" and isinstance(data, list) else 1
    assert len(batch.events) + len(batch.errors) + batch.skipped == expected
