"""Pure helpers for the HTTP side of the Distribution API: header grammars and error bodies.

Retries (backoff, `Retry-After`, which statuses) are `regwarden.retry`'s."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

_TCHARS = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_CHALLENGE_PARAM = re.compile(
    rf"\s*({_TCHARS})\s*=\s*(?:\"((?:[^\"\\]|\\.)*)\"|({_TCHARS}))\s*(?:,|$)", re.DOTALL
)
_SCHEME = re.compile(rf"\s*,?\s*({_TCHARS})(?=\s|$|,)")
_LINK = re.compile(r"<([^>]*)>((?:\s*;\s*[^;,]*)*)")
_REL = re.compile(r"""rel\s*=\s*"?([^";]*)"?""", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Challenge:
    """One `WWW-Authenticate` challenge: scheme (lower case) and its parameters."""

    scheme: str
    params: dict[str, str] = field(default_factory=dict, hash=False)

    @property
    def realm(self) -> str | None:
        return self.params.get("realm")

    @property
    def service(self) -> str | None:
        return self.params.get("service")

    @property
    def scopes(self) -> tuple[str, ...]:
        scope = self.params.get("scope")
        return tuple(scope.split()) if scope else ()


def parse_challenges(header: str) -> list[Challenge]:
    """Parse a `WWW-Authenticate` value (RFC 7235) into its challenges, in order.

    Handles several challenges in one header (`Basic realm="a", Bearer realm="b"`), quoted
    strings with escapes and commas, and bare token68 credentials (kept as `token68`).
    """
    challenges: list[Challenge] = []
    pos = 0
    text = header.strip()
    while pos < len(text):
        m = _SCHEME.match(text, pos)
        if m is None:
            break
        scheme = m.group(1).lower()
        pos = m.end()
        params: dict[str, str] = {}
        while pos < len(text):
            pm = _CHALLENGE_PARAM.match(text, pos)
            if pm is None:
                # token68 (e.g. `Negotiate abc==`) or the next scheme
                t68 = re.match(r"\s*([A-Za-z0-9._~+/-]+=*)\s*(?:,|$)", text[pos:])
                if t68 is not None and not params and "=" in t68.group(1):
                    params["token68"] = t68.group(1)
                    pos += t68.end()
                break
            name = pm.group(1).lower()
            value = pm.group(2) if pm.group(2) is not None else pm.group(3)
            params[name] = re.sub(r"\\(.)", r"\1", value)
            pos = pm.end()
        challenges.append(Challenge(scheme=scheme, params=params))
    return challenges


def parse_next_link(header: str | None) -> str | None:
    """The target of the `rel="next"` link in a `Link` header, if any (may be relative)."""
    if not header:
        return None
    for m in _LINK.finditer(header):
        for rel in _REL.findall(m.group(2)):
            if "next" in rel.lower().split():
                return m.group(1).strip()
    return None


def error_summary(body: bytes, content_type: str | None) -> str:
    """A short text for a registry error body: the Distribution `errors` codes when present."""
    if not body:
        return ""
    if content_type is None or "json" in content_type:
        try:
            doc = json.loads(body)
        except ValueError:
            doc = None
        if isinstance(doc, dict) and isinstance(doc.get("errors"), list):
            parts = []
            for err in doc["errors"]:
                if isinstance(err, dict):
                    code = err.get("code", "?")
                    message = err.get("message") or ""
                    parts.append(f"{code}: {message}" if message else str(code))
            if parts:
                return "; ".join(parts)
    text = body[:200].decode("utf-8", "replace").strip()
    return " ".join(text.split())


def error_codes(body: bytes) -> frozenset[str]:
    """The Distribution error codes in a JSON error body (empty when there are none)."""
    try:
        doc = json.loads(body)
    except ValueError:
        return frozenset()
    if not isinstance(doc, dict) or not isinstance(doc.get("errors"), list):
        return frozenset()
    return frozenset(
        str(err.get("code")) for err in doc["errors"] if isinstance(err, dict) and "code" in err
    )
