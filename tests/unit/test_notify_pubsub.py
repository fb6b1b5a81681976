"""The `pubsub` alert channel, driven through google-cloud-pubsub's real GAPIC client (REST)
at FakePubSub: the SNS channel's JSON body, the filterable attributes within Pub/Sub's
limits, retries on 429/503 with the channels' backoff and Retry-After, permanent refusals
not retried. Waits go to a fake clock."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
from support.fake_pubsub import FakePubSub

from regwarden.devtools import free_port
from regwarden.model import Finding, Outcome, Severity
from regwarden.notify import (
    Alert,
    DeliveryFailed,
    PubSubChannel,
    RetryPolicy,
    alert_body,
    build_channels,
    deliver,
    pubsub_attributes,
)
from regwarden.policy import load_policy_text
from regwarden.reference import ImageRef
from regwarden.store import SqliteLedger

T0 = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)
DIGEST = "sha256:" + "e" * 64
TOPIC = "projects/demo-proj/topics/regwarden-alerts"
PUBLISH = r"/v1/projects/demo-proj/topics/regwarden-alerts:publish"


def _alert(**changes: object) -> Alert:
    alert = Alert(
        time=T0,
        image=ImageRef.parse(f"us-docker.pkg.dev/demo-proj/apps/api@{DIGEST}"),
        tags=("1.4.2",),
        team="payments",
        outcome=Outcome.FAILED,
        severity=Severity.CRITICAL,
        action="quarantine",
        summary="FAILED: quarantine",
        reasons=("vulnerabilities: 1 critical",),
        top_findings=(Finding(id="CVE-2023-4911", severity=Severity.CRITICAL, package="glibc"),),
    )
    return alert.model_copy(update=changes)


@dataclass
class Clock:
    """Monotonic time that moves only when the channel sleeps."""

    mono: float = 100.0
    slept: list[float] = field(default_factory=list)

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.mono += seconds


@pytest.fixture
def pubsub() -> Iterator[FakePubSub]:
    with FakePubSub(topics=[TOPIC]) as fake:
        yield fake


def _channel(url: str, clock: Clock, retry: RetryPolicy | None = None) -> PubSubChannel:
    return PubSubChannel(
        "team-alerts",
        TOPIC,
        env={"REGWARDEN_GCP_ENDPOINT_PUBSUB": url},
        retry=retry,
        sleep=clock.sleep,
        clock=lambda: clock.mono,
        now=lambda: T0,
        rand=lambda: 0.5,
    )


def test_the_alert_is_published_as_the_sns_body_with_its_attributes(pubsub: FakePubSub) -> None:
    alert = _alert()
    _channel(pubsub.url, Clock()).send(alert)
    (message,) = pubsub.published(TOPIC)
    assert message["data"] == alert_body(alert).encode()
    assert Alert.model_validate_json(message["data"]) == alert
    assert message["attributes"] == {
        "team": "payments",
        "repository": "demo-proj/apps/api",
        "severity": "critical",
        "verdict": "FAILED",
        "action": "quarantine",
        "kind": "verdict",
    }
    assert "orderingKey" not in message  # ordering is not needed


def test_an_alert_no_team_owns_carries_no_team_attribute(pubsub: FakePubSub) -> None:
    _channel(pubsub.url, Clock()).send(_alert(team=None, action="none", outcome=Outcome.PASSED))
    (message,) = pubsub.published("regwarden-alerts")
    assert "team" not in message["attributes"]
    assert message["attributes"]["action"] == "none"
    assert message["attributes"]["verdict"] == "PASSED"


def test_attribute_values_are_cut_to_pubsubs_limit_on_a_character_boundary(
    pubsub: FakePubSub,
) -> None:
    team = "équipe-" * 300  # 2,400 bytes: the fake, like Pub/Sub, refuses over 1024
    attributes = pubsub_attributes(_alert(team=team))
    assert len(attributes["team"].encode()) <= 1024
    assert team.startswith(attributes["team"])
    _channel(pubsub.url, Clock()).send(_alert(team=team))
    assert pubsub.published(TOPIC)[0]["attributes"]["team"] == attributes["team"]


def test_429_and_503_are_retried_with_backoff(pubsub: FakePubSub) -> None:
    clock = Clock()
    pubsub.fail_next("POST", PUBLISH, 429)
    pubsub.fail_next("POST", PUBLISH, 503)
    _channel(pubsub.url, clock).send(_alert())
    assert len(pubsub.calls("POST", PUBLISH)) == 3
    assert len(pubsub.published(TOPIC)) == 1
    # full jitter at rand 0.5: half of 0.5 s, then half of 1 s
    assert clock.slept == [0.25, 0.5]


def test_retry_after_is_honoured_and_an_overlong_one_handed_back(pubsub: FakePubSub) -> None:
    clock = Clock()
    pubsub.fail_next("POST", PUBLISH, 429, headers={"Retry-After": "3"})
    _channel(pubsub.url, clock).send(_alert())
    assert clock.slept == [3.0]
    pubsub.fail_next("POST", PUBLISH, 429, headers={"Retry-After": "120"})
    with pytest.raises(DeliveryFailed, match=r"HTTP 429.*asked to wait 120s") as caught:
        _channel(pubsub.url, Clock()).send(_alert())
    assert (caught.value.permanent, caught.value.retry_after) == (False, 120.0)


def test_throttling_that_lasts_gives_up_after_the_attempts(pubsub: FakePubSub) -> None:
    pubsub.fail_next("POST", PUBLISH, 429, times=10)
    with pytest.raises(DeliveryFailed, match=r"publish to .*regwarden-alerts failed .*4 attempts"):
        _channel(pubsub.url, Clock()).send(_alert())
    assert len(pubsub.calls("POST", PUBLISH)) == 4
    assert pubsub.published(TOPIC) == []


def test_a_missing_topic_or_permission_is_permanent_and_not_retried(pubsub: FakePubSub) -> None:
    channel = PubSubChannel(
        "other",
        "projects/demo-proj/topics/nope",
        env={"REGWARDEN_GCP_ENDPOINT_PUBSUB": pubsub.url},
        sleep=Clock().sleep,
    )
    with pytest.raises(DeliveryFailed, match=r"HTTP 404") as caught:
        channel.send(_alert())
    assert caught.value.permanent and caught.value.status == 404
    pubsub.fail_next("POST", PUBLISH, 403)
    with pytest.raises(DeliveryFailed, match=r"HTTP 403") as denied:
        _channel(pubsub.url, Clock()).send(_alert())
    assert denied.value.permanent
    assert len(pubsub.calls("POST", r".*")) == 2


def test_no_answer_is_retried_then_reported() -> None:
    clock = Clock()
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens
    with pytest.raises(DeliveryFailed, match=r"ConnectionError: no answer; 4 attempts"):
        _channel(url, clock).send(_alert())
    assert len(clock.slept) == 3


def test_a_send_stays_within_its_budget(pubsub: FakePubSub) -> None:
    pubsub.fail_next("POST", PUBLISH, 503, times=10)
    clock = Clock()
    retry = RetryPolicy(attempts=10, base=4.0, cap=8.0, budget=5.0)
    with pytest.raises(DeliveryFailed, match=r"out of its 5s budget"):
        _channel(pubsub.url, clock, retry).send(_alert())
    assert sum(clock.slept) < 5.0


def test_a_bad_topic_is_a_usage_error() -> None:
    with pytest.raises(Exception, match=r"expected projects/P/topics/T"):
        PubSubChannel("x", "alerts", env={})


def test_the_policys_pubsub_channel_delivers_through_deliver(
    pubsub: FakePubSub, tmp_path: Path
) -> None:
    policy = load_policy_text(
        "apiVersion: regwarden/v1\nkind: Policy\n"
        "notifications:\n  channels:\n"
        f"    alerts: {{type: pubsub, topic: {TOPIC}}}\n",
        source="regwarden.yaml",
        base_dir=tmp_path,
    )
    channels = build_channels(policy, {"REGWARDEN_GCP_ENDPOINT_PUBSUB": pubsub.url})
    ledger = SqliteLedger(tmp_path / "ledger.db")
    try:
        alert = _alert()
        for _ in range(2):  # the second delivery of the same alert is remembered
            report = deliver(alert, ["alerts"], channels.get, ledger, now=T0)
            report.raise_for_failures()
    finally:
        ledger.close()
    (message,) = pubsub.published(TOPIC)
    assert json.loads(message["data"])["team"] == "payments"
