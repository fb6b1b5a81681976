"""A throwaway PostgreSQL cluster on loopback, for the PostgreSQL ledger and queue's tests.

    def test_something(postgres: PostgresServer) -> None:   # session fixture (conftest.py)
        url = postgres.fresh_database()                      # a new empty database's URL

Debian's `postgresql` package (15) provides `initdb` and `postgres`; each `PostgresServer`
makes its own cluster in a temporary directory, listens on 127.0.0.1 at a free port (TCP
only; the Unix socket lives in the same directory, never in /var/run), with durability
switched off (fsync, full-page writes) since the cluster is thrown away. `initdb` refuses to
run as root, and CI runs as root: there both programs run as `nobody` (setpriv, no
supplementary groups) in a directory `nobody` owns.

Authentication on loopback: the superuser `postgres` is trusted (the tests' own
connections); the role `PASSWORD_USER` must give its password (scram-sha-256), so a test can
show that a `password_file` or `secret://` password really is sent.

Tests that need it skip when PostgreSQL is not installed, and fail when `CI=true` (CI
installs it, so its absence there is a defect).
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from types import TracebackType

import pytest

BIN = Path(os.environ.get("REGWARDEN_PG_BIN", "/usr/lib/postgresql/15/bin"))
SUPERUSER = "postgres"
PASSWORD_USER = "regwarden_pw"
_RUN_AS = "nobody"


def need_postgres() -> None:
    """Skip (or, in CI, fail) the calling test when PostgreSQL cannot run here."""
    missing = [name for name in ("initdb", "postgres") if not (BIN / name).exists()]
    try:
        import psycopg  # noqa: F401
    except ImportError:
        missing.append("psycopg (pip install -e '.[postgres]')")
    if not missing:
        return
    why = (
        f"PostgreSQL is not usable here, missing: {', '.join(missing)} (apt-get install postgresql)"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the PostgreSQL tests: {why}")
    pytest.skip(why)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """One PostgreSQL cluster (initdb + postgres) on 127.0.0.1, in a temporary directory."""

    def __init__(self, *, startup_timeout: float = 120.0) -> None:
        self.password = secrets.token_urlsafe(18)
        self.port = 0
        self._startup_timeout = startup_timeout
        self._workdir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Path | None = None

    # -- addresses ---------------------------------------------------------------------

    @property
    def data_dir(self) -> Path:
        assert self._workdir is not None, "not started"
        return self._workdir / "data"

    def url(self, database: str = "postgres", *, user: str = SUPERUSER) -> str:
        """`postgresql://USER@127.0.0.1:PORT/DATABASE` (no password: trusted superuser)."""
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def conninfo(self, database: str = "postgres") -> str:
        """A libpq connection string for the superuser (the tests' own connections)."""
        return f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname={database}"

    # -- databases ---------------------------------------------------------------------

    def fresh_database(self) -> str:
        """A new empty database (its URL, as the superuser): one per test, so tests share
        the cluster but never each other's rows. The password user may use it too."""
        name = "t_" + uuid.uuid4().hex[:16]
        self.execute(f'CREATE DATABASE "{name}"')
        self.execute(f'GRANT ALL ON DATABASE "{name}" TO {PASSWORD_USER}')
        self.execute(f"GRANT ALL ON SCHEMA public TO {PASSWORD_USER}", database=name)
        return self.url(name)

    def execute(
        self, sql: str, params: tuple[object, ...] = (), *, database: str = "postgres"
    ) -> list[tuple[object, ...]]:
        """Run `sql` as the superuser (autocommit); its rows, if it returns any."""
        import psycopg

        with psycopg.connect(self.conninfo(database), autocommit=True) as conn:
            cur = conn.execute(sql.encode(), params or None)
            return list(cur.fetchall()) if cur.description else []

    def terminate_backends(self, database: str) -> int:
        """Kill every connection to `database` (as a crashed client's would end): how many."""
        rows = self.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (database,),
        )
        return len(rows)

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> PostgresServer:
        need_postgres()
        if self._workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix="regwarden-pg-"))
            self._workdir.chmod(0o755)
            self._log = self._workdir / "postgres.log"
            self._initdb()
            self.port = _free_port()
        self._launch()
        return self

    def _as_user(self) -> list[str]:
        """The prefix that runs a command as the unprivileged owner of the cluster."""
        if os.geteuid() != 0:
            return []
        entry = pwd.getpwnam(_RUN_AS)
        return [
            "setpriv",
            f"--reuid={entry.pw_uid}",
            f"--regid={entry.pw_gid}",
            "--clear-groups",
            "--",
        ]

    def _chown(self, path: Path) -> None:
        if os.geteuid() == 0:
            entry = pwd.getpwnam(_RUN_AS)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def _env(self) -> dict[str, str]:
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C"}

    def _initdb(self) -> None:
        assert self._workdir is not None
        data = self._workdir / "data"
        data.mkdir(mode=0o700)
        self._chown(data)
        (self._workdir / "sock").mkdir(mode=0o700)  # the Unix socket: the owner's alone
        self._chown(self._workdir / "sock")
        pwfile = self._workdir / "pwfile"  # initdb wants the superuser's; never used (trust)
        pwfile.write_text(secrets.token_urlsafe(12) + "\n")
        self._chown(pwfile)
        done = subprocess.run(
            [
                *self._as_user(),
                str(BIN / "initdb"),
                "-D",
                str(data),
                "-U",
                SUPERUSER,
                "--pwfile",
                str(pwfile),
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
            ],
            env=self._env(),
            capture_output=True,
            text=True,
        )
        pwfile.unlink()
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed ({done.returncode}): {done.stderr.strip()}")
        # First matching line wins: the superuser trusted on loopback, everyone else by
        # password; nothing from any other address.
        (data / "pg_hba.conf").write_text(
            "local all all trust\n"
            f"host all {SUPERUSER} 127.0.0.1/32 trust\n"
            "host all all 127.0.0.1/32 scram-sha-256\n"
        )

    def _launch(self) -> None:
        assert self._workdir is not None and self._log is not None
        log = self._log.open("ab")
        self._chown(self._log)
        self._proc = subprocess.Popen(
            [
                *self._as_user(),
                str(BIN / "postgres"),
                "-D",
                str(self.data_dir),
                "-p",
                str(self.port),
                "-h",
                "127.0.0.1",
                "-k",
                str(self._workdir / "sock"),
                "-c",
                "fsync=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "max_connections=300",
                "-c",
                "shared_buffers=32MB",
            ],
            env=self._env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self._wait_ready()
        self.execute(
            f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{PASSWORD_USER}')"
            f" THEN CREATE ROLE {PASSWORD_USER} LOGIN PASSWORD '{self.password}'; END IF; END $$"
        )

    def _wait_ready(self) -> None:
        import psycopg

        assert self._proc is not None
        deadline = time.monotonic() + self._startup_timeout
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"postgres exited {self._proc.returncode}: {self.log_tail()}")
            try:
                psycopg.connect(self.conninfo(), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"postgres not ready: {self.log_tail()}") from None
                time.sleep(0.1)

    def log_tail(self, lines: int = 20) -> str:
        if self._log is None or not self._log.exists():
            return ""
        return "\n".join(self._log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, *, mode: str = "fast") -> None:
        """Stop the server (`fast`: SIGINT, open transactions roll back; `immediate`:
        SIGQUIT, as a crash). The data directory stays: `start()` brings it back."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        sig = signal.SIGQUIT if mode == "immediate" else signal.SIGINT
        os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def restart(self, *, mode: str = "fast") -> None:
        """Stop and start on the same port and data: what a client sees as a DB restart."""
        self.stop(mode=mode)
        self._launch()

    def close(self) -> None:
        self.stop()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
