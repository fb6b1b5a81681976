"""Webhook receiver for registry notifications as an ASGI app, for Cloud Run, Knative, a
Kubernetes Deployment or any ASGI server: `uvicorn functions.http.app:app`.

Settings come from the environment, read once at start-up:
  REGWARDEN_POLICY            policy file path
  REGWARDEN_LEDGER            ledger: an SQLite path or sqlite:///PATH (also the durable
                              queue), or dynamodb://TABLE?region=R; on a serverless platform
                              use a persistent volume or put SQS/Pub/Sub in front
  REGWARDEN_QUEUE             the durable queue, sqlite:///PATH (default: the ledger's own;
                              required with a ledger that has none, e.g. dynamodb://)
  REGWARDEN_AUTH_TOKEN_FILE   file with the tokens callers must present (mounted secret)
  REGWARDEN_WORKERS           worker threads (default 4)
  REGWARDEN_REGISTRIES        registry hosts events may name, besides the policy's
                              `registries:` (comma-separated host[:port]); others get 400
  REGWARDEN_INSTANCE          this replica's id on the queue (default: the host name); a
                              replica restarted with the same id takes its events back at once
The same app as `regwarden serve` (leases, recovery sweep, outbox, the access monitor); no
rule logic here.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any


def build() -> Any:
    import socket

    from regwarden import service
    from regwarden.errors import UsageError
    from regwarden.logsetup import logging_setup
    from regwarden.receiver import CallerAuthenticator, WorkerPool, create_app
    from regwarden.recovery import Sweeper
    from regwarden.runtime import load_runtime, registries_from_env
    from regwarden.store import open_queue

    try:
        policy = os.environ["REGWARDEN_POLICY"]
        ledger = os.environ["REGWARDEN_LEDGER"]
        tokens = os.environ["REGWARDEN_AUTH_TOKEN_FILE"]
    except KeyError as missing:
        raise UsageError(f"environment variable {missing} is required") from None
    logging_setup(debug=False)
    runtime = load_runtime(policy, ledger=ledger, registries=registries_from_env(os.environ))
    queue = open_queue(os.environ.get("REGWARDEN_QUEUE") or None, ledger=runtime.ledger)
    if not runtime.allowed_hosts:
        raise UsageError(
            "no registry to serve: list hosts in the policy's registries section or "
            "REGWARDEN_REGISTRIES"
        )
    pipeline = runtime.pipeline()
    clock = lambda: datetime.now(UTC)  # noqa: E731
    processor = service.Processor(pipeline, queue, clock=clock)
    pool = WorkerPool(
        queue,
        processor,
        workers=int(os.environ.get("REGWARDEN_WORKERS", "4")),
        owner=os.environ.get("REGWARDEN_INSTANCE") or socket.gethostname(),
        max_attempts=service.MAX_ATTEMPTS,
    )
    Sweeper(pipeline, clock=clock).start()  # finishes what a crash left, then every 30 s
    # pulls (and pushes, for `access.pushers`) to the access monitor: docs/access.md
    access = service.access_intake(
        runtime.policy, pipeline, allowed_hosts=runtime.allowed_hosts, clock=clock
    )
    return create_app(
        ledger=queue,
        auth=CallerAuthenticator.from_file(tokens),
        validators=service.receiver_validators(pipeline.wants, runtime.allowed_hosts),
        pool=pool,
        run_pool=True,
        access=access,
    )


app = build() if os.environ.get("REGWARDEN_POLICY") else None
