"""A cache of ACR access tokens for the control-plane client (azure-containerregistry).

Why: the library's `ContainerRegistryChallengePolicy` has no token cache ("Future caching
implementation will be included here"): every call is sent first without a token, the
401's Bearer challenge is traded at `/oauth2/token` for an access token and the call is sent
again — three requests where one would do. This cache learns the access token each
challenge gave (keyed by the challenge's `scope`, e.g. `repository:team/api:metadata_read`)
and puts it on a later request whose scope it can tell before sending, the way ACR scopes
its `/acr/v1/` API: GET → `metadata_read`, PATCH → `metadata_write`, DELETE → `delete`
(`_catalog`: `registry:catalog:*`). Anything else (`/v2/`, the token service) is left to
the library's challenge flow. A token is kept until its JWT `exp` less `MARGIN`; one
without a readable `exp` is not kept. A 401 on a pre-authorized request drops the entry and
the library's challenge flow answers it (and the new token is learnt).

With a `fetch` (the provider's own ACR refresh token, the one its data plane uses), the
first request of a scope it can tell gets its token before it is sent: no 401, and no
second AAD exchange by the library. A fetch that fails, or a wrong guess of the scope (a
401), leaves the request to the library's challenge flow.

Tokens only go to the registry's own endpoint (scheme and host:port as configured), never
to another host a request might name.

Pure logic here; `policy(cache)` builds the azure-core pipeline policy (imported lazily:
this module imports without the Azure libraries).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote, urlsplit

__all__ = ["MARGIN", "TokenCache", "challenge_scope", "expiry", "policy", "scope_for"]

MARGIN = timedelta(minutes=2)
"""A cached token is not used this close to its expiry (clock skew, a slow request)."""

_ACR_PATH = re.compile(r"^/acr/v1/(?P<name>.+?)(?:/(?:_manifests|_tags)(?:/[^/]+)?)?/?$")
_ACTIONS = {"GET": "metadata_read", "PATCH": "metadata_write"}
_PARAM = re.compile(r'(\w+)="([^"]*)"')
_LEARN = "regwarden_acr_scope"  # request.context key: the challenge's scope, to learn from


def scope_for(method: str, path: str) -> str | None:
    """The scope ACR's challenge names for `method path` on its `/acr/v1/` API; None when
    it cannot be told (then nothing is pre-authorized)."""
    path = unquote(path)
    if path.rstrip("/") == "/acr/v1/_catalog":
        return "registry:catalog:*" if method == "GET" else None
    m = _ACR_PATH.match(path)
    if m is None or m.group("name").startswith("_"):
        return None
    if method == "DELETE":
        return f"repository:{m.group('name')}:delete"
    action = _ACTIONS.get(method)
    return f"repository:{m.group('name')}:{action}" if action else None


def challenge_scope(header: str | None) -> str | None:
    """The `scope` of a Bearer challenge (`WWW-Authenticate`), None if it has none."""
    if not header or not header.lower().startswith("bearer "):
        return None
    params = dict(_PARAM.findall(header))
    return params.get("scope") or None


def expiry(token: str) -> datetime | None:
    """The `exp` of a JWT access token (read, not verified: only to know when to stop
    using it); None when it is not a JWT or has no numeric `exp`."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (ValueError, binascii.Error):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        return None
    try:
        return datetime.fromtimestamp(exp, UTC)
    except (OverflowError, OSError, ValueError):
        return None


class TokenCache:
    """Access tokens by scope for one endpoint (`https://HOST[:PORT]`), thread-safe."""

    def __init__(
        self,
        endpoint: str,
        clock: Callable[[], datetime],
        fetch: Callable[[str], str | None] | None = None,
    ) -> None:
        parts = urlsplit(endpoint)
        self._origin = (parts.scheme, parts.netloc.lower())
        self._clock = clock
        self._fetch = fetch
        self._lock = threading.Lock()
        self._tokens: dict[str, tuple[str, datetime]] = {}

    def ours(self, url: str) -> bool:
        """True if `url` is on the registry's own endpoint (https only)."""
        parts = urlsplit(url)
        return parts.scheme == "https" and (parts.scheme, parts.netloc.lower()) == self._origin

    def get(self, scope: str) -> str | None:
        with self._lock:
            held = self._tokens.get(scope)
            if held is None:
                return None
            if self._clock() >= held[1] - MARGIN:
                del self._tokens[scope]
                return None
            return held[0]

    def token_for(self, scope: str) -> str | None:
        """The cached token for `scope`, else one fetched for it (`fetch`: the provider's
        refresh token traded at `/oauth2/token`, sparing the first request its 401); None
        when there is neither (the library's challenge flow then runs)."""
        token = self.get(scope)
        if token is not None or self._fetch is None:
            return token
        fetched = self._fetch(scope)
        if fetched is None:
            return None
        self.put(scope, fetched)
        return fetched

    def put(self, scope: str, token: str) -> None:
        """Keep `token` for `scope` until its expiry; one without a readable `exp` is not
        kept (nothing would say when to stop sending it)."""
        until = expiry(token)
        if until is None or self._clock() >= until - MARGIN:
            return
        with self._lock:
            self._tokens[scope] = (token, until)

    def drop(self, scope: str) -> None:
        with self._lock:
            self._tokens.pop(scope, None)

    def scopes(self) -> list[str]:
        with self._lock:
            return sorted(self._tokens)


def policy(cache: TokenCache) -> Any:
    """The azure-core policy for the client's `per_retry_policies`: it sits after the
    library's challenge policy, so it sees each attempt that policy sends — the first (which
    it pre-authorizes from the cache), the 401 (whose challenge scope it notes, dropping
    the token that failed) and the attempt the library sends again with a fresh token (which
    it learns once answered)."""
    from azure.core.pipeline import PipelineRequest, PipelineResponse
    from azure.core.pipeline.policies import SansIOHTTPPolicy

    class _AcrTokenCachePolicy(SansIOHTTPPolicy):  # type: ignore[type-arg]
        def on_request(self, request: PipelineRequest[Any]) -> None:
            http = request.http_request
            if "Authorization" in http.headers or not cache.ours(http.url):
                return  # the library's own token (a retry after a challenge), or elsewhere
            scope = scope_for(http.method, urlsplit(http.url).path)
            token = cache.token_for(scope) if scope else None
            if token is not None:
                http.headers["Authorization"] = f"Bearer {token}"
                request.context[_LEARN] = scope

        def on_response(
            self, request: PipelineRequest[Any], response: PipelineResponse[Any, Any]
        ) -> None:
            http = request.http_request
            status = response.http_response.status_code
            if status == 401:
                scope = challenge_scope(response.http_response.headers.get("WWW-Authenticate"))
                tried = request.context.get(_LEARN)
                if isinstance(tried, str):
                    cache.drop(tried)  # revoked or expired early: the challenge flow runs
                if scope and cache.ours(http.url):
                    request.context[_LEARN] = scope
                return
            scope = request.context.get(_LEARN)
            auth = http.headers.get("Authorization") or ""
            if isinstance(scope, str) and status < 400 and auth.startswith("Bearer "):
                cache.put(scope, auth.removeprefix("Bearer "))

    return _AcrTokenCachePolicy()
