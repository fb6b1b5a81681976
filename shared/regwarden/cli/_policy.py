"""`regwarden policy validate|schema`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from ._render import print_json


def run_validate(file: Path, *, output: str) -> None:
    from ..policy import validate_file

    problems = validate_file(file)
    if output == "json":
        print_json(
            {
                "file": str(file),
                "valid": not problems,
                "problems": [
                    {"path": p.path, "line": p.line, "message": p.message} for p in problems
                ],
            }
        )
    elif problems:
        for p in problems:
            where = f"{file}:{p.line}" if p.line else str(file)
            print(f"{where}: {p.path}: {p.message}", file=sys.stderr)
        print(f"{file}: {len(problems)} problem(s)", file=sys.stderr)
    else:
        print(f"{file}: valid")
    if problems:
        raise typer.Exit(2)


def run_schema() -> None:
    from ..policy import policy_json_schema

    sys.stdout.write(json.dumps(policy_json_schema(), indent=2) + "\n")
