"""on_access: ECR pulls and pushes as CloudTrail records them (`BatchGetImage`, `PutImage`).

EventBridge rule (State ENABLED_WITH_ALL_CLOUDTRAIL_MANAGEMENT_EVENTS) → SQS (+DLQ) → this
handler; each record's access events go to the shared `AccessMonitor`, which answers from
the ledger (no ECR call): a pull of a quarantined, FAILED or PENDING digest or a principal
outside the policy's `access` lists alerts the owning team on the alerts topic, once per
window, and pulls are counted for retention. Failed records are reported in
`batchItemFailures`. The one-minute schedule invokes it with `{"regwarden": "access-sweep"}`
to close due windows (their summaries) when no pull arrives.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.aws import _app

FUNCTION = "on_access"
logger, tracer, metrics = _app.powertools(FUNCTION)
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


@tracer.capture_method
def record_handler(record: SQSRecord) -> dict[str, Any]:
    from functions.aws import _access  # the core loads on the first record

    return _access.access_record(record, logger=logger, metrics=metrics)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(
    event: dict[str, Any] | None, context: LambdaContext
) -> PartialItemFailureResponse | dict[str, Any]:
    from functions.aws import _access

    return _access.invoke(
        event,
        context,
        processor=processor,
        record_handler=record_handler,
        logger=logger,
        metrics=metrics,
    )
