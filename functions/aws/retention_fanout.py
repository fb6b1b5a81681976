"""retention_fanout: the scheduled start of a retention run.

EventBridge Scheduler (payload `{"scheduledTime": "<aws.scheduler.scheduled-time>"}`, or
`{"globs": [...], "run": "..."}` by hand) → this handler → one message per repository
with retention rules on the work queue (SendMessageBatch, 10 a call) → `retention_worker`.
The run id derives from the scheduled time, so a retried invocation queues the same runs.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.aws import _app

FUNCTION = "retention_fanout"
logger, tracer, metrics = _app.powertools(FUNCTION)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any] | None, context: LambdaContext) -> dict[str, Any]:
    from functions.aws import _retention  # the core loads on the first invocation

    return _retention.fan_out_event(event, logger=logger, metrics=metrics)
