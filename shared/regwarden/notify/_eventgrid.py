"""Azure Event Grid channel: each alert as a CloudEvent 1.0 on a custom topic, with the
fields a subscription filters on at the top of its `data`.

The event is the webhook channel's CloudEvent (`render_cloudevent`: type
`dev.regwarden.alert.v1`, `id` the alert's stable id, `data` the alert) with these added
to `data`, so a team subscribes with advanced filters (learn.microsoft.com/azure/event-grid/
event-filtering, `data.team` StringIn […]):

| key          | value                                                        |
| ------------ | ------------------------------------------------------------ |
| `team`       | the owning team from the policy (null when it names none)    |
| `repository` | the repository name without the registry host                |
| `severity`   | `unknown`, `negligible`, `low`, `medium`, `high`, `critical` |
| `verdict`    | `PASSED`, `WARN`, `FAILED`, `PENDING`, `ERROR`               |
| `action`     | `quarantine`, `release`, `promote`, `rollback`, `none`, …    |

Published with azure-eventgrid's `EventGridPublisherClient` (made on the first send): the
topic key as `aeg-sas-key` when the policy names `key`, else the function's managed
identity (`azure_clients.default_credential()`, audience eventgrid.azure.net). The client
talks to the configured host only: redirects are not followed (a 3xx is a permanent
failure), so neither the key nor a token can be sent elsewhere; https only, as every
publish carries one. `REGWARDEN_AZURE_ENDPOINT_EVENTGRID` replaces the scheme and host
(a stand-in), `REGWARDEN_AZURE_CA_BUNDLE` is honoured. The SDK's own retries are off:
408, 425, 429 and 5xx answers and transport failures are retried with the channels'
`RetryPolicy` (the shared loop); any other 4xx fails at once, permanent.
"""

from __future__ import annotations

import functools
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from ..errors import UsageError
from ..model import Severity
from ..redact import register_secret
from ..retry import Retries, tally
from ._alert import Alert
from ._channels import RETRYABLE, DeliveryFailed, Refused, RetryPolicy, send_with_retries
from ._render import encode, render_cloudevent
from ._sns import alert_body

__all__ = [
    "FILTER_FIELDS",
    "MAX_EVENT_BYTES",
    "EventGridChannel",
    "eventgrid_alert",
    "eventgrid_event",
]

MAX_EVENT_BYTES = 1024 * 1024
"""Event Grid's limit on one event (and on one publish request)."""
FILTER_FIELDS = ("team", "repository", "severity", "verdict", "action", "kind")
"""The keys at the top of an event's `data` that subscriptions filter on."""
_ADDED = frozenset({"repository", "verdict"})
"""Filter fields that are not the alert's own (the alert has `image` and `outcome`)."""
_SERIALIZER_LOG = "azure.eventgrid._legacy._generated._serialization"
# What one publish passes to the SDK's pipeline (read per request by azure-core's
# policies and transport).
_REQUEST_OPTIONS = frozenset(
    {"retry_total", "permit_redirects", "connection_verify", "connection_timeout", "read_timeout"}
)


def eventgrid_event(alert: Alert) -> dict[str, Any]:
    """The CloudEvent published for `alert`: the one CloudEvents rendering, its `data`
    carrying the filter fields at the top; findings are dropped (and said so) when the
    event would exceed Event Grid's 1 MB."""
    event = render_cloudevent(alert)
    if len(encode(event)) > MAX_EVENT_BYTES - 4096:
        event["data"] = json.loads(
            alert_body(alert, limit=MAX_EVENT_BYTES - 8192, service="Event Grid")
        )
    event["data"].update(
        {
            "team": alert.team,
            "repository": alert.repository,
            "severity": str(alert.severity),
            "verdict": alert.outcome.value,
            "action": alert.action,
        }
    )
    return event


def eventgrid_alert(data: Mapping[str, Any]) -> Alert:
    """The alert an event's `data` carries (what the `notify` function subscribed to the
    topic reads): the filter-only keys dropped, the severity read back from its name."""
    fields = {k: v for k, v in data.items() if k not in _ADDED}
    if isinstance(fields.get("severity"), str):
        fields["severity"] = Severity.parse(fields["severity"])
    return Alert.model_validate(fields)


class _RequestOptionsNoise(logging.Filter):
    """azure-eventgrid 4.x hands a publish's request options to its event model too, which
    logs a warning per option per event ("… is not a known attribute … will be ignored");
    they are not attributes and are not meant to be: that warning only is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        noise = str(record.msg).startswith("%s is not a known attribute") and bool(args)
        return not (noise and args[0] in _REQUEST_OPTIONS)


@functools.cache
def _quiet_request_options() -> None:
    logging.getLogger(_SERIALIZER_LOG).addFilter(_RequestOptionsNoise())


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _publish_url(name: str, endpoint: str, env: Mapping[str, str]) -> str:
    """Where the topic is reached: `endpoint`, or its path on the endpoint
    `REGWARDEN_AZURE_ENDPOINT_EVENTGRID` names; https only."""
    from .. import azure_clients

    parts = urlsplit(endpoint)
    if parts.scheme != "https" or not parts.hostname:
        raise UsageError(
            f"channel {name!r}: got endpoint {endpoint!r}, expected "
            "https://TOPIC.REGION-1.eventgrid.azure.net/api/events"
        )
    override = azure_clients.endpoint("eventgrid", env)
    if override is None:
        return endpoint
    if not override.startswith("https://"):
        raise UsageError(
            f"channel {name!r}: {azure_clients.ENDPOINT_ENV_PREFIX}EVENTGRID must be https "
            "(every publish carries a key or token)"
        )
    return override + (parts.path or "/api/events") + (f"?{parts.query}" if parts.query else "")


class EventGridChannel:
    """Publishes each alert to one Event Grid custom topic (CloudEvents 1.0 schema)."""

    def __init__(
        self,
        name: str,
        endpoint: str,
        *,
        env: Mapping[str, str],
        key: str | None = None,
        credential: Any = None,
        client: Any = None,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = _utcnow,
        rand: Callable[[], float] = random.random,
    ) -> None:
        from .. import azure_clients

        self.name = name
        self.url = _publish_url(name, endpoint, env)
        self.host = urlsplit(self.url).netloc
        self._key = key
        if key:
            register_secret(key)
        self._credential = credential
        # `connection_verify` goes with each publish (`_publish`); the environment settings
        # are the transport's own, given when the client is made
        transport = azure_clients.transport_options(azure_clients.ca_bundle(env) or True)
        self._verify: str | bool = transport.pop("connection_verify")
        self._transport: dict[str, Any] = transport
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
                from azure.core.credentials import AzureKeyCredential
                from azure.eventgrid import EventGridPublisherClient

                from .. import azure_clients

                if self._key:
                    credential: Any = AzureKeyCredential(self._key)
                else:
                    credential = self._credential or azure_clients.default_credential()
                _quiet_request_options()
                self._client = EventGridPublisherClient(self.url, credential, **self._transport)
            return self._client

    def send(self, alert: Alert) -> None:
        self._publish(eventgrid_event(alert))

    def _publish(self, event: dict[str, Any]) -> None:
        from azure.core.exceptions import (
            HttpResponseError,
            ServiceRequestError,
            ServiceResponseError,
        )

        policy = self._retry

        def attempt(tries: Retries, left: float) -> Refused | None:
            timeout = min(policy.timeout, left)
            try:
                self.client.send(
                    event,
                    retry_total=0,  # retried here, on the channels' schedule
                    permit_redirects=False,  # pinned: the key or token goes nowhere else
                    connection_verify=self._verify,
                    connection_timeout=timeout,
                    read_timeout=timeout,
                )
                return None
            except HttpResponseError as exc:
                status = exc.status_code
                if status is None:  # no token (managed identity, CLI): later may work
                    raise self._failed(
                        f"credentials: {type(exc).__name__}", tries.attempts, status=None
                    ) from None
                if 300 <= status < 400:
                    why = f"HTTP {status}: a redirect away from {self.host} is not followed"
                    raise self._failed(why, tries.attempts, status=status, permanent=True) from None
                last = f"HTTP {status}: {_reason(exc)}"
                if not (status in RETRYABLE or status >= 500):
                    raise self._failed(
                        last, tries.attempts, status=status, permanent=True
                    ) from None
                headers = getattr(exc.response, "headers", None) or {}
                header = headers.get("retry-after")
                return Refused(last, status, tries.retry_after(header))
            except (ServiceRequestError, ServiceResponseError) as exc:  # no answer
                return Refused(f"{type(exc).__name__}: no answer")

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
            f"channel {self.name!r}: publish to Event Grid at {self.host} failed "
            f"({why}; {tally(attempts)})",
            status=status,
            permanent=permanent,
            retry_after=retry_after,
        )


def _reason(exc: Any) -> str:
    """Event Grid's error code from its envelope (`{"error": {"code"}}`), else the reason
    phrase: never the whole message, which may quote the request."""
    response = exc.response
    try:
        envelope = json.loads(response.text()) if response is not None else None
    except (ValueError, UnicodeDecodeError):
        envelope = None
    error = envelope.get("error") if isinstance(envelope, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    if isinstance(code, str) and code:
        return code[:80]
    return str(getattr(response, "reason", None) or "error")
