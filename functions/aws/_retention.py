"""What the retention functions share: EventBridge Scheduler → `retention_fanout` → SQS work
queue (+DLQ) → `retention_worker`, one message per repository.

    fan-out:  schedule payload → run id (from the scheduled time) → `fan_out` over the ECR
              registry → repositories in scope → SendMessageBatch, 10 per call
    worker:   SQS record → checked message → in-use inventory (ECS, Lambda, the policy's
              sources) → `work` (plan; with RETENTION_MODE=apply, delete and alert) →
              metrics; out of time → the record fails, comes back, and the run resumes

A worker's run id derives from the fan-out's run and the repository, so a redelivered
message resumes the recorded plan (nothing is planned or deleted twice, no second alert).
`RETENTION_MODE` is `plan` unless the stack says `apply`: a new deployment reports what it
would delete and deletes nothing.

The payload, run id, message and outcome rules, and the two ends' flow, are the core's
(`regwarden.retention`: `fan_out_scheduled`, `work_body`, `inventory_with`, …), as any
cloud's fan-out uses them; this module keeps the settings, the cold-start state and the
SQS and Lambda I/O. Heavy imports (the core, boto3) wait for the first invocation.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from regwarden import warm
from regwarden.errors import RegistryError, RegwardenError

from ._app import ColdStart

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
    from aws_lambda_powertools.utilities.typing import LambdaContext

    from regwarden.policy import Policy
    from regwarden.providers import Registry
    from regwarden.retention import InUse, RetentionOutcome
    from regwarden.runtime import Runtime
    from regwarden.store import DynamoLedger

    from ._settings import PolicySource, RetentionSettings, SecretEnv, Settings

__all__ = [
    "FANOUT",
    "SEND_BATCH",
    "WORKER",
    "batch_entries",
    "fan_out_event",
    "remaining_guard",
    "reset",
    "worker_record",
]

FANOUT = "retention_fanout"
WORKER = "retention_worker"
SEND_BATCH = 10
"""Entries per SendMessageBatch (SQS's limit)."""
SEND_ATTEMPTS = 3
"""Attempts for the entries SQS reports `Failed` before the fan-out fails."""
MAX_VISIBILITY = 43_200
"""SQS's longest visibility timeout (12 hours)."""


def batch_entries(messages: Sequence[Mapping[str, str]]) -> list[list[dict[str, str]]]:
    """SendMessageBatch entries, `SEND_BATCH` per call (ids unique within a call)."""
    from regwarden.retention import message_body

    entries = [{"Id": str(i), "MessageBody": message_body(m)} for i, m in enumerate(messages)]
    return [entries[i : i + SEND_BATCH] for i in range(0, len(entries), SEND_BATCH)]


# -- cold-start state ---------------------------------------------------------------------------


@dataclass
class State:
    """Read or built once per cold start (per function), and again when the policy changed
    or a secret it used was rotated (`_app.ColdStart`)."""

    settings: Settings
    retention: RetentionSettings
    source: PolicySource
    registry: Registry
    runtime: Runtime[DynamoLedger] | None = None
    """Worker only: ledger, registries, policy, alerts (to the alerts topic when set)."""
    secrets: SecretEnv | None = None
    sqs: Any = None

    @property
    def policy(self) -> Policy:
        return self.source.policy

    @property
    def ttl(self) -> float:
        return float(self.settings.policy_ttl)

    def stale(self) -> bool:
        return self.source.changed() or (self.secrets is not None and self.secrets.rotated())

    def client(self) -> Any:
        if self.sqs is None:
            from regwarden import botocore_config

            self.sqs = botocore_config.client("sqs")
        return self.sqs


def state(function: str) -> State:
    """The function's state, rebuilt first when its policy TTL passed and it is stale."""
    return _STATES.refresh(function)


def reset() -> None:
    """Forget the cold-start state (tests change the environment between cases)."""
    _STATES.reset()


def _close(st: State) -> None:
    if st.runtime is None:
        st.registry.close()
    else:  # the runtime owns the registry
        st.runtime.close()
        st.runtime.ledger.close()


def _build(function: str) -> State:
    from regwarden.policy import policy_secrets
    from regwarden.runtime import Runtime, registry_options

    from ._app import _structured_core_logs, alerts_router, provider_defaults
    from ._settings import RetentionSettings, SecretEnv, Settings, load_source

    settings = Settings.from_env()
    retention = RetentionSettings.from_env()
    source = load_source(settings.policy)
    policy = source.policy
    defaults = provider_defaults(settings)
    _structured_core_logs()
    if function == FANOUT:
        from regwarden.providers import open_registry

        if not retention.queue:
            from regwarden.errors import UsageError

            raise UsageError("REGWARDEN_RETENTION_QUEUE is not set; expected the work queue URL")
        kind, options = registry_options(policy, retention.registry, defaults=defaults)
        registry = open_registry(retention.registry, options, kind=kind)
        return State(settings, retention, source, registry)
    from regwarden.store import DynamoLedger

    secrets = SecretEnv(os.environ, policy_secrets(policy), store=settings.secret_store)
    runtime = Runtime(
        policy,
        ledger=DynamoLedger(settings.table),
        env=secrets,
        actor=os.environ.get("REGWARDEN_ACTOR") or None,
        provider_defaults=defaults,
        router=alerts_router(settings),
    )
    registry = runtime.registry(retention.registry)
    return State(settings, retention, source, registry, runtime=runtime, secrets=secrets)


_STATES: warm.ColdStart[State] = ColdStart(_build, _close)


# -- fan-out ------------------------------------------------------------------------------------


def fan_out_event(
    event: object, *, logger: Logger, metrics: Metrics, now: datetime | None = None
) -> dict[str, Any]:
    """The scheduled fan-out: one work message per repository with retention rules in
    this stack's scope. Raises when any message could not be queued (the invocation fails
    and is retried; the run id is the same, so already-queued repositories resume)."""
    from regwarden.retention import fan_out_scheduled

    st = state(FANOUT)
    done = fan_out_scheduled(
        event,
        st.registry,
        st.policy,
        registry_name=st.retention.registry,
        prefixes=st.retention.prefixes,
        now=now or datetime.now(UTC),
    )
    logger.set_correlation_id(done.run)
    calls = _send(st, done.messages, logger)
    metrics.add_dimension(name="function", value=FANOUT)
    metrics.add_metric(name="RepositoriesQueued", unit=MetricUnit.Count, value=len(done.messages))
    summary = done.summary(mode=st.retention.mode, send_calls=calls)
    logger.info("retention fanned out", extra={"summary": summary})
    return summary


def _send(st: State, messages: Sequence[Mapping[str, str]], logger: Logger) -> int:
    """SendMessageBatch, 10 entries a call; entries SQS reports `Failed` are sent again
    (up to `SEND_ATTEMPTS` in all). Every batch is tried; then, if any entry never went
    out, the fan-out fails naming them (a retry queues the same run again)."""
    from botocore.exceptions import BotoCoreError, ClientError

    sqs, queue = st.client(), st.retention.queue
    calls = 0
    lost: list[str] = []
    for batch in batch_entries(messages):
        pending = batch
        failed: list[dict[str, Any]] = []
        for attempt in range(1, SEND_ATTEMPTS + 1):
            calls += 1
            try:
                answer = sqs.send_message_batch(QueueUrl=queue, Entries=pending)
            except (ClientError, BotoCoreError) as exc:
                raise RegistryError(f"SQS {queue}: cannot queue retention work: {exc}") from exc
            failed = list(answer.get("Failed") or [])
            if not failed:
                break
            again = {str(f.get("Id")) for f in failed}
            pending = [e for e in pending if e["Id"] in again]
            logger.warning(
                "some retention messages were not queued; sending them again",
                extra={"attempt": attempt, "failed": failed},
            )
            if attempt < SEND_ATTEMPTS:
                time.sleep(0.2 * attempt)
        bodies = {e["Id"]: json.loads(e["MessageBody"]) for e in pending}
        lost += [
            f"{bodies[str(f.get('Id'))]['repository']} ({f.get('Code')}: {f.get('Message')})"
            for f in failed
            if str(f.get("Id")) in bodies
        ]
    if lost:
        raise RegistryError(
            f"SQS {queue}: {len(lost)} retention messages not queued after "
            f"{SEND_ATTEMPTS} attempts: {', '.join(lost)}"
        )
    return calls


# -- worker -------------------------------------------------------------------------------------


def _in_use(st: State) -> InUse:
    """Everything in use: the policy's inventory, plus (setting `aws`, the default) ECS
    tasks, services and Lambda container functions of this region when the policy has no
    `inventory.aws` of its own. Unreadable → raises (nothing is planned)."""
    from regwarden.policy import AwsInventory
    from regwarden.retention import gather_in_use, inventory_with

    inventory = st.policy.inventory
    if st.retention.inventory == "aws":
        inventory = inventory_with(inventory, aws=AwsInventory())
    return gather_in_use(inventory, base_dir=st.policy.base_dir)


def worker_record(
    record: SQSRecord, *, context: LambdaContext, logger: Logger, metrics: Metrics
) -> dict[str, Any]:
    """One work message: plan (and, in `apply` mode, delete and alert) one repository.

    Raises, so the record is reported in `batchItemFailures`, when the message is
    malformed, the inventory or registry cannot be read, deletions failed, or time ran
    out (the message comes back after `resume_delay` and the run resumes)."""
    try:
        return _work(record, context=context, logger=logger, metrics=metrics)
    except Exception as exc:
        logger.error(
            "retention message failed",
            extra={
                "message_id": record.message_id,
                "error": type(exc).__name__,
                "reason": str(exc),
                "receives": record.attributes.approximate_receive_count,
            },
            exc_info=not isinstance(exc, RegwardenError),  # a traceback for the unexpected
        )
        raise


def _work(
    record: SQSRecord, *, context: LambdaContext, logger: Logger, metrics: Metrics
) -> dict[str, Any]:
    from regwarden.retention import RunInterrupted, work_body

    st = state(WORKER)

    def tag_logs(message: Mapping[str, str]) -> None:
        logger.set_correlation_id(message["run"])
        logger.append_keys(repository=message["repository"])
        metrics.add_dimension(name="function", value=WORKER)

    assert st.runtime is not None
    done = work_body(
        record.body,
        st.runtime,
        registry=st.retention.registry,
        prefixes=st.retention.prefixes,
        now=datetime.now(UTC),
        execute=st.retention.apply,
        concurrency=st.retention.concurrency,
        in_use=lambda: _in_use(st),
        should_stop=remaining_guard(context, st.retention.stop_ms),
        resume_delay=st.retention.resume_delay,
        on_message=tag_logs,
    )
    outcome, failure = done.outcome, done.failure
    summary = done.summary(mode=st.retention.mode)
    _metrics(metrics, outcome)
    if isinstance(failure, RunInterrupted):
        _come_back(st, record, logger)
    if failure is not None:
        raise failure
    if outcome.run.tripped:
        logger.warning("retention guard rail tripped: nothing deleted", extra={"outcome": summary})
    elif st.retention.apply:
        logger.info("retention applied", extra={"outcome": summary})
    else:
        logger.info(
            "retention planned (RETENTION_MODE=plan: nothing deleted)", extra={"outcome": summary}
        )
    return summary


def _metrics(metrics: Metrics, outcome: RetentionOutcome) -> None:
    run, result = outcome.run, outcome.result
    if run.tripped:
        metrics.add_metric(name="GuardTripped", unit=MetricUnit.Count, value=1)
    if run.plan is not None:  # a fresh plan (a resumed run was counted when planned)
        metrics.add_metric(name="ImagesPlanned", unit=MetricUnit.Count, value=run.deletions)
    if result is not None:
        metrics.add_metric(name="ImagesDeleted", unit=MetricUnit.Count, value=result.deleted)
        metrics.add_metric(name="BytesFreed", unit=MetricUnit.Bytes, value=result.bytes_freed)


def _come_back(st: State, record: SQSRecord, logger: Logger) -> None:
    """Make an interrupted run's message visible again after `resume_delay` rather than
    the queue's (long) visibility timeout. Best effort: without it SQS still redelivers."""
    from botocore.exceptions import BotoCoreError, ClientError

    if not st.retention.queue:
        return
    delay = min(st.retention.resume_delay, MAX_VISIBILITY)
    try:
        st.client().change_message_visibility(
            QueueUrl=st.retention.queue,
            ReceiptHandle=record.receipt_handle,
            VisibilityTimeout=delay,
        )
    except (ClientError, BotoCoreError) as exc:
        logger.warning("could not shorten the message's visibility", extra={"error": str(exc)})


def remaining_guard(context: LambdaContext, margin_ms: int) -> Callable[[], bool]:
    """`should_stop` for a Lambda invocation: True once less than `margin_ms` is left."""
    return lambda: context.get_remaining_time_in_millis() < margin_ms
