"""`LocalRegistry`: a real CNCF distribution (`docker-registry`) on a free loopback port."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import yaml

from ..errors import RegwardenError, UsageError

DEFAULT_BINARY = "/usr/bin/docker-registry"
_CRYPT_LOCK = threading.Lock()


class RegistryStartError(RegwardenError):
    """The local registry did not come up (binary missing, bad config, port taken)."""

    exit_code = 3


def bcrypt_hash(password: str, *, cost: int = 5) -> str:
    """A bcrypt hash (`$2b$…`) as distribution's htpasswd auth expects.

    Uses the `bcrypt` package when installed, else the system's libcrypt (libxcrypt ships
    bcrypt on every current glibc distribution), so there is no extra dependency.
    """
    if not 4 <= cost <= 31:
        raise UsageError(f"bcrypt cost: got {cost}, expected 4..31")
    try:
        import bcrypt  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        pass
    else:
        hashed: bytes = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=cost))
        return hashed.decode()
    name = ctypes.util.find_library("crypt")
    if name is None:
        raise RegistryStartError(
            "cannot make a bcrypt hash: no 'bcrypt' package and no libcrypt found",
            hint="pip install bcrypt",
        )
    lib = ctypes.CDLL(name)
    lib.crypt_gensalt.restype = ctypes.c_char_p
    lib.crypt_gensalt.argtypes = [ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_int]
    lib.crypt.restype = ctypes.c_char_p
    lib.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    rbytes = secrets.token_bytes(16)
    with _CRYPT_LOCK:  # crypt() returns a static buffer
        salt = lib.crypt_gensalt(b"$2b$", cost, rbytes, len(rbytes))
        result = lib.crypt(password.encode(), salt) if salt else None
    if not result or not result.startswith(b"$2"):
        raise RegistryStartError("libcrypt could not make a bcrypt hash", hint="pip install bcrypt")
    return bytes(result).decode()


def _scratch_root() -> str | None:
    """Where throwaway storage goes: tmpfs (/dev/shm) when usable, else the system temp dir.

    Registry storage is thousands of small files; on disks mounted with online discard,
    deleting them from /tmp takes seconds, on tmpfs milliseconds.
    """
    shm = "/dev/shm"  # noqa: S108  (a private mkdtemp directory is created inside it)
    if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK):
        return shm
    return None


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the caller retries if it loses a race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _terminate(proc: subprocess.Popen[bytes], workdir: Path | None) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    if workdir is not None:
        shutil.rmtree(workdir, ignore_errors=True)


class LocalRegistry:
    """Run `docker-registry serve` on 127.0.0.1 with throwaway storage.

        with LocalRegistry(users={"alice": "s3cret"}) as reg:
            RegistryClient(reg.host, credentials=Credentials("alice", "s3cret"))

    `notifications` points distribution's webhook at a URL (with `notification_headers`,
    e.g. Authorization) using a short timeout and backoff. Deletes are enabled. The
    process is stopped and its storage removed on `stop()`, on exit from the `with`
    block, or when the object is garbage-collected; `keep=True` keeps the directory.
    `workdir` and `port`: a registry brought back on the storage and the address of an
    earlier one (the ledger names images by `127.0.0.1:PORT`), e.g. `regwarden demo --state`.
    """

    def __init__(
        self,
        *,
        users: Mapping[str, str] | None = None,
        notifications: str | None = None,
        notification_headers: Mapping[str, str] | None = None,
        notification_timeout: str = "2s",
        notification_backoff: str = "500ms",
        notification_threshold: int = 3,
        ignored_media_types: Sequence[str] = (),
        ignored_actions: Sequence[str] = (),
        binary: str = DEFAULT_BINARY,
        workdir: Path | None = None,
        keep: bool = False,
        debug: bool = False,
        startup_timeout: float = 15.0,
        port: int | None = None,
    ) -> None:
        self.users = dict(users or {})
        self.notifications = notifications
        self.notification_headers = dict(notification_headers or {})
        self._notification_timeout = notification_timeout
        self._notification_backoff = notification_backoff
        self._notification_threshold = notification_threshold
        self._ignored_media_types = list(ignored_media_types)
        self._ignored_actions = list(ignored_actions)
        self.binary = binary
        self._given_workdir = workdir
        self.keep = keep
        self.debug = debug
        self.startup_timeout = startup_timeout
        self._given_port = port
        self.port: int | None = None
        self.workdir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None

    # -- facts ----------------------------------------------------------------------------

    @property
    def host(self) -> str:
        """`127.0.0.1:PORT`, the registry host for references and the client."""
        if self.port is None:
            raise UsageError("LocalRegistry is not running; call start() or use it in 'with'")
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def storage(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "storage"

    @property
    def log_path(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "registry.log"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except (OSError, AssertionError):
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # -- configuration (pure) ---------------------------------------------------------------

    def config(self, port: int) -> dict[str, Any]:
        """The distribution configuration this registry runs with."""
        assert self.workdir is not None
        cfg: dict[str, Any] = {
            "version": 0.1,
            "log": {
                "level": "debug" if self.debug else "warn",
                "accesslog": {"disabled": not self.debug},
                "formatter": "text",
            },
            "storage": {
                "filesystem": {"rootdirectory": str(self.storage)},
                "delete": {"enabled": True},
                "cache": {"blobdescriptor": "inmemory"},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": {
                "addr": f"127.0.0.1:{port}",
                "secret": secrets.token_hex(16),
                "headers": {"X-Content-Type-Options": ["nosniff"]},
            },
        }
        if self.users:
            cfg["auth"] = {
                "htpasswd": {"realm": "regwarden-local", "path": str(self.workdir / "htpasswd")}
            }
        if self.notifications:
            endpoint: dict[str, Any] = {
                "name": "regwarden",
                "url": self.notifications,
                "headers": {k: [v] for k, v in self.notification_headers.items()},
                "timeout": self._notification_timeout,
                "threshold": self._notification_threshold,
                "backoff": self._notification_backoff,
            }
            if self._ignored_media_types or self._ignored_actions:
                endpoint["ignore"] = {
                    "mediatypes": self._ignored_media_types,
                    "actions": self._ignored_actions,
                }
            cfg["notifications"] = {"endpoints": [endpoint]}
        return cfg

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> LocalRegistry:
        if self.running:
            return self
        if not (os.path.isfile(self.binary) and os.access(self.binary, os.X_OK)):
            raise RegistryStartError(
                f"registry binary {self.binary} not found or not executable",
                hint="apt-get install docker-registry",
            )
        if self._given_workdir is not None:
            self.workdir = Path(self._given_workdir)
            self.workdir.mkdir(parents=True, exist_ok=True)
        else:
            self.workdir = Path(tempfile.mkdtemp(prefix="regwarden-registry-", dir=_scratch_root()))
        self.storage.mkdir(parents=True, exist_ok=True)
        if self.users:
            lines = [f"{user}:{bcrypt_hash(pw)}" for user, pw in self.users.items()]
            (self.workdir / "htpasswd").write_text("\n".join(lines) + "\n")
        # distribution reads REGISTRY_* variables as config overrides: keep ours authoritative
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        last_error = ""
        for _ in range(1 if self._given_port else 5):
            port = self._given_port or free_port()
            config_path = self.workdir / "config.yml"
            config_path.write_text(yaml.safe_dump(self.config(port), sort_keys=False))
            with open(self.log_path, "ab") as log_file:
                proc = subprocess.Popen(
                    [self.binary, "serve", str(config_path)],
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=self.workdir,
                )
            self._proc = proc
            self.port = port
            self._finalizer = weakref.finalize(
                self, _terminate, proc, None if self._keeps_dir else self.workdir
            )
            if self._wait_ready(proc, port):
                return self
            last_error = self.log_tail()
            self._finalizer.detach()
            _terminate(proc, None)
            self._proc = None
            self.port = None
            if "address already in use" not in last_error:
                break
        self._cleanup_dir()
        raise RegistryStartError(
            f"docker-registry did not start within {self.startup_timeout:.0f}s; log tail:\n"
            f"{last_error}"
        )

    def _wait_ready(self, proc: subprocess.Popen[bytes], port: int) -> bool:
        deadline = time.monotonic() + self.startup_timeout
        url = f"http://127.0.0.1:{port}/v2/"
        with httpx.Client(timeout=1.0) as probe:
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    return False
                try:
                    status = probe.get(url).status_code
                except httpx.TransportError:
                    status = 0
                if status in (200, 401):
                    return True
                time.sleep(0.02)
        return False

    def stop(self) -> None:
        """Terminate and reap the process; remove the temp directory unless `keep`."""
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if self._proc is not None:
            _terminate(self._proc, None)
            self._proc = None
        self._cleanup_dir()
        self.port = None

    @property
    def _keeps_dir(self) -> bool:
        return self.keep or self._given_workdir is not None

    def _cleanup_dir(self) -> None:
        if self.workdir is not None and not self._keeps_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> LocalRegistry:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = self.host if self.port else "stopped"
        return f"LocalRegistry({state})"
