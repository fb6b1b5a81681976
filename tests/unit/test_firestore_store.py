"""The Firestore ledger's URL, document ids and value codec (issue #13 item 4), offline:
`firestore://PROJECT[/DATABASE][?prefix=NAME]` opens a `FirestoreLedger` without contacting
anything; ids are valid Firestore ids for any key and never meet; values survive the trip
through Firestore's `Value` messages."""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone

import pytest

from regwarden.errors import UsageError
from regwarden.store import FirestoreLedger, display_url, open_ledger, open_queue
from regwarden.store._firestore import EXPIRING, KINDS, TTL_FIELD, collection_names
from regwarden.store._firestore_values import decode, doc_id, encode

T0 = datetime(2026, 11, 27, 12, 0, 0, 123456, tzinfo=UTC)


def test_a_firestore_url_names_project_database_and_prefix() -> None:
    cases = {
        "firestore://demo-proj": ("demo-proj", "(default)", "regwarden"),
        "firestore://demo-proj/(default)": ("demo-proj", "(default)", "regwarden"),
        "firestore://demo-proj/ledger-db?prefix=staging": ("demo-proj", "ledger-db", "staging"),
        "Firestore://example.com:my-proj?prefix=rw_2": ("example.com:my-proj", "(default)", "rw_2"),
    }
    for url, (project, database, prefix) in cases.items():
        ledger = open_ledger(url)
        assert isinstance(ledger, FirestoreLedger), url
        assert (ledger.project, ledger.database, ledger.prefix) == (project, database, prefix)
        assert ledger.root == f"projects/{project}/databases/{database}"
        assert ledger.collections["outbox"] == f"{prefix}_outbox"
        ledger.close()  # never contacted: no client was made


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("firestore://", "'' is not a Google Cloud project id"),
        ("firestore://Demo_Proj", "'Demo_Proj' is not a Google Cloud project id"),
        ("firestore://demo", "'demo' is not a Google Cloud project id"),
        ("firestore://demo-proj/", "'' is not a Firestore database id"),
        ("firestore://demo-proj/a/b", "'a/b' is not a Firestore database id"),
        ("firestore://demo-proj/DB", "'DB' is not a Firestore database id"),
        ("firestore://demo-proj?prefix=a/b", "prefix 'a/b' is not a collection-name prefix"),
        ("firestore://demo-proj?prefix=", "prefix '' is not a collection-name prefix"),
        ("firestore://demo-proj?region=us", "unknown parameter region for firestore://"),
    ],
)
def test_malformed_firestore_urls_say_what_is_wrong(url: str, needle: str) -> None:
    with pytest.raises(UsageError) as caught:
        open_ledger(url)
    assert caught.value.exit_code == 2
    assert str(caught.value).startswith(f"cannot use the ledger {display_url(url)}: ")
    assert needle in str(caught.value)


def test_the_prefix_is_shown_in_messages_other_parameters_are_masked() -> None:
    assert display_url("firestore://p-roj1/db-1?prefix=x&token=s3") == (
        "firestore://p-roj1/db-1?prefix=x&token=***"
    )


def test_a_firestore_ledger_has_no_queue_and_says_where_events_go() -> None:
    ledger = open_ledger("firestore://demo-proj")
    with pytest.raises(UsageError) as caught:
        open_queue(ledger=ledger)
    message = str(caught.value)
    assert "has no work queue" in message
    assert "Pub/Sub" in message and "Cloud Tasks" in message
    assert caught.value.hint is not None and caught.value.hint.startswith("pass --queue sqlite")
    with pytest.raises(UsageError, match="unknown queue scheme firestore://"):
        open_queue("firestore://demo-proj")


def test_opening_the_ledger_imports_no_google_library() -> None:
    code = (
        "import sys; from regwarden.store import open_ledger; "
        "open_ledger('firestore://demo-proj').close(); "
        "print(sorted(m for m in sys.modules if m.startswith(SDK)))"
    )
    # `google` and `google.cloud` are namespace packages a .pth file loads at start-up
    sdk = "('google.cloud.', 'google.api_core', 'google.auth', 'google.protobuf', 'grpc')"
    code = code.replace("SDK", sdk)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


def test_the_ttl_field_and_the_expiring_collections_are_named_for_the_terraform() -> None:
    assert TTL_FIELD == "expireAt"
    assert set(EXPIRING) <= set(KINDS)
    names = collection_names("regwarden")
    assert [names[k] for k in EXPIRING] == [
        "regwarden_deliveries",
        "regwarden_outcomes",
        "regwarden_outbox",
        "regwarden_failures",
    ]


# -- document ids -----------------------------------------------------------------------------

_RESERVED = re.compile(r"__.*__")


def valid_id(text: str) -> bool:
    """Firestore's rules for a document id."""
    return (
        bool(text)
        and "/" not in text
        and text not in (".", "..")
        and not _RESERVED.fullmatch(text)
        and len(text.encode()) <= 1500
    )


def test_ids_are_readable_valid_and_never_meet() -> None:
    keys = [
        ("sha256:" + "a" * 64,),
        ("ghcr.io", "team/app", "sha256:" + "b" * 64),
        ("ghcr.io", "team", "app/sha256:" + "b" * 64),  # the same text, split elsewhere
        ("ghcr.io#team", "app", "sha256:" + "b" * 64),
        ("a/b",),
        ("a%2Fb",),
        ("a#b",),
        ("a", "b"),
        (".",),
        ("..",),
        ("%2E",),
        ("__x__",),
        ("%5F%5Fx%5F%5F",),
        ("___",),
        ("",),
        ("x" * 1400 + "/" * 40,),  # over 1500 bytes once encoded
        ("x" * 1400 + "%2F" * 40,),
        ("läuft über",),
    ]
    ids = [doc_id(*key) for key in keys]
    assert all(valid_id(i) for i in ids), ids
    assert len(set(ids)) == len(keys)  # injective over these
    assert doc_id("sha256:" + "a" * 64) == "sha256:" + "a" * 64  # kept as it is
    assert doc_id("ghcr.io", "team/app", "v1") == "ghcr.io#team%2Fapp#v1"
    assert doc_id(".") == "%2E" and doc_id("__x__") == "%5F%5Fx%5F%5F"
    assert doc_id("x" * 1400 + "/" * 40).startswith("%%")


# -- values -----------------------------------------------------------------------------------


def test_values_survive_firestores_value_messages() -> None:
    plus_two = datetime(2026, 11, 27, 14, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    cases = [
        None,
        True,
        False,
        0,
        -(2**63),
        2**63 - 1,
        1.5,
        "",
        "text ü",
        T0,
        [1, "a", None, [T0]],
        {"a": {"b": [1, 2]}, "empty": {}},
        b"\x00\xff",
    ]
    for value in cases:
        assert decode(encode(value)) == value, value
        assert type(decode(encode(value))) is type(value)
    assert decode(encode(plus_two)) == plus_two and decode(encode(plus_two)).tzinfo == UTC
    assert decode(encode(("v1", "v2"))) == ["v1", "v2"]  # a tuple comes back a list
    assert encode(7).WhichOneof("value_type") == "integer_value"  # not a bool, not a double
    assert encode(True).WhichOneof("value_type") == "boolean_value"


def test_values_firestore_cannot_hold_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        encode(datetime(2026, 11, 27, 12, 0))
    with pytest.raises(ValueError, match="64-bit"):
        encode(2**63)
    with pytest.raises(TypeError, match="cannot store a set"):
        encode({1, 2})
