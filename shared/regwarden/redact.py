"""Keep secrets out of logs and error messages.

What can carry a secret through a log line or an error: a URL (userinfo, query values such
as `?token=`, the whole path of a Slack or Teams incoming webhook or of any URL configured
as `secret://`), an `Authorization` value, a `key=value` pair named like a credential, and
the values of configured secrets themselves. `redact_url` and `redact_text` remove each of
those; `RedactingFilter` applies `redact_text` to every log record (message, arguments,
exception and stack text) at the handler, so a library that formats a URL into its own
message is covered too.

Secrets the process knows (channel URLs, signing keys) are registered once with
`register_secret` and masked wherever they appear, the way CI systems mask their secrets.
"""

from __future__ import annotations

import base64
import logging
import re
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlsplit

__all__ = [
    "MASK",
    "RedactingFilter",
    "redact_text",
    "redact_url",
    "register_secret",
    "register_secret_url",
    "registered_secrets",
]

MASK = "***"
MIN_SECRET = 6
"""Shorter values are not masked by value: masking every `abc` would garble the log. Such a
value is still removed where it appears in a URL or an `Authorization` header."""

# Incoming-webhook hosts whose URL path is the credential (Slack; Teams connectors,
# Workflows on Logic Apps and Power Platform).
_WEBHOOK_HOSTS = (
    "hooks.slack.com",
    "hooks.slack-gov.com",
    "outlook.office.com",
    "outlook.office365.com",
)
_WEBHOOK_SUFFIXES = (".webhook.office.com", ".logic.azure.com", ".api.powerplatform.com")

_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]{0,15}://[^\s<>\"'`]+")
_BARE_HOOK = re.compile(
    r"(?<![\w./-])((?:hooks\.slack(?:-gov)?\.com|[\w.-]+\.webhook\.office\.com|"
    r"outlook\.office(?:365)?\.com|[\w.-]+\.logic\.azure\.com|"
    r"[\w.-]+\.api\.powerplatform\.com)(?::\d+)?)/[^\s<>\"'`]+",
    re.IGNORECASE,
)
_TRAILING = ".,;:!?)]}"
_AUTHORIZATION = re.compile(
    r"\b(Bearer|Basic)(\s+)([A-Za-z0-9._~+/-]+=*)(?![\w\"=])", re.IGNORECASE
)
_TOKEN_MARK = re.compile(r"[0-9._~+/=-]")
_CREDENTIAL_KEY = r"(?:password|passwd|secret|token|access_token|refresh_token|api[_-]?key|sig)"
_CREDENTIAL_PAIR = re.compile(
    rf"(?i)\b({_CREDENTIAL_KEY})(\s*=\s*)(?!\*\*\*)[^\s\"'&,;}}]+"  # key=value
)
_CREDENTIAL_JSON = re.compile(
    rf"(?i)([\"']{_CREDENTIAL_KEY}[\"'])(\s*:\s*)([\"']?)(?!\*\*\*)[^\s\"',;}}]+"  # "key": value
)
_QUERY_KEY = re.compile(r"[A-Za-z0-9_.\-\[\]]{1,64}")

_lock = threading.Lock()
_secrets: tuple[str, ...] = ()


def register_secret(value: str | bytes | None) -> None:
    """Mask `value` in everything `redact_text` sees from now on (process-wide).

    Values shorter than `MIN_SECRET` characters are ignored (see there). The URL-encoded
    spelling is masked too, as a secret inside a query string appears that way."""
    global _secrets
    if value is None:
        return
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    if len(text) < MIN_SECRET:
        return
    forms = {text, quote(text, safe="")}
    with _lock:
        # longest first, so a secret that contains another is masked whole
        _secrets = tuple(sorted(set(_secrets) | forms, key=len, reverse=True))


def register_secret_url(url: str) -> None:
    """Mask a URL that is a credential (a webhook configured as `secret://`): the whole
    URL, and its path and query on their own, as a library may print either part."""
    register_secret(url)
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return
    register_secret(parts.path.lstrip("/"))
    register_secret(parts.query)


def registered_secrets() -> tuple[str, ...]:
    return _secrets


def _is_webhook_host(host: str) -> bool:
    host = host.lower()
    return host in _WEBHOOK_HOSTS or host.endswith(_WEBHOOK_SUFFIXES)


def redact_url(url: str, *, secret: bool = False) -> str:
    """`url` without userinfo, fragment and query values (`?token=***`).

    For a Slack or Teams incoming webhook, or with `secret=True` (a URL configured as
    `secret://`), only `scheme://host[:port]` is kept: the path is the credential."""
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        head = url.split("://", 1)[0] if "://" in url else ""
        return f"{head}://{MASK}" if head.isalnum() else MASK
    if not parts.scheme or not host:
        return MASK if (parts.query or "@" in url or secret) else url
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    base = f"{parts.scheme}://{netloc}"
    if secret or _is_webhook_host(host):
        return base + (f"/{MASK}" if parts.path.strip("/") or parts.query else "")
    query = ""
    if parts.query:
        pairs = []
        for item in parts.query.split("&"):
            key, eq, _ = item.partition("=")
            pairs.append(f"{key}={MASK}" if eq and _QUERY_KEY.fullmatch(key) else MASK)
        query = "?" + "&".join(pairs)
    return base + parts.path + query


def _url_match(match: re.Match[str]) -> str:
    text = match.group(0)
    tail = ""
    while text and text[-1] in _TRAILING:
        tail = text[-1] + tail
        text = text[:-1]
    return redact_url(text) + tail


def _basic_pair(token: str) -> bool:
    """Whether `token` is base64 of `user:password` (a Basic credential without padding
    or digits looks like a word)."""
    try:
        return b":" in base64.b64decode(token + "=" * (-len(token) % 4), validate=True)
    except ValueError:
        return False


def _authorization_match(match: re.Match[str]) -> str:
    # a credential, not prose ("Bearer challenge"): it has a digit or a base64/JWT mark,
    # or is long
    token = match.group(3)
    if _TOKEN_MARK.search(token) is None and len(token) < 20 and not _basic_pair(token):
        return match.group(0)
    return f"{match.group(1)}{match.group(2)}{MASK}"


def redact_text(text: str) -> str:
    """`text` with every URL redacted (`redact_url`), bare Slack/Teams webhook addresses cut
    to their host, `Authorization` values and `password=`-like values masked, and every
    registered secret masked."""
    if not text:
        return text
    for value in _secrets:  # first: a secret may be part of a URL the steps below reshape
        if value in text:
            text = text.replace(value, MASK)
    text = _URL.sub(_url_match, text)
    text = _BARE_HOOK.sub(lambda m: f"{m.group(1)}/{MASK}", text)
    text = _AUTHORIZATION.sub(_authorization_match, text)
    text = _CREDENTIAL_PAIR.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)
    return _CREDENTIAL_JSON.sub(lambda m: f"{m.group(1)}{m.group(2)}{m.group(3)}{MASK}", text)


def _redact_value(value: Any) -> Any:
    """Structured log payloads (Powertools logs dicts): strings inside are redacted."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {k: _redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(v) for v in value]
    return value


_FORMATTER = logging.Formatter()
# what every LogRecord has; anything else on a record came from `extra=` (Powertools puts
# those keys into its JSON line), so it is redacted too
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "exception",
    "exception_name",
}


class RedactingFilter(logging.Filter):
    """Redacts a record in place before any handler formats it: the message with its
    arguments merged, the exception text and the stack text. Install it on handlers (a
    logger's filters do not see records propagated from child loggers)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, Mapping) and not record.args:
            record.msg = _redact_value(record.msg)
        else:
            try:
                message = record.getMessage()
            except Exception:  # a broken format string must not lose the record
                message = f"{record.msg!s} {record.args!r}"
            record.msg = redact_text(message)
            record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            # format once, redact, and drop the live exception so no formatter renders it
            # again from the frames; Powertools' JSON formatter reads `exception` instead
            exc_type = record.exc_info[0]
            text = redact_text(_FORMATTER.formatException(record.exc_info))
            record.exc_info = None
            record.exc_text = text
            record.exception = text
            record.exception_name = exc_type.__name__ if exc_type else "Exception"
        elif record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)
        for key, value in list(record.__dict__.items()):
            if key not in _STANDARD and isinstance(value, str | Mapping | list | tuple):
                setattr(record, key, _redact_value(value))
        return True
