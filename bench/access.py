"""Access-event throughput of `regwarden serve`'s receiver (issue #16, "Done when").

N pull notifications (default 10,000), each a distribution 2.8 envelope of one event as
the registry sends it by default (indented JSON, every field distribution fills in:
target with size, length, url and tag, request with id, addr, host, method and user
agent, actor, source), are POSTed over loopback HTTP by C keep-alive connections to:

- the product: `regwarden serve` as a real process (its SQLite ledger and work queue, the
  webhook token, /metrics) with the access monitor on. The pulls are spread the way a
  fleet pulls: 200 images in 50 repositories, a few hot ones (Zipf), 20 pull principals
  on 40 node addresses, by tag or by digest, and a few blocked ones (pulls of two FAILED
  images and of a quarantined image from its quarantine repository) that alert through a
  webhook channel to a sink in this process. Timed until the monitor has *handled* every
  event (read from /metrics), not merely until the receiver acknowledged them.
- the floor: the same receiver app (`create_app`, the same caller authentication and body
  read) on the same uvicorn configuration in its own process, acknowledging each body
  (202) without parsing or keeping it.

Both in this run, on this machine's cores (the bench says how many and its load), the
floor first, in `--rounds` alternating rounds: the medians and each round's paired ratio. The
client is a raw HTTP/1.1 keep-alive client (a pre-built request, the answer read by its
Content-Length), so it costs far less than either server and never sets the pace.

Prints JSON: events per second of both and their ratio (target >= 0.5), the product's
acknowledgement rate, its coalesced ledger writes (during the run, and after the forced
flush at stop), the pulls the ledger tallied, alerts sent, 503s retried, and the CPU
seconds of each server process — with their ratio, the receivers' cost per event whatever
share of the cores a loaded machine gave each process (the product runs two busy threads,
the floor one: on a machine busy with other work the scheduler gives the product more).

    .venv/bin/python bench/access.py                     # 10,000 pulls, 4 connections, 3 rounds
    .venv/bin/python bench/access.py --events 2000 --connections 1 --rounds 1
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from regwarden.devtools import free_port
from regwarden.store import QuarantineRecord, SqliteLedger

HERE = Path(__file__).resolve().parent
TOKEN = "bench-access-token"  # noqa: S105  # a throwaway token on loopback
REGISTRY = "registry.bench.internal:5000"
CONTENT_TYPE = "application/vnd.docker.distribution.events.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
REPOSITORIES = 50
IMAGES_PER_REPOSITORY = 4
PRINCIPALS = 20
NODES = 40
FAILED_SHARE = 0.005  # pulls of FAILED images (mode: audit leaves them in place)
QUARANTINE_SHARE = 0.001  # pulls from the quarantine repository of a quarantined image

POLICY = """\
apiVersion: regwarden/v1
kind: Policy
defaults:
  mode: audit
repositories:
  - match: "**"
    team: platform
notifications:
  channels:
    sink: {{type: webhook, url: "{hook}"}}
  routes:
    - {{match: {{team: platform}}, to: [sink]}}
"""


@dataclass(frozen=True)
class Image:
    repository: str
    digest: str
    tag: str
    size: int


@dataclass
class Fleet:
    """The images the pulls are of, and the blocked ones."""

    images: list[Image]
    failed: list[Image]
    quarantined: Image
    weights: list[float] = field(default_factory=list)


def fleet(rng: random.Random) -> Fleet:
    images = [
        Image(
            f"team{r:02d}/service{r:02d}",
            "sha256:" + rng.randbytes(32).hex(),
            f"1.{r}.{i}",
            rng.randint(400, 4000),
        )
        for r in range(REPOSITORIES)
        for i in range(IMAGES_PER_REPOSITORY)
    ]
    order = images[:]
    rng.shuffle(order)
    weights = [1.0 / (rank + 1) for rank in range(len(order))]  # Zipf: a few hot images
    return Fleet(order[3:], order[:2], order[2], weights[3:])


def envelope(image: Image, *, repository: str, by_tag: bool, rng: random.Random) -> bytes:
    """One pull as distribution 2.8 notifies it: one event per envelope, MarshalIndent'ed."""
    principal = rng.randrange(PRINCIPALS)
    node = rng.randrange(NODES)
    reference = image.tag if by_tag else image.digest
    target: dict[str, Any] = {
        "mediaType": MANIFEST,
        "size": image.size,
        "digest": image.digest,
        "length": image.size,
        "repository": repository,
        "url": f"http://{REGISTRY}/v2/{repository}/manifests/{reference}",
    }
    if by_tag:
        target["tag"] = image.tag
    event = {
        "id": str(uuid.UUID(bytes=rng.randbytes(16), version=4)),
        "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "action": "pull",
        "target": target,
        "request": {
            "id": str(uuid.UUID(bytes=rng.randbytes(16), version=4)),
            "addr": f"10.0.{node // 250}.{node % 250 + 1}:{rng.randint(32768, 60999)}",
            "host": REGISTRY,
            "method": "GET",
            "useragent": "containerd/v1.7.13",
        },
        "actor": {"name": f"system:serviceaccount:prod:puller-{principal:02d}"},
        "source": {"addr": "registry-0:5000", "instanceID": "3a8b6f7e-bench"},
    }
    return json.dumps({"events": [event]}, indent=3).encode()


def bodies(n: int, seed: int) -> tuple[list[bytes], Fleet]:
    rng = random.Random(seed)
    world = fleet(rng)
    out = []
    for _ in range(n):
        roll = rng.random()
        if roll < QUARANTINE_SHARE:
            image, repository = world.quarantined, f"quarantine/{world.quarantined.repository}"
            by_tag = False  # the quarantine repository holds it by digest
        elif roll < QUARANTINE_SHARE + FAILED_SHARE:
            image = rng.choice(world.failed)
            repository, by_tag = image.repository, rng.random() < 0.5
        else:
            image = rng.choices(world.images, world.weights)[0]
            repository, by_tag = image.repository, rng.random() < 0.5
        out.append(envelope(image, repository=repository, by_tag=by_tag, rng=rng))
    return out, world


def seed_ledger(path: Path, world: Fleet) -> None:
    """What the gate would have recorded: every image pushed and judged; two FAILED, one
    quarantined (moved to `quarantine/<repository>`)."""
    ledger = SqliteLedger(path)
    when = datetime.now(UTC) - timedelta(days=1)
    try:
        for image in [*world.images, *world.failed, world.quarantined]:
            ledger.record_push(REGISTRY, image.repository, image.digest, (image.tag,), now=when)
            verdict = "PASSED" if image in world.images else "FAILED"
            ledger.record_verdict(REGISTRY, image.repository, image.digest, verdict, now=when)
        q = world.quarantined
        ledger.record_quarantine(
            QuarantineRecord(
                registry=REGISTRY,
                repository=q.repository,
                digest=q.digest,
                strategy="move",
                location=f"quarantine/{q.repository}",
                tags=(q.tag,),
                reason="bench: unsigned",
                quarantined_at=when,
                released_at=None,
            )
        )
    finally:
        ledger.close()


# -- the client ---------------------------------------------------------------------------


class Connection:
    """One HTTP/1.1 keep-alive connection that POSTs and reads the answer's status."""

    _LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.head = (
            "POST /events/distribution HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {TOKEN}\r\n"
            f"Content-Type: {CONTENT_TYPE}\r\n"
            "User-Agent: distribution/bench\r\n"
            "Content-Length: {}\r\n\r\n"
        )
        self.buffer = b""

    def post(self, body: bytes) -> int:
        self.sock.sendall(self.head.format(len(body)).encode() + body)
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed the connection")
            self.buffer += chunk
        head, _, rest = self.buffer.partition(b"\r\n\r\n")
        found = self._LENGTH.search(head)
        length = int(found.group(1)) if found else 0
        while len(rest) < length:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed the connection")
            rest += chunk
        self.buffer = rest[length:]
        return int(head[9:12])

    def close(self) -> None:
        self.sock.close()


@dataclass
class Blast:
    seconds: float
    statuses: dict[int, int]
    retried: int


def blast(port: int, payloads: list[bytes], connections: int) -> Blast:
    """Every payload POSTed once and acknowledged (202), over `connections` connections;
    a 503 (the access queue full) is sent again, as a registry would."""
    statuses: dict[int, int] = {}
    retried = [0]
    lock = threading.Lock()
    errors: list[BaseException] = []
    start = threading.Barrier(connections + 1)

    def run(share: list[bytes]) -> None:
        conn = Connection(port)
        seen: dict[int, int] = {}
        again = 0
        try:
            start.wait()
            for body in share:
                status = conn.post(body)
                while status == 503:
                    again += 1
                    time.sleep(0.01)  # the registry's backoff, short: the bench waits on it
                    status = conn.post(body)
                seen[status] = seen.get(status, 0) + 1
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            conn.close()
            with lock:
                for k, v in seen.items():
                    statuses[k] = statuses.get(k, 0) + v
                retried[0] += again

    threads = [
        threading.Thread(target=run, args=(payloads[i::connections],)) for i in range(connections)
    ]
    for t in threads:
        t.start()
    start.wait()
    began = time.monotonic()
    for t in threads:
        t.join()
    seconds = time.monotonic() - began
    if errors:
        raise RuntimeError(f"client failed: {errors[0]!r}")
    return Blast(seconds, statuses, retried[0])


# -- the servers --------------------------------------------------------------------------


class Sink(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.server.count += 1  # type: ignore[attr-defined]
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_healthy(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited:\n{log.read_text()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"server did not start:\n{log.read_text()[-3000:]}")


def metric(port: int, name: str) -> float:
    """One unlabelled sample of the product's /metrics."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            + f"Authorization: Bearer {TOKEN}\r\n\r\n".encode()
        )
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    found = re.search(rb"^" + name.encode() + rb" (\S+)$", data, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def run_floor(root: Path, payloads: list[bytes], connections: int) -> dict[str, Any]:
    port = free_port()
    log = root / "floor.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                str(HERE / "_access_floor.py"),
                str(root / "tokens"),
                str(root / "floor-queue.db"),
                str(port),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_healthy(proc, port, log)
        cpu0 = cpu_seconds(proc.pid)
        result = blast(port, payloads, connections)
        cpu = cpu_seconds(proc.pid) - cpu0
    finally:
        stop(proc)
    return {
        "seconds": round(result.seconds, 3),
        "events_per_second": round(len(payloads) / result.seconds, 1),
        "statuses": result.statuses,
        "server_cpu_seconds": round(cpu, 3),
        "server_cpu_ms_per_event": round(cpu * 1000 / len(payloads), 3),
    }


def run_product(
    root: Path, payloads: list[bytes], world: Fleet, connections: int
) -> dict[str, Any]:
    sink = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    sink.daemon_threads = True
    sink.count = 0  # type: ignore[attr-defined]
    threading.Thread(target=sink.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    policy = root / "regwarden.yaml"
    policy.write_text(POLICY.format(hook=f"http://127.0.0.1:{sink.server_address[1]}/hook"))
    ledger = root / "ledger.db"
    seed_ledger(ledger, world)
    port = free_port()
    log = root / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "regwarden",
                "--ledger",
                str(ledger),
                "serve",
                "--policy",
                str(policy),
                "--port",
                str(port),
                "--auth-token-file",
                str(root / "tokens"),
                "--registry",
                REGISTRY,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    n = len(payloads)
    try:
        wait_healthy(proc, port, log)
        cpu0 = cpu_seconds(proc.pid)
        began = time.monotonic()
        result = blast(port, payloads, connections)
        deadline = time.monotonic() + 300
        handled = 0.0
        while handled < n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the monitor handled {handled:.0f} of {n} events in 300 s")
            handled = metric(port, "regwarden_access_events_handled_total")
            if handled < n:
                time.sleep(0.02)
        seconds = time.monotonic() - began
        cpu = cpu_seconds(proc.pid) - cpu0
        writes_in_run = metric(port, "regwarden_access_ledger_writes_total")
        dropped = metric(port, "regwarden_access_events_dropped_total")
    finally:
        stop(proc)
        sink.shutdown()
    stopped = re.search(
        r"access monitor stopped: (\d+) event\(s\) handled, (\d+) coalesced ledger write",
        log.read_text(),
    )
    ledger_after = SqliteLedger(ledger)
    try:
        tallied = sum(
            t.count
            for image in [*world.images, *world.failed, world.quarantined]
            for repo in {image.repository, f"quarantine/{image.repository}"}
            for t in ledger_after.pull_tallies(REGISTRY, repo)
            if t.digest == image.digest
        )
    finally:
        ledger_after.close()
    writes_total = int(stopped.group(2)) if stopped else None
    return {
        "seconds": round(seconds, 3),
        "events_per_second": round(n / seconds, 1),
        "acknowledged_per_second": round(n / result.seconds, 1),
        "statuses": result.statuses,
        "retried_503": result.retried,
        "dropped": int(dropped),
        # rows: a pull tally per (image, principal) and a count per open alert window; each
        # flush writes its tallies in one record_pulls (one transaction on SQLite)
        "ledger_writes_in_run": int(writes_in_run),
        "ledger_writes_after_stop_flush": writes_total,
        "events_per_ledger_write": round(n / writes_total, 1) if writes_total else None,
        "pulls_tallied_in_ledger": tallied,
        "alerts_delivered": sink.count,  # type: ignore[attr-defined]
        "server_cpu_seconds": round(cpu, 3),
        "server_cpu_ms_per_event": round(cpu * 1000 / n, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="floor then product, this many times (medians and paired ratios reported)",
    )
    parser.add_argument("--seed", type=int, default=16)
    args = parser.parse_args()
    payloads, world = bodies(args.events, args.seed)
    floors: list[dict[str, Any]] = []
    products: list[dict[str, Any]] = []
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="regwarden-bench-access-") as tmp:
            root = Path(tmp)
            (root / "tokens").write_text(TOKEN + "\n")
            floors.append(run_floor(root, payloads, args.connections))
            products.append(run_product(root, payloads, world, args.connections))
    pairs = list(zip(floors, products, strict=True))
    paired = [p["events_per_second"] / f["events_per_second"] for f, p in pairs]
    # events per CPU second of the server process: what the receiver costs, whatever share
    # of the cores the scheduler gave it on a loaded machine
    cpu_paired = [f["server_cpu_seconds"] / p["server_cpu_seconds"] for f, p in pairs]
    floor_rate = statistics.median(f["events_per_second"] for f in floors)
    product_rate = statistics.median(p["events_per_second"] for p in products)
    ratio = product_rate / floor_rate
    print(
        json.dumps(
            {
                "events": args.events,
                "connections": args.connections,
                "rounds": args.rounds,
                "cores": os.cpu_count(),
                "load_average_1m_at_end": round(os.getloadavg()[0], 2),
                "body_bytes_mean": round(sum(map(len, payloads)) / len(payloads)),
                "floor_events_per_second_median": floor_rate,
                "product_events_per_second_median": product_rate,
                "ratio": round(ratio, 3),
                "ratio_paired": [round(r, 3) for r in paired],
                "cpu_ratio_median": round(statistics.median(cpu_paired), 3),
                "cpu_ratio_paired": [round(r, 3) for r in cpu_paired],
                "target": 0.5,
                "met": ratio >= 0.5,
                "floor": floors,
                "product": products,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
