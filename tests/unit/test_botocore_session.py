"""One boto3 session per process for every AWS client regwarden makes, and clients cached
per (service, region, endpoint, retry budget): a botocore session loads the endpoint rules
and each service model from disk again, which a cold start paid once per client."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

pytest.importorskip("boto3")

import boto3

from regwarden import botocore_config
from regwarden.notify._sns import SnsChannel
from regwarden.providers.ecr import EcrRegistry
from regwarden.rechecks import RECHECK_SCHEDULERS, RecheckTarget
from regwarden.store import DynamoLedger


@pytest.fixture
def sessions(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Dummy credentials and a fresh AWS_* environment (so the process's cached session
    from another test is not reused); every boto3 session made from here on is listed."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGWARDEN_TEST_RUN", uuid.uuid4().hex)
    made: list[object] = []
    init = boto3.session.Session.__init__

    def counted(self: Any, *args: Any, **kwargs: Any) -> None:
        made.append(self)
        init(self, *args, **kwargs)

    monkeypatch.setattr(boto3.session.Session, "__init__", counted)
    return made


def test_one_session_and_one_client_per_service_region_endpoint_and_budget(
    sessions: list[object],
) -> None:
    sqs = botocore_config.client("sqs")
    assert botocore_config.client("sqs") is sqs
    assert botocore_config.client("sqs", region="eu-west-1") is not sqs
    assert botocore_config.client("sqs", endpoint_url="http://127.0.0.1:1") is not sqs
    assert botocore_config.client("sqs", mode="standard", attempts=1) is not sqs
    assert botocore_config.client("sns") is not sqs
    assert botocore_config.session() is botocore_config.session()
    assert sessions == [botocore_config.session()]
    retries = botocore_config.client("sqs", mode="standard", attempts=1).meta.config.retries
    assert retries == {"mode": "standard", "total_max_attempts": 1}
    assert botocore_config.client("sqs", region="eu-west-1").meta.region_name == "eu-west-1"


def test_a_changed_aws_environment_makes_a_new_session_and_new_clients(
    sessions: list[object], monkeypatch: pytest.MonkeyPatch
) -> None:
    before = botocore_config.client("sqs")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    after = botocore_config.client("sqs")
    assert after is not before and len(sessions) == 2
    assert after.meta.endpoint_url == "http://127.0.0.1:9"  # the new setting holds
    assert botocore_config.client("sqs") is after
    monkeypatch.setenv("REGWARDEN_NOT_AWS", "1")  # not an AWS_* variable: same clients
    assert botocore_config.client("sqs") is after and len(sessions) == 2


def test_threads_asking_at_once_share_one_session_and_one_client(sessions: list[object]) -> None:
    start = threading.Barrier(8)
    got: list[object] = []

    def ask() -> None:
        start.wait()
        got.append(botocore_config.client("dynamodb"))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(got) == 8 and all(c is got[0] for c in got)
    assert len(sessions) == 1


def test_the_ledger_alerts_rechecks_and_registry_share_the_process_session(
    sessions: list[object],
) -> None:
    ledger = DynamoLedger("t", endpoint_url="http://127.0.0.1:1")
    assert ledger.client is botocore_config.client(
        "dynamodb", endpoint_url="http://127.0.0.1:1", mode="adaptive", attempts=11
    )
    sns = SnsChannel("topic", "arn:aws:sns:eu-west-1:123456789012:alerts")
    assert sns.client is botocore_config.client(
        "sns", region="eu-west-1", mode="standard", attempts=6
    )
    ecr = EcrRegistry("123456789012.dkr.ecr.us-east-1.amazonaws.com")
    assert ecr.client is botocore_config.client(
        "ecr", region="us-east-1", mode="adaptive", attempts=11
    )
    endpoint = ecr.client.meta.endpoint_url  # the second client calls where the first does
    assert ecr.no_retry_client is botocore_config.client(
        "ecr", region="us-east-1", endpoint_url=endpoint, mode="standard", attempts=1
    )
    assert len(sessions) == 1
    ecr.close()  # closing one owner drops connections, not the shared cached client
    assert botocore_config.client("ecr", region="us-east-1", mode="adaptive", attempts=11) is (
        ecr.client
    )


def test_the_sqs_recheck_scheduler_takes_its_client_from_the_helper(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent: list[dict[str, Any]] = []
    asked: list[str] = []

    class Queue:
        def send_message(self, **kwargs: Any) -> None:
            sent.append(kwargs)

    def client(service: str, **kwargs: Any) -> Queue:
        asked.append(service)
        return Queue()

    monkeypatch.setattr(botocore_config, "client", client)
    schedule = RECHECK_SCHEDULERS.get("sqs")(RecheckTarget(url="https://sqs.example/q"))
    now = datetime(2026, 1, 1, tzinfo=UTC)
    schedule("r.example/app@sha256:" + "0" * 64, now + timedelta(minutes=2), now=now)
    schedule("r.example/app@sha256:" + "1" * 64, now + timedelta(minutes=3), now=now)
    assert asked == ["sqs"]  # made once, on the first recheck
    assert [m["DelaySeconds"] for m in sent] == [121, 181]
