"""The GCP functions' own Google services, with the real client libraries (REST transport)
driven at loopback stand-ins: Cloud Tasks rechecks (`rechecks` scheduler `cloudtasks`) and
Secret Manager secrets and policy (`functions/gcp/_settings.py`)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support.fake_secrets import FakeSecrets
from support.fake_tasks import FakeTasks

from functions.gcp._settings import SecretManager, load_source
from regwarden.errors import PolicyError, UsageError
from regwarden.rechecks import (
    RECHECK_SCHEDULERS,
    RecheckScheduler,
    RecheckTarget,
    parse_recheck,
    recheck_message,
    task_id,
)
from regwarden.warm import SecretEnv

pytestmark = pytest.mark.integration

QUEUE = "projects/demo-proj/locations/us-central1/queues/regwarden-rechecks"
URL = "https://recheck-abc-uc.a.run.app/"
ACCOUNT = "regwarden-tasks@demo-proj.iam.gserviceaccount.com"
IMAGE = "us-docker.pkg.dev/demo-proj/apps/web@sha256:" + "ab" * 32
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def tasks() -> Iterator[FakeTasks]:
    with FakeTasks(now=NOW) as fake:
        yield fake


@pytest.fixture
def secrets() -> Iterator[FakeSecrets]:
    with FakeSecrets() as fake:
        yield fake


def scheduler(tasks: FakeTasks) -> RecheckScheduler:
    env = {"REGWARDEN_GCP_ENDPOINT_CLOUDTASKS": tasks.url}
    target = RecheckTarget(url=URL, tasks_queue=QUEUE, service_account=ACCOUNT, env=env)
    return RECHECK_SCHEDULERS.get("cloudtasks")(target)


# -- Cloud Tasks ------------------------------------------------------------------------------


def test_a_recheck_is_an_http_task_with_an_oidc_token_due_a_second_after_the_deadline(
    tasks: FakeTasks,
) -> None:
    due = NOW + timedelta(minutes=30)
    scheduler(tasks)(IMAGE, due, now=NOW)

    (stored,) = tasks.pending()
    assert stored["name"] == f"{QUEUE}/tasks/{task_id(IMAGE, due)}"
    assert stored["scheduleTime"].startswith("2026-03-01T12:30:01")
    assert tasks.due(due) == []  # not before its time
    (fired,) = tasks.due(due + timedelta(seconds=1))
    assert fired.url == URL and fired.method == "POST"
    assert fired.headers == {"Content-Type": "application/json"}
    assert fired.oidc == {"serviceAccountEmail": ACCOUNT, "audience": URL}
    assert fired.json() == recheck_message(IMAGE, due)
    message = parse_recheck(fired.json())
    assert str(message.image) == IMAGE and message.at == due and message.hop == 0


def test_the_same_recheck_scheduled_twice_makes_one_task(tasks: FakeTasks) -> None:
    schedule = scheduler(tasks)
    due = NOW + timedelta(hours=2)
    schedule(IMAGE, due, now=NOW)
    schedule(IMAGE, due, now=NOW + timedelta(minutes=1))  # a redelivery hands it back

    assert len(tasks.pending()) == 1
    creates = tasks.calls("POST", rf"/v2/{QUEUE}/tasks")
    assert len(creates) == 2  # the second was refused: ALREADY_EXISTS, taken as done
    schedule(IMAGE, due + timedelta(minutes=5), now=NOW)  # another deadline: another task
    assert len(tasks.pending()) == 2


def test_a_recheck_beyond_thirty_days_hops_and_judges_only_when_due(tasks: FakeTasks) -> None:
    schedule = scheduler(tasks)
    due = NOW + timedelta(days=45)
    schedule(IMAGE, due, now=NOW)
    (first,) = tasks.pending()
    held = datetime.fromisoformat(first["scheduleTime"].replace("Z", "+00:00"))
    assert NOW + timedelta(days=29) < held < NOW + timedelta(days=30)

    (fired,) = tasks.due(held)
    arrived = parse_recheck(fired.json())
    assert arrived.again(schedule, now=held)  # early: sent on, not judged
    (second,) = tasks.pending()
    hop = parse_recheck(json.loads(json.dumps(recheck_message(IMAGE, due, hop=1))))
    assert second["name"].endswith(task_id(IMAGE, due, 1)) and hop.hop == 1
    (again,) = tasks.due(due + timedelta(seconds=1))
    last = parse_recheck(again.json())
    assert last.hop == 1 and not last.again(schedule, now=due + timedelta(seconds=1))
    assert tasks.pending() == []


def test_the_scheduler_needs_its_queue_url_and_identity() -> None:
    with pytest.raises(UsageError, match="tasks_queue"):
        RECHECK_SCHEDULERS.get("cloudtasks")(RecheckTarget(url=URL))


# -- Secret Manager ---------------------------------------------------------------------------


def secret_manager(secrets: FakeSecrets, **env: str) -> SecretManager:
    base = {
        "GOOGLE_CLOUD_PROJECT": "demo-proj",
        "REGWARDEN_GCP_ENDPOINT_SECRETMANAGER": secrets.url,
    }
    return SecretManager({**base, **env})


def test_secrets_come_from_secret_manager_cached_per_warm_instance(secrets: FakeSecrets) -> None:
    secrets.put("demo-proj", "hook-url", "https://hooks.example/one")
    secrets.put("other-proj", "hmac", "k3y")
    fetch = secret_manager(secrets)
    env = SecretEnv(
        {"PATH": "/bin", "REGWARDEN_SECRET_PLANTED": "never"},
        {
            "REGWARDEN_SECRET_HOOK_URL": "hook-url",
            "REGWARDEN_SECRET_HMAC": "projects/other-proj/secrets/hmac",
        },
        fetch,
    )

    assert env["REGWARDEN_SECRET_HOOK_URL"] == "https://hooks.example/one"
    assert env["REGWARDEN_SECRET_HMAC"] == "k3y"
    assert env["REGWARDEN_SECRET_HOOK_URL"] == "https://hooks.example/one"
    assert secrets.accesses("hook-url") == 1  # the second read came from the cache
    assert "REGWARDEN_SECRET_PLANTED" not in env  # never from the process environment
    assert not env.rotated()
    secrets.put("demo-proj", "hook-url", "https://hooks.example/two")
    assert env.rotated()  # read past the cache: the new version (now cached)
    assert secrets.accesses("hook-url") == 3
    assert env["REGWARDEN_SECRET_HOOK_URL"] == "https://hooks.example/two"
    assert secrets.accesses("hook-url") == 3


def test_a_missing_or_misnamed_secret_names_the_secret_not_a_value(secrets: FakeSecrets) -> None:
    fetch = secret_manager(secrets)
    with pytest.raises(UsageError, match="'absent' not readable from Secret Manager"):
        fetch("absent")
    with pytest.raises(UsageError, match="secret id is letters"):
        fetch("regwarden/hook-url")
    with pytest.raises(UsageError, match="GOOGLE_CLOUD_PROJECT"):
        secret_manager(secrets, GOOGLE_CLOUD_PROJECT="")("hook")


POLICY = """\
apiVersion: regwarden/v1
kind: Policy
repositories:
  - match: "demo-proj/**"
    team: {team}
"""


def test_the_policy_from_secret_manager_is_read_again_to_tell_a_change(
    secrets: FakeSecrets, tmp_path: Path
) -> None:
    secrets.put("demo-proj", "regwarden-policy", POLICY.format(team="alpha"))
    fetch = secret_manager(secrets)
    source = load_source("secret://regwarden-policy", fetch)
    assert source.policy.repositories[0].team == "alpha"
    assert not source.changed()
    secrets.put("demo-proj", "regwarden-policy", POLICY.format(team="bravo"))
    assert source.changed()

    bundled = tmp_path / "policy.yaml"
    bundled.write_text(POLICY.format(team="charlie"))
    assert load_source(str(bundled), fetch).policy.repositories[0].team == "charlie"
    with pytest.raises(PolicyError, match="cannot read the policy from secret://missing"):
        load_source("secret://missing", fetch)
