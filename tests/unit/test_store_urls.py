"""One way to name a store (issue #12 item 2): `--ledger` / `--queue` take a URL or a path,
resolved by the `LEDGERS` and `QUEUES` registries. A scheme nothing implements is a usage
error (exit 2) naming those that are; it never becomes a file of that name."""

from __future__ import annotations

import os
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support.cli import run_cli

from regwarden.errors import UsageError
from regwarden.store import (
    LEDGERS,
    QUEUES,
    DynamoLedger,
    SqliteLedger,
    display_url,
    open_ledger,
    open_queue,
    parse_store_url,
)

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def refusal(url: str, *, queue: bool = False) -> UsageError:
    with pytest.raises(UsageError) as caught:
        open_queue(url) if queue else open_ledger(url)
    assert caught.value.exit_code == 2
    return caught.value


def test_the_registries_name_the_stores_built_today() -> None:
    assert LEDGERS.names() == (
        "azuretable",
        "dynamodb",
        "firestore",
        "postgres",
        "postgresql",
        "sqlite",
    )
    assert QUEUES.names() == ("postgres", "postgresql", "sqlite")


def test_importing_the_store_or_opening_one_ledger_loads_no_other_store() -> None:
    """A cloud function opens its own ledger only: the other stores' modules (and the
    SQLite one's sqlite3) stay unloaded, and a store's names still import on demand."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from regwarden.store import open_ledger\n"
        "open_ledger('azuretable://acct')\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('regwarden.store.') "
        "or m == 'sqlite3')\n"
        "print(' '.join(loaded))\n"
        "from regwarden.store import DynamoLedger, SqliteLedger\n"
        "print(DynamoLedger.__module__, SqliteLedger.__module__)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    loaded = set(out[0].split())
    assert "regwarden.store._azure_table" in loaded
    assert not loaded & {
        "sqlite3",
        "regwarden.store._sqlite",
        "regwarden.store._sqlite_queue",
        "regwarden.store._dynamo",
        "regwarden.store._firestore",
        "regwarden.store._postgres",
    }
    assert out[1] == "regwarden.store._dynamo regwarden.store._sqlite"


def test_a_path_or_an_sqlite_url_opens_an_sqlite_ledger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    cases = {
        "~/state/a.db": tmp_path / "home" / "state" / "a.db",  # `~` as the shell would
        str(tmp_path / "b.db"): tmp_path / "b.db",
        f"sqlite://{tmp_path}/c.db": tmp_path / "c.db",  # sqlite:// + /absolute
        "sqlite://rel/d.db": tmp_path / "rel" / "d.db",  # relative to the working directory
        "SQLite://~/e.db": tmp_path / "home" / "e.db",
    }
    for url, path in cases.items():
        ledger = open_ledger(url)
        assert isinstance(ledger, SqliteLedger), url
        assert ledger.path.resolve() == path.resolve(), url
        assert path.is_file(), url
        ledger.close()
    # a Path is a path, whatever it spells
    ledger = open_ledger(tmp_path / "f.db")
    assert isinstance(ledger, SqliteLedger) and ledger.path == tmp_path / "f.db"
    ledger.close()


def test_a_dynamodb_url_opens_the_table_without_contacting_it() -> None:
    ledger = open_ledger("dynamodb://regwarden-ledger?region=eu-west-1&endpoint=http://127.0.0.1:9")
    assert isinstance(ledger, DynamoLedger) and ledger.table == "regwarden-ledger"
    assert ledger.client.meta.region_name == "eu-west-1"  # made on first use, offline
    assert ledger.client.meta.endpoint_url == "http://127.0.0.1:9"
    ledger.close()
    plain = open_ledger("dynamodb://regwarden.ledger_2")  # region and endpoint: boto3's own
    assert isinstance(plain, DynamoLedger) and plain.table == "regwarden.ledger_2"


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("http://ledger.example/", "unknown ledger scheme http://"),
        ("s3://bucket/ledger.db", "unknown ledger scheme s3://"),
    ],
)
def test_a_scheme_nothing_implements_is_a_usage_error_and_never_a_file(
    url: str, needle: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    error = refusal(url)
    assert str(error).startswith(f"cannot use the ledger {url}: {needle}"), str(error)
    assert error.hint == (
        "valid: a path (an SQLite file), azuretable://, dynamodb://, firestore://, "
        "postgres://, postgresql://, sqlite://"
    )
    assert list(tmp_path.iterdir()) == []  # nothing made under the working directory


def test_a_password_in_a_url_is_not_repeated() -> None:
    error = refusal("postgresql://regwarden:s3cr3t-pw@db.example/ledger?sslpassword=pw2&x")
    assert str(error).startswith(
        "cannot use the ledger postgresql://***@db.example/ledger?sslpassword=***&x: "
    )
    error = refusal("dynamodb://tbl?region=eu-west-1&endpoint=http://u:pw3@h:1&token=pw4")
    assert str(error).startswith(
        "cannot use the ledger dynamodb://tbl?region=eu-west-1&endpoint=http://h:1&token=***: "
    )


@pytest.mark.parametrize(
    ("url", "needle", "hint"),
    [
        ("dynamodb://t", "'t' is not a DynamoDB table name", "dynamodb://TABLE?region="),
        ("dynamodb://a/b/c", "'a/b/c' is not a DynamoDB table name", "dynamodb://TABLE?region="),
        ("dynamodb://", "'' is not a DynamoDB table name", "dynamodb://TABLE?region="),
        ("dynamodb://tbl?regoin=x", "unknown parameter regoin for dynamodb://", "region, endpoint"),
        ("dynamodb://tbl?endpoint=ftp://x", "endpoint 'ftp://x' is not an http(s) URL", "TABLE"),
        ("dynamodb://tbl?region=a&region=b", "parameter region given twice", None),
        ("dynamodb://tbl?region", "malformed parameters", None),
        ("azuretable://account/table", "'account/table' is not a storage account", "ACCOUNT"),
        ("azuretable://Acct", "'Acct' is not a storage account name", "azuretable://ACCOUNT"),
        ("azuretable://acct?prefix=9x", "prefix '9x' is not a table-name prefix", "?prefix="),
        ("azuretable://acct?table=x", "unknown parameter table for azuretable://", "prefix"),
        ("sqlite://", "no file after sqlite://", "sqlite:///ABSOLUTE/PATH"),
        ("sqlite:///x.db?mode=ro", "unknown parameter mode for sqlite://", "none"),
        # PostgreSQL: refused before any connection is tried; the password never in the URL
        ("postgresql://u:hunter2@db/x", "a password in the URL: put it in a file", "USER@HOST"),
        ("postgresql://u@db/x?password=hunter2", "put it in a file or secret://", "secret://"),
        ("postgres://u@db/", "it needs a host and a database", "password_file=PATH"),
        ("postgresql://u@db:pg/x", "the port is not a number", "USER@HOST:PORT"),
        ("postgresql://u@db/x?schema=Bad-Name", "schema 'Bad-Name' is not a", "lowercase"),
        ("postgresql://u@db/x?pool_size=0", "pool_size '0' is not a number from 1", None),
        ("postgresql://u@db/x?ssl=1", "unknown parameter ssl for postgresql://", "sslmode"),
        ("postgresql://u@db/x?password_file=/nonexistent/pw", "cannot read password_file", None),
        (
            "postgresql://u@db/x?password_file=/dev/null&password=secret://pg",
            "give password_file or password, not both",
            None,
        ),
        ("postgresql://u@db/x?password=secret://pg-pw", "secret 'pg-pw' not found", "export"),
    ],
)
def test_malformed_urls_say_what_is_wrong(url: str, needle: str, hint: str | None) -> None:
    error = refusal(url)
    # a parameter's value is shown only when it is known to be plain (region, endpoint)
    assert str(error).startswith(f"cannot use the ledger {display_url(url)}: "), str(error)
    assert needle in str(error) and "hunter2" not in str(error)
    if hint is not None:
        assert error.hint is not None and hint in error.hint


def test_sqlite_files_that_cannot_be_used_say_why_and_name_the_flag(tmp_path: Path) -> None:
    (tmp_path / "dir.db").mkdir()
    (tmp_path / "junk.db").write_bytes(b"not a database, just text " * 100)
    (tmp_path / "a-file").write_text("x")
    cases = [
        (str(tmp_path / "dir.db"), "it is a directory"),
        (f"sqlite://{tmp_path}/junk.db", "the file is not an SQLite database"),
        (str(tmp_path / "a-file" / "sub" / "l.db"), "Not a directory"),
    ]
    for url, cause in cases:
        error = refusal(url)
        assert str(error).startswith(f"cannot use the ledger {url}: ") and cause in str(error)
        assert error.hint == "--ledger (or REGWARDEN_LEDGER) must name a writable SQLite file"
        queue_error = refusal(url, queue=True)
        assert str(queue_error).startswith(f"cannot use the queue {url}: ")
        assert queue_error.hint is not None and queue_error.hint.startswith("--queue ")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_sqlite_file_is_permission_denied(tmp_path: Path) -> None:
    locked = tmp_path / "locked.db"
    SqliteLedger(locked).close()
    locked.chmod(0)
    assert "permission denied" in str(refusal(f"sqlite://{locked}"))


def test_the_queue_is_the_sqlite_ledgers_own_unless_named(tmp_path: Path) -> None:
    ledger = open_ledger(tmp_path / "ledger.db")
    assert open_queue(ledger=ledger) is ledger
    for same in (str(tmp_path / "ledger.db"), f"sqlite://{tmp_path}/./ledger.db"):
        assert open_queue(same, ledger=ledger) is ledger  # one file, one object
    other = open_queue(f"sqlite://{tmp_path}/queue.db", ledger=ledger)
    assert isinstance(other, SqliteLedger) and other is not ledger
    other.enqueue("distribution", b"{}", "application/json", now=T0)
    assert other.pending_count() == 1 and ledger.pending_count() == 0
    other.close()
    ledger.close()


def test_a_ledger_with_no_queue_needs_one_named() -> None:
    ledger = open_ledger("dynamodb://regwarden-ledger?region=eu-west-1")
    with pytest.raises(UsageError) as caught:
        open_queue(ledger=ledger)
    assert "has no work queue" in str(caught.value)
    assert caught.value.hint is not None
    assert caught.value.hint.startswith("pass --queue sqlite:///PATH (or REGWARDEN_QUEUE)")
    error = refusal("dynamodb://regwarden-ledger", queue=True)  # DynamoDB is no queue (yet)
    assert "unknown queue scheme dynamodb://" in str(error)
    assert error.hint == "valid: a path (an SQLite file), postgres://, postgresql://, sqlite://"


def test_parsed_urls_keep_scheme_location_and_parameters() -> None:
    url = parse_store_url("DynamoDB://tbl?region=eu-west-1&endpoint=", role="ledger")
    assert (url.scheme, url.location, dict(url.params)) == (
        "dynamodb",
        "tbl",
        {"region": "eu-west-1", "endpoint": ""},
    )
    assert url.option == "--ledger (or REGWARDEN_LEDGER)"
    path = parse_store_url("/var/lib/regwarden/ledger.db", role="queue")
    assert (path.scheme, path.location, path.option) == (
        "sqlite",
        "/var/lib/regwarden/ledger.db",
        "--queue (or REGWARDEN_QUEUE)",
    )


# -- the command line -------------------------------------------------------------------------


def cli(*args: str, **env: str) -> tuple[int, str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("REGWARDEN_")}
    proc = run_cli(*args, env=base | env, timeout=60)
    return proc.returncode, proc.stdout, " ".join(proc.stderr.split())


def dead_letter(path: Path) -> None:
    store = SqliteLedger(path)
    store.enqueue("distribution", b'{"events": []}', "application/json", now=T0)
    (held,) = store.lease(now=T0, owner="w", timeout=timedelta(seconds=30))
    store.complete(held.id, now=T0 + timedelta(seconds=1), error="boom", owner="w")
    store.close()


def test_the_cli_refuses_an_unknown_scheme_with_exit_2(tmp_path: Path) -> None:
    code, _, err = cli("--ledger", "mysql://u:hunter22@db/x", "deadletters", "list")
    assert code == 2 and "unknown ledger scheme mysql://" in err
    assert "dynamodb://, firestore://, postgres://, postgresql://, sqlite://" in err
    assert "hunter22" not in err and "Traceback" not in err


def test_the_cli_refuses_a_postgresql_password_in_the_url_with_exit_2(tmp_path: Path) -> None:
    code, _, err = cli("--ledger", "postgresql://u:hunter22@db/x", "deadletters", "list")
    assert code == 2 and "a password in the URL: put it in a file or secret://" in err
    assert "hunter22" not in err and "Traceback" not in err


def test_deadletters_read_the_queue_that_queue_names(tmp_path: Path) -> None:
    queue = tmp_path / "queue.db"
    dead_letter(queue)
    dynamo = "dynamodb://regwarden-ledger?region=eu-west-1"
    code, _, err = cli("--ledger", dynamo, "deadletters", "list")
    assert code == 2 and "--queue sqlite:///PATH" in err
    for args, env in (
        (("--ledger", dynamo, "--queue", f"sqlite://{queue}"), {}),
        ((), {"REGWARDEN_LEDGER": dynamo, "REGWARDEN_QUEUE": str(queue)}),
    ):
        code, out, err = cli(*args, "deadletters", "list", **env)
        assert code == 0, err
        assert f"1 dead letter(s) in {queue}" in out and "error: boom" in out
    code, _, err = cli("--queue", str(tmp_path / "none.db"), "deadletters", "list")
    assert code == 2 and f"no queue at {tmp_path / 'none.db'}" in err and "--queue" in err
    assert not (tmp_path / "none.db").exists()


def test_help_teaches_ledger_and_queue_urls() -> None:
    code, out, _ = cli("--help", COLUMNS="300")  # one line per option
    text = " ".join(out.split())
    assert code == 0
    assert "--ledger" in text and "dynamodb://TABLE?region=REGION&endpoint=URL" in text
    assert "--queue" in text and "REGWARDEN_QUEUE" in text and "sqlite:///PATH" in text


def test_a_ledger_file_made_by_the_url_is_an_sqlite_database(tmp_path: Path) -> None:
    open_ledger(f"sqlite://{tmp_path}/l.db").close()
    with sqlite3.connect(tmp_path / "l.db") as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"queue", "verdicts", "outbox"} <= tables
