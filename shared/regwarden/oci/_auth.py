"""Answering `WWW-Authenticate` challenges: anonymous, Basic, and Bearer token services.

The authenticator learns the registry's scheme from the first 401 and from then on
attaches credentials up front, so steady-state requests cost one round trip. Bearer
tokens are cached per scope set until shortly before they expire. All state is guarded
by a lock, and token fetches for the same scopes are single-flight.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import httpx

from ..errors import AuthError, RegistryError
from ..redact import redact_url
from ._credentials import Credentials
from ._http import Challenge, error_summary, parse_challenges

#: Lifetime assumed when a token response carries no `expires_in` (the spec's default).
DEFAULT_TOKEN_LIFETIME = 60.0
#: Refresh this long before expiry, so a token never dies in flight.
_EXPIRY_MARGIN = 10.0

#: `send(method, url, params, form, authorization) -> response` — the client's retrying sender.
TokenSender = Callable[
    [str, str, list[tuple[str, str]], dict[str, str] | None, str | None], httpx.Response
]


@dataclass(slots=True)
class _Token:
    value: str
    expires_at: float  # time.monotonic() seconds


class Authenticator:
    """Per-registry auth state: which scheme, which credentials, which cached tokens."""

    def __init__(
        self,
        host: str,
        credentials: Credentials | None,
        send: TokenSender,
        *,
        check_realm: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._host = host
        self._credentials = credentials
        self._send = send
        self._check_realm = check_realm
        self._clock = clock
        self._lock = threading.Lock()
        self._basic: str | None = None
        self._bearer: Challenge | None = None
        self._tokens: dict[tuple[str, ...], _Token] = {}
        self._flights: dict[tuple[str, ...], threading.Lock] = {}
        if credentials is not None and credentials.username is not None:
            raw = f"{credentials.username}:{credentials.password}".encode()
            self._basic_value: str | None = "Basic " + base64.b64encode(raw).decode("ascii")
        else:
            self._basic_value = None

    # -- hot path --------------------------------------------------------------------------

    def authorization(self, scopes: tuple[str, ...]) -> str | None:
        """The `Authorization` value to send up front, or None (anonymous or not learnt yet)."""
        if self._basic is not None:
            return self._basic
        if self._bearer is None:
            return None
        token = self._tokens.get(scopes)
        if token is not None and token.expires_at > self._clock():
            return "Bearer " + token.value
        return self._fetch(scopes, stale=None)

    def expect(self, header: str) -> None:
        """Take `header` (a `WWW-Authenticate` value) as the registry's challenge before it
        sends one: a registry whose scheme is known beforehand (a cloud registry's own) is
        sent its credentials with the first request — a Bearer token from the named token
        service, or Basic — instead of after an unauthenticated probe for the 401. A Bearer
        realm is checked as a sent challenge's is; Basic without credentials to send changes
        nothing; a challenge the registry sends later still replaces either."""
        challenges = parse_challenges(header)
        bearer = next((c for c in challenges if c.scheme == "bearer"), None)
        if bearer is not None and bearer.realm:
            self._check_realm(bearer.realm)
            with self._lock:
                if self._bearer is None and self._basic is None:
                    self._bearer = bearer
            return
        if any(c.scheme == "basic" for c in challenges):
            with self._lock:
                if self._bearer is None and self._basic is None:
                    self._basic = self._basic_value
            return
        raise ValueError(f"expected a Basic or a Bearer challenge with a realm, got {header!r}")

    @property
    def learnt(self) -> bool:
        """Whether a challenge has told which scheme the registry uses (Basic or Bearer)."""
        return self._basic is not None or self._bearer is not None

    def bearer_token(self, scopes: tuple[str, ...], *, min_life: float = 0.0) -> str | None:
        """The bare token the registry's token service grants for `scopes`, valid at least
        `min_life` more seconds (a fresh one is fetched if the cached one is older), or None
        when the registry uses no token service (Basic, anonymous, or no challenge seen):
        a token is handed to third parties (a scanner fetching layers), Basic credentials
        never are."""
        with self._lock:
            bearer, basic = self._bearer, self._basic
            cached = self._tokens.get(scopes)
        if bearer is None or basic is not None:
            return None
        if cached is not None and cached.expires_at > self._clock() + min_life:
            return cached.value
        stale = "Bearer " + cached.value if cached is not None else None
        return self._fetch(scopes, stale=stale).removeprefix("Bearer ")

    # -- on a 401 --------------------------------------------------------------------------

    def challenge(
        self, headers: Sequence[str], scopes: tuple[str, ...], sent: str | None
    ) -> str | None:
        """React to a 401: return the `Authorization` value to retry with, or None to give up.

        `sent` is what the failed request carried; a token fetched meanwhile by another
        thread is reused, and the rejected one is never offered again.
        """
        challenges = [c for h in headers for c in parse_challenges(h)]
        bearer = next((c for c in challenges if c.scheme == "bearer"), None)
        if bearer is not None:
            if not bearer.realm:
                raise AuthError(
                    f"{self._host} sent a Bearer challenge without a realm; got {headers!r}"
                )
            self._check_realm(bearer.realm)
            with self._lock:
                self._bearer = bearer
            wanted = tuple(dict.fromkeys((*scopes, *bearer.scopes)))
            return self._fetch(scopes, stale=sent, wanted=wanted)
        if any(c.scheme == "basic" for c in challenges):
            if self._basic_value is None or sent == self._basic_value:
                return None  # no credentials, or the ones we have were refused
            with self._lock:
                self._basic = self._basic_value
            return self._basic_value
        return None

    # -- token service ---------------------------------------------------------------------

    def _fetch(
        self, key: tuple[str, ...], *, stale: str | None, wanted: tuple[str, ...] | None = None
    ) -> str:
        with self._lock:
            flight = self._flights.setdefault(key, threading.Lock())
        with flight:
            cached = self._tokens.get(key)
            if (
                cached is not None
                and cached.expires_at > self._clock()
                and "Bearer " + cached.value != stale
            ):
                return "Bearer " + cached.value
            bearer = self._bearer
            assert bearer is not None and bearer.realm is not None
            value, lifetime = self._request_token(bearer, wanted if wanted is not None else key)
            margin = min(_EXPIRY_MARGIN, lifetime / 10)
            token = _Token(value=value, expires_at=self._clock() + lifetime - margin)
            with self._lock:
                self._tokens[key] = token
            return "Bearer " + value

    def _request_token(self, bearer: Challenge, scopes: tuple[str, ...]) -> tuple[str, float]:
        realm = bearer.realm
        assert realm is not None
        creds = self._credentials
        params: list[tuple[str, str]] = []
        if bearer.service:
            params.append(("service", bearer.service))
        if creds is not None and creds.identity_token is not None:
            form = {
                "grant_type": "refresh_token",
                "refresh_token": creds.identity_token,
                "client_id": "regwarden",
                "scope": " ".join(scopes),
            }
            if bearer.service:
                form["service"] = bearer.service
            response = self._send("POST", realm, [], form, None)
        else:
            params.extend(("scope", s) for s in scopes)
            if creds is not None and creds.username:
                params.append(("account", creds.username))
            response = self._send("GET", realm, params, None, self._basic_value)
        who = f"user {creds.username!r}" if creds and creds.username else "anonymous access"
        if response.status_code in (401, 403):
            raise AuthError(
                f"token service {redact_url(realm)} refused {who} for scope "
                f"{' '.join(scopes) or '(none)'}: "
                f"HTTP {response.status_code} {error_summary(response.content, None)}".rstrip(),
                status=response.status_code,
                hint=f"check the credentials for {self._host} (docker login {self._host})",
            )
        if response.status_code != 200:
            raise RegistryError(
                f"token service {redact_url(realm)}: got HTTP {response.status_code}, expected 200 "
                f"{error_summary(response.content, None)}".rstrip(),
                status=response.status_code,
            )
        try:
            doc = json.loads(response.content)
        except ValueError:
            raise RegistryError(
                f"token service {redact_url(realm)} answered with invalid JSON"
            ) from None
        token = doc.get("token") or doc.get("access_token") if isinstance(doc, dict) else None
        if not isinstance(token, str) or not token:
            raise RegistryError(
                f"token service {redact_url(realm)}: response has no 'token' or 'access_token'"
            )
        lifetime = doc.get("expires_in")
        if not isinstance(lifetime, int | float) or isinstance(lifetime, bool) or lifetime <= 0:
            lifetime = DEFAULT_TOKEN_LIFETIME
        return token, float(lifetime)
