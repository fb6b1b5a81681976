"""Tag history written straight into the DynamoDB ledger's table, for the paging tests.

DynamoDB answers a query 1 MB at a time (moto too). Writing hundreds of pushes through the
ledger would be slow; these rows, in the ledger's own item layout and padded to 2 KB each,
make one repository's partition larger than a page in a few batch writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

PAD = 2048
"""Bytes of padding per row: 600 rows make about 1.2 MB."""


def write_tag_history(
    client: Any,
    table: str,
    registry: str,
    repository: str,
    pairs: Sequence[tuple[str, str]],
    *,
    start: datetime,
) -> None:
    """One tag-history row per (tag, digest), first seen one second apart from `start`."""
    rows = [
        {
            "pk": {"S": f"repo#{registry}/{repository}"},
            "sk": {"S": f"tag#{tag}#{digest}"},
            "tag": {"S": tag},
            "digest": {"S": digest},
            "seen_at": {"S": (start + timedelta(seconds=n)).isoformat(timespec="microseconds")},
            "pad": {"S": "x" * PAD},
        }
        for n, (tag, digest) in enumerate(pairs)
    ]
    for first in range(0, len(rows), 25):  # BatchWriteItem takes 25 requests at the most
        batch = [{"PutRequest": {"Item": r}} for r in rows[first : first + 25]]
        client.batch_write_item(RequestItems={table: batch})
