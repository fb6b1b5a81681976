"""An alert's severity is a name (`"critical"`) everywhere it is printed: the webhook's
CloudEvent, a JSON-lines file or stream, the SNS message body, the Event Grid event, a
finding's severity and `--output json`. Alerts and findings written as numbers before
(outbox rows, ledger JSON) still read back."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from regwarden.cli._render import to_jsonable
from regwarden.model import Finding, Outcome, ScanReport, Severity
from regwarden.notify import (
    Alert,
    StreamChannel,
    alert_body,
    eventgrid_event,
    render_cloudevent,
    render_text,
)
from regwarden.reference import ImageRef

DIGEST = "sha256:" + "ab" * 32
ALERT = Alert(
    time=datetime(2026, 12, 1, 9, 0, tzinfo=UTC),
    image=ImageRef.parse(f"registry.example/payments/api@{DIGEST}"),
    team="payments",
    outcome=Outcome.FAILED,
    severity=Severity.CRITICAL,
    action="quarantine",
    summary="1 critical finding",
    top_findings=(Finding(id="CVE-2026-1", severity=Severity.HIGH, package="openssl"),),
)


def names(doc: dict[str, object]) -> tuple[object, object]:
    findings = doc["top_findings"]
    assert isinstance(findings, list)
    return doc["severity"], findings[0]["severity"]


def test_every_json_rendering_names_the_severity(tmp_path: Path) -> None:
    assert names(json.loads(ALERT.model_dump_json())) == ("critical", "high")
    assert names(ALERT.model_dump(mode="json")) == ("critical", "high")
    assert names(render_cloudevent(ALERT)["data"]) == ("critical", "high")  # webhook body
    assert names(json.loads(alert_body(ALERT))) == ("critical", "high")  # SNS message
    assert names(to_jsonable(ALERT)) == ("critical", "high")  # --output json
    stream = io.StringIO()
    StreamChannel("out", stream=stream, format="json").send(ALERT)
    assert names(json.loads(stream.getvalue())) == ("critical", "high")
    StreamChannel("file", path=tmp_path / "alerts.jsonl").send(ALERT)
    assert names(json.loads((tmp_path / "alerts.jsonl").read_text())) == ("critical", "high")
    assert names(eventgrid_event(ALERT)["data"]) == ("critical", "high")  # Event Grid
    assert "(high)" in render_text(ALERT)


def test_python_mode_keeps_the_enum_for_comparisons() -> None:
    assert ALERT.model_dump()["severity"] is Severity.CRITICAL
    report = ScanReport(digest=DIGEST, scanner="trivy", source="t", findings=ALERT.top_findings)
    again = ScanReport.model_validate_json(report.model_dump_json())
    assert again == report and again.findings[0].severity > Severity.MEDIUM


def test_numbers_written_before_still_read() -> None:
    old = json.loads(ALERT.model_dump_json())
    old["severity"] = 5
    old["top_findings"][0]["severity"] = 4
    assert Alert.model_validate(old) == ALERT
    assert Alert.model_validate_json(json.dumps(old)) == ALERT
    assert Alert.model_validate_json(ALERT.model_dump_json()) == ALERT
    assert Finding.model_validate({"id": "x", "severity": "Important"}).severity is Severity.HIGH


@pytest.mark.parametrize("bad", ["severe", 9, True, None, 2.5])
def test_anything_else_is_refused(bad: object) -> None:
    with pytest.raises(ValidationError):
        Finding.model_validate({"id": "x", "severity": bad})


def test_the_json_schema_lists_the_names() -> None:
    schema = Alert.model_json_schema()["properties"]["severity"]
    assert schema["type"] == "string"
    assert schema["enum"] == ["unknown", "negligible", "low", "medium", "high", "critical"]
