"""`evaluate(facts, rules, now) -> Verdict`: the whole decision, pure."""

from __future__ import annotations

from datetime import datetime

from ..model import CheckOutcome, CheckResult, Outcome, Verdict
from ._checks import (
    check_hygiene,
    check_provenance,
    check_signatures,
    check_tags,
    check_vulnerabilities,
)
from ._facts import Facts
from ._rules import GateRules


def evaluate(facts: Facts, rules: GateRules, now: datetime) -> Verdict:
    checks: tuple[CheckResult, ...] = (
        check_signatures(facts, rules.signatures, now),
        check_vulnerabilities(facts, rules.vulnerabilities, now),
        check_tags(facts, rules.tags),
        check_hygiene(facts, rules.hygiene),
        check_provenance(facts, rules.provenance, rules.signatures.grace_period, now),
    )
    if facts.unavailable:  # infrastructure, not policy: retried, never acted on
        checks += (
            CheckResult(
                name="evidence",
                outcome=CheckOutcome.ERROR,
                reason="could not gather: " + "; ".join(facts.unavailable),
                details={"unavailable": list(facts.unavailable)},
            ),
        )
    outcomes = {c.outcome for c in checks}
    if CheckOutcome.ERROR in outcomes:
        outcome = Outcome.ERROR
    elif CheckOutcome.FAIL in outcomes:  # a definite failure outranks waiting
        outcome = Outcome.FAILED if rules.mode == "enforce" else Outcome.WARN
    elif CheckOutcome.PENDING in outcomes:
        outcome = Outcome.PENDING
    elif CheckOutcome.WARN in outcomes:
        outcome = Outcome.WARN
    else:
        outcome = Outcome.PASSED
    return Verdict(
        image=facts.image,
        outcome=outcome,
        mode=rules.mode,
        checks=checks,
        evaluated_at=now,
        team=rules.team,
    )
