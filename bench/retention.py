"""Retention benchmarks. Prints one JSON object with one key per section.

Sections:
  planning   (a) build 1,000,000 records from ECR DescribeImages-shaped listings across
             1,000 repositories, then plan them all; time and peak memory of each phase.
             Targets: planning <= 5 s, whole run <= 2 GB peak RSS.

Usage: .venv/bin/python bench/retention.py [--sections planning] [--repositories 1000]
           [--per-repository 1000] [--seed 7] [--tracemalloc]

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
import sys
import time
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
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


SECTIONS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "planning": section_planning,
    # "registry_deletes": (b), added later
    # "ecr_calls": (c), added later
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated")
    parser.add_argument("--repositories", type=int, default=1000)
    parser.add_argument("--per-repository", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--tracemalloc", action="store_true")
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
