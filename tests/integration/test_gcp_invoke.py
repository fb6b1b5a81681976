"""`regwarden invoke` on every events/gcp sample (a real CLI process), and the gcr messages
through the real pipeline on a real local registry: a tag-only INSERT judged by the digest
its tag names, a cosign `.sig` INSERT re-evaluating its subject."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.cli import run_cli
from support.fake_grafeas import FakeGrafeas
from support.registries import PushImage

from regwarden.devtools import LocalRegistry
from regwarden.oci import RegistryClient, compute_digest

pytestmark = pytest.mark.integration

EVENTS = Path(__file__).resolve().parents[2] / "events" / "gcp"
IMAGE = "us-docker.pkg.dev/demo-proj/apps/api"
DIGEST = "sha256:" + hashlib.sha256(b"regwarden demo api 1.4.2").hexdigest()
REFERRER = "sha256:" + hashlib.sha256(b"regwarden demo api 1.4.2 bundle").hexdigest()
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OPEN_POLICY = (
    "apiVersion: regwarden/v1\nkind: Policy\nrepositories:\n  - match: 't/**'\n    team: payments\n"
    "notifications:\n  channels:\n    log: {type: file, path: alerts.jsonl}\n"
    "  routes:\n    - {match: {team: payments}, to: [log]}\n"
)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGWARDEN_")}
    # no Application Default Credentials here: a lookup must say what it needs, fast
    env["GOOGLE_APPLICATION_CREDENTIALS"] = "/nonexistent/adc.json"
    env.update(extra)
    return env


def _invoke(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return run_cli(
        "--ledger",
        str(tmp_path / "ledger.db"),
        "invoke",
        *args,
        "--policy",
        str(tmp_path / "regwarden.yaml"),
        "--output",
        "json",
        env=env or _env(),
    )


@pytest.fixture
def nowhere(tmp_path: Path) -> Path:
    """A policy that requires nothing of `t/**` and logs the payments team's alerts."""
    (tmp_path / "regwarden.yaml").write_text(OPEN_POLICY)
    return tmp_path


def _message_of(doc: dict[str, Any]) -> dict[str, Any]:
    """The Pub/Sub message inside any of the three recorded delivery shapes."""
    holder = doc.get("body") or doc.get("data") if "message" not in doc else doc
    assert isinstance(holder, dict)
    message = holder["message"]
    assert isinstance(message, dict)
    return message


def _moved(path: Path, dest: Path, old: str, new: str, digests: dict[str, str]) -> Path:
    """The sample with its image `old` renamed `new` and digests swapped (same shape)."""
    doc = json.loads(path.read_bytes())
    message = _message_of(doc)
    text = base64.b64decode(message["data"]).decode().replace(old, new)
    for before, after in digests.items():
        text = text.replace(before, after)
    message["data"] = base64.b64encode(text.encode()).decode()
    dest.write_text(json.dumps(doc))
    return dest


@pytest.fixture
def grafeas() -> Iterator[FakeGrafeas]:
    with FakeGrafeas() as fake:
        yield fake


# -- every sample --------------------------------------------------------------------------


def _bundle_referrer(client: RegistryClient, repo: str, subject: str, size: int) -> str:
    """An OCI 1.1 referrer of `subject` (a Sigstore bundle's shape), pushed by digest."""
    payload = json.dumps({"signed": subject}).encode()
    client.push_blob(repo, b"{}")
    client.push_blob(repo, payload)
    raw = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": "application/vnd.dev.sigstore.bundle.v0.3+json",
            "config": {
                "mediaType": "application/vnd.oci.empty.v1+json",
                "digest": compute_digest(b"{}"),
                "size": 2,
            },
            "layers": [
                {
                    "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
                    "digest": compute_digest(payload),
                    "size": len(payload),
                }
            ],
            "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": size},
        }
    ).encode()
    return client.put_manifest(repo, compute_digest(raw), raw, OCI_MANIFEST)


@pytest.mark.parametrize("path", sorted(EVENTS.glob("gcr-*.json")), ids=lambda p: p.name)
def test_invoke_on_push_runs_each_gcr_sample(
    path: Path,
    nowhere: Path,
    registry: LocalRegistry,
    client: RegistryClient,
    repo: str,
    push: PushImage,
) -> None:
    """Each sample as recorded, its image moved to a real local registry (the pipeline
    reads the registry the message names): what on_push makes of each kind of message."""
    path_repo = f"{repo}/api"
    image = push(path_repo, "1.4.2", seed=31)
    digest = image.manifest_digest
    referrer = _bundle_referrer(client, path_repo, digest, len(image.manifest))
    name = f"{registry.host}/{path_repo}"
    swaps = {DIGEST: digest, DIGEST.replace(":", "-"): digest.replace(":", "-"), REFERRER: referrer}
    moved = _moved(path, nowhere / path.name, IMAGE, name, swaps)
    proc = _invoke(nowhere, "on_push", str(moved))
    assert proc.returncode == 0, proc.stderr
    (row,) = json.loads(proc.stdout)
    kind, judged, outcome = {
        "gcr-insert-digest": ("pushed", f"{name}@{digest}", "PASSED"),
        "gcr-insert-tag": ("pushed", f"{name}:1.4.2@{digest}", "PASSED"),
        "gcr-delete-tag": ("deleted", f"{name}:1.4.1", "delete: nothing to gate"),
        # a signature tag or a referrer: the subject is judged, never the artifact
        "gcr-cosign-sig": ("signed", f"{name}@{digest}", "PASSED"),
        "gcr-referrer": ("pushed", f"{name}@{digest}", "PASSED"),
    }[path.name.split(".")[0]]
    assert (row["event"], row["image"]) == (kind, judged)
    assert (row["outcome"] or row["ignored"]) == outcome, proc.stderr


@pytest.mark.parametrize("path", sorted(EVENTS.glob("occurrence-*.json")), ids=lambda p: p.name)
def test_invoke_on_scan_looks_each_occurrence_up_in_artifact_analysis(
    path: Path,
    nowhere: Path,
    grafeas: FakeGrafeas,
    registry: LocalRegistry,
    repo: str,
    push: PushImage,
) -> None:
    """The occurrence the sample names, in the fake Artifact Analysis, is about an image
    in a real local registry: on_scan finds it there and judges it."""
    image = push(f"{repo}/api", "1.4.2", seed=41)
    name = f"{registry.host}/{repo}/api@{image.manifest_digest}"
    data = json.loads(_payload(path))
    uri = f"https://{name}"
    made = (
        grafeas.set_discovery(uri, "FINISHED_SUCCESS")
        if data["kind"] == "DISCOVERY"
        else grafeas.add_vulnerability(
            uri, "CVE-2023-4911", "HIGH", package="glibc", version="2.36"
        )
    )
    with grafeas.lock:  # filed under the sample's name
        occurrence = grafeas.occurrences.pop(made)
        grafeas.occurrences[data["name"]] = {**occurrence, "name": data["name"]}
    env = _env(REGWARDEN_GCP_ENDPOINT_CONTAINERANALYSIS=grafeas.url)
    proc = _invoke(nowhere, "on_scan", str(path), env=env)
    assert proc.returncode == 0, proc.stderr
    (row,) = json.loads(proc.stdout)
    assert (row["event"], row["image"], row["outcome"]) == ("scanned", name, "PASSED")
    assert grafeas.calls("GET", r"/v1/" + data["name"])


def test_an_occurrence_without_artifact_analysis_access_says_so(nowhere: Path) -> None:
    path = EVENTS / "occurrence-vulnerability.push.json"
    proc = _invoke(nowhere, "on_scan", str(path))
    assert proc.returncode == 2, proc.stderr
    assert "needs Artifact Analysis access" in proc.stderr
    assert "projects/demo-proj/occurrences/806f4b88" in proc.stderr
    assert "REGWARDEN_GCP_ENDPOINT_CONTAINERANALYSIS" in proc.stderr


def test_an_occurrence_that_names_no_image_is_nothing_to_do(
    nowhere: Path, grafeas: FakeGrafeas
) -> None:
    path = EVENTS / "occurrence-vulnerability.push.json"  # not in the fake: deleted since
    env = _env(REGWARDEN_GCP_ENDPOINT_CONTAINERANALYSIS=grafeas.url)
    proc = _invoke(nowhere, "on_scan", str(path), env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []


def test_invoke_notify_delivers_the_alert_sample_to_its_routes(nowhere: Path) -> None:
    proc = _invoke(nowhere, "notify", str(EVENTS / "alert.push.json"))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["sent"] == ["log"]
    (alert,) = [json.loads(line) for line in (nowhere / "alerts.jsonl").read_text().splitlines()]
    assert (alert["team"], alert["outcome"], alert["action"]) == (
        "payments",
        "FAILED",
        "quarantine",
    )
    again = _invoke(nowhere, "notify", str(EVENTS / "alert.push.json"))
    assert json.loads(again.stdout)["skipped"] == ["log (already delivered)"]
    assert len((nowhere / "alerts.jsonl").read_text().splitlines()) == 1


def test_invoke_notify_never_publishes_back_to_the_alerts_topic(tmp_path: Path) -> None:
    topic = "projects/demo-proj/topics/regwarden-alerts"
    (tmp_path / "regwarden.yaml").write_text(
        "apiVersion: regwarden/v1\nkind: Policy\nnotifications:\n  channels:\n"
        f"    alerts: {{type: pubsub, topic: {topic}}}\n"
        "  routes:\n    - {match: {team: payments}, to: [alerts]}\n"
    )
    env = _env(REGWARDEN_ALERTS_TOPIC=topic)
    proc = _invoke(tmp_path, "notify", str(EVENTS / "alert.push.json"), env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["skipped"] == ["alerts (the alerts topic)"]


def _payload(path: Path) -> bytes:
    return base64.b64decode(_message_of(json.loads(path.read_bytes()))["data"])


def _repacked(path: Path, data: dict[str, Any], dest: Path) -> Path:
    """The sample `path` with its message's data replaced (same delivery shape)."""
    doc = json.loads(path.read_bytes())
    doc["message"]["data"] = base64.b64encode(json.dumps(data).encode()).decode()
    dest.write_text(json.dumps(doc))
    return dest


def test_invoke_retention_runs_the_work_message_and_the_tick(
    registry: LocalRegistry, repo: str, push: PushImage, tmp_path: Path
) -> None:
    push(repo, "1.0.0", seed=5)
    (tmp_path / "regwarden.yaml").write_text(
        "apiVersion: regwarden/v1\nkind: Policy\nrepositories:\n"
        f"  - match: '{repo}'\n    retention: {{delete: [{{untagged: {{olderThan: 1d}}}}]}}\n"
    )
    work = EVENTS / "retention-work.push.json"
    message = json.loads(_payload(work)) | {"registry": registry.host, "repository": repo}
    proc = _invoke(tmp_path, "retention", str(_repacked(work, message, tmp_path / "work.json")))
    assert proc.returncode == 0, proc.stderr
    done = json.loads(proc.stdout)
    assert (done["registry"], done["planned_deletions"]) == (registry.host, 0)
    assert done["run_id"].startswith(message["run"])
    tick = EVENTS / "retention-tick.push.json"
    payload = {"globs": [repo.split("/")[0] + "/**"], "scheduledTime": "2026-11-27T03:00:00Z"}
    proc = _invoke(
        tmp_path,
        "retention",
        str(_repacked(tick, payload, tmp_path / "tick.json")),
        "--registry",
        registry.host,
    )
    assert proc.returncode == 0, proc.stderr
    ticked = json.loads(proc.stdout)
    assert ticked["registry"] == registry.host
    assert ticked["run_id"].startswith("20261127T030000Z")  # the schedule's time names it
    # the sample itself: its globs match nothing here, so nothing is planned
    proc = _invoke(tmp_path, "retention", str(tick), "--registry", registry.host)
    assert proc.returncode == 0, proc.stderr


# -- gcr messages through the real pipeline ---------------------------------------------------


@pytest.fixture
def gated(tmp_path: Path) -> Path:
    from regwarden.signatures.keys import generate_private_key

    pem = generate_private_key("ecdsa-p256").public_key.pem
    (tmp_path / "cosign.pub").write_bytes(pem if isinstance(pem, bytes) else pem.encode())
    (tmp_path / "regwarden.yaml").write_text(
        "apiVersion: regwarden/v1\nkind: Policy\nrepositories:\n"
        "  - match: 't/**'\n    team: payments\n"
        "    signatures: {required: true, cosign: {keys: ['file://cosign.pub']}, "
        "gracePeriod: 1s}\n"
    )
    return tmp_path


def test_a_tag_only_insert_is_judged_by_the_digest_its_tag_names(
    registry: LocalRegistry, repo: str, push: PushImage, gated: Path
) -> None:
    image = push(repo, "1.0.0", seed=81)
    data = {"action": "INSERT", "tag": f"{registry.host}/{repo}:1.0.0"}
    event = _repacked(EVENTS / "gcr-insert-tag.push.json", data, gated / "tag-only.json")
    proc = _invoke(gated, "on_push", str(event))
    assert proc.returncode == 1, proc.stderr
    (row,) = json.loads(proc.stdout)
    assert row["image"] == f"{registry.host}/{repo}:1.0.0@{image.manifest_digest}"
    assert row["outcome"] == "FAILED"
    assert row["actions"][0].startswith("quarantine (move")


def test_a_tag_only_insert_for_a_tag_gone_since_is_ignored(
    registry: LocalRegistry, repo: str, push: PushImage, gated: Path
) -> None:
    push(repo, "1.0.0", seed=82)
    data = {"action": "INSERT", "tag": f"{registry.host}/{repo}:9.9.9"}
    event = _repacked(EVENTS / "gcr-insert-tag.push.json", data, gated / "gone.json")
    proc = _invoke(gated, "on_push", str(event))
    assert proc.returncode == 0, proc.stderr
    (row,) = json.loads(proc.stdout)
    assert row["ignored"] == "tag 9.9.9 no longer exists"


def test_a_cosign_signature_insert_re_evaluates_its_subject(
    registry: LocalRegistry, repo: str, push: PushImage, gated: Path
) -> None:
    image = push(repo, "2.0.0", seed=83)
    subject = image.manifest_digest
    data = {
        "action": "INSERT",
        "digest": f"{registry.host}/{repo}@sha256:{'0' * 64}",
        "tag": f"{registry.host}/{repo}:{subject.replace(':', '-')}.sig",
    }
    event = _repacked(EVENTS / "gcr-cosign-sig.push.json", data, gated / "sig.json")
    proc = _invoke(gated, "on_push", str(event))
    (row,) = json.loads(proc.stdout)
    assert row["event"] == "signed"
    assert row["image"] == f"{registry.host}/{repo}@{subject}"
    # no valid signature behind the tag (none was pushed): the subject is judged, and waits
    # for one within its grace period, which starts at this first sighting
    assert row["outcome"] == "PENDING", proc.stderr
    assert row["recheckAt"] is not None
    assert proc.returncode == 1
