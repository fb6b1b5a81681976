"""Settings for the AWS functions: read from the environment once per cold start.

| variable                  | meaning                                                           |
| ------------------------- | ----------------------------------------------------------------- |
| `REGWARDEN_POLICY`        | `s3://BUCKET/KEY`, `ssm:/PARAMETER/NAME` or a bundled file path   |
| `REGWARDEN_TABLE`         | the DynamoDB table: ledger and idempotency records                |
| `REGWARDEN_ALERTS_TOPIC`  | the SNS alerts topic ARN (gate functions publish every alert)     |
| `REGWARDEN_RECHECK_QUEUE` | this function's own SQS queue URL (PENDING verdicts come back)    |
| `REGWARDEN_MAX_RECEIVES`  | the queue's `maxReceiveCount`: the last attempt acts or alerts    |
| `REGWARDEN_SECRET_STORE`  | `secretsmanager` (default) or `ssm`: where `secret://NAME` lives  |
| `ECR_DATA_PLANE`          | optional `host:port` serving ECR's `/v2/` (tests: a local registry)|
| `REGWARDEN_REGISTRY`      | this account's ECR host (default: from the function's ARN)        |
| `REGWARDEN_REGISTRIES`    | more registry hosts the functions may contact (comma-separated)   |
| `REGWARDEN_RECOVERY_SETTLE`| recovery: seconds an intent is left to its own invocation (180)  |
| `REGWARDEN_POLICY_TTL`    | seconds a warm function trusts its policy and secrets (300)       |

The functions contact only their own registry, the policy's `registries:` hosts and
`REGWARDEN_REGISTRIES`; an event naming any other host is rejected unread (SSRF).

The retention functions read `RetentionSettings` as well:

| variable                          | meaning                                                   |
| --------------------------------- | --------------------------------------------------------- |
| `REGWARDEN_REGISTRY`              | the ECR host (ACCOUNT.dkr.ecr.REGION.amazonaws.com) |
| `REGWARDEN_RETENTION_QUEUE`       | the work queue URL (fan-out sends, the worker re-times)   |
| `RETENTION_MODE`                  | `plan` (default: delete nothing) or `apply`               |
| `REGWARDEN_RETENTION_PREFIXES`    | comma-separated repository prefixes in scope (IAM's scope)|
| `REGWARDEN_RETENTION_INVENTORY`   | `aws` (default: ECS + Lambda of this region) or `policy`  |
| `REGWARDEN_RETENTION_CONCURRENCY` | deletions in flight per worker (default 4)                |
| `REGWARDEN_RETENTION_STOP_MS`     | stop deleting when less time than this is left (30000)    |
| `REGWARDEN_RETENTION_RESUME_DELAY`| seconds before an interrupted run's message returns (60)  |

The access function (`on_access`) reads `AccessSettings` as well:

| variable                             | meaning                                          |
| ------------------------------------ | ------------------------------------------------ |
| `REGWARDEN_ACCESS_IGNORE_PRINCIPALS` | comma-separated IAM ARNs: regwarden's own roles  |
| `REGWARDEN_ACCESS_SWEEP_INTERVAL`    | seconds between a warm function's window sweeps  |
|                                      | after a batch (60)                               |

Secrets never come from plain environment variables here: `secret://NAME` in the policy is
the Secrets Manager secret `NAME` (or the SSM SecureString `/NAME`), fetched through
Powertools parameters (cached for five minutes) when a channel or key first needs it.
A warm function looks again every `REGWARDEN_POLICY_TTL` seconds: a changed policy or a
rotated secret rebuilds what was built from them (`PolicySource.changed`,
`SecretEnv.rotated`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from regwarden import warm
from regwarden.errors import PolicyError, UsageError
from regwarden.warm import env_choice, env_int, env_prefixes

if TYPE_CHECKING:
    from regwarden.policy import Policy

__all__ = [
    "RETENTION_INVENTORIES",
    "RETENTION_MODES",
    "SECRET_STORES",
    "AccessSettings",
    "PolicySource",
    "RetentionSettings",
    "SecretEnv",
    "Settings",
    "home_registry",
    "load_policy",
    "load_source",
    "read_policy_text",
]

SECRET_STORES = ("secretsmanager", "ssm")
RETENTION_MODES = ("plan", "apply")
"""`plan` plans and reports, deleting nothing (the default); `apply` deletes."""
RETENTION_INVENTORIES = ("aws", "policy")
"""`aws`: ECS and Lambda of the function's region are in use (unless the policy's
`inventory.aws` says otherwise), plus the policy's other sources; `policy`: only those."""
SECRET_MAX_AGE = 300
"""Seconds a fetched secret is cached in a warm function."""
_S3 = re.compile(r"s3://(?P<bucket>[a-z0-9][a-z0-9.-]{1,61}[a-z0-9])/(?P<key>.+)")
_SSM = re.compile(r"ssm:(?P<name>/[A-Za-z0-9_.\-/]+)")
_POLICY_FORMS = "s3://BUCKET/KEY, ssm:/PARAMETER/NAME or a file path"
_MAX_POLICY_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Settings:
    """One function's configuration (frozen: read once per cold start)."""

    policy: str
    """Where the policy file lives: s3://, ssm: or a path bundled with the function."""
    table: str
    """The DynamoDB table holding the ledger and the idempotency records."""
    alerts_topic: str | None = None
    """SNS topic every alert of a gate function is published to; None: the policy's routes."""
    recheck_queue: str | None = None
    """SQS queue URL a PENDING verdict is sent back to (delayed) at its deadline."""
    max_receives: int = 5
    """The queue's maxReceiveCount; the attempt with this receive count is the last one."""
    secret_store: str = "secretsmanager"  # noqa: S105  # a store name
    """Where `secret://NAME` is read: Secrets Manager secret NAME, or SSM parameter /NAME."""
    ecr_data_plane: str | None = None
    """`host:port` serving ECR's /v2/ instead of the registry host (tests only)."""
    registry: str | None = None
    """This account's ECR host; None: taken from the function's ARN (`home_registry`)."""
    registries: tuple[str, ...] = ()
    """Other registry hosts the functions may contact (`REGWARDEN_REGISTRIES`)."""
    recovery_settle: int = 180
    """Seconds the recovery sweep leaves a new intent alone: the invocation that began it
    may still be running (longer than the gate functions' timeout)."""
    policy_ttl: int = 300
    """Seconds a warm function keeps its policy and secret values before looking again."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        from regwarden.providers.ecr import parse_ecr_host
        from regwarden.runtime import registries_from_env

        env = os.environ if env is None else env

        def required(name: str, what: str) -> str:
            value = (env.get(name) or "").strip()
            if not value:
                raise UsageError(f"{name} is not set; expected {what}")
            return value

        store = (env.get("REGWARDEN_SECRET_STORE") or "secretsmanager").strip().lower()
        if store not in SECRET_STORES:
            raise UsageError(
                f"REGWARDEN_SECRET_STORE: got {store!r}, expected one of: "
                + ", ".join(SECRET_STORES)
            )
        registry = (env.get("REGWARDEN_REGISTRY") or "").strip().lower()
        if registry:
            parse_ecr_host(registry)  # UsageError naming the expected form
        receives = _whole(env, "REGWARDEN_MAX_RECEIVES", 5, least=1)
        return cls(
            policy=required("REGWARDEN_POLICY", _POLICY_FORMS),
            table=required("REGWARDEN_TABLE", "the DynamoDB table name"),
            alerts_topic=(env.get("REGWARDEN_ALERTS_TOPIC") or "").strip() or None,
            recheck_queue=(env.get("REGWARDEN_RECHECK_QUEUE") or "").strip() or None,
            max_receives=receives,
            secret_store=store,
            ecr_data_plane=(env.get("ECR_DATA_PLANE") or "").strip() or None,
            registry=registry or None,
            registries=tuple(registries_from_env(env)),
            recovery_settle=_whole(env, "REGWARDEN_RECOVERY_SETTLE", 180, least=0),
            policy_ttl=_whole(env, "REGWARDEN_POLICY_TTL", 300, least=0),
        )


def home_registry(function_arn: str) -> str | None:
    """The ECR host of the account and region a function runs in, from its ARN
    (`arn:aws:lambda:REGION:ACCOUNT:function:NAME`); None for anything else."""
    from regwarden.intake.eventbridge import ecr_registry_host

    parts = function_arn.split(":")
    if len(parts) < 7 or parts[0] != "arn" or parts[2] != "lambda":
        return None
    region, account = parts[3], parts[4]
    if not (account.isdigit() and len(account) == 12 and region):
        return None
    return ecr_registry_host(account, region)


_whole = env_int
_choice = env_choice


@dataclass(frozen=True, slots=True)
class RetentionSettings:
    """The retention functions' configuration (fan-out and worker), read once per cold
    start. An unknown mode is an error, never a guess: only `apply` deletes."""

    registry: str
    """This account's ECR registry host: what the fan-out lists and the worker accepts."""
    queue: str | None = None
    """The work queue URL (the fan-out sends to it; the worker re-times a message there)."""
    mode: str = "plan"
    """`plan` (report only) or `apply` (delete)."""
    prefixes: tuple[str, ...] = ("",)
    """Repository name prefixes in scope; `""` is every repository. The IAM grants of the
    stack cover exactly these, so nothing outside them is planned."""
    inventory: str = "aws"
    """`aws` or `policy` (see `RETENTION_INVENTORIES`)."""
    concurrency: int = 4
    """Deletions in flight per worker invocation."""
    stop_ms: int = 30_000
    """The worker starts no deletion once less than this much Lambda time is left."""
    resume_delay: int = 60
    """Seconds until an interrupted run's message is visible again (and resumes)."""

    @property
    def apply(self) -> bool:
        return self.mode == "apply"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RetentionSettings:
        from regwarden.providers.ecr import parse_ecr_host

        env = os.environ if env is None else env
        registry = (env.get("REGWARDEN_REGISTRY") or "").strip().lower()
        if not registry:
            raise UsageError(
                "REGWARDEN_REGISTRY is not set; expected this account's ECR registry host "
                "(ACCOUNT.dkr.ecr.REGION.amazonaws.com)"
            )
        parse_ecr_host(registry)  # UsageError naming the expected form
        return cls(
            registry=registry,
            queue=(env.get("REGWARDEN_RETENTION_QUEUE") or "").strip() or None,
            mode=_choice(env, "RETENTION_MODE", RETENTION_MODES),
            prefixes=env_prefixes(env, "REGWARDEN_RETENTION_PREFIXES"),
            inventory=_choice(env, "REGWARDEN_RETENTION_INVENTORY", RETENTION_INVENTORIES),
            concurrency=_whole(env, "REGWARDEN_RETENTION_CONCURRENCY", 4, least=1),
            stop_ms=_whole(env, "REGWARDEN_RETENTION_STOP_MS", 30_000, least=0),
            resume_delay=_whole(env, "REGWARDEN_RETENTION_RESUME_DELAY", 60, least=0),
        )


@dataclass(frozen=True, slots=True)
class AccessSettings:
    """The access function's configuration, read once per cold start."""

    ignore_principals: frozenset[str] = frozenset()
    """Principals (IAM role or user ARNs, as the access events name them) whose pulls and
    pushes are regwarden's own: the stack's roles read and copy images (gate, quarantine,
    retention, report), which is not access to watch."""
    sweep_interval: int = 60
    """Seconds between sweeps of due alert windows at the end of a batch, per warm
    function (the one-minute schedule sweeps as well, for a quiet stream)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AccessSettings:
        env = os.environ if env is None else env
        raw = env.get("REGWARDEN_ACCESS_IGNORE_PRINCIPALS") or ""
        principals = frozenset(p.strip() for p in raw.split(",") if p.strip())
        odd = sorted(p for p in principals if not p.startswith("arn:"))
        if odd:
            raise UsageError(
                f"REGWARDEN_ACCESS_IGNORE_PRINCIPALS: got {odd[0]!r}, expected "
                "comma-separated IAM ARNs (arn:aws:iam::ACCOUNT:role/NAME)"
            )
        return cls(
            ignore_principals=principals,
            sweep_interval=_whole(env, "REGWARDEN_ACCESS_SWEEP_INTERVAL", 60, least=0),
        )


def _client(service: str) -> Any:
    from regwarden import botocore_config

    return botocore_config.client(service)


def read_policy_text(uri: str) -> str:
    """The policy YAML at `s3://BUCKET/KEY` or `ssm:/PARAMETER/NAME` (boto3)."""
    from botocore.exceptions import BotoCoreError, ClientError

    s3, ssm = _S3.fullmatch(uri), _SSM.fullmatch(uri)
    try:
        if s3 is not None:
            body = _client("s3").get_object(Bucket=s3["bucket"], Key=s3["key"])["Body"]
            data: bytes = body.read(_MAX_POLICY_BYTES + 1)
        elif ssm is not None:
            answer = _client("ssm").get_parameter(Name=ssm["name"], WithDecryption=True)
            data = str(answer["Parameter"]["Value"]).encode()
        else:
            raise UsageError(f"REGWARDEN_POLICY: got {uri!r}, expected {_POLICY_FORMS}")
    except (ClientError, BotoCoreError) as exc:
        raise PolicyError(f"cannot read the policy from {uri}: {exc}") from None
    if len(data) > _MAX_POLICY_BYTES:
        raise PolicyError(f"policy {uri} is larger than {_MAX_POLICY_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyError(f"policy {uri} is not UTF-8: {exc}") from None


def load_policy(uri: str) -> Policy:
    """Load and validate the policy from S3, SSM or a bundled file (`load_source`)."""
    return load_source(uri).policy


def _remote_policy(uri: str) -> str | None:
    """The policy's text when `uri` is on S3 or SSM; None for a bundled file."""
    return read_policy_text(uri) if uri.startswith(("s3://", "ssm:")) else None


PolicySource = warm.PolicySource


def load_source(uri: str) -> PolicySource:
    """Load and validate the policy from S3, SSM or a bundled file.

    `file://` locations inside an S3 or SSM policy resolve against the function's code
    directory (`LAMBDA_TASK_ROOT`), where bundled keys would live. A policy with settings
    no code would carry out (a scan source nothing reads yet, quarantine `lock`, …) fails
    the cold start (PolicyError), as `regwarden policy validate` reports it.
    """
    base = Path(os.environ.get("LAMBDA_TASK_ROOT") or Path.cwd())
    return warm.PolicySource.load(uri, _remote_policy, base_dir=base)


class SecretEnv(warm.SecretEnv):
    """`regwarden.warm.SecretEnv` over Secrets Manager or SSM (through Powertools
    parameters, which cache each value for `SECRET_MAX_AGE` seconds)."""

    def __init__(self, base: Mapping[str, str], names: Mapping[str, str], *, store: str) -> None:
        super().__init__(base, names, self._fetch_from)
        self._store = store

    def _fetch_from(self, name: str, *, fresh: bool = False) -> str:
        from aws_lambda_powertools.utilities import parameters

        try:
            if self._store == "ssm":
                value = parameters.get_parameter(
                    "/" + name.lstrip("/"),
                    decrypt=True,
                    max_age=SECRET_MAX_AGE,
                    force_fetch=fresh,
                )
            else:
                value = parameters.get_secret(name, max_age=SECRET_MAX_AGE, force_fetch=fresh)
        except parameters.GetParameterError as exc:
            # name the secret, never a value
            raise UsageError(f"secret {name!r} not readable from {self._store}: {exc}") from None
        if isinstance(value, bytes):
            value = value.decode()
        return str(value)
