"""Retention benchmarks. Prints one JSON object with one key per section.

Sections:
  planning   (a) build 1,000,000 records from ECR DescribeImages-shaped listings across
             1,000 repositories, then plan them all; time and peak memory of each phase.
             Targets: planning <= 5 s, whole run <= 2 GB peak RSS.
  registry_deletes
             (b) delete 2,000 tagged images from a local distribution 2.8: regwarden's
             executor (`apply`, ledger writes included) vs a raw httpx DELETE loop at the
             same concurrency (the floor) vs a shell loop of `skopeo delete` (what a user
             would do by hand; run on a subset and extrapolated). Target: <= 1.3x the floor.
  ecr_calls  (c) ECR API calls per 1,000 images planned and deleted, against moto server
             behind the test-suite's ECR limits proxy, counted on the client. Target: the
             minimum, ceil(n/1000) describe_images + ceil(d/100) batch_delete_image.

Usage: .venv/bin/python bench/retention.py [--sections planning,registry_deletes,ecr_calls]
           [--repositories 1000] [--per-repository 1000] [--seed 7] [--tracemalloc]
           [--deletes 2000] [--concurrency 8] [--skopeo-subset 200] [--rounds 2]

Numbers are figures to read, never assertions. Wall time is what the target is about;
CPU time and the load average show how much a busy machine inflated it (construction is
timed in CPU seconds only, because its wall time would include the listing generator).
`--tracemalloc` adds a traced-peak figure for planning; tracing slows allocation, so its
timing is reported separately.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from regwarden.retention import (
    DeleteOlderThan,
    DeleteOrphans,
    DeleteUntagged,
    Guard,
    ImageRecord,
    KeepMostRecent,
    KeepPulledWithin,
    KeepSemver,
    KeepTagMatches,
    Protections,
    RetentionRules,
    from_ecr_image,
    plan_registry,
)

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"

# The policy contract's example rules, plus the orphans rule.
RULES = RetentionRules(
    keep=(
        KeepMostRecent(10),
        KeepSemver(majors=3, minors_per_major=2, patches_per_minor=1),
        KeepPulledWithin(timedelta(days=30)),
        KeepTagMatches("^release-"),
    ),
    delete=(
        DeleteUntagged(timedelta(days=7)),
        DeleteOlderThan(timedelta(days=180)),
        DeleteOrphans(timedelta(days=1)),
    ),
    guard=Guard(max_deletes=500, max_share=0.5),
)


def _maxrss_mib() -> float:
    # Linux reports kilobytes, macOS bytes.
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024, 1)


def _digest(rng: random.Random) -> str:
    return f"sha256:{rng.getrandbits(256):064x}"


def _listing(
    rng: random.Random, n: int
) -> tuple[list[dict[str, Any]], dict[str, tuple[str, ...]], dict[str, str]]:
    """One repository as ECR DescribeImages pages would list it (about `n` entries),
    plus what a provider learns from manifests: index children and referrer subjects."""
    now = NOW
    details: list[dict[str, Any]] = []
    children: dict[str, tuple[str, ...]] = {}
    subjects: dict[str, str] = {}
    major = rng.randint(1, 9)
    build = 0
    while len(details) < n:
        build += 1
        # most pushes are recent: exponential ages, mean 90 days, capped at two years
        pushed = now - timedelta(days=min(rng.expovariate(1 / 90), 730))
        digest = _digest(rng)
        roll = rng.random()
        if roll < 0.45:
            if rng.random() < 0.05:
                major += 1
            tags = [f"v{major}.{rng.randint(0, 12)}.{rng.randint(0, 30)}"]
            if rng.random() < 0.1:
                tags[0] += f"-rc.{rng.randint(1, 5)}"
        elif roll < 0.65:
            tags = [f"sha-{rng.getrandbits(28):07x}"]
        elif roll < 0.70:
            tags = [f"release-{build}"]
        elif roll < 0.80:
            tags = [f"main-{build}", "latest"] if rng.random() < 0.2 else [f"main-{build}"]
        else:
            tags = []
        media = MANIFEST
        if rng.random() < 0.06:  # a multi-arch index with two untagged platform manifests
            media = INDEX
            kids = (_digest(rng), _digest(rng))
            children[digest] = kids
            for kid in kids:
                details.append(_detail(kid, [], pushed, None, rng.randint(10, 400) << 20, MANIFEST))
        pulled = now - timedelta(seconds=rng.uniform(0, 90 * 86400)) if rng.random() < 0.5 else None
        details.append(_detail(digest, tags, pushed, pulled, rng.randint(10, 400) << 20, media))
        if tags and rng.random() < 0.2:  # cosign signature under the tag schema
            sig = _digest(rng)
            details.append(_detail(sig, [f"sha256-{digest[7:]}.sig"], pushed, None, 700, MANIFEST))
        if rng.random() < 0.02:  # an orphaned OCI referrer (subject deleted long ago)
            ref = _digest(rng)
            subjects[ref] = _digest(rng)
            details.append(_detail(ref, [], pushed, None, 1200, MANIFEST))
    return details, children, subjects


def _detail(
    digest: str,
    tags: list[str],
    pushed: datetime,
    pulled: datetime | None,
    size: int,
    media: str,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "registryId": "123456789012",
        "repositoryName": "",
        "imageDigest": digest,
        "imageSizeInBytes": size,
        "imagePushedAt": pushed,
        "imageManifestMediaType": media,
    }
    if tags:
        out["imageTags"] = tags
    if pulled is not None:
        out["lastRecordedPullTime"] = pulled
    return out


def section_planning(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    rss_start = _maxrss_mib()
    repositories: dict[str, list[ImageRecord]] = {}
    in_use: set[str] = set()
    build_s = 0.0
    listed = 0
    for i in range(args.repositories):
        name = f"team-{i // 50:02d}/service-{i:04d}"
        details, children, subjects = _listing(rng, args.per_repository)
        listed += len(details)
        t0 = time.process_time()
        records = [
            from_ecr_image(
                d,
                children=children.get(d["imageDigest"], ()),
                subject=subjects.get(d["imageDigest"]),
            )
            for d in details
        ]
        build_s += time.process_time() - t0
        repositories[name] = records
        for r in rng.sample(records, 5):  # what the in-use inventory would report
            in_use.add(r.digest)
        del details, children, subjects
    gc.collect()
    rss_built = _maxrss_mib()
    protections = Protections(in_use=frozenset(in_use))

    t0, c0 = time.perf_counter(), time.process_time()
    plan = plan_registry(repositories, RULES, now=NOW, protections=protections)
    plan_s, plan_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    rss_planned = _maxrss_mib()

    gc.collect()  # settle the collection the planner's pause deferred, outside the sample
    sample = list(repositories)[:: max(1, len(repositories) // 50)]
    times = []
    for name in sample:
        t0 = time.perf_counter()
        plan_registry({name: repositories[name]}, RULES, now=NOW, protections=protections)
        times.append(time.perf_counter() - t0)
    times.sort()
    per_repo = {
        "sampled": len(times),
        "median_ms": round(1000 * times[len(times) // 2], 2),
        "max_ms": round(1000 * times[-1], 2),
    }

    out: dict[str, Any] = {
        "repositories": len(repositories),
        "records": listed,
        "record_construction_cpu_s": round(build_s, 3),
        "record_construction_us_per_record": round(1e6 * build_s / listed, 3),
        "planning_s": round(plan_s, 3),
        "planning_cpu_s": round(plan_cpu_s, 3),
        "planning_us_per_record": round(1e6 * plan_s / listed, 3),
        "planning_target_s": 5.0,
        "planning_within_target": plan_s <= 5.0,
        "load_average_1m": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
        "per_repository": per_repo,
        "peak_rss_mib": {
            "start": rss_start,
            "after_construction": rss_built,
            "after_planning": rss_planned,
            "target": 2048,
            "within_target": rss_planned <= 2048,
        },
        "plan": {
            "delete": plan.images_deleted,
            "keep": plan.images_kept,
            "bytes_freed": plan.bytes_freed,
            "repositories_tripped": sum(1 for p in plan.plans if p.tripped),
        },
    }
    if args.tracemalloc:
        del plan
        gc.collect()
        tracemalloc.start()
        t0 = time.perf_counter()
        plan = plan_registry(repositories, RULES, now=NOW, protections=protections)
        traced_s = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        out["tracemalloc"] = {
            "planning_peak_mib": round(peak / (1024 * 1024), 1),
            "planning_s_while_tracing": round(traced_s, 3),
        }
    return out


# -- (b) deleting from a real registry ---------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]


PER_REPOSITORY = 100
"""Images per repository in (b). distribution 2.8's manifest DELETE looks up every tag of
the repository, so its cost grows with the repository; each side gets repositories of the
same size, so the comparison is of like with like."""


def _seed_deletable(client: Any, prefix: str, count: int) -> list[tuple[str, str]]:
    """`count` tagged images in repositories of PER_REPOSITORY, sharing one config and one
    layer (distinct by annotation): blobs go up once per repository, then one manifest PUT
    per image. Returns (repository, digest) pairs."""
    from regwarden.devtools import make_image, push_image

    repos = [f"{prefix}/r{i}" for i in range(max(1, -(-count // PER_REPOSITORY)))]
    first = make_image(layers=1, layer_size=512, seed=3, annotations={"n": "0"})
    for repo in repos:
        push_image(client, repo, first, tag="t0")

    def put(i: int) -> tuple[str, str]:
        repo = repos[i // PER_REPOSITORY]
        if i % PER_REPOSITORY == 0:
            return repo, first.manifest_digest
        image = make_image(layers=1, layer_size=512, seed=3, annotations={"n": str(i)})
        return repo, str(client.put_manifest(repo, f"t{i}", image.manifest, image.media_type))

    with ThreadPoolExecutor(max_workers=16) as pool:
        return list(pool.map(put, range(count)))


def _regwarden_delete(host: str, targets: list[tuple[str, str]], concurrency: int) -> float:
    from regwarden.providers import ProviderOptions
    from regwarden.providers.oci import OciRegistry
    from regwarden.retention import Deletion, RepositoryWork, RunPlan, apply
    from regwarden.store import SqliteLedger

    by_repo: dict[str, list[str]] = {}
    for repo, digest in targets:
        by_repo.setdefault(repo, []).append(digest)
    with tempfile.TemporaryDirectory() as tmp:
        ledger = SqliteLedger(Path(tmp) / "ledger.db")
        registry = OciRegistry(host, ProviderOptions(concurrency=concurrency))
        run = RunPlan(
            run_id="bench",
            registry=host,
            created=NOW,
            work=tuple(
                RepositoryWork(
                    repo,
                    (tuple(digests),),
                    {d: Deletion((), 0, "olderThan", "bench") for d in digests},
                )
                for repo, digests in by_repo.items()
            ),
        )
        t0 = time.perf_counter()
        result = apply(run, registry, ledger, concurrency=concurrency)
        seconds = time.perf_counter() - t0
        registry.close()
        ledger.close()
    if result.status != "done" or result.deleted != len(targets):
        raise SystemExit(f"regwarden apply did not finish: {result.to_dict()}")
    return seconds


def _httpx_delete(host: str, targets: list[tuple[str, str]], concurrency: int) -> float:
    import httpx

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    with httpx.Client(base_url=f"http://{host}", limits=limits, timeout=30.0) as http:

        def delete(target: tuple[str, str]) -> int:
            repo, digest = target
            return http.delete(f"/v2/{repo}/manifests/{digest}").status_code

        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            statuses = list(pool.map(delete, targets))
        seconds = time.perf_counter() - t0
    if any(s != 202 for s in statuses):
        raise SystemExit(f"raw DELETE loop: unexpected statuses {sorted(set(statuses))}")
    return seconds


def _skopeo_delete(host: str, targets: list[tuple[str, str]]) -> float:
    script = "\n".join(
        [
            "set -e",
            "while read -r ref; do",
            f'  skopeo delete --tls-verify=false "docker://{host}/$ref"',
            "done",
        ]
    )
    t0 = time.perf_counter()
    subprocess.run(
        ["bash", "-c", script],
        input="".join(f"{repo}@{digest}\n" for repo, digest in targets),
        text=True,
        check=True,
        capture_output=True,
        timeout=600,
    )
    return time.perf_counter() - t0


def section_registry_deletes(args: argparse.Namespace) -> dict[str, Any]:
    import shutil

    from regwarden.devtools import LocalRegistry
    from regwarden.oci import RegistryClient

    n, conc = args.deletes, args.concurrency
    out: dict[str, Any] = {
        "images": n,
        "images_per_repository": PER_REPOSITORY,
        "concurrency": conc,
        "rounds": args.rounds,
    }
    regwarden_s: list[float] = []
    floor_s: list[float] = []
    with LocalRegistry() as reg, RegistryClient(reg.host) as client:
        for r in range(args.rounds):
            # alternate the order so neither side always meets a fuller registry
            sides = [("floor", _httpx_delete), ("regwarden", _regwarden_delete)]
            if r % 2:
                sides.reverse()
            for name, fn in sides:
                targets = _seed_deletable(client, f"bench/{name}-{r}", n)
                seconds = fn(reg.host, targets, conc)
                (floor_s if name == "floor" else regwarden_s).append(seconds)
        out["regwarden_s"] = [round(x, 3) for x in regwarden_s]
        out["httpx_floor_s"] = [round(x, 3) for x in floor_s]
        best_r, best_f = min(regwarden_s), min(floor_s)
        out["regwarden_per_delete_ms"] = round(1000 * best_r / n, 3)
        out["floor_per_delete_ms"] = round(1000 * best_f / n, 3)
        out["ratio_to_floor"] = round(best_r / best_f, 3)
        out["ratio_target"] = 1.3
        out["within_target"] = best_r / best_f <= 1.3
        if shutil.which("skopeo") is None:
            out["skopeo"] = {"skipped": "skopeo is not installed"}
            return out
        subset = min(args.skopeo_subset, n)
        targets = _seed_deletable(client, "bench/skopeo", subset)
        skopeo_s = _skopeo_delete(reg.host, targets)
        per = skopeo_s / subset
        out["skopeo"] = {
            "measured_images": subset,
            "measured_s": round(skopeo_s, 3),
            "per_delete_ms": round(1000 * per, 3),
            "extrapolated_s_for_all": round(per * n, 3),
            "extrapolated": subset < n,
            "note": "a sequential shell loop, one skopeo process per digest, as a user "
            "would write it; measured on a subset and scaled linearly",
        }
        out["ratio_skopeo_to_regwarden"] = round(per * n / best_r, 1)
    out["load_average_1m"] = round(os.getloadavg()[0], 2)
    return out


# -- (c) ECR API calls ------------------------------------------------------------------------


def section_ecr_calls(args: argparse.Namespace) -> dict[str, Any]:
    import logging
    import math

    sys.path.insert(0, str(ROOT / "tests"))  # moto server + the ECR limits proxy
    from moto.server import ThreadedMotoServer
    from support.moto_server import (
        REGISTRY_HOST,
        EcrLimitsProxy,
        oci_manifest,
        put_manifest,
        watch,
    )

    from regwarden.policy import load_policy_text
    from regwarden.providers import ProviderOptions
    from regwarden.providers.ecr import EcrRegistry
    from regwarden.retention import apply, plan_run
    from regwarden.store import SqliteLedger

    for name, value in (
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ):
        os.environ.setdefault(name, value)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    n = 1000
    older = 699  # v700 … v999 are older: d = 300
    now = datetime.now(UTC)
    policy = load_policy_text(
        "apiVersion: regwarden/v1\nkind: Policy\ndefaults:\n  retention:\n"
        f"    keep: [{{mostRecent: 10}}]\n    delete: [{{olderThan: {older}d}}]\n"
        "    guard: {maxDeletes: 1000, maxShare: 0.5}\n",
        source="bench.yaml",
        base_dir="/tmp",
    )
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    proxy = EcrLimitsProxy(f"http://{host}:{port}").start()
    try:
        import boto3

        ecr = boto3.session.Session().client(
            "ecr", region_name="us-east-1", endpoint_url=f"http://{host}:{port}"
        )
        ecr.create_repository(repositoryName="bench/app")

        def push(i: int) -> None:
            raw, _ = oci_manifest(f"bench-{i}")
            put_manifest(ecr, "bench/app", raw, tag=f"v{i}")

        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(push, range(n)))

        def ages(doc: dict[str, Any]) -> None:
            for detail in doc.get("imageDetails") or []:
                tag = (detail.get("imageTags") or ["v0"])[0]
                detail["imagePushedAt"] = (now - timedelta(days=int(tag[1:]))).timestamp()

        proxy.rewrite["DescribeImages"] = ages
        registry = EcrRegistry(REGISTRY_HOST, ProviderOptions(), endpoint_url=proxy.endpoint_url)
        calls = watch(registry.client)
        with tempfile.TemporaryDirectory() as tmp:
            ledger = SqliteLedger(Path(tmp) / "ledger.db")
            t0 = time.perf_counter()
            run = plan_run(registry, policy, ledger=ledger, now=now, repositories=["bench/app"])
            planned_calls = len(calls.seen)
            result = apply(run, registry, ledger, concurrency=4)
            seconds = time.perf_counter() - t0
            ledger.close()
        registry.close()
    finally:
        proxy.stop()
        server.stop()
    names = [name for name, _ in calls.seen]
    d = result.deleted
    minimum = {"DescribeImages": math.ceil(n / 1000), "BatchDeleteImage": math.ceil(d / 100)}
    by_op = {op: names.count(op) for op in sorted(set(names))}
    return {
        "images": n,
        "planned_deletions": run.deletions,
        "deleted": d,
        "calls": by_op,
        "calls_total": len(names),
        "calls_to_plan": planned_calls,
        "minimum": minimum,
        "minimum_total": sum(minimum.values()),
        "at_minimum": by_op == minimum,
        "batch_sizes": [len(p["imageIds"]) for p in calls.of("BatchDeleteImage")],
        "seconds": round(seconds, 3),
    }


SECTIONS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "planning": section_planning,
    "registry_deletes": section_registry_deletes,
    "ecr_calls": section_ecr_calls,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated")
    parser.add_argument("--repositories", type=int, default=1000)
    parser.add_argument("--per-repository", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--tracemalloc", action="store_true")
    parser.add_argument("--deletes", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--skopeo-subset", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; valid: {', '.join(SECTIONS)}")
    result: dict[str, Any] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    for name in chosen:
        result[name] = SECTIONS[name](args)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
