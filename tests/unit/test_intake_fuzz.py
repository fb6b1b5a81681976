"""Fuzzing: whatever arrives, intake returns events or raises IntakeError, nothing else."""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.fuzz import json_documents

from regwarden.errors import IntakeError
from regwarden.intake import (
    IntakeBatch,
    IntakeResult,
    manifest_subject,
    parse_distribution,
    parse_distribution_batch,
    parse_harbor,
    parse_harbor_results,
)
from regwarden.model import ImageEvent

EVENTS = Path(__file__).resolve().parents[2] / "events"
DISTRIBUTION_SAMPLES = sorted((EVENTS / "oci").glob("distribution-*.json"))
HARBOR_SAMPLES = sorted((EVENTS / "harbor").glob("*.json"))
DIGEST = "sha256:" + "ab" * 32

KEYS = [
    "events", "id", "timestamp", "action", "target", "mediaType", "digest", "repository",
    "tag", "url", "request", "host", "useragent", "actor", "name", "type", "occur_at",
    "operator", "event_data", "resources", "resource_url", "scan_overview", "specversion",
    "data", "time", "repo_full_name", "namespace", "summary", "scan_status", "total",
    "fixable", "application/vnd.security.vulnerability.report; version=1.1", "subject",
]  # fmt: skip
PLAUSIBLE = [
    "push", "pull", "delete", "mount", DIGEST, "sha256-" + "ab" * 32 + ".sig", "1.0",
    "PUSH_ARTIFACT", "SCANNING_COMPLETED", "SCANNING_FAILED", "harbor.artifact.pushed",
    "2024-01-01T00:00:00Z", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00",
    "payments/api", "registry.example.com:5000", "h/payments/api", "Success", "Error",
    "application/vnd.oci.image.manifest.v1+json", "Critical", "", "latest",
]  # fmt: skip

json_values = json_documents(KEYS, PLAUSIBLE)
content_types = st.sampled_from(
    [None, "application/json", "application/vnd.docker.distribution.events.v1+json"]
)
# REGWARDEN_FUZZ_EXAMPLES raises the budget for a deeper local run.
FUZZ = settings(
    max_examples=int(os.environ.get("REGWARDEN_FUZZ_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for key, value in doc.items():
            out.extend(paths(value, (*prefix, key)))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            out.extend(paths(value, (*prefix, i)))
    return out


@st.composite
def mutated(draw: st.DrawFn, samples: list[Path]) -> bytes:
    """A real sample with a few random edits: replace a value, drop a key, add one."""
    doc = json.loads(draw(st.sampled_from(samples)).read_text())
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        path = draw(st.sampled_from(paths(doc)))
        if not path:
            continue
        parent = doc
        for step in path[:-1]:
            parent = parent[step]
        op = draw(st.sampled_from(["replace", "delete", "add"]))
        if op == "replace":
            parent[path[-1]] = draw(json_values)
        elif op == "delete" and isinstance(parent, dict):
            del parent[path[-1]]
        elif op == "add" and isinstance(parent, dict):
            parent[draw(st.sampled_from(KEYS))] = draw(json_values)
        elif isinstance(parent, list):
            parent.append(copy.deepcopy(parent[path[-1]]))
    return json.dumps(doc).encode()


def outcome(parse: Callable[..., object], raw: bytes, **kw: Any) -> object:
    """What `parse` returned, or the IntakeError it raised (anything else propagates)."""
    try:
        return parse(raw, **kw)
    except IntakeError as exc:
        return exc


def only_events_or_intake_error(parse: Callable[..., object], raw: bytes, **kw: Any) -> None:
    out = outcome(parse, raw, **kw)
    if isinstance(out, IntakeError):
        assert str(out)  # a message a human can act on
        return
    if isinstance(out, IntakeBatch):
        assert all(isinstance(e, ImageEvent) for e in out.events)
        assert all(isinstance(e, IntakeError) for e in out.errors)
    else:
        assert isinstance(out, list)
        assert all(isinstance(e, ImageEvent | IntakeResult) for e in out)


@FUZZ
@given(raw=st.binary(max_size=300), content_type=content_types)
def test_random_bytes(raw: bytes, content_type: str | None) -> None:
    for parse in (parse_distribution, parse_distribution_batch, parse_harbor):
        only_events_or_intake_error(parse, raw, content_type=content_type)
    subject = outcome(manifest_subject, raw)
    assert subject is None or isinstance(subject, str | IntakeError)


@FUZZ
@given(value=json_values)
def test_random_json(value: Any) -> None:
    raw = json.dumps(value).encode()
    for parse in (parse_distribution, parse_distribution_batch, parse_harbor_results):
        only_events_or_intake_error(parse, raw, content_type=None)
    wrapped = json.dumps({"events": [value]}).encode()
    only_events_or_intake_error(parse_distribution_batch, wrapped, content_type=None)


@FUZZ
@given(raw=mutated(DISTRIBUTION_SAMPLES), registry=st.none() | st.text(max_size=12))
def test_mutated_distribution_samples(raw: bytes, registry: str | None) -> None:
    only_events_or_intake_error(parse_distribution, raw, content_type=None, registry=registry)
    only_events_or_intake_error(parse_distribution_batch, raw, content_type=None, registry=registry)


@FUZZ
@given(raw=mutated(HARBOR_SAMPLES), registry=st.none() | st.sampled_from(["h:1", "a b"]))
def test_mutated_harbor_samples(raw: bytes, registry: str | None) -> None:
    only_events_or_intake_error(parse_harbor_results, raw, content_type=None, registry=registry)


def test_samples_parse_unmutated() -> None:
    """The fuzz seeds themselves are valid (so mutations start from real shapes)."""
    for path in DISTRIBUTION_SAMPLES:
        assert parse_distribution_batch(path.read_bytes(), content_type=None).errors == ()
    for path in HARBOR_SAMPLES:
        assert parse_harbor(path.read_bytes(), content_type=None)
