"""Exactly-once effects over at-least-once delivery, on a real distribution 2.8 behind the
fault proxy: an attempt that fails between two writes of a `move` leaves its delivery
unhandled, and the retry (or the recovery sweep, when no retry comes) finishes the move
from the ledger with one verdict and one alert; a write that landed unrecorded is finished
too; an alert whose channel is down waits in the outbox and goes out later with the same id.

(SIGKILL at every step is the chaos suite's job, `tests/chaos/`; these are the same
invariants, one fault each, fast.)"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from support.proxy import RegistryProxy

from regwarden import recovery
from regwarden.actions import action_key
from regwarden.devtools import make_image, push_image
from regwarden.errors import ActionIncomplete, RegistryError
from regwarden.model import EventKind, ImageEvent, Outcome
from regwarden.notify import Alert, DeliveryFailed, everything_to
from regwarden.oci import RegistryClient
from regwarden.pipeline import Pipeline
from regwarden.reference import ImageRef
from regwarden.runtime import Runtime, load_runtime
from regwarden.signatures.keys import generate_private_key
from regwarden.store import SqliteLedger

pytestmark = pytest.mark.integration

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
LATE = T0 + timedelta(hours=1)  # past the grace period: unsigned → FAILED
CI = "containers/5.23.1"


@dataclass
class Sink:
    """An alert channel that can be down."""

    name: str = "sink"
    down: bool = False
    alerts: list[Alert] = field(default_factory=list)

    def send(self, alert: Alert) -> None:
        if self.down:
            raise RegistryError("sink is down")
        self.alerts.append(alert)


@pytest.fixture
def runtime(tmp_path: Path, repo: str) -> Iterator[Runtime[SqliteLedger]]:
    pem = generate_private_key("ecdsa-p256").public_key.pem
    (tmp_path / "cosign.pub").write_bytes(pem if isinstance(pem, bytes) else pem.encode())
    (tmp_path / "regwarden.yaml").write_text(
        "apiVersion: regwarden/v1\nkind: Policy\n"
        "defaults: {quarantine: {strategy: move}}\nrepositories:\n"
        f'  - match: "{repo}"\n    team: t\n'
        '    signatures: {required: true, cosign: {keys: ["file://cosign.pub"]}, '
        "gracePeriod: 1m}\n"
    )
    rt = load_runtime(tmp_path / "regwarden.yaml", ledger=tmp_path / "ledger.db")
    yield rt
    rt.close()
    rt.ledger.close()


@pytest.fixture
def sink() -> Sink:
    return Sink()


@pytest.fixture
def gate(runtime: Runtime[SqliteLedger], sink: Sink) -> Pipeline:
    return dataclasses.replace(runtime.pipeline(), router=everything_to(sink))


def push_event(host: str, repo: str, digest: str, *, n: int = 0) -> ImageEvent:
    return ImageEvent(
        kind=EventKind.PUSHED,
        source="distribution",
        image=ImageRef(registry=host, repository=repo, tag="1.0.0", digest=digest),
        time=T0,
        delivery_id=f"push-{digest}-{n}",
        user_agent=CI,
    )


def verdict_log(ledger: SqliteLedger) -> list[tuple[Any, ...]]:
    with sqlite3.connect(ledger.path) as db:
        return db.execute("SELECT delivery_id, digest, outcome FROM verdict_log").fetchall()


def moved(client: RegistryClient, repo: str, digest: str) -> tuple[bool, bool]:
    """(still in the source, in quarantine)"""
    return (
        client.head_manifest(repo, digest) is not None,
        client.head_manifest(f"quarantine/{repo}", digest) is not None,
    )


def interrupted_move(proxy: RegistryProxy, gate: Pipeline, repo: str, digest: str) -> ImageEvent:
    """Handle a push whose move fails at the source DELETE (every attempt, until cleared):
    copied to quarantine, still in the source. Returns the event."""
    event = push_event(proxy.host, repo, digest)
    proxy.inject(503, count=None, method="DELETE", path=r"/manifests/")
    with pytest.raises(RegistryError):
        gate.handle(event, now=LATE, final_attempt=False)
    return event


@pytest.fixture
def pushed(client: RegistryClient, repo: str) -> str:
    return push_image(client, repo, make_image(seed=4101), tag="1.0.0")


def test_a_failure_between_copy_and_delete_leaves_the_delivery_to_its_retry(
    proxy: RegistryProxy,
    client: RegistryClient,
    gate: Pipeline,
    sink: Sink,
    repo: str,
    pushed: str,
) -> None:
    event = interrupted_move(proxy, gate, repo, pushed)

    assert moved(client, repo, pushed) == (True, True)  # copied, still deployable
    assert gate.ledger.delivery_outcome(f"distribution:{event.delivery_id}", now=LATE) is None
    assert verdict_log(gate.ledger) == [] and sink.alerts == []

    proxy.clear()
    again = gate.handle(event, now=LATE + timedelta(seconds=5), final_attempt=False)

    assert again.verdict is not None and again.verdict.outcome is Outcome.FAILED
    assert again.actions and again.actions[0].startswith("quarantine (move")
    assert moved(client, repo, pushed) == (False, True)
    assert verdict_log(gate.ledger) == [(f"distribution:{event.delivery_id}", pushed, "FAILED")]
    assert [a.action for a in sink.alerts] == ["quarantine"]
    # a third delivery of the same event is a duplicate and does nothing
    third = gate.handle(event, now=LATE + timedelta(seconds=9))
    assert third.ignored == "duplicate delivery"
    assert len(verdict_log(gate.ledger)) == 1 and len(sink.alerts) == 1


class LosesTheDeleteStep(SqliteLedger):
    """Dies (raises) right after the source DELETE landed, before the step is recorded."""

    armed = True

    def finish_action(self, key: str, *, status: str, state: dict[str, Any] | None = None) -> None:
        if self.armed and state is not None and state.get("step") == "deleted":
            self.armed = False
            raise RuntimeError("killed after the DELETE landed")
        super().finish_action(key, status=status, state=state)


def test_a_delete_that_landed_unrecorded_is_finished_not_taken_for_a_vanished_image(
    registry: Any,
    client: RegistryClient,
    runtime: Runtime[SqliteLedger],
    sink: Sink,
    repo: str,
    pushed: str,
    tmp_path: Path,
) -> None:
    ledger = LosesTheDeleteStep(tmp_path / "ledger.db")
    gate = dataclasses.replace(runtime.pipeline(), ledger=ledger, router=everything_to(sink))
    event = push_event(registry.host, repo, pushed)

    with pytest.raises(RuntimeError, match="killed"):
        gate.handle(event, now=LATE, final_attempt=False)
    assert moved(client, repo, pushed) == (False, True)  # the move's writes all landed
    intent = ledger.action(
        action_key("quarantine", ImageRef.parse(f"{registry.host}/{repo}@{pushed}"))
    )
    assert (
        intent is not None and intent.status == "intent" and intent.state["step"] == "rolled-back"
    )

    again = gate.handle(event, now=LATE + timedelta(seconds=5))

    assert again.ignored is None, again.ignored  # not "image no longer exists"
    assert again.verdict is not None and again.verdict.outcome is Outcome.FAILED
    done = ledger.action(intent.key)
    assert done is not None and done.status == "done"
    assert verdict_log(ledger) == [(f"distribution:{event.delivery_id}", pushed, "FAILED")]
    assert len(sink.alerts) == 1 and sink.alerts[0].action == "quarantine"
    ledger.close()


class DiesBeforeTheOutcome(SqliteLedger):
    """Dies (raises) once, after the quarantine finished, before its outcome is committed."""

    armed = True

    def commit_outcome(self, outcome: Any, *, now: datetime, ttl: timedelta) -> list[str] | None:
        if self.armed:
            self.armed = False
            raise RuntimeError("killed before the outcome was committed")
        return super().commit_outcome(outcome, now=now, ttl=ttl)


def test_a_move_finished_but_never_committed_still_alerts_once(
    registry: Any,
    client: RegistryClient,
    runtime: Runtime[SqliteLedger],
    sink: Sink,
    repo: str,
    pushed: str,
    tmp_path: Path,
) -> None:
    """The image is already in quarantine when the delivery comes back, and no outcome was
    committed: the redelivery commits the stored verdict with the quarantine's alert (once:
    another event for the same image adds nothing)."""
    ledger = DiesBeforeTheOutcome(tmp_path / "ledger.db")
    gate = dataclasses.replace(runtime.pipeline(), ledger=ledger, router=everything_to(sink))
    event = push_event(registry.host, repo, pushed)

    with pytest.raises(RuntimeError, match="killed"):
        gate.handle(event, now=LATE, final_attempt=False)
    assert moved(client, repo, pushed) == (False, True)
    assert sink.alerts == [] and verdict_log(ledger) == []

    again = gate.handle(event, now=LATE + timedelta(seconds=5))

    assert again.verdict is not None and again.verdict.outcome is Outcome.FAILED
    assert again.notes == ("already quarantined",)
    assert verdict_log(ledger) == [(f"distribution:{event.delivery_id}", pushed, "FAILED")]
    assert [a.action for a in sink.alerts] == ["quarantine"]
    assert sink.alerts[0].summary.startswith("FAILED: quarantine (move → quarantine/")
    other = push_event(registry.host, repo, pushed, n=1)  # the tag's own event, say
    gate.handle(other, now=LATE + timedelta(seconds=9))
    assert len(sink.alerts) == 1  # same alert key: the outbox already holds it
    ledger.close()


def test_the_sweep_finishes_a_move_whose_event_never_comes_back(
    proxy: RegistryProxy,
    client: RegistryClient,
    gate: Pipeline,
    sink: Sink,
    repo: str,
    pushed: str,
) -> None:
    interrupted_move(proxy, gate, repo, pushed)
    proxy.clear()

    report = recovery.sweep(gate, now=LATE + timedelta(seconds=1))

    assert report.resumed == 1 and report.still_failing == 0 and report.alerts_sent == 1
    assert moved(client, repo, pushed) == (False, True)
    assert [(d, o) for d, _, o in verdict_log(gate.ledger)] == [(None, "FAILED")]
    assert [a.action for a in sink.alerts] == ["quarantine"]
    assert recovery.sweep(gate, now=LATE + timedelta(seconds=2)).resumed == 0  # nothing left


def test_a_delete_that_keeps_failing_is_alerted_with_its_state_and_retried_until_whole(
    proxy: RegistryProxy,
    client: RegistryClient,
    gate: Pipeline,
    sink: Sink,
    repo: str,
    pushed: str,
) -> None:
    event = push_event(proxy.host, repo, pushed)
    proxy.inject(503, count=None, method="DELETE", path=r"/manifests/")

    with pytest.raises(ActionIncomplete, match="still present"):  # dead-lettered, not done
        gate.handle(event, now=LATE, final_attempt=True)

    assert gate.ledger.last_verdict(proxy.host, repo, pushed) == "ERROR"
    assert gate.ledger.delivery_outcome(f"distribution:{event.delivery_id}", now=LATE) is None
    assert moved(client, repo, pushed) == (True, True)
    assert len(sink.alerts) == 1 and sink.alerts[0].state is not None
    assert "still present" in sink.alerts[0].state
    # the sweep backs off: nothing is tried before the retry is due
    early = recovery.sweep(gate, now=LATE + timedelta(seconds=1))
    assert early.resumed == early.still_failing == 0
    # still failing when due: the state is unchanged, so no second alert
    due = recovery.sweep(gate, now=LATE + timedelta(minutes=1))
    assert due.still_failing == 1 and len(sink.alerts) == 1

    proxy.clear()
    whole = recovery.sweep(gate, now=LATE + timedelta(minutes=5))

    assert whole.resumed == 1
    assert moved(client, repo, pushed) == (False, True)
    assert [(a.outcome, a.state) for a in sink.alerts][1] == (Outcome.FAILED, None)
    assert gate.ledger.last_verdict(proxy.host, repo, pushed) == "FAILED"


def test_an_alert_whose_channel_is_down_waits_in_the_outbox_and_keeps_its_id(
    registry: Any,
    client: RegistryClient,
    gate: Pipeline,
    sink: Sink,
    repo: str,
    pushed: str,
) -> None:
    sink.down = True
    handled = gate.handle(push_event(registry.host, repo, pushed), now=LATE)

    assert handled.verdict is not None and handled.verdict.outcome is Outcome.FAILED
    assert handled.alerts == 0 and sink.alerts == []
    assert isinstance(gate.ledger, SqliteLedger) and gate.ledger.outbox_unsent() == 1

    sink.down = False
    assert recovery.sweep(gate, now=LATE + timedelta(seconds=1)).alerts_sent == 0  # backing off
    report = recovery.sweep(gate, now=LATE + timedelta(minutes=2))

    assert report.alerts_sent == 1 and gate.ledger.outbox_unsent() == 0
    assert sink.alerts[0].image.digest == pushed and sink.alerts[0].action == "quarantine"
    # a repeat push of the same digest is the same alert: not queued again
    gate.handle(push_event(registry.host, repo, pushed, n=1), now=LATE + timedelta(minutes=3))
    assert recovery.sweep(gate, now=LATE + timedelta(hours=2)).alerts_sent == 0
    assert len(sink.alerts) == 1


def test_a_duplicate_of_a_pending_verdict_gives_back_its_recheck(
    registry: Any, client: RegistryClient, gate: Pipeline, repo: str, pushed: str
) -> None:
    event = push_event(registry.host, repo, pushed)
    first = gate.handle(event, now=T0 + timedelta(seconds=10))  # within grace: PENDING
    assert first.verdict is not None and first.verdict.outcome is Outcome.PENDING
    assert first.recheck_target is not None

    dup = gate.handle(event, now=T0 + timedelta(seconds=20))

    assert dup.ignored == "duplicate delivery"
    assert dup.recheck_at == first.recheck_at
    assert dup.recheck_target == first.recheck_target


@dataclass
class Throttled(Sink):
    """Answers like a receiver asking for ten minutes (Retry-After: 600)."""

    def send(self, alert: Alert) -> None:
        if self.down:
            raise DeliveryFailed("sink: HTTP 429", status=429, retry_after=600)
        self.alerts.append(alert)


def test_the_outbox_waits_as_long_as_the_receiver_asked(
    registry: Any, client: RegistryClient, runtime: Runtime[SqliteLedger], repo: str, pushed: str
) -> None:
    sink = Throttled(down=True)
    gate = dataclasses.replace(runtime.pipeline(), router=everything_to(sink))
    gate.handle(push_event(registry.host, repo, pushed), now=LATE)
    sink.down = False

    assert recovery.sweep(gate, now=LATE + timedelta(minutes=5)).alerts_sent == 0
    assert recovery.sweep(gate, now=LATE + timedelta(minutes=11)).alerts_sent == 1
    assert [a.image.digest for a in sink.alerts] == [pushed]


class BlindToOutcomes(SqliteLedger):
    """Answers 'not handled yet' to every look-up, as two attempts racing each other see it
    (both read before either commits)."""

    def delivery_outcome(self, delivery_id: str, *, now: datetime) -> Any:
        return None


def test_a_duplicate_that_raced_past_the_check_commits_nothing(
    registry: Any,
    client: RegistryClient,
    runtime: Runtime[SqliteLedger],
    sink: Sink,
    repo: str,
    pushed: str,
    tmp_path: Path,
) -> None:
    ledger = BlindToOutcomes(tmp_path / "ledger.db")
    gate = dataclasses.replace(runtime.pipeline(), ledger=ledger, router=everything_to(sink))
    event = push_event(registry.host, repo, pushed)
    first = gate.handle(event, now=LATE)

    second = gate.handle(event, now=LATE + timedelta(seconds=1))

    assert first.verdict is not None and second.ignored == "duplicate delivery"
    assert verdict_log(ledger) == [(f"distribution:{event.delivery_id}", pushed, "FAILED")]
    assert len(sink.alerts) == 1
    ledger.close()
