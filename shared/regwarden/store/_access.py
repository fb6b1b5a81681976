"""What the ledger keeps of the access stream (issue #16): pull tallies per image and
principal, when pull tracking began per repository, and the open de-duplication windows of
access alerts. Plain records; every store reads and writes these same shapes
(`Ledger.record_pulls`, `Ledger.open_access_window`, …)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

WINDOW_KEY = re.compile(r"[A-Za-z0-9:_-]{1,128}")
"""What an access window's key may be: opaque to the ledger, safe as a row key on every
store (DynamoDB sort key, Firestore document id, Table Storage RowKey)."""


@dataclass(frozen=True, slots=True)
class PullTally:
    """Pulls of one image by one principal, coalesced: `count` pulls, the last at
    `last_pulled`. `record_pulls` adds them to what the ledger holds."""

    registry: str
    repository: str
    digest: str
    principal: str
    """Who pulled; "" when the event names nobody."""
    last_pulled: datetime
    count: int
    """Pulls in this tally (>= 1)."""


@dataclass(frozen=True, slots=True)
class AccessWindow:
    """An access alert's de-duplication window: the first access of a kind by a principal to a
    digest opens it (and alerts at once); further ones until `closes_at` are counted into it
    and summarised when it closes."""

    key: str
    """Opaque, at most 128 characters of [A-Za-z0-9:_-] (a hash from `regwarden.access`)."""
    registry: str
    repository: str
    digest: str
    opened_at: datetime
    closes_at: datetime
    count: int = 0
    """Accesses counted after the one that opened the window."""
    last_seen: datetime | None = None
    alert: str = ""
    """The opening alert as JSON (the summary is built from it)."""


def check_window_key(key: str) -> str:
    """`key`, or ValueError when a store could not keep it as a row key."""
    if not WINDOW_KEY.fullmatch(key):
        raise ValueError(f"access window key must be 1-128 of [A-Za-z0-9:_-]: {key!r}")
    return key


def check_tally(tally: PullTally) -> PullTally:
    """`tally`, or ValueError for a count below one or a naive time."""
    if tally.count < 1:
        raise ValueError(f"a pull tally counts at least one pull: {tally.count}")
    if tally.last_pulled.tzinfo is None:
        raise ValueError("ledger times must be timezone-aware")
    return tally
