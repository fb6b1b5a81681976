"""Webhook receiver: authenticate, persist, acknowledge, then process on a worker pool."""

from ._access import AccessIntake, AccessParser
from ._app import BODY_TIMEOUT, MAX_BODY, Validator, create_app
from ._auth import CallerAuthenticator
from ._metrics import ServeMetrics
from ._worker import Job, WorkerPool, utcnow

__all__ = [
    "BODY_TIMEOUT",
    "MAX_BODY",
    "AccessIntake",
    "AccessParser",
    "CallerAuthenticator",
    "Job",
    "ServeMetrics",
    "Validator",
    "WorkerPool",
    "create_app",
    "utcnow",
]
