"""One botocore `Config` for every AWS client regwarden makes: its user agent, a bounded
retry budget and short socket timeouts.

botocore's defaults wait 60 s to connect and 60 s per read, ten times over: a stalled API
endpoint could hold a worker for twenty minutes. These bound each attempt to 5 s to
connect and 20 s per read. botocore has no overall deadline per call; on Lambda the
function's timeout is that deadline (a killed invocation is redelivered and resumes from
its ledger intent), and elsewhere the attempts times these timeouts bound it.
"""

from __future__ import annotations

from typing import Any

from . import USER_AGENT

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
