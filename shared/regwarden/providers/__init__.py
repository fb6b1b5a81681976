"""Registry providers behind one protocol, chosen from the registry host.

A dict registry with explicit imports: each provider module registers itself with
`@register(kind)`; this file imports them by name. No discovery by side effect elsewhere.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from ._base import (
    CAP_LOCK,
    CAP_PULL_TIMES,
    CAP_PUSH_TIMES,
    CAP_TAG_DELETE,
    ImageDetails,
    ImageRecord,
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


Factory = Callable[[str, ProviderOptions], Registry]
_FACTORIES: dict[str, Factory] = {}

# Host patterns, tried in order; anything else is generic OCI.
_HOST_KINDS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("ecr", re.compile(r"^\d{12}\.dkr\.ecr(-fips)?\.[a-z0-9-]+\.amazonaws\.com(\.cn)?(:\d+)?$")),
    ("gar", re.compile(r"^[a-z0-9-]+-docker\.pkg\.dev(:\d+)?$")),
    ("acr", re.compile(r"^[a-z0-9]+\.azurecr\.(io|cn|us)(:\d+)?$")),
)


def register(kind: str) -> Callable[[Factory], Factory]:
    def wrap(factory: Factory) -> Factory:
        _FACTORIES[kind] = factory
        return factory

    return wrap


def provider_kind(host: str) -> str:
    """'ecr', 'gar', 'acr' or 'oci' for a registry host."""
    for kind, pattern in _HOST_KINDS:
        if pattern.match(host.lower()):
            return kind
    return "oci"


def open_registry(host: str, options: ProviderOptions | None = None) -> Registry:
    """The provider for `host`, ready to use (close it when done)."""
    kind = provider_kind(host)
    return _FACTORIES[kind](host, options or ProviderOptions())


from . import cloud_stubs as _cloud_stubs  # noqa: E402  (registers gar, acr)
from . import oci as _oci  # noqa: E402  (registers oci)

register("ecr")(lambda host, options: _ecr_factory(host, options))


def _ecr_factory(host: str, options: ProviderOptions) -> Registry:
    from .ecr import make_ecr  # boto3 is imported only when an ECR registry is used

    return make_ecr(host, options)


__all__ = [
    "CAP_LOCK",
    "CAP_PULL_TIMES",
    "CAP_PUSH_TIMES",
    "CAP_TAG_DELETE",
    "ImageDetails",
    "ImageRecord",
    "Platform",
    "ProviderOptions",
    "Registry",
    "open_registry",
    "provider_kind",
    "register",
]
del _cloud_stubs, _oci
