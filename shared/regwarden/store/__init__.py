"""The ledger: what regwarden has seen and done, where the registry keeps no record.

SQLite is the embedded default (one file, WAL mode, safe across threads and processes);
DynamoDB backs the same interface on AWS.
"""

from ._dynamo import DynamoLedger
from ._open import open_ledger
from ._outcome import OUTBOX_TTL, DeliveryOutcome, OutboxItem, Outcome
from ._protocol import EventQueue, Ledger
from ._sqlite import (
    ActionRecord,
    QuarantineRecord,
    SqliteLedger,
)
from ._sqlite_queue import DeadLetter, QueuedEvent

__all__ = [
    "OUTBOX_TTL",
    "ActionRecord",
    "DeadLetter",
    "DeliveryOutcome",
    "DynamoLedger",
    "EventQueue",
    "Ledger",
    "OutboxItem",
    "Outcome",
    "QuarantineRecord",
    "QueuedEvent",
    "SqliteLedger",
    "open_ledger",
]
