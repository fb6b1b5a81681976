"""Field docstrings are the policy JSON Schema's descriptions, read when the schema is
asked for rather than when the models are built (pydantic's `use_attribute_docstrings`
parsed every policy module's source on import, on every gate's cold start)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from regwarden.policy import Defaults, Guard, RepositoryEntry, policy_json_schema

ROOT = Path(__file__).resolve().parents[2]


def test_field_docstrings_are_the_schemas_descriptions() -> None:
    defs = policy_json_schema()["$defs"]
    guard = defs["Guard"]["properties"]
    assert guard["maxDeletes"]["description"] == (
        "At most this many deletions; a plan over the limit deletes nothing."
    )
    # over a type's own description (every duration says what a duration is)
    grace = defs["Signatures"]["properties"]["gracePeriod"]
    assert grace["description"].startswith("How long after the push a missing signature")
    assert grace["default"] == "5m"
    # beside a $ref, and on inherited and redeclared fields alike
    quarantine = defs["Defaults"]["properties"]["quarantine"]
    assert set(quarantine) >= {"$ref", "description"}
    assert quarantine["description"].startswith("How failed images are held.")
    assert defs["RepositoryEntry"]["properties"]["team"]["description"] == (
        "The owning team; used to route alerts."
    )
    assert defs["RepositoryEntry"]["properties"]["match"]["description"].startswith(
        "Repository glob (no registry host): `*` one segment"
    )
    assert sum("description" in p for d in defs.values() for p in d.get("properties", {}).values())


def test_building_the_models_reads_no_source() -> None:
    for model, field in ((Guard, "max_deletes"), (Defaults, "team"), (RepositoryEntry, "match")):
        assert model.model_fields[field].description is None, (model, field)
    code = "import ast; ast.parse = None; import regwarden.policy"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
