"""Google Cloud clients, made one way by every GCP part of regwarden (the GAR provider,
Artifact Analysis, the Firestore ledger, Cloud Tasks rechecks, Pub/Sub, Secret Manager,
Cloud Run, Cloud KMS signing).

Every client uses the REST transport: it imports far less than gRPC (cold start), and it
is the transport a loopback stand-in can serve in tests. An endpoint other than Google's
own is named per service in the environment, `REGWARDEN_GCP_ENDPOINT_<SERVICE>` (e.g.
`REGWARDEN_GCP_ENDPOINT_ARTIFACTREGISTRY=https://artifactregistry.p.googleapis.com` for
Private Service Connect). Credentials are sent only to Google's own endpoints and to an
https:// endpoint the operator named; a plain-http endpoint must be loopback (a stand-in)
and is called with anonymous credentials, so no token ever travels in the clear.

google-auth and the client libraries are imported on first use, never with this module.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from .cloud_endpoints import endpoint_override

__all__ = [
    "ENDPOINT_ENV_PREFIX",
    "SERVICES",
    "AccessToken",
    "client_kwargs",
    "default_credentials",
    "endpoint",
    "project_of",
]

ENDPOINT_ENV_PREFIX = "REGWARDEN_GCP_ENDPOINT_"
SERVICES = frozenset(
    {
        "artifactregistry",
        "containeranalysis",
        "firestore",
        "cloudtasks",
        "pubsub",
        "secretmanager",
        "run",
        "cloudkms",
        "storage",  # the scheduled report's bucket (JSON API over httpx, no client library)
    }
)
_SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
_REFRESH_MARGIN = timedelta(minutes=5)
"""An access token is refreshed this long before it expires, so no request carries one
that lapses in flight."""


def endpoint(service: str, env: Mapping[str, str]) -> str | None:
    """The endpoint `env` names for `service` (`https://…`, or `http://` on loopback only);
    None: Google's own. Raises UsageError for anything else."""
    if service not in SERVICES:
        raise ValueError(f"unknown Google Cloud service {service!r}")
    return endpoint_override(ENDPOINT_ENV_PREFIX + service.upper(), env)


@functools.cache
def default_credentials() -> Any:
    """The process's Application Default Credentials (a service account on Cloud Run),
    made once and shared by every client, so one token serves them all."""
    import google.auth

    credentials, _project = google.auth.default(scopes=_SCOPES)
    return credentials


def client_kwargs(service: str, env: Mapping[str, str], credentials: Any = None) -> dict[str, Any]:
    """Keyword arguments for a google-cloud `*Client(...)` of `service`: REST transport,
    the endpoint `env` names, and credentials (`credentials`, else the default ones) —
    anonymous for a loopback http:// stand-in."""
    url = endpoint(service, env)
    kwargs: dict[str, Any] = {"transport": "rest"}
    if url is not None:
        kwargs["client_options"] = {"api_endpoint": url}
        if url.startswith("http://"):
            from google.auth.credentials import AnonymousCredentials

            kwargs["credentials"] = AnonymousCredentials()  # type: ignore[no-untyped-call]
            return kwargs
    kwargs["credentials"] = credentials if credentials is not None else default_credentials()
    return kwargs


def project_of(env: Mapping[str, str]) -> str | None:
    """The project the function runs in: `GOOGLE_CLOUD_PROJECT` (set by Cloud Run
    functions), else `GCP_PROJECT`."""
    return env.get("GOOGLE_CLOUD_PROJECT") or env.get("GCP_PROJECT") or None


class AccessToken:
    """An OAuth access token from google-auth credentials, refreshed before it expires:
    the registry password of the `oauth2accesstoken` user on Artifact Registry's `/v2/`.
    Thread-safe; one refresh at a time."""

    def __init__(self, credentials: Any) -> None:
        self._credentials = credentials
        self._lock = threading.Lock()

    def get(self, now: datetime | None = None) -> str | None:
        """The token, refreshed first when it is missing or expires within five minutes;
        None for anonymous credentials (a loopback stand-in)."""
        from google.auth.credentials import AnonymousCredentials

        if isinstance(self._credentials, AnonymousCredentials):
            return None
        moment = now or datetime.now(UTC)
        with self._lock:
            creds = self._credentials
            expiry = creds.expiry  # naive UTC in google-auth
            if expiry is not None and expiry.tzinfo is None:
                expiry = expiry.replace(tzinfo=UTC)
            if creds.token is None or expiry is None or expiry - moment <= _REFRESH_MARGIN:
                import google.auth.transport.requests

                creds.refresh(google.auth.transport.requests.Request())
            token = creds.token
        return str(token) if token else None
