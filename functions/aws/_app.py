"""What the AWS handlers share: cold-start state, one SQS record → the shared pipeline, and
the Powertools pieces (Logger, Tracer, Metrics, idempotency on DynamoDB).

Handlers stay thin (parse → call core → render); the core is `regwarden.pipeline`. Module
import holds Powertools' Logger, Tracer and Metrics and the batch utility: the Tracer is
built at module scope as Powertools intends (its constructor imports the X-Ray SDK; with
tracing on it patches botocore and httpx, the only libraries the handlers call through).
The core, boto3 and the idempotency layer are imported on the first record of a cold
start (`state()`), and kept for the warm process; the AWS clients they make come from the
process's one boto3 session (`regwarden.botocore_config`; secrets are read through
Powertools parameters, which keep their own).

Flow per SQS record (EventBridge event in the body):

    body JSON → detail-type accepted by this function? → idempotent on the event id
    (Powertools, DynamoDB) → parse_eventbridge → host allowed? → pipeline.handle →
    metrics, recheck (`regwarden.rechecks`, the `sqs` scheduler)

The notify function delivers each alert with `regwarden.notify.deliver`, as the core
does anywhere. A warm function re-reads its policy every `REGWARDEN_POLICY_TTL` seconds
and rebuilds its state when the policy changed or a secret it used was rotated.

Exactly once in effect: the pipeline commits a delivery's outcome (verdict, alerts to
send) in one DynamoDB transaction after its action finished, and the idempotency record
is COMPLETED only when the pipeline returned. Any exception propagates: Powertools drops
the in-progress record and the record goes to `batchItemFailures`, so SQS redelivers it.
A Lambda killed or timed out mid-action leaves the in-progress record, which expires with
that invocation's time (its context is registered per invocation); the redelivery, after
the queue's visibility timeout, resumes the unfinished action from its DynamoDB intent.
What no redelivery finishes, the scheduled `recovery` function does.

A record that fails (malformed event, registry error before the last attempt) is reported
in `batchItemFailures` and its error noted in the ledger (`regwarden deadletters list
--source aws` shows the first and the latest); SQS retries it and after `maxReceiveCount`
moves it to the DLQ. An event for a registry host the function may not contact is
rejected, logged and not retried (no attempt could succeed).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit

from functions.aws import COLLECTOR

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
    from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig
    from aws_lambda_powertools.utilities.typing import LambdaContext

    from regwarden import warm
    from regwarden.notify import Alert, Notifier, Router
    from regwarden.pipeline import Handled, Pipeline
    from regwarden.policy import Policy
    from regwarden.providers import ProviderOptions
    from regwarden.rechecks import RecheckScheduler
    from regwarden.runtime import Runtime
    from regwarden.store import DynamoLedger
    from regwarden.warm import Warm

    from ._settings import PolicySource, SecretEnv, Settings

__all__ = [
    "FAILURE_TTL",
    "GATE_FUNCTIONS",
    "IDEMPOTENCY_TTL",
    "RECOVERY",
    "TRACED_MODULES",
    "ColdStart",
    "gate_record",
    "notify_record",
    "powertools",
    "recover",
    "reset",
    "start",
    "state",
]

GATE_FUNCTIONS: dict[str, frozenset[str]] = {
    "on_push": frozenset(
        {
            "ECR Image Action",
            "ECR Referrer Action",
            "ECR Pull Through Cache Action",
            "ECR Replication Action",
        }
    ),
    "on_scan": frozenset({"ECR Image Scan", "Inspector2 Scan"}),
}
"""Function → the EventBridge detail-types its queue is fed (anything else is misrouted)."""
IDEMPOTENCY_TTL = timedelta(days=7)
"""How long a processed event id is remembered (EventBridge and SQS retry for less)."""
RECOVERY = "recovery"
"""The scheduled function that finishes unfinished actions and sends pending alerts."""
FAILURE_TTL = timedelta(days=18)
"""How long a failed record's error is kept: the queue's retention (4 days) plus its
dead-letter queue's (14 days)."""
_MAX_ERROR = 2000
"""Characters of an error kept for the dead-letter listing."""
TRACED_MODULES = ("botocore", "httpx")
"""What X-Ray patches when tracing is on: the AWS SDK and the registry client, the only
libraries the handlers make calls through (Powertools' default patches every library the
X-Ray SDK knows and can import)."""

log = logging.getLogger("regwarden.aws")


class _Stdout:
    """Whatever `sys.stdout` is when a line is written (Lambda's never changes; a test
    runner's does between tests)."""

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


def powertools(function: str) -> tuple[Logger, Tracer, Metrics]:
    """Logger (structured JSON), Tracer and Metrics for one handler module, at its import.

    The Tracer imports the X-Ray SDK whether tracing is on or not (Powertools has no lazy
    mode); a cold start pays for it either way, so it is built here, the standard way.
    Powertools' Metrics share one metric set per process, so the `function` dimension is
    added per record (`gate_record`, `notify_record`), not as a default here.
    """
    service = os.environ.get("POWERTOOLS_SERVICE_NAME") or "regwarden"
    logger = Logger(service=service, function=function, stream=_Stdout())  # type: ignore[arg-type]
    tracer = Tracer(service=service, patch_modules=TRACED_MODULES)
    metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or "regwarden")
    return logger, tracer, metrics


# -- cold-start state -------------------------------------------------------------------------


@dataclass
class State:
    """Everything read or built once per cold start (and again when the policy changes)."""

    function: str
    settings: Settings
    source: PolicySource
    ledger: DynamoLedger
    runtime: Runtime[DynamoLedger]
    keys: SecretEnv
    """The secrets the gate itself needs (keys), fetched at cold start (fail closed)."""
    secrets: SecretEnv
    """`REGWARDEN_SECRET_*` → value, fetched on first use (channel URLs, HMAC keys)."""
    idempotency: IdempotencyConfig
    idempotent: Callable[..., dict[str, Any]]
    pipeline: Pipeline | None = None
    """The push pipeline (gate functions and recovery)."""
    recheck: RecheckScheduler | None = None
    """Brings a PENDING verdict back on this function's own queue (none configured: None)."""
    channels: dict[str, Notifier] = field(default_factory=dict)
    allowed_hosts: frozenset[str] = frozenset()
    """The registry hosts this function may contact (normalised)."""

    @property
    def policy(self) -> Policy:
        return self.source.policy

    @property
    def gate(self) -> Pipeline:
        assert self.pipeline is not None, f"{self.function} is not a gate function"
        return self.pipeline

    @property
    def ttl(self) -> float:
        return float(self.settings.policy_ttl)

    def stale(self) -> bool:
        """The policy changed, or a secret built into this state was rotated."""
        return self.source.changed() or self.keys.rotated() or self.secrets.rotated()


_S = TypeVar("_S", bound="Warm")


def ColdStart(  # stands for the class it makes
    build: Callable[[str], _S], close: Callable[[_S], None]
) -> warm.ColdStart[_S]:
    """`regwarden.warm.ColdStart` with the Lambda cold start's collector pause: resumed
    (and what the cold start made frozen) after the first build, unfrozen when a state is
    rebuilt so the old one can be collected. The core is imported here, on the first
    record, never with a handler module."""
    return COLLECTOR.cold_start(build, close)


def state(function: str) -> State:
    """The cold-start state of `function`, built on first use."""
    return _states().get(function)


def reset() -> None:
    """Forget the cold-start state (tests change the environment between cases)."""
    if _STATES:
        _STATES[0].reset()


def _close(st: State) -> None:
    st.runtime.close()
    st.ledger.close()


_HOMES: dict[str, str] = {}
"""function → its own ECR host, from the first invocation's ARN (for `_build`)."""


def start(function: str, context: LambdaContext) -> State:
    """Per invocation: the (cached, refreshed past its TTL) state, with the Lambda context
    registered so an in-progress idempotency record expires when this invocation's time
    runs out (a killed invocation's record then lets the redelivery through)."""
    from ._settings import home_registry

    home = home_registry(str(getattr(context, "invoked_function_arn", "") or ""))
    if home is not None:
        _HOMES.setdefault(function, home)
    st = _states().refresh(function)
    st.idempotency.register_lambda_context(context)
    return st


def provider_defaults(settings: Settings) -> ProviderOptions:
    """How the functions open registries: ECR's `/v2/` where the settings say, and a
    `move` quarantine creates its destination repository (ECR's put never does)."""
    from regwarden.providers import ProviderOptions

    return ProviderOptions(data_plane_host=settings.ecr_data_plane, create_repositories=True)


def alerts_router(settings: Settings) -> Router | None:
    """Every alert to the alerts topic (`notify` fans out from there); None: the policy's
    routes."""
    if not settings.alerts_topic:
        return None
    from regwarden.notify import SnsChannel, everything_to

    return everything_to(SnsChannel("alerts", settings.alerts_topic))


def _build(function: str) -> State:
    from aws_lambda_powertools.utilities.idempotency import (
        DynamoDBPersistenceLayer,
        IdempotencyConfig,
        idempotent_function,
    )

    from regwarden import botocore_config
    from regwarden.policy import policy_secrets
    from regwarden.rechecks import RECHECK_SCHEDULERS, RecheckTarget
    from regwarden.runtime import Runtime, configured_hosts
    from regwarden.store import TTL_ATTRIBUTE, DynamoLedger

    from ._settings import SecretEnv, Settings, load_source

    _structured_core_logs()  # first: the policy read below must not be logged unredacted
    settings = Settings.from_env()
    source = load_source(settings.policy)
    policy = source.policy
    if function == RECOVERY:
        from ._recovery import SettledIntents

        settle = timedelta(seconds=settings.recovery_settle)
        ledger: DynamoLedger = SettledIntents(settings.table, settle=settle)
    else:
        ledger = DynamoLedger(settings.table)
    gate = function in GATE_FUNCTIONS
    store = settings.secret_store
    # The runtime gets the secrets the gate itself needs (keys), fetched now: a key that
    # cannot be read fails the cold start, so nothing is judged without it (fail closed).
    # Channel secrets are fetched only when the notify function first builds that channel.
    # Recovery judges nothing (an intent carries its verdict): it needs no key.
    key_names = policy_secrets(policy, notifications=False) if gate else {}
    keys = SecretEnv(os.environ, key_names, store=store)
    home = settings.registry or _HOMES.get(function)
    allowed = configured_hosts(policy, [*settings.registries, *([home] if home else [])])
    runtime = Runtime(
        policy,
        ledger=ledger,
        env=keys,
        actor=os.environ.get("REGWARDEN_ACTOR") or None,
        allowed_hosts=allowed,
        provider_defaults=provider_defaults(settings),
        router=alerts_router(settings),
    )
    pipeline = runtime.pipeline() if gate or function == RECOVERY else None
    recheck = None
    if gate and settings.recheck_queue:
        recheck = RECHECK_SCHEDULERS.get("sqs")(RecheckTarget(url=settings.recheck_queue))
    # gate functions: the EventBridge event id; notify: the whole alert (its content)
    config = IdempotencyConfig(
        event_key_jmespath="id" if gate else "@",
        raise_on_no_idempotency_key=True,
        expires_after_seconds=int(IDEMPOTENCY_TTL.total_seconds()),
    )
    persistence = DynamoDBPersistenceLayer(
        table_name=settings.table,
        key_attr="pk",
        sort_key_attr="sk",
        static_pk_value=f"idempotency#{function}",
        expiry_attr=TTL_ATTRIBUTE,
        boto3_session=botocore_config.session(),  # the process's: models loaded once
    )
    body = _gate_event if gate else _notify_alert
    wrapped = idempotent_function(
        data_keyword_argument="event", persistence_store=persistence, config=config
    )(body)
    secrets = SecretEnv(os.environ, policy_secrets(policy), store=store)
    return State(
        function,
        settings,
        source,
        ledger,
        runtime,
        keys,
        secrets,
        config,
        wrapped,
        pipeline=pipeline,
        recheck=recheck,
        allowed_hosts=allowed,
    )


_STATES: list[warm.ColdStart[State]] = []
"""The process's cold-start states, made on the first record (the core loads then)."""


def _states() -> warm.ColdStart[State]:
    if not _STATES:
        _STATES.append(ColdStart(_build, _close))
    return _STATES[0]


@functools.cache  # once per process: a rebuilt state must not add handlers again
def _structured_core_logs() -> None:
    """In Lambda, the core's `regwarden.*` loggers write through Powertools' JSON formatter
    (same correlation id and keys). Left alone elsewhere (tests, local runs)."""
    if not os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
        return
    from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers

    from regwarden.logsetup import logging_setup

    logging.getLogger("regwarden")
    service = os.environ.get("POWERTOOLS_SERVICE_NAME") or "regwarden"
    source = Logger(service=service)
    # client libraries at WARNING; every handler (the runtime's root one, Powertools')
    # redacts URLs and registered secrets; then regwarden's loggers take Powertools' config
    logging_setup(debug=False, handlers=source.handlers)
    copy_config_to_registered_loggers(source_logger=source, include={"regwarden"})


# -- gate functions (on_push, on_scan) --------------------------------------------------------


def _record_doc(record: SQSRecord) -> dict[str, Any]:
    from regwarden.errors import IntakeError

    try:
        doc = json.loads(record.body)
    except ValueError as exc:
        raise IntakeError(f"SQS message {record.message_id}: body is not JSON ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("id"), str) or not doc["id"]:
        raise IntakeError(
            f"SQS message {record.message_id}: got {type(doc).__name__} without an 'id', "
            "expected an EventBridge event"
        )
    return doc


def gate_record(
    record: SQSRecord, *, function: str, logger: Logger, metrics: Metrics
) -> dict[str, Any]:
    """One SQS record of `on_push`/`on_scan`: the EventBridge event through the pipeline.

    Raises on failure (Powertools' batch processor reports the record in
    `batchItemFailures`); returns a JSON summary, which the idempotency record stores.
    """
    from regwarden.errors import IntakeError
    from regwarden.rechecks import RECHECK_EVENT_SOURCE

    st = state(function)
    with _noted(st.ledger, function, record, logger=logger):
        doc = _record_doc(record)
        logger.set_correlation_id(doc["id"])
        if doc.get("source") != RECHECK_EVENT_SOURCE:
            kind = doc.get("detail-type")
            if kind not in GATE_FUNCTIONS[function]:
                raise IntakeError(
                    f"{function} got detail-type {kind!r}, expected one of: "
                    + ", ".join(sorted(GATE_FUNCTIONS[function]))
                )
        receives = int(record.attributes.approximate_receive_count or 1)
        metrics.add_dimension(name="function", value=function)
        metrics.add_metric(name="Events", unit=MetricUnit.Count, value=1)
        summary = st.idempotent(
            event=doc, function=function, receives=receives, logger=logger, metrics=metrics
        )
    logger.info("event handled", extra={"summary": summary})
    return summary


@contextlib.contextmanager
def _noted(
    ledger: DynamoLedger, function: str, record: SQSRecord, *, logger: Logger
) -> Iterator[None]:
    """Note the error of a record that fails (its first and latest, for the dead-letter
    listing), then let it propagate unchanged: the record is reported as failed."""
    try:
        yield
    except Exception as exc:
        from regwarden.redact import redact_text
        from regwarden.store import dead_letter_key

        error = redact_text(f"{type(exc).__name__}: {exc}")[:_MAX_ERROR]
        try:
            ledger.note_failure(
                function,
                dead_letter_key(record.body, record.message_id),
                error,
                now=datetime.now(UTC),
                ttl=FAILURE_TTL,
            )
        except Exception as note_exc:  # the record's own error is what matters
            logger.warning("could not note the failure", extra={"error": str(note_exc)})
        raise


def _gate_event(
    event: dict[str, Any], *, function: str, receives: int, logger: Logger, metrics: Metrics
) -> dict[str, Any]:
    """The idempotent body: runs once per event id (a completed id returns the stored
    summary; a concurrent duplicate fails with IdempotencyAlreadyInProgressError and is
    retried by SQS)."""
    from regwarden.intake.eventbridge import parse_eventbridge
    from regwarden.rechecks import RECHECK_EVENT_SOURCE

    st = state(function)
    now = datetime.now(UTC)
    final = receives >= st.settings.max_receives
    if event.get("source") == RECHECK_EVENT_SOURCE:
        return _recheck(st, event, now=now, final=final, logger=logger, metrics=metrics)
    results = []
    for ev in parse_eventbridge(event):
        refused = _refused(st, str(ev.image), ev.image.registry, logger=logger, metrics=metrics)
        if refused is not None:
            results.append(refused)
            continue
        # No delivery bookkeeping here: the pipeline marks the delivery handled only with
        # its committed outcome, so an earlier attempt that failed is simply redone.
        started = time.monotonic()  # referrers are resolved to their subject by the pipeline
        handled = st.gate.handle(ev, now=now, final_attempt=final)
        results.append(_render(st, handled, started=started, now=now, metrics=metrics))
    return {"id": event["id"], "results": results}


def _refused(
    st: State, image: str, host: str, *, logger: Logger, metrics: Metrics
) -> dict[str, Any] | None:
    """None when this function may contact `host`; else the rejection (logged, counted):
    the host is never contacted and the record is not retried, since no attempt could
    succeed."""
    from regwarden.intake import host_allowed, host_not_allowed

    if host_allowed(host, st.allowed_hosts):
        return None
    why = str(host_not_allowed([host]))
    logger.warning("event rejected", extra={"image": image, "reason": why})
    metrics.add_metric(name="RejectedEvents", unit=MetricUnit.Count, value=1)
    return {"image": image, "rejected": why}


def _render(
    st: State, handled: Handled, *, started: float, now: datetime, metrics: Metrics
) -> dict[str, Any]:
    """Metrics, the recheck (a PENDING verdict's deadline, or the end of a settling
    manifest's window), and the JSON summary of one event. No metric has a repository
    dimension (CloudWatch bills every distinct set): the repository is a property of the
    EMF log line, searchable in Logs Insights."""
    from aws_lambda_powertools.metrics import single_metric

    out: dict[str, Any] = {"image": str(handled.event.image)}
    target = handled.recheck_target
    if target is not None and handled.recheck_at is not None:
        out["recheck_at"] = handled.recheck_at.isoformat()
        if st.recheck is not None:
            st.recheck(str(target), handled.recheck_at, now=now)
    if handled.ignored:
        out["ignored"] = handled.ignored
        return out
    if handled.verdict is not None:
        verdict = handled.verdict
        out.update(verdict=verdict.outcome.value, image=str(verdict.image))
        with single_metric(
            name="Verdicts",
            unit=MetricUnit.Count,
            value=1,
            namespace=metrics.namespace,
            default_dimensions={"function": st.function},
        ) as metric:
            metric.add_dimension(name="outcome", value=verdict.outcome.value)
            metric.add_metadata(key="repository", value=verdict.image.repository)
    if handled.actions:
        latency = (datetime.now(UTC) - handled.event.time).total_seconds() * 1000
        for action in handled.actions:
            with single_metric(
                name="ActionLatency",
                unit=MetricUnit.Milliseconds,
                value=max(latency, 0.0),
                namespace=metrics.namespace,
                default_dimensions={"function": st.function},
            ) as metric:
                metric.add_dimension(name="action", value=action.split(" ", 1)[0])
    metrics.add_metric(
        name="GateDuration", unit=MetricUnit.Milliseconds, value=(time.monotonic() - started) * 1000
    )
    out.update(actions=list(handled.actions), alerts=handled.alerts, notes=list(handled.notes))
    return out


def _recheck(
    st: State,
    event: Mapping[str, Any],
    *,
    now: datetime,
    final: bool,
    logger: Logger,
    metrics: Metrics,
) -> dict[str, Any]:
    from regwarden.rechecks import parse_recheck

    message = parse_recheck(event)
    image, at = message.image, message.at
    refused = _refused(st, str(image), image.registry, logger=logger, metrics=metrics)
    if refused is not None:
        return {"id": event["id"], "results": [refused]}
    if at is not None and message.early(now):  # SQS delays at most 15 minutes
        if st.recheck is not None:
            st.recheck(str(image), at, now=now, hop=message.hop + 1)
        return {
            "id": event["id"],
            "results": [{"image": str(image), "rescheduled": at.isoformat()}],
        }
    started = time.monotonic()
    handled = st.gate.recheck(image, now=now, final_attempt=final)
    return {
        "id": event["id"],
        "results": [_render(st, handled, started=started, now=now, metrics=metrics)],
    }


# -- notify -----------------------------------------------------------------------------------


def notify_record(record: SQSRecord, *, logger: Logger, metrics: Metrics) -> dict[str, Any]:
    """One SQS record of `notify`: an alert from the alerts topic (raw message delivery) →
    every channel the policy routes it to, except the alerts topic itself."""
    from pydantic import ValidationError

    from regwarden.errors import IntakeError
    from regwarden.notify import Alert

    st = state("notify")
    with _noted(st.ledger, "notify", record, logger=logger):
        try:
            alert = Alert.model_validate_json(record.body)
        except ValidationError as exc:
            raise IntakeError(
                f"SQS message {record.message_id}: not a regwarden alert ({exc.errors()[0]['msg']})"
            ) from None
        logger.set_correlation_id(alert.dedup_key)
        metrics.add_dimension(name="function", value="notify")
        try:
            summary = st.idempotent(event=json.loads(record.body), alert=alert, logger=logger)
        except Exception:
            metrics.add_metric(name="AlertDeliveryFailures", unit=MetricUnit.Count, value=1)
            raise
    metrics.add_metric(name="AlertsDelivered", unit=MetricUnit.Count, value=len(summary["sent"]))
    return summary


def _notify_alert(event: dict[str, Any], *, alert: Alert, logger: Logger) -> dict[str, Any]:
    """Idempotent on the alert's content; each (alert, channel) delivery is remembered
    (`regwarden.notify.deliver`), so a retry sends only to the channels still missing it."""
    from regwarden.notify import deliver, routed_to

    st = state("notify")
    report = deliver(
        alert,
        routed_to(st.policy.notifications, alert),
        functools.partial(_channel, st),
        st.ledger,
        now=datetime.now(UTC),
        unavailable="the alerts topic itself",
    )
    report.raise_for_failures()
    return {"alert": report.alert, "sent": list(report.sent), "skipped": list(report.skipped)}


def _channel(st: State, name: str) -> Notifier | None:
    """The channel `name`, built on first use (its secrets are fetched then, not before);
    None for the alerts topic this function reads (publishing back to it would loop)."""
    from regwarden.notify import build_channel
    from regwarden.policy import SnsChannelConfig

    if name in st.channels:
        return st.channels[name]
    config = st.policy.notifications.channels[name]
    if isinstance(config, SnsChannelConfig) and config.topic_arn == st.settings.alerts_topic:
        return None
    built = st.channels[name] = build_channel(st.policy, name, st.secrets)
    return built


# -- recovery ---------------------------------------------------------------------------------


def recover(st: State, *, logger: Logger, metrics: Metrics) -> dict[str, Any]:
    """One recovery sweep (the schedule's tick): every unfinished action intent that is due
    is driven to its end from DynamoDB, with its verdict and alert, and every alert in the
    outbox that is due is sent. Idempotent beside the gate functions; an exception fails
    the invocation and the next tick tries again."""
    from regwarden.recovery import sweep

    report = sweep(st.gate, now=datetime.now(UTC))
    figures = report.as_dict()
    metrics.add_dimension(name="function", value=st.function)
    names = {"resumed": "Resumed", "still_failing": "StillFailing", "alerts_sent": "AlertsSent"}
    for key, value in figures.items():
        metrics.add_metric(name=names.get(key, key), unit=MetricUnit.Count, value=value)
    logger.info("recovery sweep", extra={"report": figures})
    return figures
