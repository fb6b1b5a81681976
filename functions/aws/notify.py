"""notify: alerts from the SNS alerts topic → the policy's Slack, Teams and webhook channels.

SNS (raw delivery) → SQS (+DLQ) → this handler. Channel secrets (webhook URLs, HMAC keys)
come from Secrets Manager or SSM through Powertools parameters. A channel that fails makes
the record fail; the retry sends only to the channels that did not get the alert yet.
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

FUNCTION = "notify"
logger, tracer, metrics = _app.powertools(FUNCTION)
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


@tracer.capture_method
def record_handler(record: SQSRecord) -> dict[str, Any]:
    return _app.notify_record(record, logger=logger, metrics=metrics)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    _app.start(FUNCTION, context)
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
