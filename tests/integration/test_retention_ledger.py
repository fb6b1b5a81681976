"""The ledger method retention reads a repository's tag history with (`tag_history`), on
every ledger: SQLite, DynamoDB on moto in server mode (boto3 over the wire), and Firestore on
`support.fake_firestore` (the GAPIC client over REST)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from support import fake_firestore as firestore_support
from support import moto_server as support
from support.dynamo_ledger import write_tag_history
from support.moto_server import MotoServer

from regwarden.store import DynamoLedger, FirestoreLedger, Ledger, SqliteLedger
from regwarden.store._dynamo import table_definition

moto_server = support.moto_server
moto = support.moto
fake_firestore = firestore_support.fake_firestore

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64
C = "sha256:" + "c" * 64
TABLE = "regwarden-ledger"


@pytest.fixture(params=["sqlite", "dynamodb", "firestore"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ledger]:
    if request.param == "sqlite":
        sqlite = SqliteLedger(tmp_path / "ledger.db")
        yield sqlite
        sqlite.close()
        return
    if request.param == "firestore":
        request.getfixturevalue("fake_firestore")  # and REGWARDEN_GCP_ENDPOINT_FIRESTORE
        firestore = FirestoreLedger("demo-proj")
        yield firestore
        firestore.close()
        return
    server: MotoServer = request.getfixturevalue("moto")
    client: Any = server.client("dynamodb")
    client.create_table(**table_definition(TABLE))
    dynamo = DynamoLedger(TABLE, client=client)
    yield dynamo
    dynamo.close()


def test_tag_history_lists_every_tag_digest_pair_of_one_repository_oldest_first(
    ledger: Ledger,
) -> None:
    ledger.record_push("reg", "team/api", A, ("1.0", "latest"), now=T0)
    ledger.record_push("reg", "team/api", B, ("latest",), now=T0 + timedelta(hours=1))
    ledger.record_push("reg", "team/api", C, (), now=T0 + timedelta(hours=2))  # by digest
    ledger.record_push("reg", "team/api", A, ("1.0",), now=T0 + timedelta(hours=3))  # again
    ledger.record_push("reg", "team/web", C, ("x",), now=T0)  # another repository
    ledger.record_push("other", "team/api", C, ("y",), now=T0)  # another registry
    assert ledger.tag_history("reg", "team/api") == [
        ("1.0", A, T0),  # the first sighting stays: the pair is recorded once
        ("latest", A, T0),
        ("latest", B, T0 + timedelta(hours=1)),
    ]
    assert ledger.tag_history("reg", "team/none") == []
    # it agrees with the per-tag methods the gate uses
    assert [d for t, d, _ in ledger.tag_history("reg", "team/api") if t == "latest"] == (
        ledger.tag_digests("reg", "team/api", "latest")
    )


def test_dynamo_tag_history_reads_a_partition_larger_than_one_page(moto: MotoServer) -> None:
    """DynamoDB answers a query 1 MB at a time: a long history still comes back whole, in
    order. Items are written directly, padded to 2 KB each (~1.2 MB in all)."""
    client: Any = moto.client("dynamodb")
    client.create_table(**table_definition(TABLE))
    digests = [f"sha256:{n:064x}" for n in range(600)]
    pairs = [(f"t{n % 7}", digest) for n, digest in enumerate(digests)]
    write_tag_history(client, TABLE, "reg", "big", pairs, start=T0)
    calls: list[str] = []
    client.meta.events.register("before-call.dynamodb.Query", lambda **_: calls.append("q"))
    ledger = DynamoLedger(TABLE, client=client)
    history = ledger.tag_history("reg", "big")
    assert len(calls) >= 2  # more than one page
    assert [d for _, d, _ in history] == digests  # oldest first across pages
    assert [t for t, _, _ in history][:8] == ["t0", "t1", "t2", "t3", "t4", "t5", "t6", "t0"]
    assert history[-1][2] == T0 + timedelta(seconds=599)
    ledger.close()
