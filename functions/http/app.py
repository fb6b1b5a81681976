"""Webhook receiver for registry notifications as an ASGI app, for Cloud Run, Knative, a
Kubernetes Deployment or any ASGI server: `uvicorn functions.http.app:app`.

Settings come from the environment, read once at start-up:
  REGWARDEN_POLICY            policy file path
  REGWARDEN_LEDGER            SQLite ledger path (durable queue + ledger); on a serverless
                              platform use a persistent volume or put SQS/Pub/Sub in front
  REGWARDEN_AUTH_TOKEN_FILE   file with the tokens callers must present (mounted secret)
  REGWARDEN_WORKERS           worker threads (default 4)
The same app as `regwarden serve`; no rule logic here.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def build() -> Any:
    from regwarden import service
    from regwarden.errors import UsageError
    from regwarden.receiver import Authenticator, WorkerPool, create_app
    from regwarden.runtime import load_runtime

    try:
        policy = os.environ["REGWARDEN_POLICY"]
        ledger = os.environ["REGWARDEN_LEDGER"]
        tokens = os.environ["REGWARDEN_AUTH_TOKEN_FILE"]
    except KeyError as missing:
        raise UsageError(f"environment variable {missing} is required") from None
    runtime = load_runtime(policy, ledger_path=Path(ledger))
    pipeline = runtime.pipeline()
    processor = service.Processor(pipeline, runtime.ledger, clock=lambda: datetime.now(UTC))
    pool = WorkerPool(
        runtime.ledger,
        processor,
        workers=int(os.environ.get("REGWARDEN_WORKERS", "4")),
        max_attempts=service.MAX_ATTEMPTS,
    )
    return create_app(
        ledger=runtime.ledger,
        auth=Authenticator.from_file(tokens),
        validators=service.receiver_validators(pipeline.wants),
        pool=pool,
        run_pool=True,
    )


app = build() if os.environ.get("REGWARDEN_POLICY") else None
