"""The scheduled report on GCP: the `report` Cloud Run function driven through
functions-framework with the Pub/Sub tick Cloud Scheduler publishes, over the harness's
stand-ins (Artifact Registry's API and `/v2/` in front of a real distribution, the SQLite
ledger) and a Cloud Storage stand-in receiving the media uploads (`support.fake_gcs`).
It must leave `reports/YYYY/MM/DD/report.html` and `report.json` in the bucket, read only
the repositories under its prefixes, and keep its summary in the ledger."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import closing
from datetime import timedelta

import pytest
from support import gcp_harness
from support.fake_gcs import FakeGcs
from support.gcp_harness import ALERTS, HOST, PROJECT, T0, Gcp, image, tick

from functions.gcp import _report
from regwarden.report import report_summaries

gcp = gcp_harness.gcp

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("skopeo") is None, reason="needs skopeo"),
]

BUCKET = "regwarden-reports"
TICK = f"projects/{PROJECT}/topics/regwarden-report-tick"
POLICY = f"""\
apiVersion: regwarden/v1
kind: Policy
registries:
  - {{host: {HOST}, kind: gar}}
defaults:
  mode: audit
repositories:
  - match: "{PROJECT}/signed/**"
    team: alpha
  - match: "{PROJECT}/scanned/**"
    team: bravo
notifications:
  channels:
    alerts: {{type: pubsub, topic: "{ALERTS}"}}
  routes:
    - {{to: [alerts]}}
"""


@pytest.fixture
def gcp_policy() -> str:
    return POLICY


@pytest.fixture
def gcs(gcp: Gcp) -> Iterator[FakeGcs]:
    """The bucket, and the report function's settings (its state forgotten around)."""
    with FakeGcs() as fake:
        fake.bucket(BUCKET)
        gcp.setenv("REGWARDEN_GCP_ENDPOINT_STORAGE", fake.url)
        gcp.setenv("REGWARDEN_REPORT_BUCKET", BUCKET)
        gcp.setenv("REGWARDEN_REPORT_REGISTRY", HOST)
        _report.reset()
        try:
            yield fake
        finally:
            _report.reset()


def test_a_report_tick_writes_the_days_report_to_the_bucket(gcp: Gcp, gcs: FakeGcs) -> None:
    alpha, bravo, outside = image("signed"), image("scanned"), image("signed")
    gcp.push(alpha, "1.0.0", seed=801)
    gcp.push(alpha, "1.0.1", seed=802)
    gcp.push(bravo, "2.0.0", seed=803)
    gcp.push(outside, "9.9.9", seed=804)
    gcp.setenv("REGWARDEN_REPORT_PREFIXES", f"{alpha},{bravo}")
    at = T0 + timedelta(days=1, hours=6)
    gcp.at(at)

    status, answer = gcp.deliver("report", tick(TICK, at))

    assert status == 200, answer
    assert (answer["images"], answer["repositories"]) == (3, 2)
    html_key, json_key = "reports/2026/01/02/report.html", "reports/2026/01/02/report.json"
    assert answer["html"] == f"gs://{BUCKET}/{html_key}"
    assert answer["json"] == f"gs://{BUCKET}/{json_key}"
    assert set(gcs.objects) == {(BUCKET, html_key), (BUCKET, json_key)}
    page = gcs.objects[(BUCKET, html_key)]
    assert page.content_type == "text/html; charset=utf-8"
    html = page.data.decode()
    assert html.lstrip().lower().startswith("<!doctype html") and "<svg" in html
    assert "authorization" not in page.headers  # a loopback stand-in gets no token
    data = gcs.objects[(BUCKET, json_key)]
    assert data.content_type == "application/json"
    body = json.loads(data.data)
    assert body["registry"] == HOST and body["images"] == 3
    assert {g["name"] for g in body["storage"]["by_team"]} == {"alpha", "bravo"}
    assert outside not in data.data.decode() and outside not in html
    with closing(gcp.ledger()) as ledger:
        assert [s["images"] for s in report_summaries(ledger, HOST)] == [3]

    # the tick redelivered at the same moment: the day's objects written again, and the
    # summary (keyed by registry and time) kept once
    status, again = gcp.deliver("report", tick(TICK, at))
    assert status == 200 and again["html"] == answer["html"]
    assert len(gcs.objects) == 2
    with closing(gcp.ledger()) as ledger:
        assert len(report_summaries(ledger, HOST)) == 1
    # the next day's report: new keys beside the first, and a trend of two summaries
    gcp.at(at + timedelta(days=1))
    status, next_day = gcp.deliver("report", tick(TICK, at + timedelta(days=1), message_id="5101"))
    assert status == 200 and next_day["html"] == f"gs://{BUCKET}/reports/2026/01/03/report.html"
    assert len(gcs.objects) == 4
    with closing(gcp.ledger()) as ledger:
        assert len(report_summaries(ledger, HOST)) == 2


def test_a_report_that_cannot_be_written_is_redelivered(gcp: Gcp, gcs: FakeGcs) -> None:
    gcp.setenv("REGWARDEN_REPORT_PREFIXES", image("signed"))
    gcp.setenv("REGWARDEN_REPORT_BUCKET", "no-such-bucket")

    status, answer = gcp.deliver("report", tick(TICK, T0 + timedelta(days=1)))

    assert status == 500 and "no-such-bucket" in answer["error"]
    assert "does not exist" in answer["error"]
    assert not gcs.objects


def test_a_malformed_delivery_is_refused(gcp: Gcp, gcs: FakeGcs) -> None:
    status, answer = gcp.call("report", b"not json", {"content-type": "application/json"})
    assert status == 400, answer
    assert not gcs.objects


def test_settings() -> None:
    from regwarden.errors import UsageError

    with pytest.raises(UsageError, match="REGWARDEN_REPORT_REGISTRY"):
        _report.ReportSettings.from_env({"REGWARDEN_REPORT_BUCKET": "b"})
    with pytest.raises(UsageError, match="REGWARDEN_REPORT_BUCKET"):
        _report.ReportSettings.from_env({"REGWARDEN_REPORT_REGISTRY": HOST})
    s = _report.ReportSettings.from_env(
        {
            "REGWARDEN_REPORT_BUCKET": "b",
            "REGWARDEN_REPORT_REGISTRY": HOST,
            "REGWARDEN_REPORT_PREFIXES": "p/a/,p/quarantine/p/a/",
            "REGWARDEN_REPORT_PREFIX": "/daily/",
        }
    )
    assert (s.prefix, s.repositories) == ("daily/", ("p/a/", "p/quarantine/p/a/"))
