"""The ledger: what regwarden has seen and done, where the registry keeps no record.

SQLite is the embedded default (one file, WAL mode, safe across threads and processes);
DynamoDB backs the same interface on AWS, Firestore on Google Cloud. `open_ledger(url)`
and `open_queue(url)` open what `--ledger` and `--queue` name, through the `LEDGERS` and
`QUEUES` registries.
"""

from typing import TYPE_CHECKING, Any

from ._access import AccessWindow, PullTally
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
from ._records import ActionRecord, QuarantineRecord
from ._urls import LEDGERS, QUEUES, ParsedUrl, display_url, parse_store_url

if TYPE_CHECKING:
    from ._dynamo import TTL_ATTRIBUTE, DynamoLedger, dead_letter_key
    from ._firestore import FirestoreLedger
    from ._sqlite import SqliteLedger
    from ._sqlite_queue import DeadLetter, QueuedEvent

_LAZY = {
    "TTL_ATTRIBUTE": "_dynamo",
    "DynamoLedger": "_dynamo",
    "dead_letter_key": "_dynamo",
    "FirestoreLedger": "_firestore",
    "SqliteLedger": "_sqlite",
    "DeadLetter": "_sqlite_queue",
    "QueuedEvent": "_sqlite_queue",
}
"""A store's own names, imported from its module when first asked for: opening a ledger
loads only its store (`_open.py`), and a cloud function never loads the others."""


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


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
