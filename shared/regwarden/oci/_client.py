"""`RegistryClient`: a lean, thread-safe, synchronous OCI Distribution client on httpx."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import ipaddress
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import NoReturn
from urllib.parse import urljoin

import httpx

from .. import USER_AGENT, observe
from ..errors import (
    AuthError,
    DeadlineExceeded,
    DigestMismatch,
    InvalidReference,
    LimitExceeded,
    NotFound,
    RegistryError,
    Unsupported,
    UsageError,
)
from ..redact import redact_text, redact_url
from ..reference import is_digest, validate_digest
from ..retry import RETRYABLE_STATUS, Backoff, GiveUp, Retries, may_replay, tally
from ._auth import Authenticator
from ._credentials import Credentials
from ._fanout import gather
from ._http import error_codes, error_summary, parse_next_link
from ._media import (
    ALL_MANIFEST_TYPES,
    DOCKER_FOREIGN_LAYER,
    OCI_INDEX,
)
from ._models import Descriptor, Manifest, compute_digest, index_of, referrers_tag
from ._transport import DeadlineTransport, deadline_within
from ._tree import MAX_INDEX_CHILDREN, IndexLimits, distinct_children, walk_index

log = logging.getLogger("regwarden.oci")

_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DEFAULT_ACCEPT = ", ".join(ALL_MANIFEST_TYPES)
#: Registries must accept manifests up to 4 MiB; refuse to buffer anything larger.
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
#: Tag and catalog pages and token responses: the most read into memory.
MAX_JSON_BYTES = 8 * 1024 * 1024
#: An image config (labels, history): the most read into memory.
MAX_CONFIG_BYTES = 8 * 1024 * 1024
#: Any other blob read into memory (signature payloads, attestations). Layers are never
#: read whole: `copy_blob` streams them.
MAX_BLOB_BYTES = 64 * 1024 * 1024
#: Every call (connect, headers, body, retries, a token fetch) ends within this by default.
DEFAULT_DEADLINE = 60.0
#: A blob upload or a streamed blob copy ends within this by default.
DEFAULT_BLOB_DEADLINE = 900.0
#: What is kept of a body nobody parses (an error's, a PUT's answer): enough to summarise.
_SMALL_BODY = 64 * 1024
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_MAX_REDIRECTS = 5
#: A timeout this close to the deadline is the deadline's doing, not the peer's.
_LATE = 0.05
_HUB_ALIASES = frozenset({"docker.io", "index.docker.io"})
_OK = frozenset({200, 201, 202, 204})


class _TransportFailure(RegistryError):
    """The request never got an HTTP answer (connection refused, reset, timeout)."""


def is_loopback_host(host: str) -> bool:
    """True for `localhost`, 127.0.0.0/8 and ::1, with or without a port or brackets."""
    name = host
    if name.startswith("["):
        name = name[1 : name.find("]")] if "]" in name else name[1:]
    elif name.count(":") == 1:
        name = name.split(":", 1)[0]
    name = name.split("%", 1)[0].lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _base_url(host: str, insecure: bool) -> tuple[str, str]:
    """(`scheme://host[:port]`, `host[:port]`) for what the user passed as `host`."""
    text = host.strip().rstrip("/")
    scheme: str | None = None
    if "://" in text:
        scheme, text = text.split("://", 1)
        scheme = scheme.lower()
        if scheme not in ("http", "https"):
            raise UsageError(f"registry URL scheme: got {scheme!r}, expected 'https' or 'http'")
        if "/" in text:
            raise UsageError(
                f"registry host: got {host!r} with a path, expected scheme://host[:port]"
            )
    if not text or "/" in text or any(c.isspace() for c in text):
        raise UsageError(f"registry host: got {host!r}, expected host[:port]")
    if text.lower() in _HUB_ALIASES:
        text = "registry-1.docker.io"
    plain_ok = insecure or is_loopback_host(text)
    if scheme == "http" and not plain_ok:
        raise UsageError(
            f"refusing plain HTTP to non-loopback registry {text!r}",
            hint="use https, or pass insecure=True (--insecure) if you really mean it",
        )
    if scheme is None:
        scheme = "http" if plain_ok else "https"
    return f"{scheme}://{text}", text


def _check_repository(repo: str) -> str:
    if not _REPOSITORY.fullmatch(repo) or len(repo) > 255:
        raise InvalidReference(
            repo,
            "repository must be lowercase path components separated by '/' "
            "(letters, digits and single . _ __ - separators)",
        )
    return repo


def _check_reference(reference: str) -> str:
    if is_digest(reference):
        return validate_digest(reference)
    if not _TAG.fullmatch(reference):
        raise InvalidReference(reference, "expected a tag ([A-Za-z0-9_][A-Za-z0-9_.-]{0,127})")
    return reference


def _pull(repo: str) -> tuple[str, ...]:
    return (f"repository:{repo}:pull",)


def _push(repo: str) -> tuple[str, ...]:
    return (f"repository:{repo}:pull,push",)


class RegistryClient:
    """Talks the OCI Distribution API to one registry host. Safe to share between threads.

    One pooled `httpx.Client` (HTTP/1.1 keep-alive) carries every request. Auth follows
    the registry's `WWW-Authenticate` challenge (anonymous, Basic, Bearer token service).
    Reads are retried with exponential backoff and jitter on 429/5xx and connection errors,
    honouring `Retry-After`; every manifest and blob read is checked against its digest.

    Bounds, each ending in an error rather than a stuck worker or a swollen process:
    every call ends within `deadline` seconds (blob uploads and streamed copies within
    `blob_deadline`), however slowly the registry answers (DeadlineExceeded); bodies are
    read against their caps as they arrive (`MAX_MANIFEST_BYTES`, `MAX_JSON_BYTES`, a
    blob read's `max_bytes`) and never buffered past them (LimitExceeded); an index tree
    is read whole, within `max_index_children` manifests and `MAX_INDEX_DEPTH` levels,
    before a copy writes anything (LimitExceeded). Credentials go to this host and to the
    token realm its own challenge names, nowhere else: a redirect to another host (blob
    storage) is followed without them, and a challenge from there is refused.
    """

    def __init__(
        self,
        host: str,
        *,
        credentials: Credentials | None = None,
        insecure: bool = False,
        transport: httpx.BaseTransport | None = None,
        max_retries: int = 4,
        backoff: float = 0.2,
        timeout: float = 30.0,
        max_connections: int = 64,
        max_backoff: float = 10.0,
        max_retry_after: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
        user_agent: str = USER_AGENT,
        on_retry: Callable[[int | None, float], None] | None = None,
        deadline: float = DEFAULT_DEADLINE,
        blob_deadline: float = DEFAULT_BLOB_DEADLINE,
        max_index_children: int = MAX_INDEX_CHILDREN,
    ) -> None:
        if max_retries < 0:
            raise UsageError(f"max_retries: got {max_retries}, expected 0 or more")
        for name, seconds in (("deadline", deadline), ("blob_deadline", blob_deadline)):
            if not seconds > 0:
                raise UsageError(f"{name}: got {seconds}, expected a number of seconds > 0")
        self.deadline = deadline
        self.blob_deadline = blob_deadline
        self.index_limits = IndexLimits(max_children=max_index_children)
        self._base, self.host = _base_url(host, insecure)
        self.insecure = insecure
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_retry_after = max_retry_after
        self._sleep = sleep
        self.on_retry = on_retry
        """Called as `on_retry(status, delay)` before each retry sleep: the HTTP status
        (429, 5xx) or None for a transport failure. Callers use it to see throttling (an
        executor slowing down on 429); it must not raise. Assignable after construction."""
        self._random = random.Random()  # noqa: S311  (backoff jitter, not a secret)
        limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        self.timeout = timeout
        self._http = httpx.Client(
            transport=transport if transport is not None else DeadlineTransport(limits=limits),
            limits=limits,
            timeout=httpx.Timeout(timeout),
            # Bodies are read against their caps as they arrive: no compressed encoding,
            # whose few bytes could inflate past a cap in one chunk.
            headers={"User-Agent": user_agent, "Accept-Encoding": "identity"},
            follow_redirects=False,
        )
        self._credentials = credentials
        self._auth = Authenticator(
            self.host, credentials, self._token_send, check_realm=self._check_realm
        )
        self._referrers_api: bool | None = None
        self._referrers_probe = threading.Lock()

    @property
    def base_url(self) -> str:
        return self._base

    # -- plumbing --------------------------------------------------------------------------

    def _check_realm(self, realm: str) -> None:
        url = httpx.URL(realm)
        if url.scheme == "https":
            return
        if url.scheme == "http" and (self.insecure or is_loopback_host(url.netloc.decode())):
            return
        raise AuthError(
            f"token realm {realm!r}: got {url.scheme or 'no'} scheme for a non-loopback host, "
            "expected https; refusing to send credentials in the clear",
        )

    def _token_send(
        self,
        method: str,
        url: str,
        params: list[tuple[str, str]],
        form: dict[str, str] | None,
        authorization: str | None,
    ) -> httpx.Response:
        headers = {"Authorization": authorization} if authorization else None
        response, _ = self._exchange(
            method,
            url,
            scopes=None,
            headers=headers,
            params=params or None,
            data=form,
            retry=True,
            limit=MAX_JSON_BYTES,
            what=f"token service {redact_url(url)}",
        )
        return response

    def _ours(self, url: str) -> bool:
        """Whether `url` is on this registry (same scheme, host and port)."""
        return url.startswith(self._base + "/")

    def _exchange(
        self,
        method: str,
        url: str,
        *,
        scopes: tuple[str, ...] | None,
        headers: dict[str, str] | None = None,
        content: bytes | Iterator[bytes] | None = None,
        params: list[tuple[str, str]] | None = None,
        data: dict[str, str] | None = None,
        retry: bool = True,
        follow_redirects: bool = False,
        limit: int | None = None,
        what: str | None = None,
        stream: bool = False,
        budget: float | None = None,
    ) -> tuple[httpx.Response, int]:
        """Send with auth, bounded retries and redirects; return (response, attempts made).

        Everything — attempts, pauses between them, redirects, a token fetch, the body —
        ends within `budget` seconds (the client's `deadline` by default), else
        DeadlineExceeded. The body is read here as it arrives: a success's up to `limit`
        bytes (LimitExceeded past it; `what` names the body), or, with `limit=None` and for
        every error answer, its first 64 KiB for messages. `stream=True` leaves a 200's
        body unread: the caller reads and closes it within its own `deadline_within`.

        `scopes=None` means "no registry auth" (token service calls, foreign hosts).
        With `retry=False` only failures that provably sent nothing are retried; a body
        given as an iterator is sent once (no retry, no answer to a challenge).
        `follow_redirects`: a redirect to another host is followed without credentials,
        and a challenge from there fails instead of being answered.
        """
        resendable = content is None or isinstance(content, bytes)
        seconds = self.deadline if budget is None else budget
        with deadline_within(seconds) as until:
            if scopes is not None and not self._ours(url):
                scopes = None  # never hand our credentials to another host
            authorization = self._auth.authorization(scopes) if scopes is not None else None
            challenged = False
            tries = self._retries(until)
            hops = 0
            while True:
                send_headers = dict(headers) if headers else {}
                if authorization is not None:
                    send_headers["Authorization"] = authorization
                try:
                    request = self._http.build_request(
                        method,
                        url,
                        headers=send_headers,
                        content=content,
                        params=tuple(params) if params else None,
                        data=data,
                        timeout=self._timeout(until, method, url, seconds),
                    )
                    started = time.monotonic()
                    try:
                        response = self._http.send(request, stream=True)
                    except httpx.HTTPError as exc:
                        _report(request, started, failure=type(exc).__name__)
                        raise
                    _report(request, started, status=response.status_code)
                    if not (stream and response.status_code == 200):
                        body = self._read(response, limit, what, until, seconds)
                        response = _with_body(response, body)
                except (
                    httpx.TimeoutException,
                    httpx.NetworkError,
                    httpx.RemoteProtocolError,
                ) as exc:
                    if until - time.monotonic() < _LATE:
                        raise self._late(method, url, seconds) from exc
                    if may_replay(idempotent=retry, failure=exc):
                        wait = tries.next_wait()
                        if not isinstance(wait, GiveUp):
                            self._pause(tries, wait, None, exc, method, url, seconds)
                            continue
                    raise _TransportFailure(
                        f"{method} {redact_url(url)}: {type(exc).__name__}: "
                        f"{redact_text(str(exc)) or 'connection failed'} "
                        f"(after {tally(tries.attempts)})",
                        hint=f"is the registry at {self._base} reachable?",
                    ) from exc
                except httpx.HTTPError as exc:
                    raise RegistryError(
                        f"{method} {redact_url(url)}: {type(exc).__name__}: {redact_text(str(exc))}"
                    ) from exc
                status = response.status_code
                location = response.headers.get("location")
                if follow_redirects and status in _REDIRECTS and location:
                    hops += 1
                    url = self._redirect(method, url, str(response.request.url), location, hops)
                    params = None  # the Location is the whole target
                    if scopes is not None and not self._ours(url):
                        # Blob storage, a CDN, a pre-signed URL: never our credentials.
                        scopes, authorization = None, None
                    continue
                if status == 401 and hops and not self._ours(url):
                    there = httpx.URL(url).netloc.decode()
                    raise RegistryError(
                        f"{method} {redact_url(url)}: {there} asked for credentials "
                        f"(HTTP 401) after {self.host} redirected there; regwarden sends "
                        f"{self.host}'s credentials only to {self.host} and the token service "
                        "its own challenge names",
                        status=401,
                    )
                if status == 401 and scopes is not None and not challenged and resendable:
                    challenged = True
                    renewed = self._auth.challenge(
                        response.headers.get_list("www-authenticate"), scopes, authorization
                    )
                    if renewed is not None:
                        authorization = renewed
                        continue
                    return response, tries.attempts
                if (
                    status in RETRYABLE_STATUS
                    and resendable
                    and may_replay(idempotent=retry, failure=None)
                ):
                    wait = tries.next_wait(tries.retry_after(response.headers.get("retry-after")))
                    if isinstance(wait, GiveUp):
                        summary = error_summary(
                            response.content, response.headers.get("content-type")
                        )
                        raise RegistryError(
                            f"{method} {redact_url(url)}: got HTTP {status}"
                            f"{f' ({summary})' if summary else ''}; {wait.reason()}",
                            status=status,
                        )
                    self._pause(tries, wait, status, f"HTTP {status}", method, url, seconds)
                    continue
                return response, tries.attempts

    def _timeout(self, until: float, method: str, url: str, seconds: float) -> httpx.Timeout:
        """httpx's per-operation timeout, never past the deadline (also waiting for a
        pooled connection, and with transports that do not keep deadlines themselves)."""
        left = until - time.monotonic()
        if left <= 0:
            raise self._late(method, url, seconds)
        return httpx.Timeout(min(self.timeout, left))

    def _retries(self, until: float | None = None) -> Retries:
        """One operation's retries under this client's settings (and deadline, if any)."""
        return Retries(
            attempts=self.max_retries + 1,
            backoff=Backoff(self.backoff, self.max_backoff),
            max_retry_after=self.max_retry_after,
            until=until,
            sleep=self._sleep,
            rand=self._random.random,
        )

    def _pause(
        self,
        tries: Retries,
        wait: float,
        status: int | None,
        why: object,
        method: str,
        url: str,
        seconds: float,
    ) -> None:
        """Log, tell `on_retry`, then wait; DeadlineExceeded if the wait would end past it."""
        log.debug(
            "%s %s: %s; retry %d in %.2fs", method, redact_url(url), why, tries.attempts, wait
        )
        if self.on_retry is not None:
            self.on_retry(status, wait)
        if tries.pause(wait) is not None:
            raise self._late(method, url, seconds)

    def _late(self, method: str, url: str, seconds: float) -> DeadlineExceeded:
        return DeadlineExceeded(
            f"{method} {redact_url(url)}: no complete answer within the {seconds:g}s deadline",
            hint=f"{self.host} is stalled or too slow",
        )

    def _read(
        self,
        response: httpx.Response,
        limit: int | None,
        what: str | None,
        until: float,
        seconds: float,
    ) -> bytes:
        """The body, read as it arrives and never past its cap; the response is closed."""
        request = response.request
        try:
            wanted = limit is not None and 200 <= response.status_code < 300
            cap = limit if wanted and limit is not None else _SMALL_BODY
            name = what or f"{request.method} {redact_url(str(request.url))}"
            encoding = (response.headers.get("content-encoding") or "identity").strip().lower()
            if encoding != "identity":
                if wanted:
                    raise RegistryError(
                        f"{name}: got Content-Encoding {encoding!r}, expected none "
                        "(regwarden asks for identity)"
                    )
                return b""
            declared = response.headers.get("content-length") or ""
            if wanted and declared.isdigit() and int(declared) > cap:
                raise _too_big(name, cap, f"it announces {declared} bytes")
            chunks: list[bytes] = []
            size = 0
            for chunk in _raw_chunks(response):
                if size + len(chunk) > cap:
                    if wanted:
                        raise _too_big(name, cap, "it sent more")
                    chunks.append(chunk[: cap - size])
                    break
                size += len(chunk)
                chunks.append(chunk)
                if time.monotonic() >= until:
                    raise self._late(request.method, str(request.url), seconds)
            return b"".join(chunks)
        finally:
            response.close()

    def _redirect(self, method: str, origin: str, current: str, location: str, hops: int) -> str:
        """Where a redirect points, if regwarden follows it there."""
        if hops > _MAX_REDIRECTS:
            raise RegistryError(
                f"{method} {redact_url(origin)}: more than {_MAX_REDIRECTS} redirects"
            )
        target = urljoin(current, location)
        parsed = httpx.URL(target)
        if parsed.scheme not in ("http", "https"):
            raise RegistryError(
                f"{method} {redact_url(origin)}: redirected to a {parsed.scheme!r} URL, "
                "expected http or https"
            )
        if (
            parsed.scheme == "http"
            and current.startswith("https:")
            and not (self.insecure or is_loopback_host(parsed.netloc.decode()))
        ):
            raise RegistryError(
                f"{method} {redact_url(origin)}: redirected from https to plain HTTP "
                f"({redact_url(target)}); refused"
            )
        return target

    def _request(
        self,
        method: str,
        url: str,
        *,
        scopes: tuple[str, ...] | None,
        headers: dict[str, str] | None = None,
        content: bytes | Iterator[bytes] | None = None,
        params: list[tuple[str, str]] | None = None,
        retry: bool = True,
        follow_redirects: bool = False,
        limit: int | None = None,
        what: str | None = None,
        budget: float | None = None,
    ) -> httpx.Response:
        return self._exchange(
            method,
            url,
            scopes=scopes,
            headers=headers,
            content=content,
            params=params,
            retry=retry,
            follow_redirects=follow_redirects,
            limit=limit,
            what=what,
            budget=budget,
        )[0]

    def _fail(self, response: httpx.Response, what: str) -> NoReturn:
        """Raise the error that fits a non-success response."""
        status = response.status_code
        summary = error_summary(response.content, response.headers.get("content-type"))
        url = str(response.request.url)
        # after a redirect this is the storage URL, whose query may be a signature
        detail = f"{response.request.method} {redact_url(url)}: got HTTP {status}"
        if summary:
            detail += f" ({summary})"
        if not self._ours(url):  # where a redirect led: not the registry's own answer
            elsewhere = f"{response.request.url.netloc.decode()}, where {self.host} redirected"
            if status == 404:
                raise NotFound(f"{what} not found at {elsewhere}; {detail}", status=status)
            raise RegistryError(f"{what}: {detail} from {elsewhere}", status=status)
        if status in (401, 403):
            creds = self._credentials
            if creds is None:
                who = "anonymous access was refused (no credentials configured)"
            elif creds.username:
                who = f"credentials for user {creds.username!r} were refused"
            else:
                who = "the identity token was refused"
            raise AuthError(
                f"{what}: {who} by {self.host}; {detail}",
                status=status,
                hint=f"check the credentials for {self.host} (docker login {self.host})",
            )
        if status == 404:
            raise NotFound(f"{what} not found on {self.host}; {detail}", status=status)
        if status in (405, 501):
            raise Unsupported(f"{what}: {self.host} does not support this; {detail}", status=status)
        raise RegistryError(f"{what}: {detail}", status=status)

    def _url(self, repo: str, kind: str, reference: str) -> str:
        return f"{self._base}/v2/{_check_repository(repo)}/{kind}/{reference}"

    def _absolute(self, location: str) -> str:
        return urljoin(self._base + "/", location)

    def _paged(
        self, first: str, params: list[tuple[str, str]] | None, scopes: tuple[str, ...], what: str
    ) -> Iterator[httpx.Response]:
        """Yield each page, following `Link: <…>; rel="next"` on the same host only."""
        url: str | None = first
        seen: set[str] = set()
        while url is not None:
            response = self._request(
                "GET", url, scopes=scopes, params=params, limit=MAX_JSON_BYTES, what=what
            )
            if response.status_code != 200:
                self._fail(response, what)
            yield response
            link = parse_next_link(response.headers.get("link"))
            if link is None:
                return
            nxt = self._absolute(link)
            if not nxt.startswith(self._base + "/"):
                raise RegistryError(
                    f"{what}: pagination link points off the registry: got {nxt!r}, "
                    f"expected a URL under {self._base}"
                )
            if nxt in seen:
                raise RegistryError(f"{what}: pagination loops back to {nxt!r}")
            seen.add(nxt)
            url, params = nxt, None

    # -- API: discovery ----------------------------------------------------------------------

    def ping(self) -> None:
        """Check that the host speaks the Distribution API and accepts our credentials."""
        response = self._request("GET", f"{self._base}/v2/", scopes=())
        if response.status_code != 200:
            self._fail(response, f"registry API at {self._base}/v2/")

    def expect_challenge(self, header: str) -> None:
        """The registry's challenge (`WWW-Authenticate` value) as known beforehand:
        requests carry credentials from the first one, saving the round trip of the 401
        that would teach the scheme (see `Authenticator.expect`)."""
        self._auth.expect(header)

    def pull_token(self, repo: str, *, min_life: float = 30.0) -> str | None:
        """A Bearer token from the registry's token service that can only pull `repo`
        (valid at least `min_life` more seconds), for a scanner that fetches the layers
        itself; None when the registry has no token service (Basic or anonymous access):
        Basic credentials are never handed out. One request to `/v2/` first when no
        challenge has told the scheme yet."""
        scopes = _pull(_check_repository(repo))
        if not self._auth.learnt:
            response = self._request("GET", f"{self._base}/v2/", scopes=scopes)
            if response.status_code not in (200, 401):
                self._fail(response, f"registry API at {self._base}/v2/")
        return self._auth.bearer_token(scopes, min_life=min_life)

    def catalog(self, *, page_size: int | None = None) -> Iterator[str]:
        """Every repository name, page by page (`n=page_size`), following `Link` headers."""
        params = [("n", str(page_size))] if page_size else None
        for response in self._paged(
            f"{self._base}/v2/_catalog", params, ("registry:catalog:*",), "catalog"
        ):
            doc = _json_object(response, "catalog")
            repos = doc.get("repositories") or []
            if not isinstance(repos, list):
                raise RegistryError(f"catalog: got repositories={repos!r}, expected a list")
            yield from (str(r) for r in repos)

    def list_tags(self, repo: str, *, page_size: int | None = None) -> list[str]:
        """All tags of `repo`, following `Link` pages; with `page_size`, also `last=` paging.

        Registries that honour `n` without sending `Link` are paged with `last=<final tag>`
        until a short or empty page; one that ignores `n` is read in one response.
        """
        url = self._url(repo, "tags", "list")
        what = f"tag list of {repo}"
        scopes = _pull(repo)
        tags: list[str] = []
        seen: set[str] = set()
        params = [("n", str(page_size))] if page_size else None
        while True:
            linked = False
            added = 0
            page: list[str] = []
            for response in self._paged(url, params, scopes, what):
                raw = _json_object(response, what).get("tags") or []
                if not isinstance(raw, list) or not set(map(type, raw)) <= {str}:
                    raise RegistryError(
                        f"{what}: got tags={raw!r:.200}, expected a list of strings"
                    )
                page = raw
                linked = linked or "link" in response.headers
                fresh = list(dict.fromkeys(page))  # a page never repeats a tag, nor do pages
                if seen:
                    fresh = [t for t in fresh if t not in seen]
                seen.update(fresh)
                tags.extend(fresh)
                added += len(fresh)
            if linked or not page_size or len(page) != page_size or added == 0:
                return tags
            params = [("n", str(page_size)), ("last", page[-1])]

    # -- API: manifests -----------------------------------------------------------------------

    def get_manifest(
        self, repo: str, reference: str, *, accept: Sequence[str] = ALL_MANIFEST_TYPES
    ) -> Manifest:
        """Fetch a manifest or index and verify its bytes against the digest (fail closed).

        The digest is the one asked for when `reference` is a digest, else the registry's
        `Docker-Content-Digest` (or, without that header, the sha256 of what arrived).
        """
        url = self._url(repo, "manifests", _check_reference(reference))
        accept_value = _DEFAULT_ACCEPT if accept is ALL_MANIFEST_TYPES else ", ".join(accept)
        response = self._request(
            "GET",
            url,
            scopes=_pull(repo),
            headers={"Accept": accept_value},
            follow_redirects=True,
            limit=MAX_MANIFEST_BYTES,
            what=f"manifest {repo}:{reference}",
        )
        if response.status_code != 200:
            self._fail(response, f"manifest {repo}:{reference}")
        raw = response.content
        expected: str | None = reference
        if not is_digest(reference):
            header = response.headers.get("docker-content-digest")
            expected = _header_digest(header, f"manifest {repo}:{reference}") if header else None
        try:
            return Manifest.parse(
                raw, media_type=response.headers.get("content-type"), digest=expected
            )
        except DigestMismatch as exc:
            raise DigestMismatch(
                expected=exc.expected, got=exc.got, what=f"manifest {repo}:{reference}"
            ) from None

    def head_manifest(self, repo: str, reference: str) -> Descriptor | None:
        """Descriptor of a manifest (digest, media type, size) without its body; None on 404."""
        url = self._url(repo, "manifests", _check_reference(reference))
        response = self._request(
            "HEAD",
            url,
            scopes=_pull(repo),
            headers={"Accept": _DEFAULT_ACCEPT},
            follow_redirects=True,
        )
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            self._fail(response, f"manifest {repo}:{reference}")
        header = response.headers.get("docker-content-digest")
        media_type = (response.headers.get("content-type") or "").split(";", 1)[0].strip()
        size_text = response.headers.get("content-length") or ""
        digest: str | None = None
        if is_digest(reference):
            if header is None or header.strip() == reference:
                digest = reference
        elif header:
            digest = _header_digest(header, f"manifest {repo}:{reference}")
        if digest is None or not media_type or not size_text.isdigit():
            # The headers do not say enough to trust: fetch (and verify) the body instead.
            return self.get_manifest(repo, reference).descriptor()
        return Descriptor(media_type=media_type, digest=digest, size=int(size_text))

    def _put_manifest(
        self, repo: str, reference: str, raw: bytes, media_type: str
    ) -> tuple[str, httpx.Response]:
        _check_reference(reference)
        algorithm = reference.split(":", 1)[0] if is_digest(reference) else "sha256"
        digest = compute_digest(raw, algorithm)
        if is_digest(reference) and digest != reference:
            raise DigestMismatch(expected=reference, got=digest, what=f"manifest to put in {repo}")
        response = self._request(
            "PUT",
            self._url(repo, "manifests", reference),
            scopes=_push(repo),
            headers={"Content-Type": media_type},
            content=raw,
        )
        if response.status_code not in _OK:
            self._fail(response, f"put manifest {repo}:{reference}")
        stored = response.headers.get("docker-content-digest")
        if stored and stored.split(":", 1)[0] == algorithm and stored != digest:
            raise DigestMismatch(expected=digest, got=stored, what=f"manifest stored in {repo}")
        return digest, response

    def put_manifest(self, repo: str, reference: str, raw: bytes, media_type: str) -> str:
        """Store `raw` under a tag or its digest; return its digest."""
        return self._put_manifest(repo, reference, raw, media_type)[0]

    def delete_manifest(self, repo: str, digest: str) -> None:
        """Delete a manifest by digest (every tag pointing at it goes with it)."""
        if not is_digest(digest):
            raise UsageError(
                f"delete_manifest: got tag {digest!r}, expected a digest (use delete_tag for tags)"
            )
        validate_digest(digest)
        response, attempts = self._exchange(
            "DELETE", self._url(repo, "manifests", digest), scopes=(f"repository:{repo}:delete",)
        )
        if response.status_code in _OK:
            return
        if response.status_code == 404 and attempts > 1:
            return  # an earlier attempt deleted it before its answer got lost
        self._fail(response, f"delete manifest {repo}@{digest}")

    def delete_tag(self, repo: str, tag: str) -> None:
        """Remove one tag, keeping the manifest (OCI 1.1 `DELETE /manifests/<tag>`).

        Registries without tag deletion (distribution 2.8 answers 400 DIGEST_INVALID)
        raise `Unsupported`.
        """
        if is_digest(tag) or not _TAG.fullmatch(tag):
            raise UsageError(f"delete_tag: got {tag!r}, expected a tag (use delete_manifest)")
        response, attempts = self._exchange(
            "DELETE", self._url(repo, "manifests", tag), scopes=(f"repository:{repo}:delete",)
        )
        status = response.status_code
        if status in _OK or (status == 404 and attempts > 1):
            return
        codes = error_codes(response.content)
        if status in (405, 501) or (
            status == 400 and codes & {"DIGEST_INVALID", "UNSUPPORTED", "TAG_INVALID"}
        ):
            summary = error_summary(response.content, response.headers.get("content-type"))
            raise Unsupported(
                f"{self.host} cannot delete tag {repo}:{tag} on its own (OCI 1.1 tag deletion): "
                f"got HTTP {status}{f' ({summary})' if summary else ''}, expected 202",
                status=status,
                hint="this registry deletes manifests by digest only; re-point the tag or "
                "delete the digest instead",
            )
        self._fail(response, f"delete tag {repo}:{tag}")

    # -- API: blobs --------------------------------------------------------------------------

    def get_blob(self, repo: str, digest: str, *, max_bytes: int = MAX_BLOB_BYTES) -> bytes:
        """Read a blob into memory (following redirects to storage, which get no
        credentials) and verify its digest; LimitExceeded past `max_bytes` (an image config:
        `MAX_CONFIG_BYTES`). Layers are not read whole: `copy_blob` streams them."""
        validate_digest(digest)
        response = self._request(
            "GET",
            self._url(repo, "blobs", digest),
            scopes=_pull(repo),
            follow_redirects=True,
            limit=max_bytes,
            what=f"blob {repo}@{digest}",
        )
        if response.status_code != 200:
            self._fail(response, f"blob {repo}@{digest}")
        data = response.content
        got = compute_digest(data, digest.split(":", 1)[0])
        if got != digest:
            raise DigestMismatch(expected=digest, got=got, what=f"blob {repo}@{digest}")
        return data

    def blob_exists(self, repo: str, digest: str) -> bool:
        validate_digest(digest)
        response = self._request(
            "HEAD", self._url(repo, "blobs", digest), scopes=_pull(repo), follow_redirects=True
        )
        if response.status_code == 200:
            return True
        if response.status_code == 404:
            return False
        self._fail(response, f"blob {repo}@{digest}")

    def _start_upload(self, repo: str, *, mount: tuple[str, str] | None = None) -> httpx.Response:
        scopes = _push(repo)
        params = None
        if mount is not None:
            digest, source = mount
            scopes = (*scopes, *_pull(source))
            params = [("mount", digest), ("from", source)]
        return self._request(
            "POST", f"{self._url(repo, 'blobs', 'uploads')}/", scopes=scopes, params=params
        )

    def _location(self, response: httpx.Response, what: str) -> str:
        location = response.headers.get("location")
        if not location:
            raise RegistryError(f"{what}: got HTTP {response.status_code} without a Location")
        return self._absolute(location)

    def push_blob(self, repo: str, data: bytes, digest: str | None = None) -> str:
        """Upload `data` monolithically (POST, then PUT ?digest=); return its digest.

        A blob that is already there is not sent again. The final PUT is not blindly
        retried: after a failure we check whether the blob landed, then start afresh.
        """
        return self._push_blob(repo, data, digest, check=True)

    def _push_blob(self, repo: str, data: bytes, digest: str | None, *, check: bool) -> str:
        algorithm = digest.split(":", 1)[0] if digest else "sha256"
        if digest:
            validate_digest(digest)
        actual = compute_digest(data, algorithm)
        if digest and actual != digest:
            raise DigestMismatch(expected=digest, got=actual, what=f"blob to push to {repo}")
        if check and self.blob_exists(repo, actual):
            return actual
        what = f"upload blob {repo}@{actual}"
        tries = self._retries()
        while True:
            started = self._start_upload(repo)
            if started.status_code != 202:
                self._fail(started, what)
            target = httpx.URL(self._location(started, what)).copy_add_param("digest", actual)
            failure: str
            try:
                response = self._request(
                    "PUT",
                    str(target),
                    scopes=_push(repo),
                    headers={"Content-Type": "application/octet-stream"},
                    content=data,
                    retry=False,
                    budget=self.blob_deadline,
                )
            except _TransportFailure as exc:
                failure = str(exc)
            else:
                if response.status_code in _OK:
                    stored = response.headers.get("docker-content-digest")
                    if stored and stored.split(":", 1)[0] == algorithm and stored != actual:
                        raise DigestMismatch(expected=actual, got=stored, what=what)
                    return actual
                if response.status_code not in RETRYABLE_STATUS:
                    self._fail(response, what)
                failure = f"got HTTP {response.status_code}"
            if self.blob_exists(repo, actual):
                return actual
            self._again(tries, what, failure)

    @staticmethod
    def _again(tries: Retries, what: str, failure: str) -> None:
        """Back off before starting an upload afresh, or raise when out of attempts."""
        wait = tries.next_wait()
        if isinstance(wait, GiveUp):
            raise RegistryError(f"{what}: {failure}; {wait.reason()}")
        tries.pause(wait)

    def mount_blob(self, repo: str, digest: str, from_repo: str) -> bool:
        """Cross-repository mount. True when mounted (201); False when the registry opened an
        upload instead (202), which is then cancelled so nothing dangles."""
        validate_digest(digest)
        _check_repository(from_repo)
        response = self._start_upload(repo, mount=(digest, from_repo))
        if response.status_code == 201:
            return True
        if response.status_code == 202:
            location = response.headers.get("location")
            if location:
                try:
                    self._request("DELETE", self._absolute(location), scopes=_push(repo))
                except RegistryError as exc:  # cancelling is best effort; the upload expires
                    log.debug("cancelling upload %s failed: %s", location, exc)
            return False
        self._fail(response, f"mount blob {digest} from {from_repo} into {repo}")

    def copy_blob(self, src_repo: str, dst_repo: str, digest: str) -> None:
        """Make `digest` exist in `dst_repo`: mount it, else stream it across."""
        validate_digest(digest)
        if self.mount_blob(dst_repo, digest, src_repo):
            return
        self._stream_blob(src_repo, dst_repo, digest)

    def _stream_blob(self, src_repo: str, dst_repo: str, digest: str) -> None:
        """Download and upload at once, chunk by chunk, hashing on the way: a layer is never
        held in memory. The upload cannot be replayed, so a failure starts both afresh
        (after checking whether the blob landed), within `max_retries`."""
        what = f"copy blob {digest} from {src_repo} to {dst_repo}"
        tries = self._retries()
        while True:
            failure: str
            with deadline_within(self.blob_deadline):
                try:
                    stored = self._relay_blob(src_repo, dst_repo, digest, what)
                except _TransportFailure as exc:  # past the deadline: raised, not retried
                    failure = str(exc)
                else:
                    if stored is None:
                        return
                    failure = stored
            if self.blob_exists(dst_repo, digest):
                return
            self._again(tries, what, failure)

    def _relay_blob(self, src_repo: str, dst_repo: str, digest: str, what: str) -> str | None:
        """One try of `_stream_blob`: None when stored, else why it may be worth another."""
        started = self._start_upload(dst_repo)
        if started.status_code != 202:
            self._fail(started, what)
        target = httpx.URL(self._location(started, what)).copy_add_param("digest", digest)
        source, _ = self._exchange(
            "GET",
            self._url(src_repo, "blobs", digest),
            scopes=_pull(src_repo),
            follow_redirects=True,
            stream=True,
            budget=self.blob_deadline,
        )
        with contextlib.closing(source):
            if source.status_code != 200:
                self._fail(source, f"blob {src_repo}@{digest}")
            encoding = (source.headers.get("content-encoding") or "identity").strip().lower()
            if encoding != "identity":
                raise RegistryError(
                    f"blob {src_repo}@{digest}: got Content-Encoding {encoding!r}, expected "
                    "none (regwarden asks for identity)"
                )
            headers = {"Content-Type": "application/octet-stream"}
            length = source.headers.get("content-length") or ""
            if length.isdigit():
                headers["Content-Length"] = length
            response = self._request(
                "PUT",
                str(target),
                scopes=_push(dst_repo),
                headers=headers,
                content=_verified(source, digest, what=f"blob {src_repo}@{digest}"),
                retry=False,
                budget=self.blob_deadline,
            )
        if response.status_code in _OK:
            stored = response.headers.get("docker-content-digest")
            algorithm = digest.split(":", 1)[0]
            if stored and stored.split(":", 1)[0] == algorithm and stored != digest:
                raise DigestMismatch(expected=digest, got=stored, what=what)
            return None
        if response.status_code not in RETRYABLE_STATUS and response.status_code != 401:
            self._fail(response, what)
        return f"got HTTP {response.status_code}"  # 401: a token that expired mid-stream

    def copy_image(
        self,
        src_repo: str,
        reference: str,
        dst_repo: str,
        dst_tag: str | None = None,
        *,
        manifest: Manifest | None = None,
    ) -> str:
        """Copy a manifest (and an index's tree of manifests) with its blobs; return its
        digest.

        An index's whole tree is read and checked first (`index_tree`): a tree past the
        limits raises LimitExceeded before anything is written. Blobs move by
        cross-repository mount, else stream across. Idempotent: repeating a finished copy
        only re-confirms what is there. The destination is tagged `dst_tag`, else the
        source tag when `reference` is a tag, else stored by digest only. `manifest`, when
        the caller already holds the digest-verified manifest `reference` names, saves
        fetching it.
        """
        if manifest is None or manifest.digest != reference:
            manifest = self.get_manifest(src_repo, reference)
        tree = self.index_tree(src_repo, manifest)
        self._copy_content(src_repo, dst_repo, manifest, tree, set())
        target = dst_tag or (manifest.digest if is_digest(reference) else reference)
        self._put_manifest(dst_repo, target, manifest.raw, manifest.media_type)
        return manifest.digest

    def index_tree(self, repo: str, manifest: Manifest) -> dict[str, Manifest]:
        """Every manifest below `manifest` (empty unless an index), each read once and
        digest-verified; LimitExceeded past `index_limits` (see `oci.walk_index`)."""
        return walk_index(manifest, functools.partial(self.get_manifest, repo), self.index_limits)

    def _copy_content(
        self,
        src_repo: str,
        dst_repo: str,
        manifest: Manifest,
        tree: dict[str, Manifest],
        done: set[str],
    ) -> None:
        """Children before their index; recursion as deep as the checked tree (≤ its
        depth limit). `done`: manifests already handled in this copy."""
        if manifest.is_index:
            for child in distinct_children(manifest, self.index_limits):
                if child.digest in done:
                    continue
                done.add(child.digest)
                if self.head_manifest(dst_repo, child.digest) is not None:
                    continue  # a stored manifest implies its blobs are there too
                sub = tree[child.digest]
                self._copy_content(src_repo, dst_repo, sub, tree, done)
                self._put_manifest(dst_repo, sub.digest, sub.raw, sub.media_type)
            return
        blobs = [manifest.config] if manifest.config is not None else []
        for layer in manifest.layers:
            if layer.media_type == DOCKER_FOREIGN_LAYER or "nondistributable" in layer.media_type:
                continue  # foreign layers live at their `urls`, not in the registry
            blobs.append(layer)
        # independent of each other: mount them together (a mount is one round trip)
        gather(
            [
                functools.partial(self.copy_blob, src_repo, dst_repo, digest)
                for digest in dict.fromkeys(b.digest for b in blobs if b is not None)
            ]
        )

    # -- API: referrers ----------------------------------------------------------------------

    def referrers(
        self, repo: str, digest: str, *, artifact_type: str | None = None
    ) -> list[Descriptor]:
        """Manifests whose `subject` is `digest`: the referrers API, else the tag schema.

        Registries without the API (404, e.g. distribution 2.8) are read through the
        `sha256-<hex>` index tag. `artifact_type` is applied here too, whether or not the
        registry filtered.
        """
        validate_digest(digest)
        url = self._url(repo, "referrers", digest)
        params = [("artifactType", artifact_type)] if artifact_type else None
        descriptors: list[Descriptor] = []
        response = self._request(
            "GET",
            url,
            scopes=_pull(repo),
            headers={"Accept": OCI_INDEX},
            params=params,
            limit=MAX_MANIFEST_BYTES,
            what=f"referrers of {repo}@{digest}",
        )
        if response.status_code in (404, 405, 501):
            descriptors = self._referrers_from_tag(repo, digest)
        else:
            for page in self._referrer_pages(response, repo, digest):
                descriptors.extend(page)
        if artifact_type is not None:
            descriptors = [d for d in descriptors if d.artifact_type == artifact_type]
        return descriptors

    def supports_referrers_api(self, repo: str, digest: str) -> bool:
        """Whether this registry serves the OCI 1.1 referrers API; asked once per client.

        The first call sends `GET /v2/<repo>/referrers/<digest>` (pass a manifest that
        exists: a registry with the API answers 200 even when nothing refers to it) and
        caches the answer: 200 means yes; 404, 405 or 501 (distribution 2.8 answers
        `404 page not found`) means no, and `referrers` then reads the tag schema. Any
        other failure raises and is not cached. Concurrent first callers wait for one probe.
        """
        known = self._referrers_api
        if known is not None:
            return known
        validate_digest(digest)
        with self._referrers_probe:
            if self._referrers_api is None:
                response = self._request(
                    "GET",
                    self._url(repo, "referrers", digest),
                    scopes=_pull(repo),
                    headers={"Accept": OCI_INDEX},
                )
                status = response.status_code
                if status not in (200, 404, 405, 501):
                    self._fail(response, f"referrers API probe {repo}@{digest}")
                self._referrers_api = status == 200
                log.debug(
                    "%s: referrers API %s", self.host, "present" if status == 200 else "absent"
                )
            return self._referrers_api

    def _referrer_pages(
        self, first: httpx.Response, repo: str, digest: str
    ) -> Iterator[list[Descriptor]]:
        what = f"referrers of {repo}@{digest}"
        response = first
        seen: set[str] = set()
        while True:
            if response.status_code != 200:
                self._fail(response, what)
            ctype = (response.headers.get("content-type") or "").split(";", 1)[0].strip()
            if ctype and ctype not in (OCI_INDEX, "application/json"):
                raise RegistryError(f"{what}: got Content-Type {ctype!r}, expected {OCI_INDEX}")
            index = Manifest.parse(response.content, media_type=OCI_INDEX)
            yield index.manifests
            link = parse_next_link(response.headers.get("link"))
            if link is None:
                return
            nxt = self._absolute(link)
            if not nxt.startswith(self._base + "/") or nxt in seen:
                raise RegistryError(f"{what}: bad pagination link {nxt!r}")
            seen.add(nxt)
            response = self._request(
                "GET",
                nxt,
                scopes=_pull(repo),
                headers={"Accept": OCI_INDEX},
                limit=MAX_MANIFEST_BYTES,
                what=what,
            )

    def _referrers_from_tag(self, repo: str, digest: str) -> list[Descriptor]:
        try:
            index = self.get_manifest(repo, referrers_tag(digest), accept=(OCI_INDEX,))
        except NotFound:
            return []
        if not index.is_index:
            raise RegistryError(
                f"referrers tag {repo}:{referrers_tag(digest)}: got {index.media_type}, "
                f"expected {OCI_INDEX}"
            )
        return index.manifests

    def push_referrer(self, repo: str, raw: bytes, media_type: str) -> str:
        """Push a manifest that has a `subject`, keeping the referrers tag schema current.

        When the registry does not confirm it indexed the subject (no `OCI-Subject`
        header, as on distribution 2.8), the `sha256-<hex>` index tag is updated
        (read-modify-write: concurrent writers may race, as the OCI spec notes).
        """
        manifest = Manifest.parse(raw, media_type=media_type)
        subject = manifest.subject
        if subject is None:
            raise UsageError(
                f"push_referrer: manifest {manifest.digest} has no subject; expected one"
            )
        digest, response = self._put_manifest(repo, manifest.digest, raw, media_type)
        if response.headers.get("oci-subject"):
            return digest
        tag = referrers_tag(subject.digest)
        try:
            existing = self.get_manifest(repo, tag, accept=(OCI_INDEX,)).manifests
        except NotFound:
            existing = []
        if any(d.digest == digest for d in existing):
            return digest
        entry = Descriptor(
            media_type=media_type,
            digest=digest,
            size=len(raw),
            artifact_type=manifest.artifact_type,
            annotations=manifest.annotations,
        )
        self._put_manifest(repo, tag, index_of([*existing, entry]), OCI_INDEX)
        return digest

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RegistryClient({self._base!r})"


def _too_big(what: str, cap: int, why: str) -> LimitExceeded:
    return LimitExceeded(
        f"{what}: over {cap} bytes ({why}), the most regwarden reads into memory; refused"
    )


def _report(
    request: httpx.Request, started: float, *, status: int | None = None, failure: str | None = None
) -> None:
    """Hand one exchange to the request observers (`regwarden serve`'s /metrics)."""
    if observe.has_observers():
        observe.report_request(
            request.url.netloc.decode(),
            request.method,
            time.monotonic() - started,
            status=status,
            failure=failure,
        )


def _with_body(response: httpx.Response, body: bytes) -> httpx.Response:
    """A closed response carrying `body` (read, unencoded) as its content."""
    headers = response.headers.copy()
    headers.pop("content-encoding", None)
    return httpx.Response(
        response.status_code,
        headers=headers,
        content=body,
        request=response.request,
        extensions=response.extensions,
    )


def _json_object(response: httpx.Response, what: str) -> dict[str, object]:
    try:
        doc = response.json()
    except RecursionError:
        raise LimitExceeded(f"{what}: JSON nested too deep to read; refused") from None
    except ValueError:
        raise RegistryError(f"{what}: got a body that is not JSON, expected an object") from None
    if not isinstance(doc, dict):
        raise RegistryError(f"{what}: got JSON {type(doc).__name__}, expected an object")
    return doc


def _raw_chunks(response: httpx.Response) -> Iterator[bytes]:
    """The body's bytes as they arrive (at once when a transport handed it over read, as
    `httpx.MockTransport` does)."""
    try:
        read = response.content
    except httpx.ResponseNotRead:
        yield from response.iter_raw()
    else:
        yield read


def _verified(response: httpx.Response, digest: str, *, what: str) -> Iterator[bytes]:
    """`response`'s body as it arrives, hashed on the way: DigestMismatch at the end if it
    is not `digest` (raised into the upload, which then fails; the registry checks too)."""
    hasher = hashlib.new(digest.split(":", 1)[0])
    for chunk in _raw_chunks(response):
        hasher.update(chunk)
        yield chunk
    got = f"{digest.split(':', 1)[0]}:{hasher.hexdigest()}"
    if got != digest:
        raise DigestMismatch(expected=digest, got=got, what=what)


def _header_digest(value: str, what: str) -> str:
    try:
        return validate_digest(value.strip())
    except InvalidReference:
        raise RegistryError(
            f"{what}: got Docker-Content-Digest {value!r}, expected algorithm:hex"
        ) from None
