"""Fuzzing: every scan parser returns a ScanReport (or overview) or raises ScanFormatError."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.fuzz import json_documents
from test_scanning_parsers import (
    grype_doc,
    harbor_report,
    overview,
    predicate,
    statement,
    trivy_doc,
)

from regwarden.model import ScanReport
from regwarden.scanning import (
    HarborScanOverview,
    ScanFormatError,
    parse_cosign_vuln,
    parse_grype,
    parse_harbor_overview,
    parse_harbor_report,
    parse_report,
    parse_trivy,
)

DIGEST = "sha256:" + "cd" * 32
KEYS = [
    "SchemaVersion", "Results", "Vulnerabilities", "Severity", "VulnerabilityID", "PkgName",
    "InstalledVersion", "FixedVersion", "CVSS", "nvd", "V3Score", "Metadata", "RepoDigests",
    "ImageID", "CreatedAt", "matches", "vulnerability", "artifact", "fix", "versions", "state",
    "cvss", "metrics", "baseScore", "source", "target", "manifestDigest", "descriptor",
    "vulnerabilities", "generated_at", "severity", "fix_version", "preferred_cvss", "score_v3",
    "predicateType", "predicate", "subject", "digest", "sha256", "scanner", "scanners",
    "result", "metadata", "scanFinishedOn", "scan_status", "summary", "total",
]  # fmt: skip
PLAUSIBLE = [
    2, "CRITICAL", "High", "fixed", DIGEST, "a@" + DIGEST, "2024-01-01T00:00:00Z", 10.0, 11,
    "https://cosign.sigstore.dev/attestation/vuln/v1", "Success", "Error", "cd" * 32, "",
]  # fmt: skip

json_values = json_documents(KEYS, PLAUSIBLE)
FUZZ = settings(
    max_examples=int(os.environ.get("REGWARDEN_FUZZ_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
SEEDS: list[Callable[[], Any]] = [
    trivy_doc,
    grype_doc,
    harbor_report,
    overview,
    predicate,
    lambda: statement([DIGEST]),
]
PARSERS: list[Callable[..., object]] = [
    parse_trivy,
    parse_grype,
    parse_harbor_report,
    parse_cosign_vuln,
    parse_report,
]


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
def mutated(draw: st.DrawFn) -> bytes:
    doc = draw(st.sampled_from(SEEDS))()
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        path = draw(st.sampled_from(paths(doc)))
        if not path:
            continue
        parent = doc
        for step in path[:-1]:
            parent = parent[step]
        if draw(st.booleans()) or not isinstance(parent, dict):
            parent[path[-1]] = draw(json_values)
        else:
            del parent[path[-1]]
    return json.dumps(doc).encode()


def only_reports_or_format_error(raw: bytes, digest: str | None) -> None:
    for parse in PARSERS:
        out = outcome(parse, raw, digest=digest)
        assert isinstance(out, ScanReport | ScanFormatError)
        assert str(out)
    result = outcome(parse_harbor_overview, raw, digest=DIGEST)
    assert result is None or isinstance(result, HarborScanOverview | ScanFormatError)


def outcome(parse: Callable[..., object], raw: bytes, **kw: Any) -> object:
    """What `parse` returned, or the ScanFormatError it raised (anything else propagates)."""
    try:
        return parse(raw, **kw)
    except ScanFormatError as exc:
        return exc


@FUZZ
@given(raw=st.binary(max_size=300), digest=st.none() | st.just(DIGEST) | st.text(max_size=5))
def test_random_bytes(raw: bytes, digest: str | None) -> None:
    only_reports_or_format_error(raw, digest)


@FUZZ
@given(value=json_values, digest=st.none() | st.just(DIGEST))
def test_random_json(value: Any, digest: str | None) -> None:
    only_reports_or_format_error(json.dumps(value).encode(), digest)


@FUZZ
@given(raw=mutated(), digest=st.none() | st.just(DIGEST))
def test_mutated_reports(raw: bytes, digest: str | None) -> None:
    only_reports_or_format_error(raw, digest)
