"""What the cold-start benches (`cold_start.py` for AWS, `cold_start_gcp.py` for GCP,
`cold_start_azure.py` for Azure) do with their children's runs: one run's marks and
requests, the requests as the floor replays them, the medians they print, and the
imports of a `-X importtime` run."""

from __future__ import annotations

import random
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from _cold_proxy import Exchange

__all__ = ["Run", "importtime_ms", "ratio_interval", "replay", "summary"]


@dataclass(frozen=True)
class Run:
    """One child: its marks (seconds, monotonic), when it was spawned, its requests."""

    spawned: float
    marks: Mapping[str, float]
    exchanges: list[Exchange]
    stderr: str

    def ms(self, start: str, end: str) -> float:
        begin = self.spawned if start == "spawned" else self.marks[start]
        return (self.marks[end] - begin) * 1000

    @property
    def total_ms(self) -> float:
        return self.ms("spawned", "handled")


def replay(exchanges: Iterable[Exchange]) -> list[dict[str, Any]]:
    """The product's requests as the floor sends them (its body's length recomputed: a
    chunked upload is sent with a Content-Length)."""
    out = []
    for ex in exchanges:
        headers = [[k, v] for k, v in ex.headers if k.lower() != "content-length"]
        if ex.body or ex.method in ("POST", "PUT", "PATCH"):
            headers.append(["Content-Length", str(len(ex.body))])
        out.append(
            {
                "host": ex.server,
                "method": ex.method,
                "target": ex.target,
                "headers": headers,
                "body": ex.body.decode("latin-1"),
            }
        )
    return out


def ratio_interval(
    pairs: list[tuple[float, float]], *, level: float = 0.95, resamples: int = 2000
) -> tuple[float, float]:
    """A bootstrap interval of the ratio of medians (product median / floor median) over
    (product, floor) pairs, resampled as pairs: each run and the floor run after it met the
    same machine load. Seeded, so one set of runs always gives one interval. On a shared
    machine a single median ratio moves by several hundredths; this says how far."""
    if not pairs:
        raise ValueError("no runs")
    rng = random.Random(0)
    ratios = sorted(
        statistics.median(p for p, _ in sample) / statistics.median(f for _, f in sample)
        for sample in (rng.choices(pairs, k=len(pairs)) for _ in range(resamples))
    )
    tail = (1 - level) / 2
    return ratios[int(tail * resamples)], ratios[min(resamples - 1, int((1 - tail) * resamples))]


def summary(runs: list[Run], phases: Mapping[str, tuple[str, str]]) -> dict[str, Any]:
    """Median, min and max of the runs' totals, each phase's median, and their requests."""
    totals = [r.total_ms for r in runs]
    return {
        "median_ms": round(statistics.median(totals), 1),
        "min_ms": round(min(totals), 1),
        "max_ms": round(max(totals), 1),
        "phases_median_ms": {
            name: round(statistics.median(r.ms(*span) for r in runs), 1)
            for name, span in phases.items()
        },
        "requests": len(runs[0].exchanges),
        "requests_upstream_median_ms": round(
            statistics.median(sum(ex.upstream_ms for ex in r.exchanges) for r in runs), 1
        ),
    }


def importtime_ms(stderr: str, marker: str = "cold-bench: first-delivery") -> dict[str, Any]:
    """Top-level imports by cumulative time (ms), before and after the handler's first
    delivery started, from a `-X importtime` run."""
    phases: dict[str, list[tuple[int, str]]] = {"module_import": [], "first_delivery": []}
    phase = "module_import"
    for line in stderr.splitlines():
        if line.strip() == marker:
            phase = "first_delivery"
            continue
        if not line.startswith("import time:") or line.count("|") != 2:
            continue
        _, total, name = line.split(":", 1)[1].split("|")
        if not total.strip().isdigit():
            continue  # the header line
        depth = (len(name) - len(name.lstrip()) - 1) // 2
        if depth == 0:
            phases[phase].append((int(total), name.strip()))
    return {
        phase: {
            "ms": round(sum(t for t, _ in rows) / 1000, 1),
            "top_ms": {n: round(t / 1000, 1) for t, n in sorted(rows, reverse=True)[:8]},
        }
        for phase, rows in phases.items()
    }
