"""HTTP alert channels against a real loopback receiver that answers from a script: backoff
with full jitter, `Retry-After` (seconds and HTTP date) honoured or handed back, a bounded
budget, permanent refusals not retried, errors without secrets; and the webhook signature
over id, timestamp and body (Standard Webhooks scheme). Waits go to a fake clock."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from support.loopback import LoopbackServer

from regwarden.devtools import free_port
from regwarden.model import Outcome
from regwarden.notify import (
    ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Alert,
    DeliveryFailed,
    RetryPolicy,
    SlackChannel,
    TeamsChannel,
    WebhookChannel,
    event_id,
    signature_headers,
    verify_signature,
)
from regwarden.redact import redact_text
from regwarden.reference import ImageRef

T0 = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)
DIGEST = "sha256:" + "e" * 64


def _alert() -> Alert:
    return Alert(
        time=T0,
        image=ImageRef.parse(f"127.0.0.1:5000/payments/api@{DIGEST}"),
        team="payments",
        outcome=Outcome.FAILED,
        action="quarantine",
        summary="FAILED: quarantine",
    )


@dataclass
class Clock:
    """Monotonic and wall time that move only when the channel sleeps."""

    mono: float = 100.0
    wall: datetime = T0
    slept: list[float] = field(default_factory=list)

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.mono += seconds
        self.wall += timedelta(seconds=seconds)

    def now(self) -> datetime:
        return self.wall


class Script(BaseHTTPRequestHandler):
    """Answers each POST with the next (status, headers) of `script`; the last repeats."""

    script: list[tuple[int, dict[str, str]]]
    received: list[tuple[dict[str, str], bytes]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        cls = type(self)
        cls.received.append((dict(self.headers), body))
        status, headers = cls.script.pop(0) if len(cls.script) > 1 else cls.script[0]
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"no")

    def log_message(self, *args: object) -> None:
        pass


@dataclass
class Receiver:
    url: str
    handler: type[Script]

    def answer(self, *script: tuple[int, dict[str, str]]) -> None:
        self.handler.script = list(script)

    @property
    def received(self) -> list[tuple[dict[str, str], bytes]]:
        return self.handler.received


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    handler = type("Handler", (Script,), {"script": [(204, {})], "received": []})
    with LoopbackServer(handler) as server:
        yield Receiver(f"{server.url}/services/T0/B0/slack-path-secret", handler)


def _slack(url: str, clock: Clock, **policy: float) -> SlackChannel:
    return SlackChannel(
        "payments-slack",
        url,
        retry=RetryPolicy(**policy),  # type: ignore[arg-type]
        sleep=clock.sleep,
        clock=lambda: clock.mono,
        now=clock.now,
        rand=lambda: 0.5,
    )


def test_full_jitter_stays_under_the_doubling_cap() -> None:
    policy = RetryPolicy(base=0.5, cap=4.0)
    assert policy.backoff.delay(0, rand=0.0) == 0.0
    assert [policy.backoff.delay(n, rand=0.999) for n in range(5)] == pytest.approx(
        [0.4995, 0.999, 1.998, 3.996, 3.996]
    )


def test_5xx_is_retried_with_jittered_backoff_until_it_succeeds(receiver: Receiver) -> None:
    receiver.answer((503, {}), (502, {}), (200, {}))
    clock = Clock()
    _slack(receiver.url, clock).send(_alert())
    assert len(receiver.received) == 3
    assert clock.slept == [0.25, 0.5]  # rand 0.5 × 0.5 s, × 1 s


def test_retry_after_seconds_and_http_date_are_honoured(receiver: Receiver) -> None:
    when = format_datetime(T0 + timedelta(seconds=7), usegmt=True)
    receiver.answer((429, {"Retry-After": "3"}), (503, {"Retry-After": when}), (204, {}))
    clock = Clock()
    _slack(receiver.url, clock).send(_alert())
    # 3 s as asked; then the date is 7 s after T0 and the clock is at T0 + 3 s
    assert clock.slept == [3.0, 4.0]
    assert len(receiver.received) == 3


def test_a_retry_after_past_the_cap_ends_the_send_and_is_handed_back(receiver: Receiver) -> None:
    receiver.answer((503, {"Retry-After": "120"}))
    clock = Clock()
    with pytest.raises(DeliveryFailed) as info:
        _slack(receiver.url, clock, max_retry_after=15).send(_alert())
    assert info.value.retry_after == 120 and not info.value.permanent
    assert info.value.status == 503
    assert len(receiver.received) == 1 and clock.slept == []


def test_a_refusal_is_permanent_and_not_retried(receiver: Receiver) -> None:
    receiver.answer((404, {}))
    clock = Clock()
    with pytest.raises(DeliveryFailed, match=r"HTTP 404; 1 attempt\)") as info:
        _slack(receiver.url, clock).send(_alert())
    assert info.value.permanent and info.value.retry_after is None
    assert len(receiver.received) == 1 and clock.slept == []


def test_408_and_429_are_worth_retrying(receiver: Receiver) -> None:
    receiver.answer((408, {}), (429, {}), (200, {}))
    _slack(receiver.url, Clock()).send(_alert())
    assert len(receiver.received) == 3


def test_the_budget_bounds_the_whole_send(receiver: Receiver) -> None:
    receiver.answer((503, {"Retry-After": "2"}))
    clock = Clock()
    with pytest.raises(DeliveryFailed, match="out of its 5s budget") as info:
        _slack(receiver.url, clock, budget=5, attempts=100).send(_alert())
    assert clock.slept == [2.0, 2.0]  # a third wait would end past 5 s
    assert len(receiver.received) == 3
    assert info.value.retry_after == 2.0  # when the caller may try again


def test_attempts_run_out_and_the_error_names_the_channel_not_the_url(
    receiver: Receiver,
) -> None:
    receiver.answer((500, {}))
    clock = Clock()
    with pytest.raises(DeliveryFailed) as info:
        _slack(receiver.url + "?token=query-secret", clock, attempts=3).send(_alert())
    message = str(info.value)
    assert message.startswith("channel 'payments-slack': delivery to http://127.0.0.1:")
    assert "(HTTP 500; 3 attempts)" in message
    assert "slack-path-secret" not in message and "query-secret" not in message
    assert len(receiver.received) == 3 and len(clock.slept) == 2
    # the URL is registered: wherever it is printed later, it is masked
    assert "slack-path-secret" not in redact_text(f"oops {receiver.url}?token=query-secret")


def test_an_unreachable_receiver_is_retried_then_reported() -> None:
    url = f"http://127.0.0.1:{free_port()}/hooks/teams-path-secret"
    clock = Clock()
    channel = TeamsChannel(
        "teams", url, retry=RetryPolicy(attempts=3), sleep=clock.sleep, rand=lambda: 1.0
    )
    with pytest.raises(DeliveryFailed, match="ConnectError") as info:
        channel.send(_alert())
    assert clock.slept == [0.5, 1.0]
    assert "teams-path-secret" not in str(info.value)
    assert info.value.status is None and not info.value.permanent


# -- the webhook: stable id, timestamp, signature ---------------------------------------------


def _expected_signature(key: bytes, msg_id: str, timestamp: str, body: bytes) -> str:
    """Standard Webhooks, computed here independently of the product."""
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def _webhook(url: str, clock: Clock, secret: bytes | None) -> WebhookChannel:
    return WebhookChannel(
        "hook",
        url,
        secret=secret,
        sleep=clock.sleep,
        clock=lambda: clock.mono,
        now=clock.now,
        rand=lambda: 0.5,
    )


def test_each_attempt_is_signed_at_its_own_time_with_the_same_id(receiver: Receiver) -> None:
    receiver.answer((503, {"Retry-After": "9"}), (204, {}))
    clock = Clock()
    alert = _alert()
    _webhook(receiver.url, clock, b"hmac-key-material").send(alert)
    (h1, b1), (h2, b2) = receiver.received
    assert b1 == b2
    assert h1[ID_HEADER] == h2[ID_HEADER] == event_id(alert) == json.loads(b1)["id"]
    assert event_id(alert) == alert.dedup_key  # the same alert always has the same id
    assert (h1[TIMESTAMP_HEADER], h2[TIMESTAMP_HEADER]) == (
        str(int(T0.timestamp())),
        str(int(T0.timestamp()) + 9),
    )
    for headers, body in receiver.received:
        assert headers[SIGNATURE_HEADER] == _expected_signature(
            b"hmac-key-material", headers[ID_HEADER], headers[TIMESTAMP_HEADER], body
        )
    assert h1["Content-Type"] == "application/cloudevents+json"


def test_verify_signature_refuses_tampering_old_and_future_timestamps(receiver: Receiver) -> None:
    clock = Clock()
    _webhook(receiver.url, clock, b"hmac-key-material").send(_alert())
    ((headers, body),) = receiver.received
    key = b"hmac-key-material"
    assert verify_signature(key, headers, body, now=T0 + timedelta(minutes=4))
    # header names in any case, as proxies and frameworks hand them over
    assert verify_signature(key, {k.upper(): v for k, v in headers.items()}, body, now=T0)
    assert not verify_signature(b"other-key", headers, body, now=T0)
    assert not verify_signature(key, headers, body + b" ", now=T0)
    assert not verify_signature(key, {**headers, ID_HEADER: "another-id"}, body, now=T0)
    stamp = str(int(T0.timestamp()) + 1)
    assert not verify_signature(key, {**headers, TIMESTAMP_HEADER: stamp}, body, now=T0)
    assert not verify_signature(key, headers, body, now=T0 + timedelta(minutes=6))  # replayed
    assert not verify_signature(key, headers, body, now=T0 - timedelta(minutes=6))
    missing = {k: v for k, v in headers.items() if k != SIGNATURE_HEADER}
    assert not verify_signature(key, missing, body, now=T0)
    # a receiver rotating keys may list several signatures; any one that matches counts
    both = {**headers, SIGNATURE_HEADER: "v1,bm9wZQ== " + headers[SIGNATURE_HEADER]}
    assert verify_signature(key, both, body, now=T0)


def test_a_standard_webhooks_secret_is_used_as_its_base64_key(receiver: Receiver) -> None:
    raw = b"\x00\x01raw key bytes\xff"
    secret = b"whsec_" + base64.b64encode(raw)
    _webhook(receiver.url, Clock(), secret).send(_alert())
    ((headers, body),) = receiver.received
    assert headers[SIGNATURE_HEADER] == _expected_signature(
        raw, headers[ID_HEADER], headers[TIMESTAMP_HEADER], body
    )
    assert verify_signature(secret, headers, body, now=T0)


def test_an_unsigned_webhook_still_carries_id_and_timestamp(receiver: Receiver) -> None:
    _webhook(receiver.url, Clock(), None).send(_alert())
    ((headers, _),) = receiver.received
    assert headers[ID_HEADER] == _alert().dedup_key
    assert headers[TIMESTAMP_HEADER] == str(int(T0.timestamp()))
    assert SIGNATURE_HEADER not in headers


def test_the_signing_key_and_a_secret_url_are_masked_in_text(receiver: Receiver) -> None:
    WebhookChannel("h", receiver.url, secret=b"signing-key-0042", secret_url=True)
    text = redact_text(f"key signing-key-0042, path {receiver.url.split('/', 3)[3]}")
    assert "signing-key-0042" not in text and "slack-path-secret" not in text


def _docs_snippet() -> dict[str, object]:
    """The receiver snippet in docs/alerts.md, run as written."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "alerts.md").read_text()
    (code,) = re.findall(r"```python\n(.*?)```", text, re.DOTALL)
    namespace: dict[str, object] = {}
    exec(compile(code, "docs/alerts.md", "exec"), namespace)  # noqa: S102
    return namespace


@pytest.mark.parametrize("secret", [b"plain-signing-secret", b"whsec_" + base64.b64encode(b"k")])
def test_the_docs_snippet_accepts_a_real_delivery_once(receiver: Receiver, secret: bytes) -> None:
    WebhookChannel("hook", receiver.url, secret=secret).send(_alert())  # real clock
    ((headers, body),) = receiver.received
    accept = _docs_snippet()["accept"]
    assert callable(accept)
    assert accept(secret, headers, body) == _alert().dedup_key
    assert accept(secret, headers, body) is None  # the same id again: a duplicate
    fresh = _docs_snippet()["accept"]
    assert callable(fresh)
    assert fresh(b"wrong-secret", headers, body) is None
    assert fresh(secret, headers, body.replace(b"FAILED", b"PASSED")) is None
    # correctly signed, but 301 s old: refused; 200 s old: still fine
    for age, ok in ((301, False), (200, True)):
        sent = datetime.now(UTC) - timedelta(seconds=age)
        resigned = signature_headers(secret, msg_id=f"id-{age}", body=body, now=sent)
        assert (fresh(secret, resigned, body) is not None) is ok, age
