"""The policy file: the DESIGN.md contract and the shipped example load; the first-match,
per-section merge; round trips; the JSON Schema agrees with the loader."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from regwarden.errors import NotImplementedYet, PolicyError
from regwarden.model import Severity
from regwarden.policy import (
    SECTIONS,
    DeleteOlderThan,
    DeleteUntagged,
    EffectiveRepositoryPolicy,
    KeepMostRecent,
    KeepPulledWithin,
    KeepSemver,
    KeepTagMatches,
    Location,
    LocationScheme,
    Policy,
    Quarantine,
    SlackChannelConfig,
    WebhookChannelConfig,
    load_policy,
    load_policy_text,
    policy_json_schema,
    validate_file,
    validate_text,
)

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "regwarden.yaml"
HANDBOOK = REPO / ".." / "shared"

# The policy example from DESIGN.md ("The policy file — user-facing contract"), verbatim.
DESIGN_EXAMPLE = """\
apiVersion: regwarden/v1
kind: Policy
defaults:
  mode: enforce                     # enforce | audit
  quarantine: {strategy: move, repository: "quarantine/{repository}"}   # move | retag | lock
repositories:
  - match: "payments/**"
    team: payments
    signatures:
      required: true
      cosign: {keys: ["file://keys/release.pub"]}
      notation: {trustPolicy: "file://notation/trustpolicy.json", trustStore: "file://notation/truststore"}
      gracePeriod: 5m
    vulnerabilities:
      maxSeverity: high             # any finding above this fails: critical fails here
      fixableOnly: false
      scanTimeout: 30m
      allow:
        - {id: CVE-2024-6119, until: 2027-01-31, reason: "no TLS name checks in this service"}
    tags: {pattern: semver, forbidden: [latest], immutable: true}
    retention:
      keep:
        - mostRecent: 10
        - semver: {majors: 3, minorsPerMajor: 2, patchesPerMinor: 1}
        - pulledWithin: 30d
        - tagMatches: "^release-"
      delete:
        - untagged: {olderThan: 7d}
        - olderThan: 180d
      guard: {maxDeletes: 500, maxShare: 0.5}
notifications:
  channels:
    payments-slack: {type: slack, url: "secret://regwarden/slack/payments"}
    security-hook: {type: webhook, url: "https://hooks.example.com/regwarden", secret: "secret://regwarden/hmac"}
  routes:
    - {match: {team: payments}, to: [payments-slack]}
    - {match: {severity: [critical]}, to: [security-hook]}
inventory:
  kubernetes: {contexts: [prod, staging]}
  files: ["file://in-use.txt"]
"""

HEAD = "apiVersion: regwarden/v1\nkind: Policy\n"


def load(text: str, base_dir: Path | str = "/policies") -> Policy:
    return load_policy_text(text, source="test.yaml", base_dir=base_dir)


# -- the contract example ----------------------------------------------------------------------


def test_design_example_validates_with_every_section_typed() -> None:
    assert validate_text(DESIGN_EXAMPLE) == []
    policy = load(DESIGN_EXAMPLE)

    assert policy.api_version == "regwarden/v1"
    assert policy.defaults.mode == "enforce"
    assert policy.defaults.quarantine == Quarantine(
        strategy="move", repository="quarantine/{repository}"
    )
    (entry,) = policy.repositories
    assert entry.match.pattern == "payments/**"
    assert entry.team == "payments"

    sig = entry.signatures
    assert sig is not None and sig.required is True
    assert sig.cosign is not None
    assert [(k.scheme, k.target) for k in sig.cosign.keys] == [
        (LocationScheme.FILE, "keys/release.pub")
    ]
    assert sig.notation is not None
    assert sig.notation.trust_policy.target == "notation/trustpolicy.json"
    assert sig.notation.trust_store.target == "notation/truststore"
    assert sig.grace_period == timedelta(minutes=5)

    vul = entry.vulnerabilities
    assert vul is not None
    assert vul.max_severity is Severity.HIGH
    assert vul.fixable_only is False
    assert vul.scan_timeout == timedelta(minutes=30)
    (allowance,) = vul.allow
    assert (allowance.id, allowance.until) == ("CVE-2024-6119", date(2027, 1, 31))
    assert allowance.reason == "no TLS name checks in this service"

    tags = entry.tags
    assert tags is not None and tags.pattern is not None
    assert tags.pattern.kind == "semver"
    assert tags.forbidden == ("latest",)
    assert tags.immutable is True

    ret = entry.retention
    assert ret is not None
    most_recent, semver, pulled, tag_matches = ret.keep
    assert isinstance(most_recent, KeepMostRecent) and most_recent.most_recent == 10
    assert isinstance(semver, KeepSemver)
    assert (
        semver.semver.majors,
        semver.semver.minors_per_major,
        semver.semver.patches_per_minor,
    ) == (3, 2, 1)
    assert isinstance(pulled, KeepPulledWithin) and pulled.pulled_within == timedelta(days=30)
    assert isinstance(tag_matches, KeepTagMatches)
    assert tag_matches.tag_matches.search("release-7") and not tag_matches.tag_matches.search(
        "pre-release-7"
    )
    untagged, older = ret.delete
    assert isinstance(untagged, DeleteUntagged)
    assert untagged.untagged.older_than == timedelta(days=7)
    assert isinstance(older, DeleteOlderThan) and older.older_than == timedelta(days=180)
    assert (ret.guard.max_deletes, ret.guard.max_share) == (500, 0.5)

    channels = policy.notifications.channels
    assert isinstance(channels["payments-slack"], SlackChannelConfig)
    assert channels["payments-slack"].url.scheme is LocationScheme.SECRET
    hook = channels["security-hook"]
    assert isinstance(hook, WebhookChannelConfig)
    assert hook.url.host == "hooks.example.com"
    assert hook.secret is not None and hook.secret.target == "regwarden/hmac"
    assert [r.to for r in policy.notifications.routes] == [
        ("payments-slack",),
        ("security-hook",),
    ]

    assert policy.inventory.kubernetes is not None
    assert policy.inventory.kubernetes.contexts == ("prod", "staging")
    assert [f.target for f in policy.inventory.files] == ["in-use.txt"]


@pytest.mark.interop
def test_design_example_fixture_is_verbatim_from_the_handbook() -> None:
    design = HANDBOOK / "DESIGN.md"
    if not design.is_file():
        pytest.skip("../shared (the design handbook) is not present")
    text = design.read_text(encoding="utf-8")
    section = text[text.index("## The policy file") :]
    block = re.search(r"```yaml\n(.*?)```", section, re.DOTALL)
    assert block is not None
    assert block.group(1) == DESIGN_EXAMPLE


def test_design_example_routes_alerts() -> None:
    notifications = load(DESIGN_EXAMPLE).notifications
    cases = [
        ("payments", Severity.CRITICAL, ("payments-slack", "security-hook")),
        ("payments", Severity.HIGH, ("payments-slack",)),
        ("search", Severity.CRITICAL, ("security-hook",)),
        ("search", Severity.LOW, ()),
        (None, None, ()),
    ]
    for team, severity, expected in cases:
        got = notifications.channels_for(
            team=team, severity=severity, action="quarantine", repository="payments/api"
        )
        assert got == expected, (team, severity)


# -- the shipped example -----------------------------------------------------------------------


def test_example_file_validates_and_its_files_exist() -> None:
    assert validate_file(EXAMPLE) == []
    policy = load_policy(EXAMPLE)
    assert policy.base_dir == EXAMPLE.absolute().parent
    assert policy.source == str(EXAMPLE)

    locations: list[Location] = []
    for entry in (policy.defaults, *policy.repositories):
        if entry.signatures is not None and entry.signatures.cosign is not None:
            locations += entry.signatures.cosign.keys
        if entry.signatures is not None and entry.signatures.notation is not None:
            locations += [
                entry.signatures.notation.trust_policy,
                entry.signatures.notation.trust_store,
            ]
    locations += policy.inventory.files
    file_locations = [loc for loc in locations if loc.scheme is LocationScheme.FILE]
    assert len(file_locations) == 4
    for location in file_locations:
        assert policy.resolve_file(location).exists(), location


def test_example_key_is_an_ecdsa_p256_public_key() -> None:
    key = load_pem_public_key((REPO / "examples" / "keys" / "release.pub").read_bytes())
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert isinstance(key.curve, ec.SECP256R1)


def test_example_effective_policies() -> None:
    policy = load_policy(EXAMPLE)
    table = [
        # repository, source, mode, team, strategy, max severity
        ("payments/api", "repositories[0]", "enforce", "payments", "move", Severity.HIGH),
        ("base/debian", "repositories[1]", "enforce", "platform", "retag", Severity.MEDIUM),
        ("base/debian/slim", "defaults", "enforce", "platform", "move", Severity.HIGH),
        ("sandbox/a/b", "repositories[2]", "audit", "developer-experience", "move", Severity.HIGH),
        ("web/frontend", "defaults", "enforce", "platform", "move", Severity.HIGH),
    ]
    for repository, source, mode, team, strategy, severity in table:
        eff = policy.for_repository(repository)
        assert eff.source == source, repository
        assert (eff.mode, eff.team, eff.quarantine.strategy) == (mode, team, strategy)
        assert eff.vulnerabilities is not None
        assert eff.vulnerabilities.max_severity is severity, repository


# -- merge: first match, per section -----------------------------------------------------------

MERGE = (
    HEAD
    + """\
defaults:
  mode: audit
  team: platform
  quarantine: {strategy: retag}
  vulnerabilities: {maxSeverity: high, fixableOnly: true, scanTimeout: 1h}
  tags: {forbidden: [latest]}
  retention: {keep: [{mostRecent: 5}]}
repositories:
  - match: "payments/api"
    vulnerabilities: {maxSeverity: critical}
  - match: "payments/*"
    team: payments
    mode: enforce
  - match: "payments/**"
    team: payments-deep
    tags: {immutable: true}
    quarantine: {repository: "held/{repository}"}
"""
)


def test_first_matching_entry_applies_in_document_order() -> None:
    policy = load(MERGE)
    table = [
        ("payments/api", 0),
        ("payments/web", 1),
        ("payments/web/v2", 2),
        ("payments", None),
        ("other/api", None),
    ]
    for repository, entry in table:
        assert policy.entry_for(repository) == entry, repository
        assert policy.for_repository(repository).entry == entry


def test_a_section_in_the_entry_replaces_the_default_section_as_a_whole() -> None:
    policy = load(MERGE)

    api = policy.for_repository("payments/api")
    assert api.vulnerabilities is not None
    # not deep-merged: the entry's section has its own defaults, not the defaults' values
    assert api.vulnerabilities.max_severity is Severity.CRITICAL
    assert api.vulnerabilities.fixable_only is False
    assert api.vulnerabilities.scan_timeout == timedelta(minutes=30)
    # sections the entry does not set come from defaults
    assert (api.mode, api.team, api.quarantine.strategy) == ("audit", "platform", "retag")
    assert api.tags is not None and api.tags.forbidden == ("latest",)

    web = policy.for_repository("payments/web")
    assert (web.mode, web.team) == ("enforce", "payments")
    assert web.vulnerabilities is not None and web.vulnerabilities.fixable_only is True

    deep = policy.for_repository("payments/web/v2")
    assert deep.tags is not None
    assert deep.tags.immutable is True and deep.tags.forbidden == ()
    # quarantine replaced whole: strategy falls back to the section default, not to "retag"
    assert deep.quarantine.strategy == "move"
    assert deep.quarantine.render("payments/web/v2") == "held/payments/web/v2"


def test_defaults_apply_to_every_repository_and_built_in_defaults_fill_the_rest() -> None:
    bare = load(HEAD).for_repository("anything/at/all")
    assert isinstance(bare, EffectiveRepositoryPolicy)
    assert bare.source == "defaults" and bare.match is None
    assert bare.mode == "enforce"
    assert bare.quarantine == Quarantine()
    assert bare.quarantine.render("a/b") == "quarantine/a/b"
    assert (bare.team, bare.signatures, bare.vulnerabilities, bare.tags, bare.retention) == (
        None,
        None,
        None,
        None,
        None,
    )


def test_effective_policy_has_every_section() -> None:
    fields = set(EffectiveRepositoryPolicy.model_fields)
    assert set(SECTIONS) <= fields
    assert set(SECTIONS) == {
        "mode",
        "team",
        "settle_window",
        "quarantine",
        "signatures",
        "vulnerabilities",
        "tags",
        "retention",
        "attestations",
        "hygiene",
        "provenance",
        "promotion",
        "attest",
        "access",
    }


def test_quarantine_repositories_are_recognised() -> None:
    policy = load(MERGE)
    table = [
        ("quarantine/payments/api", False),  # defaults use retag: nothing is moved
        ("held/payments/web/v2", True),
        ("held", False),
        ("payments/api", False),
    ]
    for repository, expected in table:
        assert policy.is_quarantine_repository(repository) is expected, repository
    assert load(HEAD).is_quarantine_repository("quarantine/x")


# -- round trips, schema, loading --------------------------------------------------------------


@pytest.mark.parametrize("text", [DESIGN_EXAMPLE, MERGE, EXAMPLE.read_text(encoding="utf-8")])
def test_dump_and_reload_gives_the_same_policy(text: str) -> None:
    policy = load(text)
    dumped = policy.model_dump(mode="json", exclude_none=True)
    again = load(yaml.safe_dump(dumped, sort_keys=False))
    assert again == policy
    assert again.model_dump(mode="json", exclude_none=True) == dumped


def _as_json(data: object) -> object:
    if isinstance(data, dict):
        return {k: _as_json(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_as_json(v) for v in data]
    if isinstance(data, date):
        return data.isoformat()
    return data


def test_json_schema_accepts_the_examples_and_rejects_structural_errors() -> None:
    schema = policy_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    for text in (DESIGN_EXAMPLE, EXAMPLE.read_text(encoding="utf-8")):
        errors = list(validator.iter_errors(_as_json(yaml.safe_load(text))))
        assert errors == [], [e.message for e in errors]

    bad = [
        HEAD + "extra: 1\n",
        HEAD + "defaults: {mode: sometimes}\n",
        HEAD + "defaults: {signatures: {gracePeriod: 5}}\n",
        HEAD + "repositories: [{match: a, retention: {keep: [{mostRecent: 0}]}}]\n",
        HEAD + "repositories: [{team: a}]\n",
        HEAD + "notifications: {channels: {x: {type: slak, url: 'https://a'}}}\n",
        HEAD + "defaults: {vulnerabilities: {maxSeverity: severe}}\n",
        "kind: Policy\n",
    ]
    for text in bad:
        assert list(validator.iter_errors(yaml.safe_load(text))), text
        assert validate_text(text), text


def test_json_schema_uses_yaml_keys_and_documents_defaults() -> None:
    schema = policy_json_schema()
    defs = schema["$defs"]
    assert set(schema["required"]) == {"apiVersion", "kind"}
    assert set(defs["Guard"]["properties"]) == {"maxDeletes", "maxShare"}
    assert defs["Signatures"]["properties"]["gracePeriod"]["default"] == "5m"
    assert defs["Vulnerabilities"]["properties"]["scanTimeout"]["default"] == "30m"
    assert defs["Vulnerabilities"]["properties"]["maxSeverity"]["enum"] == [
        "unknown",
        "negligible",
        "low",
        "medium",
        "high",
        "critical",
    ]
    assert all(d.get("additionalProperties") is False for d in defs.values() if "properties" in d)


def test_load_policy_reads_files_and_file_urls(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "regwarden.yaml"
    path.parent.mkdir()
    path.write_text(DESIGN_EXAMPLE, encoding="utf-8")
    for given in (path, str(path), f"file://{path}"):
        policy = load_policy(given)
        assert policy.base_dir == path.parent
        key = policy.repositories[0].signatures.cosign.keys[0]  # type: ignore[union-attr]
        assert policy.resolve_file(key) == path.parent / "keys" / "release.pub"


@pytest.mark.parametrize(
    "source",
    [
        "s3://bucket/regwarden.yaml",
        "gs://bucket/regwarden.yaml",
        "https://acct.blob.core.windows.net/c/regwarden.yaml",
    ],
)
def test_remote_policy_sources_are_not_implemented_yet(source: str) -> None:
    with pytest.raises(NotImplementedYet, match="not implemented yet"):
        load_policy(source)


def test_unreadable_policy_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(PolicyError, match="cannot read policy file"):
        load_policy(missing)
    (problem,) = validate_file(missing)
    assert problem.path == "(file)" and problem.line is None
    assert "cannot read" in problem.message

    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(PolicyError, match="not UTF-8"):
        load_policy(binary)


def test_policy_models_are_frozen() -> None:
    policy = load(DESIGN_EXAMPLE)
    with pytest.raises(ValueError, match="frozen"):
        policy.kind = "Other"  # type: ignore[misc, assignment]
    guard = policy.repositories[0].retention.guard  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="frozen"):
        guard.max_deletes = 1  # type: ignore[misc]


def test_python_construction_enforces_the_same_rules() -> None:
    with pytest.raises(ValueError, match="unknown channel 'nowhere'"):
        Policy.model_validate(
            {
                "apiVersion": "regwarden/v1",
                "kind": "Policy",
                "notifications": {"routes": [{"to": ["nowhere"]}]},
            }
        )


def test_allowance_in_the_design_example_expires_after_its_day() -> None:
    vul = load(DESIGN_EXAMPLE).repositories[0].vulnerabilities
    assert vul is not None
    last = datetime(2027, 1, 31, 23, 59, 59, 999_999, tzinfo=UTC)
    assert vul.allowance("CVE-2024-6119", last) is not None
    assert vul.allowance("CVE-2024-6119", last + timedelta(microseconds=1)) is None
    assert vul.allowance("CVE-2000-0001", last) is None
