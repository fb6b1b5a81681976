"""What the GCP functions share: cold-start state, one delivery → the shared pipeline, and
the HTTP answer Pub/Sub (or Cloud Tasks) acts on.

Module import stays light (functions-framework has already loaded Flask); the core, the
policy and the Google clients are loaded on the first delivery of a cold start
(`regwarden.warm.ColdStart`) and kept while the instance stays warm. A warm instance
reads its policy again every `REGWARDEN_POLICY_TTL` seconds and rebuilds its state when the
policy changed or a secret it used was rotated.

Flow per delivery (`on_push`, `on_scan`):

    HTTP request → `intake.pubsub.decode_pubsub` (push body, binary or structured
    CloudEvent) → `intake.gcr_events` | the occurrence's image (`scanning.
    artifact_analysis`) → host allowed? → `pipeline.handle` → recheck (Cloud Tasks)

The answer decides what Pub/Sub does with the message:

| outcome                                   | status | Pub/Sub                          |
| ----------------------------------------- | ------ | -------------------------------- |
| handled (or ignored, or a duplicate)      | 200    | acknowledged                     |
| a host this function may not contact      | 200    | acknowledged (logged; no attempt |
|                                           |        | could succeed, none is made)     |
| malformed delivery or message             | 400    | redelivered with backoff, then   |
|                                           |        | dead-lettered (kept to inspect)  |
| any other failure (registry, ledger, …)   | 500    | redelivered, then dead-lettered  |

A malformed message is answered 400, not acknowledged: Pub/Sub treats every answer but
102/200/201/202/204 as a negative acknowledgement, so it lands on the subscription's
dead-letter topic after `maxDeliveryAttempts` rather than being dropped — where an
operator sees what a publisher sent — while the status says honestly that the request
was bad, not that the function failed.

Exactly once in effect: the message id is the event's delivery id, and the pipeline
commits the delivery marker with the outcome (verdict, alerts) only after its action
finished; a redelivery of a handled message is a duplicate (no second action or alert),
and one of a message whose attempt died mid-action resumes the action from its ledger
intent. The last delivery attempt (`deliveryAttempt` of a push body from a subscription
with a dead-letter policy, compared with `REGWARDEN_MAX_DELIVERIES`) alerts on evidence
it could not gather; a delivery that does not say its attempt is treated as the last
(fail closed: the alert is sent, and the message is still retried).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from regwarden.warm import ColdStart, GateState

from . import COLLECTOR, _logs
from ._failures import noting

if TYPE_CHECKING:
    from regwarden.intake.pubsub import PubSubMessage
    from regwarden.model import ImageEvent
    from regwarden.notify import Notifier, Router
    from regwarden.pipeline import Handled, Pipeline
    from regwarden.rechecks import RecheckScheduler
    from regwarden.runtime import Runtime
    from regwarden.store import Ledger
    from regwarden.warm import PolicySource, SecretEnv

    from ._settings import SecretManager, Settings

__all__ = [
    "CLOCK",
    "GATE_FUNCTIONS",
    "RECHECK",
    "RECOVERY",
    "Reply",
    "State",
    "build_state",
    "gate_delivery",
    "notify_delivery",
    "now",
    "recheck_request",
    "recover",
    "reset",
    "respond",
    "state",
]

GATE_FUNCTIONS = frozenset({"on_push", "on_scan"})
RECHECK = "recheck"
"""The HTTP function Cloud Tasks calls at a PENDING verdict's deadline."""
RECOVERY = "recovery"

Reply = tuple[dict[str, Any], int]
"""(JSON body, HTTP status): what a functions-framework HTTP function returns."""

log = logging.getLogger("regwarden.gcp")
S = TypeVar("S")


def _utcnow() -> datetime:
    return datetime.now(UTC)


CLOCK: Callable[[], datetime] = _utcnow
"""The functions' clock: the `now` every delivery is judged at (tests set another)."""


def now() -> datetime:
    return CLOCK()


# -- cold-start state -------------------------------------------------------------------------


@dataclass
class State(GateState):
    """Everything read or built once per cold start (and again when the policy changes)."""

    function: str
    settings: Settings
    source: PolicySource
    store: SecretManager
    ledger: Ledger
    runtime: Runtime[Ledger]
    keys: SecretEnv
    secrets: SecretEnv
    pipeline: Pipeline | None = None
    recheck: RecheckScheduler | None = None
    channels: dict[str, Notifier | None] = field(default_factory=dict)

    @property
    def ttl(self) -> float:
        return float(self.settings.policy_ttl)


def alerts_router(settings: Settings) -> Router | None:
    """Every alert to the alerts topic (the `pubsub` channel; `notify` fans out from
    there, and teams subscribe with filters on its attributes); None: the policy's routes."""
    if not settings.alerts_topic:
        return None
    from regwarden.notify import CHANNELS, ChannelContext, everything_to
    from regwarden.policy import PubSubChannelConfig

    config = PubSubChannelConfig(type="pubsub", topic=settings.alerts_topic)
    context = ChannelContext(env=os.environ, policy_dir=None)
    return everything_to(CHANNELS.get("pubsub")("alerts", config, context))


def _build(function: str) -> State:
    return build_state(function)


def build_state(function: str, *, extra_hosts: tuple[str, ...] = ()) -> State:
    """The state of `function` from the environment; `extra_hosts`: registry hosts it may
    contact besides the policy's and `REGWARDEN_ALLOWED_HOSTS` (the retention registry)."""
    from regwarden.policy import policy_secrets
    from regwarden.providers import ProviderOptions
    from regwarden.rechecks import RECHECK_SCHEDULERS, RecheckTarget
    from regwarden.runtime import Runtime, configured_hosts
    from regwarden.store import open_ledger
    from regwarden.warm import SecretEnv

    from ._settings import SecretManager, Settings, load_source

    _logs.structured_logs()  # first: nothing below may be logged unredacted
    settings = Settings.from_env()
    store = SecretManager(os.environ)
    source = load_source(settings.policy, store)
    policy = source.policy
    gate = function in GATE_FUNCTIONS or function == RECHECK
    # The gate's own secrets (keys) are fetched now: a key that cannot be read fails the
    # cold start, so nothing is judged without it. Recovery judges nothing (an intent
    # carries its verdict); channel secrets wait until a channel is first built.
    keys = SecretEnv(os.environ, policy_secrets(policy, notifications=False) if gate else {}, store)
    ledger = open_ledger(settings.ledger)
    runtime: Runtime[Ledger] = Runtime(
        policy,
        ledger=ledger,
        env=keys,
        actor=os.environ.get("REGWARDEN_ACTOR") or None,
        allowed_hosts=configured_hosts(policy, [*settings.allowed_hosts, *extra_hosts]),
        provider_defaults=ProviderOptions(
            data_plane_host=settings.data_plane, account=settings.project
        ),
        router=alerts_router(settings),
    )
    pipeline = runtime.pipeline() if gate or function == RECOVERY else None
    recheck = None
    if gate and settings.rechecks:
        target = RecheckTarget(
            url=settings.recheck_url,
            tasks_queue=settings.tasks_queue,
            service_account=settings.tasks_service_account,
            env=os.environ,
        )
        recheck = RECHECK_SCHEDULERS.get("cloudtasks")(target)
    secrets = SecretEnv(os.environ, policy_secrets(policy), store)
    return State(
        function,
        settings,
        source,
        store,
        ledger,
        runtime,
        keys,
        secrets,
        pipeline=pipeline,
        recheck=recheck,
    )


def close_state(st: State) -> None:
    st.runtime.close()
    st.ledger.close()


_STATES: ColdStart[State] = COLLECTOR.cold_start(_build, close_state)


def state(function: str) -> State:
    """The function's state: built on first use, rebuilt past its TTL when stale."""
    return _STATES.refresh(function)


def reset() -> None:
    """Forget every cold-start state (tests change the environment between cases)."""
    _STATES.reset()


# -- one request ------------------------------------------------------------------------------


def respond(
    function: str,
    headers: Mapping[str, str],
    work: Callable[[S], dict[str, Any]],
    state_of: Callable[[str], S],
) -> Reply:
    """Run one request's `work` with the function's state and answer it: 200 with its
    summary; 400 for a malformed delivery (IntakeError: Pub/Sub redelivers it, then
    dead-letters it); 500 for anything else, the cold start included (redelivered).
    `headers`: names in lower case."""
    from regwarden.errors import IntakeError

    _logs.bind(function, headers, os.environ.get("GOOGLE_CLOUD_PROJECT"))
    try:
        summary = work(state_of(function))
    except IntakeError as exc:
        log.warning("malformed delivery", extra={"error": str(exc)})
        return {"error": str(exc)}, 400
    except Exception as exc:
        from regwarden.errors import RegwardenError
        from regwarden.redact import redact_text

        error = redact_text(f"{type(exc).__name__}: {exc}")
        # a traceback for the unexpected; regwarden's own errors say what they are
        log.error(
            "delivery failed", extra={"error": error}, exc_info=not isinstance(exc, RegwardenError)
        )
        return {"error": error}, 500
    log.info("delivery handled", extra={"summary": summary})
    return summary, 200


# -- gate functions (on_push, on_scan, recheck) ----------------------------------------------


def gate_delivery(function: str, body: bytes, headers: Mapping[str, str]) -> Reply:
    """One Pub/Sub delivery of `on_push` (the `gcr` topic) or `on_scan` (Artifact
    Analysis occurrences) through the pipeline."""

    def work(st: State) -> dict[str, Any]:
        from regwarden.intake.pubsub import decode_pubsub

        message = decode_pubsub(body, headers)
        attempt = message.delivery_attempt
        final = attempt is None or attempt >= st.settings.max_deliveries
        events = _push_events(message) if function == "on_push" else _scan_events(st, message)
        now = CLOCK()
        results = []
        for event in events:
            refused = _refused(str(event.image), event.image.registry, st)
            if refused is not None:
                results.append(refused)
                continue
            started = time.monotonic()
            handled = st.gate.handle(event, now=now, final_attempt=final)
            results.append(_render(st, handled, started=started, now=now))
        return {"id": message.message_id, "attempt": attempt, "results": results}

    return respond(function, headers, noting(function, body, headers, work, clock=now), state)


def _push_events(message: PubSubMessage) -> list[ImageEvent]:
    from regwarden.intake import gcr_events

    return gcr_events(message)


def _scan_events(st: State, message: PubSubMessage) -> list[ImageEvent]:
    """The SCANNED event of the image an occurrence is about (none when it cannot change a
    verdict); its host is checked by the caller before anything is contacted there."""
    from regwarden.scanning.artifact_analysis import occurrence_events

    return occurrence_events(message.data, message.message_id, env=st.runtime.env)


def _refused(image: str, host: str, st: State) -> dict[str, Any] | None:
    """None when this function may contact `host`; else the rejection (logged): the host
    is never contacted and the message is acknowledged, since no attempt could succeed."""
    from regwarden.intake import host_allowed, host_not_allowed

    if host_allowed(host, st.runtime.allowed_hosts):
        return None
    why = str(host_not_allowed([host]))
    log.warning("event rejected", extra={"image": image, "reason": why})
    return {"image": image, "rejected": why}


def _render(st: State, handled: Handled, *, started: float, now: datetime) -> dict[str, Any]:
    """The recheck (a PENDING verdict's deadline, a settling manifest's window: a Cloud
    Tasks task; handed back again by a duplicate delivery, in case it was lost) and the
    JSON summary of one event, logged as the outcome."""
    from regwarden.rechecks import schedule_recheck

    if st.recheck is not None:
        schedule_recheck(st.recheck, handled, now=now)
    verdict = handled.verdict
    out: dict[str, Any] = {"image": str(verdict.image if verdict else handled.event.image)}
    if handled.recheck_target is not None and handled.recheck_at is not None:
        out["recheck_at"] = handled.recheck_at.isoformat()
    if handled.ignored or verdict is None:
        return {**out, "ignored": handled.ignored or "no verdict"}
    return {
        **out,
        "verdict": verdict.outcome.value,
        "actions": list(handled.actions),
        "alerts": handled.alerts,
        "notes": list(handled.notes),
        "gate_ms": round((time.monotonic() - started) * 1000, 1),
    }


def recheck_request(body: bytes, headers: Mapping[str, str]) -> Reply:
    """One Cloud Tasks call of `recheck` (body: `rechecks.recheck_message`): a recheck
    still ahead of its time (past Cloud Tasks' 30 days) is scheduled on; a due one
    re-evaluates the image. Failure → 500, and Cloud Tasks retries the task."""

    def work(st: State) -> dict[str, Any]:
        from regwarden.errors import IntakeError
        from regwarden.rechecks import parse_recheck

        try:
            doc = json.loads(body)
        except ValueError as exc:
            raise IntakeError(f"recheck request: body is not JSON ({exc})") from None
        message = parse_recheck(doc)
        image = message.image
        refused = _refused(str(image), image.registry, st)
        if refused is not None:
            return {"id": message.id, "results": [refused]}
        now = CLOCK()
        if message.again(st.recheck, now=now):
            assert message.at is not None
            return {
                "id": message.id,
                "results": [{"image": str(image), "rescheduled": message.at.isoformat()}],
            }
        retries = headers.get("x-cloudtasks-taskretrycount") or "0"
        final = not retries.isdigit() or int(retries) + 1 >= st.settings.max_deliveries
        started = time.monotonic()
        handled = st.gate.recheck(image, now=now, final_attempt=final)
        return {"id": message.id, "results": [_render(st, handled, started=started, now=now)]}

    return respond(RECHECK, headers, work, state)


# -- notify -----------------------------------------------------------------------------------


def notify_delivery(body: bytes, headers: Mapping[str, str]) -> Reply:
    """One alert from the alerts topic → every channel the policy routes it to, except
    the alerts topic itself. Each (alert, channel) delivery is remembered in the ledger
    (`regwarden.notify.deliver`), so a redelivery sends only to the channels still
    missing it; a channel that failed makes the answer 500 (Pub/Sub redelivers)."""

    def work(st: State) -> dict[str, Any]:
        from pydantic import ValidationError

        from regwarden.errors import IntakeError
        from regwarden.intake.pubsub import decode_pubsub
        from regwarden.notify import Alert, deliver, routed_to

        message = decode_pubsub(body, headers)
        try:
            alert = Alert.model_validate_json(message.data)
        except ValidationError as exc:
            raise IntakeError(
                f"Pub/Sub message {message.message_id}: not a regwarden alert "
                f"({exc.errors()[0]['msg']})"
            ) from None
        report = deliver(
            alert,
            routed_to(st.policy.notifications, alert),
            lambda name: _channel(st, name),
            st.ledger,
            now=CLOCK(),
            unavailable="the alerts topic itself",
        )
        report.raise_for_failures()
        return {"alert": report.alert, "sent": list(report.sent), "skipped": list(report.skipped)}

    return respond("notify", headers, noting("notify", body, headers, work, clock=now), state)


def _channel(st: State, name: str) -> Notifier | None:
    """The channel `name`, built on first use (its secrets are fetched then); None for the
    alerts topic this function reads (publishing back to it would loop)."""
    from regwarden.notify import build_channel
    from regwarden.policy import PubSubChannelConfig

    if name not in st.channels:
        config = st.policy.notifications.channels[name]
        loop = isinstance(config, PubSubChannelConfig) and config.topic == st.settings.alerts_topic
        st.channels[name] = None if loop else build_channel(st.policy, name, st.secrets)
    return st.channels[name]


# -- recovery ---------------------------------------------------------------------------------


def recover(headers: Mapping[str, str]) -> Reply:
    """One recovery sweep (Cloud Scheduler's tick through Pub/Sub): every unfinished action
    intent older than `REGWARDEN_RECOVERY_SETTLE` is driven to its end from the ledger,
    with its verdict and alert, and every alert the outbox still holds is sent. A failure
    answers 500; the next tick (or the redelivery) tries again."""

    def work(st: State) -> dict[str, Any]:
        from regwarden.recovery import sweep

        settle = timedelta(seconds=st.settings.recovery_settle)
        return sweep(st.gate, now=CLOCK(), settle=settle).as_dict()

    return respond(RECOVERY, headers, work, state)
