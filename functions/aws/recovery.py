"""recovery: on a schedule (EventBridge, every 5 minutes), finish what a crash left undone.

Resumes every unfinished quarantine whose retry is due from its DynamoDB intent (which
carries the verdict and the alert) and sends every alert the outbox still holds. A Lambda
killed mid-action is normally finished by its event's redelivery; this is for the rest
(the last attempt failed, or the record went to the dead-letter queue).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.aws import _app

FUNCTION = _app.RECOVERY
logger, tracer, metrics = _app.powertools(FUNCTION)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    st = _app.start(FUNCTION, context)
    return _app.recover(st, logger=logger, metrics=metrics)
