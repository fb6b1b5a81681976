"""Each check is a pure function of facts, rules and `now`, returning one CheckResult
whose reason a person can act on."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta

from ..model import CheckOutcome, CheckResult, Finding, ScanReport, Severity
from ..policy import SCAN_SOURCES
from ..reference import short_digest
from ._facts import Facts
from ._rules import (
    AllowEntry,
    HygieneRules,
    ProvenanceRules,
    SignatureRules,
    TagRules,
    VulnerabilityRules,
)

BASE_NAME_LABEL = "org.opencontainers.image.base.name"


def _result(name: str, outcome: CheckOutcome, reason: str, **details: object) -> CheckResult:
    return CheckResult(name=name, outcome=outcome, reason=reason, details=details)


#: `Facts.unavailable` entries name their piece of evidence before the first colon: a scan
#: source (several joined by `+`, e.g. `ecr+inspector`), `provenance`, or `evidence` when
#: nothing could be gathered at all.
_SCAN_EVIDENCE = frozenset(SCAN_SOURCES)
_PROVENANCE_EVIDENCE = frozenset({"provenance"})


def _missing(facts: Facts, names: frozenset[str]) -> list[str]:
    """The `unavailable` entries a check depends on: judging without them would build a
    FAIL or PENDING on evidence that exists but could not be read."""
    out: list[str] = []
    for entry in facts.unavailable:
        source = entry.split(":", 1)[0].strip()
        if source == "evidence" or set(source.split("+")) & names:
            out.append(entry)
    return out


def _ago(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


# -- signatures ---------------------------------------------------------------------------


def check_signatures(facts: Facts, rules: SignatureRules, now: datetime) -> CheckResult:
    name = "signatures"
    if not rules.required:
        return _result(name, CheckOutcome.SKIP, "signatures not required")
    if facts.signature_error:
        return _result(
            name, CheckOutcome.ERROR, f"could not look up signatures: {facts.signature_error}"
        )
    good = [s for s in facts.signatures if s.verified]
    signers = {s.signer or s.digest for s in good}
    missing: list[str] = []
    if rules.require == "all" and facts.signatures_unmet:
        missing.append("no valid signature from " + ", ".join(facts.signatures_unmet))
    if good and len(signers) < rules.threshold:
        missing.append(f"{len(signers)} distinct signer(s), {rules.threshold} required")
    if good and missing:
        deadline = facts.pushed_at + rules.grace_period
        outcome = CheckOutcome.PENDING if now < deadline else CheckOutcome.FAIL
        return _result(
            name, outcome, "; ".join(missing), verified=len(good), deadline=deadline.isoformat()
        )
    if good:
        who = ", ".join(sorted({f"{s.format} by {s.signer or 'unknown signer'}" for s in good}))
        return _result(name, CheckOutcome.PASS, f"verified: {who}", verified=len(good))
    bad = [f"{s.format} {short_digest(s.digest)}: {s.reason}" for s in facts.signatures]
    deadline = facts.pushed_at + rules.grace_period
    if now < deadline:
        return _result(
            name,
            CheckOutcome.PENDING,
            f"no valid signature yet; waiting until {deadline.isoformat()} "
            f"(grace period {_ago(rules.grace_period)})",
            deadline=deadline.isoformat(),
            rejected=bad,
        )
    if bad:
        return _result(
            name,
            CheckOutcome.FAIL,
            f"no valid signature; rejected {len(bad)}: " + "; ".join(bad),
            rejected=bad,
        )
    return _result(name, CheckOutcome.FAIL, "image is not signed")


# -- vulnerabilities ------------------------------------------------------------------------


def allow_active(entry: AllowEntry, now: datetime) -> bool:
    """`until` is inclusive through the end of that day, UTC."""
    if entry.until is None:
        return True
    end = datetime.combine(entry.until, time.min, tzinfo=UTC) + timedelta(days=1)
    return now < end


def _finding_text(f: Finding) -> str:
    fix = f"fixed in {f.fixed_version}" if f.fixed_version else "no fix"
    return f"{f.id} ({f.severity}, {f.package} {f.installed_version}, {fix})"


#: How bad a check outcome is, as `evaluate` ranks them: of several reports, the worst wins.
_RANK = {
    CheckOutcome.SKIP: 0,
    CheckOutcome.PASS: 1,
    CheckOutcome.WARN: 2,
    CheckOutcome.PENDING: 3,
    CheckOutcome.FAIL: 4,
    CheckOutcome.ERROR: 5,
}


def check_vulnerabilities(facts: Facts, rules: VulnerabilityRules, now: datetime) -> CheckResult:
    """Every available report (`facts.scans`) is judged on its own against the whole policy
    and the worst outcome wins: a finding any source reports counts, the allowlist applies
    to all of them. A failed scan from one source is judged as it would be alone (fail
    closed, or WARN with failOpen). A source with no report yet does not hold the others:
    only when no source has a report does the check wait (PENDING until scanTimeout)."""
    name = "vulnerabilities"
    if not rules.enabled:
        return _result(name, CheckOutcome.SKIP, "no vulnerability rules")
    waiting_until = facts.pushed_at + rules.scan_timeout
    missing = _missing(facts, _SCAN_EVIDENCE)
    if not facts.scans and missing:  # infrastructure: retried, never "no scan"
        return _result(
            name,
            CheckOutcome.ERROR,
            "could not read the scan: " + "; ".join(missing),
            unavailable=missing,
        )
    failed: CheckResult | None = None
    if facts.scan_error:
        why = f"scan failed: {facts.scan_error}"
        if rules.fail_open:
            failed = _result(name, CheckOutcome.WARN, why + " (failOpen: passing)")
        else:
            failed = _result(name, CheckOutcome.FAIL, why + " (fail closed)")
    if not facts.scans:
        if failed is not None:
            return failed
        because = f" ({facts.scan_waiting})" if facts.scan_waiting else ""
        if now < waiting_until:
            return _result(
                name,
                CheckOutcome.PENDING,
                f"no scan yet{because}; waiting until {waiting_until.isoformat()}",
                deadline=waiting_until.isoformat(),
            )
        why = f"no scan within {_ago(rules.scan_timeout)} of the push{because}"
        if rules.fail_open:
            return _result(name, CheckOutcome.WARN, why + " (failOpen: passing)")
        return _result(name, CheckOutcome.FAIL, why + " (fail closed)")
    expired = sorted(e.id for e in rules.allow if not allow_active(e, now))
    suffix = f"; expired allowlist entries no longer count: {', '.join(expired)}" if expired else ""
    judged = [_judge_report(report, rules, now) for report in facts.scans]
    details: dict[str, object] = {
        "findings": sum(len(j.report.findings) for j in judged),
        "allowed": sorted({a for j in judged for a in j.allowed}),
        "expiredAllowlist": expired,
    }
    if len(judged) == 1 and failed is None:  # one report: judged exactly as it always was
        (only,) = judged
        details["top"] = [_finding_text(f) for f in only.offending[:5]]
        details["sources"] = [only.entry()]
        return _result(name, only.outcome, only.reason + suffix, **details)
    return _worst_of(name, facts, judged, failed, details, suffix)


@dataclass(frozen=True, slots=True)
class _Judged:
    """One report judged against the policy on its own."""

    report: ScanReport
    outcome: CheckOutcome
    reason: str
    """Without the expired-allowlist note, which is the policy's, not the report's."""
    offending: list[Finding]
    """The findings that break a limit, worst first, each id once."""
    allowed: list[str]

    def entry(self) -> dict[str, object]:
        """What the verdict's details say about this source."""
        counts = self.report.counts()
        return {
            "source": self.report.source,
            "scanner": self.report.scanner,
            "scanned_at": self.report.scanned_at.isoformat() if self.report.scanned_at else None,
            "counts": {str(s): counts[s] for s in sorted(Severity, reverse=True) if counts[s]},
            "outcome": self.outcome.value,
            "reason": self.reason,
        }


def _judge_report(scan: ScanReport, rules: VulnerabilityRules, now: datetime) -> _Judged:
    """One report against the policy: its age, then its findings."""
    if rules.max_scan_age is not None and scan.scanned_at is not None:
        age = now - scan.scanned_at
        if age > rules.max_scan_age:
            why = f"scan is {_ago(age)} old; policy allows {_ago(rules.max_scan_age)}"
            return _Judged(scan, CheckOutcome.FAIL, why, [], [])
    active = {e.id: e for e in rules.allow if allow_active(e, now)}
    considered = [
        f for f in scan.findings if f.id not in active and (f.fixable or not rules.fixable_only)
    ]
    allowed = sorted({f.id for f in scan.findings if f.id in active})
    problems: list[str] = []
    offending: list[Finding] = []
    if rules.max_severity is not None:
        above = [f for f in considered if f.severity > rules.max_severity]
        if above:
            offending += above
            problems.append(f"{len(above)} finding(s) above {rules.max_severity}")
    for sev, limit in sorted(rules.max_counts.items()):
        n = sum(1 for f in considered if f.severity == sev)
        if n > limit:
            offending += [f for f in considered if f.severity == sev]
            problems.append(f"{n} {sev} finding(s), at most {limit} allowed")
    if rules.max_cvss is not None:
        over = [f for f in considered if f.cvss is not None and f.cvss > rules.max_cvss]
        if over:
            offending += over
            problems.append(f"{len(over)} finding(s) with CVSS above {rules.max_cvss}")
    ranked = _ranked(offending)
    note = f"; {scan.note}" if scan.note else ""  # what the scan did not cover
    if problems:
        top = ", ".join(_finding_text(f) for f in ranked[:5])
        return _Judged(
            scan, CheckOutcome.FAIL, "; ".join(problems) + ": " + top + note, ranked, allowed
        )
    counts = scan.counts()
    summary = ", ".join(f"{counts[s]} {s}" for s in sorted(Severity, reverse=True) if counts[s])
    why = f"within policy ({summary or 'no findings'})" + note
    return _Judged(scan, CheckOutcome.PASS, why, [], allowed)


def _ranked(findings: list[Finding]) -> list[Finding]:
    """Worst first, each id once (one finding can break several limits)."""
    return sorted(
        {f.id: f for f in findings}.values(), key=lambda f: (-f.severity, -(f.cvss or 0), f.id)
    )


def _labels(reports: list[ScanReport]) -> list[str]:
    """A report's source names it; the scanner is added where one source gave several (a
    Trivy and a Grype cosign vuln attestation are both `cosign-vuln`)."""
    sources = [r.source for r in reports]
    return [
        r.source if sources.count(r.source) == 1 else f"{r.source} ({r.scanner})" for r in reports
    ]


def _worst_of(
    name: str,
    facts: Facts,
    judged: list[_Judged],
    failed: CheckResult | None,
    details: dict[str, object],
    suffix: str,
) -> CheckResult:
    """Several reports (or a report and a failed scan): the worst outcome wins; the reason
    says what each source found, the worst first. The same finding from two sources is
    named once per source: nothing is merged away."""
    labels = _labels([j.report for j in judged])
    parts = [(j.outcome, f"{label}: {j.reason}") for label, j in zip(labels, judged, strict=True)]
    if failed is not None:
        parts.append((failed.outcome, failed.reason))
    parts.sort(key=lambda part: -_RANK[part[0]])  # stable: equals keep the order read
    offending = [(label, f) for label, j in zip(labels, judged, strict=True) for f in j.offending]
    offending.sort(key=lambda lf: (-lf[1].severity, -(lf[1].cvss or 0), lf[1].id, lf[0]))
    details["top"] = [f"{label}: {_finding_text(f)}" for label, f in offending[:5]]
    details["sources"] = [j.entry() for j in judged]
    if facts.scan_waiting:  # sources with no report yet: they did not hold the others
        details["waiting"] = facts.scan_waiting
    reason = "; ".join(text for _, text in parts) + suffix
    return _result(name, parts[0][0], reason, **details)


# -- tags ---------------------------------------------------------------------------------------


def check_tags(facts: Facts, rules: TagRules) -> CheckResult:
    name = "tags"
    tags = sorted(set(facts.tags) | ({facts.image.tag} if facts.image.tag else set()))
    forbidden = [t for t in tags if t in rules.forbidden]
    if forbidden:
        return _result(name, CheckOutcome.FAIL, f"forbidden tag(s): {', '.join(forbidden)}")
    if rules.immutable:
        moved = {t: d for t, d in facts.moved_tags.items() if d != facts.image.digest}
        if moved:
            text = ", ".join(f"{t} (was {short_digest(d)})" for t, d in sorted(moved.items()))
            return _result(
                name,
                CheckOutcome.FAIL,
                f"immutable tag(s) moved to a new digest: {text}",
                moved=moved,
            )
    if rules.pattern is not None and tags:
        bad = [t for t in tags if not rules.pattern.search(t)]
        if bad:
            return _result(
                name,
                CheckOutcome.FAIL,
                f"tag(s) {', '.join(bad)} do not match {rules.pattern_name or 'pattern'}"
                f" ({rules.pattern.pattern})",
            )
    if not (rules.pattern or rules.forbidden or rules.immutable):
        return _result(name, CheckOutcome.SKIP, "no tag rules")
    return _result(name, CheckOutcome.PASS, f"tags ok: {', '.join(tags) or '<untagged>'}")


# -- hygiene ----------------------------------------------------------------------------------


def check_hygiene(facts: Facts, rules: HygieneRules) -> CheckResult:
    name = "hygiene"
    if not (
        rules.max_size or rules.max_layers or rules.allowed_base_images or rules.required_labels
    ):
        return _result(name, CheckOutcome.SKIP, "no hygiene rules")
    problems: list[str] = []
    if rules.max_size is not None and facts.size is not None and facts.size > rules.max_size:
        problems.append(f"compressed size {facts.size} bytes exceeds {rules.max_size}")
    if (
        rules.max_layers is not None
        and facts.layer_count is not None
        and facts.layer_count > rules.max_layers
    ):
        problems.append(f"{facts.layer_count} layers exceed {rules.max_layers}")
    if rules.allowed_base_images:
        base = facts.labels.get(BASE_NAME_LABEL)
        if base is None:
            problems.append(f"no {BASE_NAME_LABEL} label to check the base image")
        elif not any(p.fullmatch(base) for p in rules.allowed_base_images):
            problems.append(f"base image {base} is not allowed")
    missing = [label for label in rules.required_labels if not facts.labels.get(label)]
    if missing:
        problems.append(f"missing required label(s): {', '.join(missing)}")
    if problems:
        return _result(name, CheckOutcome.FAIL, "; ".join(problems))
    return _result(name, CheckOutcome.PASS, "size, layers, base image and labels within policy")


# -- provenance -------------------------------------------------------------------------------


def check_provenance(
    facts: Facts, rules: ProvenanceRules, grace: timedelta, now: datetime
) -> CheckResult:
    name = "provenance"
    if not rules.required:
        return _result(name, CheckOutcome.SKIP, "provenance not required")
    verified = [p for p in facts.provenance if p.verified]
    ok = [p for p in verified if not rules.builder_ids or p.builder_id in rules.builder_ids]
    if ok:
        return _result(name, CheckOutcome.PASS, f"built by {ok[0].builder_id}")
    if verified:
        ids = ", ".join(sorted({p.builder_id or "?" for p in verified}))
        return _result(
            name, CheckOutcome.FAIL, f"builder {ids} is not one of {', '.join(rules.builder_ids)}"
        )
    missing = _missing(facts, _PROVENANCE_EVIDENCE)
    if missing:  # infrastructure: retried, never "no provenance"
        return _result(
            name,
            CheckOutcome.ERROR,
            "could not read provenance attestations: " + "; ".join(missing),
            unavailable=missing,
        )
    if now < facts.pushed_at + grace:
        return _result(name, CheckOutcome.PENDING, "no signed provenance attestation yet")
    reasons = "; ".join(p.reason for p in facts.provenance if p.reason)
    return _result(
        name,
        CheckOutcome.FAIL,
        "no verified SLSA provenance attestation" + (f" ({reasons})" if reasons else ""),
    )
