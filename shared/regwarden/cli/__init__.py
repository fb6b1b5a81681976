"""The `regwarden` command line. Exit codes, for every command: 0 ok (PASSED, WARN),
1 policy says no, 2 usage or configuration error, 3 infrastructure error."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from ..errors import RegwardenError

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point: run the app, turn every RegwardenError into its exit code."""
    from rich.console import Console

    from ._app import app

    try:
        app(args=list(argv) if argv is not None else None, prog_name="regwarden")
    except RegwardenError as exc:
        err = Console(stderr=True, highlight=False, soft_wrap=True)
        err.print(f"[bold red]error:[/] {exc.message}", markup=True)
        if exc.hint:
            err.print(f"[dim]hint:[/] {exc.hint}", markup=True)
        problems = getattr(exc, "problems", None)
        for path, message in problems or []:
            err.print(f"  {path}: {message}", markup=False)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # a bug, not a user error: one line unless debugging
        if os.environ.get("REGWARDEN_DEBUG"):
            raise
        print(
            f"error: internal error: {type(exc).__name__}: {exc} "
            "(set REGWARDEN_DEBUG=1 for a traceback)",
            file=sys.stderr,
        )
        sys.exit(3)
