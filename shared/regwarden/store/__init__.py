"""The ledger: what regwarden has seen and done, where the registry keeps no record.

SQLite is the embedded default (one file, WAL mode, safe across threads and processes);
DynamoDB backs the same interface on AWS, Firestore on Google Cloud. `open_ledger(url)`
and `open_queue(url)` open what `--ledger` and `--queue` name, through the `LEDGERS` and
`QUEUES` registries.
"""

from ._access import AccessWindow, PullTally
from ._dynamo import TTL_ATTRIBUTE, DynamoLedger, dead_letter_key
from ._firestore import FirestoreLedger
from ._open import open_ledger, open_queue
from ._outcome import (
    OUTBOX_TTL,
    DeliveryOutcome,
    Findings,
    OutboxItem,
    OutboxRecord,
    Outcome,
    VerdictReader,
    VerdictRecord,
)
from ._protocol import EventQueue, Ledger
from ._sqlite import (
    ActionRecord,
    QuarantineRecord,
    SqliteLedger,
)
from ._sqlite_queue import DeadLetter, QueuedEvent
from ._urls import LEDGERS, QUEUES, ParsedUrl, display_url, parse_store_url

__all__ = [
    "LEDGERS",
    "OUTBOX_TTL",
    "QUEUES",
    "TTL_ATTRIBUTE",
    "AccessWindow",
    "ActionRecord",
    "DeadLetter",
    "DeliveryOutcome",
    "DynamoLedger",
    "EventQueue",
    "Findings",
    "FirestoreLedger",
    "Ledger",
    "OutboxItem",
    "OutboxRecord",
    "Outcome",
    "ParsedUrl",
    "PullTally",
    "QuarantineRecord",
    "QueuedEvent",
    "SqliteLedger",
    "VerdictReader",
    "VerdictRecord",
    "dead_letter_key",
    "display_url",
    "open_ledger",
    "open_queue",
    "parse_store_url",
]
