"""Where keys, trust policies, secrets and inventory files live: a small typed `Location`.

Nothing is fetched here. `file://` paths are resolved against the policy file's directory by
the pure `resolve_file`; `secret://NAME` is resolved locally from the environment by
`resolve_secret`, and `policy_secrets` lists every one a policy names (what a platform's
secret store must serve); the cloud schemes are resolved by the adapters that own the
credentials.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

from ..cloud_endpoints import is_loopback as _is_loopback
from ..errors import UsageError
from ._base import string_value_schema

__all__ = [
    "ALL_SCHEMES",
    "DIRECTORY_SCHEMES",
    "DOCUMENT_SCHEMES",
    "ENDPOINT_SCHEMES",
    "KEY_SCHEMES",
    "SECRET_ENV_PREFIX",
    "SECRET_SCHEMES",
    "Location",
    "LocationScheme",
    "Schemes",
    "policy_secrets",
    "resolve_file",
    "resolve_secret",
    "secret_env_var",
]

SECRET_ENV_PREFIX = "REGWARDEN_SECRET_"  # noqa: S105  # a variable-name prefix


class LocationScheme(enum.StrEnum):
    FILE = "file"
    S3 = "s3"
    GS = "gs"
    AWSKMS = "awskms"
    GCPKMS = "gcpkms"
    AZUREKMS = "azurekms"
    SECRET = "secret"  # noqa: S105  # a scheme name
    HTTPS = "https"
    HTTP = "http"  # loopback hosts only
    PEM = "pem"  # inline PEM text, no URL


ALL_SCHEMES = frozenset(LocationScheme)
KEY_SCHEMES = ALL_SCHEMES
DOCUMENT_SCHEMES = frozenset(
    {
        LocationScheme.FILE,
        LocationScheme.S3,
        LocationScheme.GS,
        LocationScheme.HTTPS,
        LocationScheme.HTTP,
    }
)
DIRECTORY_SCHEMES = frozenset({LocationScheme.FILE, LocationScheme.S3, LocationScheme.GS})
ENDPOINT_SCHEMES = frozenset({LocationScheme.HTTPS, LocationScheme.HTTP, LocationScheme.SECRET})
SECRET_SCHEMES = frozenset({LocationScheme.SECRET})

_URL = re.compile(r"([a-z][a-z0-9+.-]*)://(.*)", re.DOTALL)
_PEM_BEGIN = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----")
_SECRET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]*")
_GCP_KEY = re.compile(
    r"projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+(?:/cryptoKeyVersions/[^/]+)?"
)
_FORM = {
    LocationScheme.FILE: "file://PATH",
    LocationScheme.S3: "s3://BUCKET/KEY",
    LocationScheme.GS: "gs://BUCKET/OBJECT",
    LocationScheme.AWSKMS: "awskms://[ENDPOINT]/KEY",
    LocationScheme.GCPKMS: "gcpkms://projects/…/cryptoKeys/KEY",
    LocationScheme.AZUREKMS: "azurekms://VAULT/KEY",
    LocationScheme.SECRET: "secret://NAME",
    LocationScheme.HTTPS: "https://URL",
    LocationScheme.HTTP: "http://LOOPBACK-HOST/…",
    LocationScheme.PEM: "inline PEM",
}


def _forms(allowed: frozenset[LocationScheme]) -> str:
    return ", ".join(form for scheme, form in _FORM.items() if scheme in allowed)


@dataclass(frozen=True)
class Location:
    """A parsed location. `target` is everything after `scheme://` (for PEM, the PEM text).

    `host` and `path` split `target` at the first `/` for the URL-like schemes (s3, gs,
    https, http, awskms, azurekms: bucket/endpoint/vault and the rest); for file, secret,
    gcpkms and pem `host` is empty and `path` is the whole target.
    """

    scheme: LocationScheme
    target: str
    raw: str

    @classmethod
    def parse(
        cls,
        value: object,
        *,
        allowed: frozenset[LocationScheme] = ALL_SCHEMES,
        what: str = "a location",
    ) -> Location:
        """Parse a location string; raise ValueError naming the accepted forms.

        `allowed` restricts the schemes (messages list only those); `what` names the thing
        being located in messages ("a cosign public key").
        """
        location = value if isinstance(value, Location) else cls._parse(value, allowed, what)
        if location.scheme not in allowed:
            got = _FORM[location.scheme].split("/")[0] + "//"
            if location.scheme is LocationScheme.PEM:
                got = "inline PEM"
            raise ValueError(f"got {got} for {what}, expected one of: {_forms(allowed)}")
        return location

    @classmethod
    def _parse(cls, value: object, allowed: frozenset[LocationScheme], what: str) -> Location:
        expected = f"expected {what}: {_forms(allowed)}"
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"got {value!r}, {expected}")
        text = value.strip()
        if text.startswith("-----BEGIN "):
            _check_pem(text)
            return cls(scheme=LocationScheme.PEM, target=text, raw=value)
        match = _URL.fullmatch(text)
        if match is None:
            hint = ""
            if "://" not in text and LocationScheme.FILE in allowed:
                hint = f"; did you mean 'file://{text}'?"
            raise ValueError(f"got {text!r}, {expected}{hint}")
        name, target = match.groups()
        try:
            scheme = LocationScheme(name)
        except ValueError:
            raise ValueError(f"got scheme {name + '://'!r} in {text!r}, {expected}") from None
        if scheme is LocationScheme.PEM:
            raise ValueError(f"got {text!r}: inline PEM is written as the PEM text itself")
        location = cls(scheme=scheme, target=target, raw=text)
        location._check()
        return location

    @property
    def host(self) -> str:
        if self.scheme in _SPLIT_SCHEMES:
            return self.target.partition("/")[0]
        return ""

    @property
    def path(self) -> str:
        if self.scheme in _SPLIT_SCHEMES:
            return self.target.partition("/")[2]
        return self.target

    def __str__(self) -> str:
        return self.raw

    def _check(self) -> None:
        text, scheme = self.raw, self.scheme
        if scheme is LocationScheme.FILE:
            if not self.target or "\x00" in self.target:
                raise ValueError(f"got {text!r}, expected file://PATH with a non-empty path")
        elif scheme in (LocationScheme.S3, LocationScheme.GS):
            if not self.host or not self.path:
                raise ValueError(f"got {text!r}, expected {scheme}://BUCKET/KEY")
        elif scheme is LocationScheme.AWSKMS:
            if not self.path:
                raise ValueError(
                    f"got {text!r}, expected awskms://[ENDPOINT]/KEY-ID, e.g. "
                    "'awskms:///alias/release' or 'awskms:///arn:aws:kms:…'"
                )
        elif scheme is LocationScheme.GCPKMS:
            if not _GCP_KEY.fullmatch(self.target):
                raise ValueError(
                    f"got {text!r}, expected gcpkms://projects/P/locations/L/keyRings/R/"
                    "cryptoKeys/K[/cryptoKeyVersions/V]"
                )
        elif scheme is LocationScheme.AZUREKMS:
            if not self.host or not self.path:
                raise ValueError(f"got {text!r}, expected azurekms://VAULT-HOST/KEY-NAME")
        elif scheme is LocationScheme.SECRET:
            if not _SECRET_NAME.fullmatch(self.target) or self.target.endswith("/"):
                raise ValueError(
                    f"got {text!r}, expected secret://NAME where NAME uses letters, digits, "
                    "'.', '_', '-' and '/'"
                )
        else:  # https, http
            _check_url(text, scheme)

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: type[Any], handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return string_value_schema(cls.parse)

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {
            "type": "string",
            "minLength": 1,
            "description": f"A location: {_forms(ALL_SCHEMES)}.",
        }


_SPLIT_SCHEMES = frozenset(
    {
        LocationScheme.S3,
        LocationScheme.GS,
        LocationScheme.HTTPS,
        LocationScheme.HTTP,
        LocationScheme.AWSKMS,
        LocationScheme.AZUREKMS,
    }
)


def _check_pem(text: str) -> None:
    begin = _PEM_BEGIN.match(text)
    if begin is None or f"-----END {begin.group(1)}-----" not in text:
        raise ValueError(
            "got inline PEM without a matching '-----END …-----' line, expected a complete "
            "PEM block"
        )


def _check_url(text: str, scheme: LocationScheme) -> None:
    try:
        parts = urlsplit(text)
        host = parts.hostname
        _ = parts.port  # raises ValueError on a malformed port
    except ValueError as exc:
        raise ValueError(f"got {text!r}, expected a valid {scheme} URL: {exc}") from None
    if not host:
        raise ValueError(f"got {text!r}, expected {scheme}://HOST/…")
    if scheme is LocationScheme.HTTP and not _is_loopback(host):
        raise ValueError(
            f"got {text!r}: plain http is allowed only for loopback hosts (127.0.0.1, ::1, "
            "localhost); expected https://"
        )


@dataclass(frozen=True)
class Schemes:
    """Annotation metadata restricting a `Location` field to some schemes.

    `Annotated[Location, Schemes(DOCUMENT_SCHEMES, "a trust policy")]`.
    """

    allowed: frozenset[LocationScheme]
    what: str

    def parse(self, value: object) -> Location:
        return Location.parse(value, allowed=self.allowed, what=self.what)

    def __get_pydantic_core_schema__(
        self, source: type[Any], handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return string_value_schema(self.parse)

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {
            "type": "string",
            "minLength": 1,
            "description": f"Location of {self.what}: {_forms(self.allowed)}.",
        }


def resolve_file(location: Location, base_dir: str | PurePath) -> Path:
    """The filesystem path of a `file://` location; relative paths are relative to `base_dir`
    (the policy file's directory). Pure: nothing is read or checked on disk."""
    if location.scheme is not LocationScheme.FILE:
        raise ValueError(f"got {location.scheme}:// location {location.raw!r}, expected file://")
    path = Path(location.target)
    return path if path.is_absolute() else Path(base_dir) / path


def secret_env_var(name: str) -> str:
    """The environment variable that holds `secret://NAME` when running locally:
    `regwarden/slack-hook` -> `REGWARDEN_SECRET_REGWARDEN_SLACK_HOOK`."""
    name = name.removeprefix("secret://")
    return SECRET_ENV_PREFIX + re.sub(r"[^A-Z0-9]", "_", name.upper())


def policy_secrets(policy: BaseModel, *, notifications: bool = True) -> dict[str, str]:
    """Every `secret://NAME` the policy mentions: environment variable name → NAME (the
    variable `resolve_secret` looks up for it), so a platform's secret store can serve
    exactly these. Without `notifications`, the channel secrets (webhook URLs, HMAC keys)
    are left out. Pure: nothing is fetched."""
    found: dict[str, str] = {}

    def walk(value: object) -> None:
        if isinstance(value, Location):
            if value.scheme is LocationScheme.SECRET:
                found[secret_env_var(value.target)] = value.target
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                if value is policy and name == "notifications" and not notifications:
                    continue
                walk(getattr(value, name))
        elif isinstance(value, Mapping):
            for item in value.values():
                walk(item)
        elif isinstance(value, list | tuple | set | frozenset):
            for item in value:
                walk(item)

    walk(policy)
    return found


def resolve_secret(name: str, env: Mapping[str, str]) -> str:
    """The value of `secret://NAME` from `env` (pass `os.environ` at the edge).

    NAME may be given with or without the `secret://` prefix. A missing or empty variable is
    a configuration error (exit 2); the message names the variable, never a value.
    """
    bare = name.removeprefix("secret://")
    if not bare or not _SECRET_NAME.fullmatch(bare):
        raise UsageError(f"got secret name {name!r}, expected letters, digits, '.', '_', '-', '/'")
    variable = secret_env_var(bare)
    value = env.get(variable)
    if not value:
        state = "is empty" if value == "" else "is not set"
        raise UsageError(
            f"secret {bare!r} not found: environment variable {variable} {state}",
            hint=f"export {variable}=… or store the secret in the platform's secret store",
        )
    return value
