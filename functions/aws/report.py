"""report: the scheduled registry report (EventBridge Scheduler, daily by default).

Reads this account's ECR registry and the DynamoDB ledger, and writes
`reports/YYYY/MM/DD/report.html` (one offline page) and `report.json` (the same data) to
the reports bucket; the summary stays in the ledger for the next report's trends
(`functions.aws._report`).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.aws import _app

FUNCTION = "report"
logger, tracer, metrics = _app.powertools(FUNCTION)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any] | None, context: LambdaContext) -> dict[str, Any]:
    from functions.aws import _report  # the core loads on the first invocation

    return _report.report_event(event, logger=logger, metrics=metrics)
