"""Channels: where rendered alerts go. Each is a small class with `send(alert)`.

The HTTP channels (Slack, Teams, webhook) ride out a bad minute at the receiver: a failed
POST is retried with exponential backoff and full jitter, a `Retry-After` (seconds or HTTP
date) is honoured when it fits, and one `send` never takes longer than its budget. When it
gives up, `DeliveryFailed` says whether trying later can help and when (`retry_after`), for
the caller's own schedule (the alert outbox, SQS redelivery).
"""

from __future__ import annotations

import random
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, TextIO

import httpx

from .. import USER_AGENT
from ..errors import RegistryError
from ..oci import DeadlineTransport, deadline_within
from ..redact import redact_text, redact_url, register_secret, register_secret_url
from ..retry import Backoff, Retries, explained, tally
from ._alert import Alert
from ._render import (
    ID_HEADER,
    TIMESTAMP_HEADER,
    encode,
    event_id,
    render_cloudevent,
    render_slack,
    render_teams,
    render_text,
    signature_headers,
)


class Notifier(Protocol):
    name: str

    def send(self, alert: Alert) -> None: ...


class DeliveryFailed(RegistryError):
    """An alert could not be delivered to a channel. `permanent`: the receiver refused it
    (a 4xx other than 408/425/429), so resending the same request will not help;
    `retry_after`: seconds the receiver asked for (or the wait left when the budget ran
    out), None when there is no such hint."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        permanent: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status=status)
        self.permanent = permanent
        self.retry_after = retry_after


@dataclass(frozen=True)
class RetryPolicy:
    """How one `send` retries. The defaults keep a send under 20 s (a worker is not held
    long by one dead receiver; the outbox tries again later)."""

    attempts: int = 4
    """Requests per send, the first included."""
    base: float = 0.5
    """Upper bound of the first backoff, in seconds; it doubles per attempt."""
    cap: float = 8.0
    """Largest upper bound of one backoff."""
    budget: float = 20.0
    """Seconds one send may take in all (requests and waits)."""
    max_retry_after: float = 15.0
    """A longer `Retry-After` ends the send at once (with `retry_after` set) instead."""
    timeout: float = 10.0
    """Connect/read/write timeout of one request (never more than the budget left)."""

    @property
    def backoff(self) -> Backoff:
        """Full jitter: uniform in [0, min(cap, base * 2**n)) before retry n (from 0)."""
        return Backoff(self.base, self.cap, full_jitter=True)


RETRYABLE = frozenset({408, 425, 429})
"""4xx statuses worth retrying; every 5xx is too."""


@dataclass(frozen=True, slots=True)
class Refused:
    """One attempt that failed in a way worth trying again: what to report, the HTTP
    status if there was an answer, the wait the receiver asked for."""

    last: str
    status: int | None = None
    retry_after: float | None = None


class Failed(Protocol):
    def __call__(
        self,
        why: str,
        attempts: int,
        *,
        status: int | None,
        permanent: bool = False,
        retry_after: float | None = None,
    ) -> DeliveryFailed: ...


def send_with_retries(
    policy: RetryPolicy,
    attempt: Callable[[Retries, float], Refused | None],
    failed: Failed,
    *,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
    rand: Callable[[], float],
    now: Callable[[], datetime],
) -> None:
    """Every channel's send loop: `attempt(tries, seconds_left)` makes one try and returns
    None once delivered, `Refused` for a failure worth another try, or raises
    `failed(…, permanent=True)`; waits follow `policy` (backoff, `Retry-After`, budget),
    and giving up raises `failed` saying why."""
    tries = Retries(
        attempts=policy.attempts,
        backoff=policy.backoff,
        max_retry_after=policy.max_retry_after,
        until=clock() + policy.budget,
        clock=clock,
        sleep=sleep,
        rand=rand,
        now=now,
    )
    last, status = "no attempt", None
    while True:
        left = tries.left()
        if left is None or left <= 0:
            raise failed(last, tries.retries, status=status)
        refused = attempt(tries, left)
        if refused is None:
            return
        last, status = refused.last, refused.status
        stop = tries.wait_or_give_up(refused.retry_after)
        if stop is None:
            continue
        why = explained(last, stop, policy.budget)
        raise failed(why, stop.attempts, status=status, retry_after=stop.wait)


def _retryable(status: int) -> bool:
    return status in RETRYABLE or status >= 500


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _no_headers() -> dict[str, str]:
    return {}


class _HttpChannel:
    """POST JSON with bounded retries; a channel failure never blocks the verdict.

    `sleep`, `clock` (monotonic seconds), `now` (for HTTP-date `Retry-After` and the
    signature timestamp) and `rand` are injectable so tests neither sleep nor guess."""

    #: Slack and Teams: the whole URL is the credential.
    _secret_url = False

    def __init__(
        self,
        name: str,
        url: str,
        *,
        client: httpx.Client | None = None,
        retry: RetryPolicy | None = None,
        secret_url: bool | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = _utcnow,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.name = name
        self._url = url
        # Every socket operation keeps the send's overall deadline (the budget): a receiver
        # dripping its answer a byte at a time cannot hold a worker past it.
        self._client = client or httpx.Client(
            timeout=10.0,
            headers={"User-Agent": USER_AGENT},
            transport=DeadlineTransport(limits=httpx.Limits(max_connections=4)),
        )
        self._retry = retry or RetryPolicy()
        if secret_url is not None:
            self._secret_url = secret_url
        if self._secret_url:
            register_secret_url(url)
        self._sleep = sleep
        self._clock = clock
        self._now = now
        self._rand = rand

    @property
    def where(self) -> str:
        """The URL as it may appear in logs and errors."""
        return redact_url(self._url, secret=self._secret_url)

    def _post(self, body: bytes, headers: Callable[[], dict[str, str]]) -> None:
        """POST `body`; `headers` is called per attempt (a signature covers the send time).
        An alert carries its stable id (`webhook-id`, the CloudEvents id) and receivers
        de-duplicate on it (at-least-once by design): the POST is a replayable write."""
        policy = self._retry

        def attempt(tries: Retries, left: float) -> Refused | None:
            try:
                with (
                    deadline_within(left),
                    self._client.stream(
                        "POST",
                        self._url,
                        content=body,
                        headers={"Content-Type": "application/json", **headers()},
                        timeout=min(policy.timeout, left),
                    ) as resp,
                ):  # the answer's body is never read: only its status matters
                    status = resp.status_code
                    if status < 300:
                        return None
                    if not _retryable(status):
                        raise self._failed(
                            f"HTTP {status}", tries.attempts, status=status, permanent=True
                        )
                    wait = tries.retry_after(resp.headers.get("retry-after"))
                    return Refused(f"HTTP {status}", status, wait)
            except httpx.TransportError as exc:
                return Refused(f"{type(exc).__name__}: {redact_text(str(exc)) or 'no answer'}")

        send_with_retries(
            policy,
            attempt,
            self._failed,
            clock=self._clock,
            sleep=self._sleep,
            rand=self._rand,
            now=self._now,
        )

    def _failed(
        self,
        why: str,
        attempts: int,
        *,
        status: int | None,
        permanent: bool = False,
        retry_after: float | None = None,
    ) -> DeliveryFailed:
        return DeliveryFailed(
            f"channel {self.name!r}: delivery to {self.where} failed ({why}; {tally(attempts)})",
            status=status,
            permanent=permanent,
            retry_after=retry_after,
        )


class SlackChannel(_HttpChannel):
    _secret_url = True

    def send(self, alert: Alert) -> None:
        body = encode(render_slack(alert))
        self._post(body, _no_headers)


class TeamsChannel(_HttpChannel):
    _secret_url = True

    def send(self, alert: Alert) -> None:
        body = encode(render_teams(alert))
        self._post(body, _no_headers)


class WebhookChannel(_HttpChannel):
    """CloudEvents JSON with `webhook-id` (the alert's stable id) and `webhook-timestamp`
    (the send time); with a secret, `webhook-signature` signs id, timestamp and body
    (Standard Webhooks scheme, docs/alerts.md)."""

    def __init__(
        self,
        name: str,
        url: str,
        *,
        secret: bytes | None = None,
        client: httpx.Client | None = None,
        retry: RetryPolicy | None = None,
        secret_url: bool | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = _utcnow,
        rand: Callable[[], float] = random.random,
    ) -> None:
        super().__init__(
            name,
            url,
            client=client,
            retry=retry,
            secret_url=secret_url,
            sleep=sleep,
            clock=clock,
            now=now,
            rand=rand,
        )
        self._secret = secret
        register_secret(secret)

    def send(self, alert: Alert) -> None:
        body = encode(render_cloudevent(alert))
        msg_id = event_id(alert)

        def headers() -> dict[str, str]:
            out = {"Content-Type": "application/cloudevents+json"}
            if self._secret:
                out.update(
                    signature_headers(self._secret, msg_id=msg_id, body=body, now=self._now())
                )
            else:
                out.update({ID_HEADER: msg_id, TIMESTAMP_HEADER: str(int(self._now().timestamp()))})
            return out

        self._post(body, headers)


class StreamChannel:
    """Plain text to stdout (local runs) or appended JSON lines to a file."""

    def __init__(
        self,
        name: str,
        *,
        stream: TextIO | None = None,
        path: Path | None = None,
        format: str = "text",
    ) -> None:
        self.name = name
        self._stream = stream
        self._path = path
        self._format = format
        self._lock = threading.Lock()

    def send(self, alert: Alert) -> None:
        with self._lock:
            if self._path is not None:
                with self._path.open("a", encoding="utf-8") as fh:
                    fh.write(alert.model_dump_json() + "\n")
            else:
                text = alert.model_dump_json() if self._format == "json" else render_text(alert)
                print(text, file=self._stream or sys.stdout, flush=True)
