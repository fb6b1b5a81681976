"""The push gate's judgement: `gather_evidence` (the I/O edge: signatures, attestations,
scan sources) → facts → `evaluate(facts, rules, now)` (pure). The pipeline acts on it."""

from ._checks import (
    allow_active,
    check_hygiene,
    check_provenance,
    check_signatures,
    check_tags,
    check_vulnerabilities,
)
from ._evaluate import evaluate
from ._evidence import VULN_PREDICATE, Evidence, EvidenceSource, gather_evidence, no_evidence
from ._facts import Facts, ProvenanceFact
from ._findings import verdict_findings
from ._from_policy import gate_rules
from ._rules import (
    AllowEntry,
    GateRules,
    HygieneRules,
    Promotion,
    ProvenanceRules,
    SignatureRules,
    TagRules,
    VulnerabilityRules,
)

__all__ = [
    "VULN_PREDICATE",
    "AllowEntry",
    "Evidence",
    "EvidenceSource",
    "Facts",
    "GateRules",
    "HygieneRules",
    "Promotion",
    "ProvenanceFact",
    "ProvenanceRules",
    "SignatureRules",
    "TagRules",
    "VulnerabilityRules",
    "allow_active",
    "check_hygiene",
    "check_provenance",
    "check_signatures",
    "check_tags",
    "check_vulnerabilities",
    "evaluate",
    "gate_rules",
    "gather_evidence",
    "no_evidence",
    "verdict_findings",
]
