"""The Azure Functions app (Python v2 programming model): `app` and its functions.

| function           | trigger                                                             |
| ------------------ | ------------------------------------------------------------------- |
| `on_push`          | Event Grid: ACR's system topic (ImagePushed / ImageDeleted)         |
| `on_webhook`       | HTTP POST (function key): ACR's `quarantine` webhook, or Event Grid |
|                    | / CloudEvents over HTTP (subscription handshakes answered)          |
| `on_scan`          | timer `%REGWARDEN_SCAN_SCHEDULE%`: Defender findings changed        |
| `recheck`          | queue `regwarden-rechecks`: a PENDING verdict's deadline            |
| `recovery`         | timer `%REGWARDEN_RECOVERY_SCHEDULE%`: unfinished actions, alerts   |
| `retention_fanout` | timer `%REGWARDEN_RETENTION_SCHEDULE%` → `regwarden-retention-work` |
| `retention_worker` | queue `regwarden-retention-work`: one repository's retention        |
| `notify`           | Event Grid: the alerts custom topic → Slack, Teams, the webhook     |
| `report`           | timer `%REGWARDEN_REPORT_SCHEDULE%` → the reports Blob container   |

Queues use the `AzureWebJobsStorage` connection; a message that failed `maxDequeueCount`
(host.json: 5) times is moved to `<queue>-poison` by the host. An exception from an Event
Grid trigger makes Event Grid retry, then dead-letter (`functions.azure._app` says more).

Deployed as a bundle holding this file at its root beside the `functions` package and
regwarden's project (`requirements.txt`). Module import is light: the core, the policy
and the Azure clients load on the first invocation and stay for the warm instance.
"""

from __future__ import annotations

import json

import azure.functions as func

from functions.azure import _app

__all__ = ["app"]

app = func.FunctionApp()

# Queue names are fixed in the trigger (the host reads them at indexing); they are the
# defaults of REGWARDEN_RECHECK_QUEUE / REGWARDEN_RETENTION_QUEUE.
_CONNECTION = "AzureWebJobsStorage"


@app.function_name("on_push")
@app.event_grid_trigger(arg_name="event")
def on_push(event: func.EventGridEvent) -> None:
    """An ACR push or delete (a cosign `.sig`/`.att` tag or a referrer re-evaluates its
    subject) through the gate; an exception makes Event Grid retry, then dead-letter."""
    _app.gate_event(event)


@app.function_name("on_webhook")
@app.route(route="on_webhook", methods=["POST", "OPTIONS"], auth_level=func.AuthLevel.FUNCTION)
def on_webhook(req: func.HttpRequest) -> func.HttpResponse:
    """ACR's webhook or an Event Grid / CloudEvents delivery over HTTP."""
    status, body, headers = _app.webhook(req.method, req.get_body(), dict(req.headers))
    text = "" if body is None else json.dumps(body)
    return func.HttpResponse(text, status_code=status, headers=headers, mimetype="application/json")


@app.function_name("on_scan")
@app.timer_trigger(arg_name="timer", schedule="%REGWARDEN_SCAN_SCHEDULE%")
def on_scan(timer: func.TimerRequest) -> None:
    """Images whose Defender findings changed since the last poll, judged again."""
    _app.scan_poll()


@app.function_name("recheck")
@app.queue_trigger(arg_name="message", queue_name="regwarden-rechecks", connection=_CONNECTION)
def recheck(message: func.QueueMessage) -> None:
    """A PENDING verdict's deadline: the image is judged again (or hops on, if early)."""
    _app.recheck_message(
        message.get_body(),
        message_id=message.id,
        dequeue_count=getattr(message, "dequeue_count", None),
    )


@app.function_name("recovery")
@app.timer_trigger(arg_name="timer", schedule="%REGWARDEN_RECOVERY_SCHEDULE%")
def recovery(timer: func.TimerRequest) -> None:
    """The scheduled sweep: unfinished quarantines finished, pending alerts sent."""
    _app.recover()


@app.function_name("retention_fanout")
@app.timer_trigger(arg_name="timer", schedule="%REGWARDEN_RETENTION_SCHEDULE%")
def retention_fanout(timer: func.TimerRequest) -> None:
    """The scheduled retention run: one work message per repository in scope."""
    from functions.azure import _retention

    _retention.fan_out(timer)


@app.function_name("retention_worker")
@app.queue_trigger(
    arg_name="message", queue_name="regwarden-retention-work", connection=_CONNECTION
)
def retention_worker(message: func.QueueMessage) -> None:
    """One repository's retention: plan; with RETENTION_MODE=apply, delete and alert."""
    from functions.azure import _retention

    _retention.work(message)


@app.function_name("notify")
@app.event_grid_trigger(arg_name="event")
def notify(event: func.EventGridEvent) -> None:
    """One alert from the alerts topic to the policy's Slack, Teams and webhook channels."""
    from functions.azure import _notify

    _notify.deliver(event)


@app.function_name("report")
@app.timer_trigger(arg_name="timer", schedule="%REGWARDEN_REPORT_SCHEDULE%")
def report(timer: func.TimerRequest) -> None:
    """The scheduled registry report: HTML and JSON to the reports container."""
    from functions.azure import _report

    _report.report(timer)
