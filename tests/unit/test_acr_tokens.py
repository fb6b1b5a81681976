"""The ACR token cache's pure parts: which scope a request needs, a challenge's scope, a
JWT's expiry, and which URLs may carry a cached token."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest

from regwarden.providers._acr_tokens import MARGIN, TokenCache, challenge_scope, expiry, scope_for

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def jwt(claims: object) -> str:
    def part(doc: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256'})}.{part(claims)}.c2ln"


@pytest.mark.parametrize(
    ("method", "path", "scope"),
    [
        ("GET", "/acr/v1/_catalog", "registry:catalog:*"),
        ("GET", "/acr/v1/team/api", "repository:team/api:metadata_read"),
        ("GET", "/acr/v1/team%2Fapi/_tags", "repository:team/api:metadata_read"),
        ("GET", "/acr/v1/app/_manifests/sha256:abc", "repository:app:metadata_read"),
        ("PATCH", "/acr/v1/app/_manifests/sha256:abc", "repository:app:metadata_write"),
        ("PATCH", "/acr/v1/app/_tags/v1", "repository:app:metadata_write"),
        ("DELETE", "/acr/v1/app/_tags/v1", "repository:app:delete"),
        ("DELETE", "/acr/v1/app", "repository:app:delete"),
        ("PUT", "/acr/v1/app/_tags/v1", None),
        ("POST", "/acr/v1/_catalog", None),
        ("GET", "/v2/app/manifests/v1", None),  # the data plane: not this cache's
        ("DELETE", "/v2/app/manifests/sha256:abc", None),
        ("POST", "/oauth2/token", None),
        ("GET", "/acr/v1/", None),
    ],
)
def test_scope_for(method: str, path: str, scope: str | None) -> None:
    assert scope_for(method, path) == scope


def test_challenge_scope() -> None:
    header = (
        'Bearer realm="https://r.azurecr.io/oauth2/token",service="r.azurecr.io",'
        'scope="repository:library/hello-world:metadata_write",error="invalid_token"'
    )
    assert challenge_scope(header) == "repository:library/hello-world:metadata_write"
    assert challenge_scope('Bearer realm="x",service="y"') is None
    assert challenge_scope('Basic realm="x"') is None
    assert challenge_scope(None) is None


def test_expiry() -> None:
    exp = int((T0 + timedelta(hours=1)).timestamp())
    assert expiry(jwt({"exp": exp})) == T0 + timedelta(hours=1)
    assert expiry(jwt({"exp": "soon"})) is None
    assert expiry(jwt({"exp": True})) is None
    assert expiry(jwt({"iat": exp})) is None
    assert expiry(jwt([1, 2])) is None
    assert expiry("opaque-token") is None
    assert expiry("a.!!!.c") is None


def test_cache_keeps_a_token_until_its_expiry_less_the_margin() -> None:
    now = [T0]
    cache = TokenCache("https://r.azurecr.io", lambda: now[0])
    token = jwt({"exp": int((T0 + timedelta(hours=1)).timestamp())})
    cache.put("s", token)
    cache.put("opaque", "no-exp")
    assert cache.get("s") == token
    assert cache.get("opaque") is None
    now[0] = T0 + timedelta(hours=1) - MARGIN - timedelta(seconds=1)
    assert cache.get("s") == token
    now[0] += timedelta(seconds=1)
    assert cache.get("s") is None
    assert cache.scopes() == []
    cache.put("late", token)  # already within the margin: not kept
    assert cache.scopes() == []
    now[0] = T0
    cache.put("s", token)
    cache.drop("s")
    assert cache.get("s") is None


def test_only_the_registry_endpoint_gets_tokens() -> None:
    cache = TokenCache("https://R.azurecr.io", lambda: T0)
    assert cache.ours("https://r.azurecr.io/acr/v1/app")
    assert not cache.ours("http://r.azurecr.io/acr/v1/app")
    assert not cache.ours("https://r.azurecr.io:8443/acr/v1/app")
    assert not cache.ours("https://evil.example/acr/v1/app")
    assert not cache.ours("https://r.azurecr.io.evil.example/acr/v1/app")
    local = TokenCache("https://127.0.0.1:5443", lambda: T0)
    assert local.ours("https://127.0.0.1:5443/acr/v1/_catalog")
    assert not local.ours("https://127.0.0.1:5444/acr/v1/_catalog")


def test_token_for_fetches_once_per_scope_and_keeps_what_has_an_exp() -> None:
    asked: list[str] = []
    token = jwt({"exp": int((T0 + timedelta(hours=1)).timestamp())})

    def fetch(scope: str) -> str | None:
        asked.append(scope)
        return {"a": token, "opaque": "no-exp"}.get(scope)

    cache = TokenCache("https://r.azurecr.io", lambda: T0, fetch)
    assert cache.token_for("a") == token
    assert cache.token_for("a") == token
    assert cache.token_for("opaque") == "no-exp"  # used once, not kept
    assert cache.token_for("opaque") == "no-exp"
    assert cache.token_for("none") is None
    assert asked == ["a", "opaque", "opaque", "none"]
    assert TokenCache("https://r.azurecr.io", lambda: T0).token_for("a") is None
