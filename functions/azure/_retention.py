"""What the Azure retention functions do: timer → `retention_fanout` → the Storage queue
`REGWARDEN_RETENTION_QUEUE` (`regwarden-retention-work`), one message per repository →
`retention_worker`.

    fan-out:  timer tick → run id from the tick's minute (a retry of the same occurrence
              repeats it) → `fan_out_scheduled` over the ACR login server
              (`REGWARDEN_RETENTION_REGISTRY`) → `azure_queues.send`, one message each
    worker:   queue message → `work_body` (plan; with RETENTION_MODE=apply, delete and
              alert) → out of time or failed deletions → raise: the host delivers the
              message again (up to `maxDequeueCount`, then `-poison`) and the recorded run
              resumes (nothing is planned or deleted twice, no second alert)

In use (`REGWARDEN_RETENTION_INVENTORY`): `azure` (the default) adds the AKS clusters and
the Container Apps and jobs of `REGWARDEN_AZURE_SUBSCRIPTION` to the policy's inventory,
unless the policy sets those sections itself; `policy` reads only the policy's. A manifest
ACR locks against deletion is never deleted; the worker's summary lists it (`locked`).

The payload, run id, message and outcome rules are the core's (`regwarden.retention`);
this module keeps the settings, the state and the Storage queue I/O.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from regwarden.warm import ColdStart

from . import COLLECTOR, _app

if TYPE_CHECKING:
    import azure.functions as func

    from regwarden.policy import Inventory

    from ._settings import RetentionSettings

__all__ = ["FANOUT", "WORKER", "fan_out", "reset", "tick_payload", "work"]

FANOUT = "retention_fanout"
WORKER = "retention_worker"
STOP_MARGIN_S = 30.0
"""A worker starts no deletion with less time than this left of its budget."""

log = logging.getLogger("regwarden.azure.retention")
T = TypeVar("T")


@dataclass
class State:
    app: _app.State
    retention: RetentionSettings

    @property
    def ttl(self) -> float:
        return self.app.ttl

    def stale(self) -> bool:
        return self.app.stale()


def _build(function: str) -> State:
    from ._settings import RetentionSettings

    retention = RetentionSettings.from_env()
    app = _app.build_state(function, extra_hosts=(retention.registry,))
    if function == FANOUT and not app.settings.storage_account:
        from regwarden.errors import UsageError

        _app.close_state(app)
        raise UsageError(
            "REGWARDEN_STORAGE_ACCOUNT is not set; expected the storage account of the "
            f"retention queue {app.settings.retention_queue}"
        )
    return State(app, retention)


def _close(st: State) -> None:
    _app.close_state(st.app)


_STATES: ColdStart[State] = COLLECTOR.cold_start(_build, _close)


def reset() -> None:
    """Forget the cold-start state (tests change the environment between cases)."""
    _STATES.reset()


def _run(function: str, work: Callable[[State], T]) -> T:
    """`work` with the function's state, its outcome logged; an exception is logged
    (redacted) and raised on, for the host to retry (as `_app.run` does for the gate)."""
    try:
        result = work(_STATES.refresh(function))
    except Exception as exc:
        from regwarden.errors import RegwardenError
        from regwarden.redact import redact_text

        error = redact_text(f"{type(exc).__name__}: {exc}")
        log.error("%s failed: %s", function, error, exc_info=not isinstance(exc, RegwardenError))
        raise
    log.info("%s handled: %s", function, json.dumps(result, default=str))
    return result


def tick_payload(timer: func.TimerRequest, now: datetime) -> dict[str, str]:
    """The schedule's payload: the minute the tick fired in stands for the occurrence (a
    TimerRequest does not name it), so a retry within it repeats the run id. A past-due
    tick (the app was down at its time) is a run of its own."""
    del timer  # past_due or not, the run is the one starting now
    return {"scheduledTime": now.replace(second=0, microsecond=0).isoformat()}


def fan_out(timer: func.TimerRequest) -> dict[str, Any]:
    """The scheduled fan-out: one work message per repository with retention rules in this
    deployment's scope (`REGWARDEN_RETENTION_PREFIXES`). Raises (the host logs the failed
    run; the next occurrence runs again) when a message could not be queued."""

    def work(st: State) -> dict[str, Any]:
        from regwarden.retention import fan_out_scheduled

        now = _app.now()
        host = st.retention.registry
        done = fan_out_scheduled(
            tick_payload(timer, now),
            st.app.runtime.registry(host),
            st.app.runtime.policy,
            registry_name=host,
            prefixes=st.retention.prefixes,
            now=now,
        )
        _send(st, done.bodies())
        return done.summary(mode=st.retention.mode, queue=st.app.settings.retention_queue)

    return _run(FANOUT, work)


def _send(st: State, bodies: Sequence[str]) -> None:
    from regwarden.azure_queues import send

    for body in bodies:
        send(st.app.settings.retention_queue, body.encode(), env=os.environ)


def _inventory(st: State) -> Inventory:
    """The policy's inventory, with AKS and Container Apps added where `azure` is chosen
    and the policy does not set them."""
    from regwarden.policy import AksInventory, ContainerAppsInventory
    from regwarden.retention import inventory_with

    inventory = st.app.runtime.policy.inventory
    if st.retention.inventory == "azure":
        inventory = inventory_with(
            inventory, aks=AksInventory(), containerapps=ContainerAppsInventory()
        )
    return inventory


def work(message: func.QueueMessage) -> dict[str, Any]:
    """One work message: plan (and, with RETENTION_MODE=apply, delete and alert) one
    repository. Raises — the host delivers the message again — when the inventory or the
    registry cannot be read, deletions failed, or the call's budget ran out; a malformed
    message raises too and ends on the poison queue."""
    body = message.get_body().decode("utf-8", errors="replace")

    def handle(st: State) -> dict[str, Any]:
        from regwarden.retention import deadline_guard, gather_in_use, work_body

        deadline = time.monotonic() + st.retention.budget
        policy = st.app.runtime.policy
        inventory = _inventory(st)
        done = work_body(
            body,
            st.app.runtime,
            registry=st.retention.registry,
            prefixes=st.retention.prefixes,
            now=_app.now(),
            execute=st.retention.apply,
            concurrency=st.retention.concurrency,
            in_use=lambda: gather_in_use(inventory, base_dir=policy.base_dir, env=os.environ),
            should_stop=deadline_guard(deadline, margin_s=STOP_MARGIN_S),
            resume_delay=0,
        )
        if done.failure is not None:
            raise done.failure
        summary: dict[str, Any] = done.summary(mode=st.retention.mode)
        return summary

    return _run(WORKER, handle)
