"""Alerts render for each channel and arrive, signed, at a real loopback HTTP endpoint."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import ClassVar

import pytest
from support.loopback import LoopbackServer

from regwarden.errors import RegistryError
from regwarden.model import Finding, Outcome, Severity
from regwarden.notify import (
    Alert,
    RetryPolicy,
    SlackChannel,
    StreamChannel,
    TeamsChannel,
    WebhookChannel,
    render_slack,
    render_teams,
    render_text,
    verify_signature,
)
from regwarden.reference import ImageRef

DIGEST = "sha256:" + "d" * 64


def _alert(**kw: object) -> Alert:
    base: dict[str, object] = dict(
        time=datetime(2026, 11, 27, 12, tzinfo=UTC),
        image=ImageRef.parse(f"127.0.0.1:5000/payments/api@{DIGEST}"),
        tags=("1.4.2",),
        team="payments",
        outcome=Outcome.FAILED,
        severity=Severity.CRITICAL,
        action="quarantine",
        summary="1 critical vulnerability above the policy's maximum (high)",
        reasons=("vulnerabilities: CVE-2024-6119 is critical",),
        top_findings=(
            Finding(
                id="CVE-2024-6119",
                severity=Severity.CRITICAL,
                package="openssl",
                installed_version="3.0.13",
                fixed_version="3.0.15",
            ),
        ),
        release_command=f"regwarden quarantine release 127.0.0.1:5000/payments/api@{DIGEST} "
        "--reason '...'",
    )
    base.update(kw)
    return Alert.model_validate(base)


class _Sink(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[dict[str, str], bytes]]] = []
    status: ClassVar[int] = 200

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((dict(self.headers), body))
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def sink() -> Iterator[tuple[str, type[_Sink]]]:
    handler = type("Sink", (_Sink,), {"received": [], "status": 200})
    with LoopbackServer(handler) as server:
        yield f"{server.url}/hook", handler


def test_text_names_image_reason_fix_and_release_command() -> None:
    text = render_text(_alert())
    for needle in (
        DIGEST,
        "1.4.2",
        "CVE-2024-6119",
        "fixed in 3.0.15",
        "quarantine release",
        "team: payments",
    ):
        assert needle in text


def test_slack_and_teams_shapes() -> None:
    slack = render_slack(_alert())
    assert slack["blocks"][0]["type"] == "header"
    assert "FAILED" in slack["text"]
    assert any("quarantine release" in json.dumps(b) for b in slack["blocks"])
    teams = render_teams(_alert(release_command=None))
    card = teams["attachments"][0]
    assert card["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert card["content"]["version"] == "1.4"
    assert "Release" not in json.dumps(card)


def test_dedup_key_ignores_time_but_not_outcome() -> None:
    a = _alert()
    assert a.dedup_key == _alert(time=datetime(2027, 1, 1, tzinfo=UTC)).dedup_key
    assert a.dedup_key != _alert(outcome=Outcome.WARN).dedup_key


def test_webhook_is_cloudevent_signed_with_hmac(sink: tuple[str, type[_Sink]]) -> None:
    url, handler = sink
    WebhookChannel("sec", url, secret=b"s3cret").send(_alert())
    ((headers, body),) = handler.received
    assert headers["Content-Type"] == "application/cloudevents+json"
    now = datetime.now(UTC)
    assert verify_signature(b"s3cret", headers, body, now=now)
    assert not verify_signature(b"wrong", headers, body, now=now)
    event = json.loads(body)
    assert event["specversion"] == "1.0" and event["subject"].endswith(DIGEST)
    assert event["data"]["team"] == "payments"


def test_slack_and_teams_post(sink: tuple[str, type[_Sink]]) -> None:
    url, handler = sink
    SlackChannel("s", url).send(_alert())
    TeamsChannel("t", url).send(_alert())
    assert [json.loads(b).get("type") for _, b in handler.received] == [None, "message"]


def test_failed_delivery_names_channel_not_url(sink: tuple[str, type[_Sink]]) -> None:
    url, handler = sink
    handler.status = 500
    with pytest.raises(RegistryError, match="channel 'payments-slack'") as info:
        SlackChannel(
            "payments-slack",
            url + "?token=SECRET",
            retry=RetryPolicy(attempts=3),
            sleep=lambda _: None,  # backoff itself is tested in test_channels_retry
        ).send(_alert())
    assert "SECRET" not in str(info.value)
    assert len(handler.received) == 3  # bounded retries on 5xx


def test_client_errors_are_not_retried(sink: tuple[str, type[_Sink]]) -> None:
    url, handler = sink
    handler.status = 404
    with pytest.raises(RegistryError, match="HTTP 404"):
        SlackChannel("s", url).send(_alert())
    assert len(handler.received) == 1


def test_file_channel_appends_json_lines(tmp_path: Path) -> None:
    out = tmp_path / "alerts.jsonl"
    ch = StreamChannel("file", path=out)
    ch.send(_alert())
    ch.send(_alert(outcome=Outcome.PASSED, action="promote"))
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["outcome"] for r in rows] == ["FAILED", "PASSED"]
