"""The push gate: gather facts → `evaluate(facts, rules, now)` (pure) → actions."""

from ._checks import (
    allow_active,
    check_hygiene,
    check_provenance,
    check_signatures,
    check_tags,
    check_vulnerabilities,
)
from ._evaluate import evaluate
from ._facts import Facts, ProvenanceFact
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
    "AllowEntry",
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
]
