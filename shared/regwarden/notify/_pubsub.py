"""Google Cloud Pub/Sub channel: the alert as JSON, with attributes a subscription filters on.

The body is the JSON the SNS channel sends (`alert_body`); each message carries these
attributes, when the alert has a value for them, so a team subscribes with a filter
(cloud.google.com/pubsub/docs/subscription-message-filter):

| attribute    | value                                                        |
| ------------ | ------------------------------------------------------------ |
| `team`       | the owning team from the policy (absent when it names none)  |
| `repository` | the repository name without the registry host                |
| `severity`   | `unknown`, `negligible`, `low`, `medium`, `high`, `critical` |
| `verdict`    | `PASSED`, `WARN`, `FAILED`, `PENDING`, `ERROR`               |
| `action`     | `quarantine`, `release`, `promote`, `rollback`, `none`, `access`, … |
| `kind`       | `verdict`, or `access` for a pull or push worth telling      |
| `finding`    | (access alerts) `blocked-pull`, `unexpected-puller`, …       |

    filter: attributes.team = "payments" AND attributes.verdict = "FAILED"
    filter: NOT attributes:team                                 (alerts no team owns)

Values keep within Pub/Sub's limits (1024 bytes a value). The client is google-cloud-
pubsub's GAPIC `google.pubsub_v1.PublisherClient` over REST (`gcp_clients`), made on the
first send; not `google.cloud.pubsub_v1.PublisherClient`, which is gRPC-only and batches
on background threads a function may freeze. The GAPIC client's own retry is turned off:
429, 408 and 5xx answers and transport failures are retried here with the HTTP channels'
`RetryPolicy` (backoff with full jitter, `Retry-After`, one budget per send), and a
failure ends in `DeliveryFailed` (permanent for any other 4xx, e.g. a missing topic or
permission), as for the other channels.
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from ..errors import UsageError
from ..retry import Retries, tally
from ._alert import Alert
from ._channels import RETRYABLE, DeliveryFailed, Refused, RetryPolicy, send_with_retries
from ._sns import alert_body

__all__ = ["MAX_ATTRIBUTE_BYTES", "MAX_MESSAGE_BYTES", "PubSubChannel", "pubsub_attributes"]

MAX_MESSAGE_BYTES = 10_000_000
"""Pub/Sub's limit on one message (data and attributes)."""
MAX_ATTRIBUTE_BYTES = 1024
"""Pub/Sub's limit on one attribute value."""
_TOPIC = re.compile(r"projects/[^/]+/topics/[^/]+")


def _fit(value: str, limit: int = MAX_ATTRIBUTE_BYTES) -> str:
    """`value` cut to `limit` UTF-8 bytes, never inside a character."""
    return value.encode()[:limit].decode(errors="ignore")


def pubsub_attributes(alert: Alert) -> dict[str, str]:
    """The filterable attributes of `alert`: only those it has a value for."""
    values = {
        "team": alert.team or "",
        "repository": alert.repository,
        "severity": str(alert.severity),
        "verdict": alert.outcome.value,
        "action": alert.action,
        "kind": alert.kind,
        "finding": alert.access.finding if alert.access is not None else "",
    }
    return {key: _fit(value) for key, value in values.items() if value}


def _utcnow() -> datetime:
    return datetime.now(UTC)


class PubSubChannel:
    """Publishes each alert to one Pub/Sub topic (`projects/P/topics/T`)."""

    def __init__(
        self,
        name: str,
        topic: str,
        *,
        env: Mapping[str, str],
        client: Any = None,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = _utcnow,
        rand: Callable[[], float] = random.random,
    ) -> None:
        if not _TOPIC.fullmatch(topic):
            raise UsageError(f"channel {name!r}: got topic {topic!r}, expected projects/P/topics/T")
        self.name = name
        self.topic = topic
        self._env = env
        self._client = client
        self._lock = threading.Lock()
        self._retry = retry or RetryPolicy()
        self._sleep = sleep
        self._clock = clock
        self._now = now
        self._rand = rand

    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                from google.pubsub_v1 import PublisherClient

                from .. import gcp_clients

                self._client = PublisherClient(**gcp_clients.client_kwargs("pubsub", self._env))
            return self._client

    def send(self, alert: Alert) -> None:
        from google.pubsub_v1 import PubsubMessage

        message = PubsubMessage(
            data=alert_body(alert, limit=MAX_MESSAGE_BYTES, service="Pub/Sub").encode(),
            attributes=pubsub_attributes(alert),
        )
        self._publish(message)

    def _publish(self, message: Any) -> None:
        from google.api_core import exceptions as google_errors
        from google.auth.exceptions import GoogleAuthError
        from requests import RequestException

        policy = self._retry

        def attempt(tries: Retries, left: float) -> Refused | None:
            try:
                # no GAPIC retry: it would wait up to 600 s on its own schedule
                self.client.publish(
                    topic=self.topic,
                    messages=[message],
                    retry=None,
                    timeout=min(policy.timeout, left),
                )
                return None
            except google_errors.GoogleAPICallError as exc:
                status = exc.code if isinstance(exc.code, int) else None
                last = f"HTTP {status}: {exc.message}" if status else str(exc)
                if status is None or not (status in RETRYABLE or status >= 500):
                    raise self._failed(
                        last, tries.attempts, status=status, permanent=status is not None
                    ) from None
                response = exc.response
                header = response.headers.get("retry-after") if response is not None else None
                return Refused(last, status, tries.retry_after(header))
            except RequestException as exc:  # no answer: connection refused, reset, timeout
                return Refused(f"{type(exc).__name__}: no answer")
            except GoogleAuthError as exc:  # no token (metadata server, key): later may work
                raise self._failed(
                    f"credentials: {type(exc).__name__}", tries.attempts, status=None
                ) from None

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
            f"channel {self.name!r}: publish to {self.topic} failed ({why}; {tally(attempts)})",
            status=status,
            permanent=permanent,
            retry_after=retry_after,
        )
