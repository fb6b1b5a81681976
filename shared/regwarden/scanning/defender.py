"""Microsoft Defender for Containers as a scan source (`defender`, the default on ACR), and
the lookup the `on_scan` timer needs: which images' findings changed since a time.

    source = DefenderScanSource(env=os.environ)
    report = source(registry, image)  # a ScanReport; NoScanYet while Defender has none

Defender files one sub-assessment per vulnerability of an image; they are read from Azure
Resource Graph (`azure-mgmt-resourcegraph`, `ResourceGraphClient.resources(QueryRequest(
subscriptions=[…], query=…))`, every page by `$skipToken`), selected in KQL by the image's
registry host, repository and digest (`_subassessments.image_query`: values are escaped
KQL string literals, never pasted text).

- Rows, not all Healthy or all Healthy: Defender has scanned the image. Every row that is
  not Healthy is a finding (`_subassessments.findings_of` says how each field is read);
  `scanned_at` is the latest `timeGenerated`.
- No row: Defender has not reported on the image yet (it scans on push, usually within
  minutes). `NoScanYet` says so; the gate holds the image PENDING until the policy's
  `scanTimeout` and then fails it (or passes it, `failOpen`), as for ECR and Artifact
  Analysis images without a finished scan.
- A call that fails (403, 5xx or 429 still failing after the SDK's retries, a connection
  that cannot be made) raises `RegistryError` (`AuthError` for 401 and 403): unavailable
  evidence (verdict ERROR, retried), never "clean" and never "no scan".

Where: `REGWARDEN_AZURE_ENDPOINT_RESOURCEGRAPH` names another endpoint (the SDK's
`base_url`): https, or http on loopback only (a stand-in, called with no credential).
Which subscriptions: `REGWARDEN_AZURE_SUBSCRIPTION` (one subscription id, or several
separated by commas) — the subscription holding the registries (the `/subscriptions/ID/`
of a registry's ARM id, also the `topic` of its Event Grid events); unset, Resource Graph
searches every subscription the identity can read. Credentials: `DefaultAzureCredential`
(managed identity in Azure) unless one is given; it needs Reader (or Security Reader) on
the subscriptions.

Azure libraries are imported on first use, never with this module.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import AuthError, RegistryError
from ..model import ScanReport
from ._errors import ScanFormatError
from ._sources import NoScanYet
from ._subassessments import (
    UNSPECIFIED_FIX,
    changed_query,
    findings_of,
    image_of_row,
    image_query,
    kql_string,
    scanned_at,
)

if TYPE_CHECKING:
    from ..providers import Registry
    from ..reference import ImageRef

__all__ = [
    "ENV_ENDPOINT",
    "ENV_SUBSCRIPTION",
    "PAGE_SIZE",
    "SCANNER",
    "SOURCE",
    "UNSPECIFIED_FIX",
    "DefenderScanSource",
    "changed_since",
    "findings_of",
    "image_query",
    "kql_string",
    "query_rows",
    "resourcegraph_client",
    "subscriptions_of",
]

log = logging.getLogger("regwarden.scanning.defender")

SCANNER = "defender"
SOURCE = "defender-subassessments"
ENV_ENDPOINT = "REGWARDEN_AZURE_ENDPOINT_RESOURCEGRAPH"
ENV_SUBSCRIPTION = "REGWARDEN_AZURE_SUBSCRIPTION"
PAGE_SIZE = 1000
"""`$top` of a Resource Graph query (its maximum)."""
_MAX_PAGES = 10_000
"""A guard against a service that hands back skip tokens forever."""

T = TypeVar("T")


def subscriptions_of(env: Mapping[str, str]) -> tuple[str, ...]:
    """The subscription ids `REGWARDEN_AZURE_SUBSCRIPTION` lists (empty: every one the
    identity can read)."""
    return tuple(s.strip() for s in env.get(ENV_SUBSCRIPTION, "").split(",") if s.strip())


class _NoCredential:
    """Stands in for a credential the SDK insists on; never asked for a token, since the
    loopback client has no authentication policy."""

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        raise AssertionError("a loopback Resource Graph stand-in is called without a token")


def resourcegraph_client(
    env: Mapping[str, str],
    credential: Any = None,
    *,
    retry_total: int = 3,
    retry_backoff_factor: float = 0.8,
    retry_backoff_max: float = 8.0,
    timeout: float = 15.0,
) -> Any:
    """A `ResourceGraphClient` for the endpoint `env` names. The SDK's retry policy retries
    408, 429 (after its Retry-After), 500, 502, 503, 504 and failed connections
    `retry_total` times with exponential backoff."""
    from azure.mgmt.resourcegraph import ResourceGraphClient

    from .. import azure_clients

    url = azure_clients.endpoint("resourcegraph", env)
    options: dict[str, Any] = {
        "retry_total": retry_total,
        "retry_backoff_factor": retry_backoff_factor,
        "retry_backoff_max": retry_backoff_max,
        "connection_timeout": timeout,
        "read_timeout": timeout,
        **azure_clients.transport_options(azure_clients.ca_bundle(env) or True),
    }
    if url is not None and url.startswith("http://"):
        # azure-core refuses bearer tokens over http; a loopback stand-in gets none
        from azure.core.pipeline.policies import SansIOHTTPPolicy

        return ResourceGraphClient(
            _NoCredential(), base_url=url, authentication_policy=SansIOHTTPPolicy(), **options
        )
    if credential is None:
        credential = azure_clients.default_credential()
    return ResourceGraphClient(credential, base_url=url, **options)


def _run(what: str, call: Callable[[], T]) -> T:
    """`call()`, its Azure failures as regwarden errors naming `what`."""
    from azure.core.exceptions import AzureError, ClientAuthenticationError, HttpResponseError

    try:
        return call()
    except HttpResponseError as exc:
        status = exc.status_code
        message = getattr(exc, "message", None) or str(exc)
        if status in (401, 403) or (status is None and isinstance(exc, ClientAuthenticationError)):
            raise AuthError(
                f"{what}: refused by Azure Resource Graph"
                + (f": HTTP {status}" if status else "")
                + f": {message}",
                status=status,
                hint="the identity needs Reader (or Security Reader) on the registry's "
                f"subscription, named by {ENV_SUBSCRIPTION}",
            ) from exc
        raise RegistryError(
            f"{what}: Azure Resource Graph answered HTTP {status}: {message}", status=status
        ) from exc
    except AzureError as exc:
        raise RegistryError(f"{what}: {type(exc).__name__}: {exc}") from exc


def query_rows(
    client: Any, subscriptions: Sequence[str], query: str, *, page_size: int, what: str
) -> list[dict[str, Any]]:
    """Every row of `query`, all pages, as dicts (`resultFormat: objectArray`); also what
    the `containerapps` inventory reads Container Apps with."""
    from azure.mgmt.resourcegraph.models import QueryRequest, QueryRequestOptions

    rows: list[dict[str, Any]] = []
    token: str | None = None
    for _ in range(_MAX_PAGES):
        request = QueryRequest(
            subscriptions=list(subscriptions) or None,
            query=query,
            options=QueryRequestOptions(
                top=page_size, skip_token=token, result_format="objectArray"
            ),
        )
        response = _run(what, functools.partial(client.resources, request))
        data = response.data
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise ScanFormatError(
                f"{what}: Resource Graph answered data of type {type(data).__name__}, "
                "expected a list of rows (resultFormat objectArray)"
            )
        rows.extend(data)
        token = response.skip_token or None
        if token is None:
            return rows
    raise RegistryError(f"{what}: Resource Graph kept answering more pages ({_MAX_PAGES})")


class DefenderScanSource:
    """`(registry, image) -> ScanReport` from Defender for Containers (module docstring).

    `client`: a ResourceGraphClient to use (default: `resourcegraph_client(env, credential)`
    with the retry settings given); `subscriptions`: default `REGWARDEN_AZURE_SUBSCRIPTION`.
    """

    def __init__(
        self,
        *,
        env: Mapping[str, str] | None = None,
        client: Any = None,
        credential: Any = None,
        subscriptions: Sequence[str] | None = None,
        page_size: int = PAGE_SIZE,
        retry_total: int = 3,
        retry_backoff_factor: float = 0.8,
    ) -> None:
        if not 1 <= page_size <= PAGE_SIZE:
            raise ValueError(f"page_size: got {page_size}, expected 1 to {PAGE_SIZE}")
        self.env: Mapping[str, str] = env if env is not None else {}
        self.subscriptions = (
            tuple(subscriptions) if subscriptions is not None else subscriptions_of(self.env)
        )
        self.page_size = page_size
        self._client = client
        self._credential = credential
        self._retry = (retry_total, retry_backoff_factor)
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                total, factor = self._retry
                self._client = resourcegraph_client(
                    self.env, self._credential, retry_total=total, retry_backoff_factor=factor
                )
            return self._client

    def __call__(self, registry: Registry, image: ImageRef) -> ScanReport | None:
        if image.digest is None:
            raise RegistryError(f"cannot look up Defender's scan of {image}: expected a digest")
        host = image.registry.lower()
        name = f"{host}/{image.repository}@{image.digest}"
        rows = query_rows(
            self.client,
            self.subscriptions,
            image_query(host, image.repository, image.digest),
            page_size=self.page_size,
            what=f"Defender sub-assessments of {name}",
        )
        if not rows:
            log.info("Defender has not reported on %s yet", name)
            raise NoScanYet(
                f"awaiting Defender for Containers' scan of {name} (no sub-assessments yet)"
            )
        return ScanReport(
            digest=image.digest,
            scanner=SCANNER,
            source=SOURCE,
            scanned_at=scanned_at(rows),
            findings=tuple(
                findings_of(
                    rows, registry_host=host, repository=image.repository, digest=image.digest
                )
            ),
        )


def changed_since(
    subscriptions: Sequence[str],
    since: datetime,
    *,
    env: Mapping[str, str],
    client: Any = None,
    page_size: int = PAGE_SIZE,
) -> list[tuple[str, str, str]]:
    """(registry host, repository, digest) of every image with a sub-assessment generated
    after `since`, each once, sorted: what the `on_scan` timer re-evaluates. The hosts come
    from Azure's data: the caller checks them against the registries it may contact."""
    rows = query_rows(
        client if client is not None else resourcegraph_client(env),
        subscriptions,
        changed_query(since),
        page_size=page_size,
        what=f"Defender sub-assessments changed since {since.isoformat()}",
    )
    return sorted({image_of_row(row) for row in rows})
