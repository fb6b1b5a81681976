"""infra/k8s/admission: the Kyverno and sigstore policy-controller examples.

Each custom resource validates against the openAPIV3Schema of the CRD of the release it
was written for (vendored in tests/schemas, recorded in its README), strictly: a field the
schema does not declare is an error, as the API server's strict field validation (kubectl's
default) makes it; core objects validate with kubernetes-validate (strict). Broken copies
are refused. What each example enforces is checked too: Kyverno's conditions read the
predicate fields regwarden writes, with the age taken from the ConfigMap beside it;
policy-controller's Rego is evaluated by a real Rego engine (regopy) on verdict
statements: only a fresh PASSED verdict of regwarden's predicate type is compliant.

No admission controller runs here: these tests stop at what the manifests say.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import regopy
import yaml

from regwarden.attest import VERDICT_PREDICATE as REGWARDEN_PREDICATE

ROOT = Path(__file__).resolve().parents[2]
ADMISSION = ROOT / "infra" / "k8s" / "admission"
KYVERNO = ADMISSION / "kyverno-verify-verdict.yaml"
POLICY_CONTROLLER = ADMISSION / "policy-controller-verdict.yaml"
SCHEMAS = ROOT / "tests" / "schemas"
DOCS = ROOT / "docs" / "admission.md"

# The predicate type is a public contract: clusters name it in their policies, so the
# examples spell it out and must spell what regwarden writes.
VERDICT_PREDICATE = "https://regwarden.dev/attestations/verdict/v1"

# group/version -> (CRD file, CRD version name). Anything else must be a core object.
CRDS = {
    "kyverno.io/v1": (SCHEMAS / "kyverno" / "kyverno.io_clusterpolicies.yaml", "v1"),
    "policy.sigstore.dev/v1beta1": (
        SCHEMAS / "policy-controller" / "300-clusterimagepolicy.yaml",
        "v1beta1",
    ),
}
# Kyverno 1.19's chart asks for Kubernetes >= 1.25; the newest kubernetes-validate knows.
KUBERNETES_VERSIONS = ["1.25.0", kubernetes_validate.utils.latest_version()]
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
GO_DURATION = re.compile(r"^(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h))+$")


def documents(path: Path) -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs and all(isinstance(d, dict) for d in docs), path
    return docs


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, (kind, len(found))
    return found[0]


# -- validation ---------------------------------------------------------------------------


def strict(schema: Any) -> Any:
    """The schema with every declared object closed (additionalProperties: false) unless
    it preserves unknown fields or already says what extra keys may hold: the API server
    prunes or, under strict field validation, refuses such fields, while JSON Schema would
    let them through."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields", False)
    ):
        out["additionalProperties"] = False
    return out


@functools.cache
def crd_validator(api_version: str) -> tuple[jsonschema.protocols.Validator, str]:
    path, version = CRDS[api_version]
    # The Kyverno CRD is 1.4 MB of YAML: libyaml's loader where the build has it.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    crd = yaml.load(path.read_text(), Loader=loader)  # noqa: S506 (a safe loader)
    (entry,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    assert entry["served"], (path, version)
    schema = strict(entry["schema"]["openAPIV3Schema"])
    # Every object has these whether or not the CRD's schema lists them.
    schema["properties"].setdefault("apiVersion", {"type": "string"})
    schema["properties"].setdefault("kind", {"type": "string"})
    schema["properties"].setdefault("metadata", {"type": "object"})
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    cls.check_schema(schema)
    return cls(schema), crd["spec"]["scope"]


def validate(doc: dict[str, Any], kubernetes_version: str) -> None:
    """Raise if the API server would refuse the object (schema level)."""
    metadata = doc["metadata"]
    if not DNS_SUBDOMAIN.match(metadata["name"]) or len(metadata["name"]) > 253:
        raise ValueError(f"metadata.name {metadata['name']!r} is not a DNS subdomain")
    if doc["apiVersion"] in CRDS:
        validator, scope = crd_validator(doc["apiVersion"])
        errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
        if errors:
            raise jsonschema.ValidationError(
                "; ".join(f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors)
            )
        if scope == "Cluster" and "namespace" in metadata:
            raise ValueError(f"{doc['kind']} is cluster-scoped: no metadata.namespace")
        # The CRD's schema says only `metadata: object`; the API server checks ObjectMeta
        # itself. The same ObjectMeta on a ConfigMap goes through kubernetes-validate.
        meta = {k: v for k, v in metadata.items() if k != "namespace"}
        stand_in = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta}
        kubernetes_validate.validate(stand_in, kubernetes_version, strict=True)
    else:
        kubernetes_validate.validate(doc, kubernetes_version, strict=True)


def test_the_examples_name_the_predicate_type_regwarden_writes() -> None:
    assert REGWARDEN_PREDICATE == VERDICT_PREDICATE
    for path in (KYVERNO, POLICY_CONTROLLER):
        assert VERDICT_PREDICATE in path.read_text(), path


def test_the_vendored_crds_are_the_recorded_releases() -> None:
    readme = (SCHEMAS / "README.md").read_text()
    for path, _ in CRDS.values():
        row = next(line for line in readme.splitlines() if f"`{path.relative_to(SCHEMAS)}`" in line)
        assert hashlib.sha256(path.read_bytes()).hexdigest() in row, path
        assert "Apache-2.0" in readme
        assert (path.parent / "LICENSE").read_text().lstrip().startswith("Apache License")


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("path", [KYVERNO, POLICY_CONTROLLER], ids=lambda p: p.name)
def test_every_object_validates(path: Path, version: str) -> None:
    docs = documents(path)
    for doc in docs:
        validate(doc, version)
    kinds = {d["kind"] for d in docs}
    assert kinds & {"ClusterPolicy", "ClusterImagePolicy"}, kinds


def test_the_only_manifests_are_the_two_examples() -> None:
    # A new file here would go unvalidated: add it to these tests first.
    assert sorted(p.name for p in ADMISSION.iterdir()) == sorted(
        [KYVERNO.name, POLICY_CONTROLLER.name]
    )


def _set(doc: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    node: Any = doc
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if value is _DELETE:
        del node[last]
    else:
        node[int(last) if isinstance(node, list) else last] = value


def _rename(doc: dict[str, Any], path: str, new: str) -> None:
    *parents, last = path.split(".")
    node: Any = doc
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    node[new] = node.pop(last)


_DELETE = object()
VI = "spec.rules.0.verifyImages.0"
KEY = f"{VI}.attestations.0.attestors.0.entries.0.keys"
BROKEN: list[tuple[str, Path, str, Any]] = [
    # (what, file, kind, mutation)
    (
        "misspelt attestations",
        KYVERNO,
        "ClusterPolicy",
        ("rename", VI + ".attestations", "attestaions"),
    ),
    (
        "condition field misspelt",
        KYVERNO,
        "ClusterPolicy",
        ("rename", VI + ".attestations.0.conditions", "condition"),
    ),
    (
        "failureAction not an enum value",
        KYVERNO,
        "ClusterPolicy",
        ("set", VI + ".failureAction", "enforce"),
    ),
    (
        "unknown operator",
        KYVERNO,
        "ClusterPolicy",
        ("set", VI + ".attestations.0.conditions.0.all.1.operator", "YoungerThan"),
    ),
    (
        "key secret without namespace",
        KYVERNO,
        "ClusterPolicy",
        ("set", KEY + ".secret.namespace", _DELETE),
    ),
    (
        "count below 1",
        KYVERNO,
        "ClusterPolicy",
        ("set", VI + ".attestations.0.attestors.0.count", 0),
    ),
    (
        "namespaced cluster policy",
        KYVERNO,
        "ClusterPolicy",
        ("set", "metadata.namespace", "default"),
    ),
    ("max age not a string", KYVERNO, "ConfigMap", ("set", "data.maxAge", 168)),
    ("configmap field misspelt", KYVERNO, "ConfigMap", ("rename", "data", "date")),
    ("name with capitals", KYVERNO, "ClusterPolicy", ("set", "metadata.name", "Regwarden")),
    (
        "authority key misspelt",
        POLICY_CONTROLLER,
        "ClusterImagePolicy",
        ("rename", "spec.authorities.0.key", "keys"),
    ),
    (
        "images not a list",
        POLICY_CONTROLLER,
        "ClusterImagePolicy",
        ("set", "spec.images", "registry.example.com/**"),
    ),
    (
        "policy data not a string",
        POLICY_CONTROLLER,
        "ClusterImagePolicy",
        ("set", "spec.authorities.0.attestations.0.policy.data", {"rego": True}),
    ),
    (
        "label value not a string",
        POLICY_CONTROLLER,
        "ClusterImagePolicy",
        ("set", "metadata.labels.tier", 1),
    ),
]


@pytest.mark.parametrize(("what", "path", "kind", "mutation"), BROKEN, ids=[b[0] for b in BROKEN])
def test_a_broken_copy_is_refused(what: str, path: Path, kind: str, mutation: Any) -> None:
    doc = one(documents(path), kind)
    validate(copy.deepcopy(doc), KUBERNETES_VERSIONS[-1])  # the original passes
    broken = copy.deepcopy(doc)
    if mutation[0] == "rename":
        _rename(broken, mutation[1], mutation[2])
    else:
        _set(broken, mutation[1], mutation[2])
    with pytest.raises(
        (jsonschema.ValidationError, kubernetes_validate.ValidationError, ValueError)
    ):
        validate(broken, KUBERNETES_VERSIONS[-1])


# -- what the examples enforce ------------------------------------------------------------


def predicate(verdict: str, decided_at: datetime) -> dict[str, Any]:
    """A verdict predicate in the shape regwarden writes (docs/admission.md shows one)."""
    return {
        "verdict": verdict,
        "decidedAt": decided_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "image": {
            "registry": "registry.example.com",
            "repository": "team/app",
            "digest": "sha256:" + "ab" * 32,
        },
        "policy": {"name": "regwarden.yaml", "digest": "sha256:" + "cd" * 32},
        "regwarden": {"version": "0.1.0"},
        "checks": [{"name": "signature", "outcome": verdict, "reason": "signed by ci"}],
        "evidence": {"signatures": [], "scans": []},
    }


def statement(pred: dict[str, Any], predicate_type: str = VERDICT_PREDICATE) -> dict[str, Any]:
    # Legacy .att carries an in-toto v0.1 statement, a bundle v1: the fields read are the same.
    return {
        "_type": "https://in-toto.io/Statement/v0.1",
        "predicateType": predicate_type,
        "subject": [{"name": "registry.example.com/team/app", "digest": {"sha256": "ab" * 32}}],
        "predicate": pred,
    }


def parse_go_duration(text: str) -> timedelta:
    assert GO_DURATION.match(text), text
    units = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", text)
    return timedelta(seconds=sum(float(n) * units[u] for n, u in parts))


def test_kyverno_requires_a_fresh_passed_verdict_signed_by_the_regwarden_key() -> None:
    docs = documents(KYVERNO)
    policy, config = one(docs, "ClusterPolicy"), one(docs, "ConfigMap")
    assert policy["spec"]["background"] is False
    (rule,) = policy["spec"]["rules"]
    assert rule["match"] == {"any": [{"resources": {"kinds": ["Pod"]}}]}
    (verify,) = rule["verifyImages"]
    assert verify["failureAction"] == "Enforce"
    assert verify["type"] == "Cosign"  # regwarden's default attest.format: legacy .att
    assert verify["required"] is True and verify["verifyDigest"] is True
    (attestation,) = verify["attestations"]
    assert attestation["type"] == VERDICT_PREDICATE
    (attestor,) = attestation["attestors"]
    (entry,) = attestor["entries"]
    assert attestor["count"] == 1
    assert entry["keys"]["secret"] == {"name": "regwarden-verdict-key", "namespace": "kyverno"}
    # No transparency log or SCT: regwarden signs without either.
    assert entry["keys"]["rekor"] == {"ignoreTlog": True}
    assert entry["keys"]["ctlog"] == {"ignoreSCT": True}

    (conditions,) = attestation["conditions"]
    verdict, age = conditions["all"]
    fields = set(predicate("PASSED", datetime.now(UTC)))
    # Kyverno puts the predicate's top-level fields in the context of the conditions.
    assert (verdict["key"], verdict["operator"], verdict["value"]) == (
        "{{ verdict }}",
        "Equals",
        "PASSED",
    )
    assert {"verdict", "decidedAt"} <= fields
    assert age["key"] == "{{ time_since('', decidedAt, '') }}"
    assert age["operator"] == "DurationLessThan"

    # The age comes from the ConfigMap in the same file, loaded as the rule's context under
    # a name no predicate field shadows.
    (context,) = rule["context"]
    assert context["name"] not in fields
    assert context["configMap"] == {
        "name": config["metadata"]["name"],
        "namespace": config["metadata"]["namespace"],
    }
    match = re.fullmatch(r"\{\{ (\w+)\.data\.(\w+) \}\}", age["value"])
    assert match and match.group(1) == context["name"]
    max_age = config["data"][match.group(2)]
    assert parse_go_duration(max_age) == timedelta(days=7)


REGO_QUERY = "isCompliant = data.sigstore.isCompliant"


def rego_policy() -> str:
    cip = one(documents(POLICY_CONTROLLER), "ClusterImagePolicy")
    (authority,) = cip["spec"]["authorities"]
    assert authority["key"] == {
        "secretRef": {"name": "regwarden-verdict-key"},
        "hashAlgorithm": "sha256",
    }
    assert "ctlog" not in authority  # no transparency log: regwarden signs without one
    assert cip["spec"]["mode"] == "enforce"
    (attestation,) = authority["attestations"]
    assert attestation["predicateType"] == VERDICT_PREDICATE
    assert attestation["policy"]["type"] == "rego"
    text: str = attestation["policy"]["data"]
    return text


def compliant(rego: str, stmt: dict[str, Any]) -> bool:
    """isCompliant as cosign evaluates it for policy-controller (package sigstore, the
    statement as input)."""
    # rego-cpp's time.parse_rfc3339_ns refuses the "Z" zone that OPA (Go's time.RFC3339)
    # reads; the same instant with a numeric offset reads in both.
    stmt = copy.deepcopy(stmt)
    decided = stmt["predicate"].get("decidedAt")
    if isinstance(decided, str) and decided.endswith("Z"):
        stmt["predicate"]["decidedAt"] = decided[:-1] + "+00:00"
    interpreter = regopy.Interpreter()
    interpreter.add_module("sigstore.rego", rego)
    interpreter.set_input_term(json.dumps(stmt))
    result = json.loads(str(interpreter.query(REGO_QUERY)))
    value = result["bindings"]["isCompliant"]
    assert isinstance(value, bool), result
    return value


def test_policy_controller_admits_only_a_fresh_passed_verdict() -> None:
    rego = rego_policy()
    max_age = parse_go_duration(re.search(r'max_age := "([^"]+)"', rego).group(1))  # type: ignore[union-attr]
    assert max_age == timedelta(days=7)
    now = datetime.now(UTC)
    assert compliant(rego, statement(predicate("PASSED", now - timedelta(minutes=5))))
    assert compliant(rego, statement(predicate("PASSED", now - max_age + timedelta(hours=1))))
    assert not compliant(rego, statement(predicate("PASSED", now - max_age - timedelta(hours=1))))
    for outcome in ("FAILED", "WARN", "PENDING", "passed"):
        assert not compliant(rego, statement(predicate(outcome, now)))
    other = "https://cosign.sigstore.dev/attestation/vuln/v1"
    assert not compliant(rego, statement(predicate("PASSED", now), other))
    undated = predicate("PASSED", now)
    del undated["decidedAt"]
    assert not compliant(rego, statement(undated))


def test_a_policy_that_admits_failed_verdicts_is_caught() -> None:
    # The Rego checks above can fail: a copy that asks for FAILED admits the wrong images.
    broken = rego_policy().replace('== "PASSED"', '== "FAILED"')
    now = datetime.now(UTC)
    assert not compliant(broken, statement(predicate("PASSED", now)))
    assert compliant(broken, statement(predicate("FAILED", now)))


def test_the_docs_name_the_versions_the_examples_were_written_for() -> None:
    docs = DOCS.read_text()
    readme = (SCHEMAS / "README.md").read_text()
    for version in ("v1.19.0", "v0.15.1"):
        assert version in docs and version in readme
    assert "v1.19.0" in KYVERNO.read_text() and "v0.15.1" in POLICY_CONTROLLER.read_text()
    assert "regwarden verify" in docs and "--verdict" in docs
    assert "No admission controller runs" in docs
