"""Shared fixtures: real local registries (anonymous and htpasswd), Azurite, clients, repos.

Nothing here reads `../shared`; interop tests locate it themselves and skip without it.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from support.azurite import Azurite, need_azurite
from support.postgres import PostgresServer
from support.proxy import RegistryProxy
from support.registries import AUTH_PASSWORD, AUTH_USER, AuthRegistry, PushImage

from regwarden.devtools import DEFAULT_BINARY, Content, LocalRegistry, make_image, push_image
from regwarden.oci import RegistryClient

# Tests talk to loopback only: never let botocore probe the EC2 metadata address for
# credentials, nor google-auth the GCE metadata server, and give the AWS SDK dummy
# credentials so nothing reaches for real ones.
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
os.environ["NO_GCE_CHECK"] = "true"
for _name, _value in (
    ("AWS_ACCESS_KEY_ID", "testing"),
    ("AWS_SECRET_ACCESS_KEY", "testing"),
    ("AWS_DEFAULT_REGION", "us-east-1"),
):
    os.environ.setdefault(_name, _value)


def _need_registry_binary() -> None:
    if shutil.which(DEFAULT_BINARY) is None:
        pytest.skip(f"{DEFAULT_BINARY} is not installed (apt-get install docker-registry)")


@pytest.fixture(scope="session")
def registry() -> Iterator[LocalRegistry]:
    """An anonymous distribution 2.8 on a free loopback port, shared by the session."""
    _need_registry_binary()
    with LocalRegistry() as reg:
        yield reg


@pytest.fixture(scope="session")
def auth_registry() -> Iterator[AuthRegistry]:
    """A distribution 2.8 behind htpasswd Basic auth (user `alice`)."""
    _need_registry_binary()
    with LocalRegistry(users={AUTH_USER: AUTH_PASSWORD}) as reg:
        yield AuthRegistry(reg, AUTH_USER, AUTH_PASSWORD)


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    """Azurite (Table Storage, Storage Queues, Blob) on loopback, one per test process."""
    need_azurite()
    with Azurite() as emulator:
        yield emulator


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL 15 cluster on loopback, one per test process (xdist worker)."""
    with PostgresServer() as server:
        yield server


@pytest.fixture
def postgres_url(postgres: PostgresServer) -> str:
    """A new empty database on the session's PostgreSQL, as the superuser's URL."""
    return postgres.fresh_database()


@pytest.fixture
def repo(request: pytest.FixtureRequest) -> str:
    """A repository name no other test uses (`t/<test-name>-<random>`)."""
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    return f"t/{slug or 'test'}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def client(registry: LocalRegistry) -> Iterator[RegistryClient]:
    """A regwarden client talking straight to the session registry."""
    with RegistryClient(registry.host, backoff=0.01) as c:
        yield c


@pytest.fixture
def proxy(registry: LocalRegistry) -> Iterator[RegistryProxy]:
    """A fault-injecting, tag-paging proxy in front of the session registry."""
    with RegistryProxy(registry.host) as p:
        yield p


@pytest.fixture
def proxied_client(proxy: RegistryProxy) -> Iterator[RegistryClient]:
    """A client that goes through `proxy` (short backoff so retry tests stay fast)."""
    with RegistryClient(proxy.host, backoff=0.01) as c:
        yield c


@pytest.fixture
def push(client: RegistryClient) -> PushImage:
    """`push(repo, tag, **make_image_kwargs)` → the pushed image (blobs + digests)."""

    def _push(repo: str, tag: str | None = "latest", **kwargs: Any) -> Content:
        image = make_image(**kwargs)
        push_image(client, repo, image, tag=tag)
        return image

    return _push
