"""What `regwarden serve` tells and checks for its operator: the start-up line, the TLS
pair, and who may read /metrics."""

from __future__ import annotations

import hashlib
import json
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UsageError

if TYPE_CHECKING:
    from ..policy import Policy
    from ..receiver import CallerAuthenticator


@dataclass(frozen=True)
class Tls:
    cert: Path
    key: Path


def check_tls(cert: Path | None, key: Path | None) -> Tls | None:
    """The certificate and key to serve HTTPS with, or None for plain HTTP. Half a pair,
    an unreadable file or a key that does not match the certificate is a usage error
    (exit 2) before anything starts, not uvicorn's traceback after the workers have."""
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        given, missing = ("--tls-cert", "--tls-key") if key is None else ("--tls-key", "--tls-cert")
        raise UsageError(
            f"{given} needs {missing}: HTTPS takes a certificate and its private key",
            hint="pass both (PEM files), or neither to serve plain HTTP",
        )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key)
    except FileNotFoundError as exc:
        raise UsageError(f"cannot read TLS file {exc.filename}: no such file") from None
    except OSError as exc:  # ssl.SSLError is an OSError: a bad PEM or a mismatched key
        raise UsageError(
            f"cannot use --tls-cert {cert} with --tls-key {key}: {exc}",
            hint="both PEM files, the key unencrypted and the one of the certificate",
        ) from None
    return Tls(cert, key)


def policy_digest(policy: Policy) -> str:
    """A short digest of the policy as loaded (defaults filled in), so two replicas or two
    restarts can be told apart by what they enforce, whatever file or secret it came from."""
    canonical = json.dumps(policy.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()[:12]


def metrics_access(
    *, public: bool, token_file: Path | None
) -> tuple[str, CallerAuthenticator | None]:
    """(how /metrics is guarded, its own tokens or None for the webhook's)."""
    from ..receiver import CallerAuthenticator

    if public and token_file is not None:
        raise UsageError("--metrics-public and --metrics-token-file exclude each other")
    if public:
        return "public", None
    if token_file is not None:
        return "own token", CallerAuthenticator.from_file(str(token_file), basic_user=None)
    return "webhook token", None


def startup_line(
    *,
    url: str,
    policy: Policy,
    policy_path: str,
    ledger: str,
    queue: str | None,
    workers: int,
    auth: str,
    metrics: str,
    registries: frozenset[str],
    access: str | None = None,
) -> str:
    """One line an operator reads to know what this process is: where it listens, what it
    enforces, where it keeps state (no secret of a store URL) and who may call it."""
    from ..store import display_url

    rules = len(policy.repositories)
    parts = [
        f"regwarden serve listening on {url}",
        f"policy {policy_path} ({policy_digest(policy)}, {rules} repository rule"
        + ("" if rules == 1 else "s")
        + ")",
        f"ledger {display_url(ledger)}",
        f"queue {display_url(queue) if queue else 'the ledger'}",
        f"{workers} worker" + ("" if workers == 1 else "s"),
        f"auth {auth}",
        f"/metrics {metrics}",
        "registries " + ", ".join(sorted(registries)),
        *([access] if access else []),
    ]
    return " · ".join(parts)
