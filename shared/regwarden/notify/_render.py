"""Pure renderers: Slack Block Kit, Teams Adaptive Card, CloudEvents, plain text."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from ._alert import Alert, finding_line

CLOUDEVENT_TYPE = "dev.regwarden.alert.v1"
ACCESS_CLOUDEVENT_TYPE = "dev.regwarden.access"
"""The CloudEvents `type` of an access alert (`Alert.kind == "access"`)."""
ID_HEADER = "webhook-id"
"""The alert's stable id (= the CloudEvents `id`): the same on every retry."""
TIMESTAMP_HEADER = "webhook-timestamp"
"""Unix seconds when this attempt was sent; covered by the signature."""
SIGNATURE_HEADER = "webhook-signature"
"""`v1,<base64 HMAC-SHA256 of "{webhook-id}.{webhook-timestamp}.{body}">`."""
SIGNATURE_TOLERANCE = timedelta(minutes=5)
"""How far a receiver lets the timestamp be from its clock (Standard Webhooks' default)."""


def _access_lines(alert: Alert) -> list[str]:
    a = alert.access
    if a is None:
        return []
    who = a.who + (f" ({a.principal_type})" if a.principal_type else "")
    out = [f"Who: {who}", f"From: {a.source_ip or 'unknown address'}"]
    if a.user_agent:
        out.append(f"How: {a.access} with {a.user_agent} (reported by {a.source})")
    else:
        out.append(f"How: {a.access} (reported by {a.source})")
    out.append(f"Accessed as: {a.reference}")
    if a.summary:
        end = a.window_end.isoformat() if a.window_end else "now"
        out.append(f"Count: {a.count} more in {a.window_start.isoformat()} – {end}")
    return out


def _lines(alert: Alert) -> list[str]:
    out = [alert.summary, *_access_lines(alert)]
    out += [f"• {r}" for r in alert.reasons]
    out += [f"• {finding_line(f)}" for f in alert.top_findings]
    if alert.state:
        out.append(f"State: {alert.state}")
    return out


def render_text(alert: Alert) -> str:
    label = f"ACCESS {alert.access.finding}" if alert.access is not None else alert.outcome.value
    head = f"[{label}] {alert.image}"
    if alert.tags:
        head += f" (tags: {', '.join(alert.tags)})"
    body = [head, f"team: {alert.team or '-'}  action: {alert.action}", *_lines(alert)]
    if alert.release_command:
        body.append(f"release: {alert.release_command}")
    return "\n".join(body)


def _facts(alert: Alert) -> list[tuple[str, str]]:
    """The key facts of an alert, as (name, value): who/where/how many for an access."""
    facts = [("Image", f"`{alert.image}`")]
    a = alert.access
    if a is None:
        facts += [("Tags", ", ".join(alert.tags) or "—")]
    else:
        facts += [("Who", a.who), ("From", a.source_ip or "—")]
    facts += [("Team", alert.team or "—")]
    if a is None:
        facts += [("Action", alert.action)]
    else:
        facts += [("Count", str(a.count) if a.summary else "first")]
    return facts


def render_slack(alert: Alert) -> dict[str, Any]:
    """Slack incoming-webhook payload (Block Kit, with a text fallback for notifications)."""
    fields = [{"type": "mrkdwn", "text": f"*{name}*\n{value}"} for name, value in _facts(alert)]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": alert.title[:150]}},
        {"type": "section", "fields": fields},
        {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(_lines(alert))[:3000]}},
    ]
    if alert.release_command:
        blocks.append(
            {
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": f"Release: `{alert.release_command}`"}],
            }
        )
    return {"text": f"{alert.title}: {alert.summary}", "blocks": blocks}


def render_teams(alert: Alert) -> dict[str, Any]:
    """Microsoft Teams incoming-webhook message carrying an Adaptive Card 1.4."""
    body: list[dict[str, Any]] = [
        {
            "type": "TextBlock",
            "size": "Medium",
            "weight": "Bolder",
            "text": alert.title,
            "wrap": True,
        },
        {
            "type": "FactSet",
            "facts": [{"title": name, "value": value.strip("`")} for name, value in _facts(alert)],
        },
        {"type": "TextBlock", "text": "\n\n".join(_lines(alert)), "wrap": True},
    ]
    if alert.release_command:
        body.append(
            {
                "type": "TextBlock",
                "text": f"Release: {alert.release_command}",
                "wrap": True,
                "fontType": "Monospace",
            }
        )
    card = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
    }
    return {
        "type": "message",
        "attachments": [
            {"contentType": "application/vnd.microsoft.card.adaptive", "content": card}
        ],
    }


def event_id(alert: Alert) -> str:
    """The CloudEvents `id` and `webhook-id`: stable across retries and redeliveries of
    the same alert, so receivers de-duplicate on it."""
    return alert.event_id


def render_cloudevent(alert: Alert, *, source: str = "regwarden") -> dict[str, Any]:
    """CloudEvents 1.0 structured JSON."""
    return {
        "specversion": "1.0",
        "id": event_id(alert),
        "source": source,
        "type": ACCESS_CLOUDEVENT_TYPE if alert.kind == "access" else CLOUDEVENT_TYPE,
        "subject": str(alert.image),
        "time": alert.time.isoformat(),
        "datacontenttype": "application/json",
        "data": alert.model_dump(mode="json"),
    }


def signing_key(secret: bytes) -> bytes:
    """The HMAC key for a configured signing secret: its bytes as given, except a Standard
    Webhooks secret (`whsec_` + base64), which is the key base64-encoded."""
    if secret.startswith(b"whsec_"):
        try:
            return base64.b64decode(secret[6:], validate=True)
        except ValueError:
            pass  # not base64 after all: the string itself is the key
    return secret


def sign_payload(secret: bytes, *, msg_id: str, timestamp: int, body: bytes) -> str:
    """`webhook-signature` value: `v1,` + base64 HMAC-SHA256 over `{id}.{timestamp}.{body}`
    (the Standard Webhooks scheme), so the id and the send time are covered too."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(signing_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_headers(secret: bytes, *, msg_id: str, body: bytes, now: datetime) -> dict[str, str]:
    """The three headers a signed delivery carries; the timestamp is the send time."""
    timestamp = int(now.timestamp())
    return {
        ID_HEADER: msg_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign_payload(secret, msg_id=msg_id, timestamp=timestamp, body=body),
    }


def verify_signature(
    secret: bytes,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: datetime,
    tolerance: timedelta = SIGNATURE_TOLERANCE,
) -> bool:
    """Whether `headers` sign `body` with `secret` and the timestamp is within `tolerance`
    of `now` (either way). What a receiver checks before it looks at the id (docs/alerts.md);
    header names are matched case-insensitively, any of several `v1,` signatures may match."""
    lower = {k.lower(): v for k, v in headers.items()}
    msg_id = lower.get(ID_HEADER)
    stamp = lower.get(TIMESTAMP_HEADER, "")
    given = lower.get(SIGNATURE_HEADER, "")
    if not msg_id or not stamp.isdigit() or not given:
        return False
    if abs(now.timestamp() - int(stamp)) > tolerance.total_seconds():
        return False
    expected = sign_payload(secret, msg_id=msg_id, timestamp=int(stamp), body=body)
    return any(hmac.compare_digest(expected, part) for part in given.split())


def encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
