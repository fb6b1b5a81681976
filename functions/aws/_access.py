"""The access function: ECR pulls and pushes as CloudTrail records them, watched.

    CloudTrail (BatchGetImage, PutImage) → EventBridge rule (State
    ENABLED_WITH_ALL_CLOUDTRAIL_MANAGEMENT_EVENTS) → SQS (+DLQ) → `on_access`:

    per record:  body JSON → detail-type "AWS API Call via CloudTrail"? →
                 `parse_cloudtrail_access` (one access event per image id) → not one of
                 regwarden's own roles, a registry this stack watches → `AccessMonitor.handle`
    per batch:   `flush(force=True)` (the pull counts, coalesced over the batch) → the sweep
                 of due alert windows (at most every `sweep_interval` seconds per warm
                 function) → the alerts those steps committed, sent to the alerts topic
    per tick:    the one-minute schedule sweeps the windows too, so a quiet stream still
                 gets its summary when a window closes

The monitor answers from the ledger alone (tag history, quarantine records, verdicts): no
ECR call, no registry credentials. Alerts are committed to the DynamoDB outbox by the
monitor and sent here as `on_push` sends its own (to the SNS alerts topic, with the
routing attributes); one that fails stays in the outbox, and the `recovery` function sends
it on its next tick.

Delivery is at least once, like everything SQS feeds: there is no idempotency record per
event (two DynamoDB writes per pull would outweigh the work). A redelivered record cannot
alert twice (a window alerts once, its outbox key is unique) but its pulls are counted
again. The pull counts are flushed at the end of every batch, before SQS deletes the
records: a frozen or reclaimed Lambda environment keeps nothing in memory that was not
written. A flush that fails fails the whole batch, which comes back.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from regwarden import warm
from regwarden.store import DynamoLedger

from ._app import ColdStart

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.batch import BatchProcessor
    from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
    from aws_lambda_powertools.utilities.typing import LambdaContext

    from regwarden.access import AccessEvent, AccessMonitor
    from regwarden.notify import Router
    from regwarden.policy import Policy
    from regwarden.store import OutboxItem, Outcome

    from ._settings import AccessSettings, PolicySource, SecretEnv, Settings

__all__ = [
    "CLOUDTRAIL",
    "FUNCTION",
    "SWEEP",
    "access_record",
    "invoke",
    "reset",
    "state",
]

FUNCTION = "on_access"
CLOUDTRAIL = "AWS API Call via CloudTrail"
"""The EventBridge detail-type of a CloudTrail record (what the access rule forwards)."""
SWEEP = "access-sweep"
"""The schedule's payload names this (`{"regwarden": "access-sweep", ...}`)."""

RecordHandler = Callable[["SQSRecord"], dict[str, Any]]


def clock() -> datetime:
    """The time every step is judged at (tests replace it to let a window close)."""
    return datetime.now(UTC)


class OutboxLedger(DynamoLedger):
    """The DynamoDB ledger, remembering the outbox rows its commits added, so the
    invocation that committed an alert sends it (the rows another commit added first are
    not ours: a duplicate of an alert is never sent twice from here)."""

    def __init__(self, table: str) -> None:
        super().__init__(table)
        self.added: list[OutboxItem] = []

    def commit_outcome(
        self, outcome: Outcome, *, now: datetime, ttl: timedelta
    ) -> list[str] | None:
        added = super().commit_outcome(outcome, now=now, ttl=ttl)
        if added:
            fresh = set(added)
            self.added += [a for a in outcome.alerts if a.key in fresh]
        return added

    def take(self) -> list[OutboxItem]:
        """The rows added since the last call (and forget them)."""
        taken, self.added = self.added, []
        return taken


# -- cold-start state ---------------------------------------------------------------------------


@dataclass
class State:
    """Read or built once per cold start, and again when the policy changed or a secret it
    used was rotated (`_app.ColdStart`). The monitor's in-memory tallies are flushed at the
    end of every invocation, so a rebuilt state loses nothing."""

    settings: Settings
    access: AccessSettings
    source: PolicySource
    ledger: OutboxLedger
    router: Router
    monitor: AccessMonitor
    allowed_hosts: frozenset[str]
    """The registries this stack watches (normalised): its own ECR host, the policy's
    `registries:` hosts, `REGWARDEN_REGISTRIES`. Access to any other (a cross-account pull
    CloudTrail also logs here) is not this stack's to count."""
    secrets: SecretEnv | None = None
    """Channel secrets, only when no alerts topic is set (the policy's routes are used)."""
    last_sweep: float | None = field(default=None)
    """`time.monotonic()` of this state's last sweep after a batch."""

    @property
    def policy(self) -> Policy:
        return self.source.policy

    @property
    def ttl(self) -> float:
        return float(self.settings.policy_ttl)

    def stale(self) -> bool:
        return self.source.changed() or (self.secrets is not None and self.secrets.rotated())

    def sweep_due(self) -> bool:
        interval = self.access.sweep_interval
        return self.last_sweep is None or time.monotonic() - self.last_sweep >= interval


_HOME: list[str] = []
"""This function's ECR host, from the first invocation's ARN (when REGWARDEN_REGISTRY is
not set)."""


def state() -> State:
    """The cold-start state, rebuilt first when its policy TTL passed and it is stale."""
    return _STATES.refresh(FUNCTION)


def reset() -> None:
    """Forget the cold-start state (tests change the environment between cases)."""
    _STATES.reset()
    _HOME.clear()


def _close(st: State) -> None:
    st.ledger.close()


def _build(function: str) -> State:
    from regwarden.access import AccessMonitor
    from regwarden.runtime import configured_hosts

    from ._app import _structured_core_logs, alerts_router
    from ._settings import AccessSettings, Settings, load_source

    _structured_core_logs()  # first: the policy read below must not be logged unredacted
    settings = Settings.from_env()
    access = AccessSettings.from_env()
    source = load_source(settings.policy)
    policy = source.policy
    ledger = OutboxLedger(settings.table)
    router = alerts_router(settings)
    secrets = None
    if router is None:  # no alerts topic: the policy's own routes and channels
        from regwarden.policy import policy_secrets
        from regwarden.runtime import Runtime

        from ._settings import SecretEnv

        secrets = SecretEnv(os.environ, policy_secrets(policy), store=settings.secret_store)
        router = Runtime(policy, ledger=ledger, env=secrets).router()
    home = settings.registry or (_HOME[0] if _HOME else None)
    allowed = frozenset(configured_hosts(policy, [*settings.registries, *([home] if home else [])]))
    monitor = AccessMonitor.from_policy(
        policy, ledger, router, actor=os.environ.get("REGWARDEN_ACTOR") or None
    )
    return State(settings, access, source, ledger, router, monitor, allowed, secrets=secrets)


_STATES: warm.ColdStart[State] = ColdStart(_build, _close)


# -- the handler's body -------------------------------------------------------------------------


def invoke(
    event: Mapping[str, Any] | None,
    context: LambdaContext,
    *,
    processor: BatchProcessor,
    record_handler: RecordHandler,
    logger: Logger,
    metrics: Metrics,
) -> PartialItemFailureResponse | dict[str, Any]:
    """An SQS batch (partial failures reported), or the schedule's sweep tick."""
    from aws_lambda_powertools.utilities.batch import process_partial_response

    from regwarden.errors import UsageError

    from ._settings import home_registry

    home = home_registry(str(getattr(context, "invoked_function_arn", "") or ""))
    if home is not None and not _HOME:
        _HOME.append(home)
    st = state()
    metrics.add_dimension(name="function", value=FUNCTION)
    if event is not None and "Records" in event:
        response = process_partial_response(
            event=dict(event), record_handler=record_handler, processor=processor, context=context
        )
        _finish(st, sweep=st.sweep_due(), logger=logger, metrics=metrics)
        return response
    if event is not None and event.get("regwarden") == SWEEP:
        return _finish(st, sweep=True, logger=logger, metrics=metrics)
    keys = sorted(event or {})
    raise UsageError(
        f"{FUNCTION}: got an event with keys {keys}, expected an SQS batch (Records) or "
        f'the sweep schedule\'s {{"regwarden": "{SWEEP}"}}'
    )


def access_record(record: SQSRecord, *, logger: Logger, metrics: Metrics) -> dict[str, Any]:
    """One SQS record: an EventBridge CloudTrail event → access events → the monitor.
    Raises on failure (the record goes in `batchItemFailures`, its error noted for the
    dead-letter listing); returns a JSON summary."""
    from regwarden.access import parse_cloudtrail_access
    from regwarden.errors import IntakeError
    from regwarden.intake import host_allowed
    from regwarden.intake.eventbridge import ecr_registry_host

    from ._app import _noted, _record_doc

    st = state()
    with _noted(st.ledger, FUNCTION, record, logger=logger):
        doc = _record_doc(record)
        logger.set_correlation_id(doc["id"])
        if doc.get("detail-type") != CLOUDTRAIL:
            raise IntakeError(
                f"{FUNCTION} got detail-type {doc.get('detail-type')!r}, expected {CLOUDTRAIL!r}"
            )
        parsed = parse_cloudtrail_access(doc, registry_for_account=ecr_registry_host)
        events: list[AccessEvent] = []
        own = foreign = 0
        for ev in parsed:
            if ev.principal is not None and ev.principal in st.access.ignore_principals:
                own += 1
            elif not host_allowed(ev.registry, st.allowed_hosts):
                foreign += 1
            else:
                events.append(ev)
        result = st.monitor.handle(events, now=clock()) if events else None
    handled = result.handled if result is not None else 0
    ignored = own + foreign + (result.ignored if result is not None else 0)
    alerts = list(result.alerts) if result is not None else []
    metrics.add_metric(name="AccessEvents", unit=MetricUnit.Count, value=len(parsed))
    if ignored:
        metrics.add_metric(name="AccessEventsIgnored", unit=MetricUnit.Count, value=ignored)
    if alerts:
        metrics.add_metric(name="AccessAlerts", unit=MetricUnit.Count, value=len(alerts))
    summary: dict[str, Any] = {"id": doc["id"], "events": len(parsed), "handled": handled}
    if own or foreign:
        summary.update(own=own, foreign=foreign)
    if alerts:
        summary["alerts"] = alerts
        logger.info("access alert", extra={"summary": summary})
    return summary


def _finish(st: State, *, sweep: bool, logger: Logger, metrics: Metrics) -> dict[str, Any]:
    """End of a batch or a tick: the pull counts written, due windows closed, and every
    alert this invocation committed sent. The alerts are sent even when a write failed
    (then the error propagates and the batch comes back)."""
    now = clock()
    writes, summaries = 0, []
    try:
        writes = st.monitor.flush(now=now, force=True)
        if sweep:
            summaries = st.monitor.sweep(now=now)
            st.last_sweep = time.monotonic()
    finally:
        sent, failed = _deliver(st, st.ledger.take(), now=now)
        if sent:
            metrics.add_metric(name="AlertsSent", unit=MetricUnit.Count, value=sent)
        if failed:
            metrics.add_metric(name="AlertDeliveryFailures", unit=MetricUnit.Count, value=failed)
    if writes:
        metrics.add_metric(name="PullWrites", unit=MetricUnit.Count, value=writes)
    if summaries:
        metrics.add_metric(name="AccessSummaries", unit=MetricUnit.Count, value=len(summaries))
    out = {"writes": writes, "summaries": summaries, "sent": sent, "failed": failed}
    if sweep or writes or sent or failed:
        logger.info("access batch finished", extra={"finish": out})
    return out


def _deliver(st: State, items: list[OutboxItem], *, now: datetime) -> tuple[int, int]:
    """Send the outbox rows this invocation added, each to its channel (the alerts topic);
    a refusal leaves the row pending with a backoff, for the recovery function. Returns
    (sent, failed)."""
    from regwarden.notify import send_outbox

    return send_outbox(items, router=st.router, ledger=st.ledger, now=now)
