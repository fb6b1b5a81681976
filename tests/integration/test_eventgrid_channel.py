"""The `eventgrid` alert channel, driven through azure-eventgrid's real
EventGridPublisherClient at FakeEventGrid (HTTPS with a test CA): one CloudEvent per alert
with the filter fields at the top of its data, the topic key or a managed-identity token,
retries on 429/503 with the channels' backoff, other 4xx permanent, the client pinned to
the topic's host. Waits go to a fake clock."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
from support.fake_eventgrid import FakeEventGrid

from regwarden.errors import UsageError
from regwarden.model import Finding, Outcome, Severity
from regwarden.notify import (
    CLOUDEVENT_TYPE,
    Alert,
    DeliveryFailed,
    EventGridChannel,
    RetryPolicy,
    build_channels,
    deliver,
    eventgrid_alert,
    eventgrid_event,
    render_cloudevent,
)
from regwarden.policy import load_policy_text
from regwarden.reference import ImageRef
from regwarden.store import SqliteLedger

pytest.importorskip("azure.eventgrid")

T0 = datetime(2026, 12, 7, 12, 0, 0, tzinfo=UTC)
DIGEST = "sha256:" + "e" * 64
TOPIC = "https://regwarden-alerts.westeurope-1.eventgrid.azure.net/api/events"


def _alert(**changes: object) -> Alert:
    alert = Alert(
        time=T0,
        image=ImageRef.parse(f"acme.azurecr.io/apps/api@{DIGEST}"),
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
def topic() -> Iterator[FakeEventGrid]:
    with FakeEventGrid() as fake:
        yield fake


def _channel(
    topic: FakeEventGrid,
    clock: Clock,
    *,
    key: str | None = None,
    retry: RetryPolicy | None = None,
    endpoint: str = TOPIC,
) -> EventGridChannel:
    return EventGridChannel(
        "team-alerts",
        endpoint,
        env=topic.env(),
        key=key,
        credential=None if key else topic.credential(),
        retry=retry,
        sleep=clock.sleep,
        clock=lambda: clock.mono,
        now=lambda: T0,
        rand=lambda: 0.5,
    )


def test_each_alert_is_one_cloudevent_with_the_filter_fields_in_its_data(
    topic: FakeEventGrid,
) -> None:
    alert = _alert()
    _channel(topic, Clock(), key=topic.key).send(alert)
    (post,) = topic.posts
    assert post.path == "/api/events"
    assert post.query == {"api-version": ["2018-01-01"]}
    assert post.content_type.startswith("application/cloudevents-batch+json")
    (event,) = post.events
    rendered = render_cloudevent(alert)
    for attribute in ("specversion", "id", "source", "type", "subject", "datacontenttype"):
        assert event[attribute] == rendered[attribute]
    assert event["type"] == CLOUDEVENT_TYPE
    assert event["id"] == alert.event_id  # stable across retries: subscribers de-duplicate
    assert datetime.fromisoformat(event["time"]) == T0
    data = event["data"]
    assert {k: data[k] for k in ("team", "repository", "severity", "verdict", "action")} == {
        "team": "payments",
        "repository": "apps/api",
        "severity": "critical",
        "verdict": "FAILED",
        "action": "quarantine",
    }
    # the rest of data is the alert itself, as every CloudEvent rendering carries it, and
    # the notify function subscribed to the topic reads it back whole
    assert eventgrid_alert(data) == alert
    assert set(data) - set(rendered["data"]) == {"verdict", "repository"}


def test_an_alert_no_team_owns_has_a_null_team(topic: FakeEventGrid) -> None:
    channel = _channel(topic, Clock(), key=topic.key)
    channel.send(_alert(team=None, outcome=Outcome.PASSED, action="none"))
    channel.send(_alert(outcome=Outcome.PENDING, action="quarantine", state="held"))
    first, second = topic.events
    assert first["data"]["team"] is None  # Event Grid filters it with IsNullOrUndefined
    assert (first["data"]["verdict"], first["data"]["action"]) == ("PASSED", "none")
    assert second["data"]["verdict"] == "PENDING"
    assert first["id"] != second["id"]
    assert eventgrid_alert(first["data"]).team is None


def test_an_oversized_alert_drops_its_findings_to_fit_event_grid() -> None:
    findings = tuple(
        Finding(id=f"CVE-2026-{i:05}", severity=Severity.HIGH, package="p" * 200)
        for i in range(6000)
    )
    event = eventgrid_event(_alert(top_findings=findings))
    assert event["data"]["top_findings"] == []
    assert "cut to fit Event Grid" in event["data"]["reasons"][-1]
    assert event["data"]["verdict"] == "FAILED"


def test_the_key_goes_as_aeg_sas_key_and_no_token_is_asked_for(topic: FakeEventGrid) -> None:
    _channel(topic, Clock(), key=topic.key).send(_alert())
    (post,) = topic.posts
    assert (post.key, post.authorization) == (topic.key, None)


def test_without_a_key_the_managed_identity_token_goes_as_bearer(topic: FakeEventGrid) -> None:
    credential = topic.credential()
    channel = EventGridChannel("team-alerts", TOPIC, env=topic.env(), credential=credential)
    channel.send(_alert())
    (post,) = topic.posts
    assert (post.key, post.authorization) == (None, f"Bearer {topic.token}")
    assert credential.scopes == [("https://eventgrid.azure.net/.default",)]


def test_a_wrong_key_is_permanent_and_not_retried(topic: FakeEventGrid) -> None:
    clock = Clock()
    with pytest.raises(DeliveryFailed, match=r"HTTP 401: Unauthorized") as caught:
        _channel(topic, clock, key="not-the-key-at-all").send(_alert())
    assert caught.value.permanent and caught.value.status == 401
    assert len(topic.posts) == 1 and clock.slept == []
    assert "not-the-key-at-all" not in str(caught.value)


def test_503_then_success_is_retried_with_backoff(topic: FakeEventGrid) -> None:
    clock = Clock()
    topic.fail_next(503)
    topic.fail_next(429)
    _channel(topic, clock, key=topic.key).send(_alert())
    assert [p.status for p in topic.posts] == [503, 429, 200]
    assert len(topic.events) == 1
    assert clock.slept == [0.25, 0.5]  # full jitter at rand 0.5: half of 0.5 s, then of 1 s


def test_retry_after_is_honoured_and_an_overlong_one_handed_back(topic: FakeEventGrid) -> None:
    clock = Clock()
    topic.fail_next(503, headers={"Retry-After": "3"})
    _channel(topic, clock, key=topic.key).send(_alert())
    assert clock.slept == [3.0]
    topic.fail_next(429, headers={"Retry-After": "120"})
    with pytest.raises(DeliveryFailed, match=r"HTTP 429.*asked to wait 120s") as caught:
        _channel(topic, Clock(), key=topic.key).send(_alert())
    assert (caught.value.permanent, caught.value.retry_after) == (False, 120.0)


def test_400_is_permanent_and_not_retried(topic: FakeEventGrid) -> None:
    topic.fail_next(400, times=5)
    clock = Clock()
    with pytest.raises(DeliveryFailed, match=r"HTTP 400: BadRequest; 1 attempt") as caught:
        _channel(topic, clock, key=topic.key).send(_alert())
    assert caught.value.permanent and caught.value.status == 400
    assert len(topic.posts) == 1 and clock.slept == []


def test_an_outage_that_lasts_gives_up_after_the_attempts(topic: FakeEventGrid) -> None:
    topic.fail_next(503, times=10)
    with pytest.raises(DeliveryFailed, match=r"at 127\.0\.0\.1:\d+ failed .*4 attempts") as caught:
        _channel(topic, Clock(), key=topic.key).send(_alert())
    assert not caught.value.permanent
    assert len(topic.posts) == 4 and topic.events == []


def test_a_redirect_is_not_followed_so_the_key_stays_with_the_topic(
    topic: FakeEventGrid,
) -> None:
    with FakeEventGrid(key=topic.key) as elsewhere:
        topic.redirect_next(f"{elsewhere.url}/api/events?api-version=2018-01-01")
        with pytest.raises(DeliveryFailed, match=r"HTTP 307: a redirect away from") as caught:
            _channel(topic, Clock(), key=topic.key).send(_alert())
        assert caught.value.permanent
        assert elsewhere.posts == []  # neither the event nor the key reached it
    assert [p.status for p in topic.posts] == [307]


def test_the_override_keeps_the_topic_path_and_needs_https(topic: FakeEventGrid) -> None:
    channel = _channel(topic, Clock(), key=topic.key)
    assert channel.url == f"{topic.url}/api/events"
    other = FakeEventGrid(path="/custom/path", key=topic.key)
    with other:
        routed = _channel(other, Clock(), key=topic.key, endpoint="https://t.x.net/custom/path")
        routed.send(_alert())
        assert [p.path for p in other.posts] == ["/custom/path"]
    env = {"REGWARDEN_AZURE_ENDPOINT_EVENTGRID": "http://127.0.0.1:9"}
    with pytest.raises(UsageError, match="must be https"):
        EventGridChannel("x", TOPIC, env=env, key="k" * 20)
    with pytest.raises(UsageError, match="expected https://TOPIC"):
        EventGridChannel("x", "http://t.westeurope-1.eventgrid.azure.net/api/events", env={})


def test_without_the_test_ca_the_stand_ins_certificate_is_refused(topic: FakeEventGrid) -> None:
    env = {"REGWARDEN_AZURE_ENDPOINT_EVENTGRID": topic.url}  # no REGWARDEN_AZURE_CA_BUNDLE
    clock = Clock()
    channel = EventGridChannel(
        "x", TOPIC, env=env, key=topic.key, sleep=clock.sleep, clock=lambda: clock.mono
    )
    with pytest.raises(DeliveryFailed, match="no answer"):
        channel.send(_alert())
    assert topic.posts == []


def test_the_policys_eventgrid_channel_delivers_through_deliver(
    topic: FakeEventGrid, tmp_path: Path
) -> None:
    policy = load_policy_text(
        "apiVersion: regwarden/v1\nkind: Policy\n"
        "notifications:\n  channels:\n"
        f"    alerts: {{type: eventgrid, endpoint: '{TOPIC}', key: 'secret://eg-key'}}\n",
        source="regwarden.yaml",
        base_dir=tmp_path,
    )
    env = {**topic.env(), "REGWARDEN_SECRET_EG_KEY": topic.key}
    channels = build_channels(policy, env)
    assert isinstance(channels["alerts"], EventGridChannel)
    ledger = SqliteLedger(tmp_path / "ledger.db")
    try:
        for _ in range(2):  # the second delivery of the same alert is remembered
            report = deliver(_alert(), ["alerts"], channels.get, ledger, now=T0)
            report.raise_for_failures()
    finally:
        ledger.close()
    (post,) = topic.posts
    assert post.key == topic.key
    assert post.events[0]["data"]["team"] == "payments"


def test_publishing_logs_no_sdk_warning_about_the_request_options(
    topic: FakeEventGrid, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        _channel(topic, Clock(), key=topic.key).send(_alert())
    assert len(topic.events) == 1
    assert [r.getMessage() for r in caplog.records if "known attribute" in r.getMessage()] == []
