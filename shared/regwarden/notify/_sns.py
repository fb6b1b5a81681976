"""AWS SNS channel: the alert as JSON, with message attributes a subscriber filters on.

Every message carries six String attributes (an access alert a seventh, `finding`), so a
team subscribes with a filter policy:

| attribute    | value                                                             |
| ------------ | ----------------------------------------------------------------- |
| `team`       | the owning team from the policy, `none` when the entry names none |
| `repository` | the repository name without the registry host                     |
| `severity`   | `unknown`, `negligible`, `low`, `medium`, `high`, `critical`      |
| `verdict`    | `PASSED`, `WARN`, `FAILED`, `PENDING`, `ERROR`                    |
| `action`     | `quarantine`, `release`, `promote`, `rollback`, `none`, `access`, … |
| `kind`       | `verdict`, or `access` for a pull or push worth telling           |
| `finding`    | (access alerts) `blocked-pull`, `unexpected-puller`, …            |

boto3 is imported on first send; the client's region comes from the topic ARN.
"""

from __future__ import annotations

import threading
from typing import Any

from ..errors import RegistryError, UsageError
from ._alert import Alert

__all__ = ["MAX_MESSAGE_BYTES", "NO_TEAM", "SnsChannel", "alert_body", "sns_attributes"]

MAX_MESSAGE_BYTES = 256 * 1024
"""SNS's limit on a message body plus its attributes."""
NO_TEAM = "none"
"""The `team` attribute of an alert whose repository has no team in the policy."""


def sns_attributes(alert: Alert) -> dict[str, str]:
    """The filterable attributes of `alert` (never empty: SNS refuses empty values)."""
    attributes = {
        "team": alert.team or NO_TEAM,
        "repository": alert.repository,
        "severity": str(alert.severity),
        "verdict": alert.outcome.value,
        "action": alert.action or "none",
        "kind": alert.kind,
    }
    if alert.access is not None:
        attributes["finding"] = alert.access.finding
    return attributes


def alert_body(alert: Alert, *, limit: int = MAX_MESSAGE_BYTES, service: str = "SNS") -> str:
    """The alert as JSON; findings are dropped (and said so) if it would exceed `limit`
    bytes, the topic service's limit on a message (4 KiB are left for its attributes)."""
    text = alert.model_dump_json()
    if len(text.encode()) <= limit - 4096:
        return text
    trimmed = alert.model_copy(
        update={
            "top_findings": (),
            "reasons": (
                *alert.reasons[:20],
                f"(findings and further reasons cut to fit {service})",
            ),
        }
    )
    return trimmed.model_dump_json()


class SnsChannel:
    """Publishes each alert to one SNS topic."""

    def __init__(self, name: str, topic_arn: str, *, client: Any = None) -> None:
        parts = topic_arn.split(":")
        if len(parts) != 6 or parts[0] != "arn" or parts[2] != "sns":
            raise UsageError(
                f"channel {name!r}: got topic {topic_arn!r}, expected "
                "arn:aws:sns:REGION:ACCOUNT:TOPIC"
            )
        self.name = name
        self.topic_arn = topic_arn
        self.region = parts[3]
        self._client = client
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                from .. import botocore_config

                self._client = botocore_config.client(
                    "sns", region=self.region, mode="standard", attempts=6
                )
            return self._client

    def send(self, alert: Alert) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        attributes = {
            key: {"DataType": "String", "StringValue": value}
            for key, value in sns_attributes(alert).items()
        }
        try:
            self.client.publish(
                TopicArn=self.topic_arn,
                Subject=alert.title.encode("ascii", "replace").decode()[:99],
                Message=alert_body(alert),
                MessageAttributes=attributes,
            )
        except (ClientError, BotoCoreError) as exc:
            raise RegistryError(f"channel {self.name!r}: SNS publish failed ({exc})") from exc
