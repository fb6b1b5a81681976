#!/usr/bin/env python3
"""Packaging check for the AWS bundle, from `sam build`'s output (`.aws-sam/build/`).

For each function: its code plus the layers it uses, unzipped, without boto3/botocore
(the Lambda runtime provides them). Fails (exit 1) when a function's code + layers exceed
the limit, or when any GCP or Azure SDK (`google.*`, `azure.*`, `grpc`) is in the bundle.
Prints one JSON object:

    .venv/bin/python scripts/package_report.py [--build-dir .aws-sam/build] [--limit-mb 40]

Sizes are file sizes in bytes (what Lambda counts against its unzipped limit); 1 MB here
is 1,000,000 bytes, the stricter reading of the 40 MB budget.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

RUNTIME_PROVIDED = ("boto3", "botocore")
"""Top-level packages not counted: the python3.12 runtime ships them."""
FORBIDDEN = ("google", "azure", "grpc")
"""Top-level packages that must not be in the AWS bundle (GCP and Azure SDKs, gRPC)."""
FORBIDDEN_DISTS = ("google_", "google-", "azure_", "azure-", "grpcio")
MB = 1_000_000


class _CfnLoader(yaml.SafeLoader):
    """Reads CloudFormation YAML: short-form intrinsics (`!Ref X`) become `{"Ref": X}`."""


def _intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {name: value}


_CfnLoader.add_multi_constructor("!", _intrinsic)


def _roots(kind: str, directory: Path) -> list[Path]:
    """Where importable top-level names live: a function's root; a layer's `python/` and
    `python/lib/python3.*/site-packages/`."""
    if kind == "function":
        return [directory]
    roots = [directory / "python"]
    roots += sorted((directory / "python" / "lib").glob("python3*/site-packages"))
    return [r for r in roots if r.is_dir()]


def _files(path: Path) -> Iterator[Path]:
    if path.is_file():
        yield path
        return
    for base, _, names in os.walk(path):
        for name in names:
            yield Path(base, name)


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in _files(path) if not f.is_symlink())


def measure(kind: str, directory: Path) -> dict[str, Any]:
    """Bytes counted, bytes excluded (runtime-provided) and forbidden packages found."""
    total = excluded = 0
    forbidden: list[str] = []
    top: dict[str, int] = {}
    for root in _roots(kind, directory):
        for entry in sorted(root.iterdir()):
            if root == directory / "python" and entry.name == "lib":
                continue  # site-packages: its own root
            name = entry.name
            module = name.split("-")[0].removesuffix(".py")
            size = _size(entry)
            if module in RUNTIME_PROVIDED or name.startswith(
                tuple(f"{p}-" for p in RUNTIME_PROVIDED)
            ):
                excluded += size
                continue
            if module in FORBIDDEN or name.lower().startswith(FORBIDDEN_DISTS):
                forbidden.append(str(entry.relative_to(directory)))
            total += size
            top[name] = top.get(name, 0) + size
    largest = sorted(top.items(), key=lambda kv: -kv[1])[:8]
    return {
        "bytes": total,
        "mb": round(total / MB, 2),
        "excluded_runtime_bytes": excluded,
        "forbidden": forbidden,
        "largest": [{"name": n, "bytes": b} for n, b in largest],
    }


def report(build_dir: Path, limit_mb: float) -> dict[str, Any]:
    template_path = build_dir / "template.yaml"
    if not template_path.is_file():
        raise SystemExit(f"no {template_path}: run `sam build` first")
    template = yaml.load(template_path.read_text(), Loader=_CfnLoader)  # noqa: S506  # SafeLoader subclass
    resources: dict[str, Any] = template.get("Resources") or {}
    global_layers = ((template.get("Globals") or {}).get("Function") or {}).get("Layers") or []
    layers: dict[str, dict[str, Any]] = {}
    for name, res in resources.items():
        if res.get("Type") == "AWS::Serverless::LayerVersion":
            layers[name] = measure("layer", build_dir / str(res["Properties"]["ContentUri"]))
    functions: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    for name, res in resources.items():
        if res.get("Type") != "AWS::Serverless::Function":
            continue
        props = res.get("Properties") or {}
        code = measure("function", build_dir / str(props["CodeUri"]))
        # SAM puts the global layers first and appends a function's own
        uses = list(
            dict.fromkeys(
                ref["Ref"]
                for ref in [*global_layers, *(props.get("Layers") or [])]
                if isinstance(ref, dict) and ref.get("Ref") in layers
            )
        )
        total = code["bytes"] + sum(layers[layer]["bytes"] for layer in uses)
        # a function may state its own budget (Metadata BundleLimitMb: the report's
        # plotting stack, once a day); every other function has the --limit-mb one
        limit = float((res.get("Metadata") or {}).get("BundleLimitMb") or limit_mb)
        functions[name] = {
            "code": code,
            "layers": uses,
            "total_bytes": total,
            "total_mb": round(total / MB, 2),
            "limit_mb": limit,
        }
        if total > limit * MB:
            problems.append(f"{name}: code + layers {total / MB:.2f} MB > {limit} MB")
    for name, found in [*functions.items(), *layers.items()]:
        forbidden = found.get("forbidden") or found.get("code", {}).get("forbidden") or []
        if forbidden:
            problems.append(f"{name}: GCP/Azure SDK in the AWS bundle: {', '.join(forbidden)}")
    unique = sum(f["code"]["bytes"] for f in functions.values())
    unique += sum(layer["bytes"] for layer in layers.values())
    return {
        "build_dir": str(build_dir),
        "limit_mb": limit_mb,
        "excluded": list(RUNTIME_PROVIDED),
        "functions": functions,
        "layers": layers,
        "largest_function_total_mb": max((f["total_mb"] for f in functions.values()), default=0),
        "all_code_and_layers_mb": round(unique / MB, 2),
        "ok": not problems,
        "problems": problems,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--build-dir", type=Path, default=Path(".aws-sam/build"))
    parser.add_argument("--limit-mb", type=float, default=40.0)
    args = parser.parse_args(argv)
    result = report(args.build_dir, args.limit_mb)
    print(json.dumps(result, indent=2))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
