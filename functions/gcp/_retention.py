"""What the retention functions share: Cloud Scheduler → Pub/Sub tick → `retention_fanout`
→ the work topic, one message per repository → `retention_worker`.

    fan-out:  tick (data: `{}` or `{"globs", "run", "scheduledTime"}`) → run id (from
              the schedule's time, else the tick's publish time: a redelivered tick
              repeats it) → `fan_out_scheduled` over the Artifact Registry host →
              Publish, up to 1000 messages a call
    worker:   work message → `work_body` (plan; with RETENTION_MODE=apply, delete and
              alert) → out of time or failed deletions → 500: Pub/Sub redelivers and the
              recorded run resumes (nothing is planned or deleted twice, no second alert)

The payload, run id, message and outcome rules are the core's (`regwarden.retention`);
this module keeps the settings, the state and the Pub/Sub I/O.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from regwarden.warm import ColdStart

from . import COLLECTOR, _app

if TYPE_CHECKING:
    from regwarden.intake.pubsub import PubSubMessage

    from ._settings import RetentionSettings

__all__ = ["FANOUT", "PUBLISH_BATCH", "WORKER", "fan_out_delivery", "reset", "worker_delivery"]

FANOUT = "retention_fanout"
WORKER = "retention_worker"
PUBLISH_BATCH = 1000
"""Messages per Publish call (Pub/Sub's limit; the work messages are far below its 10 MB)."""
STOP_MARGIN_S = 30.0
"""A worker starts no deletion with less time than this left of its budget."""


@dataclass
class State:
    app: _app.State
    retention: RetentionSettings
    publisher: Any = None

    @property
    def ttl(self) -> float:
        return self.app.ttl

    def stale(self) -> bool:
        return self.app.stale()

    def client(self) -> Any:
        if self.publisher is None:
            from google.pubsub_v1 import PublisherClient

            from regwarden.gcp_clients import client_kwargs

            self.publisher = PublisherClient(**client_kwargs("pubsub", os.environ))
        return self.publisher


def _build(function: str) -> State:
    from ._settings import RetentionSettings

    retention = RetentionSettings.from_env()
    st = State(_app.build_state(function, extra_hosts=(retention.registry,)), retention)
    if function == FANOUT and not st.app.settings.retention_topic:
        from regwarden.errors import UsageError

        raise UsageError(
            "REGWARDEN_RETENTION_TOPIC is not set; expected projects/P/topics/TOPIC "
            "(the retention work topic)"
        )
    return st


def _close(st: State) -> None:
    _app.close_state(st.app)


_STATES: ColdStart[State] = COLLECTOR.cold_start(_build, _close)


def reset() -> None:
    """Forget the cold-start state (tests change the environment between cases)."""
    _STATES.reset()


def _payload(message: PubSubMessage) -> object:
    """The tick's payload; its publish time stands for the schedule's time when the
    payload names neither (Cloud Scheduler's Pub/Sub target sends fixed data)."""
    from regwarden.errors import IntakeError

    try:
        payload = json.loads(message.data) if message.data.strip() else {}
    except ValueError as exc:
        raise IntakeError(f"retention tick: data is not JSON ({exc})") from None
    named = isinstance(payload, dict) and {"run", "scheduledTime"} & set(payload)
    if isinstance(payload, dict) and not named and message.publish_time is not None:
        payload["scheduledTime"] = message.publish_time.isoformat()
    return payload


def fan_out_delivery(body: bytes, headers: Mapping[str, str]) -> _app.Reply:
    """The scheduled fan-out: one work message per repository with retention rules in
    this deployment's scope. Fails (500: the tick is redelivered, with the same run id,
    so already-queued repositories resume) when any message could not be published."""

    def work(st: State) -> dict[str, Any]:
        from regwarden.intake.pubsub import decode_pubsub
        from regwarden.retention import fan_out_scheduled

        message = decode_pubsub(body, headers)
        host = st.retention.registry
        done = fan_out_scheduled(
            _payload(message),
            st.app.runtime.registry(host),
            st.app.policy,
            registry_name=host,
            prefixes=st.retention.prefixes,
            now=_app.now(),
        )
        calls = _publish(st, done.messages)
        return done.summary(mode=st.retention.mode, publish_calls=calls)

    return _app.respond(FANOUT, headers, work, _STATES.refresh)


def _publish(st: State, messages: Sequence[Mapping[str, str]]) -> int:
    from google.api_core import exceptions
    from google.pubsub_v1 import PubsubMessage

    from regwarden.errors import RegistryError
    from regwarden.retention import message_body

    topic = st.app.settings.retention_topic
    calls = 0
    for start in range(0, len(messages), PUBLISH_BATCH):
        batch = [
            PubsubMessage(
                data=message_body(m).encode(),
                attributes={"repository": m["repository"], "run": m["run"]},
            )
            for m in messages[start : start + PUBLISH_BATCH]
        ]
        calls += 1
        try:
            st.client().publish(topic=topic, messages=batch, timeout=60.0)
        except exceptions.GoogleAPIError as exc:
            raise RegistryError(f"Pub/Sub {topic}: cannot queue retention work: {exc}") from exc
    return calls


def worker_delivery(body: bytes, headers: Mapping[str, str]) -> _app.Reply:
    """One work message: plan (and, with RETENTION_MODE=apply, delete and alert) one
    repository. 500 (redelivered; the run resumes) when the inventory or registry cannot
    be read, deletions failed, or the call's budget ran out; 400 for a malformed message."""

    def work(st: State) -> dict[str, Any]:
        from regwarden.intake.pubsub import decode_pubsub
        from regwarden.policy import CloudRunInventory
        from regwarden.retention import deadline_guard, gather_in_use, inventory_with, work_body

        deadline = time.monotonic() + st.retention.budget
        message = decode_pubsub(body, headers)
        policy = st.app.policy
        inventory = policy.inventory
        if st.retention.inventory == "cloudrun":
            inventory = inventory_with(inventory, cloudrun=CloudRunInventory())
        done = work_body(
            message.data.decode("utf-8", errors="replace"),
            st.app.runtime,
            registry=st.retention.registry,
            prefixes=st.retention.prefixes,
            now=_app.now(),
            execute=st.retention.apply,
            concurrency=st.retention.concurrency,
            in_use=lambda: gather_in_use(inventory, base_dir=policy.base_dir),
            should_stop=deadline_guard(deadline, margin_s=STOP_MARGIN_S),
            resume_delay=0,
        )
        if done.failure is not None:
            raise done.failure
        return done.summary(mode=st.retention.mode)

    return _app.respond(WORKER, headers, work, _STATES.refresh)
