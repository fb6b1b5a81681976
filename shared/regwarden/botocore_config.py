"""One botocore `Config` for every AWS client regwarden makes (its user agent, a bounded
retry budget and short socket timeouts), and one boto3 session per process to make them.

botocore's defaults wait 60 s to connect and 60 s per read, ten times over: a stalled API
endpoint could hold a worker for twenty minutes. These bound each attempt to 5 s to
connect and 20 s per read. botocore has no overall deadline per call; on Lambda the
function's timeout is that deadline (a killed invocation is redelivered and resumes from
its ledger intent), and elsewhere the attempts times these timeouts bound it.

Every botocore session loads the endpoint rules and each service's model from disk again
(tens of milliseconds each, hundreds on a cold start that made one session per client), so
`session()` is one per process and `client()` caches clients per (service, region, endpoint,
retry budget). botocore clients are thread-safe; sessions are not, so both are made under
a lock. The session is made again, and the cache emptied, when the process's `AWS_*`
environment changes (credentials, region, endpoints: tests change it between cases; a
Lambda's never changes), so no client outlives the settings it was made with.

A cached client is shared: whoever closes it only drops its pooled connections (botocore
opens new ones on the next call), and hooks registered on its events see every caller's
requests (the same credentials and region: the same throttling bucket at AWS).
"""

from __future__ import annotations

import os
import threading
from typing import Any

from . import USER_AGENT

__all__ = ["CONNECT_TIMEOUT", "READ_TIMEOUT", "botocore_config", "client", "session"]

CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 20.0


def botocore_config(*, mode: str = "adaptive", attempts: int = 10) -> Any:
    """A `botocore.config.Config` (imported lazily: boto3 is an extra)."""
    from botocore.config import Config

    return Config(
        retries={"mode": mode, "total_max_attempts": attempts},
        user_agent_extra=USER_AGENT,
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=READ_TIMEOUT,
    )


_LOCK = threading.Lock()
_SESSION: Any = None
_SESSION_ENV: tuple[tuple[str, str], ...] = ()
_CLIENTS: dict[tuple[str, str | None, str | None, str, int], Any] = {}


def _aws_environment() -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("AWS_")))


def _current_session() -> Any:
    """The process's session (caller holds `_LOCK`), new when the AWS_* environment
    changed since it was made."""
    global _SESSION, _SESSION_ENV
    env = _aws_environment()
    if _SESSION is None or env != _SESSION_ENV:
        import boto3

        _SESSION, _SESSION_ENV = boto3.session.Session(), env
        _CLIENTS.clear()
    return _SESSION


def session() -> Any:
    """The process's `boto3.session.Session` (for libraries that make their own clients,
    such as Powertools' idempotency layer)."""
    with _LOCK:
        return _current_session()


def client(
    service: str,
    *,
    region: str | None = None,
    endpoint_url: str | None = None,
    mode: str = "adaptive",
    attempts: int = 10,
) -> Any:
    """A botocore client for `service` with `botocore_config(mode=, attempts=)`, made once
    per process for each (service, region, endpoint, retry budget); None region or
    endpoint: boto3's own resolution (environment, config files)."""
    key = (service, region, endpoint_url, mode, attempts)
    with _LOCK:
        current = _current_session()
        found = _CLIENTS.get(key)
        if found is None:
            found = _CLIENTS[key] = current.client(
                service,
                region_name=region,
                endpoint_url=endpoint_url,
                config=botocore_config(mode=mode, attempts=attempts),
            )
        return found
