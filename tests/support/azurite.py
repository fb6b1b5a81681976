"""Azurite — Microsoft's Storage emulator — on loopback, for Table Storage and Storage Queues.

    def test_something(azurite: Azurite) -> None:      # session fixture (tests/conftest.py)
        env = {**azurite.env()}                        # REGWARDEN_AZURE_ENDPOINT_TABLE/_QUEUE + key

Azurite is the npm package pinned in `tools/azurite` (`make azurite` installs it from the
lock). Each instance runs in memory with a fresh account name and a random key of its own,
given through `AZURITE_ACCOUNTS`: the emulator's well-known `devstoreaccount1` key is never
used, so a test that forgets to pass the key fails rather than passing by accident. Ports
are chosen by the kernel (port 0) and read back from the lines Azurite prints once each
service listens. The process runs in its own process group and the group is stopped at the
end, so no node child outlives the test session.

Tests that need it skip when Azurite is not installed on a developer machine, and fail when
`CI=true`: CI installs it, so its absence there is a defect, not a reason to skip.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path
from types import TracebackType

import pytest

ROOT = Path(__file__).resolve().parents[2]
BINARY = ROOT / "tools" / "azurite" / "node_modules" / ".bin" / "azurite"
_LISTENING = re.compile(
    r"Azurite (Blob|Queue|Table) service is successfully listening at http://127\.0\.0\.1:(\d+)"
)
_SERVICES = ("Blob", "Queue", "Table")


def need_azurite() -> None:
    """Skip (or, in CI, fail) the calling test when Azurite cannot run here."""
    missing = None
    if shutil.which("node") is None:
        missing = "node is not installed (apt-get install nodejs npm; then make azurite)"
    elif not BINARY.exists():
        missing = f"Azurite is not installed at {BINARY} (make azurite)"
    if missing is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the Azure storage tests: {missing}")
    pytest.skip(missing)


class Azurite:
    """One Azurite process (blob, queue, table) on 127.0.0.1, in memory."""

    def __init__(self, *, startup_timeout: float = 120.0) -> None:
        # Storage account names: 3-24 lowercase letters and digits.
        self.account = "rw" + uuid.uuid4().hex[:14]
        # Storage account keys are 64 random bytes, base64: the same shape here.
        self.key = base64.b64encode(secrets.token_bytes(64)).decode()
        self._startup_timeout = startup_timeout
        self._ports: dict[str, int] = {}
        self._output: list[str] = []
        self._ready = threading.Event()
        self._proc: subprocess.Popen[str] | None = None
        self._workdir: str | None = None
        self._reader: threading.Thread | None = None

    # -- endpoints ---------------------------------------------------------------------

    def _endpoint(self, service: str) -> str:
        return f"http://127.0.0.1:{self._ports[service]}/{self.account}"

    @property
    def blob_endpoint(self) -> str:
        return self._endpoint("Blob")

    @property
    def queue_endpoint(self) -> str:
        return self._endpoint("Queue")

    @property
    def table_endpoint(self) -> str:
        return self._endpoint("Table")

    @property
    def connection_string(self) -> str:
        """The storage connection string (the Functions host's AzureWebJobsStorage)."""
        return (
            f"DefaultEndpointsProtocol=http;AccountName={self.account};AccountKey={self.key};"
            f"BlobEndpoint={self.blob_endpoint};QueueEndpoint={self.queue_endpoint};"
            f"TableEndpoint={self.table_endpoint};"
        )

    def env(self) -> dict[str, str]:
        """The variables regwarden's azure_clients read to reach this Azurite."""
        return {
            "REGWARDEN_AZURE_ENDPOINT_TABLE": self.table_endpoint,
            "REGWARDEN_AZURE_ENDPOINT_QUEUE": self.queue_endpoint,
            "REGWARDEN_AZURE_STORAGE_KEY": self.key,
        }

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> Azurite:
        self._workdir = tempfile.mkdtemp(prefix="azurite-")
        args = [str(BINARY), "--inMemoryPersistence", "--disableTelemetry"]
        args += ["--skipApiVersionCheck", "--silent"]
        for service in _SERVICES:
            name = service.lower()
            args += [f"--{name}Host", "127.0.0.1", f"--{name}Port", "0"]
        env = {**os.environ, "AZURITE_ACCOUNTS": f"{self.account}:{self.key}"}
        self._proc = subprocess.Popen(
            args,
            cwd=self._workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group: stop() ends node and children
        )
        self._reader = threading.Thread(target=self._read, name="azurite-output", daemon=True)
        self._reader.start()
        deadline = time.monotonic() + self._startup_timeout
        while not self._ready.wait(0.2):
            if self._proc.poll() is not None:
                self._reader.join(5)
                self.stop()
                raise RuntimeError(f"Azurite exited at startup: {self._tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"Azurite did not listen within the timeout: {self._tail()}")
        return self

    def _read(self) -> None:
        # Drained until the process ends, so Azurite never blocks on a full pipe.
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            self._output.append(line.rstrip())
            match = _LISTENING.search(line)
            if match:
                self._ports[match.group(1)] = int(match.group(2))
                if all(s in self._ports for s in _SERVICES):
                    self._ready.set()

    def _tail(self) -> str:
        return " | ".join(self._output[-20:]) or "(no output)"

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(15)
            except ProcessLookupError:
                pass
        if self._reader is not None:
            self._reader.join(5)  # the group is gone: its pipe is at end of file
            self._reader = None
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def __enter__(self) -> Azurite:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
