"""cosign vulnerability attestations (`https://cosign.sigstore.dev/attestation/vuln/v1`)."""

from __future__ import annotations

from datetime import datetime

from ..errors import InvalidReference
from ..jsondoc import Node, load_json
from ..model import ScanReport
from ..reference import validate_digest
from ._common import checked_digest
from ._errors import ScanFormatError
from ._grype import grype_report
from ._trivy import trivy_report

LABEL = "cosign vuln attestation"

#: Accepted predicate types: current cosign, and older cosign without the scheme.
PREDICATE_TYPES = (
    "https://cosign.sigstore.dev/attestation/vuln/v1",
    "cosign.sigstore.dev/attestation/vuln/v1",
)
STATEMENT_TYPES = ("https://in-toto.io/Statement/v0.1", "https://in-toto.io/Statement/v1")


def parse_cosign_vuln(statement_or_predicate: bytes, *, digest: str | None = None) -> ScanReport:
    """Normalise a cosign vuln attestation into a ScanReport.

    Accepts the in-toto statement (already verified and decoded from its DSSE envelope;
    an envelope itself is refused, since reading it unverified would trust unsigned data)
    or the bare predicate. With a statement, the digest comes from `subject`; if `digest`
    is given it must be one of the subject digests (an attestation about another image is
    an error, not a report). A bare predicate names no image, so `digest` is required.

    The embedded result (`scanner.result`, or each of the spec's `scanners[].result`) must
    be a Trivy (SchemaVersion 2) or Grype report; a missing result is an error, never an
    empty report. `scanned_at` is `metadata.scanFinishedOn`, else the report's own time.
    """
    root = load_json(statement_or_predicate, label=LABEL, error=ScanFormatError)
    root.mapping()
    if root.has("payloadType") and root.has("payload"):
        raise root.error(
            "got a DSSE envelope, expected its verified in-toto statement or the predicate "
            "(verify the envelope's signature first, then pass the decoded payload)"
        )
    if root.has("predicateType") or root.has("_type"):
        predicate, image_digest = _statement(root, digest)
    elif root.has("scanner") or root.has("scanners"):
        if digest is None:
            raise root.error("a bare predicate names no image; pass digest=")
        predicate, image_digest = root, checked_digest(digest, what="digest argument")
    else:
        root.fail(
            "an in-toto statement (with 'predicateType') or a cosign vuln predicate "
            "(with 'scanner')",
            got="an object with neither",
        )
    return _predicate(predicate, image_digest)


def _statement(root: Node, digest: str | None) -> tuple[Node, str]:
    kind = root.field("_type")
    if kind.present and kind.text() not in STATEMENT_TYPES:
        kind.fail("one of " + ", ".join(STATEMENT_TYPES))
    ptype = root.field("predicateType")
    if ptype.text() not in PREDICATE_TYPES:
        ptype.fail("one of " + ", ".join(PREDICATE_TYPES))
    subjects = root.field("subject")
    found: list[str] = []
    for subject in subjects.array():
        digests = subject.field("digest")
        for algorithm, value in digests.items():
            if algorithm not in ("sha256", "sha384", "sha512"):
                continue  # other digest kinds (e.g. gitCommit) cannot name an image
            text = f"{algorithm}:{value.text()}"
            try:
                validate_digest(text)
            except InvalidReference:
                value.fail("lowercase hex of the right length for " + algorithm)
            if text not in found:
                found.append(text)
    if digest is not None:
        wanted = checked_digest(digest, what="digest argument")
        if wanted not in found:
            subjects.fail(f"a subject with digest {wanted}", got=", ".join(found) or "none")
        image_digest = wanted
    elif len(found) == 1:
        image_digest = found[0]
    else:
        subjects.fail("exactly one image digest; pass digest= to choose", got=str(len(found)))
    return root.field("predicate"), image_digest


def _predicate(predicate: Node, digest: str) -> ScanReport:
    predicate.mapping()
    if predicate.has("scanner"):
        scanners = [predicate.field("scanner")]
    else:
        scanners = predicate.field("scanners").array()
        if not scanners:
            predicate.field("scanners").fail("at least one scanner")
    finished: datetime | None = None
    metadata = predicate.field("metadata")
    if metadata.present:
        finished = metadata.field("scanFinishedOn").opt_timestamp()
    reports = [_scanner(node, digest, finished) for node in scanners]
    first = reports[0]
    return ScanReport(
        digest=digest,
        scanner=" + ".join(r.scanner for r in reports),
        source="cosign-vuln",
        scanned_at=first.scanned_at,
        findings=tuple(f for r in reports for f in r.findings),
    )


def _scanner(node: Node, digest: str, finished: datetime | None) -> ScanReport:
    node.mapping()
    uri = node.field("uri").opt_text() or ""
    version = node.field("version").opt_text()
    result = node.field("result")
    if not result.present:
        result.fail("the scanner's report (an empty result is not a clean scan)")
    name = _tool_name(uri)
    label = f"{name} {version}" if version else name
    result.mapping()
    if result.has("SchemaVersion"):
        return trivy_report(
            result, digest=digest, source="cosign-vuln", scanned_at=finished, scanner=label
        )
    if result.has("matches"):
        report = grype_report(result, digest=digest, source="cosign-vuln", scanned_at=finished)
        return report.model_copy(update={"scanner": label})
    result.fail("a Trivy (SchemaVersion 2) or Grype report", got="an object that is neither")


def _tool_name(uri: str) -> str:
    """`pkg:github/aquasecurity/trivy@v0.30.1` → `trivy`; '' → 'unknown'."""
    if not uri:
        return "unknown"
    path = uri.split("@", 1)[0]
    return path.rstrip("/").rsplit("/", 1)[-1] or "unknown"
