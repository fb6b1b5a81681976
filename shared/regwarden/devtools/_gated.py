"""A local registry whose notifications feed regwarden's webhook receiver, running in this
process (as `regwarden serve` would): the demo and the push-gate benchmark use it."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..receiver import AccessIntake, CallerAuthenticator, Job, WorkerPool, create_app
from ..store import EventQueue
from ._registry import LocalRegistry, free_port

if TYPE_CHECKING:
    from ..model import ImageEvent


# What regwarden never acts on, filtered by the registry itself (distribution's endpoint
# `ignore`) so it is neither sent nor received: blob events (pushes, pulls and mounts of
# layers and configs; distribution reports blobs as application/octet-stream) and deletes.
# The receiver drops them too; this only saves the registry and regwarden the deliveries.
IGNORED_MEDIA_TYPES = ("application/octet-stream",)
IGNORED_ACTIONS = ("delete",)


@dataclass(frozen=True)
class GatedRegistry:
    registry: LocalRegistry
    pool: WorkerPool
    receiver_port: int


@contextmanager
def serve_in_thread(app: Any, port: int) -> Iterator[None]:
    """Run an ASGI app with uvicorn on 127.0.0.1:`port` in a daemon thread."""
    import uvicorn

    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError(f"the receiver could not start on 127.0.0.1:{port}")
        time.sleep(0.01)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(10)


@contextmanager
def gated_registry(
    ledger: EventQueue,
    process: Job,
    *,
    workers: int = 4,
    poll: float = 0.05,
    backoff: str = "200ms",
    keep: Callable[[ImageEvent], bool] | None = None,
    registry_dir: Path | None = None,
    access: AccessIntake | None = None,
) -> Iterator[GatedRegistry]:
    """docker-registry on loopback → receiver (random token) → durable queue → workers.
    `keep` (`Pipeline.wants`) lets the receiver drop events the pipeline would ignore;
    `registry_dir`: the registry's directory (storage, config, log), kept after it stops;
    `access`: the access monitor's intake (`service.access_intake`), which then gets the
    registry's manifest pulls, as under `regwarden serve` (started here, stopped last:
    its tallies are written when it stops)."""
    from ..service import receiver_validators

    token = secrets.token_urlsafe(24)
    pool = WorkerPool(ledger, process, workers=workers, poll=poll)
    app = create_app(
        ledger=ledger,
        auth=CallerAuthenticator([token]),
        validators=receiver_validators(keep),
        pool=pool,
        access=access,
    )
    port = free_port()
    pool.start()
    if access is not None:
        access.start()
    try:
        with (
            serve_in_thread(app, port),
            LocalRegistry(
                notifications=f"http://127.0.0.1:{port}/events/distribution",
                notification_headers={"Authorization": f"Bearer {token}"},
                notification_timeout="2s",
                notification_backoff=backoff,
                ignored_media_types=IGNORED_MEDIA_TYPES,
                ignored_actions=IGNORED_ACTIONS,
                workdir=registry_dir,
            ) as registry,
        ):
            yield GatedRegistry(registry, pool, port)
    finally:
        pool.stop()
        if access is not None:
            access.stop()
