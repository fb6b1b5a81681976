"""Process logging for `regwarden serve`, `regwarden invoke` and the cloud functions.

HTTP and AWS client libraries log every request's full URL at INFO or DEBUG (httpx:
`HTTP Request: POST https://hooks.slack.com/services/…`), so they stay at WARNING whatever
the level of regwarden's own loggers; and every handler carries `RedactingFilter`, so no
record leaves the process with a URL's secret parts, an `Authorization` value or a
registered secret in it.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable

from .redact import RedactingFilter

__all__ = ["FORMAT", "QUIET_LOGGERS", "logging_setup", "redact_handler"]

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
QUIET_LOGGERS = (
    "httpx",
    "httpcore",
    "hpack",
    "urllib3",
    "botocore",
    "boto3",
    "s3transfer",
    "google.auth",
    "azure.core.pipeline.policies.http_logging_policy",
)
"""Client libraries that log request URLs or headers below WARNING."""


def redact_handler(handler: logging.Handler) -> None:
    """Put `RedactingFilter` on `handler` (once)."""
    if not any(isinstance(f, RedactingFilter) for f in handler.filters):
        handler.addFilter(RedactingFilter())


def logging_setup(*, debug: bool, handlers: Iterable[logging.Handler] = ()) -> None:
    """Root at INFO with one stderr handler unless the root already has handlers (the
    Lambda runtime installs its own); regwarden's loggers at DEBUG with `debug`, the
    client libraries at WARNING always; `RedactingFilter` on every root handler and on
    `handlers` (e.g. Powertools' handler, which regwarden's loggers write to in Lambda).
    Safe to call more than once."""
    root = logging.getLogger()
    if not root.handlers:
        stderr = logging.StreamHandler(sys.stderr)
        stderr.setFormatter(logging.Formatter(FORMAT))
        root.addHandler(stderr)
    root.setLevel(logging.INFO)
    if debug:  # otherwise left as it is (in Lambda, Powertools sets it from its settings)
        logging.getLogger("regwarden").setLevel(logging.DEBUG)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for handler in (*root.handlers, *handlers):
        redact_handler(handler)
