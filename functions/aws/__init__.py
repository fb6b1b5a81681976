"""AWS Lambda handlers (Powertools): `on_push`, `on_scan`, `notify`, `recovery`,
`retention_fanout`, `retention_worker`, `report`, `on_access`.

Each module's `handler` takes an SQS batch (EventBridge → SQS → Lambda, SNS → SQS →
Lambda for `notify`, the retention work queue for `retention_worker`, CloudTrail's ECR
calls through EventBridge and SQS for `on_access`) and reports partial-batch failures;
`retention_fanout` and `report` are invoked by EventBridge Scheduler, `recovery` by an
EventBridge schedule (every 5 minutes), and `on_access` by a one-minute schedule too (the
sweep of its alert windows). Deployed
by `template.yaml` with `CodeUri: functions/aws/` built by `functions/aws/Makefile` into
`functions/aws/…`, so the handler path is `functions.aws.on_push.handler` in Lambda and
in tests alike.
"""

from functions._collector import ColdStartPause

__all__: list[str] = ["COLLECTOR"]

# Paused until the first state is built (functions/_collector.py says why).
COLLECTOR = ColdStartPause("AWS_LAMBDA_FUNCTION_NAME")
