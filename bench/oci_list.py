"""Benchmark: regwarden's OCI client against a raw httpx loop doing the same requests.

Starts its own distribution 2.8 on loopback (and the test-suite's paging proxy, since 2.8
does not page tag lists), seeds one repository with 2,000 tags over 500 distinct
manifests, then times:

- listing the 2,000 tags directly (one response) and through the proxy with n=100;
- fetching 500 manifests with concurrency 1, 8 and 32 (ThreadPoolExecutor, one shared
  client each side, the same Accept header).

Prints JSON: seconds (median of several rounds), requests per run, and the
regwarden/raw ratio per case. No assertions; the target is a ratio of at most 1.2.

    .venv/bin/python bench/oci_list.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the paging proxy lives with the test support code

from support.proxy import RegistryProxy  # noqa: E402

from regwarden import USER_AGENT, __version__  # noqa: E402
from regwarden.devtools import LocalRegistry, make_image, push_image  # noqa: E402
from regwarden.oci import ALL_MANIFEST_TYPES, RegistryClient  # noqa: E402

REPO = "bench/app"
TAGS = 2000
MANIFESTS = 500
PAGE = 100
CONCURRENCY = (1, 8, 32)
TARGET = 1.2
ACCEPT = ", ".join(ALL_MANIFEST_TYPES)


class CountingTransport(httpx.BaseTransport):
    """Counts requests; both sides use it, so its (tiny) cost cancels out."""

    def __init__(self, max_connections: int = 64) -> None:
        limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        self._inner = httpx.HTTPTransport(limits=limits)
        self._lock = threading.Lock()
        self.count = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.count += 1
        return self._inner.handle_request(request)

    def close(self) -> None:
        self._inner.close()

    def take(self) -> int:
        with self._lock:
            n, self.count = self.count, 0
        return n


def seed(host: str) -> list[str]:
    """One image's blobs once, 500 manifests differing in an annotation, 2,000 tags."""
    with RegistryClient(host) as client, ThreadPoolExecutor(16) as pool:
        base = make_image(layers=2, layer_size=4096, seed=1)
        push_image(client, REPO, base, tag=None)
        variants = [
            make_image(layers=2, layer_size=4096, seed=1, annotations={"bench.n": str(i)})
            for i in range(MANIFESTS)
        ]
        tags = [f"t{i:04d}" for i in range(TAGS)]

        def put(i: int) -> None:
            image = variants[i % MANIFESTS]
            client.put_manifest(REPO, tags[i], image.manifest, image.media_type)

        list(pool.map(put, range(TAGS)))
    return tags


# -- the raw floor: a shared httpx.Client, nothing else ------------------------------------------


def raw_list_tags(http: httpx.Client, base: str, page_size: int | None) -> list[str]:
    url: str | None = f"{base}/v2/{REPO}/tags/list"
    params = {"n": page_size} if page_size else None
    tags: list[str] = []
    while url is not None:
        response = http.get(url, params=params)
        response.raise_for_status()
        tags.extend(response.json()["tags"])
        link = response.headers.get("link")
        url = urljoin(base, link[1 : link.index(">")]) if link else None
        params = None
    return tags


def raw_get_manifest(http: httpx.Client, base: str, tag: str) -> bytes:
    response = http.get(f"{base}/v2/{REPO}/manifests/{tag}", headers={"Accept": ACCEPT})
    response.raise_for_status()
    return response.content


# -- timing ----------------------------------------------------------------------------------------


def timed(fn: Callable[[], object], repeat: int) -> float:
    """Seconds per call of `fn`, averaged over `repeat` back-to-back calls."""
    started = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - started) / repeat


def compare(
    case: str,
    ours: Callable[[], object],
    raw: Callable[[], object],
    ours_t: CountingTransport,
    raw_t: CountingTransport,
    rounds: int,
    **extra: Any,
) -> dict[str, Any]:
    """Warm both sides, count one run's requests, then time interleaved rounds (median)."""
    ours()
    raw()
    ours_t.take()
    raw_t.take()
    probe = time.perf_counter()
    ours()
    probe = time.perf_counter() - probe
    raw()
    ours_requests, raw_requests = ours_t.take(), raw_t.take()
    repeat = max(1, min(200, int(0.25 / max(probe, 1e-6))))  # >= ~0.25 s per timed sample
    ours_times, raw_times = [], []
    for n in range(rounds):  # interleaved, alternating who goes first: drift hits both alike
        if n % 2:
            ours_times.append(timed(ours, repeat))
            raw_times.append(timed(raw, repeat))
        else:
            raw_times.append(timed(raw, repeat))
            ours_times.append(timed(ours, repeat))
    ours_s, raw_s = statistics.median(ours_times), statistics.median(raw_times)
    return {
        "case": case,
        **extra,
        "regwarden_s": round(ours_s, 5),
        "raw_httpx_s": round(raw_s, 5),
        "ratio": round(ours_s / raw_s, 3),
        "regwarden_requests": ours_requests,
        "raw_httpx_requests": raw_requests,
        "samples": rounds,
        "calls_per_sample": repeat,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per case (median)")
    args = parser.parse_args()
    results: list[dict[str, Any]] = []
    started = time.perf_counter()
    with LocalRegistry() as registry, RegistryProxy(registry.host) as proxy:
        t0 = time.perf_counter()
        tags = seed(registry.host)
        seed_s = time.perf_counter() - t0

        for label, host, page_size in (
            ("list_tags_direct", registry.host, None),
            ("list_tags_proxy_n100", proxy.host, PAGE),
        ):
            ours_t, raw_t = CountingTransport(), CountingTransport()
            base = f"http://{host}"
            with (
                RegistryClient(host, transport=ours_t) as client,
                httpx.Client(transport=raw_t, headers={"User-Agent": USER_AGENT}) as http,
            ):
                listed = client.list_tags(REPO, page_size=page_size)
                assert sorted(listed) == tags, "seeding or listing went wrong"
                results.append(
                    compare(
                        label,
                        functools.partial(client.list_tags, REPO, page_size=page_size),
                        functools.partial(raw_list_tags, http, base, page_size),
                        ours_t,
                        raw_t,
                        args.rounds,
                        tags=len(listed),
                    )
                )

        wanted = tags[:MANIFESTS]
        for workers in CONCURRENCY:
            ours_t, raw_t = CountingTransport(), CountingTransport()
            base = registry.url
            with (
                RegistryClient(registry.host, transport=ours_t) as client,
                httpx.Client(transport=raw_t, headers={"User-Agent": USER_AGENT}) as http,
                ThreadPoolExecutor(workers) as pool,
            ):

                def ours(c: RegistryClient = client, p: ThreadPoolExecutor = pool) -> None:
                    list(p.map(lambda t: c.get_manifest(REPO, t), wanted))

                def raw(
                    h: httpx.Client = http, p: ThreadPoolExecutor = pool, b: str = base
                ) -> None:
                    list(p.map(lambda t: raw_get_manifest(h, b, t), wanted))

                row = compare(
                    f"get_manifest_x{MANIFESTS}_c{workers}",
                    ours,
                    raw,
                    ours_t,
                    raw_t,
                    args.rounds,
                    concurrency=workers,
                )
                row["regwarden_per_s"] = round(MANIFESTS / row["regwarden_s"], 1)
                row["raw_httpx_per_s"] = round(MANIFESTS / row["raw_httpx_s"], 1)
                results.append(row)

    report = {
        "benchmark": "oci_list",
        "regwarden": __version__,
        "registry": "CNCF distribution 2.8 (docker-registry) on 127.0.0.1",
        "python": platform.python_version(),
        "httpx": httpx.__version__,
        "cpus": os.cpu_count(),
        "rounds": args.rounds,
        "seed_s": round(seed_s, 3),
        "target_ratio": TARGET,
        "results": results,
        "max_ratio": max(r["ratio"] for r in results),
        "within_target": all(r["ratio"] <= TARGET for r in results),
        "wall_s": round(time.perf_counter() - started, 2),
    }
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
