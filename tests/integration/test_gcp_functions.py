"""The GCP functions end to end, driven through functions-framework's own app
(`functions_framework.create_app(target, source)` → Flask test client) with the requests
their triggers send: Pub/Sub push bodies and Eventarc CloudEvents, binary and structured.

Real parts: a local CNCF distribution behind `FakeGar`'s `/v2/` front (skopeo pushes
through it and `regwarden sign` signs through it; the `gcr` messages are what FakeGar
publishes for those writes), the Google client libraries on their REST transport against
the loopback stand-ins (Artifact Registry, Grafeas, Pub/Sub, Cloud Tasks, Secret Manager),
the SQLite ledger, and a loopback webhook sink for the notify function. The functions'
clock (`_app.CLOCK`) is set, so a PENDING deadline can be reached without waiting. The
harness is `support.gcp_harness`.
"""

from __future__ import annotations

import json
import shutil
from contextlib import closing
from datetime import UTC, datetime, timedelta

import pytest
from support import fake_firestore as firestore_support
from support import gcp_harness
from support.fake_firestore import FakeFirestore
from support.gcp_harness import (
    ALERTS,
    HMAC_KEY,
    HOST,
    PROJECT,
    QUEUE,
    RECHECK_URL,
    T0,
    TASKS_ACCOUNT,
    TOPICS,
    WORK,
    Gcp,
    image,
    tick,
)

from functions.gcp import _app
from regwarden.notify import verify_signature
from regwarden.rechecks import task_id
from regwarden.scanning.artifact_analysis import resource_url
from regwarden.store import FirestoreLedger

fake_firestore = firestore_support.fake_firestore
gcp = gcp_harness.gcp

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("skopeo") is None, reason="needs skopeo"),
]

POLICY = f"""\
apiVersion: regwarden/v1
kind: Policy
registries:
  - {{host: {HOST}, kind: gar}}
defaults:
  mode: enforce
  quarantine: {{strategy: retag}}
repositories:
  - match: "{PROJECT}/signed/**"
    team: alpha
    signatures: {{required: true, cosign: {{keys: ["file://cosign.pub"]}}, gracePeriod: 0s}}
  - match: "{PROJECT}/scanned/**"
    team: bravo
    vulnerabilities: {{maxSeverity: high, scanTimeout: 30m}}
    retention:
      keep: [{{mostRecent: 1}}]
      delete: [{{olderThan: 30d}}]
      guard: {{maxDeletes: 10, maxShare: 1}}
notifications:
  channels:
    hook: {{type: webhook, url: "secret://hook-url", secret: "secret://hmac"}}
    alerts: {{type: pubsub, topic: "{ALERTS}"}}
  routes:
    - {{match: {{team: alpha}}, to: [hook]}}
    - {{to: [alerts]}}
"""


@pytest.fixture
def gcp_policy() -> str:
    return POLICY


# -- on_push ----------------------------------------------------------------------------------


def test_an_unsigned_push_is_quarantined_alerted_once_and_delivered_by_notify(gcp: Gcp) -> None:
    repo = image("signed")
    digest = gcp.push(repo, "1.0.0", seed=701)
    push = gcp.gcr_for(repo, "1.0.0")

    status, answer = gcp.deliver("on_push", push, mode="binary")

    assert status == 200, answer
    (result,) = answer["results"]
    assert result["verdict"] == "FAILED" and result["image"] == f"{HOST}/{repo}:1.0.0@{digest}"
    assert any(a.startswith("quarantine") for a in result["actions"])
    tags = gcp.gar.calls("DELETE", r".*/packages/[^/]+/tags/1\.0\.0")
    assert len(tags) == 1  # the tag left through the AR tags API (retag)
    (alert,) = gcp.alerts()  # every alert to the alerts topic, with what teams filter on
    attributes = alert["attributes"]
    assert set(attributes) == {"team", "repository", "severity", "verdict", "action", "kind"}
    assert (attributes["team"], attributes["repository"]) == ("alpha", repo)
    assert (attributes["verdict"], attributes["action"]) == ("FAILED", "quarantine")
    assert attributes["kind"] == "verdict"  # access alerts say `access`: teams filter on it
    assert json.loads(alert["data"])["image"].endswith(f"{repo}@{digest}")

    # the same message again (at-least-once), this time as a push body: nothing twice
    status, again = gcp.deliver("on_push", push, mode="push")
    assert status == 200 and again["results"][0]["ignored"] == "duplicate delivery"
    assert len(gcp.alerts()) == 1
    with closing(gcp.ledger()) as ledger:
        (held,) = [a for a in ledger.actions() if a.kind == "quarantine"]
        assert held.status == "done"
        assert ledger.quarantined(HOST, repo, digest) is not None

    # notify: the alert from the alerts topic to the team's webhook, signed; once
    status, sent = gcp.deliver("notify", {**alert, "topic": ALERTS}, mode="structured")
    assert status == 200, sent
    assert sent["sent"] == ["hook"] and any("alerts" in s for s in sent["skipped"])
    ((headers, body),) = gcp.sink.received
    assert verify_signature(HMAC_KEY.encode(), headers, body, now=datetime.now(UTC))
    assert json.loads(body)["data"]["action"] == "quarantine"
    status, resent = gcp.deliver("notify", {**alert, "topic": ALERTS}, mode="push")
    assert status == 200 and resent["sent"] == [] and len(gcp.sink.received) == 1


@pytest.mark.parametrize("fmt", ["legacy", "bundle"])
def test_a_signed_push_passes_and_its_signature_push_re_evaluates_the_subject(
    gcp: Gcp, fmt: str
) -> None:
    repo = image("signed")
    digest = gcp.push(repo, "2.0.0", seed=702 if fmt == "legacy" else 703)
    before = len(gcp.gar.gcr)
    gcp.sign(repo, digest, fmt)
    signature = [m for m in gcp.gcr(before) if json.loads(m["data"]).get("tag")]
    assert signature, "signing published no tagged INSERT"

    status, answer = gcp.deliver("on_push", gcp.gcr_for(repo, "2.0.0"), mode="structured")
    assert status == 200, answer
    assert answer["results"][0]["verdict"] == "PASSED"
    assert answer["results"][0]["actions"] == []

    status, answer = gcp.deliver("on_push", signature[-1], mode="push", attempt=1)
    assert status == 200, answer
    (result,) = answer["results"]
    assert result["image"].endswith(f"{repo}@{digest}") and result["verdict"] == "PASSED"
    assert answer["attempt"] == 1
    assert all(a["attributes"]["verdict"] == "PASSED" for a in gcp.alerts())
    assert not gcp.gar.calls("DELETE", r".*/tags/2\.0\.0")


# -- on_scan and rechecks ---------------------------------------------------------------------


def test_a_pending_scan_schedules_a_recheck_and_the_critical_occurrence_fails_it(gcp: Gcp) -> None:
    repo = image("scanned")
    digest = gcp.push(repo, "3.0.0", seed=704)
    url = resource_url(HOST, repo, digest)
    gcp.grafeas.set_discovery(url, "PENDING")

    status, answer = gcp.deliver("on_push", gcp.gcr_for(repo, "3.0.0"))
    assert status == 200, answer
    (result,) = answer["results"]
    assert result["verdict"] == "PENDING"
    due = T0 + timedelta(minutes=30)
    assert result["recheck_at"] == due.isoformat()
    (task,) = gcp.tasks.pending()
    assert task["httpRequest"]["url"] == RECHECK_URL
    assert task["httpRequest"]["oidcToken"]["serviceAccountEmail"] == TASKS_ACCOUNT

    seen = len(gcp.grafeas.notifications)
    gcp.grafeas.add_vulnerability(
        url, "CVE-2026-0001", "CRITICAL", package="openssl", version="3.0.1", fixed="3.0.2"
    )
    gcp.grafeas.set_discovery(url, "FINISHED_SUCCESS")
    notices = gcp.occurrences(seen)
    assert {json.loads(n["data"])["kind"] for n in notices} == {"VULNERABILITY", "DISCOVERY"}
    gcp.at(T0 + timedelta(minutes=5))
    answers = [gcp.deliver("on_scan", n, mode="binary") for n in notices]
    assert all(s == 200 for s, _ in answers), answers
    verdicts = [r.get("verdict") for _, a in answers for r in a["results"]]
    assert "FAILED" in verdicts
    failed = [a for a in gcp.alerts() if a["attributes"]["verdict"] == "FAILED"]
    assert failed and failed[-1]["attributes"]["severity"] == "critical"
    assert failed[-1]["attributes"]["team"] == "bravo"


def test_the_recheck_task_re_evaluates_the_image_at_its_deadline(gcp: Gcp) -> None:
    repo = image("scanned")
    digest = gcp.push(repo, "4.0.0", seed=705)
    url = resource_url(HOST, repo, digest)
    gcp.grafeas.set_discovery(url, "SCANNING")
    status, answer = gcp.deliver("on_push", gcp.gcr_for(repo, "4.0.0"))
    assert status == 200 and answer["results"][0]["verdict"] == "PENDING"

    gcp.grafeas.set_discovery(url, "FINISHED_SUCCESS")  # clean, and nobody told on_scan
    later = T0 + timedelta(minutes=31)
    (fired,) = gcp.tasks.due(later)
    gcp.at(later)
    headers = {**fired.headers, "X-CloudTasks-TaskRetryCount": "0"}
    status, answer = gcp.call("recheck", fired.body, headers)

    assert status == 200, answer
    (result,) = answer["results"]
    assert result["image"].endswith(f"{repo}@{digest}") and result["verdict"] == "PASSED"
    assert gcp.tasks.pending() == []


def test_a_recheck_that_comes_early_is_scheduled_on_not_judged(gcp: Gcp) -> None:
    repo = image("scanned")
    digest = gcp.push(repo, "5.0.0", seed=706)
    gcp.grafeas.set_discovery(resource_url(HOST, repo, digest), "PENDING")
    gcp.deliver("on_push", gcp.gcr_for(repo, "5.0.0"))
    (fired,) = gcp.tasks.due(T0 + timedelta(hours=1))

    gcp.at(T0 + timedelta(minutes=10))  # the task ran early (a clock, a manual run)
    status, answer = gcp.call("recheck", fired.body, fired.headers)

    assert status == 200, answer
    due = T0 + timedelta(minutes=30)
    assert answer["results"][0]["rescheduled"] == due.isoformat()
    (again,) = gcp.tasks.pending()  # the next hop, its own task
    assert again["name"] == f"{QUEUE}/tasks/{task_id(fired.json()['image'], due, 1)}"
    assert again["name"] != fired.name


# -- what is refused --------------------------------------------------------------------------


def test_malformed_deliveries_are_answered_400_and_a_foreign_host_is_acknowledged(
    gcp: Gcp,
) -> None:
    status, answer = gcp.call("on_push", b"not json", {"content-type": "application/json"})
    assert status == 400 and "Pub/Sub delivery" in answer["error"]

    bad = {"data": b'{"action": "PUSH"}', "messageId": "77", "publishTime": "2026-01-01T00:00:00Z"}
    status, answer = gcp.deliver("on_push", {**bad, "topic": TOPICS["on_push"]})
    assert status == 400 and "action" in answer["error"]

    foreign = {
        "data": json.dumps(
            {"action": "INSERT", "digest": "evil.example/x/y/z@sha256:" + "0" * 64}
        ).encode(),
        "messageId": "78",
        "publishTime": "2026-01-01T00:00:00Z",
        "topic": TOPICS["on_push"],
    }
    status, answer = gcp.deliver("on_push", foreign)
    assert status == 200 and "rejected" in answer["results"][0]
    assert not any(r.headers.get("host", "").startswith("evil") for r in gcp.gar.requests)

    status, answer = gcp.call("recheck", b"{}", {"content-type": "application/json"})
    assert status == 400 and "recheck" in answer["error"]


def test_a_broken_cold_start_answers_500_so_pub_sub_redelivers(gcp: Gcp) -> None:
    gcp.monkeypatch.setenv("REGWARDEN_POLICY", "secret://missing-policy")
    repo = image("signed")
    gcp.push(repo, "6.0.0", seed=707)

    status, answer = gcp.deliver("on_push", gcp.gcr_for(repo, "6.0.0"))

    assert status == 500 and "missing-policy" in answer["error"]


# -- retention and recovery -------------------------------------------------------------------


def test_a_retention_tick_fans_out_one_message_per_repository_and_the_worker_plans_it(
    gcp: Gcp,
) -> None:
    repo = image("scanned")
    old = gcp.push(repo, "1.0.0", seed=708)
    gcp.push(repo, "1.1.0", seed=709)
    for name, value in {
        "REGWARDEN_RETENTION_REGISTRY": HOST,
        "REGWARDEN_RETENTION_TOPIC": WORK,
        "REGWARDEN_RETENTION_INVENTORY": "policy",
        "REGWARDEN_RETENTION_PREFIXES": repo,
    }.items():
        gcp.monkeypatch.setenv(name, value)
    later = T0 + timedelta(days=60)
    gcp.at(later)

    status, fanned = gcp.deliver("retention_fanout", tick(f"{PROJECT}/topics/t", later))
    assert status == 200, fanned
    assert fanned["queued"] == 1 and fanned["repositories"] == [repo]
    assert fanned["mode"] == "plan" and fanned["publish_calls"] == 1
    (work,) = gcp.pubsub.published(WORK)
    assert work["attributes"]["repository"] == repo
    body = json.loads(work["data"])
    assert body == {"registry": HOST, "repository": repo, "run": fanned["run"]}
    again_status, again = gcp.deliver("retention_fanout", tick(f"{PROJECT}/topics/t", later))
    assert again_status == 200 and again["run"] == fanned["run"]  # a redelivered tick: same run

    status, planned = gcp.deliver("retention_worker", {**work, "topic": WORK})
    assert status == 200, planned
    assert planned["mode"] == "plan" and planned["result"] is None  # nothing deleted
    assert planned["planned_deletions"] == 1
    assert old in json.dumps(planned["plan"])
    assert not gcp.gar.calls("DELETE", r"/v1/.*")

    status, refused = gcp.deliver("retention_worker", {**work, "data": b"[]", "topic": WORK})
    assert status == 400 and "retention message" in refused["error"]


def test_the_recovery_tick_sweeps_and_reports(gcp: Gcp) -> None:
    status, report = gcp.deliver("recovery", tick(f"{PROJECT}/topics/r", T0))
    assert status == 200, report
    assert report == {"resumed": 0, "still_failing": 0, "alerts_sent": 0}


# -- the ledger in Firestore, the policy in Secret Manager ------------------------------------


def test_on_a_firestore_ledger_a_redelivered_push_acts_and_alerts_once(
    gcp: Gcp, fake_firestore: FakeFirestore
) -> None:
    gcp.monkeypatch.setenv("REGWARDEN_LEDGER", f"firestore://{PROJECT}?prefix=fn")
    repo = image("signed")
    digest = gcp.push(repo, "7.0.0", seed=710)
    push = gcp.gcr_for(repo, "7.0.0")

    first = gcp.deliver("on_push", push, mode="binary")
    second = gcp.deliver("on_push", push, mode="structured")

    assert first[0] == 200 and first[1]["results"][0]["verdict"] == "FAILED"
    assert second[0] == 200 and second[1]["results"][0]["ignored"] == "duplicate delivery"
    assert len(gcp.alerts()) == 1
    assert fake_firestore.calls("POST", r".*/documents:commit")  # written there, not SQLite
    assert not (gcp.root / "ledger.db").exists()
    ledger = FirestoreLedger(PROJECT, prefix="fn")
    try:
        held = ledger.quarantined(HOST, repo, digest)
        assert held is not None and held.tags == ("7.0.0",)
    finally:
        ledger.close()


def test_a_policy_in_secret_manager_is_read_again_after_its_ttl(gcp: Gcp) -> None:
    gcp.secrets.put(PROJECT, "regwarden-policy", POLICY.replace("team: alpha", "team: one"))
    gcp.monkeypatch.setenv("REGWARDEN_POLICY", "secret://regwarden-policy")
    gcp.monkeypatch.setenv("REGWARDEN_POLICY_TTL", "0")
    before, after = image("signed"), image("signed")
    gcp.push(before, "8.0.0", seed=711)
    gcp.push(after, "8.0.1", seed=712)

    assert gcp.deliver("on_push", gcp.gcr_for(before, "8.0.0"))[0] == 200
    warm = _app.state("on_push")
    assert _app.state("on_push") is warm  # read again, unchanged: kept
    gcp.secrets.put(PROJECT, "regwarden-policy", POLICY.replace("team: alpha", "team: two"))
    assert gcp.deliver("on_push", gcp.gcr_for(after, "8.0.1"))[0] == 200

    assert _app.state("on_push") is not warm  # rebuilt from the new version
    assert [a["attributes"]["team"] for a in gcp.alerts()] == ["one", "two"]
