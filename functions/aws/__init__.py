"""AWS Lambda handlers (Powertools): `on_push`, `on_scan`, `notify`, `recovery`,
`retention_fanout`, `retention_worker`.

Each module's `handler` takes an SQS batch (EventBridge → SQS → Lambda, SNS → SQS →
Lambda for `notify`, the retention work queue for `retention_worker`) and reports
partial-batch failures; `retention_fanout` is invoked by EventBridge Scheduler and
`recovery` by an EventBridge schedule (every 5 minutes). Deployed
by `template.yaml` with `CodeUri: functions/aws/` built by `functions/aws/Makefile` into
`functions/aws/…`, so the handler path is `functions.aws.on_push.handler` in Lambda and
in tests alike.
"""

import gc
import os

__all__: list[str] = ["cold_start_done"]

# A cold start makes ~120,000 long-lived objects (modules, classes, pydantic schemas,
# botocore's models) and next to no cyclic garbage (~760 objects on on_push's first
# record); every collection walks the survivors again for next to nothing, ~100 ms of a
# cold start. In Lambda the collector waits until the first state is built.
_PAUSED = bool(os.environ.get("AWS_LAMBDA_FUNCTION_NAME")) and gc.isenabled()
if _PAUSED:
    gc.disable()


def cold_start_done() -> None:
    """End the cold start's pause (once; `_app.ColdStart` calls it when its first build
    returns or fails): what the cold start made is frozen, so later collections skip it
    (a rebuilt state unfreezes it again, `ColdStart.refresh`), and the collector resumes."""
    global _PAUSED
    if _PAUSED:
        _PAUSED = False
        gc.freeze()
        gc.enable()
