"""The Azure function app end to end, each function called as the Functions host calls it
(the decorated functions of `function_app.app`) with the inputs its trigger hands it:
`func.EventGridEvent` / `func.CloudEvent` from the recorded `events/azure` samples,
`func.HttpRequest`, `func.TimerRequest`, `func.QueueMessage`.

Real parts: a local CNCF distribution behind `FakeAcr`'s `/v2/` front (skopeo pushes, a
cosign signature published through it), Azure's own clients against the stand-ins of the
control planes (`FakeAcr`, `FakeResourceGraph`, `FakeEventGrid` for the alerts topic,
`FakeKeyVault`), Azurite for the ledger (Table Storage) and the Storage queues. The
harness is `support.azure_harness`. The same app as a process behind the host stand-in:
`test_azure_scenarios.py`.
"""

from __future__ import annotations

import hashlib
import json
from contextlib import closing
from datetime import UTC, datetime, timedelta

import azure.functions as func
import pytest
from support import azure_harness
from support.azure_harness import ALERTS_TOPIC, HOST, T0, Azure, image, with_storage

from functions.azure import _app
from regwarden import rechecks as rechecks_module
from regwarden.errors import EvidenceUnavailable, RegistryError
from regwarden.notify import verify_signature
from regwarden.rechecks import recheck_message

azure = azure_harness.azure

pytestmark = pytest.mark.integration

POLICY = f"""\
apiVersion: regwarden/v1
kind: Policy
registries:
  - {{host: {HOST}, kind: acr}}
defaults:
  mode: enforce
  quarantine: {{strategy: lock}}
repositories:
  - match: "signed/**"
    team: alpha
    signatures: {{required: true, cosign: {{keys: ["file://cosign.pub"]}}, gracePeriod: 0s}}
  - match: "retagged/**"
    team: alpha
    signatures: {{required: true, cosign: {{keys: ["file://cosign.pub"]}}, gracePeriod: 0s}}
    quarantine: {{strategy: retag}}
  - match: "scanned/**"
    team: bravo
    vulnerabilities: {{maxSeverity: high, scanTimeout: 30m}}
notifications:
  channels:
    hook: {{type: webhook, url: "{{hook}}"}}
    alerts: {{type: eventgrid, endpoint: "{ALERTS_TOPIC}"}}
  routes:
    - {{match: {{team: alpha}}, to: [hook]}}
    - {{to: [alerts]}}
"""


@pytest.fixture
def azure_policy() -> str:
    return POLICY


def _tags(azure: Azure, repository: str) -> list[str]:
    with azure.client() as client:
        return list(client.list_tags(repository))


# -- on_push ----------------------------------------------------------------------------------


def test_a_signed_push_passes_and_keeps_its_tag(azure: Azure) -> None:
    repo = image("signed")
    digest = azure.push(repo, "1.0.0", seed=801)
    azure.sign(repo, digest)

    azure.function("on_push")(azure.pushed(repo, digest, "1.0.0"))

    with closing(azure.ledger()) as ledger:
        assert ledger.last_verdict(HOST, repo, digest) == "PASSED"
        assert ledger.quarantined(HOST, repo, digest) is None
    assert "1.0.0" in _tags(azure, repo)
    assert azure.sink.received == []


LOCKED = {"writeEnabled": False, "deleteEnabled": False, "readEnabled": False}


@pytest.mark.parametrize("schema", ["eventgrid", "cloudevent"])
def test_an_unsigned_push_is_locked_and_alerted_once(azure: Azure, schema: str) -> None:
    repo = image("signed")
    digest = azure.push(repo, "1.0.0", seed=802)
    event = azure.pushed(repo, digest, "1.0.0", schema=schema)

    azure.function("on_push")(event)

    with closing(azure.ledger()) as ledger:
        assert ledger.last_verdict(HOST, repo, digest) == "FAILED"
        record = ledger.quarantined(HOST, repo, digest)
        assert record is not None and record.strategy == "lock"
        (held,) = [a for a in ledger.actions() if a.kind == "quarantine"]
        assert held.status == "done" and held.repository == repo
    # FAILED: written, deleted and read no more (ACR's changeable attributes)
    assert azure.acr.attributes(repo, digest).items() >= LOCKED.items()
    assert len(azure.sink.received) == 1

    # Event Grid delivers at least once: the same event again changes nothing
    azure.function("on_push")(event)
    assert len(azure.sink.received) == 1
    with closing(azure.ledger()) as ledger:
        assert len([a for a in ledger.actions() if a.kind == "quarantine"]) == 1


def test_an_unsigned_push_is_retagged_where_the_policy_says(azure: Azure) -> None:
    repo = image("retagged")
    digest = azure.push(repo, "1.0.0", seed=807)

    azure.function("on_push")(azure.pushed(repo, digest, "1.0.0"))

    with closing(azure.ledger()) as ledger:
        record = ledger.quarantined(HOST, repo, digest)
        assert record is not None and record.strategy == "retag"
    assert "1.0.0" not in _tags(azure, repo)  # the tag left through /acr/v1/_tags
    assert azure.acr.attributes(repo, digest)["readEnabled"] is True


def test_a_signature_tag_event_re_evaluates_the_subject(azure: Azure) -> None:
    repo = image("signed")
    digest = azure.push(repo, "1.0.0", seed=803)
    tag = azure.sign(repo, digest)
    with azure.client() as client:
        found = client.head_manifest(repo, tag)  # the .sig manifest's own digest
    assert found is not None
    signature = found.digest

    azure.function("on_push")(azure.pushed(repo, signature, tag))

    with closing(azure.ledger()) as ledger:
        assert ledger.last_verdict(HOST, repo, digest) == "PASSED"
        assert ledger.last_verdict(HOST, repo, signature) is None  # never the artifact


def test_an_image_on_a_host_not_allowed_is_never_contacted(azure: Azure) -> None:
    event = azure.pushed("signed/x", "sha256:" + "a" * 64, "1.0.0")
    event.get_json()["request"]["host"] = "other.azurecr.io"
    before = len(azure.acr.v2_requests)

    azure.function("on_push")(event)  # returns: no attempt could succeed, none is retried

    assert len(azure.acr.v2_requests) == before
    with closing(azure.ledger()) as ledger:
        assert ledger.actions() == []


def test_a_malformed_event_raises_so_event_grid_dead_letters_it(azure: Azure) -> None:
    from regwarden.errors import IntakeError

    event = azure.pushed("signed/x", "sha256:" + "a" * 64, "1.0.0")
    del event.get_json()["target"]

    with pytest.raises(IntakeError, match="target"):
        azure.function("on_push")(event)


def test_a_failing_registry_raises_and_the_redelivery_judges_once(azure: Azure) -> None:
    repo = image("signed")
    digest = azure.push(repo, "1.0.0", seed=804)
    event = azure.pushed(repo, digest, "1.0.0")
    azure.fail_v2(repo)

    with pytest.raises(RegistryError):  # Event Grid retries
        azure.function("on_push")(event)
    with closing(azure.ledger()) as ledger:
        assert ledger.last_verdict(HOST, repo, digest) in (None, "ERROR")
        assert ledger.quarantined(HOST, repo, digest) is None
        # the dead letter's "why", found again by the event's id
        note = ledger.failure("on_push", f"event:{event.id}")  # type: ignore[attr-defined]
        assert note is not None and note.failures == 1 and "503" in note.last_error

    azure.heal()
    azure.function("on_push")(event)  # Event Grid's retry: the same event id

    with closing(azure.ledger()) as ledger:
        assert ledger.last_verdict(HOST, repo, digest) == "FAILED"
        assert ledger.quarantined(HOST, repo, digest) is not None
    assert len(azure.sink.received) == 1


# -- on_webhook -------------------------------------------------------------------------------


def _http(azure: Azure, method: str, body: bytes, headers: dict[str, str]) -> func.HttpResponse:
    request = func.HttpRequest(
        method, "https://app.azurewebsites.net/api/on_webhook", headers=headers, body=body
    )
    answer: func.HttpResponse = azure.function("on_webhook")(request)
    return answer


def test_on_webhook_answers_event_grid_handshakes_before_building_anything(
    azure: Azure, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REGWARDEN_POLICY", "/nonexistent/policy.yaml")  # never read
    _app.reset()
    body, code = azure.validation_body()

    answer = _http(azure, "POST", body, {"Content-Type": "application/json"})
    assert answer.status_code == 200
    assert json.loads(answer.get_body()) == {"validationResponse": code}

    origin = {"WebHook-Request-Origin": "eventgrid.azure.net"}
    answer = _http(azure, "OPTIONS", b"", origin)
    assert answer.status_code == 200
    assert answer.headers["WebHook-Allowed-Origin"] == "eventgrid.azure.net"


def test_on_webhook_judges_acr_quarantine_webhook(azure: Azure) -> None:
    repo = image("signed")
    digest = azure.push(repo, "2.0.0", seed=805)

    body = azure.webhook_body(repo, digest, "2.0.0")
    answer = _http(azure, "POST", body, {"Content-Type": "application/json"})

    assert answer.status_code == 200, answer.get_body()
    with closing(azure.ledger()) as ledger:
        assert ledger.last_verdict(HOST, repo, digest) == "FAILED"

    answer = _http(azure, "POST", b'{"nope": 1}', {"Content-Type": "application/json"})
    assert answer.status_code == 400


# -- on_scan ----------------------------------------------------------------------------------


def test_on_scan_re_evaluates_an_image_whose_defender_findings_changed(azure: Azure) -> None:
    repo = image("scanned")
    digest = azure.push(repo, "1.0.0", seed=806)
    azure.graph.add_finding(HOST, repo, digest, "CVE-2026-0001", "Low", when=T0)
    azure.function("on_push")(azure.pushed(repo, digest, "1.0.0"))
    with closing(azure.ledger()) as ledger:
        assert ledger.last_verdict(HOST, repo, digest) == "PASSED"

    # Defender files a critical finding later: the next poll finds the image and fails it
    azure.at(T0 + timedelta(hours=2))
    azure.graph.add_finding(
        HOST, repo, digest, "CVE-2026-0002", "Critical", when=T0 + timedelta(hours=1)
    )
    azure.function("on_scan")(azure.timer())

    with closing(azure.ledger()) as ledger:
        assert ledger.last_verdict(HOST, repo, digest) == "FAILED"
        assert ledger.quarantined(HOST, repo, digest) is not None
        mark = ledger.action(_app.SCAN_WATERMARK)
        assert mark is not None and mark.status == "done"
        assert mark.state == {"since": (T0 + timedelta(hours=2)).isoformat()}

    # the next poll looks from the watermark (less the overlap), not a day back
    azure.at(T0 + timedelta(hours=3))
    azure.function("on_scan")(azure.timer())
    query = azure.graph.queries[-1]["query"]
    since = T0 + timedelta(hours=2) - _app.SCAN_OVERLAP
    assert since.strftime("%Y-%m-%dT%H:%M") in query


# -- recheck (Storage queue on Azurite) -------------------------------------------------------


def test_a_pending_verdict_comes_back_through_the_queue_and_recheck_judges_it(azure: Azure) -> None:
    rechecks = with_storage(azure)
    repo = image("scanned")
    digest = azure.push(repo, "1.0.0", seed=811)  # no Defender row: PENDING to T0 + 30m
    azure.at(T0 + timedelta(minutes=30) - timedelta(seconds=2))

    azure.function("on_push")(azure.pushed(repo, digest, "1.0.0"))

    with closing(azure.ledger()) as ledger:
        assert ledger.last_verdict(HOST, repo, digest) == "PENDING"
    # a lock hold: no write, no delete, still readable so the gate can judge it again
    hold = {"writeEnabled": False, "deleteEnabled": False, "readEnabled": True}
    assert azure.acr.attributes(repo, digest).items() >= hold.items()
    # on the queue, held back until the deadline (3 s here: Azurite's clock is real)
    assert azure.depth(rechecks) == 1 and azure.visible(rechecks) == []
    body, dequeued = azure.take(rechecks)
    doc = json.loads(body)
    assert doc["image"] == f"{HOST}/{repo}:1.0.0@{digest}"
    assert doc["at"] == (T0 + timedelta(minutes=30)).isoformat()

    # the host hands it to `recheck` once due: no scan by the timeout → FAILED, held
    azure.at(T0 + timedelta(minutes=30, seconds=2))
    message = azure.queue_message(body, dequeue_count=dequeued)
    azure.function("recheck")(message)

    with closing(azure.ledger()) as ledger:
        assert ledger.last_verdict(HOST, repo, digest) == "FAILED"
        assert ledger.quarantined(HOST, repo, digest) is not None
    assert azure.acr.attributes(repo, digest).items() >= LOCKED.items()  # read locked too
    assert azure.depth(rechecks) == 0


def test_a_recheck_beyond_the_queue_limit_hops_on_without_judging(
    azure: Azure, monkeypatch: pytest.MonkeyPatch
) -> None:
    rechecks = with_storage(azure)
    # the queue's limit (7 days less a margin) as 2 s, so the hop is seen arriving
    monkeypatch.setattr(rechecks_module, "STORAGE_QUEUE_MAX_AHEAD", timedelta(seconds=2))
    repo = image("scanned")
    digest = azure.push(repo, "1.0.0", seed=812)
    ref = f"{HOST}/{repo}@{digest}"
    due = T0 + timedelta(days=20)
    body = json.dumps(recheck_message(ref, due)).encode()

    azure.function("recheck")(azure.queue_message(body))

    with closing(azure.ledger()) as ledger:
        assert ledger.last_verdict(HOST, repo, digest) is None  # not judged early
    assert azure.depth(rechecks) == 1 and azure.visible(rechecks) == []  # held back
    hopped, _ = azure.take(rechecks)
    assert json.loads(hopped) == recheck_message(ref, due, hop=1)


def test_a_failing_registry_raises_until_the_last_dequeue_which_is_final(azure: Azure) -> None:
    with_storage(azure)
    repo = image("signed")
    digest = azure.push(repo, "1.0.0", seed=813)
    body = json.dumps(recheck_message(f"{HOST}/{repo}@{digest}", T0)).encode()
    # the manifest reads; the signature lookup fails (evidence that cannot be gathered)
    sig = digest.replace(":", "-") + ".sig"
    for _ in range(200):
        azure.acr.fail_next("GET", rf"/v2/{repo}/manifests/{sig}", 503)
        azure.acr.fail_next("HEAD", rf"/v2/{repo}/manifests/{sig}", 503)
        azure.acr.fail_next("GET", rf"/v2/{repo}/referrers/.*", 503)

    # not the last dequeue: the error propagates (the host makes the message visible
    # again), and nobody is alerted yet
    with pytest.raises(EvidenceUnavailable):
        azure.function("recheck")(azure.queue_message(body, dequeue_count=4))
    assert azure.sink.received == []
    with closing(azure.ledger()) as ledger:
        assert ledger.last_verdict(HOST, repo, digest) == "ERROR"

    # the last (host.json maxDequeueCount = REGWARDEN_MAX_DEQUEUE = 5) is final: the ERROR
    # is alerted before the message goes on to regwarden-rechecks-poison
    with pytest.raises(EvidenceUnavailable):
        azure.function("recheck")(azure.queue_message(body, dequeue_count=5))
    (alert,) = azure.sink.received
    assert json.loads(alert[1])["data"]["outcome"] == "ERROR"
    with closing(azure.ledger()) as ledger:  # the poison copy's note, by its body
        key = "sha256:" + hashlib.sha256(body).hexdigest()
        note = ledger.failure("recheck", key)  # type: ignore[attr-defined]
        assert note is not None and note.failures == 2
    with closing(azure.ledger()) as ledger:
        assert ledger.quarantined(HOST, repo, digest) is None  # never an action on ERROR


# -- alerts: the custom topic, and notify ------------------------------------------------------


def test_every_alert_goes_to_the_topic_and_notify_delivers_it_once(azure: Azure) -> None:
    azure.with_alerts_topic()
    repo = image("signed")
    digest = azure.push(repo, "1.0.0", seed=821)

    azure.function("on_push")(azure.pushed(repo, digest, "1.0.0"))

    # the gate publishes to the topic only, with what subscriptions filter on at the top
    assert azure.sink.received == []
    (posted,) = azure.topic.events
    data = posted["data"]
    assert (data["team"], data["repository"], data["verdict"]) == ("alpha", repo, "FAILED")
    assert data["action"] == "quarantine" and isinstance(data["severity"], str)
    assert azure.topic.posts[0].authorization == f"Bearer {azure.acr.aad_token}"

    # notify (the topic's subscription): to the team's webhook, never back to the topic
    azure.function("notify")(azure.alert_event(posted))
    ((_headers, body),) = azure.sink.received
    sent = json.loads(body)["data"]
    assert sent["image"].endswith(f"{repo}@{digest}") and sent["outcome"] == "FAILED"
    assert len(azure.topic.events) == 1

    # Event Grid redelivers: the channel that has it is not sent to again
    azure.function("notify")(azure.alert_event(posted))
    assert len(azure.sink.received) == 1


def test_notify_raises_when_a_channel_fails_so_event_grid_retries(azure: Azure) -> None:
    azure.with_alerts_topic()
    repo = image("signed")
    digest = azure.push(repo, "1.0.0", seed=822)
    azure.function("on_push")(azure.pushed(repo, digest, "1.0.0"))
    (posted,) = azure.topic.events
    azure.sink.status = 500

    with pytest.raises(RegistryError, match="delivery failed on hook"):
        azure.function("notify")(azure.alert_event(posted))

    azure.sink.status = 204
    azure.function("notify")(azure.alert_event(posted))  # the retry
    assert len(azure.sink.received) == 1


def test_notify_refuses_an_event_that_is_no_alert(azure: Azure) -> None:
    from regwarden.errors import IntakeError

    event = func.CloudEvent(
        id="x1", source="/elsewhere", type="Other.Thing", specversion="1.0", data={"a": 1}
    )
    with pytest.raises(IntakeError, match="not a regwarden alert"):
        azure.function("notify")(event)


# -- recovery ---------------------------------------------------------------------------------


def test_recovery_finishes_a_lock_its_event_left_unfinished(azure: Azure) -> None:
    repo = image("signed")
    digest = azure.push(repo, "1.0.0", seed=831)
    event = azure.pushed(repo, digest, "1.0.0")
    for _ in range(50):  # ACR's control plane refuses the lock, past every retry
        azure.acr.fail_next("PATCH", rf"/acr/v1/{repo}/_manifests/.*", 503)

    with pytest.raises(RegistryError):
        azure.function("on_push")(event)  # Event Grid would retry; suppose it never does
    with closing(azure.ledger()) as ledger:
        (intent,) = [a for a in ledger.actions() if a.kind == "quarantine"]
        assert intent.status == "intent"
    assert azure.acr.attributes(repo, digest)["readEnabled"] is True
    assert azure.sink.received == []

    azure.heal()
    azure.at(T0 + timedelta(minutes=30))  # past REGWARDEN_RECOVERY_SETTLE (600 s)
    azure.function("recovery")(azure.timer())

    with closing(azure.ledger()) as ledger:
        (done,) = [a for a in ledger.actions() if a.kind == "quarantine"]
        assert done.status == "done"
        assert ledger.quarantined(HOST, repo, digest) is not None
    assert azure.acr.attributes(repo, digest).items() >= LOCKED.items()
    assert len(azure.sink.received) == 1  # the verdict's alert, sent once it is done


def test_recovery_deletes_the_delivery_rows_that_expired(azure: Azure) -> None:
    """Table Storage has no TTL: the recovery timer is what deletes expired delivery ids and
    outcome markers, and only those (a verdict or a quarantine record stays)."""
    from urllib.parse import parse_qs, urlsplit

    from azure.core.exceptions import ResourceNotFoundError
    from azure.data.tables import TableClient

    prefix = parse_qs(urlsplit(azure.env["REGWARDEN_LEDGER"]).query)["prefix"][0]

    def markers() -> int:
        """Outcome markers in the ledger's table (the delivery's de-duplication rows)."""
        with TableClient.from_connection_string(
            azure.storage.connection_string, table_name=f"{prefix}outcomes"
        ) as table:
            try:
                return sum(1 for _ in table.query_entities("RowKey eq 'marker'"))
            except ResourceNotFoundError:
                return 0

    repo = image("signed")
    digests = [azure.push(repo, f"1.0.{n}", seed=832 + n) for n in range(2)]
    for n, digest in enumerate(digests):
        azure.function("on_push")(azure.pushed(repo, digest, f"1.0.{n}"))
    assert markers() == 2

    azure.at(T0 + timedelta(days=1))  # nothing has expired yet
    azure.function("recovery")(azure.timer())
    assert markers() == 2

    azure.at(T0 + timedelta(days=8))  # past the pipeline's 7-day delivery window
    azure.function("recovery")(azure.timer())
    assert markers() == 0
    with closing(azure.ledger()) as ledger:
        for digest in digests:  # verdicts and quarantine records stay
            assert ledger.quarantined(HOST, repo, digest) is not None
            assert ledger.last_verdict(HOST, repo, digest) == "FAILED"


# -- secrets and the policy from Key Vault -----------------------------------------------------

VAULT_POLICY = f"""\
apiVersion: regwarden/v1
kind: Policy
registries:
  - {{host: {HOST}, kind: acr}}
defaults:
  mode: enforce
  quarantine: {{strategy: lock}}
repositories:
  - match: "signed/**"
    team: alpha
    signatures: {{required: {{required}}, cosign: {{keys: ["file://cosign.pub"]}}, gracePeriod: 0s}}
notifications:
  channels:
    hook: {{type: webhook, url: "secret://hook-url", secret: "secret://hook-hmac"}}
  routes:
    - {{to: [hook]}}
"""


def test_the_policy_and_its_secrets_come_from_key_vault_and_a_new_policy_is_taken_up(
    azure: Azure,
) -> None:
    azure.vault.put("regwarden-policy", VAULT_POLICY.replace("{required}", "true"))
    azure.vault.put("hook-url", azure.sink.url)
    azure.vault.put("hook-hmac", "hmac-from-the-vault")
    azure.setenv("REGWARDEN_POLICY", "secret://regwarden-policy")
    azure.setenv("REGWARDEN_POLICY_TTL", "0")  # looked at again on every invocation
    repo = image("signed")
    first = azure.push(repo, "1.0.0", seed=841)

    azure.function("on_push")(azure.pushed(repo, first, "1.0.0"))

    ((headers, body),) = azure.sink.received  # the webhook URL and its key from the vault
    assert verify_signature(b"hmac-from-the-vault", headers, body, now=datetime.now(UTC))
    with closing(azure.ledger()) as ledger:
        assert ledger.last_verdict(HOST, repo, first) == "FAILED"

    # the policy is changed in the vault: the next invocation judges by the new one
    azure.vault.put("regwarden-policy", VAULT_POLICY.replace("{required}", "false"))
    second = azure.push(repo, "2.0.0", seed=842)
    azure.function("on_push")(azure.pushed(repo, second, "2.0.0"))
    with closing(azure.ledger()) as ledger:
        assert ledger.last_verdict(HOST, repo, second) == "PASSED"
