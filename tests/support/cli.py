"""`python -m regwarden ARGS…` in a child process, as a user runs it, for the CLI tests."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path


def run_cli(
    *args: str,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run the CLI with this interpreter; output captured as text, the exit code not checked.

    `env` replaces the environment when given (None inherits the test's); `timeout` fails a
    command that would block forever (serve starting when it should refuse, for one).
    """
    return subprocess.run(
        [sys.executable, "-m", "regwarden", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=None if env is None else dict(env),
        check=False,
    )
