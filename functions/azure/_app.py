"""What the Azure gate functions share: cold-start state, one trigger's input → the shared
pipeline, and what the Functions host does with the outcome.

Module import stays light (the worker has already loaded azure.functions); the core, the
policy and the Azure clients load on the first invocation of a cold start
(`regwarden.warm.ColdStart`) and stay while the instance is warm. A warm instance reads
its policy again every `REGWARDEN_POLICY_TTL` seconds and rebuilds its state when the
policy changed or a secret it used was rotated.

Flow (`on_push`, `on_webhook`):

    func.EventGridEvent | func.CloudEvent | HTTP body → its delivery's JSON → PARSERS
    "eventgrid" (`intake._eventgrid`: both schemas, ACR's webhook) → host allowed? →
    `pipeline.handle` → recheck (Storage queue, visibility timeout = the delay)

Failure is an exception, and the host acts on it:

| trigger              | an exception means                                               |
| -------------------- | ---------------------------------------------------------------- |
| Event Grid (on_push) | Event Grid retries with backoff, then dead-letters the event to  |
|                      | the storage container its subscription names                     |
| queue (recheck)      | the host makes the message visible again; after                  |
|                      | `maxDequeueCount` (host.json: 5) it is moved to `<queue>-poison` |
| timer                | logged; the next tick runs again                                 |
| HTTP (on_webhook)    | 500 (Event Grid retries; a malformed body is 400)                |

A malformed Event Grid event raises too, so it is dead-lettered where an operator sees what
was sent rather than dropped. An image on a host this app may not contact is logged and
not retried (no attempt could succeed).

Exactly once in effect: Event Grid is at-least-once; the event id is the delivery id, and
the pipeline commits its delivery marker with the outcome only after the action finished,
so a redelivered event is a duplicate, and one whose attempt died mid-action resumes the
action from its ledger intent. Event Grid does not tell a function its attempt number: an
event is never its final attempt (evidence it could not gather is retried; the recovery
timer finishes intents). A queue message is final when its dequeue count reaches
`REGWARDEN_MAX_DEQUEUE` (= host.json's maxDequeueCount).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from regwarden.warm import ColdStart, GateState

from . import COLLECTOR
from ._failures import event_key, message_key, noting

if TYPE_CHECKING:
    from regwarden.model import ImageEvent
    from regwarden.notify import Notifier, Router
    from regwarden.pipeline import Handled, Pipeline
    from regwarden.policy import Policy
    from regwarden.rechecks import RecheckScheduler
    from regwarden.runtime import Runtime
    from regwarden.store import Ledger
    from regwarden.warm import PolicySource, SecretEnv

    from ._settings import Settings, VaultSecrets

__all__ = [
    "CLOCK",
    "GATE_FUNCTIONS",
    "RECHECK",
    "RECOVERY",
    "SCAN_LOOKBACK",
    "SCAN_OVERLAP",
    "SCAN_WATERMARK",
    "State",
    "WebhookReply",
    "build_state",
    "close_state",
    "delivery_of",
    "gate_event",
    "now",
    "recheck_message",
    "recover",
    "reset",
    "scan_poll",
    "state",
    "webhook",
]

GATE_FUNCTIONS = frozenset({"on_push", "on_webhook", "on_scan"})
RECHECK = "recheck"
RECOVERY = "recovery"
SCAN_WATERMARK = "scan-poll:defender"
"""The ledger action record holding on_scan's watermark (`state["since"]`)."""
SCAN_LOOKBACK = timedelta(days=1)
"""How far back the first poll looks (no watermark yet)."""
SCAN_OVERLAP = timedelta(minutes=10)
"""Each poll looks this far behind its last start: Resource Graph shows a sub-assessment
some minutes after its `timeGenerated`, and a row that appears late must not be missed.
An image in the overlap is judged twice (harmless: the gate's actions are idempotent)."""

WebhookReply = tuple[int, dict[str, str] | None, dict[str, str]]
"""(status, JSON body, headers) of an HTTP answer."""

log = logging.getLogger("regwarden.azure")
T = TypeVar("T")


def _utcnow() -> datetime:
    return datetime.now(UTC)


CLOCK: Callable[[], datetime] = _utcnow
"""The functions' clock: the `now` every invocation is judged at (tests set another)."""


def now() -> datetime:
    return CLOCK()


# -- cold-start state -------------------------------------------------------------------------


@dataclass
class State(GateState):
    """Everything read or built once per cold start (and again when the policy changes)."""

    function: str
    settings: Settings
    source: PolicySource
    store: VaultSecrets
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
    """Every alert to the alerts custom topic (the `eventgrid` channel: `notify` fans out
    from there, and teams subscribe with advanced filters on `data.team`, `data.severity`,
    `data.verdict`); None: the policy's own routes (no topic set, or no eventgrid channel
    in this build — logged)."""
    if not settings.alerts_topic:
        return None
    from regwarden.notify import CHANNELS, ChannelContext, everything_to
    from regwarden.policy import EventGridChannelConfig

    if "eventgrid" not in CHANNELS:
        log.error("REGWARDEN_ALERTS_TOPIC is set but this build has no eventgrid channel")
        return None
    config = EventGridChannelConfig(type="eventgrid", endpoint=settings.alerts_topic)
    context = ChannelContext(env=os.environ, policy_dir=None)
    return everything_to(CHANNELS.get("eventgrid")("alerts", config, context))


def _policy_router(policy: Policy, secrets: SecretEnv) -> Router:
    """The policy's own routes, for an app without an alerts topic (a local run): its
    channels built now, their secrets (`secret://`) from Key Vault through `secrets` — the
    runtime's own environment holds only the gate's keys."""
    from regwarden.notify import Router, build_channels, routed_to

    channels = build_channels(policy, secrets)
    return Router(lambda alert: list(routed_to(policy.notifications, alert)), channels)


def _build(function: str) -> State:
    _platform_logs()
    return build_state(function)


@functools.cache  # once per process: a rebuilt state adds nothing
def _platform_logs() -> None:
    """On a Function App (`WEBSITE_INSTANCE_ID`, as the collector's pause): the client
    libraries' loggers at WARNING and regwarden's `RedactingFilter` on the worker's
    handlers (`logsetup.logging_setup`), as the AWS and GCP functions have them. The
    worker's root logger is at INFO, where azure-core's HTTP logging policy writes every
    request's and answer's URL and headers (tens of records per event, each redacted
    again at the handler). Elsewhere (tests, Core Tools) the host's logging is left as it
    is."""
    if os.environ.get("WEBSITE_INSTANCE_ID"):
        from regwarden.logsetup import logging_setup

        logging_setup(debug=False)


def build_state(function: str, *, extra_hosts: tuple[str, ...] = ()) -> State:
    """The state of `function` from the environment; `extra_hosts`: registry hosts it may
    contact besides the policy's and `REGWARDEN_ALLOWED_HOSTS` (the retention registry)."""
    from regwarden.policy import policy_secrets
    from regwarden.providers import ProviderOptions
    from regwarden.rechecks import RECHECK_SCHEDULERS, RecheckTarget
    from regwarden.runtime import Runtime, configured_hosts
    from regwarden.store import open_ledger
    from regwarden.warm import SecretEnv

    from ._settings import Settings, VaultSecrets, load_source

    settings = Settings.from_env()
    store = VaultSecrets(os.environ)
    source = load_source(settings.policy, store)
    policy = source.policy
    gate = function in GATE_FUNCTIONS or function == RECHECK
    # The gate's own secrets (keys) are fetched now: a key that cannot be read fails the
    # cold start, so nothing is judged without it. Channel secrets wait for their channel.
    keys = SecretEnv(os.environ, policy_secrets(policy, notifications=False) if gate else {}, store)
    secrets = SecretEnv(os.environ, policy_secrets(policy), store)
    ledger = open_ledger(settings.ledger)
    router = alerts_router(settings)
    if router is None and (gate or function == RECOVERY):  # a function that alerts
        router = _policy_router(policy, secrets)
    subscription = settings.subscriptions[0] if len(settings.subscriptions) == 1 else None
    runtime: Runtime[Ledger] = Runtime(
        policy,
        ledger=ledger,
        env=keys,
        actor=os.environ.get("REGWARDEN_ACTOR") or None,
        allowed_hosts=configured_hosts(policy, [*settings.allowed_hosts, *extra_hosts]),
        provider_defaults=ProviderOptions(account=subscription),
        router=router,
    )
    pipeline = runtime.pipeline() if gate or function == RECOVERY else None
    recheck = None
    if gate and settings.storage_account:
        target = RecheckTarget(url=settings.recheck_queue, env=os.environ)
        recheck = RECHECK_SCHEDULERS.get("storagequeue")(target)
    elif gate:
        log.warning("REGWARDEN_STORAGE_ACCOUNT is not set: PENDING verdicts are not rechecked")
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


# The collector stays paused until the end of the first invocation, not just its state
# build: the Azure clients (the ACR provider's, Table Storage's, the queue's, Event Grid's)
# are made, and their libraries imported, on first use, during the first event — as
# long-lived as the state (see `run`).
_STATES: ColdStart[State] = COLLECTOR.cold_start(_build, close_state, resume_when_built=False)


def state(function: str) -> State:
    """The function's state: built on first use, rebuilt past its TTL when stale."""
    return _STATES.refresh(function)


def reset() -> None:
    """Forget every cold-start state (tests change the environment between cases)."""
    _STATES.reset()


def run(function: str, work: Callable[[State], T]) -> T:
    """`work` with the function's state, its outcome logged; an exception is logged
    (redacted) and raised on, for the host to retry."""
    try:
        result = work(state(function))
    except Exception as exc:
        from regwarden.errors import RegwardenError
        from regwarden.redact import redact_text

        error = redact_text(f"{type(exc).__name__}: {exc}")
        log.error(
            "%s failed: %s",
            function,
            error,
            exc_info=not isinstance(exc, RegwardenError),  # a traceback for the unexpected
        )
        raise
    finally:
        COLLECTOR.resume()  # after the cold start's first invocation (once; see _STATES)
    log.info("%s handled: %s", function, result)
    return result


# -- judging events ---------------------------------------------------------------------------


def _refused(image: str, host: str, st: State) -> dict[str, Any] | None:
    """None when this function may contact `host`; else the rejection (logged): the host
    is never contacted and nothing is retried, since no attempt could succeed."""
    from regwarden.intake import host_allowed, host_not_allowed

    if host_allowed(host, st.runtime.allowed_hosts):
        return None
    why = str(host_not_allowed([host]))
    log.warning("event rejected: %s: %s", image, why)
    return {"image": image, "rejected": why}


def _render(st: State, handled: Handled, *, started: float, now: datetime) -> dict[str, Any]:
    """The recheck (a PENDING verdict's deadline, a settling manifest's window: a queue
    message made visible then; handed back again by a duplicate delivery, in case it was
    lost) and the summary of one event, logged as the outcome."""
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


def _judge(st: State, events: list[ImageEvent], *, final: bool) -> list[dict[str, Any]]:
    moment = CLOCK()
    results = []
    for event in events:
        refused = _refused(str(event.image), event.image.registry, st)
        if refused is not None:
            results.append(refused)
            continue
        started = time.monotonic()
        handled = st.gate.handle(event, now=moment, final_attempt=final)
        results.append(_render(st, handled, started=started, now=moment))
    return results


def _stamp(when: datetime | None) -> str | None:
    return None if when is None else when.isoformat().replace("+00:00", "Z")


def delivery_of(event: Any) -> tuple[bytes, str]:
    """(body, content type) of the delivery an Event Grid trigger's argument came in: the
    worker hands a `func.EventGridEvent` for the Event Grid schema and a `func.CloudEvent`
    for CloudEvents 1.0; each is written back in its schema for PARSERS "eventgrid"."""
    if hasattr(event, "specversion"):
        doc: dict[str, Any] = {
            "specversion": event.specversion,
            "id": event.id,
            "source": event.source,
            "type": event.type,
            "time": _stamp(event.time),
            "subject": event.subject,
            "data": event.get_json(),
        }
        cloud = {k: v for k, v in doc.items() if v is not None}
        return json.dumps(cloud).encode(), "application/cloudevents+json"
    grid = {
        "id": event.id,
        "topic": event.topic,
        "subject": event.subject,
        "eventType": event.event_type,
        "eventTime": _stamp(event.event_time),
        "data": event.get_json(),
        "dataVersion": event.data_version,
    }
    return json.dumps([{k: v for k, v in grid.items() if v is not None}]).encode(), (
        "application/json"
    )


def _parse(body: bytes, content_type: str | None) -> list[ImageEvent]:
    from regwarden.intake import PARSERS

    return PARSERS.get("eventgrid").parse(body, content_type)


def gate_event(event: Any) -> dict[str, Any]:
    """`on_push`: one Event Grid event of ACR's system topic (ImagePushed / ImageDeleted;
    a cosign tag or a referrer re-evaluates its subject) through the gate. Raises on any
    failure, a malformed event included (Event Grid retries, then dead-letters it)."""

    def work(st: State) -> dict[str, Any]:
        body, content_type = delivery_of(event)
        return {"id": event.id, "results": _judge(st, _parse(body, content_type), final=False)}

    return run("on_push", noting("on_push", event_key(str(event.id)), work, clock=now))


def webhook(method: str, body: bytes, headers: dict[str, str]) -> WebhookReply:
    """`on_webhook`: ACR's own webhook (`quarantine`, `push`, `delete`) or an Event Grid /
    CloudEvents delivery over HTTP. Event Grid's subscription handshakes are answered
    (validation code; CloudEvents' OPTIONS) before anything is built. 200 when handled,
    400 for a malformed delivery, 500 for a failure (the sender retries)."""
    from regwarden.errors import IntakeError
    from regwarden.intake import PARSERS

    lowered = {k.lower(): v for k, v in headers.items()}
    handshake = PARSERS.get("eventgrid").handshake
    try:
        answer = handshake(method, body, lowered) if handshake is not None else None
    except IntakeError as exc:
        return 400, {"error": str(exc)}, {}
    if answer is not None:
        return 200, answer.body, dict(answer.headers)
    if method != "POST":
        return 405, {"error": f"{method} is not a delivery"}, {"Allow": "POST, OPTIONS"}

    def work(st: State) -> dict[str, Any]:
        events = _parse(body, lowered.get("content-type"))
        return {"results": _judge(st, events, final=False)}

    try:
        summary = run("on_webhook", work)
    except IntakeError as exc:
        return 400, {"error": str(exc)}, {}
    except Exception as exc:
        from regwarden.redact import redact_text

        return 500, {"error": redact_text(f"{type(exc).__name__}: {exc}")}, {}
    return 200, {"handled": str(len(summary["results"]))}, {}


# -- on_scan ----------------------------------------------------------------------------------


def _scan_event(host: str, repository: str, digest: str, window: str) -> ImageEvent:
    from regwarden.model import EventKind, ImageEvent
    from regwarden.reference import ImageRef

    image = ImageRef(registry=host, repository=repository, digest=digest)
    # One id per image and poll window: a poll retried over the same window (its
    # watermark not yet moved) finds the images it judged already as duplicates.
    return ImageEvent(
        kind=EventKind.SCANNED,
        source="defender",
        image=image,
        time=CLOCK(),
        delivery_id=f"defender:{image}:{window}",
    )


def scan_poll() -> dict[str, Any]:
    """`on_scan`: every image whose Defender sub-assessments were generated since the
    watermark (`SCAN_WATERMARK`'s state in the ledger, less `SCAN_OVERLAP`) is judged again
    with its findings; the watermark moves to this poll's start only after every image was
    judged, so a failed poll is retried over the same window by the next tick."""

    def work(st: State) -> dict[str, Any]:
        from regwarden.scanning.defender import changed_since

        started = CLOCK()
        record = st.ledger.action(SCAN_WATERMARK)
        last = record.state.get("since") if record is not None else None
        since = (
            datetime.fromisoformat(last) - SCAN_OVERLAP
            if isinstance(last, str)
            else started - SCAN_LOOKBACK
        )
        window = since.isoformat()
        images = changed_since(st.settings.subscriptions, since, env=st.runtime.env)
        events = [_scan_event(*found, window) for found in images]
        results = _judge(st, events, final=False)
        if record is None:
            st.ledger.begin_action(
                SCAN_WATERMARK,
                registry="",
                repository="",
                digest="",
                kind="scan-poll",
                reason="on_scan watermark",
                state={},
                now=started,
            )
        st.ledger.finish_action(SCAN_WATERMARK, status="done", state={"since": started.isoformat()})
        return {"since": window, "results": results}

    return run("on_scan", work)


# -- recheck ----------------------------------------------------------------------------------


def recheck_message(
    body: bytes, *, message_id: str | None, dequeue_count: int | None
) -> dict[str, Any]:
    """`recheck`: one message of the rechecks queue (`regwarden.rechecks.recheck_message`).
    One still ahead of its time (beyond the queue's 7-day visibility limit) is sent on
    with the next hop; a due one re-evaluates the image. Its last dequeue
    (`REGWARDEN_MAX_DEQUEUE`; a count the host did not give counts as last) is the final
    attempt. Raises on failure (the host retries, then moves it to `-poison`)."""

    def work(st: State) -> dict[str, Any]:
        from regwarden.errors import IntakeError
        from regwarden.rechecks import parse_recheck

        try:
            doc = json.loads(body)
        except ValueError as exc:
            raise IntakeError(f"recheck message {message_id}: not JSON ({exc})") from None
        message = parse_recheck(doc)
        image = message.image
        refused = _refused(str(image), image.registry, st)
        if refused is not None:
            return {"id": message.id, "results": [refused]}
        moment = CLOCK()
        if message.again(st.recheck, now=moment):
            assert message.at is not None
            return {
                "id": message.id,
                "results": [{"image": str(image), "rescheduled": message.at.isoformat()}],
            }
        final = dequeue_count is None or dequeue_count >= st.settings.max_dequeue
        started = time.monotonic()
        handled = st.gate.recheck(image, now=moment, final_attempt=final)
        return {"id": message.id, "results": [_render(st, handled, started=started, now=moment)]}

    return run(RECHECK, noting(RECHECK, message_key(body), work, clock=now))


# -- recovery ---------------------------------------------------------------------------------


def recover() -> dict[str, int]:
    """`recovery`: every unfinished action intent older than `REGWARDEN_RECOVERY_SETTLE`
    is driven to its end from the ledger, with its verdict and alert, and every alert the
    outbox still holds is sent. Then expired delivery ids and outcome markers are deleted:
    Table Storage has no TTL of its own, so without this sweep they would stay forever. A
    failure raises; the next tick tries again."""

    def work(st: State) -> dict[str, int]:
        from regwarden.recovery import sweep

        at = CLOCK()
        settle = timedelta(seconds=st.settings.recovery_settle)
        done = sweep(st.gate, now=at, settle=settle).as_dict()
        expire = getattr(st.ledger, "expire_deliveries", None)  # a ledger with no TTL
        if expire is not None:
            done["expired_deliveries"] = int(expire(now=at))
        return done

    return run(RECOVERY, work)
