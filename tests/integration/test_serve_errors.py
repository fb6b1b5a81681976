"""Clear errors and the right exit codes, never a traceback (issue #11 item 6), as a user runs
the CLI: serve's bad ports, ports in use, bad or corrupt ledgers, no worker, no registry;
deeply nested policies and event files; an unexpected exception is one line and exit 3,
with the traceback only under `--debug`."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from support.cli import run_cli

pytestmark = pytest.mark.integration

POLICY = """\
apiVersion: regwarden/v1
kind: Policy
repositories:
  - {match: "team/**", team: team}
registries:
  - {host: "127.0.0.1:5999", kind: distribution}
"""


def clean_env(**extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("REGWARDEN_")}
    return {**base, **extra}


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    # serve would block forever if it started: run_cli's timeout fails the test
    return run_cli(*args, env=clean_env(**env), timeout=60)


@pytest.fixture
def setup(tmp_path: Path) -> Path:
    (tmp_path / "regwarden.yaml").write_text(POLICY)
    (tmp_path / "tokens").write_text("t0ken\n")
    return tmp_path


def serve_args(root: Path, *extra: str, ledger: str | None = None) -> list[str]:
    return [
        "--ledger",
        ledger or str(root / "ledger.db"),
        "serve",
        "--policy",
        str(root / "regwarden.yaml"),
        "--auth-token-file",
        str(root / "tokens"),
        *extra,
    ]


def assert_usage_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output
    assert "Traceback" not in output, output
    for needle in needles:
        assert needle in output, (needle, output)


# -- serve --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (("--port", "99999"), "'--port'"),
        (("--port", "-1"), "'--port'"),
        (("--workers", "0"), "'--workers'"),
        (("--body-timeout", "0"), "'--body-timeout'"),
    ],
)
def test_serve_refuses_out_of_range_options(
    setup: Path, flags: tuple[str, str], needle: str
) -> None:
    assert_usage_error(run(*serve_args(setup, *flags)), needle)


def test_serve_refuses_a_port_in_use(setup: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        proc = run(*serve_args(setup, "--port", str(port)))
    assert_usage_error(proc, f"cannot listen on 127.0.0.1:{port}: address already in use")


def test_serve_refuses_an_address_that_is_not_local(setup: Path) -> None:
    proc = run(*serve_args(setup, "--host", "no-such-host.invalid", "--port", "0"))
    assert_usage_error(proc, "cannot listen on no-such-host.invalid:0")


def test_serve_refuses_ledgers_it_cannot_use(setup: Path) -> None:
    (setup / "dir.db").mkdir()
    (setup / "corrupt.db").write_bytes(b"this is not an SQLite database\n" * 100)
    (setup / "a-file").write_text("x")
    cases = [
        (str(setup / "dir.db"), "it is a directory"),
        (str(setup / "corrupt.db"), "not an SQLite database"),
        (str(setup / "a-file" / "sub" / "ledger.db"), "Not a directory"),
    ]
    for ledger, cause in cases:
        proc = run(*serve_args(setup, "--port", "0", ledger=ledger))
        assert_usage_error(proc, f"cannot use the ledger {ledger}", cause, "--ledger")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_serve_refuses_an_unreadable_ledger(setup: Path) -> None:
    ledger = setup / "locked.db"
    ledger.write_bytes(b"")
    ledger.chmod(0)
    proc = run(*serve_args(setup, "--port", "0", ledger=str(ledger)))
    assert_usage_error(proc, f"cannot use the ledger {ledger}", "permission denied")


def test_serve_without_any_registry_refuses_to_start_with_a_hint(tmp_path: Path) -> None:
    (tmp_path / "regwarden.yaml").write_text(POLICY.split("registries:")[0])
    (tmp_path / "tokens").write_text("t0ken\n")
    proc = run(*serve_args(tmp_path, "--port", "0"))
    assert_usage_error(proc, "has no registry to serve", "--registry", "REGWARDEN_REGISTRIES")


@pytest.mark.parametrize(
    ("flags", "env", "needle"),
    [
        (("--registry", "https://r.example/v2"), {}, "invalid --registry 'https://r.example/v2'"),
        ((), {"REGWARDEN_REGISTRIES": "ok.example,bad host"}, "REGWARDEN_REGISTRIES 'bad host'"),
    ],
)
def test_serve_refuses_malformed_registry_hosts(
    setup: Path, flags: tuple[str, ...], env: dict[str, str], needle: str
) -> None:
    assert_usage_error(run(*serve_args(setup, "--port", "0", *flags), **env), needle)


# -- nesting ------------------------------------------------------------------------------------


def test_a_deeply_nested_policy_is_exit_2_naming_the_limit(setup: Path) -> None:
    deep = setup / "deep.yaml"
    deep.write_text(POLICY + "extra: " + "[" * 10_000 + "]" * 10_000 + "\n")
    validate = run("policy", "validate", str(deep))
    assert_usage_error(validate, "nested deeper than 64 levels (the limit)")
    args = serve_args(setup, "--port", "0")
    args[args.index("--policy") + 1] = str(deep)
    assert_usage_error(run(*args), "nested deeper than 64 levels (the limit)")


def test_a_deeply_nested_event_file_is_exit_2_naming_the_limit(setup: Path) -> None:
    event = setup / "deep.json"
    for function, key in (("on_push", "events"), ("retention", "registry")):
        event.write_text(f'{{"{key}": ' + "[" * 100_000 + "]" * 100_000 + "}")
        proc = run(
            "--ledger",
            str(setup / "ledger.db"),
            "invoke",
            function,
            str(event),
            "--policy",
            str(setup / "regwarden.yaml"),
        )
        assert_usage_error(proc, "JSON nested deeper than 64 levels (the limit)")


# -- unexpected exceptions ----------------------------------------------------------------------

# The real entry point with one command made to fail as a bug would: nothing else changed.
INJECT = """\
import sys
import regwarden.cli._gate as gate

def broken(*args, **kwargs):
    raise RuntimeError("injected fault [/x]\\nsecond line")

gate.run_check = broken
from regwarden.cli import main
main(sys.argv[1:])
"""


def run_injected(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", INJECT, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(**env),
        check=False,
    )


def test_an_unexpected_exception_is_one_line_and_a_hint_exit_3(setup: Path) -> None:
    check = ("check", "127.0.0.1:5999/team/app:v1", "--policy", str(setup / "regwarden.yaml"))
    proc = run_injected(*check)
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.splitlines() == [
        "error: internal error: RuntimeError: injected fault [/x]",
        "hint: run with --debug for the traceback",
    ]

    for debug_args, env in ((("--debug",), {}), ((), {"REGWARDEN_DEBUG": "1"})):
        proc = run_injected(*debug_args, *check, **env)
        assert proc.returncode == 3, proc.stderr
        assert proc.stderr.startswith("Traceback (most recent call last):"), proc.stderr
        assert "in broken\nRuntimeError: injected fault [/x]\nsecond line\n" in proc.stderr
        assert proc.stderr.rstrip().endswith(
            "error: internal error: RuntimeError: injected fault [/x]"
        )
