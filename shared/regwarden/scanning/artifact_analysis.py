"""Google Artifact Analysis as a scan source (`artifact-analysis`, the default on GAR), and
the lookups the `on_scan` function needs for the `container-analysis-occurrences-v1` stream.

    source = ArtifactAnalysisScanSource(env=os.environ)
    report = source(registry, image)  # a ScanReport, or None while no scan has finished

Occurrences are read with the Grafeas client (google-cloud-containeranalysis depends on
`grafeas`), built directly on the REST transport: `ContainerAnalysisClient
.get_grafeas_client()` always builds gRPC, and `GrafeasClient` takes no client options —
the endpoint goes to `GrafeasRestTransport(host=…)` (whose own default host is empty, not
`containeranalysis.googleapis.com`). The endpoint and credentials come from
`gcp_clients.client_kwargs("containeranalysis", env)` (`REGWARDEN_GCP_ENDPOINT_
CONTAINERANALYSIS`; a loopback http:// stand-in is called anonymously).

For an image `HOST/P/R/IMAGE@sha256:…` (in project P), under `parent=projects/P` with
`resourceUrl="https://HOST/P/R/IMAGE@sha256:…"`:

1. `kind="DISCOVERY"`: none, PENDING or SCANNING → None (the gate holds the image PENDING
   until `scanTimeout`); FINISHED_SUCCESS / COMPLETE → step 2; FINISHED_FAILED,
   FINISHED_UNSUPPORTED or any other status → `ArtifactAnalysisScanFailed` (a
   `VerificationError`, as ECR's and Harbor's failed scans: never read as clean).
2. `kind="VULNERABILITY"`, every page → one `Finding` per package issue
   (`scanning._grafeas.vulnerability_findings` says how each field is read).

A multi-arch index (its children are judged with it, not separately: `Pipeline._settle`):
Artifact Analysis "supports vulnerability scanning for manifest lists, but it is limited to
only the first Linux amd64 image in the list" (Google's "Types of scanning"). So the index's
own DISCOVERY is read first and decides when there is one; when there is none, the index
(read over the registry's data plane) names its first `linux/amd64` image manifest, whose
DISCOVERY and VULNERABILITY occurrences are read instead: the report's `digest` is that
image's and its `note` says so and that the other platforms were not scanned (the verdict's
reason shows it). Its failed or unsupported scan fails the index. An index with no
`linux/amd64` image gets no scan: it is pending until `scanTimeout` like any image without
one, `NoScanYet` saying why. While there is no scan yet, `NoScanYet` names what is awaited.

Calls are retried on 429, 500, 503, 504 and connection failures with exponential backoff
within an overall deadline; what still fails raises `RegistryError` (`AuthError` for 401 and
403), which the evidence layer records as unavailable evidence (verdict ERROR, retried),
never as "no scan". google-cloud libraries are imported on first use.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import AuthError, RegistryError, VerificationError
from ..model import ImageEvent, ScanReport
from ..oci import INDEX_TYPES
from ..reference import ImageRef
from ._grafeas import (
    DISCOVERY,
    EVENT_SOURCE,
    TRIGGER_KINDS,
    VULNERABILITY,
    DiscoveryState,
    OccurrenceNotice,
    discovery_state,
    image_of_resource_uri,
    parse_occurrence_notification,
    resource_url,
    scan_event,
    vulnerability_findings,
)
from ._model import ScanStatus
from ._sources import NoScanYet

if TYPE_CHECKING:
    from ..oci import Descriptor, Manifest
    from ..providers import Registry

__all__ = [
    "DEFAULT_HOST",
    "EVENT_SOURCE",
    "PAGE_SIZE",
    "SCANNER",
    "SOURCE",
    "TRIGGER_KINDS",
    "ArtifactAnalysisScanFailed",
    "ArtifactAnalysisScanSource",
    "DiscoveryState",
    "OccurrenceNotice",
    "grafeas_client",
    "image_of_occurrence",
    "occurrence_events",
    "parse_occurrence_notification",
    "project_of_repository",
    "resource_url",
    "scan_event",
    "scanned_platform",
]

log = logging.getLogger("regwarden.scanning.artifact_analysis")

SCANNER = "artifact-analysis"
SOURCE = "artifact-analysis-occurrences"
DEFAULT_HOST = "containeranalysis.googleapis.com"
PAGE_SIZE = 1000
"""`pageSize` of ListOccurrences (the API's maximum; its default is 20)."""
_SERVICE = "containeranalysis"
SCANNED_PLATFORM = ("linux", "amd64")
"""The one platform of a manifest list Artifact Analysis scans (its first such image)."""

T = TypeVar("T")


class ArtifactAnalysisScanFailed(VerificationError):
    """Artifact Analysis says the scan of this image failed or cannot be done; fail closed."""

    def __init__(self, state: DiscoveryState, *, image: str) -> None:
        super().__init__(
            f"Artifact Analysis scan of {image} did not produce findings: analysisStatus "
            f"{state.analysis_status}" + (f" ({state.detail})" if state.detail else "") + "; "
            "expected FINISHED_SUCCESS (or PENDING/SCANNING while it runs)",
            hint="FINISHED_UNSUPPORTED: the image's OS or packages are not supported by "
            "Artifact Analysis; FINISHED_FAILED: push the image again to rescan it",
        )
        self.state = state
        self.image = image


def scanned_platform(index: Manifest) -> Descriptor | None:
    """The image of `index` Artifact Analysis scans: the first image manifest it lists for
    `linux/amd64` (any variant); None when it lists none (a nested index is not an image)."""
    os_, architecture = SCANNED_PLATFORM
    for entry in index.manifests:
        platform = entry.platform or {}
        if entry.media_type in INDEX_TYPES:
            continue
        if platform.get("os") == os_ and platform.get("architecture") == architecture:
            return entry
    return None


def _platforms(index: Manifest, *, skip: str | None = None) -> list[str]:
    """The platforms `index` lists, as `os/arch[/variant]`, each once, in listed order,
    leaving out the entry of digest `skip` and entries that are no platform's image
    (buildx's attestation manifests say `unknown/unknown`)."""
    seen: dict[str, None] = {}
    for entry in index.manifests:
        platform = entry.platform or {}
        if entry.digest == skip or platform.get("os", "unknown") == "unknown":
            continue
        text = f"{platform.get('os', 'unknown')}/{platform.get('architecture', 'unknown')}"
        if platform.get("variant"):
            text += f"/{platform['variant']}"
        seen.setdefault(text, None)
    return list(seen)


def project_of_repository(repository: str) -> str:
    """The Google Cloud project that holds an Artifact Registry (or gcr.io) image, and its
    occurrences: the first component of `PROJECT/REPO/IMAGE`."""
    project = repository.split("/", 1)[0]
    if "/" not in repository or not project:
        raise RegistryError(
            f"Artifact Analysis: got repository {repository!r}, expected PROJECT/REPO/IMAGE"
        )
    return project


# -- the client -------------------------------------------------------------------------------

_clients: dict[str, Any] = {}
_clients_lock = threading.Lock()


def grafeas_client(env: Mapping[str, str]) -> Any:
    """A `grafeas_v1.GrafeasClient` on the REST transport for the endpoint `env` names
    (Google's own by default), made once per endpoint and shared: its session pools
    connections and the default credentials' token."""
    from .. import gcp_clients

    kwargs = gcp_clients.client_kwargs(_SERVICE, env)
    url = (kwargs.get("client_options") or {}).get("api_endpoint") or f"https://{DEFAULT_HOST}"
    with _clients_lock:
        client = _clients.get(url)
        if client is None:
            client = _clients[url] = _make_client(url, kwargs["credentials"])
        return client


def _make_client(url: str, credentials: Any) -> Any:
    from grafeas.grafeas_v1 import GrafeasClient
    from grafeas.grafeas_v1.services.grafeas.transports import GrafeasRestTransport

    # The transport takes the scheme from the URL (http:// only for a loopback stand-in,
    # which gcp_clients already checked); a bare host would get https.
    transport = GrafeasRestTransport(host=url, credentials=credentials)
    return GrafeasClient(transport=transport)


def _occurrence_dict(occurrence: Any) -> dict[str, Any]:
    """A proto-plus Occurrence as the REST API spells it (camelCase, enums by name, fields at
    their default left out)."""
    result: dict[str, Any] = type(occurrence).to_dict(
        occurrence,
        use_integers_for_enums=False,
        preserving_proto_field_name=False,
        always_print_fields_with_no_presence=False,
    )
    return result


# -- calls ------------------------------------------------------------------------------------


class _Calls:
    """One retry policy and error mapping for every Grafeas call of a source."""

    def __init__(self, *, timeout: float, deadline: float, initial: float, maximum: float) -> None:
        self.timeout = timeout
        self.deadline = deadline
        self.initial = initial
        self.maximum = maximum

    def retry(self) -> Any:
        import requests
        from google.api_core import exceptions, retry

        return retry.Retry(
            predicate=retry.if_exception_type(
                exceptions.TooManyRequests,
                exceptions.InternalServerError,
                exceptions.ServiceUnavailable,
                exceptions.GatewayTimeout,
                exceptions.DeadlineExceeded,
                requests.ConnectionError,
                requests.Timeout,
            ),
            initial=self.initial,
            maximum=self.maximum,
            multiplier=2.0,
            timeout=self.deadline,
        )

    def run(self, what: str, call: Callable[[], T]) -> T:
        """`call()`, its failures as regwarden errors naming `what`."""
        import requests
        from google.api_core import exceptions
        from google.auth import exceptions as auth_exceptions

        try:
            return call()
        except (exceptions.Unauthorized, exceptions.Forbidden) as exc:
            raise AuthError(
                f"{what}: refused by Artifact Analysis: HTTP {exc.code}: {exc.message}",
                status=exc.code,
                hint="the identity needs roles/containeranalysis.occurrences.viewer on the "
                "image's project",
            ) from exc
        except exceptions.GoogleAPICallError as exc:
            code = exc.code if isinstance(exc.code, int) else None
            raise RegistryError(
                f"{what}: Artifact Analysis answered HTTP {code}: {exc.message}", status=code
            ) from exc
        except exceptions.RetryError as exc:
            cause = exc.cause
            raise RegistryError(
                f"{what}: Artifact Analysis kept failing for {self.deadline:g}s: {cause or exc}",
                status=getattr(cause, "code", None)
                if isinstance(getattr(cause, "code", None), int)
                else None,
            ) from exc
        except (requests.RequestException, auth_exceptions.GoogleAuthError) as exc:
            raise RegistryError(f"{what}: {type(exc).__name__}: {exc}") from exc


def _list(
    client: Any, calls: _Calls, *, parent: str, filter_: str, page_size: int, what: str
) -> list[dict[str, Any]]:
    """Every occurrence `filter_` selects, all pages, as REST-shaped dicts."""

    def every() -> list[dict[str, Any]]:
        pager = client.list_occurrences(
            request={"parent": parent, "filter": filter_, "page_size": page_size},
            retry=calls.retry(),
            timeout=calls.timeout,
        )
        found: Iterator[Any] = iter(pager)
        return [_occurrence_dict(o) for o in found]

    return calls.run(what, every)


def _filter(kind: str, url: str) -> str:
    # resource URLs are built from a validated reference: no quote or backslash in them
    return f'kind="{kind}" AND resourceUrl="{url}"'


# -- the scan source --------------------------------------------------------------------------


class ArtifactAnalysisScanSource:
    """`(registry, image) -> ScanReport | None` from Artifact Analysis (module docstring).

    `client`: a GrafeasClient to use (default: `grafeas_client(env)`). `timeout` bounds one
    request, `deadline` one call with its retries (backoff from `retry_initial` doubling up
    to `retry_maximum`).
    """

    def __init__(
        self,
        *,
        env: Mapping[str, str] | None = None,
        client: Any = None,
        page_size: int = PAGE_SIZE,
        timeout: float = 15.0,
        deadline: float = 30.0,
        retry_initial: float = 0.5,
        retry_maximum: float = 8.0,
    ) -> None:
        if page_size < 1:
            raise ValueError(f"page_size: got {page_size}, expected 1 or more")
        self.env: Mapping[str, str] = env if env is not None else {}
        self._client = client
        self.page_size = page_size
        self._calls = _Calls(
            timeout=timeout, deadline=deadline, initial=retry_initial, maximum=retry_maximum
        )

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = grafeas_client(self.env)
        return self._client

    def __call__(self, registry: Registry, image: ImageRef) -> ScanReport | None:
        if image.digest is None:
            raise RegistryError(
                f"cannot look up Artifact Analysis's scan of {image}: expected a digest"
            )
        parent = f"projects/{project_of_repository(image.repository)}"
        name = str(image.with_tag(None))
        url = resource_url(image.registry, image.repository, image.digest)
        scanned = _Scanned(image.digest, url, name=name, label=name)
        state = self._discovery(parent, scanned)
        if state.analysis_status is None:
            # Nothing filed under this digest: if it is an index, its scan is its
            # linux/amd64 image's (module docstring). One read of the manifest, only here.
            manifest = registry.data_plane().get_manifest(image.repository, image.digest)
            if manifest.is_index:
                scanned = _platform_image(image, manifest)
                state = self._discovery(parent, scanned)
        if state.status is ScanStatus.PENDING:
            awaited = state.analysis_status or "no discovery occurrence"
            log.info("Artifact Analysis has no finished scan of %s yet (%s)", scanned.name, awaited)
            if scanned.digest != image.digest:
                raise NoScanYet(f"awaiting Artifact Analysis's scan of {scanned.label} ({awaited})")
            return None
        if state.status is not ScanStatus.SUCCEEDED:
            raise ArtifactAnalysisScanFailed(state, image=scanned.label)
        vulnerabilities = _list(
            self.client,
            self._calls,
            parent=parent,
            filter_=_filter(VULNERABILITY, scanned.url),
            page_size=self.page_size,
            what=f"Artifact Analysis vulnerabilities of {scanned.name}",
        )
        return ScanReport(
            digest=scanned.digest,
            scanner=SCANNER,
            source=SOURCE,
            scanned_at=state.scanned_at,
            findings=tuple(vulnerability_findings(vulnerabilities, resource=scanned.url)),
            note=scanned.note,
        )

    def _discovery(self, parent: str, scanned: _Scanned) -> DiscoveryState:
        discoveries = _list(
            self.client,
            self._calls,
            parent=parent,
            filter_=_filter(DISCOVERY, scanned.url),
            page_size=self.page_size,
            what=f"Artifact Analysis discovery of {scanned.name}",
        )
        return discovery_state(discoveries, resource=scanned.url)


@dataclass(frozen=True, slots=True)
class _Scanned:
    """The image whose occurrences stand for the one judged: itself, or an index's
    linux/amd64 image."""

    digest: str
    url: str
    """Its `resourceUrl`."""
    name: str
    """`HOST/REPOSITORY@DIGEST`."""
    label: str
    """How a reason names it: its name, or which image of which index."""
    note: str = ""
    """The report's note: what was not scanned."""


def _platform_image(image: ImageRef, index: Manifest) -> _Scanned:
    """The image of `index` whose scan stands for it; `NoScanYet` when it has none, since
    no scan will ever come (the image waits out `scanTimeout` like any unscanned one)."""
    assert image.digest is not None
    platform = "/".join(SCANNED_PLATFORM)
    child = scanned_platform(index)
    name = str(image.with_tag(None))
    if child is None:
        listed = ", ".join(_platforms(index)) or "no platform"
        raise NoScanYet(
            f"index {name} lists no {platform} image ({listed}), and Artifact Analysis "
            f"scans only the first {platform} image of a manifest list: no scan will come"
        )
    others = _platforms(index, skip=child.digest)
    not_scanned = f"not scanned: {', '.join(others)}" if others else "it lists no other platform"
    return _Scanned(
        digest=child.digest,
        url=resource_url(image.registry, image.repository, child.digest),
        name=f"{image.registry}/{image.repository}@{child.digest}",
        label=f"the {platform} image {child.digest} of index {name}",
        note=f"Artifact Analysis scanned only this index's {platform} image {child.digest} "
        f"(it scans only the first {platform} image of a manifest list); {not_scanned}",
    )


# -- the occurrence stream --------------------------------------------------------------------


def image_of_occurrence(
    occurrence_name: str,
    *,
    env: Mapping[str, str],
    client: Any = None,
    timeout: float = 15.0,
    deadline: float = 30.0,
) -> str | None:
    """`HOST/P/R/IMAGE@sha256:…` of the image an occurrence is about (for `on_scan`): the
    occurrence is fetched, since a notification names no image. None when its kind cannot
    change a verdict (not VULNERABILITY or DISCOVERY), when it is not about a container
    image by digest, or when it is gone (deleted since the notice: nothing to re-judge).
    Other failures raise `RegistryError` (the delivery is retried).

    The host comes from Google's data, not from regwarden's configuration: the caller
    checks it against the registries it may contact before acting on it."""
    from google.api_core import exceptions

    calls = _Calls(timeout=timeout, deadline=deadline, initial=0.5, maximum=8.0)
    grafeas = client if client is not None else grafeas_client(env)

    def fetch() -> Any:
        try:
            return grafeas.get_occurrence(
                request={"name": occurrence_name}, retry=calls.retry(), timeout=calls.timeout
            )
        except exceptions.NotFound:
            return None

    occurrence = calls.run(f"Artifact Analysis occurrence {occurrence_name}", fetch)
    if occurrence is None:
        log.info("occurrence %s is gone: nothing to re-evaluate", occurrence_name)
        return None
    data = _occurrence_dict(occurrence)
    kind = str(data.get("kind") or "")
    if kind not in TRIGGER_KINDS:
        return None
    return image_of_resource_uri(str(data.get("resourceUri") or ""))


def occurrence_events(data: bytes, message_id: str, *, env: Mapping[str, str]) -> list[ImageEvent]:
    """What `on_scan` (and `regwarden invoke` on an occurrence sample) judges for one
    occurrence notification: the SCANNED event of its image, looked up in Artifact
    Analysis; none when the occurrence cannot change a verdict (another kind, not an image
    by digest, deleted since). The image's host comes from Google's data: the caller
    checks it may contact it before acting."""
    notice = parse_occurrence_notification(data)
    if not notice.triggers:
        log.info("occurrence %s of kind %s changes no verdict", notice.name, notice.kind)
        return []
    image = image_of_occurrence(notice.name, env=env)
    if image is None:
        log.info("occurrence %s names no container image", notice.name)
        return []
    return [scan_event(image, notice, message_id)]
