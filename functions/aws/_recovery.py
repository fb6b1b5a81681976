"""The recovery function's view of the ledger (imported on its cold start only)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from regwarden.store import ActionRecord, DynamoLedger

__all__ = ["SettledIntents"]


class SettledIntents(DynamoLedger):
    """The ledger as the recovery sweep reads it: an intent younger than `settle` may still
    be in the hands of the gate invocation that began it (another process, which no lock
    here reaches), so it is not listed as unfinished; that invocation, its redelivery or a
    later tick finishes it. The adapter's clock decides what is younger."""

    def __init__(self, table: str, *, settle: timedelta) -> None:
        super().__init__(table)
        self.settle = settle

    def actions(self, *, status: str | None = None) -> list[ActionRecord]:
        found = super().actions(status=status)
        if status != "intent":
            return found
        cutoff = datetime.now(UTC) - self.settle
        return [a for a in found if a.at <= cutoff]
