"""Store URLs: how `--ledger` and `--queue` name a store, and the registries that open them.

A URL is `SCHEME://LOCATION[?NAME=VALUE&…]`; anything without `://` is a path to an SQLite
file (`~` allowed), as `--ledger PATH` always took. Each scheme is a factory registered in
`LEDGERS` or `QUEUES` by the module that implements it (`_sqlite.py`, `_dynamo.py`,
`_firestore.py`, `_azure_table.py`, `_postgres.py`).

`postgresql://USER@HOST[:PORT]/DATABASE` (or `postgres://`) takes `password_file=PATH` or
`password=secret://NAME` — never the password itself, in the userinfo or a parameter —
and `sslmode`, `sslrootcert`, `schema` (default `regwarden`), `pool_size` (default 10).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qsl

from ..errors import UsageError
from ..plugins import PluginRegistry
from ._protocol import EventQueue, Ledger

__all__ = ["LEDGERS", "QUEUES", "ParsedUrl", "display_url", "parse_store_url"]

Role = Literal["ledger", "queue"]


@dataclass(frozen=True, slots=True)
class ParsedUrl:
    """A store URL taken apart. A bare path is scheme `sqlite` with the path as location."""

    text: str
    """As given (a bare path with `~` expanded): what messages show."""
    role: Role
    """What it names, for messages: `ledger` (`--ledger`) or `queue` (`--queue`)."""
    scheme: str
    location: str
    """Between `://` and `?`: a table name, a file path, …"""
    params: Mapping[str, str] = field(default_factory=dict)

    @property
    def option(self) -> str:
        """The flag and variable that give this URL (for hints)."""
        return f"--{self.role} (or REGWARDEN_{self.role.upper()})"

    def refuse(self, cause: str, *, hint: str | None = None) -> UsageError:
        """A usage error (exit 2) naming this URL and why it cannot be used (a password or
        token in the URL is masked)."""
        return _refused(self.role, self.text, cause, hint=hint)

    def only_params(self, *names: str) -> None:
        """A parameter this scheme does not know is a usage error, not silently dropped."""
        unknown = sorted(set(self.params) - set(names))
        if unknown:
            valid = ", ".join(names) or "none"
            raise self.refuse(
                f"unknown parameter {', '.join(unknown)} for {self.scheme}://",
                hint=f"valid parameters: {valid}",
            )


def parse_store_url(text: str | os.PathLike[str], *, role: Role) -> ParsedUrl:
    """`text` taken apart; a `PathLike` is always a path, never parsed as a URL."""
    if isinstance(text, os.PathLike) or "://" not in text:
        path = str(Path(text).expanduser())
        return ParsedUrl(path, role, "sqlite", path)
    scheme, _, rest = text.partition("://")
    scheme = scheme.lower()
    location, _, query = rest.partition("?")
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise _refused(role, text, "malformed parameters after ?") from None
    params: dict[str, str] = {}
    for name, value in pairs:
        if name in params:
            raise _refused(role, text, f"parameter {name} given twice")
        params[name] = value
    return ParsedUrl(text, role, scheme, location, params)


def _refused(role: str, text: str, cause: str, *, hint: str | None = None) -> UsageError:
    return UsageError(f"cannot use the {role} {display_url(text)}: {cause}", hint=hint)


_PLAIN_PARAMS = frozenset(
    {"region", "endpoint", "prefix", "schema", "sslmode", "pool_size", "password_file"}
)
"""Parameters whose values are shown in messages; any other value may be a credential."""


def display_url(text: str) -> str:
    """A store URL as messages may show it: no userinfo (`user:password@`), and only the
    values of parameters known to be plain; a path is shown as it is."""
    if "://" not in text:
        return text
    from ..redact import MASK, redact_url

    scheme, _, rest = text.partition("://")
    location, mark, query = rest.partition("?")
    authority, slash, path = location.partition("/")
    if "@" in authority:
        authority = f"{MASK}@{authority.rpartition('@')[2]}"
    shown_pairs = []
    for pair in query.split("&") if query else []:
        name, eq, value = pair.partition("=")
        if eq and name not in _PLAIN_PARAMS:
            value = MASK
        elif eq and name == "endpoint":
            value = redact_url(value)
        shown_pairs.append(name + eq + value)
    return f"{scheme}://{authority}{slash}{path}{mark}{'&'.join(shown_pairs)}"


LEDGERS = PluginRegistry[Callable[[ParsedUrl], Ledger]]("ledger")
"""Ledger URL scheme → factory (`sqlite`, `dynamodb`, `firestore`, `azuretable`,
`postgresql`, `postgres`)."""
QUEUES = PluginRegistry[Callable[[ParsedUrl], EventQueue]]("queue")
"""Queue URL scheme → factory (`sqlite`, `postgresql`, `postgres`)."""
