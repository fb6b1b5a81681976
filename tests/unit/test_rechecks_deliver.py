"""The core pieces the AWS adapter hands its work to: recheck schedulers (the ledger's queue,
SQS with re-sent hops) and alert delivery with per-(alert, channel) memory."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from regwarden.errors import (
    IntakeError,
    InvalidReference,
    NotImplementedYet,
    RegistryError,
    UsageError,
)
from regwarden.model import Outcome
from regwarden.notify import Alert, DeliveryReport, deliver
from regwarden.rechecks import (
    RECHECK_EVENT_SOURCE,
    RECHECK_SCHEDULERS,
    RecheckTarget,
    parse_recheck,
    recheck_message,
)
from regwarden.reference import ImageRef
from regwarden.store import SqliteLedger

NOW = datetime(2026, 11, 27, 3, 0, tzinfo=UTC)
IMAGE = "registry.example:5000/team/web@sha256:" + "a" * 64


# -- rechecks ---------------------------------------------------------------------------------


def test_the_schedulers_are_registered_by_name() -> None:
    assert {"queue", "sqs"} <= set(RECHECK_SCHEDULERS.names())
    with pytest.raises(UsageError, match=r"unknown recheck scheduler 'pubsub'; valid: .*queue"):
        RECHECK_SCHEDULERS.get("pubsub")


def test_queue_scheduler_leases_the_recheck_a_second_after_its_time(tmp_path: Path) -> None:
    ledger = SqliteLedger(tmp_path / "ledger.db")
    try:
        schedule = RECHECK_SCHEDULERS.get("queue")(RecheckTarget(queue=ledger))
        at = NOW + timedelta(minutes=5)
        schedule(IMAGE, at, now=NOW)
        lease = timedelta(seconds=30)
        assert ledger.lease(owner="w", now=at, timeout=lease) == []
        (row,) = ledger.lease(owner="w", now=at + timedelta(seconds=1), timeout=lease)
        assert row.source == "recheck"
        assert parse_recheck(json.loads(row.body)).image.digest == "sha256:" + "a" * 64
        assert parse_recheck(json.loads(row.body)).at is None  # leased once due
    finally:
        ledger.close()


class _Sqs:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send_message(self, **kwargs: Any) -> None:
        self.sent.append(kwargs)


def test_sqs_scheduler_caps_the_delay_and_gives_each_hop_its_own_id(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import boto3

    sqs = _Sqs()
    made: list[str] = []

    def client(self: Any, service: str, **_: Any) -> _Sqs:
        made.append(service)
        return sqs

    monkeypatch.setattr(boto3.session.Session, "client", client)
    schedule = RECHECK_SCHEDULERS.get("sqs")(RecheckTarget(url="https://sqs/q"))
    assert made == []  # the client is made on the first recheck, not before
    at = NOW + timedelta(minutes=20)
    schedule(IMAGE, at, now=NOW)
    schedule(IMAGE, at, now=NOW + timedelta(minutes=15), hop=1)
    assert made == ["sqs"]
    first, second = sqs.sent
    assert first["DelaySeconds"] == 900 and second["DelaySeconds"] == 301
    bodies = [json.loads(m["MessageBody"]) for m in sqs.sent]
    assert bodies[0]["id"] != bodies[1]["id"] and bodies[1]["hop"] == 1
    assert all(m["QueueUrl"] == "https://sqs/q" for m in sqs.sent)
    again = parse_recheck(bodies[1])
    assert again.early(NOW + timedelta(minutes=15)) and not again.early(at)


def test_a_delayed_recheck_without_its_time_is_malformed() -> None:
    doc = recheck_message(IMAGE, NOW)
    assert doc["source"] == RECHECK_EVENT_SOURCE and parse_recheck(doc).at == NOW
    del doc["at"]
    with pytest.raises(IntakeError, match="malformed recheck message 'recheck:"):
        parse_recheck(doc)
    with pytest.raises(IntakeError, match="malformed recheck message 'r3'"):
        parse_recheck({"id": "r3", "image": IMAGE, "hop": "two"})
    with pytest.raises(InvalidReference):
        parse_recheck({"image": "not an image ref!"})
    with pytest.raises(IntakeError, match="got list"):
        parse_recheck([IMAGE])


# -- delivery ---------------------------------------------------------------------------------


class _Channel:
    def __init__(self, name: str, fails: Exception | None = None) -> None:
        self.name = name
        self.fails = fails
        self.sent: list[Alert] = []

    def send(self, alert: Alert) -> None:
        if self.fails is not None:
            raise self.fails
        self.sent.append(alert)


def _alert() -> Alert:
    return Alert(
        time=NOW,
        image=ImageRef.parse(IMAGE),
        team="alpha",
        outcome=Outcome.FAILED,
        action="quarantine",
        summary="critical findings",
    )


def test_a_retry_sends_only_to_the_channels_that_failed(tmp_path: Path) -> None:
    ledger = SqliteLedger(tmp_path / "ledger.db")
    try:
        good = _Channel("slack")
        flaky = _Channel("hook", RegistryError("503"))
        never = _Channel("teams", NotImplementedYet("teams is not served here"))
        channels = {c.name: c for c in (good, flaky, never)}
        names = ["slack", "hook", "teams", "topic"]

        def channel_for(name: str) -> _Channel | None:
            return channels.get(name)

        key = _alert().dedup_key
        first = deliver(_alert(), names, channel_for, ledger, now=NOW, unavailable="the topic")
        assert first == DeliveryReport(
            key,
            sent=("slack",),
            skipped=("teams (teams is not served here)", "topic (the topic)"),
            failed=("hook",),
        )
        with pytest.raises(RegistryError, match="failed on hook; sent to slack"):
            first.raise_for_failures()
        flaky.fails = None
        second = deliver(_alert(), names, channel_for, ledger, now=NOW)
        second.raise_for_failures()
        assert second.sent == ("hook",)
        assert "slack (already delivered)" in second.skipped
        assert len(good.sent) == 1 and len(flaky.sent) == 1
        later = NOW + timedelta(days=31)  # past the memory: delivered again
        assert deliver(_alert(), ["slack"], channel_for, ledger, now=later).sent == ("slack",)
    finally:
        ledger.close()
