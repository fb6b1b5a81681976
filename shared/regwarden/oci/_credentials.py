"""Registry credentials, including lookup in Docker / containers auth files and helpers."""

from __future__ import annotations

import base64
import binascii
import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UsageError

_HUB_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "docker.io", "registry-1.docker.io")
_HUB_HOSTS = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
_HELPER_TIMEOUT = 15.0


@dataclass(frozen=True, slots=True, repr=False)
class Credentials:
    """Username + password, or an identity (OAuth2 refresh) token. Never printed."""

    username: str | None = None
    password: str | None = None
    identity_token: str | None = None

    def __post_init__(self) -> None:
        if self.identity_token is None and (self.username is None or self.password is None):
            raise UsageError(
                "incomplete credentials: got "
                f"username={'set' if self.username else 'missing'}, "
                f"password={'set' if self.password else 'missing'}; "
                "expected both, or an identity token"
            )

    def __repr__(self) -> str:
        kind = "identity-token" if self.identity_token else f"user={self.username!r}"
        return f"Credentials({kind})"

    @classmethod
    def from_docker_config(
        cls, host: str, *, environ: Mapping[str, str] | None = None
    ) -> Credentials | None:
        """Credentials for `host` the way docker/podman/skopeo find them, or None.

        Files, first hit wins: `$REGISTRY_AUTH_FILE`, then `$DOCKER_CONFIG/config.json`
        (default `~/.docker/config.json`). Within a file: `credHelpers[host]`, then
        `credsStore`, then the inline `auths` entry (base64 `auth`, `username`/`password`,
        `identitytoken`). Helpers run as `docker-credential-<name> get` when installed.
        """
        env = os.environ if environ is None else environ
        for path in _config_paths(env):
            try:
                text = path.read_text(encoding="utf-8")
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise UsageError(f"cannot read registry auth file {path}: {exc}") from None
            try:
                doc = json.loads(text)
            except ValueError as exc:
                raise UsageError(f"registry auth file {path} is not valid JSON: {exc}") from None
            if not isinstance(doc, dict):
                raise UsageError(f"registry auth file {path}: got a JSON array, expected an object")
            found = _from_document(doc, host, path, env)
            if found is not None:
                return found
        return None


def _config_paths(env: Mapping[str, str]) -> list[Path]:
    paths: list[Path] = []
    if env.get("REGISTRY_AUTH_FILE"):
        paths.append(Path(env["REGISTRY_AUTH_FILE"]))
    if env.get("DOCKER_CONFIG"):
        paths.append(Path(env["DOCKER_CONFIG"]) / "config.json")
    else:
        home = env.get("HOME") or str(Path.home())
        paths.append(Path(home) / ".docker" / "config.json")
    return paths


def _normalise(key: str) -> str:
    """`https://host:5000/v1/` → `host:5000` (auth file keys come in many spellings)."""
    text = key.strip()
    if "://" in text:
        text = text.split("://", 1)[1]
    return text.split("/", 1)[0].lower()


def _candidate_keys(host: str) -> list[str]:
    host = _normalise(host)
    if host in _HUB_HOSTS:
        return list(_HUB_KEYS)
    return [host]


def _lookup(section: Mapping[str, Any], host: str) -> Any:
    """The entry for `host` in an `auths`/`credHelpers` map: exact key, then any spelling."""
    keys = _candidate_keys(host)
    for key in keys:
        if key in section:
            return section[key]
    wanted = {_normalise(k) for k in keys}
    for key, value in section.items():
        if _normalise(key) in wanted:
            return value
    return None


def _from_document(
    doc: Mapping[str, Any], host: str, path: Path, env: Mapping[str, str]
) -> Credentials | None:
    helpers = doc.get("credHelpers")
    if isinstance(helpers, Mapping):
        helper = _lookup(helpers, host)
        if isinstance(helper, str) and helper:
            found = _from_helper(helper, host, env)
            if found is not None:
                return found
    store = doc.get("credsStore")
    if isinstance(store, str) and store:
        found = _from_helper(store, host, env)
        if found is not None:
            return found
    auths = doc.get("auths")
    if isinstance(auths, Mapping):
        entry = _lookup(auths, host)
        if isinstance(entry, Mapping):
            return _from_auth_entry(entry, host, path)
    return None


def _from_auth_entry(entry: Mapping[str, Any], host: str, path: Path) -> Credentials | None:
    token = entry.get("identitytoken")
    if isinstance(token, str) and token:
        return Credentials(identity_token=token)
    username, password = entry.get("username"), entry.get("password")
    encoded = entry.get("auth")
    if isinstance(encoded, str) and encoded:
        try:
            decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise UsageError(
                f"{path}: auths entry for {host} has a malformed 'auth' value; "
                "expected base64 of 'username:password'"
            ) from None
        username, sep, password = decoded.partition(":")
        if not sep:
            raise UsageError(
                f"{path}: auths entry for {host}: got base64 of a value without ':', "
                "expected 'username:password'"
            )
    if isinstance(username, str) and username and isinstance(password, str):
        return Credentials(username=username, password=password)
    return None


def _from_helper(name: str, host: str, env: Mapping[str, str]) -> Credentials | None:
    """Ask `docker-credential-<name> get`; None when it is absent or knows nothing."""
    binary = shutil.which(f"docker-credential-{name}", path=env.get("PATH"))
    if binary is None:
        return None
    server = _normalise(host)
    if server in _HUB_HOSTS:
        server = _HUB_KEYS[0]
    try:
        proc = subprocess.run(
            [binary, "get"],
            input=server.encode(),
            capture_output=True,
            timeout=_HELPER_TIMEOUT,
            env=dict(env),
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UsageError(f"credential helper docker-credential-{name} failed: {exc}") from None
    if proc.returncode != 0:
        return None  # "credentials not found in native keychain" and friends
    try:
        doc = json.loads(proc.stdout)
    except ValueError:
        raise UsageError(
            f"credential helper docker-credential-{name} printed invalid JSON; "
            "expected {'Username': ..., 'Secret': ...}"
        ) from None
    if not isinstance(doc, dict):
        return None
    username, secret = doc.get("Username"), doc.get("Secret")
    if not isinstance(secret, str) or not secret:
        return None
    if username == "<token>":
        return Credentials(identity_token=secret)
    if isinstance(username, str) and username:
        return Credentials(username=username, password=secret)
    return None
