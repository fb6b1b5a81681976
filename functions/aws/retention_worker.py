"""retention_worker: one repository per SQS message from `retention_fanout` → plan; with
`RETENTION_MODE=apply`, delete and alert. Failed records (malformed, unreadable inventory,
failed deletions, out of time) go in `batchItemFailures`; their run resumes on redelivery.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.aws import _app

FUNCTION = "retention_worker"
logger, tracer, metrics = _app.powertools(FUNCTION)
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


@tracer.capture_method
def record_handler(record: SQSRecord, lambda_context: LambdaContext) -> dict[str, Any]:
    from functions.aws import _retention  # the core loads on the first record

    return _retention.worker_record(record, context=lambda_context, logger=logger, metrics=metrics)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
