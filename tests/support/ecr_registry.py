"""The ECR provider (`EcrRegistry`) on moto behind `EcrLimitsProxy`, as the ECR tests open it.

    from support import ecr_registry as ecr_support
    from support import moto_server as support
    moto_server, moto, ecr_proxy = support.moto_server, support.moto, support.ecr_proxy
    ecr, registry = ecr_support.ecr, ecr_support.registry   # register under these names

`registry` leaves the data plane at ECR's own host name, which these tests never reach;
`control_plane_registry` puts it on a closed loopback port, so a test that must stay on the
control plane fails if it ever reaches for `/v2/`, and nothing leaves the machine.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest

from regwarden.providers import ProviderOptions
from regwarden.providers.ecr import EcrRegistry
from support.moto_server import REGISTRY_HOST, EcrLimitsProxy, MotoServer


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _open(proxy: EcrLimitsProxy, data_plane_host: str | None = None) -> Iterator[EcrRegistry]:
    reg = EcrRegistry(
        REGISTRY_HOST,
        ProviderOptions(),
        endpoint_url=proxy.endpoint_url,
        data_plane_host=data_plane_host,
    )
    try:
        yield reg
    finally:
        reg.close()


@pytest.fixture
def ecr(moto: MotoServer) -> Any:
    """A boto3 ECR client straight to moto (not through the proxy), for seeding and checking."""
    return moto.client("ecr")


@pytest.fixture
def registry(ecr_proxy: EcrLimitsProxy) -> Iterator[EcrRegistry]:
    """`EcrRegistry` on the proxy (ECR's paging and batch limits), closed after the test."""
    yield from _open(ecr_proxy)


@pytest.fixture
def control_plane_registry(ecr_proxy: EcrLimitsProxy) -> Iterator[EcrRegistry]:
    """`registry`, with its data plane on a closed loopback port."""
    yield from _open(ecr_proxy, f"127.0.0.1:{closed_port()}")
