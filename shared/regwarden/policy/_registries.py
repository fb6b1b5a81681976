"""The `registries` section: which registries regwarden works with, and what each can do.

A registry's `kind` decides its provider, what it can serve (scan sources) and its default
scan sources; nothing is learned by probing. A host the section does not list keeps the
behaviour it had before the section existed: ECR, GAR or ACR by its host name, anything
else a CNCF distribution registry (on which an explicit `harbor` source is still read, as
it always was).

To add a per-registry key: add a field to `RegistryEntry` and, if only some kinds read it,
list it in `_KIND_ONLY_KEYS`. `clair` is one such key, read on every kind: a Clair v4 that
scans this registry's images makes the `clair` scan source servable there.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import field_validator, model_validator

from ..cloud_endpoints import is_loopback as _is_loopback
from ._base import Loc, PolicyModel, rule_error
from ._location import SECRET_SCHEMES, Location, Schemes

__all__ = [
    "CLAIR_SOURCE",
    "KIND_SOURCES",
    "REGISTRY_KINDS",
    "UNLISTED_GENERIC_SOURCES",
    "ClairConfig",
    "RegistryEntry",
    "RegistryKind",
    "check_registries",
    "host_kind",
    "native_sources",
]

RegistryKind = Literal["distribution", "harbor", "ecr", "gar", "acr"]
REGISTRY_KINDS: tuple[str, ...] = ("distribution", "harbor", "ecr", "gar", "acr")

#: Scan reports attached as OCI referrers: read from any OCI registry.
_REFERRER_SOURCES = ("trivy-referrer", "grype-referrer")

#: What each kind of registry can serve as a scan source (`vulnerabilities.sources`).
#: `cosign-vuln` (signed attestations) lives in any OCI registry. `ecr` and `inspector`
#: are one read: ECR's scan findings API, which carries Amazon Inspector's findings when
#: the registry uses enhanced scanning. GAR's `artifact-analysis` reads Artifact Analysis's
#: occurrences; ACR's `defender` reads Defender for Containers' sub-assessments.
KIND_SOURCES: dict[str, frozenset[str]] = {
    "distribution": frozenset({"cosign-vuln", *_REFERRER_SOURCES}),
    "harbor": frozenset({"harbor", "cosign-vuln", *_REFERRER_SOURCES}),
    "ecr": frozenset({"ecr", "inspector", "cosign-vuln", *_REFERRER_SOURCES}),
    "gar": frozenset({"artifact-analysis", "cosign-vuln", *_REFERRER_SOURCES}),
    "acr": frozenset({"defender", "cosign-vuln", *_REFERRER_SOURCES}),
}

#: An unlisted, non-cloud host: a distribution registry by default, but an explicit
#: `harbor` source is read there (with `REGWARDEN_HARBOR_API` or the host's own API), as it
#: was before registries were listed.
UNLISTED_GENERIC_SOURCES = frozenset({"harbor", "cosign-vuln", *_REFERRER_SOURCES})

#: The scan source a registry entry's `clair` setting makes servable, on any kind.
CLAIR_SOURCE = "clair"

#: The registry's own scanner, read by default when `vulnerabilities.sources` is unset.
_NATIVE: dict[str, tuple[str, ...]] = {
    "ecr": ("ecr",),
    "harbor": ("harbor",),
    "gar": ("artifact-analysis",),
    "acr": ("defender",),
}

#: Keys only some kinds read; anything else would be accepted and ignored.
_KIND_ONLY_KEYS: dict[str, tuple[str, frozenset[str]]] = {"api": ("api", frozenset({"harbor"}))}

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOST = re.compile(rf"(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9a-f:.]+\])(?::[0-9]{{1,5}})?")
_CLOUD_HOSTS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("ecr", re.compile(r"^\d{12}\.dkr\.ecr(-fips)?\.[a-z0-9-]+\.amazonaws\.com(\.cn)?(:\d+)?$")),
    # gcr.io domains are served by Artifact Registry since Container Registry's shutdown
    ("gar", re.compile(r"^([a-z0-9-]+-docker\.pkg\.dev|((us|eu|asia)\.)?gcr\.io)(:\d+)?$")),
    ("acr", re.compile(r"^[a-z0-9]+\.azurecr\.(io|cn|us)(:\d+)?$")),
)
_HOST_FORMS = {
    "ecr": "ACCOUNT.dkr.ecr.REGION.amazonaws.com",
    "gar": "LOCATION-docker.pkg.dev or [us.|eu.|asia.]gcr.io",
    "acr": "NAME.azurecr.io",
}


def host_kind(host: str) -> str | None:
    """`ecr`, `gar` or `acr` when the host name says so; None for any other host."""
    name = host.lower()
    for kind, pattern in _CLOUD_HOSTS:
        if pattern.match(name):
            return kind
    return None


def native_sources(kind: str) -> tuple[str, ...]:
    """The registry's own scan sources, read when `vulnerabilities.sources` is unset."""
    return _NATIVE.get(kind, ())


def _check_clair_url(value: str) -> str:
    text = value.strip().rstrip("/")
    try:
        parts = urlsplit(text)
        host = parts.hostname
        _ = parts.port  # raises ValueError on a malformed port
    except ValueError as exc:
        raise ValueError(f"got {value!r}, expected an https:// URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not host:
        raise ValueError(f"got {value!r}, expected https://HOST[:PORT][/PATH]")
    if parts.query or parts.fragment or parts.username or any(c.isspace() for c in text):
        raise ValueError(f"got {value!r}, expected a URL without user, query or fragment")
    # The requests carry a bearer JWT and a registry pull token: never in the clear
    # beyond this machine.
    if parts.scheme == "http" and not _is_loopback(host):
        raise ValueError(
            f"got {value!r}: plain http to a non-loopback host; expected https:// "
            "(requests carry Clair's JWT and a registry pull token)"
        )
    return text


class ClairConfig(PolicyModel):
    """A Clair v4 that scans this registry's images (the `clair` scan source)."""

    url: str
    """Where Clair's API is: `https://clair.example.com` (the indexer's
    `/indexer/api/v1/...` and the matcher's `/matcher/api/v1/...` under it, as a combined
    Clair or a gateway in front of both serves them); http only on loopback."""

    psk: Annotated[Location, Schemes(SECRET_SCHEMES, "Clair's pre-shared key")] | None = None
    """`secret://NAME` holding Clair's PSK exactly as Clair's `auth.psk.key` has it
    (base64): requests carry an HS256 JWT signed with it, issuer `regwarden` (list it in
    Clair's `auth.psk.iss`). Unset: Clair without authentication."""

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _check_clair_url(value)


class RegistryEntry(PolicyModel):
    """One registry regwarden works with."""

    host: str
    """`host[:port]` as images name it (`registry.example.com`, `127.0.0.1:5000`,
    `123456789012.dkr.ecr.eu-west-1.amazonaws.com`); no scheme, no path."""

    kind: RegistryKind
    """`distribution` (CNCF distribution, zot, …), `harbor`, `ecr`, `gar` or `acr`: decides
    the provider, the scan sources it can serve and the default ones."""

    api: str | None = None
    """Harbor only: the API base when it is not at the registry's own address
    (`https://harbor.example.com`, with or without `/api/v2.0`). Default: the registry's
    scheme and host, or `REGWARDEN_HARBOR_API`."""

    insecure: bool = False
    """Allow plain HTTP to this non-loopback host (and its `api`). Loopback always may."""

    clair: ClairConfig | None = None
    """A Clair v4 scanning this registry's images: makes the `clair` scan source servable
    here (any kind)."""

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        text = value.strip()
        if "://" in text:
            raise ValueError(
                f"got {value!r}, expected host[:port] without a scheme "
                f"(e.g. {text.split('://', 1)[1].split('/', 1)[0]!r})"
            )
        if not _HOST.fullmatch(text.lower()):
            raise ValueError(
                f"got {value!r}, expected a registry host[:port] such as "
                "'registry.example.com' or '127.0.0.1:5000' (no path)"
            )
        return text.lower()

    @field_validator("api")
    @classmethod
    def _api(cls, value: str) -> str:
        text = value.strip().rstrip("/")
        try:
            parts = urlsplit(text)
            host = parts.hostname
            _ = parts.port  # raises ValueError on a malformed port
        except ValueError as exc:
            raise ValueError(f"got {value!r}, expected an https:// URL: {exc}") from None
        if parts.scheme not in ("http", "https") or not host:
            raise ValueError(f"got {value!r}, expected https://HOST[:PORT][/api/v2.0]")
        if parts.query or parts.fragment or any(c.isspace() for c in text):
            raise ValueError(f"got {value!r}, expected a URL without query or fragment")
        return text

    @model_validator(mode="after")
    def _check(self) -> RegistryEntry:
        problems: list[tuple[Loc, str]] = []
        for field, (key, kinds) in _KIND_ONLY_KEYS.items():
            if getattr(self, field) is not None and self.kind not in kinds:
                problems.append(
                    (
                        (key,),
                        f"'{key}' is read only for kind {' or '.join(sorted(kinds))}, "
                        f"not {self.kind!r}; remove it",
                    )
                )
        if self.api is not None and self.api.startswith("http://") and not self.insecure:
            host = urlsplit(self.api).hostname or ""
            if not _is_loopback(host):
                problems.append(
                    (
                        ("api",),
                        f"got {self.api!r}: plain http to a non-loopback host; expected "
                        "https://, or 'insecure: true' if you really mean it",
                    )
                )
        form = _HOST_FORMS.get(self.kind)
        if form is not None and host_kind(self.host) != self.kind:
            problems.append(
                (("host",), f"got {self.host!r} for kind {self.kind!r}, expected {form}")
            )
        if problems:
            raise rule_error(problems)
        return self

    def sources(self) -> frozenset[str]:
        """The scan sources this registry can serve (its kind's, and `clair` when it has a
        Clair)."""
        own = KIND_SOURCES[self.kind]
        return own | {CLAIR_SOURCE} if self.clair is not None else own


def check_registries(entries: tuple[RegistryEntry, ...]) -> list[tuple[Loc, str]]:
    """Document rules of the section: each host once."""
    problems: list[tuple[Loc, str]] = []
    first: dict[str, int] = {}
    for index, entry in enumerate(entries):
        if entry.host in first:
            problems.append(
                (
                    ("registries", index, "host"),
                    f"duplicate host {entry.host!r} (first at registries[{first[entry.host]}])",
                )
            )
        first.setdefault(entry.host, index)
    return problems
