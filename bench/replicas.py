"""Replicas of `regwarden serve` on one PostgreSQL database (issue #19, "Done when"): N
pushes through 3 replicas with one SIGKILLed mid-burst, and the same N through 1 replica,
each behind a real registry's notifications (which go to replica 0 only; the others take
work from the shared queue). Every image is judged afterwards against the registry and the
ledger: lost and duplicated verdicts, duplicated quarantine actions, wrong places,
half-done moves.

Prints one JSON document: per run the replicas, images, seconds from the first push until
the queue drained, pushes per second, the counts above, the events the killed replica held
and how many the others took over, verdicts per replica; and the throughput ratio of 3
replicas to 1. The pushes are the same shape as the test's (every other image unsigned in a
gated repository, moved to quarantine; the rest pass). The PostgreSQL cluster is a
throwaway one (`tests/support/postgres.py`); the registry is the real `docker-registry`.

    .venv/bin/python bench/replicas.py                        # 1,000 pushes
    REPLICAS_BENCH_PUSHES=100 .venv/bin/python bench/replicas.py --workers 4
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the harness lives with the test support code

from support.postgres import PostgresServer  # noqa: E402
from support.replicas import BurstResult, ReplicaRig  # noqa: E402

PUSHES_ENV = "REPLICAS_BENCH_PUSHES"


def one_run(
    pg: PostgresServer,
    *,
    replicas: int,
    pushes: int,
    workers: int,
    pushers: int,
    kill: bool,
    timeout: float,
) -> BurstResult:
    # killed once it has done its share of the first tenth: mid-burst, not at the start
    kill_after = max(2, pushes // (10 * replicas))
    url = pg.fresh_database()
    with (
        tempfile.TemporaryDirectory(prefix="regwarden-replicas-") as tmp,
        ReplicaRig(Path(tmp), url, count=replicas, workers=workers, lease_timeout=3.0) as rig,
    ):
        expects = rig.images(pushes, seed=replicas)
        result = rig.run(
            expects,
            kill=1 if kill and replicas > 1 else None,
            kill_after=kill_after,
            timeout=timeout,
            pushers=pushers,
        )
        print(f"{replicas} replica(s): {json.dumps(result.as_dict())}", file=sys.stderr)
        return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--pushes", type=int, default=int(os.environ.get(PUSHES_ENV, "1000")), help="images"
    )
    parser.add_argument("--workers", type=int, default=4, help="workers per replica")
    parser.add_argument("--pushers", type=int, default=8, help="concurrent pushes")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds to drain")
    args = parser.parse_args(argv)
    runs: dict[str, Any] = {}
    with PostgresServer() as pg:
        for count, kill in ((3, True), (1, False)):
            result = one_run(
                pg,
                replicas=count,
                pushes=args.pushes,
                workers=args.workers,
                pushers=args.pushers,
                kill=kill,
                timeout=args.timeout,
            )
            runs[f"replicas_{count}"] = result.as_dict() | {"exact": result.exact}
    three, one = runs["replicas_3"], runs["replicas_1"]
    doc = {
        "pushes": args.pushes,
        "workers_per_replica": args.workers,
        "pushers": args.pushers,
        "runs": runs,
        "throughput_ratio_3_to_1": round(
            three["pushes_per_second"] / max(one["pushes_per_second"], 1e-9), 2
        ),
        "lost": three["lost"] + one["lost"],
        "duplicated": three["duplicated_verdicts"]
        + three["duplicated_actions"]
        + one["duplicated_verdicts"]
        + one["duplicated_actions"],
    }
    print(json.dumps(doc, indent=2))
    return 0 if three["exact"] and one["exact"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
