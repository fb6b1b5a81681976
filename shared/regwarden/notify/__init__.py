"""Alerts and the channels that carry them (Slack, Teams, signed webhook, stdout/file)."""

from ._alert import Alert, finding_line
from ._channels import Notifier, SlackChannel, StreamChannel, TeamsChannel, WebhookChannel
from ._render import (
    CLOUDEVENT_TYPE,
    SIGNATURE_HEADER,
    render_cloudevent,
    render_slack,
    render_teams,
    render_text,
    sign_body,
    verify_body,
)
from ._router import Router, Selector, everything_to
from ._sns import SnsChannel, sns_attributes

__all__ = [
    "CLOUDEVENT_TYPE",
    "SIGNATURE_HEADER",
    "Alert",
    "Notifier",
    "Router",
    "Selector",
    "SlackChannel",
    "SnsChannel",
    "StreamChannel",
    "TeamsChannel",
    "WebhookChannel",
    "everything_to",
    "finding_line",
    "render_cloudevent",
    "render_slack",
    "render_teams",
    "render_text",
    "sign_body",
    "sns_attributes",
    "verify_body",
]
