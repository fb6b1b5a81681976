"""Pure renderers: Slack Block Kit, Teams Adaptive Card, CloudEvents, plain text."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from ._alert import Alert, finding_line

CLOUDEVENT_TYPE = "dev.regwarden.alert.v1"
SIGNATURE_HEADER = "X-Regwarden-Signature"


def _lines(alert: Alert) -> list[str]:
    out = [alert.summary]
    out += [f"• {r}" for r in alert.reasons]
    out += [f"• {finding_line(f)}" for f in alert.top_findings]
    if alert.state:
        out.append(f"State: {alert.state}")
    return out


def render_text(alert: Alert) -> str:
    head = f"[{alert.outcome.value}] {alert.image}"
    if alert.tags:
        head += f" (tags: {', '.join(alert.tags)})"
    body = [head, f"team: {alert.team or '-'}  action: {alert.action}", *_lines(alert)]
    if alert.release_command:
        body.append(f"release: {alert.release_command}")
    return "\n".join(body)


def render_slack(alert: Alert) -> dict[str, Any]:
    """Slack incoming-webhook payload (Block Kit, with a text fallback for notifications)."""
    fields = [
        {"type": "mrkdwn", "text": f"*Image*\n`{alert.image}`"},
        {"type": "mrkdwn", "text": f"*Tags*\n{', '.join(alert.tags) or '—'}"},
        {"type": "mrkdwn", "text": f"*Team*\n{alert.team or '—'}"},
        {"type": "mrkdwn", "text": f"*Action*\n{alert.action}"},
    ]
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
            "facts": [
                {"title": "Image", "value": str(alert.image)},
                {"title": "Tags", "value": ", ".join(alert.tags) or "—"},
                {"title": "Team", "value": alert.team or "—"},
                {"title": "Action", "value": alert.action},
            ],
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


def render_cloudevent(alert: Alert, *, source: str = "regwarden") -> dict[str, Any]:
    """CloudEvents 1.0 structured JSON."""
    return {
        "specversion": "1.0",
        "id": alert.dedup_key,
        "source": source,
        "type": CLOUDEVENT_TYPE,
        "subject": str(alert.image),
        "time": alert.time.isoformat(),
        "datacontenttype": "application/json",
        "data": alert.model_dump(mode="json"),
    }


def sign_body(secret: bytes, body: bytes) -> str:
    """HMAC-SHA256 of the exact body, as `sha256=<hex>` (GitHub-style, easy to verify)."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify_body(secret: bytes, body: bytes, header: str) -> bool:
    return hmac.compare_digest(sign_body(secret, body), header)


def encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
