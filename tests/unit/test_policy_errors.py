"""Invalid policies: every problem names its document path and YAML line, says what was
given and what is expected, and all problems are reported together."""

from __future__ import annotations

from pathlib import Path

import pytest

from regwarden.errors import PolicyError, UsageError
from regwarden.policy import (
    Location,
    Policy,
    Problem,
    load_policy_text,
    validate_file,
    validate_text,
)

HEAD = "apiVersion: regwarden/v1\nkind: Policy\n"


def problems(text: str) -> list[tuple[int | None, str, str]]:
    return [(p.line, p.path, p.message) for p in validate_text(text)]


def only(text: str) -> Problem:
    found = validate_text(text)
    assert len(found) == 1, found
    return found[0]


# -- unknown keys at every depth, with the valid keys ------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "path", "valid"),
    [
        (HEAD + "polices: []\n", 3, "polices", "apiVersion, kind, defaults, repositories"),
        (HEAD + "defaults:\n  mode: audit\n  match: x\n", 5, "defaults.match", "mode, team"),
        (
            HEAD + "repositories:\n  - match: a\n    signature: {}\n",
            5,
            "repositories[0].signature",
            "signatures",
        ),
        (
            HEAD + "repositories:\n  - match: a\n  - match: b\n    vulnerabilities:\n"
            "      maxSeverity: high\n      maxSeverty: low\n",
            8,
            "repositories[1].vulnerabilities.maxSeverty",
            "maxSeverity, fixableOnly, scanTimeout, allow",
        ),
        (
            HEAD + "repositories:\n  - match: a\n    vulnerabilities:\n      maxSeverity: high\n"
            "      allow:\n        - id: CVE-1\n          until: 2027-01-01\n"
            "          reason: r\n          package: openssl\n",
            11,
            "repositories[0].vulnerabilities.allow[0].package",
            "id, until, reason",
        ),
        (
            HEAD + "repositories:\n  - match: a\n    retention:\n      keep:\n"
            "        - semver: {majors: 1, minors: 2}\n",
            7,
            "repositories[0].retention.keep[0].semver.minors",
            "majors, minorsPerMajor, patchesPerMinor",
        ),
        (
            HEAD + "repositories:\n  - match: a\n    retention:\n      guard:\n"
            "        max_share: 0.5\n",
            7,
            "repositories[0].retention.guard.max_share",
            "maxDeletes, maxShare",
        ),
        (
            HEAD + "notifications:\n  channels:\n    hook:\n      type: webhook\n"
            "      url: https://h.example.com\n      hmac: secret://x\n",
            8,
            "notifications.channels.hook.hmac",
            "type, url, secret",
        ),
        (
            HEAD + "notifications:\n  routes:\n    - match: {teams: a}\n      to: [x]\n",
            5,
            "notifications.routes[0].match.teams",
            "team, severity, action, repository",
        ),
        (
            HEAD + "inventory:\n  kubernetes: {contexts: [a], namespace: b}\n",
            4,
            "inventory.kubernetes.namespace",
            "contexts",
        ),
    ],
)
def test_unknown_keys_are_errors_with_path_line_and_valid_keys(
    text: str, line: int, path: str, valid: str
) -> None:
    problem = only(text)
    assert (problem.line, problem.path) == (line, path)
    assert problem.message.startswith(f"unknown key {path.rsplit('.', 1)[-1]!r}")
    assert valid in problem.message


def test_snake_case_keys_are_not_accepted_from_yaml() -> None:
    text = HEAD + "defaults:\n  vulnerabilities:\n    max_severity: high\n"
    assert problems(text) == [
        # a missing key is named in the path and located at its parent
        (
            4,
            "defaults.vulnerabilities.maxSeverity",
            "missing a limit: expected at least one of maxSeverity, maxCounts, maxCvss",
        ),
        (
            5,
            "defaults.vulnerabilities.max_severity",
            "unknown key 'max_severity'; valid keys: maxSeverity, fixableOnly, scanTimeout, "
            "allow, maxCounts, maxCvss, maxScanAge, failOpen, sources, referrers",
        ),
    ]


# -- values: path, line, got/expected ----------------------------------------------------------

VALUES = (
    HEAD
    + """\
defaults:
  mode: enforced
  quarantine: {strategy: hide}
repositories:
  - match: "payments/**"
    vulnerabilities:
      maxSeverity: severe
      scanTimeout: 30
    tags:
      pattern: "^v(1"
      forbidden: [latest, no]
    retention:
      keep:
        - mostRecent: 0
        - {mostRecent: 1, pulledWithin: 1d}
        - keepAll: true
      delete:
        - untagged: {olderThan: 7 days}
      guard: {maxDeletes: 10, maxShare: 1.5}
"""
)


def test_value_errors_name_path_line_and_what_was_expected() -> None:
    assert problems(VALUES) == [
        (4, "defaults.mode", "got 'enforced', expected 'enforce' or 'audit'"),
        (5, "defaults.quarantine.strategy", "got 'hide', expected 'move', 'retag' or 'lock'"),
        (
            9,
            "repositories[0].vulnerabilities.maxSeverity",
            "got 'severe', expected a severity; valid: unknown, negligible, low, medium, high, "
            "critical",
        ),
        (
            10,
            "repositories[0].vulnerabilities.scanTimeout",
            "got 30, expected a duration like 30s, 5m, 12h, 7d or 2w; add a unit, e.g. 300s or 7d",
        ),
        (
            12,
            "repositories[0].tags.pattern",
            "invalid regular expression '^v(1': missing ), unterminated subpattern at position 2",
        ),
        (
            13,
            "repositories[0].tags.forbidden[1]",
            "got false, expected a string (YAML reads yes/no/on/off/true/false as booleans: "
            "quote the value)",
        ),
        (
            16,
            "repositories[0].retention.keep[0].mostRecent",
            "got 0, expected a value greater than or equal to 1",
        ),
        (
            17,
            "repositories[0].retention.keep[1]",
            "got keys mostRecent, pulledWithin, expected a keep rule with exactly one of: "
            "mostRecent, semver, pulledWithin, tagMatches, pushedWithin, pullCount",
        ),
        (
            18,
            "repositories[0].retention.keep[2]",
            "got keys keepAll, expected a keep rule with exactly one of: mostRecent, semver, "
            "pulledWithin, tagMatches, pushedWithin, pullCount",
        ),
        (
            20,
            "repositories[0].retention.delete[0].untagged.olderThan",
            "got '7 days', expected a duration like 30s, 5m, 12h, 7d or 2w (one whole number "
            "and one unit: s, m, h, d or w)",
        ),
        (
            21,
            "repositories[0].retention.guard.maxShare",
            "got 1.5, expected a value less than or equal to 1",
        ),
    ]


@pytest.mark.parametrize(
    ("snippet", "line", "path", "message"),
    [
        ("defaults:\n  signatures:\n", 4, "defaults.signatures", "got null (an empty value)"),
        ("defaults:\n", 3, "defaults", "got null (an empty value)"),
        ("repositories: {match: a}\n", 3, "repositories", "got a mapping, expected a list"),
        ("repositories: [{team: a}]\n", 3, "repositories[0].match", "missing required key"),
        ("repositories: ['a/**']\n", 3, "repositories[0]", "got 'a/**', expected a mapping"),
        ("repositories: [{match: 'A/**'}]\n", 3, "repositories[0].match", "lower case"),
        (
            "defaults:\n  retention:\n    guard: {maxShare: 0}\n",
            5,
            "defaults.retention.guard.maxShare",
            "got 0, expected a value greater than 0",
        ),
        (
            "defaults:\n  retention:\n    keep: [{pulledWithin: 0s}]\n",
            5,
            "defaults.retention.keep[0].pulledWithin",
            "expected a duration greater than 0s",
        ),
        (
            "defaults:\n  retention:\n    keep: [5]\n",
            5,
            "defaults.retention.keep[0]",
            "got 5, expected a keep rule",
        ),
        (
            "defaults:\n  retention:\n    delete: [{untagged: 7d}]\n",
            5,
            "defaults.retention.delete[0].untagged",
            "got '7d', expected a mapping",
        ),
        (
            "defaults:\n  signatures: {cosign: {keys: []}}\n",
            4,
            "defaults.signatures.cosign.keys",
            "got 0 items, expected at least 1",
        ),
        (
            "defaults:\n  signatures: {cosign: {keys: [keys/k.pub]}}\n",
            4,
            "defaults.signatures.cosign.keys[0]",
            "did you mean 'file://keys/k.pub'",
        ),
        (
            "defaults:\n  signatures:\n    notation:\n      trustPolicy: secret://tp\n"
            "      trustStore: file://ts\n",
            6,
            "defaults.signatures.notation.trustPolicy",
            "got secret:// for a notation trust policy, expected one of: file://PATH",
        ),
        (
            "defaults:\n  signatures: {gracePeriod: 1m}\n",
            4,
            "defaults.signatures",
            "signatures are required but no verifier is configured",
        ),
        (
            "defaults:\n  tags: {forbidden: ['bad tag']}\n",
            4,
            "defaults.tags.forbidden[0]",
            "not a valid tag and can never match",
        ),
        (
            "defaults:\n  vulnerabilities:\n    maxSeverity: low\n    allow:\n"
            "      - {id: CVE-1, until: 2027-02-30, reason: r}\n",
            7,
            "defaults.vulnerabilities.allow[0].until",
            "got '2027-02-30', expected a real date YYYY-MM-DD",
        ),
        (
            "defaults:\n  vulnerabilities:\n    maxSeverity: low\n    allow:\n"
            "      - {id: CVE-1, until: 2027-01-01, reason: r}\n"
            "      - {id: CVE-1, until: 2028-01-01, reason: r}\n",
            8,
            "defaults.vulnerabilities.allow[1].id",
            "duplicate id 'CVE-1' (first at allow[0])",
        ),
        (
            "defaults:\n  quarantine: {repository: 'q/{repo}'}\n",
            4,
            "defaults.quarantine.repository",
            "unknown placeholder {repo}",
        ),
        (
            "notifications:\n  channels:\n    x: {type: slak, url: 'https://h'}\n",
            5,
            "notifications.channels.x",
            "unknown type 'slak'; valid: slack, teams, webhook, sns, pubsub, eventgrid, "
            "stdout, file",
        ),
        (
            "notifications:\n  channels:\n    x: {url: 'https://h'}\n",
            5,
            "notifications.channels.x",
            "missing required key 'type'",
        ),
        (
            "notifications:\n  channels:\n    x: {type: sns, topicArn: 'my-topic'}\n",
            5,
            "notifications.channels.x.topicArn",
            "expected arn:aws:sns:REGION:ACCOUNT:TOPIC",
        ),
        (
            "notifications:\n  channels:\n    x: {type: webhook, url: 'http://hooks.example.com'}\n",
            5,
            "notifications.channels.x.url",
            "plain http is allowed only for loopback hosts",
        ),
        (
            "notifications:\n  channels:\n    x: {type: webhook, url: 'https://h', secret: s3cr3t}\n",  # noqa: E501
            5,
            "notifications.channels.x.secret",
            "expected a channel secret: secret://NAME",
        ),
        (
            "notifications:\n  routes:\n    - {match: {action: [delet]}, to: [a]}\n",
            5,
            "notifications.routes[0].match.action[0]",
            "got 'delet', expected 'quarantine', 'release', 'promote', 'tag', 'untag', "
            "'delete', 'rollback', 'none' or 'access'",
        ),
        (
            "notifications:\n  routes:\n    - {to: []}\n",
            5,
            "notifications.routes[0].to",
            "got 0 items, expected at least 1",
        ),
        (
            "inventory:\n  files: [in-use.txt]\n",
            4,
            "inventory.files[0]",
            "did you mean 'file://in-use.txt'",
        ),
    ],
)
def test_single_problems(snippet: str, line: int, path: str, message: str) -> None:
    problem = only(HEAD + snippet)
    assert (problem.line, problem.path) == (line, path)
    assert message in problem.message


def test_header_problems() -> None:
    assert problems("kind: Policy\n") == [(1, "apiVersion", "missing required key 'apiVersion'")]
    assert problems("apiVersion: regwarden/v2\nkind: Policy\n") == [
        (1, "apiVersion", "got 'regwarden/v2', expected 'regwarden/v1'")
    ]
    assert problems("apiVersion: regwarden/v1\nkind: policy\n") == [
        (2, "kind", "got 'policy', expected 'Policy'")
    ]


# -- document-wide rules (second phase) --------------------------------------------------------


def test_route_targets_must_name_defined_channels() -> None:
    text = (
        HEAD
        + "notifications:\n"
        + "  channels:\n"
        + "    slack: {type: slack, url: 'secret://s'}\n"
        + "    hook: {type: webhook, url: 'https://h.example.com'}\n"
        + "  routes:\n"
        + "    - {match: {team: a}, to: [slack]}\n"
        + "    - match: {team: b}\n"
        + "      to:\n"
        + "        - hook\n"
        + "        - slak\n"
    )
    assert problems(text) == [
        (
            12,
            "notifications.routes[1].to[1]",
            "unknown channel 'slak'; defined channels: hook, slack",
        )
    ]
    assert problems(HEAD + "notifications:\n  routes: [{to: [x]}]\n") == [
        (
            4,
            "notifications.routes[0].to[0]",
            "unknown channel 'x'; defined channels: none are defined",
        )
    ]


def test_entries_that_can_never_apply_are_errors() -> None:
    text = (
        HEAD
        + "repositories:\n"
        + "  - match: 'a/*'\n"
        + "  - match: 'b/**'\n"
        + "  - match: 'a/*'\n"
        + "  - match: '**'\n"
        + "  - match: 'c'\n"
    )
    assert problems(text) == [
        (
            6,
            "repositories[2].match",
            "duplicate match 'a/*': repositories[0] has the same glob and comes first, so this "
            "entry can never apply",
        ),
        (
            8,
            "repositories[4].match",
            "entry can never apply: repositories[3] matches every repository ('**') and comes "
            "first; move '**' to the end",
        ),
    ]


# -- YAML level --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "path", "message"),
    [
        (
            HEAD + "defaults:\n  mode: audit\n  team: a\n  mode: enforce\n",
            6,
            "defaults.mode",
            "duplicate key 'mode' (first on line 4); each key may appear once",
        ),
        (
            HEAD + "kind: Policy\n",
            3,
            "kind",
            "duplicate key 'kind' (first on line 2)",
        ),
        (
            HEAD + "notifications:\n  channels:\n    a: {type: stdout}\n    'a': {type: stdout}\n",
            6,
            "notifications.channels.a",
            "duplicate key 'a' (first on line 5)",
        ),
        (
            HEAD + "repositories:\n  - {match: a, team: x, team: y}\n",
            4,
            "repositories[0].team",
            "duplicate key 'team'",
        ),
        (HEAD + "defaults: {mode: audit\n", 4, "(root)", "YAML syntax error"),
        (HEAD + "defaults:\n  mode: audit\n   team: x\n", 5, "(root)", "YAML syntax error"),
        (HEAD + "---\nkind: Policy\n", 3, "(root)", "expected a single document"),
        (
            HEAD + "defaults: !!python/object:os.system {}\n",
            3,
            "(root)",
            "could not determine a constructor",
        ),
        ("- a\n- b\n", 1, "(root)", "got a list, expected a mapping"),
        ("just text\n", 1, "(root)", "got a str value, expected a mapping"),
        ("a: &a [1, *a]\n", 1, "a[1]", "recursive alias"),
    ],
)
def test_yaml_level_problems(text: str, line: int, path: str, message: str) -> None:
    problem = only(text)
    assert (problem.line, problem.path) == (line, path)
    assert message in problem.message


def test_empty_documents() -> None:
    for text in ("", "# only a comment\n", "---\n"):
        problem = only(text)
        assert (problem.line, problem.path) == (None, "(root)")
        assert "the policy is empty" in problem.message


def test_alias_bombs_are_refused_quickly() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        prev = f"*a{i - 1}"
        lines.append(f"a{i}: &a{i} [{', '.join([prev] * 10)}]")
    problem = only("\n".join(lines) + "\n")
    assert "expands to more than 100000 nodes" in problem.message
    assert problem.line is not None and problem.line <= 9


def test_anchors_and_merge_keys_work_and_errors_point_into_the_anchor() -> None:
    text = (
        HEAD
        + "x-common: &common\n"
        + "  vulnerabilities: {maxSeverity: high}\n"
        + "  tags: {pattern: semver}\n"
    )
    # `x-common` is not a policy key: the anchor trick needs a place the schema allows
    assert problems(text)[0][1] == "x-common"
    text = (
        HEAD
        + "defaults: &base\n"
        + "  vulnerabilities: {maxSeverity: high}\n"
        + "  tags: {pattern: '^v(1'}\n"
        + "repositories:\n"
        + "  - <<: *base\n"
        + "    match: a/**\n"
        + "    team: a\n"
    )
    found = problems(text)
    assert [(line, path) for line, path, _ in found] == [
        (5, "defaults.tags.pattern"),
        (5, "repositories[0].tags.pattern"),
    ]
    good = text.replace("'^v(1'", "'^v1'")
    policy = load_policy_text(good, source="t.yaml", base_dir="/")
    effective = policy.for_repository("a/b")
    assert effective.team == "a" and effective.tags is not None
    assert effective.tags.pattern is not None and effective.tags.pattern.matches("v1.0")


def test_yaml_timestamps_and_booleans_stay_in_their_lane() -> None:
    # a YAML timestamp for `until` is fine; for a string key it is still a string
    text = HEAD + "defaults:\n  team: 2024-01-01\n"
    assert problems(text) == []
    policy = load_policy_text(text, source="t.yaml", base_dir="/")
    assert policy.defaults.team == "2024-01-01"


# -- PolicyError and files ---------------------------------------------------------------------


def test_load_raises_policy_error_with_every_problem_and_its_line() -> None:
    with pytest.raises(PolicyError) as caught:
        load_policy_text(VALUES, source="regwarden.yaml", base_dir="/")
    error = caught.value
    assert error.exit_code == 2
    assert len(error.problems) == 11
    assert error.problems[0] == (
        "defaults.mode (line 4)",
        "got 'enforced', expected 'enforce' or 'audit'",
    )
    assert ("repositories[0].retention.guard.maxShare (line 21)") in dict(error.problems)
    text = str(error)
    assert text.startswith("invalid policy regwarden.yaml: 11 problems\n")
    assert "  regwarden.yaml:9: repositories[0].vulnerabilities.maxSeverity: got 'severe'" in text


def test_problems_are_in_line_order_and_print_with_their_line() -> None:
    found = validate_text(VALUES)
    lines = [p.line for p in found]
    assert lines == sorted(lines)  # type: ignore[type-var]
    assert str(found[0]) == "line 4: defaults.mode: got 'enforced', expected 'enforce' or 'audit'"


def test_validate_file(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(HEAD, encoding="utf-8")
    assert validate_file(good) == []
    bad = tmp_path / "bad.yaml"
    bad.write_text(HEAD + "defaults:\n  mode: audit\n  mode: audit\n", encoding="utf-8")
    (problem,) = validate_file(bad)
    assert (problem.line, problem.path) == (5, "defaults.mode")
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * (1024 * 1024 + 1))
    (problem,) = validate_file(big)
    assert problem.path == "(file)" and "larger than" in problem.message


def test_docs_merge_key_example_overrides_one_key() -> None:
    text = HEAD + (
        "defaults: &base\n"
        "  vulnerabilities: &vulns {maxSeverity: high, fixableOnly: true}\n"
        "repositories:\n"
        '  - match: "legacy/**"\n'
        "    vulnerabilities: {<<: *vulns, maxSeverity: critical}\n"
    )
    policy = load_policy_text(text, source="t.yaml", base_dir="/")
    legacy = policy.for_repository("legacy/app").vulnerabilities
    other = policy.for_repository("web/app").vulnerabilities
    assert legacy is not None and other is not None
    assert (str(legacy.max_severity), legacy.fixable_only) == ("critical", True)
    assert (str(other.max_severity), other.fixable_only) == ("high", True)


def test_sexagesimal_numbers_are_not_durations() -> None:
    problem = only(HEAD + "defaults:\n  signatures: {required: false, gracePeriod: 5:30}\n")
    assert problem.path == "defaults.signatures.gracePeriod"
    assert problem.message.startswith("got 330, expected a duration")


def test_relative_files_need_a_policy_directory() -> None:
    policy = Policy.model_validate({"apiVersion": "regwarden/v1", "kind": "Policy"})
    assert policy.base_dir is None
    with pytest.raises(UsageError, match="not loaded from a file"):
        policy.resolve_file(Location.parse("file://keys/k.pub"))
    assert str(policy.resolve_file(Location.parse("file:///k.pub"))) == "/k.pub"
