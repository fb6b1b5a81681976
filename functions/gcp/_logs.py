"""Structured logs for Cloud Logging: one JSON object per line on standard output.

Cloud Run (functions included) sends each line of a container's output to Cloud Logging,
and a line that is a JSON object becomes a structured entry: `severity` sets the entry's
level, `message` its text (a traceback in it reaches Error Reporting), and
`logging.googleapis.com/trace` ties it to the request's trace
(cloud.google.com/logging/docs/structured-logging). Every other key lands in
`jsonPayload`: the function, the image, the outcome, what the caller passed in `extra`.

`structured_logs()` installs it on the root logger once per process, on Cloud Run only
(`K_SERVICE` is set there) or when `REGWARDEN_LOG_FORMAT=json`; the handler carries
regwarden's `RedactingFilter` (`logsetup.logging_setup`), so no URL secret, Authorization
value or registered secret reaches the log.
"""

from __future__ import annotations

import contextvars
import functools
import json
import logging
import os
import sys
from collections.abc import Mapping
from datetime import UTC, datetime

__all__ = ["JsonFormatter", "bind", "structured_logs"]

_STANDARD = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys() | {"message", "asctime"}
)
"""The attributes every LogRecord has: anything else came in through `extra`."""
_FUNCTION: contextvars.ContextVar[str | None] = contextvars.ContextVar("function", default=None)
_TRACE: contextvars.ContextVar[str | None] = contextvars.ContextVar("trace", default=None)


def bind(function: str, headers: Mapping[str, str], project: str | None) -> None:
    """Label this request's log lines with the function and the request's trace
    (`X-Cloud-Trace-Context: TRACE_ID/SPAN;o=1`, which Cloud Run sets; `headers`: names
    in lower case)."""
    _FUNCTION.set(function)
    trace = headers.get("x-cloud-trace-context", "").split("/", 1)[0].strip()
    _TRACE.set(f"projects/{project}/traces/{trace}" if trace and project else None)


class JsonFormatter(logging.Formatter):
    """A record → one line of Cloud Logging's structured JSON."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message = f"{message}\n{self.formatException(record.exc_info)}"
        entry: dict[str, object] = {
            "severity": record.levelname if record.levelname != "WARN" else "WARNING",
            "message": message,
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "logger": record.name,
        }
        function = _FUNCTION.get()
        if function:
            entry["function"] = function
        trace = _TRACE.get()
        if trace:
            entry["logging.googleapis.com/trace"] = trace
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_") and key not in entry:
                entry[key] = value
        return json.dumps(entry, default=str)


class _Stdout(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stdout` is when a line is written (a test runner swaps it)."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stdout
        super().emit(record)


@functools.cache  # once per process: a rebuilt state must not add a second handler
def structured_logs() -> bool:
    """Root logs as Cloud Logging JSON on standard output (True), on Cloud Run or with
    `REGWARDEN_LOG_FORMAT=json`; elsewhere a process without logging gets a redacted
    stderr handler and one with handlers is left as it is."""
    from regwarden.logsetup import logging_setup

    wanted = os.environ.get("REGWARDEN_LOG_FORMAT", "").strip().lower() == "json"
    if not (wanted or os.environ.get("K_SERVICE")):
        # a plain local run (functions-framework on a laptop) gets a redacted stderr
        # handler; a host that configured logging itself (a test runner, an embedding
        # program) keeps its handlers as they are: the redacting filter rewrites records
        # in place, which would change what that host's own handlers receive
        if not logging.getLogger().handlers:
            logging_setup(debug=False)
        return False
    handler = _Stdout()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):  # functions-framework's plain-text handler, if any
        root.removeHandler(old)
    root.addHandler(handler)
    logging_setup(debug=False)  # client libraries at WARNING; redaction on every handler
    return True
