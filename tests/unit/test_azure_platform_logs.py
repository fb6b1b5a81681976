"""The Azure functions' logging on a Function App: the client libraries quiet and every
handler of the worker's redacting, as on AWS and GCP; elsewhere the host's own logging."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from functions.azure import _app
from regwarden.logsetup import QUIET_LOGGERS
from regwarden.redact import RedactingFilter

HTTP_LOG = "azure.core.pipeline.policies.http_logging_policy"


@pytest.fixture
def worker_logging() -> Iterator[logging.StreamHandler[io.StringIO]]:
    """The worker's root logger (INFO, one handler of its own), restored afterwards."""
    root = logging.getLogger()
    saved = list(root.handlers), root.level
    levels = {n: logging.getLogger(n).level for n in QUIET_LOGGERS}
    handler = logging.StreamHandler(io.StringIO())
    root.handlers = [handler]
    root.setLevel(logging.INFO)
    logging.getLogger(HTTP_LOG).setLevel(logging.NOTSET)
    _app._platform_logs.cache_clear()
    yield handler
    _app._platform_logs.cache_clear()
    # the filter went on every root handler, pytest's capture handlers among them, which
    # live for the whole session: left there, it would take later tests' tracebacks
    for each in root.handlers:
        for f in [f for f in each.filters if isinstance(f, RedactingFilter)]:
            each.removeFilter(f)
    root.handlers, level = saved
    root.setLevel(level)
    for name, old in levels.items():
        logging.getLogger(name).setLevel(old)


def test_on_a_function_app_the_sdk_request_log_goes_and_the_handler_redacts(
    worker_logging: logging.StreamHandler[io.StringIO], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WEBSITE_INSTANCE_ID", raising=False)
    _app._platform_logs()  # Core Tools, a test: the host's logging stays as it is
    assert worker_logging.filters == []
    assert logging.getLogger(HTTP_LOG).getEffectiveLevel() == logging.INFO

    _app._platform_logs.cache_clear()
    monkeypatch.setenv("WEBSITE_INSTANCE_ID", "0123abcd")
    before = list(logging.getLogger().handlers)  # the worker's (and pytest's capture)
    _app._platform_logs()
    assert logging.getLogger().handlers == before  # no handler of ours added
    assert [type(f) for f in worker_logging.filters] == [RedactingFilter]
    assert logging.getLogger(HTTP_LOG).getEffectiveLevel() == logging.WARNING
    logging.getLogger(HTTP_LOG).info("Request URL: 'https://x.table.core.windows.net/t'")
    assert worker_logging.stream.getvalue() == ""
