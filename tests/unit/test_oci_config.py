"""Credentials from Docker / containers auth files and `docker-credential-*` helpers."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from regwarden.errors import UsageError
from regwarden.oci import Credentials


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _write_config(directory: Path, doc: object, name: str = "config.json") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(json.dumps(doc))
    return path


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """An environment with an empty HOME and only `extra` auth settings."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {"HOME": str(home), "PATH": os.environ.get("PATH", ""), **extra}


def test_auths_base64_entry(tmp_path: Path) -> None:
    cfg = tmp_path / "docker"
    _write_config(cfg, {"auths": {"registry.example.com": {"auth": _b64("bob:s3:cret")}}})
    creds = Credentials.from_docker_config(
        "registry.example.com", environ=_env(tmp_path, DOCKER_CONFIG=str(cfg))
    )
    assert creds == Credentials(username="bob", password="s3:cret")  # split at the first ':'


def test_auths_key_spellings_and_hub_aliases(tmp_path: Path) -> None:
    env = _env(tmp_path)
    _write_config(
        Path(env["HOME"]) / ".docker",
        {
            "auths": {
                "https://index.docker.io/v1/": {"auth": _b64("hubuser:hubpw")},
                "http://reg.local:5000/v2/": {"username": "u", "password": "p"},
            }
        },
    )
    hub = Credentials.from_docker_config("registry-1.docker.io", environ=env)
    assert hub is not None
    assert hub.username == "hubuser"
    local = Credentials.from_docker_config("reg.local:5000", environ=env)
    assert local == Credentials(username="u", password="p")
    assert Credentials.from_docker_config("reg.local:5001", environ=env) is None


def test_identity_token(tmp_path: Path) -> None:
    cfg = tmp_path / "docker"
    _write_config(cfg, {"auths": {"acr.example.io": {"auth": "", "identitytoken": "refresh-abc"}}})
    creds = Credentials.from_docker_config(
        "acr.example.io", environ=_env(tmp_path, DOCKER_CONFIG=str(cfg))
    )
    assert creds is not None
    assert creds.identity_token == "refresh-abc"
    assert creds.username is None
    assert "refresh-abc" not in repr(creds)


def test_registry_auth_file_wins_over_docker_config(tmp_path: Path) -> None:
    auth_file = _write_config(
        tmp_path / "containers",
        {"auths": {"r.example.com": {"auth": _b64("podman:pw")}}},
        "auth.json",
    )
    cfg = tmp_path / "docker"
    _write_config(cfg, {"auths": {"r.example.com": {"auth": _b64("docker:pw")}}})
    env = _env(tmp_path, DOCKER_CONFIG=str(cfg), REGISTRY_AUTH_FILE=str(auth_file))
    creds = Credentials.from_docker_config("r.example.com", environ=env)
    assert creds is not None
    assert creds.username == "podman"
    # a host only the Docker file knows is still found there
    _write_config(
        cfg,
        {
            "auths": {
                "r.example.com": {"auth": _b64("docker:pw")},
                "o.example.com": {"auth": _b64("o:pw")},
            }
        },
    )
    other = Credentials.from_docker_config("o.example.com", environ=env)
    assert other is not None
    assert other.username == "o"


def test_missing_files_mean_no_credentials(tmp_path: Path) -> None:
    assert Credentials.from_docker_config("r.example.com", environ=_env(tmp_path)) is None


def test_malformed_auth_value_is_a_clear_usage_error(tmp_path: Path) -> None:
    cfg = tmp_path / "docker"
    _write_config(cfg, {"auths": {"r.example.com": {"auth": "%%%not-base64"}}})
    with pytest.raises(UsageError, match="malformed 'auth' value"):
        Credentials.from_docker_config(
            "r.example.com", environ=_env(tmp_path, DOCKER_CONFIG=str(cfg))
        )
    _write_config(cfg, {"auths": {"r.example.com": {"auth": _b64("no-colon")}}})
    with pytest.raises(UsageError, match="expected 'username:password'"):
        Credentials.from_docker_config(
            "r.example.com", environ=_env(tmp_path, DOCKER_CONFIG=str(cfg))
        )
    (cfg / "config.json").write_text("{not json")
    with pytest.raises(UsageError, match="not valid JSON"):
        Credentials.from_docker_config(
            "r.example.com", environ=_env(tmp_path, DOCKER_CONFIG=str(cfg))
        )


def test_incomplete_credentials_rejected() -> None:
    with pytest.raises(UsageError, match="password=missing"):
        Credentials(username="bob")


# -- credential helpers ----------------------------------------------------------------------


def _helper(bin_dir: Path, name: str, answers: dict[str, dict[str, str]]) -> Path:
    """A fake `docker-credential-<name>` that logs the server it was asked about."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    log = bin_dir / f"{name}.log"
    script = bin_dir / f"docker-credential-{name}"
    script.write_text(
        "#!/bin/sh\n"
        'test "$1" = get || exit 3\n'
        "read -r server\n"
        f'echo "$server" >> "{log}"\n'
        'case "$server" in\n'
        + "".join(
            f"  {server}) printf '%s' '{json.dumps(doc)}' ;;\n" for server, doc in answers.items()
        )
        + "  *) echo 'credentials not found in native keychain' >&2; exit 1 ;;\n"
        "esac\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return log


def test_cred_helper_for_host(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    log = _helper(
        bin_dir,
        "test",
        {
            "registry.example.com": {
                "ServerURL": "registry.example.com",
                "Username": "ci",
                "Secret": "tok",
            }
        },
    )
    cfg = tmp_path / "docker"
    _write_config(
        cfg,
        {
            "auths": {"registry.example.com": {"auth": _b64("stale:inline")}},
            "credHelpers": {"registry.example.com": "test"},
        },
    )
    env = _env(tmp_path, DOCKER_CONFIG=str(cfg))
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    creds = Credentials.from_docker_config("registry.example.com", environ=env)
    assert creds == Credentials(username="ci", password="tok")
    assert log.read_text().split() == ["registry.example.com"]


def test_cred_helper_token_username_means_identity_token(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    _helper(bin_dir, "test", {"r.example.com": {"Username": "<token>", "Secret": "refresh-1"}})
    cfg = tmp_path / "docker"
    _write_config(cfg, {"credsStore": "test"})
    env = _env(tmp_path, DOCKER_CONFIG=str(cfg))
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    creds = Credentials.from_docker_config("r.example.com", environ=env)
    assert creds is not None
    assert creds.identity_token == "refresh-1"


def test_creds_store_miss_falls_back_to_inline_auths(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    log = _helper(bin_dir, "test", {})
    cfg = tmp_path / "docker"
    _write_config(cfg, {"credsStore": "test", "auths": {"r.example.com": {"auth": _b64("u:p")}}})
    env = _env(tmp_path, DOCKER_CONFIG=str(cfg))
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    assert Credentials.from_docker_config("r.example.com", environ=env) == Credentials(
        username="u", password="p"
    )
    assert log.read_text().split() == ["r.example.com"]  # asked, knew nothing


def test_missing_helper_binary_is_skipped(tmp_path: Path) -> None:
    cfg = tmp_path / "docker"
    _write_config(
        cfg,
        {
            "credHelpers": {"r.example.com": "absent"},
            "auths": {"r.example.com": {"auth": _b64("u:p")}},
        },
    )
    env = _env(tmp_path, DOCKER_CONFIG=str(cfg))
    env["PATH"] = str(tmp_path / "empty-bin")
    assert Credentials.from_docker_config("r.example.com", environ=env) == Credentials(
        username="u", password="p"
    )
