"""Push-gate latency and throughput against a real local registry.

Phase 1 pushes N images one at a time (latency without queueing); phase 2 pushes N
more in a burst (sustained events per second). Each push is an unsigned image in a
repository whose policy requires signatures with no grace period, so every event ends in
the heaviest action: a `move` quarantine (copy by
blob mount, delete from the source). Measured from the moment the receiver persisted the
registry's notification to the moment the action completed (p50, p99), plus sustained
events per second, and checked for lost or duplicated actions.

The floor does the same primitive work in the same run, raw: one durable SQLite enqueue
and the 13 registry round trips the verdict and the action need (read the manifest and
the config, look for signatures by tag and referrers, list the repository's tags and HEAD
them to learn every tag the registry holds for the digest now, mount the blobs, put the
manifest in the quarantine repository, delete it from the source), one after another with
a bare httpx client, against a registry that notifies no one. regwarden must make the same
13 requests (`registry_requests_per_event`); it may overlap the independent ones.
Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from regwarden.devtools import LocalRegistry, gated_registry, make_image, push_image
from regwarden.oci import ALL_MANIFEST_TYPES, OCI_INDEX, RegistryClient, referrers_tag

POLICY = """\
apiVersion: regwarden/v1
kind: Policy
repositories:
  - match: "bench/**"
    team: bench
    signatures: {required: true, cosign: {keys: ["file://cosign.pub"]}, gracePeriod: 0s}
"""
ACCEPT = ", ".join(ALL_MANIFEST_TYPES)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def run_gate(n: int, workers: int) -> dict[str, Any]:
    from regwarden.pipeline import Handled
    from regwarden.runtime import load_runtime
    from regwarden.service import Processor
    from regwarden.signatures.keys import generate_private_key
    from regwarden.store import QueuedEvent, open_queue

    tmp = Path(tempfile.mkdtemp(prefix="regwarden-bench-"))
    pem = generate_private_key("ecdsa-p256").public_key.pem
    (tmp / "cosign.pub").write_bytes(pem if isinstance(pem, bytes) else pem.encode())
    (tmp / "regwarden.yaml").write_text(POLICY)
    runtime = load_runtime(tmp / "regwarden.yaml", ledger=tmp / "ledger.db")
    queue = open_queue(ledger=runtime.ledger)  # an SQLite ledger is its own queue
    pipeline = runtime.pipeline()
    latencies: list[float] = []
    acted: dict[str, int] = {}
    done_at: list[float] = []
    lock = threading.Condition()  # the main thread sleeps until an action is recorded

    def process(item: QueuedEvent) -> None:
        handled: list[Handled] = []
        proc = Processor(
            pipeline, queue, clock=lambda: datetime.now(UTC), on_handled=handled.append
        )
        proc(item)
        finished = time.time()
        for h in handled:
            if h.actions:
                with lock:
                    key = str(h.verdict.image.digest) if h.verdict else "?"
                    acted[key] = acted.get(key, 0) + 1
                    latencies.append(finished - item.received_at.timestamp())
                    done_at.append(finished)
                    lock.notify_all()

    try:
        with (
            gated_registry(
                queue, process, workers=workers, backoff="100ms", keep=pipeline.wants
            ) as gated,
            RegistryClient(gated.registry.host, user_agent="bench-ci/1.0") as client,
        ):
            registry = gated.registry
            count = {"requests": 0}

            def counted(request: httpx.Request) -> None:
                count["requests"] += 1

            runtime.registry(registry.host).data_plane()._http.event_hooks["request"].append(
                counted
            )
            # Phase 1, latency: one push at a time, each waited for (no queueing).
            pushed: list[str] = []
            for i in range(n):
                image = make_image(seed=10_000 + i, layers=2, layer_size=512)
                pushed.append(push_image(client, f"bench/app{i % 10}", image, tag=f"v{i}"))
                with lock:  # wait without polling: a busy waiter would skew the latency
                    want = i + 1
                    lock.wait_for(lambda: len(latencies) >= want, timeout=30)  # noqa: B023
            requests_per_event = count["requests"] / n
            latency = list(latencies)
            # Phase 2, throughput: a burst of n pushes, processed by the worker pool.
            start = time.time()
            for i in range(n, 2 * n):
                image = make_image(seed=10_000 + i, layers=2, layer_size=512)
                pushed.append(push_image(client, f"bench/app{i % 10}", image, tag=f"v{i}"))
            push_s = time.time() - start
            deadline = time.monotonic() + 120 + n
            while len(acted) < 2 * n and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(1.0)  # anything late (a duplicate) would show up now
            quarantined = 0
            for i, digest in enumerate(pushed):
                repo = f"bench/app{i % 10}"
                in_q = client.head_manifest(f"quarantine/{repo}", digest) is not None
                gone = client.head_manifest(repo, digest) is None
                quarantined += in_q and gone
            actions = runtime.ledger.actions()
            per_digest: dict[str, int] = {}
            for a in actions:
                if a.kind == "quarantine":
                    per_digest[a.digest] = per_digest.get(a.digest, 0) + 1
            burst_done = [t for t in done_at if t >= start]
            span = max(burst_done) - start if burst_done else float("nan")
            return {
                "pushes": n,
                "workers": workers,
                "latency_ms": {
                    "p50": round(pct(latency, 50) * 1000, 2),
                    "p99": round(pct(latency, 99) * 1000, 2),
                    "mean": round(statistics.mean(latency) * 1000, 2),
                },
                "registry_requests_per_event": round(requests_per_event, 1),
                "burst_events_per_s": round(n / span, 1),
                "push_s": round(push_s, 2),
                "lost_actions": 2 * n - quarantined,
                "duplicated_actions": sum(1 for c in per_digest.values() if c > 1)
                + sum(1 for c in acted.values() if c > 1),
                "quarantine_records": len(per_digest),
                "registry": registry.host,
            }
    finally:
        runtime.close()


def run_floor(n: int) -> dict[str, Any]:
    """Raw: one durable enqueue + the registry round trips of one gated move, per image."""
    tmp = Path(tempfile.mkdtemp(prefix="regwarden-floor-"))
    db = sqlite3.connect(tmp / "q.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE q (id INTEGER PRIMARY KEY, body BLOB)")
    latencies: list[float] = []
    requests = 0
    with (
        LocalRegistry() as registry,
        RegistryClient(registry.host) as seed,
        httpx.Client(base_url=f"http://{registry.host}") as http,
    ):
        work = []
        for i in range(n):
            image = make_image(seed=20_000 + i, layers=2, layer_size=512)
            repo = f"floor/app{i % 10}"
            push_image(seed, repo, image, tag=f"v{i}")
            work.append((repo, image, f"v{i}"))
        for repo, image, tag in work:
            digest = image.manifest_digest
            t0 = time.perf_counter()
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO q (body) VALUES (?)", (b"{}" * 200,))
            db.execute("COMMIT")
            calls = [
                ("GET", f"/v2/{repo}/manifests/{digest}", {"Accept": ACCEPT}),
                ("GET", f"/v2/{repo}/blobs/{image.config_digest}", {}),
                ("GET", f"/v2/{repo}/manifests/{digest.replace(':', '-')}.sig", {"Accept": ACCEPT}),
                ("GET", f"/v2/{repo}/manifests/{digest.replace(':', '-')}.att", {"Accept": ACCEPT}),
                ("GET", f"/v2/{repo}/referrers/{digest}", {"Accept": OCI_INDEX}),
                ("GET", f"/v2/{repo}/manifests/{referrers_tag(digest)}", {"Accept": OCI_INDEX}),
                # the tags the registry holds now (quarantine removes and records them all)
                ("GET", f"/v2/{repo}/tags/list", {}),
                ("HEAD", f"/v2/{repo}/manifests/{tag}", {"Accept": ACCEPT}),
            ]
            for method, url, headers in calls:
                http.request(method, url, headers=headers)
            requests += len(calls)
            qrepo = f"quarantine/{repo}"
            for blob in (image.config_digest, *image.layer_digests):
                r = http.post(f"/v2/{qrepo}/blobs/uploads/", params={"mount": blob, "from": repo})
                assert r.status_code == 201, r.status_code
                requests += 1
            http.put(
                f"/v2/{qrepo}/manifests/quarantined-{digest[7:19]}",
                content=image.manifest,
                headers={"Content-Type": image.media_type},
            )
            http.delete(f"/v2/{repo}/manifests/{digest}")
            requests += 2
            latencies.append(time.perf_counter() - t0)
    return {
        "latency_ms": {
            "p50": round(pct(latencies, 50) * 1000, 2),
            "p99": round(pct(latencies, 99) * 1000, 2),
        },
        "requests_per_event": requests / n,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--pushes", type=int, default=200, help="pushes per phase (latency phase, then a burst)"
    )
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args(argv)
    floor = run_floor(args.pushes)
    gate = run_gate(args.pushes, args.workers)
    ratio = gate["latency_ms"]["p50"] / floor["latency_ms"]["p50"]
    out = {
        "benchmark": "push gate: notification persisted → action completed",
        "regwarden": gate,
        "floor": floor,
        "p50_ratio_to_floor": round(ratio, 2),
        "target": {"p50_ratio_max": 1.5, "lost_or_duplicated": 0},
        "meets_target": ratio <= 1.5
        and gate["lost_actions"] == 0
        and gate["duplicated_actions"] == 0,
    }
    json.dump(out, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
