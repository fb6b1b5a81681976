"""Azurite itself, then the Table Storage ledger's own behaviour (the Ledger contract is in
test_ledger_contract.py): real Azurite on loopback, the Azure SDKs over the wire."""

from __future__ import annotations

import base64
import http.client
import json
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from typing import Any, ClassVar
from urllib.parse import urlsplit

import pytest
from support.azurite import Azurite
from support.loopback import LoopbackServer

from regwarden.errors import RegistryError, UsageError
from regwarden.store import AccessWindow, OutboxItem, Outcome, PullTally, open_ledger
from regwarden.store._azure_table import TALLIES_PER_BATCH, AzureTableLedger

pytestmark = pytest.mark.integration


def test_azurite_serves_a_table_entity_and_a_queue_message_with_its_own_key(
    azurite: Azurite,
) -> None:
    from azure.core.credentials import AzureNamedKeyCredential
    from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
    from azure.data.tables import TableServiceClient
    from azure.storage.queue import QueueClient

    credential = AzureNamedKeyCredential(azurite.account, azurite.key)
    tables = TableServiceClient(endpoint=azurite.table_endpoint, credential=credential)
    table = tables.create_table_if_not_exists(f"smoke{uuid.uuid4().hex[:10]}")
    table.create_entity({"PartitionKey": "p", "RowKey": "r", "n": 7})
    assert table.get_entity("p", "r")["n"] == 7

    queue = QueueClient.from_connection_string(
        azurite.connection_string, f"smoke-{uuid.uuid4().hex[:10]}"
    )
    queue.create_queue()
    queue.send_message("hello")
    (message,) = queue.receive_messages(visibility_timeout=30)
    assert message.content == "hello"

    # The account's key is the random one: the emulator's well-known account is not there.
    wrong = AzureNamedKeyCredential(azurite.account, "A" * 88)
    bad = TableServiceClient(endpoint=azurite.table_endpoint, credential=wrong)
    with pytest.raises((ClientAuthenticationError, HttpResponseError)):
        bad.get_table_client(table.table_name).get_entity("p", "r")


# -- the Table Storage ledger -----------------------------------------------------------------

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
A = "sha256:" + "a" * 64
TTL = timedelta(days=7)


class Requests:
    """Counts the HTTP requests a ledger sends (azure-core's raw request hook): each one is
    a round trip a function pays for."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def __call__(self, request: Any) -> None:
        http = request.http_request
        self.sent.append(f"{http.method} {http.url.split('?')[0].rsplit('/', 1)[-1]}")

    def take(self) -> list[str]:
        sent, self.sent = self.sent, []
        return sent


@pytest.fixture
def counted(azurite: Azurite) -> Iterator[tuple[AzureTableLedger, Requests]]:
    from azure.core.credentials import AzureNamedKeyCredential
    from azure.data.tables import TableServiceClient

    requests = Requests()
    service = TableServiceClient(
        endpoint=azurite.table_endpoint,
        credential=AzureNamedKeyCredential(azurite.account, azurite.key),
        raw_request_hook=requests,
    )
    ledger = AzureTableLedger(azurite.account, prefix=f"p{uuid.uuid4().hex[:10]}", service=service)
    yield ledger, requests
    ledger.close()


@pytest.fixture
def ledger(azurite: Azurite) -> Iterator[AzureTableLedger]:
    opened = open_ledger(f"azuretable://{azurite.account}?prefix=p{uuid.uuid4().hex[:10]}")
    assert isinstance(opened, AzureTableLedger)
    opened._env = azurite.env()  # the process environment stays untouched
    yield opened
    opened.close()


def outcome(delivery: str | None, *keys: str, verdict: str | None = "FAILED") -> Outcome:
    alerts = tuple(OutboxItem(f"{k}:hook", "hook", json.dumps({"dedup_key": k})) for k in keys)
    return Outcome(delivery, "r", "app", A, verdict, alerts=alerts)


def test_a_batch_that_fails_part_way_writes_nothing(
    ledger: AzureTableLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    from regwarden.store import _azure_table_rows

    # an alert past Table Storage's 64 KiB string property, left unsplit: the server
    # refuses the batch's last operation, after the marker, the log entry and a first row
    big = OutboxItem("k2:hook", "hook", json.dumps({"findings": "x" * 40_000}))
    full = Outcome("d1", "r", "app", A, "FAILED", alerts=(*outcome("d1", "k1").alerts, big))
    with monkeypatch.context() as patched:
        patched.setattr(_azure_table_rows, "CHUNK", 40_100)
        with pytest.raises(RegistryError, match=r"PropertyValueTooLarge|64KB"):
            ledger.commit_outcome(full, now=T0, ttl=TTL)
    assert ledger.delivery_outcome("d1", now=T0) is None
    assert ledger.verdict_log("r", "app", A) == []
    assert ledger.last_verdict("r", "app", A) is None  # written only after the batch
    assert ledger.outbox_pending(now=T0) == [] and ledger.outbox_unsent() == 0
    # split over properties, the same outcome commits whole, and the alert reads back
    assert ledger.commit_outcome(full, now=T0, ttl=TTL) == ["k1:hook", "k2:hook"]
    assert [i.alert for i in ledger.outbox_pending(now=T0)][1] == big.alert
    assert ledger.verdict_log("r", "app", A) == [("d1", "FAILED", T0)]


def test_concurrent_commits_of_one_delivery_from_separate_clients_write_once(
    azurite: Azurite,
) -> None:
    prefix = f"p{uuid.uuid4().hex[:10]}"
    ledgers = [AzureTableLedger(azurite.account, prefix=prefix, env=azurite.env()) for _ in "1234"]
    start = threading.Barrier(len(ledgers))
    results: dict[int, list[str] | None] = {}

    def commit(n: int) -> None:
        start.wait()
        results[n] = ledgers[n].commit_outcome(outcome("d1", f"k{n}"), now=T0, ttl=TTL)

    threads = [threading.Thread(target=commit, args=(n,)) for n in range(len(ledgers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(results) == len(ledgers)
    (won,) = [r for r in results.values() if r is not None]
    assert len(won) == 1
    check = ledgers[0]
    assert check.verdict_log("r", "app", A) == [("d1", "FAILED", T0)]
    assert [i.key for i in check.outbox_pending(now=T0)] == won
    for one in ledgers:
        one.close()


def test_follow_ups_cut_short_by_a_crash_are_finished_by_the_next_reader(
    ledger: AzureTableLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the function was killed")

    with monkeypatch.context() as patched:
        patched.setattr(AzureTableLedger, "_set_verdict", crash)
        patched.setattr(AzureTableLedger, "_claim", crash)
        with pytest.raises(RuntimeError):
            ledger.commit_outcome(outcome("d1", "k1"), now=T0, ttl=TTL)
    assert ledger.last_verdict("r", "app", A) is None  # the batch went in, the rest did not
    # the retry finds the delivery handled, and writes what the crash left out
    done = ledger.delivery_outcome("d1", now=T0 + timedelta(seconds=5))
    assert done is not None and done.handled_at == T0
    assert ledger.last_verdict("r", "app", A) == "FAILED"
    # the alert's key is taken: another delivery's same alert is not added again
    assert ledger.commit_outcome(outcome("d2", "k1"), now=T0 + timedelta(1), ttl=TTL) == []
    # and a later verdict is never undone by finishing an earlier one
    ledger.record_verdict("r", "app", A, "PASSED", now=T0 + timedelta(days=2))
    assert ledger.delivery_outcome("d1", now=T0 + timedelta(seconds=6)) is not None
    assert ledger.last_verdict("r", "app", A) == "PASSED"


def test_tables_are_created_on_first_write_and_expired_rows_deleted(
    ledger: AzureTableLedger,
) -> None:
    def tables() -> set[str]:
        return {t.name for t in ledger.service.list_tables() if t.name.startswith(ledger.prefix)}

    assert ledger.last_verdict("r", "app", A) is None  # a read makes nothing
    assert ledger.actions() == [] and tables() == set()
    assert ledger.seen_delivery("d1", now=T0, ttl=timedelta(hours=1)) is False
    ledger.commit_outcome(outcome("d2"), now=T0, ttl=timedelta(hours=1))
    assert tables() == {
        f"{ledger.prefix}deliveries",
        f"{ledger.prefix}outcomes",
        f"{ledger.prefix}verdicts",
    }
    assert ledger.expire_deliveries(now=T0 + timedelta(minutes=59)) == 0
    assert ledger.expire_deliveries(now=T0 + timedelta(hours=1)) == 2  # the id and the marker
    assert ledger.seen_delivery("d1", now=T0 + timedelta(hours=1), ttl=TTL) is False
    assert ledger.verdict_log("r", "app", A) == [("d2", "FAILED", T0)]  # the log stays


def test_keys_with_any_characters_and_long_state(ledger: AzureTableLedger) -> None:
    odd = "q:reg.example:5000/a/b#c?d\\e'f|g%h\x01"
    state = {"manifest": "m" * 100_000, "children": [A] * 3}
    begun = ledger.begin_action(
        odd,
        registry="reg.example:5000",
        repository="a/b",
        digest=A,
        kind="quarantine",
        reason="why",
        state=state,
        now=T0,
    )
    assert begun == ledger.action(odd) and begun.state == state
    ledger.finish_action(odd, status="done", state={"step": "released"})
    found = ledger.action(odd)
    assert found is not None and found.state == {"step": "released"}
    ledger.record_push("reg.example:5000", "a/b", A, ("v1", "v1.0"), now=T0)
    assert ledger.tag_digests("reg.example:5000", "a/b", "v1") == [A]  # not v1.0's rows
    assert ledger.tags_for("reg.example:5000", "a/b", A) == ["v1", "v1.0"]
    ledger.note_failure("on_push", odd, "boom", now=T0, ttl=TTL)
    ledger.note_failure("on_push", odd, "again", now=T0 + timedelta(1), ttl=TTL)
    note = ledger.failure("on_push", odd)
    assert note is not None and (note.first_error, note.last_error, note.failures) == (
        "boom",
        "again",
        2,
    )


def test_requests_each_ledger_call_costs(counted: tuple[AzureTableLedger, Requests]) -> None:
    ledger, requests = counted
    ledger.seen_delivery("warm", now=T0, ttl=TTL)  # the tables this test uses, made once
    ledger.commit_outcome(outcome("warm", "w"), now=T0, ttl=TTL)
    ledger.record_push("r", "app", "sha256:" + "0" * 64, ("t",), now=T0)
    requests.take()
    # a new push, as the gate handles it: is the delivery handled? record the push; commit
    # its outcome with one alert (batch, then the alert key's entry and the verdict); send
    assert ledger.delivery_outcome("d1", now=T0) is None
    assert len(requests.take()) == 1  # one partition query
    assert ledger.seen_delivery("d1", now=T0, ttl=TTL) is False
    assert len(requests.take()) == 1  # one create
    # the digest's tags and the pushed tag's history: one query of the repository's tags
    assert ledger.tags_for_push("r", "app", A, "t") == ([], ["sha256:" + "0" * 64])
    assert len(requests.take()) == 1
    ledger.record_push("r", "app", A, ("v1",), now=T0)
    assert len(requests.take()) == 1  # image and tag rows: one batch
    ledger.commit_outcome(outcome("d1", "k1"), now=T0, ttl=TTL)
    # the key's entry read, the batch, the key's entry written, the verdict
    assert len(requests.take()) == 4
    ledger.outbox_sent("k1:hook", now=T0)
    # one conditional replace: the row as the batch wrote it, its partition and ETag known
    assert [r.split()[0] for r in requests.take()] == ["PUT"]
    assert [i.key for i in ledger.outbox_pending(now=T0)] == ["w:hook"]  # k1 is sent
    requests.take()
    ledger.commit_outcome(outcome("d2", verdict="PASSED"), now=T0, ttl=TTL)
    assert len(requests.take()) == 2  # no alert: the batch and the verdict
    # a duplicate delivery: found at once
    assert ledger.commit_outcome(outcome("d1", "k1"), now=T0, ttl=TTL) is None
    assert ledger.delivery_outcome("d1", now=T0) is not None


def test_an_action_saved_step_by_step_costs_one_request_a_save(
    counted: tuple[AzureTableLedger, Requests], azurite: Azurite
) -> None:
    """A lock action saves its state after each step: the record this ledger wrote or read
    last is replaced on condition of its ETag with no read first; a record another process
    changed meanwhile is refused (412) and read, so its change is what the save builds on."""
    ledger, requests = counted
    ledger.begin_action(
        "warm", registry="r", repository="app", digest=A, kind="k", reason="w", state={}, now=T0
    )
    requests.take()

    def begin(key: str) -> None:
        ledger.begin_action(
            key, registry="r", repository="app", digest=A, kind="quarantine", reason="held",
            state={"step": "start"}, now=T0,
        )  # fmt: skip

    begin("q1")
    assert requests.take() == ["POST " + ledger.tables["actions"]]  # one create, no read back
    ledger.finish_action("q1", status="intent", state={"step": "one"})
    assert [r.split()[0] for r in requests.take()] == ["PUT"]
    ledger.finish_action("q1", status="intent", state={"step": "locked"})
    assert [r.split()[0] for r in requests.take()] == ["PUT"]
    ledger.finish_action("q1", status="done")  # the state as last saved stays
    assert [r.split()[0] for r in requests.take()] == ["PUT"]
    record = ledger.action("q1")
    assert record is not None and (record.status, record.state) == ("done", {"step": "locked"})
    requests.take()
    ledger.finish_action("q1", status="intent", state={"step": "read"})  # as read: no read again
    assert [r.split()[0] for r in requests.take()] == ["PUT"]

    # another process moves the record on: this one's save is refused, reads and builds on it
    other = AzureTableLedger(ledger.account, prefix=ledger.prefix, env=azurite.env())
    try:
        other.finish_action("q1", status="done", state={"step": "theirs"})
        ledger.finish_action("q1", status="intent")
        assert [r.split()[0] for r in requests.take()] == ["PUT", "GET", "PUT"]
        record = other.action("q1")
        assert record is not None and (record.status, record.state) == (
            "intent",
            {"step": "theirs"},
        )
        # and an unknown key still changes nothing (one read)
        ledger.finish_action("nobody", status="done")
        assert [r.split()[0] for r in requests.take()] == ["GET"]
        assert other.action("nobody") is None
    finally:
        other.close()


def test_the_url_names_the_account_its_endpoint_and_credential(
    azurite: Azurite, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in azurite.env():
        monkeypatch.delenv(name, raising=False)
    plain = open_ledger("azuretable://acct123")
    assert isinstance(plain, AzureTableLedger) and plain.tables["outcomes"] == "regwardenoutcomes"
    assert plain.service.url.startswith("https://acct123.table.core.windows.net")  # offline
    plain.close()
    # a wrong key: the ledger's infrastructure error, naming the account
    monkeypatch.setenv("REGWARDEN_AZURE_ENDPOINT_TABLE", azurite.table_endpoint)
    monkeypatch.setenv("REGWARDEN_AZURE_STORAGE_KEY", base64.b64encode(b"k" * 64).decode())
    wrong = open_ledger(f"azuretable://{azurite.account}")
    with pytest.raises(RegistryError, match=f"Table Storage account {azurite.account}"):
        wrong.seen_delivery("d1", now=T0, ttl=TTL)
    wrong.close()
    # no key: the managed identity's bearer token, which never goes over plain http
    monkeypatch.delenv("REGWARDEN_AZURE_STORAGE_KEY")
    anonymous = open_ledger(f"azuretable://{azurite.account}")
    with pytest.raises(UsageError, match="plain http") as refused:
        anonymous.seen_delivery("d1", now=T0, ttl=TTL)
    assert refused.value.hint is not None and "REGWARDEN_AZURE_STORAGE_KEY" in refused.value.hint
    anonymous.close()


def test_a_batch_the_client_sent_twice_is_recognised_as_its_own(
    ledger: AzureTableLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the batch went through, its answer was lost and the SDK's retry met the marker (409):
    # the commit is this attempt's own, not a rival's, and its follow-ups are written
    from regwarden.store import _azure_table_client

    real = AzureTableLedger._batch
    lost: list[str] = []

    def answer_lost(self: AzureTableLedger, kind: str, what: str, ops: Any) -> list[str | None]:
        etags = real(self, kind, what, ops)
        if kind == "outcomes" and not lost:
            lost.append(what)
            raise _azure_table_client.Conflict
        return etags

    monkeypatch.setattr(AzureTableLedger, "_batch", answer_lost)
    assert ledger.commit_outcome(outcome("d1", "k1"), now=T0, ttl=TTL) == ["k1:hook"]
    assert lost == ["commit_outcome"]
    assert ledger.last_verdict("r", "app", A) == "FAILED"
    assert ledger.verdict_log("r", "app", A) == [("d1", "FAILED", T0)]
    # the key's entry is there: another delivery's same alert is not added again
    assert ledger.commit_outcome(outcome("d2", "k1"), now=T0 + timedelta(1), ttl=TTL) == []


# -- access monitoring: pull tallies, tracking, alert windows ---------------------------------

B = "sha256:" + "b" * 64


def tally(principal: str, at: datetime, count: int = 1, digest: str = A) -> PullTally:
    return PullTally("r", "app", digest, principal, at, count)


def window(key: str, opened: datetime) -> AccessWindow:
    return AccessWindow(key, "r", "app", A, opened, opened + timedelta(minutes=10), alert="{}")


def test_pulls_cost_one_read_and_one_batch_per_repository(
    counted: tuple[AzureTableLedger, Requests],
) -> None:
    ledger, requests = counted
    ledger.record_push("r", "app", A, ("v1",), now=T0)  # the table, made once
    requests.take()
    ledger.record_pulls([tally("ci", T0, 2), tally("", T0), tally("ci", T0, 1, digest=B)])
    sent = requests.take()
    assert [r.split()[0] for r in sent] == ["GET", "POST"]  # one query, one batch
    assert sent[1].endswith("$batch")
    ledger.record_pulls([PullTally("r", "other", A, "ci", T0, 1)])  # another partition
    assert len(requests.take()) == 2
    # only the tally rows a flush adds to are written: an image row whose last pull is as
    # late is left out of the batch, and the tallies, images and tags stay apart
    ledger.record_pulls([tally("ci", T0 - timedelta(hours=1))])
    assert len(requests.take()) == 2
    assert ledger.image_times("r", "app") == {A: (T0, T0), B: (T0, T0)}
    assert ledger.tag_history("r", "app") == [("v1", A, T0)]
    assert ledger.pull_tallies("r", "app") == [
        tally("", T0),
        tally("ci", T0, 3),
        tally("ci", T0, 1, digest=B),
    ]
    requests.take()
    assert ledger.start_pull_tracking("r", "app", now=T0) == T0
    assert [r.split()[0] for r in requests.take()] == ["POST"]  # one create
    assert ledger.image_times("r", "app") == {A: (T0, T0), B: (T0, T0)}  # not an image
    assert ledger.pull_tallies("r", "app")[1].count == 3  # nor a tally


def test_many_tallies_are_read_in_short_queries_and_written_in_batches_of_100(
    counted: tuple[AzureTableLedger, Requests],
) -> None:
    ledger, requests = counted
    many = [tally(f"p{n:03d}", T0 + timedelta(seconds=n)) for n in range(TALLIES_PER_BATCH + 10)]
    ledger.record_pulls(many)
    requests.take()
    ledger.record_pulls(many)  # every row there now: each read, each replaced
    sent = requests.take()
    reads = [r for r in sent if r.startswith("GET")]
    batches = [r for r in sent if r.endswith("$batch")]
    # 51 rows, then 11: ceil(51 / 14) + ceil(11 / 14) queries, one batch each
    assert (len(reads), len(batches)) == (5, 2)
    found = ledger.pull_tallies("r", "app")
    assert len(found) == len(many) and {t.count for t in found} == {2}
    assert ledger.image_times("r", "app")[A] == (T0, many[-1].last_pulled)


def test_a_pull_batch_that_lost_a_race_is_read_and_counted_again(
    ledger: AzureTableLedger, azurite: Azurite, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger.record_pulls([tally("ci", T0)])
    other = AzureTableLedger(ledger.account, prefix=ledger.prefix, env=azurite.env())
    real = AzureTableLedger._rows
    raced: list[int] = []

    def read_then_rival(self: AzureTableLedger, kind: str, pk: str, rks: Any) -> Any:
        found = real(self, kind, pk, rks)
        if self is ledger and not raced:  # after this read, another process goes first
            raced.append(1)
            other.record_pulls([tally("ci", T0 + timedelta(minutes=2), 5)])
        return found

    monkeypatch.setattr(AzureTableLedger, "_rows", read_then_rival)
    try:
        ledger.record_pulls([tally("ci", T0 + timedelta(minutes=1), 2)])
    finally:
        other.close()
    assert raced == [1]
    assert ledger.pull_tallies("r", "app") == [tally("ci", T0 + timedelta(minutes=2), 8)]
    assert ledger.image_times("r", "app")[A] == (T0, T0 + timedelta(minutes=2))


def test_a_pull_batch_the_client_sent_twice_counts_once(
    ledger: AzureTableLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    from regwarden.store import _azure_table_client

    ledger.record_pulls([tally("ci", T0)])
    real = AzureTableLedger._batch
    lost: list[str] = []

    def answer_lost(self: AzureTableLedger, kind: str, what: str, ops: Any) -> list[str | None]:
        etags = real(self, kind, what, ops)
        if what == "record_pulls" and not lost:
            lost.append(what)  # applied; its answer lost, the SDK's re-send refused (412)
            raise _azure_table_client.Conflict
        return etags

    monkeypatch.setattr(AzureTableLedger, "_batch", answer_lost)
    ledger.record_pulls([tally("ci", T0 + timedelta(minutes=1), 3), tally("bob", T0)])
    assert lost == ["record_pulls"]
    assert ledger.pull_tallies("r", "app") == [
        tally("bob", T0),
        tally("ci", T0 + timedelta(minutes=1), 4),  # 1 + 3, not 1 + 3 + 3
    ]


def test_a_principal_of_any_length_and_characters_is_a_tally_of_its_own(
    ledger: AzureTableLedger,
) -> None:
    long = "arn:aws:iam::1:role/" + "x/" * 1000  # its encoding alone is past 1 KiB
    odd = "user#1?/\\'|%"
    ledger.record_pulls([tally(long, T0), tally(long + "y", T0, 2), tally(odd, T0, 3)])
    ledger.record_pulls([tally(long, T0)])
    assert ledger.pull_tallies("r", "app") == sorted(
        [tally(long, T0, 2), tally(long + "y", T0, 2), tally(odd, T0, 3)],
        key=lambda t: t.principal,
    )


def test_counts_past_two_to_the_31_are_kept(ledger: AzureTableLedger) -> None:
    big = 2**31 + 5
    ledger.record_pulls([tally("ci", T0, big)])
    ledger.record_pulls([tally("ci", T0, 2)])
    assert ledger.pull_tallies("r", "app") == [tally("ci", T0, big + 2)]
    assert ledger.open_access_window(window("k", T0))
    assert ledger.count_access("k", opened_at=T0, add=big, last_seen=T0)
    found = ledger.access_window("k")
    assert found is not None and found.count == big


def test_a_window_opened_here_is_counted_into_with_one_request_each(
    counted: tuple[AzureTableLedger, Requests], azurite: Azurite
) -> None:
    ledger, requests = counted
    assert ledger.open_access_window(window("warm", T0))  # the table, made once
    requests.take()
    assert ledger.open_access_window(window("k", T0))
    assert [r.split()[0] for r in requests.take()] == ["POST"]  # one create
    assert ledger.open_access_window(window("k", T0 + timedelta(seconds=1))) is False
    assert [r.split()[0] for r in requests.take()] == ["POST", "GET"]  # 409, then a look
    for n in range(3):
        assert ledger.count_access("k", opened_at=T0, add=2, last_seen=T0 + timedelta(n))
    assert [r.split()[0] for r in requests.take()] == ["PUT"] * 3  # its ETag known: no read
    assert ledger.access_windows_due(now=T0 + timedelta(minutes=10))[0].count == 6  # "k"
    assert [r.split()[0] for r in requests.take()] == ["GET"]  # one query of partition "w"
    # another process reopens it: this one's count is refused (412), read, and not made
    other = AzureTableLedger(ledger.account, prefix=ledger.prefix, env=azurite.env())
    try:
        assert other.open_access_window(window("k", T0 + timedelta(hours=1)), replacing=T0)
    finally:
        other.close()
    assert ledger.count_access("k", opened_at=T0, add=1, last_seen=T0) is False
    assert [r.split()[0] for r in requests.take()] == ["PUT", "GET"]
    found = ledger.access_window("k")
    assert found is not None and (found.opened_at, found.count) == (T0 + timedelta(hours=1), 0)
    assert ledger.drop_access_window("k", opened_at=T0 + timedelta(hours=1))
    assert ledger.access_window("k") is None


# -- the environment's proxy settings ---------------------------------------------------------


class _ForwardProxy(BaseHTTPRequestHandler):
    """A forward proxy on loopback: each request (an absolute URL) is sent on and recorded."""

    protocol_version = "HTTP/1.1"
    seen: ClassVar[list[str]]

    def _forward(self) -> None:
        target = urlsplit(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.seen.append(f"{self.command} {target.path}")
        upstream = http.client.HTTPConnection(target.netloc, timeout=30)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() != "proxy-connection"}
            origin = target.path + (f"?{target.query}" if target.query else "")
            upstream.putrequest(self.command, origin, skip_host=True, skip_accept_encoding=True)
            for name, value in headers.items():
                upstream.putheader(name, value)
            upstream.endheaders(body or None)
            answer = upstream.getresponse()
            payload = answer.read()
        finally:
            upstream.close()
        self.send_response(answer.status, answer.reason)
        for name, value in answer.getheaders():
            if name.lower() not in ("connection", "transfer-encoding", "content-length"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _forward

    def log_message(self, format: str, *args: object) -> None:
        pass


_PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "NETRC")


def test_a_proxy_in_the_environment_is_still_honoured_and_otherwise_it_is_not_read(
    azurite: Azurite, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without proxy variables the ledger's client does not read the environment on each
    call (a variable set later changes nothing); with one, it goes through the proxy."""
    for name in _PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    seen: list[str] = []
    handler = type("Recording", (_ForwardProxy,), {"seen": seen})
    with LoopbackServer(handler) as proxy:

        def fresh() -> AzureTableLedger:
            opened = open_ledger(f"azuretable://{azurite.account}?prefix=p{uuid.uuid4().hex[:10]}")
            assert isinstance(opened, AzureTableLedger)
            opened._env = azurite.env()
            return opened

        direct = fresh()
        try:
            direct.commit_outcome(outcome("d1", "k1"), now=T0, ttl=TTL)
            monkeypatch.setenv("HTTP_PROXY", proxy.url)
            assert direct.delivery_outcome("d1", now=T0) is not None
            assert seen == []  # made without a proxy variable: the environment is not read
        finally:
            direct.close()

        proxied = fresh()
        try:
            proxied.commit_outcome(outcome("d2", "k2"), now=T0, ttl=TTL)
            assert proxied.delivery_outcome("d2", now=T0) is not None
        finally:
            proxied.close()
    assert seen and all(f"/{azurite.account}/" in line for line in seen)
