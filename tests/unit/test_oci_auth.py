"""Auth challenges through httpx.MockTransport: parsing, Basic, Bearer token service, caching."""

from __future__ import annotations

import base64
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qs

import httpx
import pytest

from regwarden import USER_AGENT
from regwarden.errors import AuthError, NotFound
from regwarden.oci import Challenge, Credentials, RegistryClient, parse_challenges
from regwarden.oci._auth import Authenticator

HOST = "registry.example.com"
REALM = "https://auth.example.com/token"
SERVICE = "registry.example.com"


# -- challenge grammar ---------------------------------------------------------------------


def test_parse_bearer_challenge_with_scope_list() -> None:
    header = (
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:samalba/my-app:pull,push"'
    )
    [challenge] = parse_challenges(header)
    assert challenge.scheme == "bearer"
    assert challenge.realm == "https://auth.docker.io/token"
    assert challenge.service == "registry.docker.io"
    assert challenge.scopes == ("repository:samalba/my-app:pull,push",)


def test_parse_several_challenges_and_quoted_commas() -> None:
    header = (
        'Basic realm="a, b", Bearer realm="https://x/t", '
        'scope="repository:a:pull repository:b:pull"'
    )
    challenges = parse_challenges(header)
    assert [c.scheme for c in challenges] == ["basic", "bearer"]
    assert challenges[0].realm == "a, b"
    assert challenges[1].scopes == ("repository:a:pull", "repository:b:pull")


def test_parse_escaped_quotes_token68_and_case() -> None:
    [c1] = parse_challenges('BASIC Realm="say \\"hi\\""')
    assert c1 == Challenge("basic", {"realm": 'say "hi"'})
    [c2] = parse_challenges("Negotiate abc123==")
    assert c2.scheme == "negotiate"
    assert c2.params == {"token68": "abc123=="}
    assert parse_challenges("") == []


# -- a fake Bearer registry + token service ------------------------------------------------


class FakeTokenRegistry:
    """Registry answering 401 + Bearer challenge unless the token covers the needed scope."""

    def __init__(self, *, user: tuple[str, str] | None = None, lifetime: int = 300) -> None:
        self.user = user
        self.lifetime = lifetime
        self.lock = threading.Lock()
        self.token_calls: list[httpx.Request] = []
        self.registry_calls: list[httpx.Request] = []
        self.tokens: dict[str, set[str]] = {}

    def _scope_for(self, path: str, method: str) -> str:
        repo = path.removeprefix("/v2/").rsplit("/", 2)[0]
        return f"repository:{repo}:{'pull' if method in ('GET', 'HEAD') else 'pull,push'}"

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            if request.url.host == "auth.example.com":
                return self._token(request)
            self.registry_calls.append(request)
            needed = self._scope_for(request.url.path, request.method)
            auth = request.headers.get("authorization", "")
            granted = self.tokens.get(auth.removeprefix("Bearer "), set())
            if not auth.startswith("Bearer ") or needed not in granted:
                challenge = f'Bearer realm="{REALM}",service="{SERVICE}",scope="{needed}"'
                return httpx.Response(
                    401,
                    headers={"WWW-Authenticate": challenge},
                    json={
                        "errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]
                    },
                )
            repo = needed.split(":")[1]
            return httpx.Response(200, json={"name": repo, "tags": ["v1", "v2"]})

    def _token(self, request: httpx.Request) -> httpx.Response:
        self.token_calls.append(request)
        if request.method == "POST":
            form = parse_qs(request.content.decode())
            scopes = form.get("scope", [""])[0].split()
            if form.get("refresh_token") != ["refresh-me"]:
                return httpx.Response(401, json={"details": "bad refresh token"})
            token = f"oauth-{len(self.token_calls)}"
            self.tokens[token] = set(scopes)
            return httpx.Response(200, json={"access_token": token, "expires_in": self.lifetime})
        params = parse_qs(request.url.query.decode())
        if self.user is not None:
            expected = "Basic " + base64.b64encode(":".join(self.user).encode()).decode()
            if request.headers.get("authorization") != expected:
                return httpx.Response(401, json={"details": "incorrect username or password"})
        token = f"tok-{len(self.token_calls)}"
        self.tokens[token] = set(params.get("scope", []))
        return httpx.Response(200, json={"token": token, "expires_in": self.lifetime})


def _client(fake: FakeTokenRegistry, creds: Credentials | None = None) -> RegistryClient:
    return RegistryClient(HOST, credentials=creds, transport=httpx.MockTransport(fake))


def test_bearer_flow_requests_scope_and_reuses_token() -> None:
    fake = FakeTokenRegistry()
    with _client(fake) as client:
        assert client.list_tags("team/app") == ["v1", "v2"]
        assert client.list_tags("team/app") == ["v1", "v2"]
    assert len(fake.token_calls) == 1
    params = parse_qs(fake.token_calls[0].url.query.decode())
    assert params["service"] == [SERVICE]
    assert params["scope"] == ["repository:team/app:pull"]
    # 401 → token → 200, then straight 200 with the cached token
    assert [r.headers.get("authorization") is not None for r in fake.registry_calls] == [
        False,
        True,
        True,
    ]


def test_bearer_token_per_scope() -> None:
    fake = FakeTokenRegistry()
    with _client(fake) as client:
        client.list_tags("team/a")
        client.list_tags("team/b")
        client.list_tags("team/a")
    scopes = [parse_qs(r.url.query.decode())["scope"] for r in fake.token_calls]
    assert scopes == [["repository:team/a:pull"], ["repository:team/b:pull"]]


def test_bearer_with_basic_credentials_to_token_service() -> None:
    fake = FakeTokenRegistry(user=("bob", "hunter2"))
    with _client(fake, Credentials(username="bob", password="hunter2")) as client:
        assert client.list_tags("team/app") == ["v1", "v2"]
    params = parse_qs(fake.token_calls[0].url.query.decode())
    assert params["account"] == ["bob"]


def test_bearer_refused_credentials_raise_auth_error() -> None:
    fake = FakeTokenRegistry(user=("bob", "hunter2"))
    with (
        _client(fake, Credentials(username="bob", password="wrong")) as client,
        pytest.raises(AuthError, match=r"token service .* refused user 'bob'"),
    ):
        client.list_tags("team/app")


def test_identity_token_uses_oauth2_refresh_grant() -> None:
    fake = FakeTokenRegistry()
    with _client(fake, Credentials(identity_token="refresh-me")) as client:
        assert client.list_tags("team/app") == ["v1", "v2"]
    [call] = fake.token_calls
    assert call.method == "POST"
    form = parse_qs(call.content.decode())
    assert form["grant_type"] == ["refresh_token"]
    assert form["service"] == [SERVICE]
    assert form["scope"] == ["repository:team/app:pull"]


def test_concurrent_first_contact_fetches_one_token() -> None:
    fake = FakeTokenRegistry()
    with _client(fake) as client, ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda _: client.list_tags("team/app"), range(64)))
    assert all(r == ["v1", "v2"] for r in results)
    assert len(fake.token_calls) == 1


def test_user_agent_on_registry_and_token_requests() -> None:
    fake = FakeTokenRegistry()
    with _client(fake) as client:
        client.list_tags("team/app")
    agents = {r.headers["user-agent"] for r in [*fake.registry_calls, *fake.token_calls]}
    assert agents == {USER_AGENT}


def test_an_expected_challenge_spares_the_first_401() -> None:
    fake = FakeTokenRegistry()
    with _client(fake, Credentials(identity_token="refresh-me")) as client:
        client.expect_challenge(f'Bearer realm="{REALM}",service="{SERVICE}"')
        assert client.list_tags("team/app") == ["v1", "v2"]
        assert client.list_tags("team/app") == ["v1", "v2"]
    # a token before the first registry request, every request carrying it
    assert [r.headers.get("authorization") for r in fake.registry_calls] == ["Bearer oauth-1"] * 2
    [call] = fake.token_calls
    form = parse_qs(call.content.decode())
    assert (form["service"], form["scope"]) == ([SERVICE], ["repository:team/app:pull"])


def test_an_expected_challenge_gives_way_to_the_registrys_own() -> None:
    """Expected wrongly (another realm's token is refused): the registry's 401 teaches the
    right token service, as without the expectation."""
    fake = FakeTokenRegistry()

    def route(request: httpx.Request) -> httpx.Response:
        if request.url.host == "stale.example.com":
            return httpx.Response(200, json={"token": "not-the-registrys", "expires_in": 300})
        return fake(request)

    with RegistryClient(HOST, transport=httpx.MockTransport(route)) as client:
        client.expect_challenge('Bearer realm="https://stale.example.com/token",service="x"')
        assert client.list_tags("team/app") == ["v1", "v2"]
    assert [r.headers.get("authorization") for r in fake.registry_calls] == [
        "Bearer not-the-registrys",
        "Bearer tok-1",
    ]


def test_an_expected_challenge_is_checked_as_a_sent_one() -> None:
    with RegistryClient(HOST, transport=httpx.MockTransport(FakeTokenRegistry())) as client:
        with pytest.raises(AuthError, match="refusing to send credentials in the clear"):
            client.expect_challenge('Bearer realm="http://auth.example.com/token"')
        with pytest.raises(ValueError, match="expected a Basic or a Bearer challenge"):
            client.expect_challenge("Negotiate abc123==")
        with pytest.raises(ValueError, match="expected a Basic or a Bearer challenge"):
            client.expect_challenge("Bearer service=x")  # no realm to ask


def test_an_expected_basic_challenge_sends_the_credentials_from_the_first_request() -> None:
    seen: list[httpx.Request] = []
    transport = _basic_handler("bob", "hunter2", seen)
    creds = Credentials(username="bob", password="hunter2")
    with RegistryClient(HOST, credentials=creds, transport=transport) as client:
        client.expect_challenge('Basic realm="local"')
        assert client.list_tags("a") == ["x"]
    assert [r.headers.get("authorization", "").split(" ")[0] for r in seen] == ["Basic"]
    # without credentials there is nothing to send up front: the registry's 401 is seen
    seen.clear()
    with RegistryClient(HOST, transport=transport) as client:
        client.expect_challenge('Basic realm="local"')
        with pytest.raises(AuthError):
            client.list_tags("a")
    assert [r.headers.get("authorization") for r in seen] == [None]


def test_plain_http_realm_for_remote_host_is_refused() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        challenge = 'Bearer realm="http://auth.example.com/token",service="x"'
        return httpx.Response(401, headers={"WWW-Authenticate": challenge})

    with (
        RegistryClient(HOST, transport=httpx.MockTransport(handler)) as client,
        pytest.raises(AuthError, match="refusing to send credentials in the clear"),
    ):
        client.ping()


# -- Basic -----------------------------------------------------------------------------------


def _basic_handler(user: str, password: str, seen: list[httpx.Request]) -> httpx.MockTransport:
    good = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.headers.get("authorization") != good:
            return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="local"'})
        if request.url.path.endswith("/tags/list"):
            return httpx.Response(200, json={"name": "a", "tags": ["x"]})
        return httpx.Response(404, json={"errors": [{"code": "MANIFEST_UNKNOWN", "message": "no"}]})

    return httpx.MockTransport(handler)


def test_basic_challenge_learnt_once_then_sent_up_front() -> None:
    seen: list[httpx.Request] = []
    transport = _basic_handler("alice", "pw", seen)
    creds = Credentials(username="alice", password="pw")
    with RegistryClient(HOST, credentials=creds, transport=transport) as client:
        assert client.list_tags("a") == ["x"]
        assert client.list_tags("a") == ["x"]
        with pytest.raises(NotFound, match="manifest a:missing not found"):
            client.get_manifest("a", "missing")
    assert [r.headers.get("authorization") is None for r in seen] == [True, False, False, False]


def test_basic_wrong_password_names_the_user() -> None:
    seen: list[httpx.Request] = []
    transport = _basic_handler("alice", "pw", seen)
    creds = Credentials(username="alice", password="nope")
    with (
        RegistryClient(HOST, credentials=creds, transport=transport) as client,
        pytest.raises(AuthError, match="credentials for user 'alice' were refused") as info,
    ):
        client.list_tags("a")
    assert info.value.status == 401
    assert info.value.exit_code == 3
    assert len(seen) == 2  # anonymous, then once with credentials; no loop


def test_basic_challenge_without_credentials() -> None:
    seen: list[httpx.Request] = []
    with (
        RegistryClient(HOST, transport=_basic_handler("a", "b", seen)) as client,
        pytest.raises(AuthError, match="no credentials configured"),
    ):
        client.ping()


def test_forbidden_is_auth_error() -> None:
    transport = httpx.MockTransport(
        lambda r: httpx.Response(403, json={"errors": [{"code": "DENIED", "message": "nope"}]})
    )
    with (
        RegistryClient(HOST, transport=transport) as client,
        pytest.raises(AuthError, match="DENIED: nope"),
    ):
        client.get_manifest("a/b", "v1")


# -- token cache with a fake clock -----------------------------------------------------------


def test_token_cache_expires_with_margin() -> None:
    now = [1000.0]
    calls: list[list[tuple[str, str]]] = []

    def send(
        method: str,
        url: str,
        params: list[tuple[str, str]],
        form: dict[str, str] | None,
        authorization: str | None,
    ) -> httpx.Response:
        calls.append(params)
        body = json.dumps({"token": f"t{len(calls)}", "expires_in": 100}).encode()
        return httpx.Response(200, content=body)

    auth = Authenticator(HOST, None, send, check_realm=lambda _: None, clock=lambda: now[0])
    scopes = ("repository:a:pull",)
    assert auth.authorization(scopes) is None  # nothing learnt yet: anonymous
    header = f'Bearer realm="{REALM}",service="{SERVICE}"'
    assert auth.challenge([header], scopes, None) == "Bearer t1"
    assert auth.authorization(scopes) == "Bearer t1"
    now[0] += 89.0  # lifetime 100 minus a 10 s margin: still valid
    assert auth.authorization(scopes) == "Bearer t1"
    now[0] += 2.0
    assert auth.authorization(scopes) == "Bearer t2"
    # A 401 for a token we just sent never hands the same token back.
    assert auth.challenge([header], scopes, "Bearer t2") == "Bearer t3"
    assert len(calls) == 3
