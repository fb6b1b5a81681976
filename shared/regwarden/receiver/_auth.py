"""Webhook caller authentication: bearer token, Basic, or Harbor's verbatim `auth_header`.

Every comparison is constant-time and every accepted form is computed up front, so the
request path does one digest comparison per accepted form and leaks nothing by timing.
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Iterable

from ..errors import UsageError


class CallerAuthenticator:
    """Accepts `Authorization` values derived from a set of shared secrets."""

    def __init__(self, tokens: Iterable[str], *, basic_user: str | None = "regwarden") -> None:
        accepted: list[bytes] = []
        for token in tokens:
            token = token.strip()
            if not token:
                continue
            accepted.append(f"Bearer {token}".encode())
            accepted.append(token.encode())  # Harbor sends auth_header verbatim
            if basic_user is not None:
                pair = base64.b64encode(f"{basic_user}:{token}".encode()).decode()
                accepted.append(f"Basic {pair}".encode())
        if not accepted:
            raise UsageError(
                "the webhook receiver needs at least one non-empty token",
                hint="regwarden serve --auth-token-file FILE",
            )
        self._accepted = tuple(accepted)
        self._described = (
            f"{len(accepted) // (3 if basic_user is not None else 2)} token(s): Bearer, "
            + (f"Basic (user {basic_user}), " if basic_user is not None else "")
            + "or verbatim"
        )

    def describe(self) -> str:
        """How callers authenticate, for the start-up line (never a token)."""
        return self._described

    def check(self, header: str | None) -> bool:
        if not header:
            return False
        given = header.strip().encode()
        ok = False
        for candidate in self._accepted:  # no early exit: same work whatever matches
            ok |= hmac.compare_digest(given, candidate)
        return ok

    @classmethod
    def from_file(cls, path: str, *, basic_user: str | None = "regwarden") -> CallerAuthenticator:
        """One token per line; blank lines and `#` comments ignored."""
        try:
            with open(path, encoding="utf-8") as fh:
                lines = [ln.strip() for ln in fh if ln.strip() and not ln.lstrip().startswith("#")]
        except OSError as exc:
            raise UsageError(f"cannot read auth token file {path!r}: {exc.strerror}") from None
        return cls(lines, basic_user=basic_user)
