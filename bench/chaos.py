"""The chaos suite at full size (issue #11, "Done when"): every kill point of a `move` and a
500-image burst, against `regwarden serve` as a subprocess in front of a real registry.

Kill points are regwarden's writes during a move, as the proxy between serve and the
registry sees them (a calibration move without a kill lists them: 4 for an image — two blob
mounts, the manifest put, the source delete; 10 for a two-platform index). Each write is a
kill point twice: held before it is forwarded (it never lands) and after the registry
answered it (it landed, serve never learnt it). One trial per kill point: push, SIGKILL
serve at the point, restart it on the same ledger and port, wait until it is quiet, check.
The edges: serve killed while the tap holds a push's notification (before serve stored it;
after it stored and answered it, the answer kept from the registry, which delivers it
again) and while the alert sink holds the move's alert (before and after taking it in).
The burst pushes N images at once (every other one failing, so half of them are moved) and
kills serve once, at a random write.

Prints one JSON document: per scenario the trials, lost, half-done, wrong, duplicated
verdicts and actions, unattributed verdicts, missing alerts, duplicate alert deliveries
(allowed) and recovery times; `--trials` adds every trial's line. `--product DIR` runs
serve from another `shared/` directory (e.g. `git archive <commit> shared`) for before
and after figures.

    .venv/bin/python bench/chaos.py                      # all kill points + 500-image burst
    .venv/bin/python bench/chaos.py --burst 0 --shapes image --deadline 150
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Literal, cast

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the harness lives with the test support code

from support.chaos import (  # noqa: E402
    ChaosRig,
    KillPoint,
    TrialResult,
    chaos_rig,
    product_from_env,
    summarize,
)

Shape = Literal["image", "index"]


def progress(result: TrialResult) -> None:
    """One line per trial on stderr as it ends (a long run that breaks keeps its figures)."""
    state = "ok" if result.ok else "NOT OK"
    took = f"{result.recovery_s}s" if result.recovery_s is not None else "-"
    print(f"{result.test:12} {result.kill:34} {state:6} recovery {took}", file=sys.stderr)
    print(f"  {result.json_line()}", file=sys.stderr, flush=True)


def move_points(rig: ChaosRig, shape: Shape, deadline: float) -> list[KillPoint]:
    writes = rig.calibrate(shape, deadline=deadline)
    points = []
    for n, write in enumerate(writes, start=1):
        method, path = write.split(" ", 1)
        what = "blob mount" if "/blobs/uploads" in path else "manifest"
        label = f"{method} {what} ({'quarantine' if 'quarantine/' in path else 'source'})"
        points += [KillPoint(n, "before", label=label), KillPoint(n, "after", label=label)]
    return points


def run(args: argparse.Namespace) -> dict[str, Any]:
    product = Path(args.product) if args.product else product_from_env()
    results: dict[str, list[TrialResult]] = {}
    errors: list[str] = []
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="regwarden-chaos-") as tmp,
        chaos_rig(Path(tmp), workers=args.workers, product=product) as rig,
    ):
        for shape in cast(list[Shape], args.shapes):
            try:
                points = move_points(rig, shape, args.deadline)
            except AssertionError as exc:  # no kill points without a clean move: say why
                errors.append(f"move-{shape}: {str(exc)[:2000]}")
                continue
            for point in points[: args.max_points or None]:
                result = rig.move_trial(shape, point, deadline=args.deadline)
                progress(result)
                results.setdefault(f"move-{shape}", []).append(result)
        for when in ("before", "after") if args.edges else ():
            for name, trial in (("delivery", rig.delivery_trial), ("alert", rig.alert_trial)):
                result = trial(KillPoint(1, when, label=name), deadline=args.deadline)
                progress(result)
                results.setdefault(name, []).append(result)
        rng = random.Random(args.seed)
        for _ in range(args.burst_trials if args.burst else 0):
            seed = rng.randrange(1 << 30)
            result = rig.burst_trial(args.burst, seed=seed, deadline=args.burst_deadline)
            progress(result)
            results.setdefault(f"burst-{args.burst}", []).append(result)
    out: dict[str, Any] = {
        "commit": _commit(),
        "product": str(product) if product else "installed",
        "wall_s": round(time.monotonic() - started, 1),
        "scenarios": [summarize(name, rs) for name, rs in results.items()],
        "errors": errors,
    }
    if args.trials:
        out["trials"] = [json.loads(r.json_line()) for rs in results.values() for r in rs]
    return out


def _commit() -> str:
    proc = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    return proc.stdout.strip() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--shapes",
        type=lambda s: [x for x in s.split(",") if x],
        default=["image", "index"],
        help="image,index (empty: no moves)",
    )
    parser.add_argument(
        "--no-edges",
        dest="edges",
        action="store_false",
        help="skip the kill points on the push's notification and on the alert",
    )
    parser.add_argument("--max-points", type=int, default=0, help="first N kill points only")
    parser.add_argument("--burst", type=int, default=500, help="images per burst (0: none)")
    parser.add_argument("--burst-trials", type=int, default=1)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument(
        "--deadline", type=float, default=180.0, help="seconds a restarted serve gets (moves)"
    )
    parser.add_argument("--burst-deadline", type=float, default=600.0)
    parser.add_argument("--product", help="a shared/ directory to run serve from")
    parser.add_argument("--trials", action="store_true", help="include every trial's line")
    print(json.dumps(run(parser.parse_args()), indent=2))


if __name__ == "__main__":
    main()
