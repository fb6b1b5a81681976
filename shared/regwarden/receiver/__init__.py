"""Webhook receiver: authenticate, persist, acknowledge, then process on a worker pool."""

from ._app import BODY_TIMEOUT, MAX_BODY, Validator, create_app
from ._auth import Authenticator
from ._worker import Processor, WorkerPool, utcnow

__all__ = [
    "BODY_TIMEOUT",
    "MAX_BODY",
    "Authenticator",
    "Processor",
    "Validator",
    "WorkerPool",
    "create_app",
    "utcnow",
]
