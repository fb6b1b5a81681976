"""Opening a ledger named on the command line, with an error that says why it cannot be used."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from ..errors import UsageError
from ._sqlite import SqliteLedger

__all__ = ["open_ledger"]


def open_ledger(path: Path) -> SqliteLedger:
    """The SQLite ledger at `path`, or UsageError (exit 2) saying why it cannot be used:
    a directory, a file that is not an SQLite database, no permission, no parent."""
    if path.is_dir():
        raise UsageError(f"cannot use the ledger {path}: it is a directory", hint=_LEDGER_HINT)
    try:
        return SqliteLedger(path)
    except OSError as exc:  # its directory cannot be made
        cause = exc.strerror or str(exc)
        if exc.filename and str(exc.filename) != str(path):
            cause = f"cannot create {exc.filename}: {cause}"
        raise UsageError(f"cannot use the ledger {path}: {cause}", hint=_LEDGER_HINT) from None
    except sqlite3.Error as exc:
        cause = str(exc)
        if path.exists() and not os.access(path, os.R_OK | os.W_OK):
            cause = "permission denied"
        elif isinstance(exc, sqlite3.DatabaseError) and "not a database" in cause:
            cause = "the file is not an SQLite database (corrupt, or not a ledger)"
        raise UsageError(f"cannot use the ledger {path}: {cause}", hint=_LEDGER_HINT) from None


_LEDGER_HINT = "--ledger PATH (or REGWARDEN_LEDGER) must name a writable SQLite file"
