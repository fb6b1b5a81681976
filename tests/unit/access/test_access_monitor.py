"""AccessMonitor over a real SqliteLedger in a temporary directory: alerts once per window,
summaries with counts, tag resolution, quarantine locations, regwarden's own accesses,
principals and networks, pull rate, coalesced tallies and pull tracking."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from regwarden.access import AccessEvent, AccessMonitor, parse_cloudtrail_access, rate_key
from regwarden.notify import Alert, Router, StreamChannel
from regwarden.policy import Policy, load_policy_text
from regwarden.store import PullTally, QuarantineRecord, SqliteLedger

T0 = datetime(2026, 3, 2, 8, 15, tzinfo=UTC)
REG = "registry.example.com"
D1 = "sha256:" + "a1" * 32
D2 = "sha256:" + "b2" * 32

POLICY = """\
apiVersion: regwarden/v1
kind: Policy
defaults:
  team: platform
repositories:
  - match: "payments/**"
    team: payments
    mode: audit
    access:
      pushers: ["ci-*"]
      networks: ["10.0.0.0/8"]
      dedupeWindow: 1m
  - match: "rate/**"
    access:
      alertOn: {pullRate: 50}
notifications:
  channels:
    sec: {type: stdout}
    ops: {type: stdout}
  routes:
    - match: {action: [access]}
      to: [sec]
    - match: {action: [quarantine]}
      to: [ops]
"""


class SpyLedger(SqliteLedger):
    """The real SQLite ledger, counting the calls the monitor's efficiency rests on."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.pull_batches: list[list[PullTally]] = []
        self.tracking_calls = 0
        self.state_reads = 0

    def record_pulls(self, tallies: Sequence[PullTally]) -> None:
        self.pull_batches.append(list(tallies))
        super().record_pulls(tallies)

    def start_pull_tracking(self, registry: str, repository: str, *, now: datetime) -> datetime:
        self.tracking_calls += 1
        return super().start_pull_tracking(registry, repository, now=now)

    def last_verdict(self, registry: str, repository: str, digest: str) -> str | None:
        self.state_reads += 1
        return super().last_verdict(registry, repository, digest)


def policy() -> Policy:
    return load_policy_text(POLICY, source="regwarden.yaml", base_dir="/")


def router(p: Policy) -> Router:
    channels = {name: StreamChannel(name) for name in p.notifications.channels}
    return Router(
        lambda a: p.notifications.channels_for(
            team=a.team, severity=a.severity, action=a.action, repository=a.repository
        ),
        channels,
    )


@pytest.fixture
def ledger(tmp_path: Path) -> SpyLedger:
    return SpyLedger(tmp_path / "ledger.db")


@pytest.fixture
def monitor(ledger: SpyLedger) -> AccessMonitor:
    p = policy()
    return AccessMonitor.from_policy(p, ledger, router(p), actor="regwarden-bot")


def pull(n: int = 0, **changes: object) -> AccessEvent:
    event = AccessEvent(
        source="distribution",
        event_id=f"e{n}",
        action="pull",
        registry=REG,
        repository="payments/api",
        digest=D1,
        tag=None,
        principal="system:serviceaccount:prod:deployer",
        principal_type="user",
        source_ip="10.2.3.4",
        user_agent="containerd/v1.7.13",
        time=T0 + timedelta(milliseconds=n),
    )
    return replace(event, **changes)  # type: ignore[arg-type]


def outbox(ledger: SqliteLedger, now: datetime) -> list[Alert]:
    return [
        Alert.model_validate_json(i.alert) for i in ledger.outbox_pending(now=now, limit=10_000)
    ]


def quarantine(ledger: SqliteLedger, repository: str, digest: str) -> None:
    ledger.record_quarantine(
        QuarantineRecord(
            registry=REG,
            repository=repository,
            digest=digest,
            strategy="move",
            location=f"quarantine/{repository}",
            tags=("1.4.2",),
            reason="critical CVE",
            quarantined_at=T0 - timedelta(hours=1),
            released_at=None,
        )
    )


def test_blocked_pull_alerts_once_then_one_summary_with_the_count(
    ledger: SpyLedger, monitor: AccessMonitor
) -> None:
    ledger.record_verdict(REG, "payments/api", D1, "FAILED", now=T0)
    first = monitor.handle([pull()], now=T0)
    assert (first.handled, first.findings, len(first.alerts)) == (1, 1, 1)
    (alert,) = outbox(ledger, T0)
    assert alert.access is not None and alert.team == "payments"
    assert (alert.access.finding, alert.access.principal, alert.access.source_ip) == (
        "blocked-pull",
        "system:serviceaccount:prod:deployer",
        "10.2.3.4",
    )
    assert first.alerts == [f"{alert.dedup_key}:sec"]  # routed by `action: [access]` only

    more = monitor.handle([pull(n) for n in range(1, 1001)], now=T0 + timedelta(seconds=20))
    assert (more.handled, more.findings, more.alerts) == (1000, 1000, [])
    assert len(outbox(ledger, T0 + timedelta(seconds=20))) == 1  # no alert in the window
    monitor.flush(now=T0 + timedelta(seconds=30))
    assert monitor.sweep(now=T0 + timedelta(seconds=59)) == []  # not closed yet

    closed = monitor.sweep(now=T0 + timedelta(seconds=61))
    assert len(closed) == 1
    summary = [
        a for a in outbox(ledger, T0 + timedelta(minutes=2)) if a.access and a.access.summary
    ]
    assert len(summary) == 1 and summary[0].access is not None
    assert summary[0].access.count == 1000
    assert summary[0].access.window_end == T0 + timedelta(minutes=1)
    assert ledger.access_windows_due(now=T0 + timedelta(hours=1)) == []  # dropped
    assert monitor.sweep(now=T0 + timedelta(minutes=5)) == []


def test_counts_not_yet_flushed_reach_the_summary(
    ledger: SpyLedger, monitor: AccessMonitor
) -> None:
    ledger.record_verdict(REG, "payments/api", D1, "PENDING", now=T0)
    monitor.handle([pull(n) for n in range(5)], now=T0)
    (key,) = monitor.sweep(now=T0 + timedelta(minutes=2))
    (summary,) = [i for i in ledger.outbox_pending(now=T0 + timedelta(minutes=3)) if i.key == key]
    detail = Alert.model_validate_json(summary.alert).access
    assert detail is not None and detail.count == 4


def test_a_window_with_nothing_more_closes_silently(
    ledger: SpyLedger, monitor: AccessMonitor
) -> None:
    ledger.record_verdict(REG, "payments/api", D1, "FAILED", now=T0)
    monitor.handle([pull()], now=T0)
    assert monitor.sweep(now=T0 + timedelta(minutes=2)) == []
    # the next pull after the close opens a new window and alerts again
    again = monitor.handle([pull(7)], now=T0 + timedelta(minutes=3))
    assert len(again.alerts) == 1


def test_a_due_window_not_yet_swept_is_summarised_before_the_next_opens(
    ledger: SpyLedger, monitor: AccessMonitor
) -> None:
    ledger.record_verdict(REG, "payments/api", D1, "FAILED", now=T0)
    monitor.handle([pull(n) for n in range(3)], now=T0)
    later = monitor.handle([pull(9)], now=T0 + timedelta(minutes=2))
    alerts = [
        Alert.model_validate_json(i.alert)
        for i in ledger.outbox_pending(now=T0 + timedelta(minutes=3))
    ]
    assert len(later.alerts) == 2
    assert sorted((a.access.summary, a.access.count) for a in alerts if a.access) == [
        (False, 1),
        (False, 1),
        (True, 2),
    ]


def test_two_processes_share_one_window(ledger: SpyLedger, tmp_path: Path) -> None:
    p = policy()
    other_ledger = SqliteLedger(ledger.path)  # a second process on the same database
    a = AccessMonitor.from_policy(p, ledger, router(p))
    b = AccessMonitor.from_policy(p, other_ledger, router(p))
    ledger.record_verdict(REG, "payments/api", D1, "FAILED", now=T0)
    assert len(a.handle([pull(1)], now=T0).alerts) == 1
    assert b.handle([pull(2), pull(3)], now=T0 + timedelta(seconds=1)).alerts == []
    b.flush(now=T0 + timedelta(seconds=2))
    a.handle([pull(4)], now=T0 + timedelta(seconds=3))
    (key,) = a.sweep(now=T0 + timedelta(minutes=2))
    (item,) = [i for i in ledger.outbox_pending(now=T0 + timedelta(minutes=3)) if i.key == key]
    detail = Alert.model_validate_json(item.alert).access
    assert detail is not None and detail.count == 3


def test_pull_by_tag_resolves_from_the_tag_history(
    ledger: SpyLedger, monitor: AccessMonitor
) -> None:
    ledger.record_push(REG, "payments/api", D2, ("1.4.2",), now=T0 - timedelta(days=2))
    ledger.record_push(REG, "payments/api", D1, ("1.4.2",), now=T0 - timedelta(days=1))
    ledger.record_verdict(REG, "payments/api", D1, "FAILED", now=T0)
    event = pull(digest=None, tag="1.4.2")
    result = monitor.handle([event], now=T0)
    (alert,) = outbox(ledger, T0)
    assert len(result.alerts) == 1 and alert.image.digest == D1
    monitor.flush(now=T0, force=True)
    assert [(t.digest, t.count) for t in ledger.pull_tallies(REG, "payments/api")] == [(D1, 1)]


def test_cloudtrail_pull_by_tag_of_a_quarantined_digest(tmp_path: Path) -> None:
    ledger = SqliteLedger(tmp_path / "l.db")
    p = policy()
    mon = AccessMonitor.from_policy(p, ledger, router(p))
    host = "123456789012.dkr.ecr.us-east-2.amazonaws.com"
    events = parse_cloudtrail_access(
        {
            "source": "aws.ecr",
            "detail-type": "AWS API Call via CloudTrail",
            "account": "123456789012",
            "region": "us-east-2",
            "id": "x",
            "detail": {
                "eventSource": "ecr.amazonaws.com",
                "eventName": "BatchGetImage",
                "awsRegion": "us-east-2",
                "eventID": "ct-1",
                "eventTime": "2026-03-02T08:15:04Z",
                "sourceIPAddress": "10.9.9.9",
                "userIdentity": {
                    "type": "AssumedRole",
                    "arn": "arn:aws:sts::123456789012:assumed-role/node/i-1",
                    "sessionContext": {
                        "sessionIssuer": {"arn": "arn:aws:iam::123456789012:role/node"}
                    },
                },
                "requestParameters": {
                    "repositoryName": "payments/api",
                    "registryId": "123456789012",
                    "imageIds": [{"imageTag": "1.4.2"}],
                },
            },
        }
    )
    ledger.record_push(host, "payments/api", D1, ("1.4.2",), now=T0 - timedelta(days=1))
    ledger.record_quarantine(
        QuarantineRecord(
            registry=host,
            repository="payments/api",
            digest=D1,
            strategy="retag",
            location="payments/api",
            tags=("1.4.2",),
            reason="critical CVE",
            quarantined_at=T0 - timedelta(hours=1),
            released_at=None,
        )
    )
    assert len(mon.handle(events, now=T0).alerts) == 1
    (alert,) = outbox(ledger, T0)
    assert alert.outcome.value == "FAILED" and alert.access is not None
    assert alert.access.principal == "arn:aws:iam::123456789012:role/node"


def test_pull_from_the_quarantine_location_is_a_blocked_pull(
    ledger: SpyLedger, monitor: AccessMonitor
) -> None:
    quarantine(ledger, "payments/api", D1)
    event = pull(repository="quarantine/payments/api", principal="mallory", source_ip="10.6.6.6")
    assert len(monitor.handle([event], now=T0).alerts) == 1
    (alert,) = outbox(ledger, T0)
    assert alert.image.repository == "payments/api" and alert.image.digest == D1
    assert alert.team == "payments"  # the source repository's policy
    assert alert.access is not None
    assert alert.access.reference == f"{REG}/quarantine/payments/api@{D1}"
    assert "quarantined" in alert.summary and "mallory" in alert.summary
    # even with no quarantine record or verdict: the location says it is held
    other = pull(5, repository="quarantine/payments/api", digest=D2, principal="eve")
    assert len(monitor.handle([other], now=T0).alerts) == 1


def test_regwarden_s_own_accesses_and_redeliveries_are_ignored(
    ledger: SpyLedger, monitor: AccessMonitor
) -> None:
    quarantine(ledger, "payments/api", D1)
    own = pull(
        1,
        repository="quarantine/payments/api",
        principal="regwarden-bot",
        user_agent="regwarden/1.0 (+quarantine)",
    )
    spoofed = pull(
        2, repository="quarantine/payments/api", principal="mallory", user_agent="regwarden/1.0"
    )
    result = monitor.handle([own, spoofed, spoofed], now=T0)
    assert (result.ignored, result.handled, len(result.alerts)) == (2, 1, 1)
    (alert,) = outbox(ledger, T0)
    assert alert.access is not None and alert.access.principal == "mallory"


def test_unexpected_pusher_and_networks(ledger: SpyLedger, monitor: AccessMonitor) -> None:
    ok = pull(1, action="push", principal="ci-deploy", digest=D2, tag="1.5.0")
    alice = pull(2, action="push", principal="alice", digest=D2, tag="1.5.0")
    outside = pull(3, principal="system:serviceaccount:prod:deployer", source_ip="192.0.2.7")
    result = monitor.handle([ok, alice, outside], now=T0)
    assert (result.findings, len(result.alerts)) == (2, 2)
    found = sorted((a.access.finding, a.access.principal) for a in outbox(ledger, T0) if a.access)
    assert found == [
        ("unexpected-puller", "system:serviceaccount:prod:deployer"),
        ("unexpected-pusher", "alice"),
    ]
    # pushes record no pulls
    monitor.flush(now=T0, force=True)
    assert {t.digest for t in ledger.pull_tallies(REG, "payments/api")} == {D1}


def test_pull_rate_per_principal_per_minute(ledger: SpyLedger, monitor: AccessMonitor) -> None:
    burst = monitor.handle([pull(n, repository="rate/app") for n in range(60)], now=T0)
    assert (burst.findings, len(burst.alerts)) == (10, 1)  # pulls 51..60, one window
    (alert,) = outbox(ledger, T0)
    assert alert.access is not None and alert.access.finding == "pull-rate"
    calm = monitor.handle([pull(100, repository="rate/app")], now=T0 + timedelta(minutes=1))
    assert calm.findings == 0  # a new minute


def another_process(ledger: SpyLedger) -> AccessMonitor:
    """A second monitor on the same ledger: a receiver replica, a function instance."""
    p = policy()
    return AccessMonitor.from_policy(p, ledger, router(p), actor="regwarden-bot")


def rate_alerts(ledger: SqliteLedger, now: datetime) -> list[Alert]:
    return [
        a for a in outbox(ledger, now) if a.access is not None and a.access.finding == "pull-rate"
    ]


def test_the_pull_rate_counts_the_pulls_every_process_wrote(ledger: SpyLedger) -> None:
    first, second = another_process(ledger), another_process(ledger)
    a = first.handle([pull(n, repository="rate/app") for n in range(30)], now=T0)
    assert a.findings == 0
    first.flush(now=T0 + timedelta(seconds=1))  # the 29 after the opening pull, written
    window = ledger.access_window(rate_key("system:serviceaccount:prod:deployer"))
    assert window is not None and window.count == 29
    # the second process joins the window with its 30 and sees the 51st pull at once
    later = T0 + timedelta(seconds=10)
    b = second.handle([pull(100 + n, repository="rate/app") for n in range(30)], now=later)
    assert (b.findings, len(b.alerts)) == (10, 1)  # pulls 51..60, one de-duplication window
    (alert,) = rate_alerts(ledger, later)
    assert "pulled 51 times in a minute, over the policy's pullRate of 50" in alert.summary


def test_a_rate_no_process_saw_alone_alerts_when_its_window_closes(ledger: SpyLedger) -> None:
    first, second = another_process(ledger), another_process(ledger)
    assert first.handle([pull(n, repository="rate/app") for n in range(30)], now=T0).findings == 0
    # the second joins before the first wrote its count: each knows of about 30
    soon = T0 + timedelta(seconds=5)
    b = second.handle([pull(100 + n, repository="rate/app") for n in range(30)], now=soon)
    assert b.findings == 0 and rate_alerts(ledger, soon) == []
    first.flush(now=soon)
    second.flush(now=soon)
    # the sweep (either process's) closes the minute with the total: 60, over 50
    closed = T0 + timedelta(seconds=61)
    keys = second.sweep(now=closed)
    (alert,) = rate_alerts(ledger, closed)
    assert [k for k in keys if k.startswith(alert.dedup_key)] != []
    assert "pulled 60 times in a minute, over the policy's pullRate of 50" in alert.summary
    assert alert.access is not None and alert.access.principal == pull().principal
    assert ledger.access_window(rate_key(pull().principal)) is None  # dropped
    assert first.sweep(now=closed) == []  # closed once


def test_a_rate_under_the_threshold_closes_without_an_alert(ledger: SpyLedger) -> None:
    first, second = another_process(ledger), another_process(ledger)
    first.handle([pull(n, repository="rate/app") for n in range(20)], now=T0)
    second.handle([pull(100 + n, repository="rate/app") for n in range(20)], now=T0)
    first.flush(now=T0)
    second.flush(now=T0)
    closed = T0 + timedelta(minutes=1)
    assert first.sweep(now=closed) == [] and outbox(ledger, closed) == []
    assert ledger.access_window(rate_key(pull().principal)) is None
    # the next minute starts from nothing
    assert first.handle([pull(200, repository="rate/app")], now=closed).findings == 0
    window = ledger.access_window(rate_key(pull().principal))
    assert window is not None and window.opened_at == closed and window.count == 0


def test_tallies_are_coalesced_and_tracking_starts_once(
    ledger: SpyLedger, monitor: AccessMonitor
) -> None:
    monitor.handle([pull(n) for n in range(200)], now=T0)
    monitor.handle([pull(1000 + n, principal=None) for n in range(3)], now=T0)
    assert ledger.tracking_calls == 1
    assert ledger.pull_tracking_since(REG, "payments/api") == T0
    assert monitor.flush(now=T0) == 2  # one row per (digest, principal)
    (batch,) = ledger.pull_batches
    assert sorted((t.principal, t.count) for t in batch) == [
        ("", 3),
        ("system:serviceaccount:prod:deployer", 200),
    ]
    # within the minute the digest waits; forced (stop, end of a Lambda batch) it goes
    monitor.handle([pull(500)], now=T0 + timedelta(seconds=10))
    assert monitor.flush(now=T0 + timedelta(seconds=10)) == 0
    assert monitor.pending_tallies == 1
    assert monitor.flush(now=T0 + timedelta(seconds=61)) == 1
    monitor.handle([pull(501)], now=T0 + timedelta(seconds=62))
    assert monitor.flush(now=T0 + timedelta(seconds=62), force=True) == 1
    counts = {t.principal: t.count for t in ledger.pull_tallies(REG, "payments/api")}
    assert counts == {"": 3, "system:serviceaccount:prod:deployer": 202}
    times = ledger.image_times(REG, "payments/api")
    assert times[D1][1] == T0 + timedelta(milliseconds=1002)  # the latest pull seen
    # the digest's state was read once for 206 pulls in its cache time
    assert ledger.state_reads <= 3


def test_state_is_cached_for_a_few_seconds(ledger: SpyLedger, monitor: AccessMonitor) -> None:
    monitor.handle([pull(1)], now=T0)
    assert outbox(ledger, T0) == []
    ledger.record_verdict(REG, "payments/api", D1, "FAILED", now=T0)
    assert monitor.handle([pull(2)], now=T0 + timedelta(seconds=1)).alerts == []  # cached
    assert len(monitor.handle([pull(3)], now=T0 + timedelta(seconds=6)).alerts) == 1


class CrashOnCommit(SqliteLedger):
    """The process dies after the window opened, before the first alert was committed."""

    def commit_outcome(self, *args: object, **kwargs: object) -> list[str] | None:
        raise SystemExit("killed")


def test_an_opening_alert_lost_to_a_crash_is_sent_when_the_window_closes(
    tmp_path: Path,
) -> None:
    p = policy()
    path = tmp_path / "ledger.db"
    SqliteLedger(path).record_verdict(REG, "payments/api", D1, "FAILED", now=T0)
    dying = AccessMonitor.from_policy(p, CrashOnCommit(path), router(p))
    with pytest.raises(SystemExit):
        dying.handle([pull()], now=T0)
    ledger = SqliteLedger(path)  # the restarted process
    assert outbox(ledger, T0) == []  # the first alert was lost with the process
    restarted = AccessMonitor.from_policy(p, ledger, router(p))
    assert restarted.handle([pull(1)], now=T0 + timedelta(seconds=5)).alerts == []  # counted
    restarted.flush(now=T0 + timedelta(seconds=6), force=True)
    keys = restarted.sweep(now=T0 + timedelta(minutes=2))
    alerts = outbox(ledger, T0 + timedelta(minutes=3))
    assert len(keys) == 2
    assert sorted((a.access.summary, a.access.count) for a in alerts if a.access) == [
        (False, 1),
        (True, 1),
    ]
    assert restarted.sweep(now=T0 + timedelta(minutes=4)) == []  # closed once


def test_closing_does_not_repeat_an_opening_alert_already_sent(
    ledger: SpyLedger, monitor: AccessMonitor
) -> None:
    ledger.record_verdict(REG, "payments/api", D1, "FAILED", now=T0)
    (key,) = monitor.handle([pull()], now=T0).alerts
    ledger.outbox_sent(key, now=T0 + timedelta(seconds=1))
    assert monitor.sweep(now=T0 + timedelta(minutes=2)) == []
    assert outbox(ledger, T0 + timedelta(minutes=3)) == []


def test_a_manifest_head_marks_the_image_used_but_is_no_pull(
    ledger: SpyLedger, monitor: AccessMonitor
) -> None:
    """A HEAD (`probe`) of a FAILED digest by an outsider: no alert, no pull counted, and
    yet the image's last-pulled time moves — containerd with pull policy Always asks with a
    HEAD and runs its cached copy, so pull-based retention must see it used."""
    ledger.record_verdict(REG, "payments/api", D1, "FAILED", now=T0)
    probe = pull(1, probe=True, source_ip="192.0.2.7")
    result = monitor.handle([probe], now=T0)
    assert (result.handled, result.findings, result.alerts) == (1, 0, [])
    assert outbox(ledger, T0) == []
    assert monitor.pending_tallies == 1
    assert monitor.flush(now=T0, force=True) == 1
    assert ledger.pull_tallies(REG, "payments/api") == []  # no pull counted
    assert ledger.image_times(REG, "payments/api")[D1][1] == probe.time  # but used
    assert ledger.pull_tracking_since(REG, "payments/api") == T0
    # many HEADs in a minute: one write of the latest
    later = [pull(10 + n, probe=True) for n in range(50)]
    monitor.handle(later, now=T0 + timedelta(seconds=61))
    assert monitor.flush(now=T0 + timedelta(seconds=61)) == 1
    assert ledger.image_times(REG, "payments/api")[D1][1] == later[-1].time
    # the same client's GET afterwards is a pull: counted, and alerted
    got = monitor.handle([pull(100, source_ip="192.0.2.7")], now=T0 + timedelta(seconds=62))
    assert got.findings >= 1 and got.alerts
    monitor.flush(now=T0 + timedelta(seconds=62), force=True)
    (tally,) = ledger.pull_tallies(REG, "payments/api")
    assert tally.count == 1
