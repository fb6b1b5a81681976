"""Registry providers behind one protocol, chosen from the registry's kind: as the policy's
`registries` section lists it, else from the host name.

A `plugins.PluginRegistry` (`PROVIDERS`) with explicit imports: each provider module
registers itself with `@register(kind)`; this file imports them by name. No discovery by
side effect elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import UsageError
from ..plugins import PluginRegistry
from ._base import (
    CAP_BATCH_DELETE,
    CAP_COPY_MOUNT,
    CAP_LOCK,
    CAP_MANIFEST_LISTING,
    CAP_NATIVE_SCAN,
    CAP_PULL_TIMES,
    CAP_PUSH_TIMES,
    CAP_REFERRERS_API,
    CAP_TAG_DELETE,
    THROTTLE_STATUS,
    DeleteResult,
    DeleteStatus,
    ImageDetails,
    ListedImage,
    Lockable,
    ManifestAttributes,
    NativeScanner,
    Platform,
    Registry,
)


@dataclass(frozen=True, slots=True)
class ProviderOptions:
    """How to reach a registry; flags from the CLI or a function's settings."""

    insecure: bool = False
    username: str | None = None
    password: str | None = None
    concurrency: int = 8
    max_index_children: int = 1024
    """Distinct manifests an index (and its whole tree) may hold; more is refused with
    LimitExceeded before any write (the policy's `maxIndexChildren`)."""
    deadline: float = 60.0
    """Seconds every registry call may take in all (connect, headers, body, retries)."""
    blob_deadline: float = 900.0
    """Seconds a blob upload or a streamed blob copy may take in all."""
    account: str | None = None
    """The cloud account the registry lives in, where the host does not say: an AWS
    account id, a GCP project, an Azure subscription."""
    region: str | None = None
    credentials: Any = None
    """The cloud SDK's own credential object (a boto3 Session, google.auth Credentials,
    an azure-identity TokenCredential); None: the SDK's default chain."""
    data_plane_host: str | None = None
    """Where the registry's OCI `/v2/` API is served when not on its own host (a VPC
    endpoint; a local registry in tests)."""
    create_repositories: bool = False
    """A copy into a missing repository creates it first (a `move` quarantine on a
    registry whose put never creates one, like ECR; registries that create repositories
    on push ignore it)."""


Factory = Callable[[str, ProviderOptions], Registry]
PROVIDERS: PluginRegistry[Factory] = PluginRegistry("registry provider")
"""Provider kind ('oci', 'ecr', 'gar', 'acr') → factory; each provider module registers
itself with `@register(kind)`."""

#: The policy's registry kinds → provider kinds: Harbor and CNCF distribution (zot, …)
#: are both served by the generic OCI provider.
_PROVIDER_OF_KIND = {
    "distribution": "oci",
    "harbor": "oci",
    "oci": "oci",
    "ecr": "ecr",
    "gar": "gar",
    "acr": "acr",
}


def register(kind: str) -> Callable[[Factory], Factory]:
    """Decorator: the factory of the provider for `kind`."""
    return PROVIDERS.register(kind)


def provider_kind(host: str, kind: str | None = None) -> str:
    """'ecr', 'gar', 'acr' or 'oci': for a registry `kind` from the policy
    (`distribution`, `harbor`, `ecr`, `gar`, `acr`) when given, else from the host name."""
    from ..policy import host_kind

    if kind is not None:
        try:
            return _PROVIDER_OF_KIND[kind]
        except KeyError:
            valid = ", ".join(sorted(_PROVIDER_OF_KIND))
            raise UsageError(f"registry kind: got {kind!r}, expected one of: {valid}") from None
    return host_kind(host) or "oci"


def open_registry(
    host: str, options: ProviderOptions | None = None, *, kind: str | None = None
) -> Registry:
    """The provider for `host`, ready to use (close it when done). `kind` is the registry's
    kind from the policy's `registries` section; None: from the host name."""
    return PROVIDERS.get(provider_kind(host, kind))(host, options or ProviderOptions())


from . import cloud_stubs as _cloud_stubs  # noqa: E402  (clouds whose provider is not built)
from . import oci as _oci  # noqa: E402  (registers oci)

register("ecr")(lambda host, options: _ecr_factory(host, options))
register("gar")(lambda host, options: _gar_factory(host, options))
register("acr")(lambda host, options: _acr_factory(host, options))


def _ecr_factory(host: str, options: ProviderOptions) -> Registry:
    from .ecr import make_ecr  # boto3 is imported only when an ECR registry is used

    return make_ecr(host, options)


def _gar_factory(host: str, options: ProviderOptions) -> Registry:
    from .gar import make_gar  # google-cloud is imported only when a GAR registry is used

    return make_gar(host, options)


def _acr_factory(host: str, options: ProviderOptions) -> Registry:
    from .acr import make_acr  # the Azure SDK is imported only when an ACR registry is used

    return make_acr(host, options)


__all__ = [
    "CAP_BATCH_DELETE",
    "CAP_COPY_MOUNT",
    "CAP_LOCK",
    "CAP_MANIFEST_LISTING",
    "CAP_NATIVE_SCAN",
    "CAP_PULL_TIMES",
    "CAP_PUSH_TIMES",
    "CAP_REFERRERS_API",
    "CAP_TAG_DELETE",
    "PROVIDERS",
    "THROTTLE_STATUS",
    "DeleteResult",
    "DeleteStatus",
    "ImageDetails",
    "ListedImage",
    "Lockable",
    "ManifestAttributes",
    "NativeScanner",
    "Platform",
    "ProviderOptions",
    "Registry",
    "open_registry",
    "provider_kind",
    "register",
]
del _cloud_stubs, _oci
