"""Azure Container Registry provider: the control plane through the ACR client library
(`azure.containerregistry.ContainerRegistryClient`), the data plane through the OCI client.

    registry = make_acr("myreg.azurecr.io", ProviderOptions())
    for record in registry.list_images("team/api"):
        print(record.digest, record.tags, record.pushed)

A regwarden repository on ACR is the ACR repository name (it may hold `/`). ACR lists every
manifest (untagged ones and an index's children too) with its push and update times,
deletes single tags, and keeps four switches per manifest (`writeEnabled`,
`deleteEnabled`, `readEnabled`, `listEnabled`) that the `lock` quarantine sets; it has no
batch delete. Tags are created over `/v2/` (ACR has no tag-create call).

Credentials: `options.credentials` (an azure-identity TokenCredential), else
`DefaultAzureCredential`. The control plane's library exchanges the AAD token itself (its
access tokens kept per scope by `_acr_tokens`: the library keeps none); the
data plane gets an ACR refresh token here (`POST /oauth2/exchange`) and hands it to the OCI
client as an identity token, which trades it for a repository-scoped access token at the
realm of ACR's Bearer challenge (`POST /oauth2/token`). The refresh token and access tokens
go only to the registry's own host (and `data_plane_host`): a realm or redirect elsewhere
is refused before anything is sent.

The Azure libraries are imported lazily: this module imports without them, and `make_acr`
says which extra to install when they are missing.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import wait
from datetime import UTC, datetime, timedelta
from importlib.util import find_spec
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote, urlsplit

from ..errors import (
    AuthError,
    InvalidReference,
    NotFound,
    NotImplementedYet,
    RegistryError,
    Unsupported,
    UsageError,
)
from ..reference import is_digest, validate_digest
from . import _acr_tokens
from ._base import (
    CAP_LOCK,
    CAP_MANIFEST_LISTING,
    CAP_PUSH_TIMES,
    CAP_TAG_DELETE,
    THROTTLE_STATUS,
    DeleteResult,
    ImageDetails,
    ListedImage,
    ManifestAttributes,
    QuarantineState,
    Registry,
)
from ._cloud_plane import (
    THROTTLE_ATTEMPTS,
    ThrottleWatchers,
    bare_host,
    call_throttled,
    pinned_client,
    utc,
)

if TYPE_CHECKING:
    from ..oci import Manifest, RegistryClient
    from . import ProviderOptions

__all__ = ["THROTTLE_ATTEMPTS", "TOKEN_USER", "AcrRegistry", "ManifestAttributes", "make_acr"]

log = logging.getLogger("regwarden.providers.acr")

TOKEN_USER = "00000000-0000-0000-0000-000000000000"  # noqa: S105  (a fixed user name)
"""The user name ACR pairs with a refresh token as the password (`docker login`)."""
_REFRESH_LIFETIME = timedelta(minutes=45)
"""An ACR refresh token is exchanged again after this long: ACR's live for three hours,
but the AAD token behind one may be revoked sooner, so it is not kept to the end."""
_INDEX_TYPES = frozenset(
    {
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    }
)
_T = TypeVar("_T")


def _azure_missing() -> bool:
    try:
        return find_spec("azure.containerregistry") is None
    except (ModuleNotFoundError, ValueError):  # a parent package is missing, or blocked
        return True


class AcrRegistry:
    """`Registry` for one Azure Container Registry (`NAME.azurecr.io`).

    Control plane: `ContainerRegistryClient` at `https://HOST` (`REGWARDEN_AZURE_ENDPOINT_ACR`
    in `env` points it at a stand-in; `REGWARDEN_AZURE_CA_BUNDLE` names the CA its TLS, the
    token service's and the data plane's are verified against), called without the
    library's retries: a 429/503 answer calls the `watch_throttling` callbacks and is
    retried here (`THROTTLE_ATTEMPTS`, honouring `Retry-After`). Data plane:
    `regwarden.oci.RegistryClient` at `data_plane_host` (else the endpoint's host) with the
    ACR refresh token as its identity token; anonymous when the endpoint is plain http on
    loopback.
    """

    kind = "acr"
    capabilities: frozenset[str] = frozenset(
        {CAP_TAG_DELETE, CAP_PUSH_TIMES, CAP_MANIFEST_LISTING, CAP_LOCK}
    )

    def __init__(
        self,
        host: str,
        options: ProviderOptions | None = None,
        *,
        client: Any = None,
        env: Mapping[str, str] | None = None,
        clock: Callable[[], datetime] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        from .. import azure_clients
        from . import ProviderOptions

        self.host = host
        self.options = options or ProviderOptions()
        self.env: Mapping[str, str] = os.environ if env is None else env
        self.endpoint = azure_clients.endpoint("acr", self.env) or f"https://{host}"
        self.ca_file = azure_clients.ca_bundle(self.env)
        self.anonymous = self.endpoint.startswith("http://")
        self.data_plane_host = self.options.data_plane_host or self.endpoint
        self._clock = clock or (lambda: datetime.now(UTC))
        self._sleep = sleep
        self._lock = threading.Lock()
        self._exchange_lock = threading.Lock()
        self._tls: Any = None  # the token requests' SSL context, made once (see _verify)
        self._token_http: Any = None  # the token service's client, made once (see _tokens)
        self._watchers = ThrottleWatchers()
        self._scope = azure_clients.acr_scope(host)
        self.credential: Any = None
        if not self.anonymous:
            self.credential = self.options.credentials or azure_clients.default_credential()
        self._owns_client = client is None
        self.tokens = _acr_tokens.TokenCache(
            self.endpoint, self._clock, None if self.anonymous else self._access_token
        )
        if client is None:
            from azure.containerregistry import ContainerRegistryClient

            client = ContainerRegistryClient(
                self.endpoint,
                self.credential,
                audience=self._scope.removesuffix("/.default"),
                retry_total=0,  # retried here, so throttling is seen (see _call)
                connection_timeout=self.options.deadline,
                read_timeout=self.options.deadline,
                # the library trades a challenge for a token on every call (no cache of its
                # own): this keeps each scope's token and pre-authorizes (see _acr_tokens)
                per_retry_policies=[_acr_tokens.policy(self.tokens)],
                **azure_clients.transport_options(self.ca_file or True),
            )
        self.client: Any = client
        self._refresh: tuple[str, datetime] | None = None
        self._data_plane: RegistryClient | None = None
        self._data_plane_token: str | None = None

    def __repr__(self) -> str:
        return f"AcrRegistry({self.host!r})"

    # -- control-plane plumbing ---------------------------------------------------------------

    def _notify(self, delay: float | None) -> None:
        self._watchers.notify(delay)

    def _call(self, what: str, thunk: Callable[[], _T]) -> _T:
        """One control-plane call (or a whole listing), retried on 429/503 after telling
        the throttling watchers (`call_throttled`); Azure's errors become regwarden's."""
        from azure.core import exceptions as aexc

        def throttled(exc: Exception) -> bool:
            return isinstance(exc, aexc.HttpResponseError) and exc.status_code in THROTTLE_STATUS

        try:
            return call_throttled(
                thunk, throttled=throttled, watchers=self._watchers, sleep=self._sleep
            )
        except aexc.HttpResponseError as exc:
            raise self._translate(exc, what) from exc
        except aexc.ClientAuthenticationError as exc:
            raise self._auth_error(what, exc) from exc
        except aexc.AzureError as exc:
            raise RegistryError(f"ACR {self.host}: {what}: {exc}") from exc

    def _auth_error(self, what: str, exc: object, status: int | None = None) -> AuthError:
        return AuthError(
            f"ACR {self.host}: {what}: {exc}",
            status=status,
            hint="check the Azure credentials (az login, or the managed identity) and their "
            "role on the registry (AcrPull to read, AcrPush to tag, AcrDelete to delete)",
        )

    def _translate(self, exc: Any, what: str) -> RegistryError:
        from azure.core import exceptions as aexc

        status = exc.status_code if isinstance(exc.status_code, int) else None
        code, detail = _error_detail(exc)
        said = f"{status} {code}: {detail}" if detail else (exc.message or str(exc))
        text = f"ACR {self.host}: {what}: {said}"
        if isinstance(exc, aexc.ResourceNotFoundError) or status == 404:
            return NotFound(text, status=404)
        if code == "DENIED" and status == 403:  # a manifest's attributes refuse it (locked)
            return AuthError(
                text,
                status=status,
                hint="the manifest may be locked: see its writeEnabled, deleteEnabled and "
                "readEnabled (az acr repository show --image REPO@DIGEST)",
            )
        if isinstance(exc, aexc.ClientAuthenticationError) or status in (401, 403):
            return self._auth_error(what, said, status)
        return RegistryError(text, status=status)

    # -- data plane ---------------------------------------------------------------------------

    def refresh_token(self) -> str | None:
        """An ACR refresh token for this registry, from `POST /oauth2/exchange` with the
        credential's AAD token; kept for a while (see `_REFRESH_LIFETIME`). None when
        anonymous."""
        if self.anonymous:
            return None
        # One exchange at a time: calls made in parallel (the gate reads the manifest while
        # it looks for signatures) would each get a new token, and the second would close
        # the data plane the first is still using (`data_plane` rebuilds on a new token).
        with self._exchange_lock:
            now = self._clock()
            with self._lock:
                if self._refresh is not None and now - self._refresh[1] < _REFRESH_LIFETIME:
                    return self._refresh[0]
            token = self._exchange()
            with self._lock:
                self._refresh = (token, now)
            return token

    def _tokens(self) -> Any:
        """The token service's HTTP client (`/oauth2/exchange` and `/oauth2/token`), made
        on first use and kept: the exchange and each scope's access token go over one
        kept-alive connection instead of a TCP and TLS handshake each (three per cold
        start, and one per token after)."""
        with self._lock:
            if self._token_http is None:
                import httpx

                self._token_http = httpx.Client(
                    verify=self._verify(), timeout=self.options.deadline
                )
            return self._token_http

    def _exchange(self) -> str:
        import httpx

        try:
            aad = self.credential.get_token(self._scope).token
        except Exception as exc:
            from azure.core.exceptions import ClientAuthenticationError

            if isinstance(exc, ClientAuthenticationError):
                raise self._auth_error("get an AAD token", exc) from exc
            raise
        form = {"grant_type": "access_token", "service": self.host, "access_token": aad}
        url = f"{self.endpoint}/oauth2/exchange"
        try:
            response = self._tokens().post(url, data=form)
        except httpx.HTTPError as exc:
            raise RegistryError(f"ACR {self.host}: token exchange: {exc}") from exc
        if response.status_code in (401, 403):
            raise self._auth_error(
                "token exchange", f"HTTP {response.status_code}", response.status_code
            )
        if response.status_code != 200:
            raise RegistryError(
                f"ACR {self.host}: token exchange: got HTTP {response.status_code}, expected 200",
                status=response.status_code,
            )
        try:
            token = response.json().get("refresh_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise RegistryError(f"ACR {self.host}: token exchange: no refresh_token in answer")
        return token

    def _access_token(self, scope: str) -> str | None:
        """An ACR access token for `scope` from the refresh token (`POST /oauth2/token`, the
        exchange ACR's challenge points at), for the control plane's token cache; None when
        it cannot be had (the library's own challenge flow then runs and says why)."""
        import httpx

        try:
            refresh = self.refresh_token()
        except Exception as exc:  # the library's own challenge flow reports it
            log.debug("no refresh token for %s: %s", scope, exc)
            return None
        if refresh is None:
            return None
        form = {
            "grant_type": "refresh_token",
            "service": self.host,
            "scope": scope,
            "refresh_token": refresh,
        }
        try:
            response = self._tokens().post(f"{self.endpoint}/oauth2/token", data=form)
            token = response.json().get("access_token") if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError, AttributeError) as exc:
            log.debug("access token for %s: %s", scope, exc)
            return None
        return token if isinstance(token, str) and token else None

    def _verify(self) -> Any:
        """The SSL context of the token service and of `/v2/` (the data plane's client):
        the CA bundle's authorities when one is set (`REGWARDEN_AZURE_CA_BUNDLE`: what the
        Azure SDK clients verify against too, as their `connection_verify`), else the one
        httpx makes for `verify=True`. Made once: loading a trust store costs 10-40 ms,
        which each one-shot `httpx.post` (an exchange and a token per scope) and the data
        plane paid again."""
        if self._tls is None:
            if self.ca_file is None:
                import httpx

                context = httpx.create_ssl_context()
            else:
                import ssl

                context = ssl.create_default_context(cafile=self.ca_file)
            self._tls = context  # a race makes it twice, harmlessly: contexts are shareable
        return self._tls

    def data_plane(self) -> RegistryClient:
        """The OCI client for `/v2/` with the current refresh token, rebuilt when the token
        changes (its access tokens were issued for the old one)."""
        token = self.refresh_token()
        with self._lock:
            if self._data_plane is None or self._data_plane_token != token:
                if self._data_plane is not None:
                    self._data_plane.close()
                self._data_plane = self._make_data_plane(token)
                self._data_plane_token = token
            return self._data_plane

    def _make_data_plane(self, token: str | None) -> RegistryClient:
        from ..oci import Credentials

        creds = Credentials(identity_token=token) if token else None
        allowed = (self.host, self.data_plane_host, bare_host(self.endpoint))
        client = pinned_client(
            self.data_plane_host,
            creds,
            self.options,
            allowed,
            self._watchers,
            ssl_context=self._verify(),  # the token service's: one trust store loaded
            secret=b"refresh_token",  # a token request elsewhere is refused, not stripped
            what="ACR refresh token",
        )
        if creds is not None:
            # ACR's `/v2/` challenges with its own token service, the one `_exchange` uses:
            # the first read carries a token rather than first drawing the 401
            client.expect_challenge(
                f'Bearer realm="{self.endpoint}/oauth2/token",service="{self.host}"'
            )
        return client

    def _oci(self, manifests: Mapping[str, Manifest] | None = None) -> Any:
        from .oci import OciRegistry

        client: Any = self.data_plane()
        if manifests:
            client = _StoredManifests(client, manifests)
        return OciRegistry(self.host, self.options, client=client)

    # -- reads --------------------------------------------------------------------------------

    def list_repositories(self) -> Iterator[str]:
        """Every repository of the registry (`GET /acr/v1/_catalog`, all pages)."""
        names: list[str] = self._call(
            "list repositories", lambda: list(self.client.list_repository_names())
        )
        yield from names

    def _manifests(self, repository: str) -> list[Any]:
        try:
            return self._call(
                f"list manifests of {repository}",
                lambda: list(self.client.list_manifest_properties(repository)),
            )
        except NotFound:  # no such repository: no images
            return []

    def _record(self, repository: str, props: Any, manifest: Manifest | None) -> ListedImage:
        subject = manifest.subject if manifest is not None else None
        return ListedImage(
            repository=repository,
            digest=str(props.digest),
            media_type=manifest.media_type if manifest is not None else "",
            tags=tuple(sorted(str(t) for t in props.tags or ())),
            size=int(props.size_in_bytes) if props.size_in_bytes is not None else None,
            created=utc(props.created_on),
            pushed=utc(props.created_on),
            children=tuple(d.digest for d in manifest.manifests) if manifest is not None else (),
            subject=subject.digest if subject is not None else None,
            artifact_type=manifest.artifact_type if manifest is not None else None,
            locked=props.can_delete is False,  # ACR leaves it out when enabled
        )

    def _read_manifests(self, repository: str, digests: list[str]) -> dict[str, Manifest]:
        """The manifests `digests` name, read and verified over `/v2/` concurrently (ACR's
        client does not give media types, children or subjects); missing or unreadable
        (a locked `readEnabled=false` one) are left out."""
        from ..oci import gather

        client = self.data_plane()

        def read(digest: str) -> Callable[[], Manifest | None]:
            def run() -> Manifest | None:
                try:
                    return client.get_manifest(repository, digest)
                except (NotFound, AuthError):
                    return None

            return run

        found = gather([read(d) for d in digests])
        return {d: m for d, m in zip(digests, found, strict=True) if m is not None}

    def list_images(self, repository: str) -> list[ListedImage]:
        """Every manifest of the repository (untagged ones and an index's children too),
        newest push first: ACR's manifest listing, with each manifest's media type,
        children and subject read over `/v2/`."""
        listed = self._manifests(repository)
        manifests = self._read_manifests(repository, [str(p.digest) for p in listed])
        records = [self._record(repository, p, manifests.get(str(p.digest))) for p in listed]
        return sorted(records, key=lambda r: (r.pushed is None, r.pushed), reverse=True)

    def resolve(self, repository: str, reference: str) -> str | None:
        """One HEAD on `/v2/`."""
        desc = self.data_plane().head_manifest(repository, reference)
        return None if desc is None else desc.digest

    def tags_of(self, repository: str, digest: str) -> tuple[str, ...]:
        """The tags ACR lists for `digest` now (its manifest properties)."""
        try:
            props = self._call(
                f"manifest properties of {repository}@{digest}",
                lambda: self.client.get_manifest_properties(repository, digest),
            )
        except NotFound:
            return ()
        return tuple(sorted(str(t) for t in props.tags or ()))

    def index_children(self, repository: str) -> dict[str, tuple[str, ...]]:
        """Every index ACR lists in the repository (untagged ones too) → the digests its
        manifest lists. Only manifests without a platform of their own are read: ACR gives
        an image's architecture and os, never an index's."""
        candidates = [
            str(p.digest)
            for p in self._manifests(repository)
            if not p.architecture and not p.operating_system
        ]
        manifests = self._read_manifests(repository, candidates)
        return {
            d: tuple(c.digest for c in m.manifests)
            for d, m in manifests.items()
            if m.media_type in _INDEX_TYPES or (m.manifests and "layers" not in m.data)
        }

    def image_details(
        self,
        repository: str,
        reference: str,
        *,
        manifests: Mapping[str, Manifest] | None = None,
    ) -> ImageDetails:
        """The manifest, platforms, labels and config `created` over `/v2/`; tags, push
        time and ACR's size from the manifest's properties. `manifests`: digest → manifest
        already held (the `lock` quarantine's record of a read-locked image and its
        children), served from there rather than pulled; the config blob is still read.

        By digest, the properties are read while `/v2/` is: they need nothing from it, and
        each is a round trip of its own (ACR's metadata API is the slower one)."""
        from ..oci import on_own_thread

        def properties(digest: str) -> Any:
            return self._call(
                f"manifest properties of {repository}@{digest}",
                lambda: self.client.get_manifest_properties(repository, digest),
            )

        early = is_digest(reference)
        # this may run on the I/O pool already: the second call gets a thread of its own
        aside = on_own_thread(lambda: properties(reference)) if early else None
        try:
            details: ImageDetails = self._oci(manifests).image_details(repository, reference)
        finally:
            if aside is not None:
                wait([aside])  # nothing is still talking to ACR once this returns
        record = details.record
        try:
            props = aside.result() if aside is not None else properties(record.digest)
        except NotFound:
            return details
        merged = ListedImage(
            repository=repository,
            digest=record.digest,
            media_type=record.media_type,
            tags=tuple(sorted(str(t) for t in props.tags or ())),
            size=int(props.size_in_bytes) if props.size_in_bytes is not None else record.size,
            created=record.created or utc(props.created_on),
            pushed=utc(props.created_on),
            children=record.children,
            subject=record.subject,
            artifact_type=record.artifact_type,
        )
        return ImageDetails(
            record=merged,
            manifest=details.manifest,
            labels=details.labels,
            platforms=details.platforms,
            layer_count=details.layer_count,
            content=details.content,
        )

    # -- attributes (the `lock` quarantine) ---------------------------------------------------

    def manifest_attributes(self, repository: str, digest: str) -> ManifestAttributes:
        """The manifest's changeable attributes and its `quarantineState` (None when the
        registry's quarantine policy is off), from one `GET
        /acr/v1/{name}/_manifests/{digest}` (raw: the library's model drops the state)."""
        found = self._raw_manifest_call("manifest properties", "GET", repository, digest)
        return _raw_attributes(found)

    def set_manifest_attributes(
        self,
        repository: str,
        digest: str,
        *,
        write: bool | None = None,
        delete: bool | None = None,
        read: bool | None = None,
        list: bool | None = None,
    ) -> ManifestAttributes:
        """Set the attributes given (None: left as they are) with one PATCH of the
        manifest's properties; returns them all as ACR now holds them."""
        try:
            validate_digest(digest)
        except InvalidReference as exc:
            raise UsageError(str(exc)) from None
        changes = {
            name: value
            for name, value in (
                ("can_write", write),
                ("can_delete", delete),
                ("can_read", read),
                ("can_list", list),
            )
            if value is not None
        }
        if not changes:
            return self.manifest_attributes(repository, digest)
        props = self._call(
            f"set attributes of {repository}@{digest}",
            lambda: self.client.update_manifest_properties(repository, digest, **changes),
        )
        return _attributes(props)

    def _raw_manifest_call(
        self, what: str, method: str, repository: str, digest: str, body: Any = None
    ) -> dict[str, Any]:
        """`GET|PATCH /acr/v1/{name}/_manifests/{digest}` sent through the ACR library's
        own pipeline (its generated client's `send_request`: the same credential, token
        exchange, TLS verification and endpoint as every other control-plane call). The
        library's models drop `quarantineState`/`quarantineDetails` (internal in every
        Azure SDK), so this one resource is read and written as raw JSON. Answers the
        `manifest` object of ACR's `ArtifactManifestProperties`."""
        from azure.core.exceptions import HttpResponseError
        from azure.core.rest import HttpRequest

        try:
            validate_digest(digest)
        except InvalidReference as exc:
            raise UsageError(str(exc)) from None
        url = f"/acr/v1/{quote(repository, safe='/')}/_manifests/{digest}"
        request = HttpRequest(method, url, json=body, headers={"Accept": "application/json"})

        def send() -> dict[str, Any]:
            response = self.client._client.send_request(
                request
            )  # the library's pipeline: see above
            if response.status_code >= 400:
                raise HttpResponseError(response=response)
            doc = response.json()
            inner = doc.get("manifest") if isinstance(doc, dict) else None
            return inner if isinstance(inner, dict) else {}

        return self._call(f"{what} of {repository}@{digest}", send)

    def quarantine_state(self, repository: str, digest: str) -> str | None:
        """ACR's `quarantineState` of the manifest (`Passed`, `Failed`, or the state a push
        waits in), None when the registry's quarantine policy is off (ACR leaves the
        field out then)."""
        found = self._raw_manifest_call("quarantine state", "GET", repository, digest)
        return _raw_attributes(found).quarantine_state

    def set_quarantine_state(
        self, repository: str, digest: str, state: QuarantineState, details: Mapping[str, Any]
    ) -> None:
        """PATCH `quarantineState` with `quarantineDetails` (ACR keeps the details as a JSON
        string); needs the AcrQuarantineWriter role."""
        body = {"quarantineState": state, "quarantineDetails": json.dumps(dict(details))}
        self._raw_manifest_call("set quarantine state", "PATCH", repository, digest, body)

    # -- writes -------------------------------------------------------------------------------

    def add_tag(self, repository: str, digest: str, tag: str) -> None:
        """The manifest PUT again under `tag` over `/v2/` (ACR has no tag-create call); a
        tag elsewhere is moved."""
        try:
            validate_digest(digest)
        except InvalidReference as exc:
            raise UsageError(str(exc)) from None
        self._oci().add_tag(repository, digest, tag)

    def remove_tag(self, repository: str, tag: str) -> None:
        """`DELETE /acr/v1/{name}/_tags/{tag}`: the manifest stays. A tag already gone is
        done (ACR's client takes the 404 as success)."""
        self._call(
            f"remove tag {repository}:{tag}", lambda: self.client.delete_tag(repository, tag)
        )

    def delete(self, repository: str, digest: str) -> None:
        """Delete the manifest (its tags go with it); refused on a manifest whose
        `deleteEnabled` is false. A manifest already gone is done (the client takes the
        404 as success)."""
        try:
            validate_digest(digest)
        except InvalidReference as exc:
            raise UsageError(str(exc)) from None
        self._call(
            f"delete {repository}@{digest}",
            lambda: self.client.delete_manifest(repository, digest),
        )

    def delete_many(self, repository: str, digests: Iterable[str]) -> list[DeleteResult]:
        """ACR deletes one manifest per request: delete them one at a time."""
        raise Unsupported(f"ACR {self.host} has no batch delete; delete one digest at a time")

    def watch_throttling(self, callback: Callable[[float | None], None]) -> Callable[[], None]:
        """`callback(delay)` on every 429/503 a control-plane call is retried after (`delay`:
        its Retry-After, else None) and every one the data plane's client retries."""
        return self._watchers.add(callback)

    def copy(
        self,
        src_repository: str,
        reference: str,
        dst_repository: str,
        tag: str | None = None,
        *,
        manifest: Manifest | None = None,
    ) -> str:
        """Copy over `/v2/` (blobs mounted across repositories, else streamed); ACR creates
        the destination repository on push."""
        return self.data_plane().copy_image(
            src_repository, reference, dst_repository, tag, manifest=manifest
        )

    def close(self) -> None:
        with self._lock:
            if self._data_plane is not None:
                self._data_plane.close()
                self._data_plane = None
            if self._token_http is not None:
                self._token_http.close()
                self._token_http = None
        if self._owns_client:
            self.client.close()


class _StoredManifests:
    """The data plane's client with some manifests already in hand: `get_manifest` (and so
    `index_tree`) answers those by digest, verified again, and asks the registry for the
    rest; everything else (blobs) goes to the registry."""

    def __init__(self, client: Any, manifests: Mapping[str, Manifest]) -> None:
        self._client = client
        self._manifests = dict(manifests)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def get_manifest(self, repository: str, reference: str, **kwargs: Any) -> Manifest:
        from ..oci import Manifest

        held = self._manifests.get(reference)
        if held is None:
            found: Manifest = self._client.get_manifest(repository, reference, **kwargs)
            return found
        return Manifest.parse(held.raw, media_type=held.media_type, digest=reference)

    def index_tree(self, repository: str, manifest: Manifest) -> dict[str, Manifest]:
        from ..oci import walk_index

        def fetch(reference: str) -> Manifest:
            return self.get_manifest(repository, reference)

        tree: dict[str, Manifest] = walk_index(manifest, fetch, self._client.index_limits)
        return tree


def _attributes(props: Any) -> ManifestAttributes:
    # ACR leaves an attribute out when it is at its default (enabled).
    def flag(value: object) -> bool:
        return value is None or bool(value)

    return ManifestAttributes(
        write=flag(props.can_write),
        delete=flag(props.can_delete),
        read=flag(props.can_read),
        list=flag(props.can_list),
    )


def _raw_attributes(manifest: Mapping[str, Any]) -> ManifestAttributes:
    """The attributes and quarantine state of ACR's raw `manifest` object
    (`changeableAttributes {deleteEnabled, writeEnabled, readEnabled, listEnabled}`, each
    left out when at its default, enabled; `quarantineState` only where the policy is on)."""
    changeable = manifest.get("changeableAttributes")
    attrs: Mapping[str, Any] = changeable if isinstance(changeable, dict) else {}

    def flag(name: str) -> bool:
        value = attrs.get(name)
        return value is None or bool(value)

    state = manifest.get("quarantineState")
    return ManifestAttributes(
        write=flag("writeEnabled"),
        delete=flag("deleteEnabled"),
        read=flag("readEnabled"),
        list=flag("listEnabled"),
        quarantine_state=state if isinstance(state, str) and state else None,
    )


def _error_detail(exc: Any) -> tuple[str, str]:
    """(code, message) of the first entry of ACR's error envelope `{"errors": [{"code",
    "message"}]}` in an answer, or empty strings."""
    response = getattr(exc, "response", None)
    try:
        doc = response.json() if response is not None else None
    except Exception:  # not JSON, or no body: nothing more to say
        return "", ""
    errors = doc.get("errors") if isinstance(doc, dict) else None
    if not isinstance(errors, list) or not errors or not isinstance(errors[0], dict):
        return "", ""
    return str(errors[0].get("code") or ""), str(errors[0].get("message") or "")


def make_acr(host: str, options: ProviderOptions) -> Registry:
    """Factory for `providers.register("acr")`: an `AcrRegistry` with the caller's
    credential (`options.credentials`) or `DefaultAzureCredential`."""
    if _azure_missing():
        raise NotImplementedYet(
            f"{host} is Azure Container Registry; its provider needs the 'azure' extra",
            hint="pip install 'regwarden[azure]'",
        )
    if urlsplit(f"//{host}").hostname is None:
        raise UsageError(f"not a registry host: got {host!r}, expected NAME.azurecr.io")
    return AcrRegistry(host, options)
