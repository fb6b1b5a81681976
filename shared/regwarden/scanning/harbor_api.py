"""Harbor's own API as a scan source for the push gate.

    source = HarborScanSource()
    report = source(registry, image)   # a ScanReport, or None while Harbor has no scan yet

Two `GET`s on Harbor's v2.0 API (`{api}` is `<scheme>://<registry host>/api/v2.0`, or the
`api_base` override, env `REGWARDEN_HARBOR_API`):

1. `{api}/projects/{project}/repositories/{repository}/artifacts/{digest}?with_scan_overview=true`
   → the artifact's `scan_overview`, read with `parse_harbor_overview`:
   no vulnerability report yet, `Pending`, `Running` or `Scheduled` → None (the gate holds
   the image as PENDING until `scanTimeout`); `Error` or `Stopped` → `HarborScanFailed`
   (fail closed: a failed scan never reads as a clean one); `Success` → step 2.
2. `.../additions/vulnerabilities` → `{<report media type>: <report>}`, read with
   `parse_harbor_report` (the first of `VULN_REPORT_TYPES` present).

`{repository}` is the repository name without its project, URL-encoded twice
(`team/app` → `team%252Fapp`): Harbor decodes the path once to route it and once more in
the handler. Both requests send `X-Accept-Vulnerabilities` listing `VULN_REPORT_TYPES`.

Auth is HTTP Basic with the registry's credentials, found the way docker/podman find them
(`Credentials.from_docker_config`), over the registry's own scheme (https unless the host
is loopback or `insecure`). Requests time out, are retried with backoff on 429/5xx and
transport failures (honouring `Retry-After`), and never follow redirects. 401/403 raise
`AuthError`; other failures `RegistryError`, never `NotFound`: an artifact the registry
serves but Harbor's API does not know means a misconfiguration, not a deleted image.
Malformed answers raise `ScanFormatError`.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn
from urllib.parse import quote

import httpx

from .. import USER_AGENT
from ..errors import AuthError, RegistryError, Unsupported, UsageError, VerificationError
from ..jsondoc import load_json
from ..model import ScanReport
from ..oci import Credentials, error_summary, is_loopback_host
from ..redact import redact_url
from ..reference import ImageRef
from ..retry import RETRYABLE_STATUS, Backoff, GiveUp, Retries, tally
from ._common import checked_digest, node_digest
from ._errors import ScanFormatError
from ._harbor import VULN_REPORT_TYPES, parse_harbor_overview, parse_harbor_report
from ._model import HarborScanOverview, ScanStatus

if TYPE_CHECKING:
    from ..providers import Registry

__all__ = [
    "API_PATH",
    "ENV_API_BASE",
    "MAX_RESPONSE_BYTES",
    "HarborArtifactScan",
    "HarborScanFailed",
    "HarborScanSource",
    "api_base_url",
    "artifact_path",
    "parse_artifact_scan",
    "parse_vulnerabilities_addition",
]

log = logging.getLogger("regwarden.scanning.harbor")

API_PATH = "/api/v2.0"
ENV_API_BASE = "REGWARDEN_HARBOR_API"
"""Environment variable the runtime reads for `HarborScanSource(api_base=...)`."""
MAX_RESPONSE_BYTES = 64 * 1024 * 1024
"""Largest answer read into memory (a report of a big image is a few MiB)."""
_MAX_ERROR_BYTES = 64 * 1024
_ARTIFACT_LABEL = "Harbor artifact"
_ADDITION_LABEL = "Harbor vulnerabilities addition"


class HarborScanFailed(VerificationError):
    """Harbor's scan of this artifact failed or was stopped: no report will come; fail closed."""

    def __init__(self, scan: HarborArtifactScan, *, image: str) -> None:
        report_id = scan.overview.report_id if scan.overview is not None else None
        super().__init__(
            f"Harbor scan of {image} did not produce a report: got scan_status "
            f"{scan.harbor_status!r}{f' (report {report_id})' if report_id else ''}, "
            "expected 'Success' (or 'Pending'/'Running' while it runs)",
            hint="rescan the artifact in Harbor (Scan, or POST .../artifacts/{digest}/scan)",
        )
        self.scan = scan
        self.image = image


@dataclass(frozen=True, slots=True)
class HarborArtifactScan:
    """How Harbor's vulnerability scan of one artifact stands."""

    digest: str
    harbor_status: str | None
    """`scan_status` exactly as Harbor sent it; None when the artifact has no vulnerability
    scan at all (never scanned, or only an SBOM)."""
    overview: HarborScanOverview | None

    @property
    def status(self) -> ScanStatus | None:
        """SUCCEEDED, PENDING, FAILED or STOPPED; None when there is no scan."""
        return None if self.overview is None else self.overview.status


# -- pure ---------------------------------------------------------------------------------------


def artifact_path(repository: str, digest: str) -> str:
    """`/projects/{project}/repositories/{repository}/artifacts/{digest}` for Harbor's API.

    The project is the first path component; the rest is URL-encoded twice, so
    `library/team/app` becomes `/projects/library/repositories/team%252Fapp/...`.
    Raises Unsupported for a repository without a project (Harbor cannot hold one).
    """
    project, sep, rest = repository.partition("/")
    if not sep or not project or not rest:
        raise Unsupported(
            f"Harbor repository: got {repository!r}, expected <project>/<repository> "
            "(every Harbor repository lives in a project)"
        )
    checked = checked_digest(digest, what="image digest")
    name = quote(quote(rest, safe=""), safe="")
    return f"/projects/{quote(project, safe='')}/repositories/{name}/artifacts/{checked}"


def api_base_url(value: str, *, insecure: bool = False) -> str:
    """Normalise an API base: `https://harbor.example` or `.../api/v2.0` → `.../api/v2.0`.

    Plain http only for loopback hosts or with `insecure`: the requests carry credentials.
    """
    text = value.strip().rstrip("/")
    scheme, sep, rest = text.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in ("http", "https"):
        raise UsageError(
            f"Harbor API base ({ENV_API_BASE}): got {value!r}, expected "
            "https://host[:port][/api/v2.0] (or http:// for a loopback host)"
        )
    host = rest.split("/", 1)[0]
    if not host or any(c.isspace() for c in text):
        raise UsageError(f"Harbor API base ({ENV_API_BASE}): got {value!r}, expected a host")
    if scheme == "http" and not (insecure or is_loopback_host(host)):
        raise UsageError(
            f"refusing plain HTTP to non-loopback Harbor API {host!r}",
            hint="use https, or run with --insecure if you really mean it",
        )
    return text if text.endswith(API_PATH) else text + API_PATH


def parse_artifact_scan(data: bytes, *, digest: str) -> HarborArtifactScan:
    """Read `GET .../artifacts/{digest}?with_scan_overview=true` (a Harbor `Artifact`).

    The artifact's `digest`, when present, must be `digest`. A missing, null or empty
    `scan_overview`, or one without a vulnerability report, means no scan yet.
    """
    checked = checked_digest(digest, what="digest argument")
    root = load_json(data, label=_ARTIFACT_LABEL, error=ScanFormatError)
    root.mapping()
    got = root.field("digest")
    if got.present and node_digest(got) != checked:
        got.fail(f"the requested digest {checked}")
    overview_node = root.field("scan_overview")
    if not overview_node.present:
        return HarborArtifactScan(checked, None, None)
    overview = parse_harbor_overview(
        dict(overview_node.mapping()), digest=checked, where="scan_overview"
    )
    if overview is None:
        return HarborArtifactScan(checked, None, None)
    raw = next(overview_node.field(t) for t in VULN_REPORT_TYPES if overview_node.has(t))
    return HarborArtifactScan(checked, raw.field("scan_status").text(), overview)


def parse_vulnerabilities_addition(data: bytes, *, digest: str) -> ScanReport:
    """Read `GET .../additions/vulnerabilities`: `{<report media type>: <report>}`.

    Takes the first of `VULN_REPORT_TYPES` present; an answer with none of them (Harbor
    sends `{}` when it has no report) is an error here, since the caller asks only after
    the overview said the scan succeeded.
    """
    checked = checked_digest(digest, what="digest argument")
    root = load_json(data, label=_ADDITION_LABEL, error=ScanFormatError)
    keys = list(root.mapping())
    for media_type in VULN_REPORT_TYPES:
        if root.has(media_type):
            node = root.field(media_type)
            node.mapping()
            return parse_harbor_report(json.dumps(node.value).encode(), digest=checked)
    root.fail(
        "an object keyed by one of: " + "; ".join(repr(t) for t in VULN_REPORT_TYPES),
        got=f"keys {keys}" if keys else "an empty object (no report)",
    )


# -- I/O ----------------------------------------------------------------------------------------


class HarborScanSource:
    """`(registry, image) -> ScanReport | None` from Harbor's API (see the module docstring).

    `api_base` overrides where Harbor's API is (`https://harbor.example` or
    `https://harbor.example/api/v2.0`); by default it is the registry's own scheme and host.
    `credentials` override the lookup in docker/podman auth files (read through `env`).
    """

    def __init__(
        self,
        *,
        api_base: str | None = None,
        credentials: Credentials | None = None,
        env: Mapping[str, str] | None = None,
        insecure: bool = False,
        timeout: float = 15.0,
        max_retries: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 10.0,
        max_retry_after: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if max_retries < 0:
            raise UsageError(f"max_retries: got {max_retries}, expected 0 or more")
        self.api_base = api_base_url(api_base, insecure=insecure) if api_base else None
        self.credentials = credentials
        self.env = env
        self.insecure = insecure
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_retry_after = max_retry_after
        self._sleep = sleep
        self._transport = transport
        self._random = random.Random()  # noqa: S311  (backoff jitter, not a secret)

    def __call__(self, registry: Registry, image: ImageRef) -> ScanReport | None:
        if image.digest is None:
            raise RegistryError(f"cannot look up Harbor's scan of {image}: expected a digest")
        base = self.api_base or api_base_url(registry.data_plane().base_url, insecure=self.insecure)
        url = base + artifact_path(image.repository, image.digest)
        credentials = self._credentials(registry.host)
        auth = None
        if credentials is not None and credentials.username and credentials.password is not None:
            auth = httpx.BasicAuth(credentials.username, credentials.password)
        headers = {
            "Accept": "application/json",
            "X-Accept-Vulnerabilities": ", ".join(VULN_REPORT_TYPES),
        }
        with httpx.Client(
            auth=auth,
            headers={"User-Agent": USER_AGENT, **headers},
            timeout=httpx.Timeout(self.timeout),
            follow_redirects=False,
            transport=self._transport,
        ) as http:
            body = self._get(
                http, url, {"with_scan_overview": "true"}, f"Harbor artifact {image}", credentials
            )
            scan = parse_artifact_scan(body, digest=image.digest)
            if scan.status is None or scan.status is ScanStatus.PENDING:
                log.info("Harbor has no finished scan of %s yet (%s)", image, scan.harbor_status)
                return None
            if scan.status is not ScanStatus.SUCCEEDED:
                raise HarborScanFailed(scan, image=str(image))
            body = self._get(
                http,
                url + "/additions/vulnerabilities",
                None,
                f"Harbor vulnerability report of {image}",
                credentials,
            )
        report = parse_vulnerabilities_addition(body, digest=image.digest)
        summary = scan.overview.summary if scan.overview is not None else None
        if report.scanned_at is None and summary is not None and summary.scanned_at is not None:
            report = report.model_copy(update={"scanned_at": summary.scanned_at})
        return report

    def _credentials(self, host: str) -> Credentials | None:
        if self.credentials is not None:
            return self.credentials
        return Credentials.from_docker_config(host, environ=self.env)

    def _get(
        self,
        http: httpx.Client,
        url: str,
        params: dict[str, str] | None,
        what: str,
        credentials: Credentials | None,
    ) -> bytes:
        where = redact_url(url)  # for messages: a query may carry a signature
        tries = Retries(  # a GET: idempotent, every failure below may be retried
            attempts=self.max_retries + 1,
            backoff=Backoff(self.backoff, self.max_backoff),
            max_retry_after=self.max_retry_after,
            sleep=self._sleep,
            rand=self._random.random,
        )
        while True:
            try:
                status, headers, body = self._send(http, url, params, what)
            except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
                wait = tries.next_wait()
                if isinstance(wait, GiveUp):
                    raise RegistryError(
                        f"{what}: GET {where}: {type(exc).__name__}: {exc or 'connection failed'} "
                        f"(after {tally(tries.attempts)})",
                        hint=f"is Harbor's API reachable? ({ENV_API_BASE} overrides where it is)",
                    ) from exc
                log.debug("GET %s: %s; retry %d in %.2fs", url, exc, tries.attempts, wait)
                tries.pause(wait)
                continue
            except httpx.HTTPError as exc:
                raise RegistryError(f"{what}: GET {where}: {type(exc).__name__}: {exc}") from exc
            if status == 200:
                return body
            if status not in RETRYABLE_STATUS:
                self._fail(status, headers, body, url, what, credentials)
            wait = tries.next_wait(tries.retry_after(headers.get("retry-after")))
            if isinstance(wait, GiveUp):
                summary = error_summary(body, headers.get("content-type"))
                raise RegistryError(
                    f"{what}: GET {where}: got HTTP {status}"
                    f"{f' ({summary})' if summary else ''}; {wait.reason()}",
                    status=status,
                )
            log.debug("GET %s: HTTP %d; retry %d in %.2fs", url, status, tries.attempts, wait)
            tries.pause(wait)

    def _send(
        self, http: httpx.Client, url: str, params: dict[str, str] | None, what: str
    ) -> tuple[int, httpx.Headers, bytes]:
        where = redact_url(url)
        with http.stream("GET", url, params=params) as response:
            status = response.status_code
            limit = MAX_RESPONSE_BYTES if status == 200 else _MAX_ERROR_BYTES
            declared = response.headers.get("content-length", "")
            if status == 200 and declared.isdigit() and int(declared) > limit:
                raise RegistryError(
                    f"{what}: GET {where}: got a {declared}-byte answer, expected at most {limit}"
                )
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > limit:
                    if status == 200:
                        raise RegistryError(
                            f"{what}: GET {where}: got more than {limit} bytes, expected at most "
                            f"{limit}"
                        )
                    break  # an error body: the start is enough to say what went wrong
                chunks.append(chunk)
            return status, response.headers, b"".join(chunks)

    def _fail(
        self,
        status: int,
        headers: httpx.Headers,
        body: bytes,
        url: str,
        what: str,
        credentials: Credentials | None,
    ) -> NoReturn:
        summary = error_summary(body, headers.get("content-type"))
        detail = f"GET {redact_url(url)}: got HTTP {status}" + (f" ({summary})" if summary else "")
        host = httpx.URL(url).netloc.decode()
        if status in (401, 403):
            if credentials is None:
                who = "anonymous access was refused (no credentials found for the registry)"
            elif credentials.username:
                who = f"credentials for user {credentials.username!r} were refused"
            else:
                who = "no usable credentials (an identity token cannot do Basic auth)"
            raise AuthError(
                f"{what}: {who} by Harbor at {host}; {detail}",
                status=status,
                hint="log in to the registry with a Harbor user or robot account that can "
                "read the project (docker login), expected Basic auth to work",
            )
        if status == 404:
            raise RegistryError(
                f"{what}: Harbor's API does not know it; {detail}",
                status=status,
                hint=f"is this registry a Harbor, and is its API where regwarden looks? "
                f"({ENV_API_BASE} overrides it)",
            )
        raise RegistryError(f"{what}: {detail}; expected HTTP 200", status=status)
