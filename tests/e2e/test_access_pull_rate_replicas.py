"""`alertOn.pullRate` across replicas, as deployed: a real `docker-registry` with htpasswd
users notifies two real `regwarden serve` processes on one PostgreSQL ledger, through a
front that sends the first pulls to one replica and the later ones to the other (as a load
balancer spreads a registry's notifications). Neither replica receives more pulls than the
threshold; together they do, and the second replica alerts at once, counting the pulls the
first one wrote into the principal's shared one-minute window. Before the window was
shared, each replica counted only its own and nobody alerted.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support.chaos import NotifyTap
from support.gate import TOKEN
from support.loopback import LoopbackServer
from support.postgres import PostgresServer
from support.replicas import Replica, launch_replica
from support.streams import access_handled, alerts, start_sink, wait_for

from regwarden.access import rate_key
from regwarden.devtools import LocalRegistry, make_image, push_image
from regwarden.oci import Credentials, RegistryClient
from regwarden.store import Ledger, open_ledger

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        shutil.which("docker-registry") is None, reason="needs the docker-registry binary"
    ),
]

RATE = 50
EACH = 30
"""Pulls each replica receives: under the threshold alone, over it together."""
USERS = {"ci-bot": "ci-bot-pw", "alice": "alice-pw"}

POLICY = """\
apiVersion: regwarden/v1
kind: Policy
registries:
  - {{host: "{registry}", kind: distribution}}
defaults:
  mode: audit
  team: payments
repositories:
  - match: "rate/**"
    access: {{alertOn: {{pullRate: {rate}}}, dedupeWindow: 30s}}
notifications:
  channels:
    hook: {{type: webhook, url: "{hook}", secret: "secret://hmac"}}
  routes:
    - {{match: {{team: payments}}, to: [hook]}}
"""


@dataclass
class Rig:
    registry: LocalRegistry
    front: NotifyTap
    sink: LoopbackServer
    replicas: list[Replica]
    ledger: Ledger

    def send_to(self, replica: Replica) -> None:
        self.front.target = f"{replica.url}/events/distribution"

    def rate_alerts(self) -> list[dict[str, Any]]:
        return [
            a
            for a in alerts(self.sink)
            if a.get("kind") == "access" and a["access"]["finding"] == "pull-rate"
        ]

    def handled(self, replica: Replica) -> float:
        return access_handled(replica.url)

    def wait(self, cond: Any, *, what: str) -> Any:
        return wait_for(cond, timeout=60.0, what=what, log=self.replicas[-1].log)


@pytest.fixture
def rig(tmp_path: Path, postgres: PostgresServer) -> Iterator[Rig]:
    url = postgres.fresh_database()
    sink = start_sink()
    front = NotifyTap("http://127.0.0.1:9/events/distribution").start()
    replicas: list[Replica] = []
    try:
        with LocalRegistry(
            users=USERS,
            notifications=front.url,
            notification_headers={"Authorization": f"Bearer {TOKEN}"},
            notification_timeout="2s",
            notification_backoff="200ms",
            ignored_media_types=["application/octet-stream"],  # blobs: never an access
            ignored_actions=["push", "delete"],  # pulls only: nothing to gate here
        ) as registry:
            policy = tmp_path / "regwarden.yaml"
            policy.write_text(
                POLICY.format(registry=registry.host, rate=RATE, hook=f"{sink.url}/hook")
            )
            for i in range(2):
                replicas.append(
                    launch_replica(
                        tmp_path, i, ledger=url, policy=policy, workers=1, lease_timeout=3.0
                    )
                )
            ledger = open_ledger(url)
            try:
                yield Rig(registry, front, sink, replicas, ledger)
            finally:
                ledger.close()
    finally:
        for replica in replicas:
            replica.stop()
        front.stop()
        sink.stop()


def pulls(rig: Rig, repo: str, digest: str, count: int) -> None:
    with RegistryClient(
        rig.registry.host,
        credentials=Credentials("alice", USERS["alice"]),
        user_agent="containerd/v1.7.13",
        backoff=0.05,
    ) as client:
        for _ in range(count):
            client.get_manifest(repo, digest)


def test_the_pull_rate_adds_up_across_replicas(rig: Rig) -> None:
    repo = "rate/api"
    with RegistryClient(
        rig.registry.host, credentials=Credentials("ci-bot", USERS["ci-bot"]), backoff=0.05
    ) as ci:
        digest = push_image(ci, repo, make_image(seed=1801), tag="1.0")
    first, second = rig.replicas
    window = rate_key("alice")

    rig.send_to(first)
    pulls(rig, repo, digest, EACH)
    # the first replica has written its pulls into alice's window: the opening one and 29
    rig.wait(
        lambda: (w := rig.ledger.access_window(window)) is not None and w.count == EACH - 1,
        what=f"the first replica's {EACH} pulls in the shared window",
    )
    assert rig.rate_alerts() == []  # 30 of 50: nothing to say yet

    rig.send_to(second)
    pulls(rig, repo, digest, EACH)
    rig.wait(lambda: rig.handled(second) == EACH, what="the second replica's pulls handled")
    (alert,) = rig.wait(rig.rate_alerts, what="the pull-rate alert")
    assert alert["access"]["principal"] == "alice"
    assert alert["image"].endswith(f"{repo}@{digest}")
    # the 51st pull of the minute, the second replica's 21st: the rest count into its window
    assert f"pulled {2 * EACH - 9} times in a minute" in alert["summary"]
    assert f"over the policy's pullRate of {RATE}" in alert["summary"]
    assert rig.handled(first) == EACH and len(rig.rate_alerts()) == 1
