"""The scheduled registry report: Cloud Scheduler → Pub/Sub tick → `report` → a GCS bucket.

    tick → the Artifact Registry host's repositories under REGWARDEN_REPORT_PREFIXES and
    the Firestore ledger → `regwarden.report` (collect, summarise, render) → two objects,
    `PREFIX/YYYY/MM/DD/report.html` and `report.json`; the summary is kept in the ledger
    (a `report` action record) so the next report draws trends.

The bucket's lifecycle rule expires old reports (infra/gcp/reports.tf); the function's
account may create objects under the prefix only (an IAM condition). Objects go up by the
Cloud Storage JSON API's media upload over httpx with the function's access token: one
request each, and no storage client library in the bundle.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from regwarden.report_scope import ReportScope
from regwarden.warm import ColdStart, env_required

from . import COLLECTOR, _app

if TYPE_CHECKING:
    from regwarden.report import Report

__all__ = ["REPORT", "STORAGE", "ReportSettings", "report_delivery", "reset", "upload"]

REPORT = "report"
STORAGE = "https://storage.googleapis.com"
"""The Cloud Storage JSON API (`REGWARDEN_GCP_ENDPOINT_STORAGE` names another)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportSettings(ReportScope):
    registry: str
    """The Artifact Registry host reported on (LOCATION-docker.pkg.dev)."""
    bucket: str

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ReportSettings:
        env = os.environ if env is None else env
        return cls(
            registry=env_required(env, "REGWARDEN_REPORT_REGISTRY", "the Artifact Registry host"),
            bucket=env_required(env, "REGWARDEN_REPORT_BUCKET", "the reports bucket's name"),
            **asdict(ReportScope.from_env(env)),
        )


def _build(function: str) -> _app.State:
    return _app.build_state(function, extra_hosts=(ReportSettings.from_env().registry,))


_STATES: ColdStart[_app.State] = COLLECTOR.cold_start(_build, _app.close_state)


def reset() -> None:
    """Forget the cold-start state (tests change the environment between cases)."""
    _STATES.reset()


def upload(bucket: str, key: str, data: bytes, content_type: str, env: Mapping[str, str]) -> None:
    """One object by the JSON API's media upload (objects.insert, uploadType=media). A
    loopback http:// endpoint (a stand-in) gets no token; Google's gets the function's."""
    import httpx

    from regwarden.errors import RegistryError
    from regwarden.gcp_clients import AccessToken, default_credentials, endpoint

    base = endpoint("storage", env) or STORAGE
    headers = {"Content-Type": content_type}
    if not base.startswith("http://"):
        token = AccessToken(default_credentials()).get()
        if token:
            headers["Authorization"] = f"Bearer {token}"
    url = f"{base.rstrip('/')}/upload/storage/v1/b/{bucket}/o"
    try:
        answer = httpx.post(
            url,
            params={"uploadType": "media", "name": key},
            content=data,
            headers=headers,
            timeout=60.0,
        )
    except httpx.HTTPError as exc:
        raise RegistryError(f"GCS gs://{bucket}/{key}: cannot write the report: {exc}") from exc
    if answer.status_code != 200:
        raise RegistryError(
            f"GCS gs://{bucket}/{key}: cannot write the report: HTTP {answer.status_code} "
            f"{answer.text[:500]}"
        )


def _write(settings: ReportSettings, report: Report, html: str) -> tuple[str, str]:
    from regwarden.report import report_json, report_keys

    html_key, json_key = report_keys(settings.prefix, report.generated_at)
    upload(settings.bucket, json_key, report_json(report).encode(), "application/json", os.environ)
    upload(settings.bucket, html_key, html.encode(), "text/html; charset=utf-8", os.environ)
    return html_key, json_key


def report_delivery(body: bytes, headers: Mapping[str, str]) -> _app.Reply:
    """The scheduled report (a tick; its data is not read). Fails (500: the tick is
    redelivered, and the day's keys written again) when anything could not be read or
    written."""

    def work(st: _app.State) -> dict[str, Any]:
        from regwarden.intake.pubsub import decode_pubsub
        from regwarden.report import make_report, render_html

        decode_pubsub(body, headers)  # a malformed delivery is 400, not a report
        settings = ReportSettings.from_env()
        report = make_report(
            st.runtime.registry(settings.registry),
            st.ledger,
            registry=settings.registry,
            policy=st.runtime.policy,
            globs=settings.globs,
            now=_app.now(),
            top=settings.top,
            stale_days=settings.stale_days,
        )
        html_key, json_key = _write(settings, report, render_html(report))
        return {
            "registry": settings.registry,
            "images": report.images,
            "repositories": report.repositories,
            "html": f"gs://{settings.bucket}/{html_key}",
            "json": f"gs://{settings.bucket}/{json_key}",
        }

    return _app.respond(REPORT, headers, work, _STATES.refresh)
