"""Redaction: URLs, Authorization values, credential pairs and registered secrets never
reach a log line; `logging_setup` keeps httpx's request log (full URLs) out entirely."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import httpx
import pytest
from support.loopback import LoopbackServer

from regwarden import redact
from regwarden.logsetup import QUIET_LOGGERS, logging_setup
from regwarden.redact import MASK, RedactingFilter, redact_text, redact_url, register_secret


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        # userinfo and fragment go; query keys stay, their values do not
        (
            "https://ci:pa55word@reg.example.com:5000/v2/a/b/tags/list?n=100&last=x#frag",
            "https://reg.example.com:5000/v2/a/b/tags/list?n=***&last=***",
        ),
        ("http://127.0.0.1:8080/hook?token=s3cr3t-value", "http://127.0.0.1:8080/hook?token=***"),
        # a bare query word could be the secret itself
        ("https://h.example/p?S3CRETWORD&a=1", "https://h.example/p?***&a=***"),
        ("https://h.example/p?a%20b=1", "https://h.example/p?***"),
        # incoming webhooks: the path is the credential
        ("https://hooks.slack.com/services/T0/B0/XyZ", "https://hooks.slack.com/***"),
        ("https://acme.webhook.office.com/webhookb2/abc@def/IncomingWebhook/x/y", None),
        (
            "https://prod-12.westus.logic.azure.com:443/workflows/1/triggers/manual?sig=abc",
            "https://prod-12.westus.logic.azure.com:443/***",
        ),
        ("https://reg.example.com", "https://reg.example.com"),
        ("http://[::1]:5000/v2/?x=1", "http://[::1]:5000/v2/?x=***"),
    ],
)
def test_redact_url(url: str, expected: str | None) -> None:
    got = redact_url(url)
    if expected is None:  # only the host survives
        assert got == "https://acme.webhook.office.com/***"
    else:
        assert got == expected


def test_a_secret_url_keeps_only_scheme_and_host() -> None:
    assert redact_url("https://alerts.example.com/hooks/abcdef", secret=True) == (
        "https://alerts.example.com/***"
    )
    assert redact_url("https://alerts.example.com", secret=True) == "https://alerts.example.com"


def test_unparseable_urls_are_masked_whole() -> None:
    assert redact_url("http://[::1/x?token=a") == "http://***"
    assert redact_url("nonsense?token=a") == MASK
    assert redact_url("user:pw@host") == MASK


def test_redact_text_finds_every_url_and_keeps_the_sentence() -> None:
    text = (
        "GET https://u:p@reg.io/v2/x/manifests/1?ns=docker.io: got HTTP 500 "
        "(then https://hooks.slack.com/services/T/B/C), see <http://a.example/x?k=v>."
    )
    assert redact_text(text) == (
        "GET https://reg.io/v2/x/manifests/1?ns=***: got HTTP 500 "
        "(then https://hooks.slack.com/***), see <http://a.example/x?k=***>."
    )
    # httpx's repr of a URL, and a webhook address without its scheme
    assert redact_text("URL('http://127.0.0.1:5/hook?token=abc')") == (
        "URL('http://127.0.0.1:5/hook?token=***')"
    )
    assert redact_text("posted to hooks.slack.com/services/T/B/C") == (
        "posted to hooks.slack.com/***"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Authorization: Bearer eyJhbGciOi.eyJzdWIi.sig", "Authorization: Bearer ***"),
        ("Authorization: Basic YWxpY2U6czNjcmV0", "Authorization: Basic ***"),
        ("Basic dXNlcjpwYXNz", "Basic ***"),  # user:pass without digits or padding
        # challenges and prose are left alone
        ('Bearer realm="https://auth.example/token",service="reg"', None),
        ("no Bearer challenge was answered", None),
        ("Basic authentication failed", None),
        ("password=hunter22&user=bob", "password=***&user=bob"),
        ('{"token": "abc", "ok": 1}', '{"token": "***", "ok": 1}'),
        ("identity token refused", None),
    ],
)
def test_authorization_values_and_credential_pairs(text: str, expected: str | None) -> None:
    assert redact_text(text) == (text if expected is None else expected)


@pytest.fixture
def clean_secrets() -> Iterator[None]:
    saved = redact._secrets
    yield
    redact._secrets = saved


@pytest.mark.usefixtures("clean_secrets")
def test_registered_secrets_are_masked_wherever_they_appear() -> None:
    register_secret("hmac-signing-key/42")
    register_secret(b"bytes-secret-99")
    register_secret("abc")  # too short to mask by value: ignored
    register_secret(None)
    text = "key hmac-signing-key/42 in hmac-signing-key%2F42; bytes-secret-99; abc"
    assert redact_text(text) == "key *** in ***; ***; abc"


@pytest.mark.usefixtures("clean_secrets")
def test_a_secret_containing_another_is_masked_whole() -> None:
    register_secret("secret-one")
    register_secret("secret-one-and-more")
    assert redact_text("x secret-one-and-more y") == "x *** y"


def _logger_to(stream: io.StringIO, name: str) -> logging.Logger:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger(name)
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger


def test_filter_redacts_arguments_exceptions_and_stacks() -> None:
    out = io.StringIO()
    log = _logger_to(out, "test.redact.filter")
    log.info("POST %s failed: %s", "https://hooks.slack.com/services/T/B/C", "HTTP 500")
    try:
        raise RuntimeError("GET http://h.example/v2/?token=exc-secret-1 failed")
    except RuntimeError:
        log.exception("while fetching")
    log.warning("look", stack_info=True, extra={"u": "x"})
    log.info({"url": "http://h.example/p?token=dict-secret", "n": [1, "http://a/b?c=d"]})
    log.info("broken format %s %s", "only-one-arg")
    text = out.getvalue()
    assert "POST https://hooks.slack.com/*** failed: HTTP 500" in text
    assert "exc-secret-1" not in text and "Traceback" in text and "token=***" in text
    assert "dict-secret" not in text and "c=***" in text
    assert "broken format" in text


def test_the_filter_redacts_extra_keys_of_structured_logs() -> None:
    out = io.StringIO()
    log = _logger_to(out, "test.redact.extra")
    log.handlers[0].setFormatter(logging.Formatter("%(message)s %(error)s %(detail)s"))
    log.error(
        "channel failed",
        extra={"error": "POST http://h/x?token=extra-secret", "detail": {"u": "http://h/?k=v"}},
    )
    assert (
        out.getvalue().strip()
        == "channel failed POST http://h/x?token=*** {'u': 'http://h/?k=***'}"
    )


def test_the_filter_keeps_a_structured_message_structured() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, {"u": "http://a/b?t=1"}, None, None)
    RedactingFilter().filter(record)
    assert record.msg == {"u": "http://a/b?t=***"}


# -- logging_setup: httpx's request log never shows ------------------------------------------


class _Ok(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved_handlers = list(root.handlers)
    saved_filters = {h: list(h.filters) for h in saved_handlers}
    saved_levels = {n: logging.getLogger(n).level for n in ("", "regwarden", *QUIET_LOGGERS)}
    yield
    root.handlers = saved_handlers
    for handler, filters in saved_filters.items():
        handler.filters = filters
    for name, level in saved_levels.items():
        logging.getLogger(name).setLevel(level)


@pytest.mark.usefixtures("restore_logging")
def test_without_setup_httpx_logs_the_token_and_with_it_nothing_leaks() -> None:
    root = logging.getLogger()
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    root.handlers = [handler]
    root.setLevel(logging.INFO)
    logging.getLogger("httpx").setLevel(logging.NOTSET)
    with LoopbackServer(_Ok) as server:
        url = f"{server.url}/hook?token=httpx-leak-7"
        httpx.get(url)  # what `logging.basicConfig(level=INFO)` used to let through
        assert "httpx-leak-7" in out.getvalue()  # the control: the leak is real

        out.truncate(0)
        out.seek(0)
        logging_setup(debug=True)
        assert root.handlers == [handler]  # an existing handler is kept, and filtered
        assert any(isinstance(f, RedactingFilter) for f in handler.filters)
        assert logging.getLogger("regwarden").level == logging.DEBUG
        httpx.get(url)
        logging.getLogger("regwarden.test").debug("called %s", url)
        logging.getLogger("httpx").warning("odd answer from %s", url)
    text = out.getvalue()
    assert "httpx-leak-7" not in text
    assert "called http://127.0.0.1" in text and "token=***" in text
    assert "HTTP Request" not in text  # httpx's INFO line is gone altogether


@pytest.mark.usefixtures("restore_logging")
def test_setup_adds_one_stderr_handler_and_is_idempotent() -> None:
    root = logging.getLogger()
    root.handlers = []
    logging_setup(debug=False)
    logging_setup(debug=False)
    (handler,) = root.handlers
    assert [type(f) for f in handler.filters] == [RedactingFilter]
    assert root.level == logging.INFO
    assert all(logging.getLogger(n).level == logging.WARNING for n in QUIET_LOGGERS)
    extra = logging.StreamHandler(io.StringIO())
    logging_setup(debug=False, handlers=[extra])
    assert any(isinstance(f, RedactingFilter) for f in extra.filters)
