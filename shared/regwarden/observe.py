"""Observers of registry requests: how `regwarden serve` measures the registries it calls.

The OCI client reports each HTTP exchange it makes here (one call, after the answer's
headers or the failure), and whoever watches — `serve`'s /metrics — subscribes. Nothing is
imported and nothing is done while no observer is subscribed, so the functions and the
one-shot commands pay one empty-tuple check per request.

Observers are process-wide: the requests of every client in the process reach every
observer. A serve process has one; tests that run several apps in one process see each
other's registry requests in their histograms (their event counters stay apart).
"""

from __future__ import annotations

import logging
import threading
from typing import Protocol

log = logging.getLogger("regwarden.observe")


class RequestObserver(Protocol):
    def request(self, host: str, method: str, seconds: float, status: int | None) -> None:
        """One HTTP exchange with `host` took `seconds` (to the answer's headers); `status`
        is the answer's, or None when no answer came (the failure goes to `error`)."""

    def error(self, host: str, kind: str) -> None:
        """A request to `host` failed: `kind` is `http_<status>` for an error answer
        (4xx but 404, 5xx) or the transport failure's class name (ConnectTimeout, …)."""


_lock = threading.Lock()
_observers: tuple[RequestObserver, ...] = ()


def subscribe(observer: RequestObserver) -> None:
    global _observers
    with _lock:
        _observers = (*_observers, observer)


def unsubscribe(observer: RequestObserver) -> None:
    global _observers
    with _lock:
        _observers = tuple(o for o in _observers if o is not observer)


def has_observers() -> bool:
    return bool(_observers)


def _kind(status: int) -> str | None:
    # 404 is an answer the gate expects (no signature yet, a referrer not found); 401 comes
    # before each token fetch. Neither says the registry is unwell.
    if status >= 500 or (status >= 400 and status not in (401, 404)):
        return f"http_{status}"
    return None


def report_request(
    host: str, method: str, seconds: float, *, status: int | None = None, failure: str | None = None
) -> None:
    """Tell every observer about one exchange: an answer with `status`, or a `failure`
    (the exception's class name). An observer that raises is logged, never propagated:
    measuring must not break a request."""
    observers = _observers
    if not observers:
        return
    kind = failure if status is None else _kind(status)
    for observer in observers:
        try:
            observer.request(host, method, seconds, status)
            if kind is not None:
                observer.error(host, kind)
        except Exception:
            log.exception("request observer %r failed", observer)
