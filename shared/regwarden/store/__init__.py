"""The ledger: what regwarden has seen and done, where the registry keeps no record.

SQLite is the embedded default (one file, WAL mode, safe across threads and processes);
DynamoDB backs the same interface on AWS.
"""

from ._dynamo import DynamoLedger
from ._protocol import EventQueue, Ledger
from ._sqlite import (
    ActionRecord,
    QuarantineRecord,
    QueuedEvent,
    SqliteLedger,
)

__all__ = [
    "ActionRecord",
    "DynamoLedger",
    "EventQueue",
    "Ledger",
    "QuarantineRecord",
    "QueuedEvent",
    "SqliteLedger",
]
