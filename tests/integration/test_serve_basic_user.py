"""The receiver's Basic-auth user name is configurable: `serve --basic-user USER` or
REGWARDEN_BASIC_USER (a registry's notification endpoint may only send Basic credentials
with its own user name). The start-up line names the user; Basic with another user is
refused (401); '' turns Basic off; a user name with ':' is refused before serve starts."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from support.cli import run_cli
from support.gate import TOKEN
from support.streams import Serve, cli_env

from regwarden.devtools import free_port

pytestmark = pytest.mark.integration
POLICY = """\
apiVersion: regwarden/v1
kind: Policy
repositories:
  - match: "apps/**"
    tags: {forbidden: [latest]}
"""
NO_EVENTS = b'{"events": []}'


def basic(user: str, password: str = TOKEN) -> dict[str, str]:
    pair = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {pair}", "Content-Type": "application/json"}


def post(serve: Serve, headers: dict[str, str]) -> int:
    url = f"{serve.url}/events/distribution"
    return httpx.post(url, content=NO_EVENTS, headers=headers, timeout=10).status_code


def auth_line(serve: Serve) -> str:
    line = next(
        ln
        for ln in serve.log.read_text().splitlines()
        if ln.startswith("regwarden serve listening on")
    )
    return next(part for part in line.split(" · ") if part.startswith("auth "))


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Serve]]:
    started: list[Serve] = []

    def _start(name: str, *args: str, env: dict[str, str] | None = None) -> Serve:
        root = tmp_path / name
        root.mkdir()
        (root / "regwarden.yaml").write_text(POLICY)
        serve = Serve.start(
            root,
            root / "regwarden.yaml",
            free_port(),
            workers=1,
            registries=["127.0.0.1:1"],
            args=args,
            env=env,
        )
        started.append(serve)
        return serve

    yield _start
    for serve in started:
        serve.stop()


def test_the_basic_user_is_set_by_option_and_by_environment(start: Callable[..., Serve]) -> None:
    by_option = start("option", "--basic-user", "ci-bot")
    assert auth_line(by_option) == "auth 1 token(s): Bearer, Basic (user ci-bot), or verbatim"
    assert post(by_option, basic("ci-bot")) == 202
    assert post(by_option, basic("regwarden")) == 401  # the default user no longer
    assert post(by_option, basic("ci-bot", "wrong")) == 401
    assert post(by_option, {"Authorization": f"Bearer {TOKEN}"}) == 202
    by_env = start("env", env={"REGWARDEN_BASIC_USER": "harbor-hook"})
    assert "Basic (user harbor-hook)" in auth_line(by_env)
    assert post(by_env, basic("harbor-hook")) == 202
    assert post(by_env, basic("ci-bot")) == 401
    default = start("default")
    assert "Basic (user regwarden)" in auth_line(default)
    assert post(default, basic("regwarden")) == 202


def test_an_empty_user_turns_basic_off(start: Callable[..., Serve]) -> None:
    serve = start("off", "--basic-user", "")
    assert "Basic" not in auth_line(serve)
    assert post(serve, basic("")) == 401
    assert post(serve, basic("regwarden")) == 401
    assert post(serve, {"Authorization": TOKEN}) == 202  # Harbor's verbatim header


def test_a_user_name_with_a_colon_is_refused(tmp_path: Path) -> None:
    (tmp_path / "regwarden.yaml").write_text(POLICY)
    (tmp_path / "tokens").write_text(TOKEN + "\n")
    proc = run_cli(
        "--ledger",
        str(tmp_path / "l.db"),
        "serve",
        "--policy",
        str(tmp_path / "regwarden.yaml"),
        "--auth-token-file",
        str(tmp_path / "tokens"),
        "--registry",
        "127.0.0.1:1",
        "--port",
        "0",
        "--basic-user",
        "ci:bot",
        env=cli_env(),
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("a Basic-auth user name has no ':'") == 1
