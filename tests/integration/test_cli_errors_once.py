"""Every error is printed once: the CLI's error paths, run as a user runs them, show their
message a single time on stderr (an invalid policy's problems were listed twice: in the
message and again from the error's problem list)."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.cli import run_cli

pytestmark = pytest.mark.integration
ENV = {"PATH": "/usr/bin:/bin", "COLUMNS": "400"}
INVALID = """\
apiVersion: regwarden/v1
kind: Policy
registries: ["127.0.0.1:1"]
defaults:
  tags: {forbidden: [latest]}
"""


def stderr_of(tmp_path: Path, *args: str) -> tuple[int, str]:
    proc = run_cli(*args, env=ENV, cwd=tmp_path)
    assert "Traceback" not in proc.stderr
    return proc.returncode, proc.stderr


@pytest.mark.parametrize("command", ["check", "invoke"])
def test_an_invalid_policy_lists_each_problem_once(tmp_path: Path, command: str) -> None:
    (tmp_path / "p.yaml").write_text(INVALID)
    event = Path(__file__).resolve().parents[2] / "events" / "oci" / "distribution-push.json"
    (tmp_path / "event.json").write_bytes(event.read_bytes())
    args = (
        ("check", "127.0.0.1:1/app:1", "--policy", "p.yaml")
        if command == "check"
        else ("invoke", "on_push", "event.json", "--policy", "p.yaml")
    )
    code, err = stderr_of(tmp_path, "--ledger", str(tmp_path / "l.db"), *args)
    assert code == 2, err
    assert err.count("expected a mapping") == 1, err
    assert err.count("error:") == 1, err


@pytest.mark.parametrize(
    ("args", "said", "code"),
    [
        (("images", "127.0.0.1:1/app"), "Connection refused", 3),
        (("verify", "127.0.0.1:1/app:1", "--key", "missing.pub"), "cannot read key file", 2),
        (("--ledger", "bogus://x", "quarantine", "list"), "unknown ledger scheme", 2),
        (("keys", "public", "--key", "missing.key"), "cannot read key file", 2),
    ],
    ids=["unreachable", "key-file", "ledger-url", "keys-public"],
)
def test_errors_are_printed_once(
    tmp_path: Path, args: tuple[str, ...], said: str, code: int
) -> None:
    got, err = stderr_of(tmp_path, *args)
    assert got == code, err
    assert err.count(said) == 1, err
    assert err.count("error:") == 1, err
