"""decode_pubsub: one Pub/Sub message out of a push body, a binary-mode or a structured
CloudEvent, against the events/gcp samples and the deliveries FakePubSub builds."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from support.fake_pubsub import cloudevent_delivery, push_delivery

from regwarden.errors import IntakeError
from regwarden.intake.pubsub import (
    CLOUDEVENT_TYPE,
    decode_file,
    decode_pubsub,
    is_pubsub_delivery,
    message_of,
    split_recorded,
)

EVENTS = Path(__file__).resolve().parents[2] / "events" / "gcp"
DATA = b'{"action":"INSERT","digest":"us-docker.pkg.dev/p/r/i@sha256:' + b"a" * 64 + b'"}'
WHEN = datetime(2026, 11, 27, 10, 15, 2, 417000, tzinfo=UTC)
RECORDED: dict[str, Any] = {
    "data": DATA,
    "attributes": {"k": "v"},
    "messageId": "8501243592",
    "publishTime": "2026-11-27T10:15:02.417Z",
    "topic": "projects/demo-proj/topics/gcr",
}
SUB = "projects/demo-proj/subscriptions/regwarden-on-push"


def _push_doc(**message: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "attributes": {"k": "v"},
        "data": base64.b64encode(DATA).decode(),
        "messageId": "8501243592",
        "publishTime": "2026-11-27T10:15:02.417Z",
    }
    base.update(message)
    return {"message": {k: v for k, v in base.items() if v is not None}, "subscription": SUB}


def _decode(doc: Any, headers: dict[str, str] | None = None) -> Any:
    return decode_pubsub(json.dumps(doc).encode(), headers or {})


# -- the three deliveries -------------------------------------------------------------------


def test_a_push_body_gives_its_message() -> None:
    body, headers = push_delivery(RECORDED, subscription=SUB, delivery_attempt=2)
    message = decode_pubsub(body, headers)
    assert message.data == DATA
    assert message.attributes == {"k": "v"}
    assert message.message_id == "8501243592"
    assert message.publish_time == WHEN
    assert message.subscription == SUB
    assert message.source is None


def test_a_binary_mode_cloudevent_reads_its_ce_headers() -> None:
    body, headers = cloudevent_delivery(RECORDED, subscription=SUB, binary=True)
    headers = {k.title(): v for k, v in headers.items()}  # header names in any case
    message = decode_pubsub(body, headers)
    assert (message.data, message.message_id, message.publish_time) == (DATA, "8501243592", WHEN)
    assert message.source == "//pubsub.googleapis.com/projects/demo-proj/topics/gcr"
    assert message.subscription == SUB


def test_a_structured_cloudevent_is_told_by_content_type_or_by_shape() -> None:
    body, headers = cloudevent_delivery(RECORDED, subscription=SUB, binary=False)
    assert headers["content-type"] == "application/cloudevents+json"
    for given in (headers, {"content-type": "application/json"}, {}):
        message = decode_pubsub(body, given)
        assert (message.data, message.message_id, message.publish_time) == (
            DATA,
            "8501243592",
            WHEN,
        )
        assert message.source == "//pubsub.googleapis.com/projects/demo-proj/topics/gcr"


def test_a_structured_cloudevent_may_carry_its_data_as_data_base64() -> None:
    body, _ = cloudevent_delivery(RECORDED, subscription=SUB, binary=False)
    doc = json.loads(body)
    inner = doc.pop("data")
    doc["data_base64"] = base64.b64encode(json.dumps(inner).encode()).decode()
    assert _decode(doc).data == DATA


def test_the_cloudevent_id_and_time_stand_in_for_missing_message_fields() -> None:
    body, headers = cloudevent_delivery(RECORDED, subscription=SUB, binary=True)
    doc = json.loads(body)
    for key in ("messageId", "message_id", "publishTime", "publish_time"):
        del doc["message"][key]
    message = decode_pubsub(json.dumps(doc).encode(), headers)
    assert (message.message_id, message.publish_time) == ("8501243592", WHEN)


def test_every_events_gcp_sample_decodes() -> None:
    files = sorted(EVENTS.glob("*.json"))
    assert len(files) >= 15
    for path in files:
        message = decode_file(path.read_bytes())
        assert message.message_id, path.name
        assert message.publish_time is not None, path.name
        assert json.loads(message.data), path.name
        assert is_pubsub_delivery(json.loads(path.read_bytes())), path.name


def test_a_recorded_binary_delivery_is_split_into_body_and_headers() -> None:
    raw = (EVENTS / "gcr-insert-tag.binary.json").read_bytes()
    recorded = split_recorded(raw)
    assert recorded is not None
    body, headers = recorded
    assert headers["ce-type"] == CLOUDEVENT_TYPE
    assert decode_pubsub(body, headers) == decode_file(raw)
    assert split_recorded((EVENTS / "gcr-insert-tag.push.json").read_bytes()) is None
    assert split_recorded(b"not json") is None


# -- tolerated variations -------------------------------------------------------------------


def test_snake_case_twins_are_read_alone_or_beside_camel_case() -> None:
    snake = _push_doc(
        messageId=None,
        publishTime=None,
        message_id="77",
        publish_time="2026-11-27T10:15:02.417000Z",
    )
    message = _decode(snake)
    assert (message.message_id, message.publish_time) == ("77", WHEN)
    both = _push_doc(message_id="8501243592", publish_time="2026-11-27T10:15:02.417000000Z")
    assert _decode(both).publish_time == WHEN  # same instant, other precision


def test_twins_that_disagree_are_refused() -> None:
    with pytest.raises(IntakeError, match=r"message\.message_id: got '9', expected the same"):
        _decode(_push_doc(message_id="9"))
    with pytest.raises(IntakeError, match=r"message\.publish_time: .*expected the same time"):
        _decode(_push_doc(publish_time="2026-11-27T10:15:03Z"))


def test_missing_attributes_and_missing_publish_time_are_tolerated() -> None:
    message = _decode(_push_doc(attributes=None, publishTime=None))
    assert message.attributes == {}
    assert message.publish_time is None


def test_data_in_the_url_safe_alphabet_or_unpadded_is_base64_too() -> None:
    raw = b"\xfb\xff\xfe{}"  # encodes with '+' and '/' in the standard alphabet
    standard = base64.b64encode(raw).decode()
    assert "+" in standard or "/" in standard
    urlsafe = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    assert _decode(_push_doc(data=urlsafe)).data == raw


def test_attributes_only_message_has_empty_data() -> None:
    message = _decode(_push_doc(data=None))
    assert (message.data, message.attributes) == (b"", {"k": "v"})


# -- refused --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        (_push_doc(data="not base64!"), r"at message\.data: got 'not base64!', expected base64"),
        (_push_doc(data="abcde"), r"at message\.data: .*expected base64"),
        (_push_doc(data=17), r"at message\.data: got 17, expected a string"),
        (_push_doc(data=None, attributes=None), r"at message: got neither, expected data or"),
        (_push_doc(messageId=None), r"at message\.messageId: .*expected the message id"),
        (_push_doc(messageId=""), r"at message\.messageId: .*expected the message id"),
        (_push_doc(attributes={"k": 1}), r"at message\.attributes\.k: got 1, expected a string"),
        (_push_doc(publishTime="yesterday"), r"at message\.publishTime: .*RFC 3339"),
        ({"message": "hello"}, r"at message: got 'hello', expected an object"),
        ({"subscription": SUB}, r"expected a Pub/Sub push body"),
        ([1, 2], r"expected a Pub/Sub push body"),
        ({"events": []}, r"expected a Pub/Sub push body"),
    ],
)
def test_malformed_push_bodies_name_the_field(doc: Any, match: str) -> None:
    with pytest.raises(IntakeError, match=match):
        _decode(doc)


def test_a_body_that_is_not_json_is_refused() -> None:
    with pytest.raises(IntakeError, match=r"invalid Pub/Sub delivery: not valid JSON"):
        decode_pubsub(b"\x00{", {})


def test_a_cloudevent_of_another_type_or_version_is_refused() -> None:
    body, headers = cloudevent_delivery(RECORDED, subscription=SUB, binary=False)
    doc = json.loads(body)
    with pytest.raises(IntakeError, match=r"at type: got 'harbor\.artifact\.pushed', expected"):
        _decode(doc | {"type": "harbor.artifact.pushed"}, headers)
    with pytest.raises(IntakeError, match=r"at specversion: got '0\.3', expected CloudEvents"):
        _decode(doc | {"specversion": "0.3"}, headers)
    no_data = {k: v for k, v in doc.items() if k != "data"}
    with pytest.raises(IntakeError, match=r"at data: .*expected MessagePublishedData"):
        _decode(no_data, headers)
    binary, bheaders = cloudevent_delivery(RECORDED, subscription=SUB, binary=True)
    with pytest.raises(IntakeError, match=r"header ce-type: got 'x\.y', expected"):
        decode_pubsub(binary, bheaders | {"ce-type": "x.y"})
    with pytest.raises(IntakeError, match=r"header ce-specversion: got '0\.3', expected '1\.0'"):
        decode_pubsub(binary, bheaders | {"ce-specversion": "0.3"})
    with pytest.raises(IntakeError, match=r"header ce-time: got 'soon', expected an RFC 3339"):
        decode_pubsub(binary, bheaders | {"ce-time": "soon"})
    with pytest.raises(IntakeError, match=r"Pub/Sub delivery body: not valid JSON"):
        decode_pubsub(b"<xml/>", bheaders)


def test_message_of_answers_none_for_anything_not_a_valid_delivery() -> None:
    assert message_of({"events": []}) is None
    assert message_of(_push_doc(data="!!")) is None
    assert message_of([]) is None
    message = message_of(_push_doc())
    assert message is not None and message.data == DATA
