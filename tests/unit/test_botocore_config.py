"""Every AWS client regwarden makes waits at most 5 s to connect and 20 s per read, with a
bounded number of attempts (botocore's defaults are 60 s each, ten times over)."""

from __future__ import annotations

import pytest

from regwarden.botocore_config import CONNECT_TIMEOUT, READ_TIMEOUT, botocore_config
from regwarden.notify._sns import SnsChannel
from regwarden.providers.ecr import EcrRegistry
from regwarden.store import DynamoLedger

pytest.importorskip("boto3")


def _bounded(client: object) -> tuple[float, float, int]:
    config = client.meta.config  # type: ignore[attr-defined]
    return config.connect_timeout, config.read_timeout, config.retries["total_max_attempts"]


def test_the_shared_config_bounds_sockets_and_attempts() -> None:
    config = botocore_config(mode="standard", attempts=3)
    assert (config.connect_timeout, config.read_timeout) == (CONNECT_TIMEOUT, READ_TIMEOUT)
    assert config.retries == {"mode": "standard", "total_max_attempts": 3}
    assert "regwarden/" in config.user_agent_extra


def test_ledger_alerts_and_registry_clients_use_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    ledger = DynamoLedger("t", endpoint_url="http://127.0.0.1:1")
    sns = SnsChannel("topic", "arn:aws:sns:us-east-1:123456789012:alerts")
    ecr = EcrRegistry("123456789012.dkr.ecr.us-east-1.amazonaws.com")
    assert _bounded(ledger.client) == (CONNECT_TIMEOUT, READ_TIMEOUT, 11)
    assert _bounded(sns.client) == (CONNECT_TIMEOUT, READ_TIMEOUT, 6)
    assert _bounded(ecr._make_client(None))[:2] == (CONNECT_TIMEOUT, READ_TIMEOUT)
