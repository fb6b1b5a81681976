"""The `regwarden` command line. Exit codes, for every command: 0 ok (PASSED, WARN),
1 policy says no, 2 usage or configuration error, 3 infrastructure error."""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Sequence

from ..errors import RegwardenError

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point: run the app, turn every RegwardenError into its exit code
    and anything else (a bug) into one line and exit 3, with the traceback under --debug."""
    from rich.console import Console
    from rich.markup import escape

    from ._app import OPTIONS, app
    from ._help import command_for

    err = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        command_for(app)(args=list(argv) if argv is not None else None, prog_name="regwarden")
    except RegwardenError as exc:
        # messages quote user input ("[a-z]", "[/x]"): never read as markup
        err.print(f"[bold red]error:[/] {escape(exc.message)}", markup=True)
        if exc.hint:
            err.print(f"[dim]hint:[/] {escape(exc.hint)}", markup=True)
        problems = getattr(exc, "problems", None)
        for path, message in problems or []:
            if message not in exc.message:  # most messages list their problems already
                err.print(f"  {path}: {message}", markup=False)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # a bug, not a user error: one line unless debugging
        debug = OPTIONS.debug or _env_debug()
        if debug:
            traceback.print_exc()
        lines = str(exc).strip().splitlines()
        detail = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
        err.print(f"[bold red]error:[/] internal error: {escape(detail)}", markup=True)
        if not debug:
            err.print("[dim]hint:[/] run with --debug for the traceback", markup=True)
        sys.exit(3)


def _env_debug() -> bool:
    return os.environ.get("REGWARDEN_DEBUG", "").strip().lower() in ("1", "true", "yes", "on")
