"""Cold start of the `on_push` Lambda handler against its floor, measured end to end.

    .venv/bin/python bench/cold_start.py [--runs 5]

Product: a fresh interpreter (process start → the first SQS record handled) imports
`functions.aws.on_push` and calls `handler(event, context)` once, with the environment
Lambda gives the function (template variables, task root, X-Ray trace header and daemon
when `template.yaml` turns tracing on). The record is an EventBridge "ECR Image Action"
taken from a real SQS queue; the handler reads its policy from S3 and talks to moto
(DynamoDB, ECR, SNS, SQS) and to a local `docker-registry` as ECR's `/v2/`, so the figure
holds the module import, the first record's deferred imports and every request.

Floor, in the same run: a fresh interpreter that imports boto3, creates one client per AWS
service the product called (read from the SigV4 scope of its requests), the X-Ray
recorder when tracing is on, and sends the product's requests again raw, byte for byte,
to the same servers (the same count: checked). What is left between the two is what the
product adds: Powertools, the core, its imports, its work between requests. Both children
see only the packages a deployed function has (`_cold_layer.py`: the shared layer and the
runtime's boto3); the venv's others (the CLI's rich, click, pygments; moto; pytest) are
hidden, since some libraries import them when present (httpx its command-line client).

A second floor, informational only (`floor_with_libraries`, with its own ratio): the same
floor after importing the third-party libraries the gate cannot work without (pydantic,
httpx, PyYAML, Powertools' Logger, Metrics and idempotency). It shows how much of the
gap is regwarden's own; the target and `ratio` stay against the floor above.

Each of `--runs` rounds resets moto's state and runs the product, the floor and the floor
with libraries (alternating, so a busy machine weighs on all); one round before is
discarded (bytecode and page caches). The breakdown comes from two more product runs: one under `-X
importtime` (imports by top module, split into module import and first record; the
requests as the proxies timed them upstream), one timing the botocore clients the product
creates. Prints JSON; target: product <= 1.5x floor.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # moto server, LocalRegistry helpers, template loader

from _cold_child import MARKER  # noqa: E402
from _cold_layer import hidden  # noqa: E402
from _cold_proxy import Exchange  # noqa: E402
from _cold_runs import Run, replay, summary  # noqa: E402
from _cold_stack import FUNCTION_ARN, FUNCTION_NAME, Stack  # noqa: E402

CHILD = Path(__file__).with_name("_cold_child.py")
HIDDEN = hidden()
"""Installed here, absent from a deployed function: both children fail to import them."""
TARGET_RATIO = 1.5
LIBRARIES = (
    ("pydantic", "BaseModel"),
    ("httpx", "Client"),
    ("yaml", "safe_load"),
    ("aws_lambda_powertools", "Logger"),
    ("aws_lambda_powertools", "Metrics"),
    ("aws_lambda_powertools.utilities.idempotency", "idempotent_function"),
)
"""(module, attribute) the informational second floor imports: the third-party libraries
the gate cannot work without."""
PATH = (
    "on_push, first record: a push whose scan has not finished (PENDING): held by retag, "
    "alert to the SNS topic, recheck to SQS"
)


def spawn(stack: Stack, mode: str, spec: Mapping[str, Any], *, importtime: bool = False) -> Run:
    """Run `_cold_child.py mode` in a fresh interpreter; its requests come from the proxies."""
    env = stack.environment()
    flags = ["-X", "importtime"] if importtime else []
    with tempfile.TemporaryDirectory(prefix="regwarden-cold-") as tmp:
        spec_path, out_path = Path(tmp, "spec.json"), Path(tmp, "marks.json")
        spec_path.write_text(json.dumps({**spec, "hidden": HIDDEN}))
        args = [sys.executable, *flags, str(CHILD), mode, str(spec_path), str(out_path)]
        spawned = time.monotonic()
        done = subprocess.run(
            args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
        )
        if done.returncode != 0:
            raise SystemExit(f"{mode} run failed ({done.returncode}):\n{done.stderr[-4000:]}")
        marks = json.loads(out_path.read_text())
    assert stack.aws is not None and stack.data_plane is not None
    exchanges = sorted([*stack.aws.take(), *stack.data_plane.take()], key=lambda e: e.at)
    return Run(spawned, marks, exchanges, done.stderr)


def services(exchanges: Iterable[Exchange]) -> list[str]:
    return sorted({ex.service for ex in exchanges} - {"registry"})


def by_service(exchanges: Iterable[Exchange]) -> dict[str, dict[str, float]]:
    found: dict[str, dict[str, float]] = {}
    for ex in exchanges:
        entry = found.setdefault(ex.service, {"count": 0, "upstream_ms": 0.0})
        entry["count"] += 1
        entry["upstream_ms"] += ex.upstream_ms
    return {k: {n: round(v, 1) for n, v in e.items()} for k, e in sorted(found.items())}


def round_trio(stack: Stack) -> tuple[Run, Run, Run]:
    """One round: the product on a fresh stack, then the floor and the floor with
    libraries, each on a fresh stack replaying the product's requests."""
    product = spawn(stack, "product", product_spec(stack.prepare()))
    spec: dict[str, Any] = {
        "services": services(product.exchanges),
        "xray": stack.tracing,
        "requests": replay(product.exchanges),
    }
    floors = []
    for libraries in ((), LIBRARIES):
        stack.prepare()
        floor = spawn(stack, "floor", {**spec, "libraries": libraries})
        if len(floor.exchanges) != len(product.exchanges):
            raise SystemExit(
                f"the floor sent {len(floor.exchanges)} requests, the product "
                f"{len(product.exchanges)}: not the same work"
            )
        floors.append(floor)
    return product, floors[0], floors[1]


def importtime(stderr: str) -> dict[str, list[tuple[int, int, int, str]]]:
    """-X importtime rows (self us, cumulative us, depth, module), split at the child's
    marker into the handler's module import and its first record."""
    phases: dict[str, list[tuple[int, int, int, str]]] = {"module_import": [], "first_record": []}
    phase = "module_import"
    for line in stderr.splitlines():
        if line == MARKER:
            phase = "first_record"
            continue
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        own, total, name = line.removeprefix("import time:").split("|")
        depth = (len(name) - len(name.lstrip(" "))) // 2
        phases[phase].append((int(own), int(total), depth, name.strip()))
    return phases


def imports(rows: list[tuple[int, int, int, str]], top: int = 10) -> dict[str, Any]:
    """A phase's imports: their total, the top-level imports that paid most (each with
    everything it pulled in first), and the time spent in each package's own modules."""
    roots = [r for r in rows if r[2] == 0]
    packages: dict[str, int] = {}
    for own, _, _, name in rows:
        packages[name.split(".")[0]] = packages.get(name.split(".")[0], 0) + own
    return {
        "ms": round(sum(r[1] for r in roots) / 1000, 1),
        "top_modules_ms": {
            name: round(total / 1000, 1)
            for _, total, _, name in sorted(roots, key=lambda r: -r[1])[:top]
        },
        "packages_self_ms": {
            name: round(us / 1000, 1)
            for name, us in sorted(packages.items(), key=lambda kv: -kv[1])[:top]
        },
    }


def product_spec(event: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    return {"event": event, "function_name": FUNCTION_NAME, "function_arn": FUNCTION_ARN, **extra}


def breakdown(stack: Stack) -> dict[str, Any]:
    """Two more product runs: one under -X importtime (which itself slows imports a
    little), one timing the botocore clients the product creates."""
    run = spawn(stack, "product", product_spec(stack.prepare()), importtime=True)
    clients = spawn(stack, "product", product_spec(stack.prepare(), count_clients=True)).marks
    phases = importtime(run.stderr)
    module, first = imports(phases["module_import"]), imports(phases["first_record"])
    first_ms = run.ms("imported", "handled")
    requests_ms = sum(ex.upstream_ms for ex in run.exchanges)
    return {
        "note": "one product run under -X importtime; requests timed upstream by the proxies",
        "total_ms": round(run.total_ms, 1),
        "interpreter_start_ms": round(run.ms("spawned", "started"), 1),
        "module_import": {"ms": round(run.ms("started", "imported"), 1), "imports": module},
        "first_record": {
            "ms": round(first_ms, 1),
            "imports": first,
            "requests": {
                "count": len(run.exchanges),
                "upstream_ms": round(requests_ms, 1),
                "by_service": by_service(run.exchanges),
            },
            "rest_ms": round(first_ms - first["ms"] - requests_ms, 1),
        },
        "sdk_clients": {
            "note": "from a third run: botocore clients created and the time it took "
            "(each botocore session parses the service models again)",
            "clients": int(clients["clients"]),
            "sessions": int(clients["sessions"]),
            "ms": round(clients["client_ms"], 1),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="on_push cold start against its floor (JSON)")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs: expected at least 1")
    with Stack() as stack:
        round_trio(stack)  # discarded: bytecode caches, page cache, moto's first requests
        rounds = [round_trio(stack) for _ in range(args.runs)]
        products, floors = [p for p, _, _ in rounds], [f for _, f, _ in rounds]
        product = summary(
            products,
            {
                "interpreter_start": ("spawned", "started"),
                "module_import": ("started", "imported"),
                "first_record": ("imported", "handled"),
            },
        )
        product["by_service"] = by_service(products[-1].exchanges)
        floor_phases = {
            "interpreter_start": ("spawned", "started"),
            "sdk_clients": ("started", "imported"),
            "requests": ("imported", "handled"),
        }
        floor = summary(floors, floor_phases)
        floor["services"] = services(products[-1].exchanges)
        floor["xray_recorder"] = stack.tracing
        floor["answers_unlike_product"] = sum(  # replayed into the same state: expect 0
            a.status != b.status
            for p, f, _ in rounds
            for a, b in zip(p.exchanges, f.exchanges, strict=True)
        )
        with_libraries = summary([f for _, _, f in rounds], floor_phases)
        with_libraries["phases_median_ms"]["libraries_and_sdk_clients"] = with_libraries[
            "phases_median_ms"
        ].pop("sdk_clients")
        with_libraries["libraries"] = [f"{m}.{n}" for m, n in LIBRARIES]
        detail = breakdown(stack)
    ratio = product["median_ms"] / floor["median_ms"]
    ratio_libraries = product["median_ms"] / with_libraries["median_ms"]
    out = {
        "python": sys.version.split()[0],
        "path": PATH,
        "tracing": stack.tracing,
        "runs": args.runs,
        "hidden_packages": len(HIDDEN),
        "floor": floor,
        "product": product,
        "ratio": round(ratio, 2),
        "target_ratio": TARGET_RATIO,
        "meets_target": ratio <= TARGET_RATIO,
        "floor_with_libraries": {
            "note": "informational, not the target: the floor after importing the "
            "third-party libraries the gate cannot work without",
            **with_libraries,
            "ratio": round(ratio_libraries, 2),
        },
        "breakdown": detail,
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
