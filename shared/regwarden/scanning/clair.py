"""Clair v4 as a scan source for the push gate (`clair`, configured on the registry entry:
`registries: [{host, kind, clair: {url, psk: secret://NAME}}]`).

    source = ClairScanSource(url="https://clair.example.com", psk=key)
    report = source(registry, image)   # a ScanReport; NoScanYet while Clair has none

For one image manifest (`{url}` is the configured base):

1. `GET {url}/matcher/api/v1/vulnerability_report/{digest}`: 200 (or the spec's 201) → the
   report (`_clair.parse_vulnerability_report`); 202 → the matcher has not loaded its
   vulnerability data yet (NoScanYet); 404 → Clair has no finished index of it: step 2.
2. `GET {url}/indexer/api/v1/index_report/{digest}`: an index under way (any state but
   `IndexFinished` / `IndexError`) → NoScanYet; otherwise (none, or a failed one) step 3.
3. `POST {url}/indexer/api/v1/index_report` with the Manifest: each layer's blob URL on the
   registry, and as its only header a short-lived Bearer token that can only pull this
   repository, from the registry's own token service (`RegistryClient.pull_token`). A
   registry without a token service (Basic or anonymous access) gets no header: Clair
   fetches with its own registry configuration. The registry's Basic credentials are never
   sent. Clair indexes while the request waits: `IndexFinished` → the report is read once
   more (step 1); `IndexError` → RegistryError (Clair could not index it: ERROR, retried);
   any other state → NoScanYet ("Clair is indexing").

An index (multi-arch) is judged over its children: every platform's image goes through the
steps above (Clair indexes single manifests), the findings are merged (one per
vulnerability, package and version) and the report's note names the platforms. While any
platform has no report, the index has none (NoScanYet naming them).

Auth: with a PSK every request carries `Authorization: Bearer <JWT>`, HS256 over the PSK
(base64-decoded, as Clair's `auth.psk.key` holds it), `iss` "regwarden" (Clair's
`auth.psk.iss` must list it), `iat`/`nbf` now, `exp` within 5 minutes.

Faults: connection failures, 429 and 5xx are retried with backoff (honouring
`Retry-After`), then RegistryError; an index request with no answer within
`index_timeout` is not sent again (RegistryError: the next evaluation finds the index under
way, or done); 401/403 raise AuthError; any other unexpected answer
RegistryError: Clair being unavailable is never "no scan" and never "clean". A missing
report turns into FAILED only by the policy's `scanTimeout` (the gate's clock). Malformed
documents raise ScanFormatError.
"""

from __future__ import annotations

import email.utils
import logging
import random
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, NoReturn

import httpx

from .. import USER_AGENT
from ..errors import AuthError, RegistryError, UsageError
from ..model import ScanReport
from ..oci import Manifest, RegistryClient, error_summary
from ..redact import redact_url
from ..retry import RETRYABLE_STATUS, Backoff, GiveUp, Retries, tally
from ._clair import (
    ClairIndex,
    index_request,
    merge_reports,
    parse_index_report,
    parse_vulnerability_report,
    psk_jwt,
    psk_key,
)
from ._sources import NoScanYet

if TYPE_CHECKING:
    from ..policy import ClairConfig
    from ..providers import Registry
    from ..reference import ImageRef

__all__ = [
    "INDEX_PATH",
    "REPORT_PATH",
    "ClairScanSource",
    "platform_children",
]

log = logging.getLogger("regwarden.scanning.clair")

INDEX_PATH = "/indexer/api/v1/index_report"
REPORT_PATH = "/matcher/api/v1/vulnerability_report"
MAX_RESPONSE_BYTES = 64 * 1024 * 1024
"""Largest answer read (a vulnerability report of a big image is a few MiB)."""
_MAX_ERROR_BYTES = 64 * 1024
_PSK_HINT = (
    "check the secret behind clair.psk (Clair's auth.psk.key, base64) and that Clair's "
    "auth.psk.iss lists 'regwarden'"
)


def platform_children(index: Manifest) -> list[tuple[str, str]]:
    """`(platform, digest)` of each image `index` lists for a platform, each digest once;
    buildx's attestation manifests (`unknown/unknown`) are no platform's image."""
    seen: dict[str, str] = {}
    for entry in index.manifests:
        platform = entry.platform or {}
        if platform.get("os", "unknown") == "unknown" or entry.digest in seen:
            continue
        text = f"{platform.get('os')}/{platform.get('architecture', 'unknown')}"
        if platform.get("variant"):
            text += f"/{platform['variant']}"
        seen[entry.digest] = text
    return [(platform, digest) for digest, platform in seen.items()]


class ClairScanSource:
    """`(registry, image) -> ScanReport` from Clair v4 (see the module docstring); raises
    NoScanYet while Clair has no report."""

    def __init__(
        self,
        *,
        url: str,
        psk: bytes | None = None,
        timeout: float = 15.0,
        index_timeout: float = 300.0,
        max_retries: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 10.0,
        max_retry_after: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if max_retries < 0:
            raise UsageError(f"max_retries: got {max_retries}, expected 0 or more")
        self.url = url.rstrip("/")
        self._psk = psk
        self.timeout = timeout
        self.index_timeout = index_timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_retry_after = max_retry_after
        self._sleep = sleep
        self._transport = transport
        self._clock = clock
        self._random = random.Random()  # noqa: S311  (backoff jitter, not a secret)

    @classmethod
    def from_config(
        cls, config: ClairConfig, *, env: Mapping[str, str], **options: object
    ) -> ClairScanSource:
        """The source for a registry entry's `clair` setting; its `psk` secret is read
        from `env` (`REGWARDEN_SECRET_*`, as every `secret://` is)."""
        from ..policy import resolve_secret

        key: bytes | None = None
        if config.psk is not None:
            name = config.psk.target
            key = psk_key(resolve_secret(name, env), name=name)
        return cls(url=config.url, psk=key, **options)  # type: ignore[arg-type]

    # -- the reader -------------------------------------------------------------------------

    def __call__(self, registry: Registry, image: ImageRef) -> ScanReport:
        if image.digest is None:
            raise RegistryError(f"cannot look up Clair's report of {image}: expected a digest")
        client = registry.data_plane()
        repo = image.repository
        name = f"{image.registry}/{repo}@{image.digest}"
        manifest = client.get_manifest(repo, image.digest)
        with httpx.Client(
            headers={"User-Agent": USER_AGENT},
            timeout=httpx.Timeout(self.timeout),
            follow_redirects=False,
            transport=self._transport,
        ) as http:
            if not manifest.is_index:
                return self._image(http, client, repo, manifest, name)
            children = platform_children(manifest)
            if not children:
                raise NoScanYet(
                    f"index {name} lists no platform's image for Clair to scan: no report will come"
                )
            reports: list[tuple[str, ScanReport]] = []
            waiting: list[str] = []
            for platform, digest in children:
                child = client.get_manifest(repo, digest)
                label = f"the {platform} image {digest} of index {name}"
                try:
                    reports.append((platform, self._image(http, client, repo, child, label)))
                except NoScanYet as exc:  # index the other platforms meanwhile
                    waiting.append(f"{platform}: {exc}")
        if waiting:
            raise NoScanYet(
                f"Clair has no report yet for {len(waiting)} of {len(children)} platforms of "
                f"index {name} ({'; '.join(waiting)})"
            )
        return merge_reports(image.digest, reports)

    def _image(
        self,
        http: httpx.Client,
        client: RegistryClient,
        repo: str,
        manifest: Manifest,
        label: str,
    ) -> ScanReport:
        """The report of one image manifest, asking Clair to index it when it has none."""
        if manifest.is_index:
            raise NoScanYet(f"{label} is itself an index: Clair scans image manifests only")
        digest = manifest.digest
        report = self._report(http, digest, label)
        if report is not None:
            return report
        index = self._index_state(http, digest, label)
        if index is not None and not index.finished and not index.failed:
            raise NoScanYet(f"Clair is indexing {label} (state {index.state})")
        if index is not None and index.finished:
            raise NoScanYet(f"Clair has indexed {label}; its matcher has no report yet")
        index = self._index(http, client, repo, manifest, label)
        if index.failed:
            raise RegistryError(
                f"Clair could not index {label}: state {index.state}"
                f"{f' ({index.err})' if index.err else ''}",
                hint="can Clair fetch the layers from the registry? (with no token service, "
                "Clair's own registry configuration must grant it pull access)",
            )
        if index.finished:
            report = self._report(http, digest, label)
            if report is not None:
                return report
            raise NoScanYet(f"Clair has indexed {label}; its matcher has no report yet")
        raise NoScanYet(f"Clair is indexing {label} (state {index.state})")

    def _report(self, http: httpx.Client, digest: str, label: str) -> ScanReport | None:
        url = f"{self.url}{REPORT_PATH}/{digest}"
        status, headers, body = self._call(http, "GET", url, f"Clair's report of {label}")
        if status in (200, 201):
            return parse_vulnerability_report(
                body, digest=digest, scanned_at=_http_date(headers.get("date"))
            )
        if status == 202:
            raise NoScanYet("Clair's matcher has not loaded its vulnerability data yet")
        if status == 404:
            return None
        self._fail(status, headers, body, "GET", url, f"Clair's report of {label}")

    def _index_state(self, http: httpx.Client, digest: str, label: str) -> ClairIndex | None:
        url = f"{self.url}{INDEX_PATH}/{digest}"
        status, headers, body = self._call(http, "GET", url, f"Clair's index of {label}")
        if status == 200:
            return parse_index_report(body, digest=digest)
        if status == 404:
            return None
        self._fail(status, headers, body, "GET", url, f"Clair's index of {label}")

    def _index(
        self,
        http: httpx.Client,
        client: RegistryClient,
        repo: str,
        manifest: Manifest,
        label: str,
    ) -> ClairIndex:
        token = client.pull_token(repo)
        layers = [
            (d.digest, f"{client.base_url}/v2/{repo}/blobs/{d.digest}") for d in manifest.layers
        ]
        body = index_request(
            manifest.digest, layers, authorization=f"Bearer {token}" if token else None
        )
        log.info(
            "asking Clair to index %s (%d layers, %s)",
            label,
            len(layers),
            "with a pull token" if token else "Clair fetches with its own registry config",
        )
        url = f"{self.url}{INDEX_PATH}"
        what = f"Clair indexing {label}"
        status, headers, answer = self._call(http, "POST", url, what, content=body)
        if status in (200, 201):
            return parse_index_report(answer, digest=manifest.digest)
        self._fail(status, headers, answer, "POST", url, what)

    # -- HTTP -------------------------------------------------------------------------------

    def _call(
        self,
        http: httpx.Client,
        method: str,
        url: str,
        what: str,
        *,
        content: bytes | None = None,
    ) -> tuple[int, httpx.Headers, bytes]:
        """Send with retries on connection failures, 429 and 5xx; return the final answer
        (any other status is the caller's to read)."""
        where = redact_url(url)
        tries = Retries(  # a GET, or an index request Clair deduplicates by digest
            attempts=self.max_retries + 1,
            backoff=Backoff(self.backoff, self.max_backoff),
            max_retry_after=self.max_retry_after,
            sleep=self._sleep,
            rand=self._random.random,
        )
        timeout = self.index_timeout if method == "POST" else self.timeout
        while True:
            headers = {"Accept": "application/json"}
            if content is not None:
                headers["Content-Type"] = "application/json"
            if self._psk is not None:
                headers["Authorization"] = "Bearer " + psk_jwt(self._psk, now=self._clock())
            try:
                status, answer_headers, body = self._send(
                    http, method, url, headers, content, timeout, what
                )
            except httpx.ReadTimeout as exc:
                if method == "POST":  # Clair is indexing as we wait: asking again starts over
                    raise RegistryError(
                        f"{what}: {method} {where}: Clair did not answer within "
                        f"{timeout:g} s (index_timeout)",
                        hint="a large image takes Clair a while to index; the next attempt "
                        "finds the index under way or done",
                    ) from exc
                wait = tries.next_wait()
                if isinstance(wait, GiveUp):
                    raise RegistryError(
                        f"{what}: {method} {where}: {type(exc).__name__}: "
                        f"{exc or 'no answer'} (after {tally(tries.attempts)})",
                        hint="is Clair reachable at the registry entry's clair.url?",
                    ) from exc
                tries.pause(wait)
                continue
            except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
                wait = tries.next_wait()
                if isinstance(wait, GiveUp):
                    raise RegistryError(
                        f"{what}: {method} {where}: {type(exc).__name__}: "
                        f"{exc or 'connection failed'} (after {tally(tries.attempts)})",
                        hint="is Clair reachable at the registry entry's clair.url?",
                    ) from exc
                log.debug("%s %s: %s; retry %d in %.2fs", method, url, exc, tries.attempts, wait)
                tries.pause(wait)
                continue
            except httpx.HTTPError as exc:
                raise RegistryError(
                    f"{what}: {method} {where}: {type(exc).__name__}: {exc}"
                ) from exc
            if status not in RETRYABLE_STATUS:
                return status, answer_headers, body
            wait = tries.next_wait(tries.retry_after(answer_headers.get("retry-after")))
            if isinstance(wait, GiveUp):
                summary = error_summary(body, answer_headers.get("content-type"))
                raise RegistryError(
                    f"{what}: {method} {where}: got HTTP {status}"
                    f"{f' ({summary})' if summary else ''}; {wait.reason()}",
                    status=status,
                )
            log.debug(
                "%s %s: HTTP %d; retry %d in %.2fs", method, url, status, tries.attempts, wait
            )
            tries.pause(wait)

    def _send(
        self,
        http: httpx.Client,
        method: str,
        url: str,
        headers: dict[str, str],
        content: bytes | None,
        timeout: float,
        what: str,
    ) -> tuple[int, httpx.Headers, bytes]:
        where = redact_url(url)
        with http.stream(
            method, url, headers=headers, content=content, timeout=httpx.Timeout(timeout)
        ) as response:
            status = response.status_code
            limit = MAX_RESPONSE_BYTES if status in (200, 201) else _MAX_ERROR_BYTES
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > limit:
                    if status in (200, 201):
                        raise RegistryError(
                            f"{what}: {method} {where}: got more than {limit} bytes, expected "
                            f"at most {limit}"
                        )
                    break  # an error body: its start says what went wrong
                chunks.append(chunk)
            return status, response.headers, b"".join(chunks)

    def _fail(
        self,
        status: int,
        headers: httpx.Headers,
        body: bytes,
        method: str,
        url: str,
        what: str,
    ) -> NoReturn:
        summary = error_summary(body, headers.get("content-type"))
        detail = f"{method} {redact_url(url)}: got HTTP {status}" + (
            f" ({summary})" if summary else ""
        )
        if status in (401, 403):
            who = "its JWT" if self._psk is not None else "no JWT (clair.psk is unset)"
            raise AuthError(f"{what}: Clair refused {who}; {detail}", status=status, hint=_PSK_HINT)
        raise RegistryError(
            f"{what}: {detail}; expected Clair v4's API at {self.url}", status=status
        )


def _http_date(value: str | None) -> datetime | None:
    """The answer's `Date` (when Clair made the report), or None when absent or bad."""
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
