"""What only the Firestore ledger has to prove (the ledger contract holds it to everything
else): expired documents read as absent until the TTL policy gets to them, writes that lose
a race to another writer are read and decided again, a commit the client library re-sent is
recognised as its own, ids built from any key are accepted, and the FakeFirestore refuses
what it does not serve — so a new kind of query cannot pass here and fail on Google.

The real GAPIC `FirestoreClient` (REST transport) is driven at `support.fake_firestore`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.api_core import exceptions as gexc
from google.cloud.firestore_v1.services.firestore import FirestoreClient
from google.cloud.firestore_v1.types import StructuredQuery
from support import fake_firestore as firestore_support
from support.fake_firestore import FakeFirestore

from regwarden import gcp_clients
from regwarden.errors import RegistryError
from regwarden.store import (
    AccessWindow,
    FirestoreLedger,
    OutboxItem,
    Outcome,
    PullTally,
    QuarantineRecord,
)
from regwarden.store._firestore import ROUNDS, TALLIES_PER_COMMIT

fake_firestore = firestore_support.fake_firestore

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
A = "sha256:" + "a" * 64
TTL = timedelta(days=7)
DB = "projects/demo-proj/databases/(default)"
COMMIT = r"/v1/projects/demo-proj/databases/[^/]+/documents:commit"


@pytest.fixture
def ledger(fake_firestore: FakeFirestore) -> Iterator[FirestoreLedger]:
    led = FirestoreLedger("demo-proj", prefix="t")
    yield led
    led.close()


@pytest.fixture
def client(fake_firestore: FakeFirestore) -> Any:
    env = {"REGWARDEN_GCP_ENDPOINT_FIRESTORE": fake_firestore.url}
    return FirestoreClient(**gcp_clients.client_kwargs("firestore", env))


def item(key: str) -> OutboxItem:
    return OutboxItem(key, key.rpartition(":")[2], json.dumps({"dedup_key": key}))


def outcome(delivery: str | None, *alerts: OutboxItem, verdict: str = "FAILED") -> Outcome:
    return Outcome(delivery, "r", "app", A, verdict, alerts=alerts)


def run(target: Any, *args: Any, **kwargs: Any) -> tuple[threading.Thread, list[Any]]:
    """`target(*args, **kwargs)` on a thread; the list gets its result (or exception)."""
    out: list[Any] = []

    def body() -> None:
        try:
            out.append(target(*args, **kwargs))
        except Exception as exc:  # handed to the test, which asserts on it
            out.append(exc)

    thread = threading.Thread(target=body)
    thread.start()
    return thread, out


# -- expiry: stored for the TTL policy, absent on read ---------------------------------------


def test_expired_documents_stay_until_the_ttl_policy_and_read_as_absent(
    ledger: FirestoreLedger, fake_firestore: FakeFirestore
) -> None:
    ttl = timedelta(hours=1)
    later = T0 + timedelta(hours=2)
    assert ledger.seen_delivery("d1", now=T0, ttl=ttl) is False
    assert ledger.commit_outcome(outcome("d1", item("k1:hook")), now=T0, ttl=ttl) == ["k1:hook"]
    ledger.note_failure("on_push", "m1", "boom", now=T0, ttl=ttl)
    # every expiring document carries expireAt as a timestamp, for the TTL policy
    (delivery,) = fake_firestore.documents("t_deliveries").values()
    (marker,) = fake_firestore.documents("t_outcomes").values()
    (failure,) = fake_firestore.documents("t_failures").values()
    for doc in (delivery, marker, failure):
        assert doc["expireAt"] == {"timestampValue": "2026-11-27T13:00:00Z"}
    (row,) = fake_firestore.documents("t_outbox").values()
    assert "expireAt" not in row  # an alert never sent is never dropped
    # past expireAt the documents are still there (TTL deletion is lazy) but count for nothing
    assert ledger.delivery_outcome("d1", now=later) is None
    assert ledger.seen_delivery("d1", now=later, ttl=ttl) is False
    assert ledger.commit_outcome(outcome("d1"), now=later, ttl=ttl) == []
    ledger.note_failure("on_push", "m1", "again", now=later, ttl=ttl)
    note = ledger.failure("on_push", "m1")
    assert note is not None
    assert (note.first_error, note.first_at, note.failures) == ("again", later, 1)  # started over
    # a sent alert expires with its de-duplication window
    ledger.outbox_sent("k1:hook", now=T0)
    (row,) = fake_firestore.documents("t_outbox").values()
    assert row["expireAt"] == row["dedupUntil"] == {"timestampValue": "2026-12-27T12:00:00Z"}
    assert "pending" not in row and "pendingAt" not in row


def test_expire_deliveries_deletes_only_what_expired(
    ledger: FirestoreLedger, fake_firestore: FakeFirestore
) -> None:
    ledger.seen_delivery("old", now=T0, ttl=timedelta(hours=1))
    ledger.seen_delivery("new", now=T0, ttl=timedelta(days=1))
    ledger.commit_outcome(outcome("old"), now=T0, ttl=timedelta(hours=1))
    assert ledger.expire_deliveries(now=T0 + timedelta(hours=2)) == 2
    assert list(fake_firestore.documents("t_deliveries")) == ["new"]
    assert fake_firestore.documents("t_outcomes") == {}


# -- racing writers ---------------------------------------------------------------------------


def test_a_write_that_lost_a_race_is_read_and_decided_again(
    ledger: FirestoreLedger, fake_firestore: FakeFirestore
) -> None:
    ledger.record_pull("r", "app", A, now=T0)
    held = fake_firestore.hold_next_commit()
    slow, result = run(ledger.record_pull, "r", "app", A, now=T0 + timedelta(hours=1))
    assert held.arrived.wait(30)  # it read the image and is about to commit
    ledger.record_pull("r", "app", A, now=T0 + timedelta(hours=2))  # a later pull goes first
    held.release()
    slow.join(30)
    assert result == [None]
    assert fake_firestore.conflicts == ["FAILED_PRECONDITION"]  # its update time moved on
    # read again, its pull is older than the one there: pulls only move forward
    assert ledger.image_times("r", "app") == {A: (T0, T0 + timedelta(hours=2))}


def test_a_delivery_committed_meanwhile_makes_the_late_commit_write_nothing(
    ledger: FirestoreLedger, fake_firestore: FakeFirestore
) -> None:
    held = fake_firestore.hold_next_commit()
    slow, result = run(ledger.commit_outcome, outcome("d1", item("k1:hook")), now=T0, ttl=TTL)
    assert held.arrived.wait(30)
    won = ledger.commit_outcome(outcome("d1", item("k2:hook"), verdict="PASSED"), now=T0, ttl=TTL)
    held.release()
    slow.join(30)
    assert won == ["k2:hook"] and result == [None]
    assert fake_firestore.conflicts == ["ALREADY_EXISTS"]
    assert ledger.verdict_log("r", "app", A) == [("d1", "PASSED", T0)]
    assert [i.key for i in ledger.outbox_pending(now=T0)] == ["k2:hook"]


def test_an_alert_added_meanwhile_is_left_out_and_the_rest_commits(
    ledger: FirestoreLedger, fake_firestore: FakeFirestore
) -> None:
    held = fake_firestore.hold_next_commit()
    slow, result = run(
        ledger.commit_outcome, outcome("d1", item("k1:hook"), item("k2:hook")), now=T0, ttl=TTL
    )
    assert held.arrived.wait(30)
    assert ledger.commit_outcome(outcome("d2", item("k1:hook")), now=T0, ttl=TTL) == ["k1:hook"]
    held.release()
    slow.join(30)
    assert result == [["k2:hook"]]
    assert ledger.delivery_outcome("d1", now=T0) is not None
    assert len(ledger.verdict_log("r", "app", A)) == 2


def test_threads_updating_one_document_lose_no_update(ledger: FirestoreLedger) -> None:
    threads = 6
    each = 5
    start = threading.Barrier(threads)

    def fail(n: int) -> None:
        start.wait()
        for i in range(each):
            ledger.note_failure("on_push", "m1", f"{n}.{i}", now=T0, ttl=TTL)

    workers = [threading.Thread(target=fail, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    note = ledger.failure("on_push", "m1")
    assert note is not None and note.failures == threads * each  # every increment counted


def test_a_commit_the_client_resent_after_it_went_through_is_its_own(
    ledger: FirestoreLedger, fake_firestore: FakeFirestore
) -> None:
    fake_firestore.lose_next_commit_answer(503)  # applied, then UNAVAILABLE: re-sent
    added = ledger.commit_outcome(outcome("d1", item("k1:hook")), now=T0, ttl=TTL)
    assert added == ["k1:hook"]  # not None: no other attempt committed d1
    assert len(fake_firestore.calls("POST", COMMIT)) == 2
    assert fake_firestore.conflicts == ["ALREADY_EXISTS"]
    assert ledger.verdict_log("r", "app", A) == [("d1", "FAILED", T0)]


def test_contention_that_never_ends_and_other_refusals_are_infrastructure_errors(
    ledger: FirestoreLedger, fake_firestore: FakeFirestore
) -> None:
    fake_firestore.fail_next("POST", COMMIT, 409, times=ROUNDS)  # ABORTED, every round
    with pytest.raises(RegistryError, match=f"did not go through in {ROUNDS} rounds"):
        ledger.record_verdict("r", "app", A, "PASSED", now=T0)
    assert ledger.last_verdict("r", "app", A) is None
    fake_firestore.fail_next("POST", COMMIT, 403)
    with pytest.raises(RegistryError, match="commit failed: 403"):
        ledger.record_verdict("r", "app", A, "PASSED", now=T0)
    fake_firestore.fail_next("POST", COMMIT, 400)  # INVALID_ARGUMENT is no conflict
    with pytest.raises(RegistryError, match="commit failed: 400"):
        ledger.seen_delivery("d1", now=T0, ttl=TTL)
    fake_firestore.fail_next("GET", r".*/documents/.*", 403)  # one document: GetDocument
    with pytest.raises(RegistryError, match="get failed"):
        ledger.last_verdict("r", "app", A)
    fake_firestore.fail_next("POST", r".*:batchGet", 403)  # several: batchGet
    with pytest.raises(RegistryError, match="batchGet failed"):
        ledger.record_push("r", "app", A, ("v1",), now=T0)


# -- requests ---------------------------------------------------------------------------------


def test_a_push_and_an_outcome_are_one_read_and_one_commit_each(
    ledger: FirestoreLedger, fake_firestore: FakeFirestore
) -> None:
    before = len(fake_firestore.requests)
    ledger.record_push("r", "app", A, ("v1", "latest"), now=T0)
    ledger.commit_outcome(outcome("d1", item("k1:hook"), item("k2:hook")), now=T0, ttl=TTL)
    paths = [r.raw_path.rpartition(":")[2] for r in fake_firestore.requests[before:]]
    assert paths == ["batchGet", "commit", "batchGet", "commit"]


def test_keys_firestore_would_refuse_as_ids_are_stored_and_found(ledger: FirestoreLedger) -> None:
    keys = ["a/b", ".", "..", "__x__", "x%2Fy", "k" * 2000, "with space#hash"]
    for n, key in enumerate(keys):
        ledger.begin_action(
            key, registry="r", repository="team/app", digest=A, kind="k", reason="r",
            state={"n": n}, now=T0 + timedelta(seconds=n),
        )  # fmt: skip
    assert [a.key for a in ledger.actions()] == keys
    assert all((found := ledger.action(k)) is not None and found.key == k for k in keys)
    record = QuarantineRecord("r", "team/app", A, "move", "q/team/app", ("v/1",), "x", T0, None)
    ledger.record_quarantine(record)
    assert ledger.quarantined("r", "team/app", A) == record
    assert ledger.quarantined("r", "team", A) is None


def test_alerts_due_at_one_moment_are_cut_by_key_not_by_document_id(
    ledger: FirestoreLedger,
) -> None:
    # "a.b" sorts before "a/b", but its document id ("a.b…") after "a%2Fb…"
    ledger.commit_outcome(outcome("d1", item("a/b:hook"), item("a.b:hook")), now=T0, ttl=TTL)
    assert [i.key for i in ledger.outbox_pending(now=T0, limit=1)] == ["a.b:hook"]
    assert [i.key for i in ledger.outbox_pending(now=T0, limit=2)] == ["a.b:hook", "a/b:hook"]


# -- the fake refuses what it does not serve --------------------------------------------------


def query(client: Any, **structured: Any) -> list[Any]:
    request = {"parent": f"{DB}/documents", "structured_query": StructuredQuery(**structured)}
    return list(client.run_query(request=request))


def field_filter(path: str, op: str, value: dict[str, Any]) -> StructuredQuery.Filter:
    return StructuredQuery.Filter(
        field_filter=StructuredQuery.FieldFilter(
            field=StructuredQuery.FieldReference(field_path=path), op=op, value=value
        )
    )


def test_the_fake_refuses_queries_it_does_not_serve(client: Any) -> None:
    source = [StructuredQuery.CollectionSelector(collection_id="c")]
    by_a = [StructuredQuery.Order(field=StructuredQuery.FieldReference(field_path="a"))]
    assert len(query(client, from_=source)) == 1  # served: one readTime, no documents
    refused: list[dict[str, Any]] = [
        {"where": field_filter("a", "GREATER_THAN", {"integer_value": 1})},
        {"where": field_filter("a", "ARRAY_CONTAINS", {"string_value": "x"})},
        {
            "where": StructuredQuery.Filter(
                composite_filter=StructuredQuery.CompositeFilter(
                    op="OR", filters=[field_filter("a", "EQUAL", {"string_value": "x"})]
                )
            )
        },
        {
            "order_by": [
                StructuredQuery.Order(
                    field=StructuredQuery.FieldReference(field_path="a"), direction="DESCENDING"
                )
            ]
        },
        {"offset": 5},
        {"select": StructuredQuery.Projection(fields=[{"field_path": "a"}])},
        {"start_at": {"values": [{"string_value": "x"}]}, "order_by": by_a},
    ]
    for extra in refused:
        with pytest.raises(gexc.MethodNotImplemented, match="FakeFirestore does not serve"):
            query(client, from_=source, **extra)
    every = [StructuredQuery.CollectionSelector(collection_id="c", all_descendants=True)]
    with pytest.raises(gexc.MethodNotImplemented, match="one collection"):
        query(client, from_=every)
    # what Firestore serves only with a composite index fails as Firestore fails it
    with pytest.raises(gexc.BadRequest, match="requires an index"):
        query(
            client,
            from_=source,
            where=field_filter("b", "EQUAL", {"string_value": "x"}),
            order_by=by_a,
        )
    with pytest.raises(gexc.MethodNotImplemented, match="does not serve"):
        client.begin_transaction(request={"database": DB})


def test_the_fake_refuses_commits_it_does_not_serve(client: Any) -> None:
    name = f"{DB}/documents/c/d"
    union = {"append_missing_elements": {"values": [{"integer_value": 1}]}}
    transform = {
        "update": {"name": name, "fields": {}},
        "update_transforms": [{"field_path": "n", **union}],
    }
    with pytest.raises(gexc.MethodNotImplemented, match="field transform appendMissingElements"):
        client.commit(request={"database": DB, "writes": [transform]})
    twice = [{"update": {"name": name, "fields": {}}}, {"delete": name}]
    with pytest.raises(gexc.MethodNotImplemented, match="two writes of one document"):
        client.commit(request={"database": DB, "writes": twice})
    for bad in ("c/__d__", "c/..", "c"):
        with pytest.raises(gexc.BadRequest):
            client.commit(
                request={"database": DB, "writes": [{"update": {"name": f"{DB}/documents/{bad}"}}]}
            )


def test_the_fakes_commit_is_atomic_and_honours_update_masks(
    client: Any, fake_firestore: FakeFirestore
) -> None:
    a, b = f"{DB}/documents/c/a", f"{DB}/documents/c/b"
    fields = {"x": {"string_value": "1"}, "y": {"string_value": "2"}}
    client.commit(request={"database": DB, "writes": [{"update": {"name": a, "fields": fields}}]})
    # the second write's precondition fails: the first does not land either
    writes = [
        {"update": {"name": b, "fields": fields}},
        {"update": {"name": a, "fields": {}}, "current_document": {"exists": False}},
    ]
    with pytest.raises(gexc.Conflict, match="already exists"):
        client.commit(request={"database": DB, "writes": writes})
    with pytest.raises(gexc.NotFound, match="No document to update"):
        client.commit(
            request={
                "database": DB,
                "writes": [{"update": {"name": b}, "current_document": {"exists": True}}],
            }
        )
    assert sorted(fake_firestore.documents("c")) == ["a"]
    # a mask sets the fields it names that the write has, and deletes those it lacks
    masked = {
        "update": {"name": a, "fields": {"z": {"integer_value": 3}}},
        "update_mask": {"field_paths": ["z", "y"]},
    }
    client.commit(request={"database": DB, "writes": [masked]})
    assert fake_firestore.documents("c")["a"] == {
        "x": {"stringValue": "1"},
        "z": {"integerValue": "3"},
    }


def test_the_fakes_field_transforms_count_and_keep_the_larger(
    client: Any, fake_firestore: FakeFirestore
) -> None:
    name = f"{DB}/documents/c/n"

    def write(*transforms: dict[str, Any], mask: list[str] | None = None) -> Any:
        one: dict[str, Any] = {
            "update": {"name": name, "fields": {"who": {"string_value": "x"}}},
            "update_mask": {"field_paths": mask if mask is not None else ["who"]},
            "update_transforms": list(transforms),
        }
        return client.commit(request={"database": DB, "writes": [one]})

    inc = [{"field_path": "count", "increment": {"integer_value": 3}}]
    biggest = [{"field_path": "top", "maximum": {"integer_value": 7}}]
    answer = write(*inc, *biggest)  # absent fields: set to the values given
    assert [v.integer_value for v in answer.write_results[0].transform_results] == [3, 7]
    write(
        {"field_path": "count", "increment": {"integer_value": 2}},
        {"field_path": "top", "maximum": {"integer_value": 5}},  # smaller: kept
        {"field_path": "low", "minimum": {"double_value": 1.5}},
    )
    assert fake_firestore.documents("c")["n"] == {
        "who": {"stringValue": "x"},
        "count": {"integerValue": "5"},
        "top": {"integerValue": "7"},
        "low": {"doubleValue": 1.5},
    }
    with pytest.raises(gexc.BadRequest, match="both in the update mask and transformed"):
        write(*inc, mask=["who", "count"])
    with pytest.raises(gexc.BadRequest, match="transformed twice"):
        write(*inc, *inc)
    with pytest.raises(gexc.BadRequest, match="takes an integer or a double"):
        write({"field_path": "count", "increment": {"string_value": "1"}})
    assert fake_firestore.documents("c")["n"]["count"] == {"integerValue": "5"}


# -- access monitoring ------------------------------------------------------------------------

PULLS = "t_pulls"


def tally(principal: str, at: datetime, count: int = 1, digest: str = A) -> PullTally:
    return PullTally("r", "app", digest, principal, at, count)


def test_pulls_are_one_read_and_one_commit_and_tallies_are_never_read(
    ledger: FirestoreLedger, fake_firestore: FakeFirestore
) -> None:
    before = len(fake_firestore.requests)
    ledger.record_pulls([tally("ci", T0, 2), tally("", T0 + timedelta(seconds=1))])
    kinds = [(r.method, r.raw_path.rpartition(":")[2]) for r in fake_firestore.requests[before:]]
    assert [k for k in kinds if k[0] != "GET"] == [("POST", "commit")]
    assert len([k for k in kinds if k[0] == "GET"]) == 1  # the image, by GetDocument
    # a tally is its identity and two transformed numbers: nothing to read back first
    doc = fake_firestore.documents(PULLS)[f"r#app#{A}#ci"]
    assert doc["count"] == {"integerValue": "2"}
    assert doc["lastPulledMicros"] == {"integerValue": str(int(T0.timestamp() * 1_000_000))}
    # two images: one batchGet for both
    before = len(fake_firestore.requests)
    ledger.record_pulls([tally("ci", T0, digest=A), tally("ci", T0, digest="sha256:" + "b" * 64)])
    paths = [r.raw_path.rpartition(":")[2] for r in fake_firestore.requests[before:]]
    assert paths == ["batchGet", "commit"]


def test_pulls_committed_while_another_writer_moves_the_image_all_count(
    ledger: FirestoreLedger, fake_firestore: FakeFirestore
) -> None:
    ledger.record_pulls([tally("ci", T0)])
    held = fake_firestore.hold_next_commit()
    slow, result = run(ledger.record_pulls, [tally("ci", T0 + timedelta(minutes=1), 4)])
    assert held.arrived.wait(30)  # it read the image and is about to commit
    ledger.record_pulls([tally("ci", T0 + timedelta(minutes=2), 2)])  # goes first
    held.release()
    slow.join(30)
    assert result == [None]
    assert fake_firestore.conflicts == ["FAILED_PRECONDITION"]  # the image moved on
    # the refused commit's increments did not land; the round after made them once
    assert ledger.pull_tallies("r", "app") == [tally("ci", T0 + timedelta(minutes=2), 7)]
    assert ledger.image_times("r", "app") == {A: (T0, T0 + timedelta(minutes=2))}


def test_pulls_the_client_resent_after_they_went_through_count_once(
    ledger: FirestoreLedger, fake_firestore: FakeFirestore
) -> None:
    ledger.record_pulls([tally("ci", T0)])
    fake_firestore.lose_next_commit_answer(503)  # applied, then UNAVAILABLE: re-sent
    ledger.record_pulls([tally("ci", T0 + timedelta(minutes=1), 3), tally("bob", T0)])
    assert len(fake_firestore.calls("POST", COMMIT)) == 3  # first, then the lost one twice
    assert fake_firestore.conflicts == ["FAILED_PRECONDITION"]  # the re-send: refused
    assert ledger.pull_tallies("r", "app") == [
        tally("bob", T0),
        tally("ci", T0 + timedelta(minutes=1), 4),  # 1 + 3, not 1 + 3 + 3
    ]


def test_many_tallies_are_split_over_commits_of_at_most_500_writes(
    ledger: FirestoreLedger, fake_firestore: FakeFirestore
) -> None:
    many = [tally(f"p{n:04d}", T0 + timedelta(seconds=n)) for n in range(TALLIES_PER_COMMIT + 3)]
    ledger.record_pulls(many)
    commits = fake_firestore.calls("POST", COMMIT)
    assert len(commits) == 2
    assert [len(c.body["writes"]) for c in commits] == [TALLIES_PER_COMMIT + 1, 3 + 1]
    found = ledger.pull_tallies("r", "app")
    assert len(found) == len(many) and all(t.count == 1 for t in found)
    assert ledger.image_times("r", "app")[A] == (T0, many[-1].last_pulled)


def test_pull_tracking_is_one_create_when_it_begins(
    ledger: FirestoreLedger, fake_firestore: FakeFirestore
) -> None:
    before = len(fake_firestore.requests)
    assert ledger.start_pull_tracking("r", "app", now=T0) == T0
    assert [r.raw_path.rpartition(":")[2] for r in fake_firestore.requests[before:]] == ["commit"]


def window(key: str, opened: datetime) -> AccessWindow:
    return AccessWindow(key, "r", "app", A, opened, opened + timedelta(minutes=10), alert="{}")


def test_a_count_that_lost_a_race_to_a_reopened_window_is_refused(
    ledger: FirestoreLedger, fake_firestore: FakeFirestore
) -> None:
    assert ledger.open_access_window(window("k", T0))
    held = fake_firestore.hold_next_commit()
    slow, result = run(ledger.count_access, "k", opened_at=T0, add=5, last_seen=T0)
    assert held.arrived.wait(30)  # it read the window and is about to commit
    reopened = window("k", T0 + timedelta(minutes=11))
    assert ledger.open_access_window(reopened, replacing=T0)
    held.release()
    slow.join(30)
    assert result == [False]  # read again: another window, nothing counted into it
    assert ledger.access_window("k") == reopened


def test_counts_into_one_window_side_by_side_all_land(ledger: FirestoreLedger) -> None:
    assert ledger.open_access_window(window("k", T0))
    start = threading.Barrier(4)

    def count(n: int) -> None:
        start.wait()
        for i in range(5):
            at = T0 + timedelta(seconds=10 * i + n)
            assert ledger.count_access("k", opened_at=T0, add=n + 1, last_seen=at)

    workers = [threading.Thread(target=count, args=(n,)) for n in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    found = ledger.access_window("k")
    assert found is not None
    assert (found.count, found.last_seen) == (5 * (1 + 2 + 3 + 4), T0 + timedelta(seconds=43))


def test_windows_due_at_one_moment_are_cut_by_key_not_by_document_id(
    ledger: FirestoreLedger,
) -> None:
    # "__k__" is an id Firestore reserves: stored as "%5F%5Fk%5F%5F", before "Z-1" by id
    for key in ("__k__", "Z-1", "a-2"):
        assert ledger.open_access_window(window(key, T0))
    due = T0 + timedelta(minutes=10)
    assert [w.key for w in ledger.access_windows_due(now=due, limit=1)] == ["Z-1"]
    assert [w.key for w in ledger.access_windows_due(now=due, limit=2)] == ["Z-1", "__k__"]
    assert ledger.access_windows_due(now=due, limit=0) == []
    assert ledger.access_window("__k__") == window("__k__", T0)


def test_a_principal_of_any_length_and_characters_is_a_tally_of_its_own(
    ledger: FirestoreLedger,
) -> None:
    long = "arn:aws:iam::1:role/" + "x/" * 1000  # its id alone is past Firestore's 1,500 bytes
    odd = "user#1?/\\'|%__"
    ledger.record_pulls([tally(long, T0), tally(long + "y", T0, 2), tally(odd, T0, 3)])
    ledger.record_pulls([tally(long, T0)])
    assert ledger.pull_tallies("r", "app") == sorted(
        [tally(long, T0, 2), tally(long + "y", T0, 2), tally(odd, T0, 3)],
        key=lambda t: t.principal,
    )
