"""The scheduled registry report: EventBridge Scheduler → `report` → S3.

    schedule payload → the ECR registry (its repositories under REGWARDEN_REPORT_PREFIXES)
    and the DynamoDB ledger → `regwarden.report` (collect, summarise, render) → two objects,
    `PREFIX/YYYY/MM/DD/report.html` and `report.json`, in the reports bucket; the summary
    is kept in the ledger (a `report` action record) so the next report draws trends.

The bucket's lifecycle expires old reports (template.yaml: ReportRetentionDays); the role
may put objects under the prefix only, read the registry and the ledger, and write only
`report` action records. Heavy imports (the core, boto3, matplotlib) wait for the
invocation.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from regwarden.errors import RegistryError
from regwarden.report import make_report, report_json, report_keys
from regwarden.report_scope import ReportScope
from regwarden.warm import env_required

if TYPE_CHECKING:
    from regwarden.report import Report

__all__ = [
    "FUNCTION",
    "ReportSettings",
    "report_event",
    "report_keys",
    "write_report",
]  # report_keys: the core's

FUNCTION = "report"
HTML_TYPE = "text/html; charset=utf-8"
JSON_TYPE = "application/json"


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportSettings(ReportScope):
    """Where the report goes and what it covers, read from the environment per invocation
    (a daily function: nothing to keep warm). The role may write only under `prefix`."""

    bucket: str

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ReportSettings:
        env = os.environ if env is None else env
        return cls(
            bucket=env_required(env, "REGWARDEN_REPORT_BUCKET", "the reports bucket"),
            **asdict(ReportScope.from_env(env)),
        )


def write_report(
    s3: Any, bucket: str, prefix: str, report: Report, html: str, *, now: datetime
) -> tuple[str, str]:
    """Put the HTML page and its JSON; returns their keys. The bucket's default encryption
    (the stack's KMS key) applies; nothing here names a key or an ACL."""
    from botocore.exceptions import BotoCoreError, ClientError

    html_key, json_key = report_keys(prefix, now)
    body = report_json(report)
    for key, data, content_type in (
        (json_key, body, JSON_TYPE),
        (html_key, html, HTML_TYPE),
    ):
        try:
            s3.put_object(
                Bucket=bucket, Key=key, Body=data.encode("utf-8"), ContentType=content_type
            )
        except (ClientError, BotoCoreError) as exc:
            raise RegistryError(f"S3 s3://{bucket}/{key}: cannot write the report: {exc}") from exc
    return html_key, json_key


def report_event(
    event: object, *, logger: Logger, metrics: Metrics, now: datetime | None = None
) -> dict[str, Any]:
    """The scheduled report of this account's ECR registry, written to the reports bucket.
    Any failure raises (the invocation fails; the schedule's retry policy tries again)."""
    from regwarden import botocore_config
    from regwarden.report import render_html
    from regwarden.runtime import Runtime
    from regwarden.store import DynamoLedger

    from ._app import _structured_core_logs, provider_defaults
    from ._settings import RetentionSettings, Settings, load_policy

    now = now or datetime.now(UTC)
    settings = Settings.from_env()
    report_settings = ReportSettings.from_env()
    registry = RetentionSettings.from_env().registry  # REGWARDEN_REGISTRY, checked as ECR's
    _structured_core_logs()
    runtime = Runtime(
        load_policy(settings.policy),
        ledger=DynamoLedger(settings.table),
        provider_defaults=provider_defaults(settings),
    )
    try:
        report = make_report(
            runtime.registry(registry),
            runtime.ledger,
            registry=registry,
            policy=runtime.policy,
            globs=report_settings.globs,
            now=now,
            top=report_settings.top,
            stale_days=report_settings.stale_days,
        )
    finally:
        runtime.close()
        runtime.ledger.close()
    html = render_html(report)
    html_key, json_key = write_report(
        botocore_config.client("s3"),
        report_settings.bucket,
        report_settings.prefix,
        report,
        html,
        now=now,
    )
    metrics.add_dimension(name="function", value=FUNCTION)
    metrics.add_metric(name="ReportImages", unit=MetricUnit.Count, value=report.images)
    summary = {
        "registry": registry,
        "images": report.images,
        "repositories": report.repositories,
        "html": f"s3://{report_settings.bucket}/{html_key}",
        "json": f"s3://{report_settings.bucket}/{json_key}",
        "scheduled": event.get("scheduledTime") if isinstance(event, dict) else None,
    }
    logger.info("report written", extra={"summary": summary})
    return summary
