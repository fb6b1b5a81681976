"""The records every ledger returns (whatever stores them): an action's, a quarantine's,
a failure note's. Their own module, so a ledger imports them without importing another
ledger's module (the SQLite one loads sqlite3; a cloud function has no use for it)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = ["ActionRecord", "FailureNote", "QuarantineRecord", "select_quarantines"]


@dataclass(frozen=True, slots=True)
class ActionRecord:
    key: str
    at: datetime
    registry: str
    repository: str
    digest: str
    kind: str
    status: str
    """'intent' before the first write, then 'done' or 'failed'."""
    reason: str
    state: dict[str, Any]


@dataclass(frozen=True, slots=True)
class QuarantineRecord:
    registry: str
    repository: str
    digest: str
    strategy: str
    location: str
    """Where the image is now: the quarantine repository for `move`, else the source."""
    tags: tuple[str, ...]
    """Tags the image had before quarantine; release restores exactly these."""
    reason: str
    quarantined_at: datetime
    released_at: datetime | None


def select_quarantines(
    records: list[QuarantineRecord], released: bool | None
) -> list[QuarantineRecord]:
    """`Ledger.quarantines` from every record of a store that cannot filter or order them
    itself: those `released` asks for, in the protocol's order."""
    kept = [r for r in records if released is None or (r.released_at is not None) == released]
    return sorted(kept, key=lambda r: (r.quarantined_at, r.registry, r.repository, r.digest))


@dataclass(frozen=True, slots=True)
class FailureNote:
    """What a function noted about an SQS record that failed: the dead-letter listing's
    "why" (SQS keeps no error with a message)."""

    first_error: str
    first_at: datetime
    last_error: str
    last_at: datetime
    failures: int
