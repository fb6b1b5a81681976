"""Retries: Retry-After (seconds and HTTP-date), backoff, and what is never retried."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from regwarden.errors import RegistryError
from regwarden.oci import OCI_MANIFEST, RegistryClient
from regwarden.retry import Backoff, parse_retry_after

HOST = "registry.example.com"
NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
MANIFEST = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": []}).encode()
DIGEST = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", 0.0),
        ("7", 7.0),
        (" 120 ", 120.0),
        (format_datetime(NOW + timedelta(seconds=30), usegmt=True), 30.0),
        ("Sun, 01 Mar 2026 12:00:05 GMT", 5.0),
        ("Sunday, 01-Mar-26 12:00:09 GMT", 9.0),  # RFC 850, obsolete but allowed
        ("Sun Mar  1 12:00:02 2026", 2.0),  # asctime
        (format_datetime(NOW - timedelta(hours=1), usegmt=True), 0.0),  # in the past
        ("soon", None),
        ("-5", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, now=NOW) == expected


def test_backoff_grows_exponentially_within_jitter_bounds() -> None:
    for attempt in range(6):
        step = min(10.0, 0.2 * 2**attempt)
        assert Backoff(base=0.2, cap=10.0).delay(attempt, rand=0.0) == pytest.approx(step / 2)
        assert Backoff(base=0.2, cap=10.0).delay(attempt, rand=0.999) < step
    assert Backoff(base=0.2, cap=10.0).delay(20, rand=0.5) <= 10.0


class Script:
    """Answers requests from a list of responses (or exceptions), recording each request."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def _ok_manifest() -> httpx.Response:
    return httpx.Response(
        200,
        content=MANIFEST,
        headers={"Content-Type": OCI_MANIFEST, "Docker-Content-Digest": DIGEST},
    )


def _client(script: Script, sleeps: list[float], **kwargs: float) -> RegistryClient:
    return RegistryClient(
        HOST, transport=httpx.MockTransport(script), sleep=sleeps.append, **kwargs
    )


def test_retry_after_http_date_is_honoured() -> None:
    when = datetime.now(UTC) + timedelta(seconds=3)
    script = Script(
        httpx.Response(429, headers={"Retry-After": format_datetime(when, usegmt=True)}),
        _ok_manifest(),
    )
    sleeps: list[float] = []
    with _client(script, sleeps) as client:
        manifest = client.get_manifest("a/b", "v1")
    assert manifest.digest == DIGEST
    assert len(script.requests) == 2
    [slept] = sleeps
    assert 1.0 < slept <= 3.0  # HTTP-date has one-second resolution


def test_retry_after_seconds_then_backoff_on_5xx() -> None:
    script = Script(
        httpx.Response(503, headers={"Retry-After": "2"}),
        httpx.Response(502),
        httpx.Response(500),
        _ok_manifest(),
    )
    sleeps: list[float] = []
    with _client(script, sleeps, backoff=0.1) as client:
        client.get_manifest("a/b", "v1")
    assert sleeps[0] == 2.0
    assert 0.1 <= sleeps[1] <= 0.2  # attempt 1: 0.2 scaled into [½, 1]
    assert 0.2 <= sleeps[2] <= 0.4


def test_exhausted_retries_raise_registry_error_with_url_and_status() -> None:
    script = Script(*[httpx.Response(503) for _ in range(3)])
    sleeps: list[float] = []
    with (
        _client(script, sleeps, max_retries=2) as client,
        pytest.raises(
            RegistryError,
            match=r"GET https://registry.example.com/v2/a/b/manifests/v1: got HTTP 503"
            r".*gave up after 3 attempts",
        ) as info,
    ):
        client.get_manifest("a/b", "v1")
    assert info.value.status == 503
    assert info.value.exit_code == 3
    assert len(sleeps) == 2


def test_retry_after_beyond_limit_is_not_waited_for() -> None:
    script = Script(httpx.Response(429, headers={"Retry-After": "3600"}))
    sleeps: list[float] = []
    with (
        _client(script, sleeps, max_retry_after=30.0) as client,
        pytest.raises(RegistryError, match="asked to wait 3600s, over our 30s"),
    ):
        client.list_tags("a/b")
    assert sleeps == []


def test_connection_errors_are_retried_for_reads() -> None:
    script = Script(
        httpx.ConnectError("connection refused"),
        httpx.ReadError("connection reset by peer"),
        _ok_manifest(),
    )
    sleeps: list[float] = []
    with _client(script, sleeps) as client:
        assert client.get_manifest("a/b", "v1").digest == DIGEST
    assert len(sleeps) == 2


def test_connection_failure_after_retries_is_registry_error() -> None:
    script = Script(*[httpx.ConnectError("connection refused") for _ in range(2)])
    with (
        _client(script, [], max_retries=1) as client,
        pytest.raises(
            RegistryError,
            match=r"GET https://registry.example.com/v2/: ConnectError.*after 2 attempts",
        ),
    ):
        client.ping()


def test_blob_upload_put_is_not_blindly_retried() -> None:
    """The final PUT of an upload is not replayed: we check the blob, then start afresh."""
    data = b"layer bytes"
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    upload = "/v2/a/b/blobs/uploads/u1?_state=x"
    script = Script(
        httpx.Response(404),  # HEAD blob: not there
        httpx.Response(202, headers={"Location": upload}),  # POST
        httpx.ReadError("reset during PUT"),  # PUT: answer lost
        httpx.Response(404),  # HEAD blob: did not land
        httpx.Response(202, headers={"Location": "/v2/a/b/blobs/uploads/u2"}),  # POST again
        httpx.Response(201, headers={"Docker-Content-Digest": digest}),  # PUT
    )
    sleeps: list[float] = []
    with _client(script, sleeps) as client:
        assert client.push_blob("a/b", data) == digest
    methods = [r.method for r in script.requests]
    assert methods == ["HEAD", "POST", "PUT", "HEAD", "POST", "PUT"]
    assert script.requests[2].url.params["digest"] == digest
    assert script.requests[2].url.params["_state"] == "x"
    assert script.requests[5].content == data


def test_upload_put_that_landed_is_not_repeated() -> None:
    data = b"another layer"
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    script = Script(
        httpx.Response(404),
        httpx.Response(202, headers={"Location": "/v2/a/b/blobs/uploads/u1"}),
        httpx.Response(503),  # the PUT failed visibly ...
        httpx.Response(200),  # ... but the blob is there
    )
    with _client(script, []) as client:
        assert client.push_blob("a/b", data) == digest
    assert [r.method for r in script.requests] == ["HEAD", "POST", "PUT", "HEAD"]


def test_non_retryable_status_fails_at_once() -> None:
    script = Script(
        httpx.Response(400, json={"errors": [{"code": "NAME_INVALID", "message": "bad"}]})
    )
    sleeps: list[float] = []
    with (
        _client(script, sleeps) as client,
        pytest.raises(RegistryError, match="got HTTP 400 \\(NAME_INVALID: bad\\)"),
    ):
        client.list_tags("a/b")
    assert sleeps == []
