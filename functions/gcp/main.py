"""Cloud Run functions (functions-framework HTTP functions): the entry points.

Each accepts what its trigger sends: a Pub/Sub push body, or a Pub/Sub message as a
CloudEvent in binary mode (`ce-*` headers, Eventarc) or structured mode
(`application/cloudevents+json`); `recheck` takes the Cloud Tasks request. The answer is
200 when the delivery is done (Pub/Sub acknowledges it), 400 when it is malformed and 500
when it failed (Pub/Sub redelivers both, then dead-letters them; see `_app`).

| entry point        | trigger                                                         |
| ------------------ | --------------------------------------------------------------- |
| `on_push`          | topic `gcr` (Artifact Registry's image writes)                  |
| `on_scan`          | topic `container-analysis-occurrences-v1`                       |
| `retention_fanout` | Cloud Scheduler → topic `regwarden-retention-tick`              |
| `retention_worker` | topic `regwarden-retention-work` (one message per repository)   |
| `notify`           | topic `regwarden-alerts` → Slack, Teams, the signed webhook     |
| `recovery`         | Cloud Scheduler → topic `regwarden-recovery-tick`               |
| `recheck`          | Cloud Tasks (OIDC), body `regwarden.rechecks.recheck_message`   |
| `report`           | Cloud Scheduler → topic `regwarden-report-tick` → a GCS bucket  |

Deployed with `--source` a bundle holding this file at its root beside the `functions`
package and regwarden's project (`requirements.txt`: `regwarden[gcp]`); functions-framework
loads it as `main` and puts its directory on `sys.path`. Module import is light: the core,
the policy and the Google clients load on the first delivery and stay for the warm
instance.
"""

from __future__ import annotations

import flask
import functions_framework

from functions.gcp import _app, _report, _retention

__all__ = [
    "notify",
    "on_push",
    "on_scan",
    "recheck",
    "recovery",
    "report",
    "retention_fanout",
    "retention_worker",
]


def _headers(request: flask.Request) -> dict[str, str]:
    """The request's headers, names in lower case (HTTP's are case-insensitive)."""
    return {key.lower(): value for key, value in request.headers.items()}


@functions_framework.http
def on_push(request: flask.Request) -> _app.Reply:
    """An Artifact Registry write (`gcr`: INSERT/DELETE, by digest or tag; a cosign
    `.sig`/`.att` tag or a referrer re-evaluates its subject) through the gate."""
    return _app.gate_delivery("on_push", request.get_data(), _headers(request))


@functions_framework.http
def on_scan(request: flask.Request) -> _app.Reply:
    """An Artifact Analysis occurrence changed: its image is re-evaluated with the scan."""
    return _app.gate_delivery("on_scan", request.get_data(), _headers(request))


@functions_framework.http
def retention_fanout(request: flask.Request) -> _app.Reply:
    """The scheduled retention run: one work message per repository in scope."""
    return _retention.fan_out_delivery(request.get_data(), _headers(request))


@functions_framework.http
def retention_worker(request: flask.Request) -> _app.Reply:
    """One repository's retention: plan; with RETENTION_MODE=apply, delete and alert."""
    return _retention.worker_delivery(request.get_data(), _headers(request))


@functions_framework.http
def notify(request: flask.Request) -> _app.Reply:
    """One alert from the alerts topic to the policy's Slack, Teams and webhook channels."""
    return _app.notify_delivery(request.get_data(), _headers(request))


@functions_framework.http
def recovery(request: flask.Request) -> _app.Reply:
    """The scheduled sweep: unfinished quarantines finished, pending alerts sent."""
    return _app.recover(_headers(request))


@functions_framework.http
def recheck(request: flask.Request) -> _app.Reply:
    """A PENDING verdict's deadline (Cloud Tasks): the image is judged again."""
    return _app.recheck_request(request.get_data(), _headers(request))


@functions_framework.http
def report(request: flask.Request) -> _app.Reply:
    """The scheduled registry report: HTML and JSON to the reports bucket."""
    return _report.report_delivery(request.get_data(), _headers(request))
