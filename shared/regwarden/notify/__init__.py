"""Alerts and the channels that carry them (Slack, Teams, signed webhook, stdout/file, SNS,
Pub/Sub, Event Grid)."""

from ._alert import AccessAlertDetail, Alert, finding_line
from ._build import CHANNELS, ChannelContext, ChannelFactory, build_channel, build_channels
from ._channels import (
    DeliveryFailed,
    Notifier,
    RetryPolicy,
    SlackChannel,
    StreamChannel,
    TeamsChannel,
    WebhookChannel,
)
from ._deliver import DeliveryReport, deliver, routed_to
from ._eventgrid import EventGridChannel, eventgrid_alert, eventgrid_event
from ._outbox import RETRY_BASE, RETRY_MAX, outbox_delay, send_outbox
from ._pubsub import PubSubChannel, pubsub_attributes
from ._render import (
    ACCESS_CLOUDEVENT_TYPE,
    CLOUDEVENT_TYPE,
    ID_HEADER,
    SIGNATURE_HEADER,
    SIGNATURE_TOLERANCE,
    TIMESTAMP_HEADER,
    event_id,
    render_cloudevent,
    render_slack,
    render_teams,
    render_text,
    sign_payload,
    signature_headers,
    verify_signature,
)
from ._router import Router, Selector, everything_to
from ._sns import SnsChannel, alert_body, sns_attributes

__all__ = [
    "ACCESS_CLOUDEVENT_TYPE",
    "CHANNELS",
    "CLOUDEVENT_TYPE",
    "ID_HEADER",
    "RETRY_BASE",
    "RETRY_MAX",
    "SIGNATURE_HEADER",
    "SIGNATURE_TOLERANCE",
    "TIMESTAMP_HEADER",
    "AccessAlertDetail",
    "Alert",
    "ChannelContext",
    "ChannelFactory",
    "DeliveryFailed",
    "DeliveryReport",
    "EventGridChannel",
    "Notifier",
    "PubSubChannel",
    "RetryPolicy",
    "Router",
    "Selector",
    "SlackChannel",
    "SnsChannel",
    "StreamChannel",
    "TeamsChannel",
    "WebhookChannel",
    "alert_body",
    "build_channel",
    "build_channels",
    "deliver",
    "event_id",
    "eventgrid_alert",
    "eventgrid_event",
    "everything_to",
    "finding_line",
    "outbox_delay",
    "pubsub_attributes",
    "render_cloudevent",
    "render_slack",
    "render_teams",
    "render_text",
    "routed_to",
    "send_outbox",
    "sign_payload",
    "signature_headers",
    "sns_attributes",
    "verify_signature",
]
