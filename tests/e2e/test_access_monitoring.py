"""Access monitoring as deployed (issue #16, "Done when"): a real `docker-registry` with
htpasswd users (so every pull and push names its `actor.name`) notifies a real
`regwarden serve` process, which gates the pushes and hands every manifest pull and push to
the access monitor; alerts reach a real HTTP sink (HMAC-signed CloudEvents).

- a pull of a quarantined image from its quarantine repository alerts once, within
  seconds, naming the puller and the address; 1,000 more pulls add no alert until the
  window closes, and then one summary counts them;
- a pull of a FAILED image in a repository under `mode: audit` alerts;
- a push by a user outside the repository's `pushers` alerts; one by a listed user does not;
- a multi-arch index pushed with `skopeo copy --all` by a user outside `pushers` alerts once
  per manifest it wrote (the index once, each child once: a window is per digest), one
  pushed by the listed user not at all; the gate moves the index with its children to
  quarantine, and a `skopeo inspect --raw` of the index by digest there is a blocked pull
  naming the puller and skopeo's User-Agent;
- serve SIGKILLed while pulls stream in and started again: the first alert is not sent
  again and the window's summary still comes.

regwarden reads the registry as its own user (`REGWARDEN_ACTOR`), whose pulls and pushes
the monitor ignores (they would otherwise be blocked pulls of the very images it moves).
"""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from support.gate import TOKEN, generate_keys
from support.loopback import LoopbackServer
from support.streams import Serve, access_handled, alerts, start_sink, wait_for

from regwarden.devtools import (
    LocalRegistry,
    build_index,
    free_port,
    make_image,
    push_image,
    skopeo_copy,
)
from regwarden.oci import Credentials, RegistryClient

pytestmark = pytest.mark.e2e

WINDOW = 30
"""`access.dedupeWindow` in seconds: long enough for 1,000 pulls through the registry's
notifications (and a restart of serve) on a loaded machine, short enough to wait for."""
PULLER_AGENT = "containerd/v1.7.13"
USERS = {
    "ci-bot": "ci-bot-pw",  # the one listed pusher
    "mallory": "mallory-pw",  # pushes too, unlisted
    "alice": "alice-pw",
    "bob": "bob-pw",
    "regwarden": "regwarden-pw",  # serve's own identity (REGWARDEN_ACTOR)
}

POLICY = """\
apiVersion: regwarden/v1
kind: Policy
defaults:
  mode: enforce
  team: payments
  quarantine: {{strategy: move, repository: "quarantine/{{repository}}"}}
  signatures: {{required: true, cosign: {{keys: ["file://keys/cosign.pub"]}}, gracePeriod: 0s}}
  access: {{dedupeWindow: {window}s}}
repositories:
  - match: "gated/**"
  - match: "audit/**"
    mode: audit
  - match: "pushers/**"
    signatures: {{required: false}}
    access: {{pushers: ["ci-bot"], dedupeWindow: {window}s}}
  - match: "held/**"  # signatures required (defaults) and pushers: the multi-arch test
    access: {{pushers: ["ci-bot"], dedupeWindow: {window}s}}
notifications:
  channels:
    hook: {{type: webhook, url: "{hook}", secret: "secret://hmac"}}
  routes:
    - {{match: {{team: payments}}, to: [hook]}}
"""


@dataclass
class World:
    root: Path
    registry: LocalRegistry
    sink: LoopbackServer
    port: int
    env: dict[str, str]
    serve: Serve

    def client(self, user: str) -> RegistryClient:
        return RegistryClient(
            self.registry.host,
            credentials=Credentials(user, USERS[user]),
            user_agent=PULLER_AGENT,
            backoff=0.05,
        )

    def start_serve(self) -> Serve:
        return Serve.start(
            self.root,
            self.root / "regwarden.yaml",
            self.port,
            registries=[self.registry.host],
            args=["--access-sweep", "0.5"],
            env=self.env,
        )

    def access_alerts(self, digest: str, principal: str) -> list[dict[str, Any]]:
        return [
            a
            for a in alerts(self.sink)
            if a.get("kind") == "access"
            and str(a["image"]).endswith(digest)
            and a["access"]["principal"] == principal
        ]

    def wait(self, cond: Any, *, timeout: float = 30.0, what: str = "") -> Any:
        return wait_for(cond, timeout=timeout, what=what, log=self.serve.log)

    def verdict(self, repo: str, digest: str) -> str | None:
        from regwarden.store import SqliteLedger

        ledger = SqliteLedger(self.serve.ledger_path)
        try:
            return ledger.last_verdict(self.registry.host, repo, digest)
        finally:
            ledger.close()

    def last_pulled(self, repo: str, digest: str) -> datetime | None:
        """The ledger's last-pulled time of `repo@digest` (None: never seen used)."""
        from regwarden.store import SqliteLedger

        ledger = SqliteLedger(self.serve.ledger_path)
        try:
            return ledger.image_times(self.registry.host, repo).get(digest, (None, None))[1]
        finally:
            ledger.close()

    def handled(self) -> float:
        """Access events the monitor of the running serve has handled (its /metrics)."""
        return access_handled(self.serve.url)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("access")
    generate_keys(root)
    sink = start_sink()
    (root / "regwarden.yaml").write_text(POLICY.format(window=WINDOW, hook=f"{sink.url}/hook"))
    port = free_port()
    try:
        with LocalRegistry(
            users=USERS,
            notifications=f"http://127.0.0.1:{port}/events/distribution",
            notification_headers={"Authorization": f"Bearer {TOKEN}"},
            notification_timeout="2s",
            notification_backoff="200ms",
            ignored_media_types=["application/octet-stream"],  # blobs: never an access
        ) as registry:
            pair = base64.b64encode(f"regwarden:{USERS['regwarden']}".encode()).decode()
            auth = root / "auth.json"
            auth.write_text(json.dumps({"auths": {registry.host: {"auth": pair}}}))
            env = {"REGISTRY_AUTH_FILE": str(auth), "REGWARDEN_ACTOR": "regwarden"}
            world = World(root, registry, sink, port, env, serve=None)  # type: ignore[arg-type]
            world.serve = world.start_serve()
            try:
                yield world
            finally:
                world.serve.stop()
    finally:
        sink.stop()


def quarantined_image(world: World, repo: str, seed: int) -> str:
    """An unsigned image pushed by CI, FAILED and moved to `quarantine/<repo>`."""
    with world.client("ci-bot") as ci:
        digest = push_image(ci, repo, make_image(seed=seed), tag="1.0")
        world.wait(
            lambda: ci.head_manifest(f"quarantine/{repo}", digest) is not None,
            what=f"{repo}@{digest} moved to quarantine",
        )
        # the verdict commits after the move: wait for it as well
        world.wait(lambda: world.verdict(repo, digest) == "FAILED", what="the FAILED verdict")
    return digest


def pull_many(world: World, user: str, repo: str, digest: str, count: int, threads: int) -> None:
    """`count` manifest GETs by `user`, on `threads` connections at once."""
    errors: list[BaseException] = []

    def run(n: int) -> None:
        try:
            with world.client(user) as client:
                for _ in range(n):
                    client.get_manifest(repo, digest)
        except BaseException as exc:
            errors.append(exc)

    share = [count // threads + (1 if i < count % threads else 0) for i in range(threads)]
    workers = [threading.Thread(target=run, args=(n,)) for n in share]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert not errors, errors[0]


def test_a_pull_from_quarantine_alerts_at_once_then_one_summary_counts_the_rest(
    world: World,
) -> None:
    repo = "gated/api"
    digest = quarantined_image(world, repo, seed=1601)
    with world.client("alice") as alice:
        began = time.monotonic()
        alice.get_manifest(f"quarantine/{repo}", digest)
        (first,) = world.wait(
            lambda: world.access_alerts(digest, "alice"), timeout=10, what="the first alert"
        )
        took = time.monotonic() - began
    detail = first["access"]
    assert first["kind"] == "access" and first["action"] == "access"
    assert first["team"] == "payments"
    assert detail["finding"] == "blocked-pull" and detail["access"] == "pull"
    assert detail["principal"] == "alice"
    assert detail["source_ip"] == "127.0.0.1"  # the registry's request.addr, without the port
    assert detail["user_agent"] == PULLER_AGENT
    assert detail["summary"] is False
    assert f"quarantine/{repo}" in detail["reference"]
    print(f"first access alert {took:.2f} s after the pull")  # the figure for the report

    pull_many(world, "alice", f"quarantine/{repo}", digest, 1000, threads=4)
    closes = datetime.fromisoformat(detail["window_start"]) + timedelta(seconds=WINDOW)
    assert datetime.now(closes.tzinfo) < closes, "the pulls outlasted the window: test invalid"
    summary = world.wait(
        lambda: [a for a in world.access_alerts(digest, "alice") if a["access"]["summary"]],
        timeout=WINDOW + 30,
        what="the window's summary",
    )
    assert len(world.access_alerts(digest, "alice")) == 2  # no alert between the two
    (last,) = summary
    assert last["access"]["count"] == 1000
    assert last["access"]["window_end"] is not None


def test_a_pull_of_a_failed_image_under_audit_alerts(world: World) -> None:
    """Under `mode: audit` the gate leaves a failing image in place and alerts WARN; the
    ledger keeps what the policy decided, FAILED, and a pull of the image alerts."""
    repo = "audit/web"
    with world.client("ci-bot") as ci:
        digest = push_image(ci, repo, make_image(seed=1602), tag="2.0")
        world.wait(lambda: world.verdict(repo, digest) == "FAILED", what="the audit verdict")
        assert ci.head_manifest(repo, digest) is not None  # audit: left where it is

    def pulled_and_alerted() -> list[dict[str, Any]]:
        alice.get_manifest(repo, "2.0")  # by tag, as a deployment would
        return world.access_alerts(digest, "alice")

    with world.client("alice") as alice:
        (alert,) = world.wait(pulled_and_alerted, timeout=20, what="the audit pull's alert")
    assert alert["outcome"] == "FAILED"
    assert alert["access"]["finding"] == "blocked-pull"
    assert alert["access"]["source_ip"] == "127.0.0.1"


def test_a_push_by_a_user_outside_pushers_alerts(world: World) -> None:
    repo = "pushers/tool"
    with world.client("mallory") as mallory:
        bad = push_image(mallory, repo, make_image(seed=1603), tag="3.0")
    (alert,) = world.wait(
        lambda: world.access_alerts(bad, "mallory"), timeout=10, what="the pusher alert"
    )
    assert alert["access"]["finding"] == "unexpected-pusher"
    assert alert["access"]["access"] == "push"
    with world.client("ci-bot") as ci:
        good = push_image(ci, repo, make_image(seed=1604), tag="3.1")
    # the monitor handles events in order: once mallory's next push has alerted, the
    # listed pusher's (before it) was handled too
    with world.client("mallory") as mallory:
        again = push_image(mallory, repo, make_image(seed=1605), tag="3.2")
    world.wait(lambda: world.access_alerts(again, "mallory"), timeout=10, what="a second alert")
    assert world.access_alerts(good, "ci-bot") == []


def test_serve_killed_mid_stream_sends_no_second_first_alert_and_still_sums_up(
    world: World,
) -> None:
    repo = "gated/pay"
    digest = quarantined_image(world, repo, seed=1606)
    with world.client("bob") as bob:
        bob.get_manifest(f"quarantine/{repo}", digest)
    world.wait(lambda: world.access_alerts(digest, "bob"), timeout=10, what="the first alert")
    before = world.handled()
    puller = threading.Thread(
        target=pull_many, args=(world, "bob", f"quarantine/{repo}", digest, 400, 1)
    )
    puller.start()
    try:
        world.wait(lambda: world.handled() >= before + 100, what="100 pulls handled")
        world.serve.proc.send_signal(signal.SIGKILL)
        world.serve.proc.wait(10)
        (world.root / "serve.log").rename(world.root / "serve-killed.log")
        world.serve = world.start_serve()
    finally:
        puller.join()
    summary = world.wait(
        lambda: [a for a in world.access_alerts(digest, "bob") if a["access"]["summary"]],
        timeout=WINDOW + 60,
        what="the summary after the restart",
    )
    firsts = [a for a in world.access_alerts(digest, "bob") if not a["access"]["summary"]]
    assert len(firsts) == 1  # the window survived the crash in the ledger
    (last,) = summary
    # pulls acknowledged but not yet handled when the process died are lost (in memory
    # only, by design); one the registry sent again because its answer was cut may count
    # twice
    assert 1 <= last["access"]["count"] <= 401
    print(f"summary after SIGKILL counts {last['access']['count']} of 400 pulls")


def skopeo_pull_raw(world: World, user: str, repo: str, digest: str) -> bytes:
    """`skopeo inspect --raw` of REPO@DIGEST as `user`: one manifest GET, with skopeo's own
    User-Agent, as a client resolving an index before it picks its platform."""
    proc = subprocess.run(
        [
            "skopeo",
            "inspect",
            "--raw",
            "--tls-verify=false",
            "--creds",
            f"{user}:{USERS[user]}",
            f"docker://{world.registry.host}/{repo}@{digest}",
        ],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc.stdout


def test_a_multiarch_push_with_skopeo_alerts_per_manifest_and_its_pull_is_seen(
    world: World, tmp_path: Path
) -> None:
    """`skopeo copy --all` writes each platform's manifest by digest, then the index by
    tag: distribution notifies one push per manifest PUT, and the monitor judges each, so
    a push by a user outside `pushers` alerts once per manifest it wrote (a window is per
    principal and digest: docs/access.md, "Alerts and windows") — the index once, never
    again for its children's PUTs or the gate's move. The gate judges the index as one
    unit (docs/policy.md, "What the gate judges") and moves it with its children; a pull
    of the index from quarantine by digest is a blocked pull naming the puller."""
    repo = "held/multi"
    host = world.registry.host
    layout = tmp_path / "oci"
    bad = build_index(layout, tag="bad", seed=1607)
    good = build_index(layout, tag="good", seed=1608)
    bad_children = [c.digest for c in bad.children]
    good_digests = [good.digest, *(c.digest for c in good.children)]
    assert len(bad_children) == 2

    def pushed_by(principal: str, digests: list[str]) -> list[dict[str, Any]]:
        return [
            a
            for d in digests
            for a in world.access_alerts(d, principal)
            if a["access"]["finding"] == "unexpected-pusher"
        ]

    skopeo_copy(
        f"oci:{layout}:bad", f"docker://{host}/{repo}:4.0", creds=("mallory", USERS["mallory"])
    )
    every = [bad.digest, *bad_children]
    world.wait(
        lambda: len(pushed_by("mallory", every)) >= len(every),
        timeout=10,
        what="mallory's pusher alerts",
    )

    # the gate: the index is one unit, FAILED (unsigned) and moved with its children
    with world.client("ci-bot") as ci:
        world.wait(
            lambda: (
                ci.head_manifest(f"quarantine/{repo}", bad.digest) is not None
                and ci.head_manifest(repo, bad.digest) is None
            ),
            what="the index moved to quarantine",
        )
        world.wait(lambda: world.verdict(repo, bad.digest) == "FAILED", what="the FAILED verdict")
        for child in bad_children:
            assert ci.head_manifest(f"quarantine/{repo}", child) is not None, child
            assert ci.head_manifest(repo, child) is None, f"child {child} left behind"
            assert world.verdict(repo, child) is None, f"child {child} judged on its own"

    skopeo_copy(
        f"oci:{layout}:good", f"docker://{host}/{repo}:4.1", creds=("ci-bot", USERS["ci-bot"])
    )

    # a pull of the index by digest, from where the gate put it
    raw = skopeo_pull_raw(world, "alice", f"quarantine/{repo}", bad.digest)
    assert json.loads(raw)["manifests"][0]["digest"] in bad_children
    (pulled,) = world.wait(
        lambda: [
            a
            for a in world.access_alerts(bad.digest, "alice")
            if a["access"]["finding"] == "blocked-pull"
        ],
        timeout=10,
        what="the blocked-pull alert",
    )
    detail = pulled["access"]
    assert pulled["image"] == f"{host}/{repo}@{bad.digest}"  # mapped back to the source
    assert pulled["outcome"] == "FAILED"
    assert detail["access"] == "pull" and detail["principal"] == "alice"
    assert detail["reference"] == f"{host}/quarantine/{repo}@{bad.digest}"
    assert str(detail["user_agent"]).startswith("skopeo/")
    assert detail["source_ip"] == "127.0.0.1"

    # the monitor handles events in order: alice's pull came after both pushes, so every
    # alert those pushes raise has been committed and sent by now
    index_alerts = pushed_by("mallory", [bad.digest])
    assert len(index_alerts) == 1, index_alerts  # once for the index push, not per child
    (alert,) = index_alerts
    assert alert["access"]["access"] == "push"
    assert alert["access"]["reference"] == f"{host}/{repo}@{bad.digest}"
    assert alert["access"]["user_agent"] == detail["user_agent"]  # skopeo's, both ways
    assert alert["tags"] == ["4.0"]
    # each child's PUT is a push of its own digest: one alert each, and no more
    for child in bad_children:
        (one,) = pushed_by("mallory", [child])
        assert one["tags"] == [], child  # pushed by digest
    assert pushed_by("ci-bot", good_digests) == []
    # ci-bot's HEADs above (is the index in quarantine yet?) came before alice's pull and
    # read no content: the registry notifies them as pulls, the monitor drops them
    for digest in [bad.digest, *bad_children]:
        assert world.access_alerts(digest, "ci-bot") == [], digest
    # yet they mark the platform images used (nobody GETs those): a HEAD is how containerd
    # with pull policy Always checks the image it then runs from its cache
    for child in bad_children:
        world.wait(
            lambda child=child: world.last_pulled(repo, child) is not None,  # type: ignore[misc]
            what=f"the HEAD of {child} marked as its last use",
        )
