"""Settings for the GCP functions: read from the environment once per cold start.

| variable                           | meaning                                                  |
| ---------------------------------- | -------------------------------------------------------- |
| `REGWARDEN_POLICY`                 | a file in the source bundle, or `secret://NAME`          |
| `REGWARDEN_LEDGER`                 | `firestore://PROJECT[/DATABASE]` (or an SQLite path)     |
| `REGWARDEN_ALERTS_TOPIC`           | `projects/P/topics/regwarden-alerts`: every gate alert   |
| `REGWARDEN_RETENTION_TOPIC`        | `projects/P/topics/regwarden-retention-work` (fan-out)   |
| `REGWARDEN_TASKS_QUEUE`            | `projects/P/locations/L/queues/Q`: PENDING rechecks      |
| `REGWARDEN_RECHECK_URL`            | the recheck function's URL (what the tasks call)         |
| `REGWARDEN_TASKS_SERVICE_ACCOUNT`  | the identity whose OIDC token the tasks carry            |
| `REGWARDEN_ALLOWED_HOSTS`          | registry hosts to contact (comma list; default: the      |
|                                    | policy's `registries`, plus these)                       |
| `REGWARDEN_MAX_DELIVERIES`         | the subscription's dead-letter `maxDeliveryAttempts` (5) |
| `REGWARDEN_POLICY_TTL`             | seconds a warm instance trusts policy and secrets (300)  |
| `REGWARDEN_RECOVERY_SETTLE`        | recovery: seconds an intent is left to its own call (600)|
| `REGWARDEN_GAR_DATA_PLANE`         | `host:port` serving Artifact Registry's `/v2/` (tests)   |
| `RETENTION_MODE`                   | retention: `plan` (default, deletes nothing) or `apply`  |
| `REGWARDEN_RETENTION_REGISTRY`     | retention: the GAR host listed (`LOCATION-docker.pkg.dev`)|
| `REGWARDEN_RETENTION_PREFIXES`     | retention: repository prefixes in scope (comma list)     |
| `REGWARDEN_RETENTION_INVENTORY`    | retention: `cloudrun` (default) or `policy`              |
| `REGWARDEN_RETENTION_CONCURRENCY`  | retention: deletions in flight per worker (4)            |
| `REGWARDEN_RETENTION_BUDGET`       | retention: seconds one worker call may spend (480)       |
| `GOOGLE_CLOUD_PROJECT`             | the project (set by Cloud Run functions)                 |

`secret://NAME` (the policy, or any secret the policy names) is the Secret Manager secret
`projects/PROJECT/secrets/NAME/versions/latest` (PROJECT: `GOOGLE_CLOUD_PROJECT`), or,
written out, `secret://projects/P/secrets/NAME[/versions/V]`. A fetched value is cached for
`SECRET_MAX_AGE` seconds per warm instance; every `REGWARDEN_POLICY_TTL` seconds the
function reads the policy and the secrets it used again, and rebuilds what was built from
them when one changed (`regwarden.warm`).
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from regwarden import warm
from regwarden.errors import PolicyError, UsageError
from regwarden.retention_scope import RETENTION_MODES, RetentionScope
from regwarden.warm import env_int

__all__ = [
    "RETENTION_INVENTORIES",
    "RETENTION_MODES",
    "SECRET_MAX_AGE",
    "RetentionSettings",
    "SecretManager",
    "Settings",
    "load_source",
    "secret_version",
]

SECRET_MAX_AGE = 300.0
"""Seconds a fetched secret is served from the warm instance's cache."""
RETENTION_INVENTORIES = ("cloudrun", "policy")
"""`cloudrun`: Cloud Run services and jobs of this project are in use (unless the policy's
`inventory.cloudrun` says otherwise), plus the policy's other sources; `policy`: only those."""
_SECRET_ID = re.compile(r"[A-Za-z0-9_-]{1,255}")
_SECRET_NAME = re.compile(
    r"projects/(?P<project>[^/]+)/secrets/(?P<secret>[A-Za-z0-9_-]{1,255})"
    r"(?:/versions/(?P<version>latest|[0-9]+))?"
)
_MAX_POLICY_BYTES = 1024 * 1024
_POLICY_FORMS = "a file in the function's source, or secret://NAME (Secret Manager)"


def _opt(env: Mapping[str, str], name: str) -> str | None:
    return (env.get(name) or "").strip() or None


def _hosts(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    from regwarden.intake import parse_host

    text = env.get(name, "")
    return tuple(parse_host(part, what=name) for part in text.split(",") if part.strip())


@dataclass(frozen=True, slots=True)
class Settings:
    """One function's configuration (frozen: read once per cold start)."""

    policy: str
    ledger: str
    project: str | None = None
    alerts_topic: str | None = None
    """Every alert of a gate function is published here (`notify` fans out); None: the
    policy's own routes."""
    retention_topic: str | None = None
    tasks_queue: str | None = None
    recheck_url: str | None = None
    tasks_service_account: str | None = None
    allowed_hosts: tuple[str, ...] = ()
    max_deliveries: int = 5
    policy_ttl: int = 300
    recovery_settle: int = 600
    """Longer than a gate function's timeout: an intent younger than this may still be in
    the hands of the call that began it."""
    data_plane: str | None = None

    @property
    def rechecks(self) -> bool:
        """Whether PENDING verdicts are brought back (Cloud Tasks is configured)."""
        return bool(self.tasks_queue and self.recheck_url and self.tasks_service_account)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        from regwarden.gcp_clients import project_of

        env = os.environ if env is None else env

        def required(name: str, what: str) -> str:
            value = _opt(env, name)
            if value is None:
                raise UsageError(f"{name} is not set; expected {what}")
            return value

        tasks = (
            _opt(env, "REGWARDEN_TASKS_QUEUE"),
            _opt(env, "REGWARDEN_RECHECK_URL"),
            _opt(env, "REGWARDEN_TASKS_SERVICE_ACCOUNT"),
        )
        if any(tasks) and not all(tasks):
            raise UsageError(
                "REGWARDEN_TASKS_QUEUE, REGWARDEN_RECHECK_URL and "
                "REGWARDEN_TASKS_SERVICE_ACCOUNT go together (rechecks through Cloud Tasks)"
            )
        return cls(
            policy=required("REGWARDEN_POLICY", _POLICY_FORMS),
            ledger=required("REGWARDEN_LEDGER", "firestore://PROJECT[/DATABASE]"),
            project=project_of(env),
            alerts_topic=_opt(env, "REGWARDEN_ALERTS_TOPIC"),
            retention_topic=_opt(env, "REGWARDEN_RETENTION_TOPIC"),
            tasks_queue=tasks[0],
            recheck_url=tasks[1],
            tasks_service_account=tasks[2],
            allowed_hosts=_hosts(env, "REGWARDEN_ALLOWED_HOSTS"),
            max_deliveries=env_int(env, "REGWARDEN_MAX_DELIVERIES", 5, least=1),
            policy_ttl=env_int(env, "REGWARDEN_POLICY_TTL", 300, least=0),
            recovery_settle=env_int(env, "REGWARDEN_RECOVERY_SETTLE", 600, least=0),
            data_plane=_opt(env, "REGWARDEN_GAR_DATA_PLANE"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class RetentionSettings(RetentionScope):
    """The retention functions' configuration (`regwarden.retention_scope`): the Artifact
    Registry host the fan-out lists and the worker accepts, and this project's Cloud Run
    services and jobs as the in-use inventory unless `REGWARDEN_RETENTION_INVENTORY=policy`.
    The budget stays below 600 s, how long a push subscription waits for an answer before
    it redelivers."""

    inventory: str = RETENTION_INVENTORIES[0]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RetentionSettings:
        return cls.read(
            os.environ if env is None else env,
            registry="the Artifact Registry host (LOCATION-docker.pkg.dev)",
            inventories=RETENTION_INVENTORIES,
        )


# -- Secret Manager ---------------------------------------------------------------------------


def secret_version(name: str, project: str | None) -> str:
    """The Secret Manager version `secret://NAME` means: `projects/P/secrets/NAME/versions/
    latest` in this project, or the resource written out (another project, a pinned
    version). UsageError naming the forms for anything else."""
    bare = name.removeprefix("secret://")
    full = _SECRET_NAME.fullmatch(bare)
    if full is not None:
        return f"projects/{full['project']}/secrets/{full['secret']}/versions/" + (
            full["version"] or "latest"
        )
    if not _SECRET_ID.fullmatch(bare):
        raise UsageError(
            f"secret {bare!r}: a Secret Manager secret id is letters, digits, '_' and '-' "
            "(up to 255); write secret://NAME or secret://projects/P/secrets/NAME"
        )
    if not project:
        raise UsageError(
            f"secret {bare!r}: GOOGLE_CLOUD_PROJECT is not set; it names the project "
            "whose Secret Manager holds the secret"
        )
    return f"projects/{project}/secrets/{bare}/versions/latest"


class SecretManager:
    """Secret values from Secret Manager (REST client made on first use), each cached for
    `max_age` seconds in this warm instance; `fresh` reads past the cache (to tell a
    rotation). A `regwarden.warm.SecretFetch`."""

    def __init__(self, env: Mapping[str, str], *, max_age: float = SECRET_MAX_AGE) -> None:
        from regwarden.gcp_clients import project_of

        self._env = dict(env)
        self._project = project_of(env)
        self._max_age = max_age
        self._cache: dict[str, tuple[str, float]] = {}
        self._client: Any = None
        self._lock = threading.Lock()

    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                from google.cloud import secretmanager_v1

                from regwarden.gcp_clients import client_kwargs

                kwargs = client_kwargs("secretmanager", self._env)
                self._client = secretmanager_v1.SecretManagerServiceClient(**kwargs)
            return self._client

    def __call__(self, name: str, *, fresh: bool = False) -> str:
        from google.api_core import exceptions

        version = secret_version(name, self._project)
        cached = self._cache.get(version)
        if cached is not None and not fresh and time.monotonic() - cached[1] < self._max_age:
            return cached[0]
        try:
            answer = self.client().access_secret_version(name=version, timeout=15.0)
        except exceptions.GoogleAPICallError as exc:
            # name the secret, never a value
            raise UsageError(f"secret {name!r} not readable from Secret Manager: {exc}") from None
        try:
            value = bytes(answer.payload.data).decode("utf-8")
        except UnicodeDecodeError:
            raise UsageError(f"secret {name!r} in Secret Manager is not UTF-8 text") from None
        self._cache[version] = (value, time.monotonic())
        return value


# -- the policy -------------------------------------------------------------------------------


def _policy_reader(secrets: SecretManager) -> warm.PolicyReader:
    def read(uri: str) -> str | None:
        if not uri.startswith("secret://"):
            return None  # a file in the source bundle
        try:
            text = secrets(uri, fresh=True)  # the TTL decides how often: no second cache
        except UsageError as exc:
            raise PolicyError(f"cannot read the policy from {uri}: {exc}") from None
        if len(text.encode()) > _MAX_POLICY_BYTES:
            raise PolicyError(f"policy {uri} is larger than {_MAX_POLICY_BYTES} bytes")
        return text

    return read


def load_source(uri: str, secrets: SecretManager) -> warm.PolicySource:
    """Load and validate the policy from the source bundle or Secret Manager. `file://`
    locations inside a policy from Secret Manager resolve against the function's source
    directory (the working directory of a Cloud Run function)."""
    return warm.PolicySource.load(uri, _policy_reader(secrets), base_dir=Path.cwd())
