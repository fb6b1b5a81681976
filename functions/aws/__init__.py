"""AWS Lambda handlers (Powertools): `on_push`, `on_scan`, `notify`.

Each module's `handler` takes an SQS batch (EventBridge → SQS → Lambda, or SNS → SQS →
Lambda for `notify`) and reports partial-batch failures. Deployed by `template.yaml` with
`CodeUri: functions/aws/` built by `functions/aws/Makefile` into `functions/aws/…`, so the
handler path is `functions.aws.on_push.handler` in Lambda and in tests alike.
"""

__all__: list[str] = []
