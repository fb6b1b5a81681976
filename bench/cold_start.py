"""Cold-start figures of the AWS handlers, printed as JSON.

    .venv/bin/python bench/cold_start.py [--runs 10]

For each handler module and for `import boto3` alone (same run, same interpreter): the
median over fresh interpreters of `python -X importtime -c "import MODULE"` (the module's
cumulative import time, interpreter start-up excluded), its top offenders, and the ratio
to boto3 (target: <= 1.3). Then what the first invocation imports on top (the core, the
idempotency layer, the X-Ray SDK when tracing is on), since the handlers defer it, and the
package sizes from the packaging check when `.aws-sam/build` exists (target: code + layer
<= 40 MB unzipped, without boto3/botocore).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HANDLERS = ("functions.aws.on_push", "functions.aws.on_scan", "functions.aws.notify")
FIRST_CALL = (
    "regwarden.pipeline",
    "regwarden.runtime",
    "regwarden.intake.eventbridge",
    "regwarden.providers.ecr",
    "regwarden.store",
    "aws_lambda_powertools.utilities.idempotency",
    "aws_xray_sdk.core",
)
"""Imported on the first record of a cold start (`_app.state()`, `LazyTracer`)."""
TARGET_RATIO = 1.3


def _importtime(code: str) -> list[tuple[int, int, int, str]]:
    """(self us, cumulative us, depth, module) for each line of -X importtime."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POWERTOOLS_", "AWS_"))}
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    rows = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        own, total, name = line.removeprefix("import time:").split("|")
        depth = (len(name) - len(name.lstrip(" "))) // 2
        rows.append((int(own), int(total), depth, name.strip()))
    return rows


def measure(module: str, runs: int) -> dict[str, Any]:
    totals: list[int] = []
    samples: list[list[tuple[int, int, int, str]]] = []
    for _ in range(runs):
        rows = _importtime(f"import {module}")
        top = [r for r in rows if r[3] == module and r[2] == 0]
        if not top:
            raise SystemExit(f"{module}: not in -X importtime output")
        totals.append(top[-1][1])
        samples.append(rows)
    median = statistics.median(totals)
    typical = samples[min(range(runs), key=lambda i: abs(totals[i] - median))]
    packages: dict[str, int] = {}
    for own, _, _, name in typical:
        root = name.split(".")[0]
        packages[root] = packages.get(root, 0) + own
    return {
        "median_ms": round(median / 1000, 1),
        "min_ms": round(min(totals) / 1000, 1),
        "max_ms": round(max(totals) / 1000, 1),
        "runs": runs,
        "top_packages_ms": {
            name: round(us / 1000, 1)
            for name, us in sorted(packages.items(), key=lambda kv: -kv[1])[:8]
        },
        "top_modules_self_ms": [
            {"module": name, "self_ms": round(own / 1000, 1), "cumulative_ms": round(cum / 1000, 1)}
            for own, cum, _, name in sorted(typical, key=lambda r: -r[0])[:8]
        ],
    }


def first_call(runs: int) -> dict[str, Any]:
    """What the first invocation imports after the handler module (median ms)."""
    code = f"import {HANDLERS[0]}; " + "; ".join(f"import {m}" for m in FIRST_CALL)
    totals: list[int] = []
    per: dict[str, list[int]] = {m: [] for m in FIRST_CALL}
    for _ in range(runs):
        rows = _importtime(code)
        seen = 0
        for m in FIRST_CALL:
            found = [r[1] for r in rows if r[3] == m and r[2] == 0]
            value = found[-1] if found else 0  # 0: already imported by an earlier one
            per[m].append(value)
            seen += value
        totals.append(seen)
    return {
        "median_ms": round(statistics.median(totals) / 1000, 1),
        "modules_ms": {m: round(statistics.median(v) / 1000, 1) for m, v in per.items()},
        "note": "paid once per cold start, on the first record; aws_xray_sdk.core only "
        "with tracing on (it creates botocore clients for sampling)",
    }


def package_sizes() -> dict[str, Any] | None:
    build = ROOT / ".aws-sam" / "build"
    if not (build / "template.yaml").is_file():
        return None
    sys.path.insert(0, str(ROOT / "scripts"))
    from package_report import report

    result = report(build, 40.0)
    return {
        "ok": result["ok"],
        "limit_mb": result["limit_mb"],
        "largest_function_total_mb": result["largest_function_total_mb"],
        "functions_mb": {
            name: {"code": f["code"]["mb"], "total": f["total_mb"]}
            for name, f in result["functions"].items()
        },
        "layers_mb": {name: layer["mb"] for name, layer in result["layers"].items()},
        "problems": result["problems"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="AWS handler cold-start figures (JSON)")
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    boto3 = measure("boto3", args.runs)
    handlers = {m: measure(m, args.runs) for m in HANDLERS}
    for figures in handlers.values():
        ratio = figures["median_ms"] / boto3["median_ms"]
        figures["ratio_to_boto3"] = round(ratio, 2)
        figures["meets_target"] = ratio <= TARGET_RATIO
    out = {
        "python": sys.version.split()[0],
        "target_ratio_to_boto3": TARGET_RATIO,
        "boto3": boto3,
        "handlers": handlers,
        "first_invocation_imports": first_call(args.runs),
        "package_sizes": package_sizes(),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
