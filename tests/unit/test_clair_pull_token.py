"""`RegistryClient.pull_token`: the pull-scoped Bearer token the Clair source hands Clair for
fetching layers (never the registry's Basic credentials), through httpx.MockTransport."""

from __future__ import annotations

from urllib.parse import parse_qs

import httpx

from regwarden.oci import Credentials, RegistryClient

HOST = "registry.example.com"
REALM = "https://auth.example.com/token"
BASIC = Credentials(username="bob", password="hunter2")


class Registry:
    """`/v2/` challenges with `scheme` (bearer, basic, or none: anonymous 200)."""

    def __init__(self, scheme: str, *, lifetime: int = 300) -> None:
        self.scheme = scheme
        self.lifetime = lifetime
        self.token_scopes: list[list[str]] = []
        self.probes = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.example.com":
            self.token_scopes.append(parse_qs(request.url.query.decode()).get("scope", []))
            token = f"tok-{len(self.token_scopes)}"
            return httpx.Response(200, json={"token": token, "expires_in": self.lifetime})
        self.probes += 1
        auth = request.headers.get("authorization")
        if self.scheme == "none" or auth is not None:
            return httpx.Response(200, json={})
        challenge = (
            f'Bearer realm="{REALM}",service="{HOST}"'
            if self.scheme == "bearer"
            else 'Basic realm="registry"'
        )
        return httpx.Response(401, headers={"WWW-Authenticate": challenge}, json={})


def client(fake: Registry, creds: Credentials | None = None) -> RegistryClient:
    return RegistryClient(HOST, credentials=creds, transport=httpx.MockTransport(fake))


def test_a_token_registry_gives_a_pull_scoped_token_once_cached() -> None:
    fake = Registry("bearer")
    with client(fake, BASIC) as c:
        first = c.pull_token("team/app")
        again = c.pull_token("team/app")
    assert first == again == "tok-1"  # the bare token, without "Bearer "
    assert fake.token_scopes == [["repository:team/app:pull"]]
    assert fake.probes == 2  # one /v2/ exchange taught the scheme: 401, then 200 with it


def test_a_token_about_to_expire_is_replaced_by_a_fresh_one() -> None:
    fake = Registry("bearer", lifetime=20)  # shorter than the 30 s Clair needs it for
    with client(fake) as c:
        tokens = [c.pull_token("team/app"), c.pull_token("team/app")]
    # each call: the cached token (18 s left) is too old, a fresh one is fetched
    assert tokens == ["tok-2", "tok-3"] and len(fake.token_scopes) == 3


def test_basic_and_anonymous_registries_give_no_token_and_never_the_credentials() -> None:
    basic = Registry("basic")
    with client(basic, BASIC) as c:
        assert c.pull_token("team/app") is None
        assert c.pull_token("team/app") is None
    assert basic.token_scopes == [] and basic.probes == 2  # the probe is answered with Basic
    anonymous = Registry("none")
    with client(anonymous) as c:
        assert c.pull_token("team/app") is None
    assert anonymous.token_scopes == []
