"""Several `regwarden serve` processes on one ledger and queue: the replicas harness.

    registry ──notifications──▶ NotifyTap ──▶ replica 0 ─┐
        ▲                       (acknowledged)            ├── one --ledger URL (PostgreSQL)
        └─────── every replica's registry calls ◀─────────┤   replica 1, replica 2, …
                                                          └── (workers lease the shared queue)

The registry notifies replica 0 only (through `support.chaos.NotifyTap`, which records what
was acknowledged); every replica's workers lease from the shared queue, so the others still
get work. Each replica is its own process on a free loopback port with its own `--instance`
(`replica-N`: its owner id in the queue's leases), its own log, and can be SIGKILLed by PID.

`ReplicaRig` puts the real `docker-registry`, the alert sink, the policy (unsigned images in
gated repositories fail at once and are moved to `quarantine/…`; `…/pass-*` repositories
pass; `…/pending-*` ones wait `PENDING_GRACE` for a signature, then fail: their recheck comes
back through the queue) and the replicas together, pushes bursts, waits for the queue to
drain and judges every image against the registry and the ledger (read through the store's
own `verdict_log`, `actions`, `quarantines`), and counts lost and duplicated outcomes.
`bench/replicas.py` uses the same rig.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from regwarden.devtools import LocalRegistry, free_port, make_image, push_image
from regwarden.oci import RegistryClient
from regwarden.store import open_ledger
from support.chaos import CI_AGENT, AlertSink, Expect, NotifyTap, placement
from support.gate import TOKEN, generate_keys
from support.streams import cli_env

PENDING_GRACE = "4s"
"""How long a `…/pending-*` image waits for a signature before its recheck fails it."""

POLICY = """\
apiVersion: regwarden/v1
kind: Policy
registries:
  - {{host: "{registry}", kind: distribution}}
defaults:
  mode: enforce
  team: replicas
  settleWindow: 1s
  quarantine: {{strategy: move, repository: "quarantine/{{repository}}"}}
  signatures:
    required: true
    cosign: {{keys: ["file://keys/cosign.pub"]}}
    gracePeriod: 0s
repositories:
  - match: "**/pass-*"
    signatures: {{required: false}}
  - match: "**/pending-*"
    signatures:
      required: true
      cosign: {{keys: ["file://keys/cosign.pub"]}}
      gracePeriod: {grace}
notifications:
  channels:
    hook: {{type: webhook, url: "{hook}", secret: "secret://hmac"}}
  routes:
    - {{match: {{team: replicas}}, to: [hook]}}
"""

_TAKEN_OVER = re.compile(r"event (\d+) taken over from (\S+), whose lease went stale")


@dataclass
class Replica:
    """One `regwarden serve` process."""

    index: int
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def instance(self) -> str:
        return f"replica-{self.index}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no shutdown handler runs; its leases stay until they go stale."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def verdicts_printed(self) -> int:
        """Verdicts this replica printed (one `  OUTCOME  image` line each)."""
        return sum(
            1
            for line in self.text().splitlines()
            if re.match(r"  (PASSED|FAILED|PENDING|WARNED|ERROR)\s", line)
        )

    def taken_over(self) -> list[tuple[int, str]]:
        """(event id, previous owner) of every event this replica took over."""
        return [(int(m[1]), m[2]) for m in _TAKEN_OVER.finditer(self.text())]


def launch_replica(
    root: Path,
    index: int,
    *,
    ledger: str,
    policy: Path,
    workers: int,
    lease_timeout: float,
    timeout: float = 60.0,
) -> Replica:
    """Start `regwarden serve` number `index` on a free port; return once /healthz is 200."""
    tokens = root / "tokens"
    tokens.write_text(TOKEN + "\n")
    port = free_port()
    log = root / f"replica-{index}.log"
    args = [sys.executable, "-m", "regwarden", "--ledger", ledger, "serve"]
    args += ["--policy", str(policy), "--host", "127.0.0.1", "--port", str(port)]
    args += ["--auth-token-file", str(tokens), "--workers", str(workers)]
    args += ["--instance", f"replica-{index}", "--lease-timeout", str(lease_timeout)]
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=cli_env(), cwd=root)
    replica = Replica(index, port, proc, log)
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=1) as probe:
        while True:
            try:
                if probe.get(f"{replica.url}/healthz").status_code == 200:
                    return replica
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                replica.stop()
                raise RuntimeError(f"replica {index} did not start:\n{replica.text()[-4000:]}")
            time.sleep(0.05)


@dataclass
class BurstResult:
    """One burst through the replicas, judged (the JSON `bench/replicas.py` prints)."""

    replicas: int
    images: int
    acknowledged: int = 0
    lost: int = 0
    """Acknowledged pushes with no verdict in the verdict log."""
    duplicated_verdicts: int = 0
    """Deliveries with more than one verdict."""
    duplicated_actions: int = 0
    """Images with more than one quarantine action."""
    wrong: int = 0
    """Images whole but in the wrong place, or with the wrong verdict."""
    half_done: int = 0
    """Images in neither place whole, or with an unfinished intent."""
    killed: str | None = None
    held_at_kill: list[int] = field(default_factory=list)
    """Queue rows the killed replica held when it died (mid-event)."""
    taken_over: int = 0
    """Events a surviving replica took over from the killed one's stale leases."""
    drained: bool = False
    seconds: float = 0.0
    """First push → queue drained and every image judged."""
    pushes_per_second: float = 0.0
    verdicts_by_replica: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def exact(self) -> bool:
        return (
            self.drained
            and not (self.lost or self.duplicated_verdicts or self.duplicated_actions or self.wrong)
            and not self.half_done
        )

    def as_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["problems"] = self.problems[:10]
        return doc


class ReplicaRig:
    """The registry, the tap, the sink and `count` replicas on the ledger `ledger_url`."""

    def __init__(
        self,
        root: Path,
        ledger_url: str,
        *,
        count: int = 3,
        workers: int = 2,
        lease_timeout: float = 3.0,
    ) -> None:
        self.root = root
        self.ledger_url = ledger_url
        self.count = count
        self.workers = workers
        self.lease_timeout = lease_timeout
        self.replicas: list[Replica] = []
        self._stack = ExitStack()

    def __enter__(self) -> ReplicaRig:
        try:
            self._start()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def _start(self) -> None:
        stack = self._stack
        generate_keys(self.root)
        self.sink = AlertSink()
        stack.callback(self.sink.stop)
        # aimed at replica 0 once it runs; nothing is pushed before
        self.tap = NotifyTap("http://127.0.0.1:9/events/distribution").start()
        stack.callback(self.tap.stop)
        self.registry = stack.enter_context(
            LocalRegistry(
                notifications=self.tap.url,
                notification_headers={"Authorization": f"Bearer {TOKEN}"},
                notification_timeout="5s",
                notification_backoff="200ms",
                ignored_media_types=["application/octet-stream"],
                ignored_actions=["pull", "delete"],
            )
        )
        self.policy = self.root / "regwarden.yaml"
        self.policy.write_text(
            POLICY.format(registry=self.registry.host, hook=self.sink.url, grace=PENDING_GRACE)
        )
        stack.callback(self._stop_replicas)
        for i in range(self.count):
            replica = launch_replica(
                self.root,
                i,
                ledger=self.ledger_url,
                policy=self.policy,
                workers=self.workers,
                lease_timeout=self.lease_timeout,
            )
            self.replicas.append(replica)
        self.tap.target = f"{self.replicas[0].url}/events/distribution"
        self.ledger = open_ledger(self.ledger_url)
        stack.callback(self.ledger.close)
        self.pusher = stack.enter_context(
            RegistryClient(self.registry.host, user_agent=CI_AGENT, backoff=0.05)
        )
        self.reader = stack.enter_context(
            RegistryClient(self.registry.host, user_agent=CI_AGENT, backoff=0.05)
        )

    def _stop_replicas(self) -> None:
        for r in self.replicas:
            r.stop()

    def logs(self, tail: int = 4000) -> str:
        return "\n".join(f"--- {r.instance} ---\n{r.text()[-tail:]}" for r in self.replicas)

    # -- pushing --------------------------------------------------------------------------

    def images(self, n: int, *, fail_every: int = 2, seed: int = 0) -> list[Expect]:
        """`n` images in fresh repositories: every `fail_every`th unsigned in a gated one
        (FAILED, moved), the rest in `pass-*` ones."""
        run = uuid.uuid4().hex[:6]
        out = []
        for i in range(n):
            fails = i % fail_every == 0
            repo = f"replicas/{run}/{'fail' if fails else 'pass'}-{i}"
            image = make_image(seed=seed * 1_000_000 + i, layer_size=64)
            out.append(Expect(repo, "v1", image, fails=fails))
        return out

    def push(self, expect: Expect) -> None:
        push_image(self.pusher, expect.repo, expect.content, tag=expect.tag)

    def burst(
        self,
        expects: Sequence[Expect],
        *,
        pushers: int = 4,
        during: Callable[[], None] | None = None,
    ) -> float:
        """Push every image, `pushers` at a time; `during` runs in this thread while they
        push (the kill). Returns the monotonic time the burst began."""
        began = time.monotonic()
        with ThreadPoolExecutor(pushers) as pool:
            pushed = [pool.submit(self.push, e) for e in expects]
            if during is not None:
                during()
            for f in pushed:
                f.result()
        return began

    # -- killing --------------------------------------------------------------------------

    def leases_of(self, instance: str) -> list[int]:
        """Ids of the queue rows `instance` holds now (leased, not done): read from the
        queue table, which the SQLite and PostgreSQL stores lay out alike."""
        store: Any = self.ledger
        if hasattr(store, "_rows"):  # PostgreSQL: its pool, its schema on the search_path
            rows = store._rows(
                "SELECT id FROM queue WHERE owner = %s AND done_at IS NULL", (instance,)
            )
        else:
            rows = store._conn().execute(
                "SELECT id FROM queue WHERE owner = ? AND done_at IS NULL", (instance,)
            )
        return sorted(int(r[0]) for r in rows)

    def kill_mid_event(self, index: int, *, after: int = 2, timeout: float = 120.0) -> list[int]:
        """SIGKILL replica `index` while one of its workers holds an event, once it has
        printed `after` verdicts (mid-burst): it is frozen (SIGSTOP) the moment it holds a
        lease, killed if it still holds one, else let go on (SIGCONT) and watched again.
        Returns the ids of the events it held."""
        replica = self.replicas[index]
        deadline = time.monotonic() + timeout
        while True:
            if replica.verdicts_printed() >= after and self.leases_of(replica.instance):
                os.kill(replica.proc.pid, signal.SIGSTOP)
                held = self.leases_of(replica.instance)
                if held:
                    replica.kill()
                    return held
                os.kill(replica.proc.pid, signal.SIGCONT)
            if time.monotonic() > deadline or not replica.alive():
                raise AssertionError(f"{replica.instance} never held an event\n{self.logs()}")
            time.sleep(0.005)

    # -- waiting and judging --------------------------------------------------------------

    def unacknowledged(self, expects: Sequence[Expect]) -> int:
        return sum(1 for e in expects if not self.tap.pushes(e.repo, e.digest))

    def drained(self, expects: Sequence[Expect]) -> bool:
        """Every push acknowledged and judged, nothing queued, no intent unfinished."""
        if self.unacknowledged(expects):
            return False
        if self.ledger_queue_pending():
            return False
        return not self.ledger.actions(status="intent")

    def ledger_queue_pending(self) -> int:
        queue: Any = self.ledger  # the PostgreSQL and SQLite ledgers are their own queues
        return int(queue.pending_count())

    def wait_drained(self, expects: Sequence[Expect], *, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.drained(expects):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    def verdict_log(self, e: Expect) -> list[tuple[str | None, str, Any]]:
        store: Any = self.ledger  # verdict_log: every store has it (the contract suite)
        return list(store.verdict_log(self.registry.host, e.repo, e.digest))

    def judge(self, result: BurstResult, expects: Sequence[Expect]) -> BurstResult:
        """Fill `result` from the registry, the ledger and the tap."""
        quarantine_actions = Counter(
            a.digest for a in self.ledger.actions() if a.kind == "quarantine"
        )
        intents = {a.digest for a in self.ledger.actions(status="intent")}
        result.acknowledged = 0
        for e in expects:
            deliveries = {a.delivery for a in self.tap.pushes(e.repo, e.digest)}
            result.acknowledged += len(deliveries)
            self._judge_image(result, e, deliveries, quarantine_actions, intents)
        result.taken_over = sum(
            1 for r in self.replicas for _, owner in r.taken_over() if owner == result.killed
        )
        result.verdicts_by_replica = {r.instance: r.verdicts_printed() for r in self.replicas}
        return result

    def _judge_image(
        self,
        result: BurstResult,
        e: Expect,
        deliveries: set[str],
        quarantine_actions: Counter[str],
        intents: set[str],
    ) -> None:
        def problem(counter: str, text: str) -> None:
            setattr(result, counter, getattr(result, counter) + 1)
            result.problems.append(f"{e.repo}@{e.digest[:19]}: {text}")

        log = self.verdict_log(e)
        per_delivery = Counter(d for d, _, _ in log)
        if not log:
            problem("lost", "no verdict")
        for d in sorted(deliveries):
            if per_delivery[d] > 1:
                problem("duplicated_verdicts", f"{per_delivery[d]} verdicts for {d}: {log}")
            elif per_delivery[d] == 0 and log:
                problem("lost", f"acknowledged {d} has no verdict; the image has {log}")
        wanted = "FAILED" if e.fails else "PASSED"
        final = log[-1][1] if log else None
        if final is not None and final != wanted:
            problem("wrong", f"verdict {final}, expected {wanted}: {log}")
        moves = quarantine_actions[e.digest]
        if moves > 1:
            problem("duplicated_actions", f"{moves} quarantine actions")
        if e.fails and moves == 0:
            problem("wrong", "no quarantine action")
        where = placement(self.reader, e.repo, e.qrepo, e.content)
        if where.startswith("half-done") or e.digest in intents:
            problem("half_done", where if where.startswith("half") else "unfinished intent")
        elif where != ("quarantined" if e.fails else "untouched"):
            problem("wrong", f"{where}, expected {'quarantined' if e.fails else 'untouched'}")

    def run(
        self,
        expects: Sequence[Expect],
        *,
        kill: int | None = None,
        kill_after: int = 2,
        timeout: float = 300.0,
        pushers: int = 4,
        meanwhile: Callable[[], None] | None = None,
    ) -> BurstResult:
        """Push `expects`, SIGKILL replica `kill` mid-event once it printed `kill_after`
        verdicts (None: no kill), wait for the queue to drain (at most `timeout` s),
        judge. `meanwhile` runs while the images are pushed (after the kill, if any)."""
        result = BurstResult(replicas=len(self.replicas), images=len(expects))
        if kill is not None:
            result.killed = self.replicas[kill].instance
        held: list[int] = []

        def during() -> None:
            if kill is not None:
                held.extend(self.kill_mid_event(kill, after=kill_after))
            if meanwhile is not None:
                meanwhile()

        began = self.burst(expects, pushers=pushers, during=during)
        result.drained = self.wait_drained(expects, timeout=timeout)
        result.seconds = round(time.monotonic() - began, 2)
        result.pushes_per_second = round(len(expects) / result.seconds, 2)
        if not result.drained:
            result.problems.append(
                f"not drained after {timeout:.0f}s: {self.unacknowledged(expects)} "
                f"unacknowledged, {self.ledger_queue_pending()} queued, "
                f"{len(self.ledger.actions(status='intent'))} unfinished intent(s)"
            )
        result.held_at_kill = held
        return self.judge(result, expects)
