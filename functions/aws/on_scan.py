"""on_scan: ECR basic/enhanced scan completions and Amazon Inspector scans.

EventBridge → SQS (+DLQ) → this handler; each scanned image is re-evaluated by the shared
pipeline with its new findings (a PENDING image passes, fails or stays held). Failed
records are reported in `batchItemFailures` so SQS retries only those.
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

FUNCTION = "on_scan"
logger, tracer, metrics = _app.powertools(FUNCTION)
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


@tracer.capture_method
def record_handler(record: SQSRecord) -> dict[str, Any]:
    return _app.gate_record(record, function=FUNCTION, logger=logger, metrics=metrics)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    _app.start(FUNCTION, context)
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
