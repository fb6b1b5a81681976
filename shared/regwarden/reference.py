"""Image references: parse and print every form the distribution grammar allows.

Grammar (distribution/reference):

    reference  := name [ ":" tag ] [ "@" digest ]
    name       := [ domain "/" ] path ( "/" path )*
    domain     := host [ ":" port ]      host may be an IPv6 literal in brackets
    path       := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
    tag        := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
    digest     := algorithm ":" hex      (sha256: 64 hex, sha512: 128 hex)

The first component is a registry host when it contains "." or ":", is "localhost",
or is a bracketed IPv6 literal; otherwise the registry is Docker Hub, where single-name
repositories live under "library/".
"""

from __future__ import annotations

import re
from functools import cached_property
from typing import Any

from pydantic import BaseModel, ConfigDict, model_serializer, model_validator

from .errors import InvalidReference

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})

_PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST = re.compile(r"([a-z0-9]+(?:[.+_-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)")
_DIGEST_HEX_LEN = {"sha256": 64, "sha384": 96, "sha512": 128}
_HOSTNAME = re.compile(
    r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?))*"
)
_IPV6 = re.compile(r"\[[0-9a-fA-F:.]+(?:%[A-Za-z0-9]+)?\]")
_PORT = re.compile(r"[0-9]{1,5}")
_MAX_NAME = 255


def is_digest(reference: str) -> bool:
    """Whether a manifest reference (the part after `name@` or `name:`) is a digest rather
    than a tag: a tag never holds a colon. Not a validation (`validate_digest` is)."""
    return ":" in reference


def validate_digest(value: str, *, original: str | None = None) -> str:
    """Return `value` if it is a well-formed digest, else raise InvalidReference."""
    m = _DIGEST.fullmatch(value)
    where = original if original is not None else value
    if m is None:
        raise InvalidReference(where, f"malformed digest {value!r} (expected algorithm:hex)")
    algo, hexpart = m.groups()
    want = _DIGEST_HEX_LEN.get(algo)
    if want is None:
        raise InvalidReference(
            where, f"unsupported digest algorithm {algo!r}; valid: {', '.join(_DIGEST_HEX_LEN)}"
        )
    if len(hexpart) != want or not re.fullmatch(r"[0-9a-f]+", hexpart):
        raise InvalidReference(
            where, f"{algo} digest must be {want} lowercase hex characters, got {hexpart!r}"
        )
    return value


def _validate_host(host: str, original: str) -> None:
    if host.startswith("["):
        m = re.fullmatch(r"(\[[^\]]*\])(?::(.*))?", host)
        if m is None or not _IPV6.fullmatch(m.group(1)):
            raise InvalidReference(original, f"malformed IPv6 registry host {host!r}")
        port = m.group(2)
    else:
        name, _, port = host.partition(":")
        if not name or not _HOSTNAME.fullmatch(name):
            raise InvalidReference(original, f"malformed registry host {host!r}")
        if ":" in host and not port:
            raise InvalidReference(original, f"empty port in registry host {host!r}")
    if port and (not _PORT.fullmatch(port) or not 0 < int(port) < 65536):
        raise InvalidReference(original, f"invalid port {port!r} in registry host {host!r}")


def _looks_like_host(component: str) -> bool:
    return (
        "." in component
        or ":" in component
        or component == "localhost"
        or component.startswith("[")
        or component != component.lower()  # only hosts may carry upper case
    )


class ImageRef(BaseModel):
    """A fully-qualified image reference. At least one of `tag` or `digest` may be absent."""

    model_config = ConfigDict(frozen=True)

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, data: Any) -> Any:
        if isinstance(data, str):
            parsed = cls.parse(data)
            return {
                "registry": parsed.registry,
                "repository": parsed.repository,
                "tag": parsed.tag,
                "digest": parsed.digest,
            }
        return data

    @model_serializer(mode="plain")
    def _to_string(self) -> str:
        """In JSON (alerts, verdicts, --output json) a reference is its canonical string."""
        return str(self)

    @classmethod
    def parse(cls, text: str) -> ImageRef:
        """Parse any reference form; raise InvalidReference naming what is wrong."""
        original = text
        if not text or text != text.strip():
            raise InvalidReference(original, "empty or surrounded by white space")
        if any(c.isspace() for c in text):
            raise InvalidReference(original, "contains white space")
        if "://" in text:
            raise InvalidReference(original, "a reference has no URL scheme; drop 'https://'")

        digest: str | None = None
        if "@" in text:
            text, _, digest = text.partition("@")
            if "@" in digest:
                raise InvalidReference(original, "more than one '@'")
            validate_digest(digest, original=original)
        # A tag follows the last ':' after the last '/', so a host port is never taken as a tag.
        tag: str | None = None
        last_slash = text.rfind("/")
        colon = text.rfind(":")
        if colon > last_slash and not text.endswith("]"):
            text, tag = text[:colon], text[colon + 1 :]
            if not _TAG.fullmatch(tag):
                raise InvalidReference(original, f"invalid tag {tag!r}")
        if not text:
            raise InvalidReference(original, "missing repository name")

        first, sep, rest = text.partition("/")
        if sep and _looks_like_host(first):
            registry, path = first, rest
            _validate_host(registry, original)
        else:
            registry, path = DOCKER_HUB, text
        if registry.lower() in _HUB_ALIASES:
            registry = DOCKER_HUB
        if not path:
            raise InvalidReference(original, "missing repository name after the registry")
        components = path.split("/")
        for comp in components:
            if comp == "":
                raise InvalidReference(original, "empty path component ('//' or trailing '/')")
            if comp != comp.lower() and _PATH_COMPONENT.fullmatch(comp.lower()):
                raise InvalidReference(original, f"repository name must be lowercase: {comp!r}")
            if not _PATH_COMPONENT.fullmatch(comp):
                raise InvalidReference(
                    original,
                    f"invalid repository path component {comp!r} "
                    "(lowercase letters, digits and single . _ __ - separators)",
                )
        if registry == DOCKER_HUB and len(components) == 1:
            path = f"library/{path}"
        if len(registry) + 1 + len(path) > _MAX_NAME:
            raise InvalidReference(original, f"name longer than {_MAX_NAME} characters")
        return cls(registry=registry, repository=path, tag=tag, digest=digest)

    # -- derived views -------------------------------------------------------------------

    @cached_property
    def api_host(self) -> str:
        """Host (and port) to speak the Distribution API to."""
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    @property
    def name(self) -> str:
        """registry/repository, without tag or digest."""
        return f"{self.registry}/{self.repository}"

    @property
    def reference(self) -> str:
        """What to ask the manifest endpoint for: the digest when known, never a tag over it."""
        if self.digest:
            return self.digest
        return self.tag or "latest"

    @property
    def is_loopback(self) -> bool:
        reg = self.registry
        host = reg[1 : reg.index("]")] if reg.startswith("[") else reg.split(":", 1)[0]
        return host in {"localhost", "::1"} or host.startswith("127.")

    def with_digest(self, digest: str) -> ImageRef:
        validate_digest(digest)
        return self.model_copy(update={"digest": digest})

    def with_tag(self, tag: str | None) -> ImageRef:
        if tag is not None and not _TAG.fullmatch(tag):
            raise InvalidReference(tag, "invalid tag")
        return self.model_copy(update={"tag": tag})

    def in_repository(self, repository: str) -> ImageRef:
        return self.model_copy(update={"repository": repository})

    def __str__(self) -> str:
        out = self.name
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out

    def familiar(self) -> str:
        """Short form as `docker` prints it (drops docker.io/ and library/)."""
        text = str(self)
        if self.registry == DOCKER_HUB:
            text = text.removeprefix("docker.io/").removeprefix("library/")
        return text


def short_digest(digest: str, length: int = 12) -> str:
    """`sha256:abcdef…` → `abcdef012345` (for tags such as quarantined-<short>)."""
    return digest.split(":", 1)[-1][:length]
