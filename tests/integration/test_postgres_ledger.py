"""The PostgreSQL ledger and queue: what the contract suite (test_ledger_contract.py) does
not cover — the harness itself, concurrent leasing, NOTIFY, migrations, the URL's password,
and a database restart. Real PostgreSQL 15 (tests/support/postgres.py), no fakes."""

from __future__ import annotations

import psycopg
import pytest
from support.postgres import PASSWORD_USER, PostgresServer

# -- the harness -------------------------------------------------------------------------


def test_harness_gives_each_test_its_own_database(postgres: PostgresServer) -> None:
    first, second = postgres.fresh_database(), postgres.fresh_database()
    assert first != second
    with psycopg.connect(first) as conn:
        conn.execute("CREATE TABLE mine (x int)")
    with psycopg.connect(second) as conn:
        found = conn.execute("SELECT to_regclass('mine')").fetchone()
    assert found == (None,)


def test_harness_password_user_must_give_its_password(postgres: PostgresServer) -> None:
    db = postgres.fresh_database().rpartition("/")[2]
    dsn = f"host=127.0.0.1 port={postgres.port} dbname={db} user={PASSWORD_USER}"
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(dsn, connect_timeout=5).close()
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(dsn + " password=wrong", connect_timeout=5).close()
    with psycopg.connect(dsn + f" password={postgres.password}") as conn:
        assert conn.execute("SELECT current_user").fetchone() == (PASSWORD_USER,)


def test_harness_runs_postgres_unprivileged(postgres: PostgresServer) -> None:
    rows = postgres.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
    assert rows == [(True,)]  # superuser inside the cluster, ...
    owner = postgres.data_dir.stat().st_uid
    import os

    assert os.geteuid() != 0 or owner != 0  # ... but never root on the machine
