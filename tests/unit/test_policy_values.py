"""Policy values: durations, severities, dates and allowance expiry, regexes, tag patterns,
locations and secrets, the quarantine template."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path, PurePosixPath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from regwarden.errors import UsageError
from regwarden.model import Severity
from regwarden.policy import (
    Allowance,
    Location,
    LocationScheme,
    Quarantine,
    RouteMatch,
    Signatures,
    TagPattern,
    Vulnerabilities,
    format_duration,
    is_semver_tag,
    parse_duration,
    parse_severity,
    resolve_file,
    resolve_secret,
    secret_env_var,
)

# -- durations ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("5m", timedelta(minutes=5)),
        ("12h", timedelta(hours=12)),
        ("7d", timedelta(days=7)),
        ("2w", timedelta(days=14)),
        ("0s", timedelta(0)),
        ("180d", timedelta(days=180)),
        ("90m", timedelta(minutes=90)),
        (" 7d ", timedelta(days=7)),
    ],
)
def test_durations_parse(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("7", "expected a duration like"),
        (7, "add a unit"),
        (1.5, "add a unit"),
        (True, "expected a duration like"),
        ("1h30m", "one whole number and one unit"),
        ("1.5h", "one whole number and one unit"),
        ("-5m", "one whole number and one unit"),
        ("5 m", "one whole number and one unit"),
        ("5M", "one whole number and one unit"),
        ("5y", "one whole number and one unit"),
        ("d", "one whole number and one unit"),
        ("", "one whole number and one unit"),
        ("PT5M", "one whole number and one unit"),
        (None, "expected a duration like"),
        ("99999999999999d", "too long"),
    ],
)
def test_bad_durations_are_rejected(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_duration(value)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(days=7), "7d"),
        (timedelta(days=14), "14d"),
        (timedelta(hours=36), "36h"),
        (timedelta(minutes=90), "90m"),
        (timedelta(seconds=61), "61s"),
        (timedelta(0), "0s"),
    ],
)
def test_durations_format_in_the_largest_exact_unit(value: timedelta, text: str) -> None:
    assert format_duration(value) == text


@given(amount=st.integers(min_value=0, max_value=10**6), unit=st.sampled_from("smhdw"))
def test_duration_round_trip(amount: int, unit: str) -> None:
    value = parse_duration(f"{amount}{unit}")
    assert parse_duration(format_duration(value)) == value


# -- severities --------------------------------------------------------------------------------


def test_severities_are_ordered_lowest_to_highest() -> None:
    names = ["unknown", "negligible", "low", "medium", "high", "critical"]
    parsed = [parse_severity(n) for n in names]
    assert parsed == sorted(parsed)
    assert all(a < b for a, b in itertools.pairwise(parsed))
    assert [str(s) for s in parsed] == names
    assert parse_severity("CRITICAL") is Severity.CRITICAL
    assert parse_severity(Severity.LOW) is Severity.LOW


@pytest.mark.parametrize("value", ["important", "moderate", "severe", "", 3, None])
def test_non_canonical_severities_are_rejected(value: object) -> None:
    with pytest.raises(ValueError, match="valid: unknown, negligible, low, medium, high, critical"):
        parse_severity(value)


def test_max_severity_is_the_highest_that_passes() -> None:
    gate = Vulnerabilities(max_severity=Severity.HIGH)
    failing = [s for s in Severity if s > gate.max_severity]
    assert failing == [Severity.CRITICAL]


# -- dates and allowances ----------------------------------------------------------------------

ALLOW = Allowance(id="CVE-2024-6119", until=date(2027, 1, 31), reason="not reachable")


@pytest.mark.parametrize(
    ("now", "active"),
    [
        (datetime(2026, 6, 1, tzinfo=UTC), True),
        (datetime(2027, 1, 31, 0, 0, tzinfo=UTC), True),
        (datetime(2027, 1, 31, 23, 59, 59, 999_000, tzinfo=UTC), True),
        (datetime(2027, 1, 31, 23, 59, 59, 999_999, tzinfo=UTC), True),
        (datetime(2027, 2, 1, 0, 0, tzinfo=UTC), False),
        (datetime(2027, 2, 1, 0, 0, 0, 1, tzinfo=UTC), False),
        # UTC, not local time: 20:00 on Jan 31 in New York is 01:00 Feb 1 UTC
        (datetime(2027, 1, 31, 20, 0, tzinfo=timezone(timedelta(hours=-5))), False),
        # 08:00 Feb 1 in Tokyo is still 23:00 Jan 31 UTC
        (datetime(2027, 2, 1, 8, 0, tzinfo=timezone(timedelta(hours=9))), True),
    ],
)
def test_until_is_inclusive_through_the_end_of_the_day_utc(now: datetime, active: bool) -> None:
    assert ALLOW.active(now) is active
    assert ALLOW.expires_at == datetime(2027, 2, 1, tzinfo=UTC)


def test_allowance_needs_an_aware_now() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        ALLOW.active(datetime(2027, 1, 1))  # the point of the test


@pytest.mark.parametrize(
    ("until", "ok"),
    [
        ("2027-01-31", True),
        (date(2027, 1, 31), True),
        ("2027-02-29", False),
        ("2027-1-31", False),
        ("31.01.2027", False),
        ("2027-01-31T00:00:00Z", False),
        (datetime(2027, 1, 31, tzinfo=UTC), False),
        (20270131, False),
    ],
)
def test_until_must_be_a_plain_date(until: object, ok: bool) -> None:
    data = {"id": "CVE-1", "until": until, "reason": "r"}
    if ok:
        assert Allowance.model_validate(data).until == date(2027, 1, 31)
    else:
        with pytest.raises(ValueError, match="expected a"):
            Allowance.model_validate(data)


# -- regexes and tag patterns ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "tag", "expected"),
    [
        ("semver", "1.2.3", True),
        ("semver", "v1.2.3", True),
        ("semver", "1.2.3-rc.1", True),
        ("semver", "1.2", False),
        ("semver", "latest", False),
        ("semver", "01.2.3", False),
        ("^release-[0-9]+$", "release-12", True),
        ("^release-[0-9]+$", "release-12a", False),
        ("release", "pre-release-1", True),  # unanchored: searched anywhere
        ("^release", "pre-release-1", False),
    ],
)
def test_tag_patterns(pattern: str, tag: str, expected: bool) -> None:
    assert TagPattern.parse(pattern).matches(tag) is expected


def test_semver_tags() -> None:
    assert is_semver_tag("V2.0.0") and not is_semver_tag("vv2.0.0")


@pytest.mark.parametrize("pattern", ["^rel(", "[a-", "*x", "(?P<n>a)(?P<n>b)"])
def test_bad_regex_is_reported_with_the_pattern(pattern: str) -> None:
    with pytest.raises(ValueError, match="invalid regular expression") as caught:
        TagPattern.parse(pattern)
    assert repr(pattern) in str(caught.value)


# -- locations ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "scheme", "host", "path"),
    [
        ("file://keys/release.pub", LocationScheme.FILE, "", "keys/release.pub"),
        ("file:///etc/regwarden/k.pub", LocationScheme.FILE, "", "/etc/regwarden/k.pub"),
        ("s3://bucket/keys/k.pub", LocationScheme.S3, "bucket", "keys/k.pub"),
        ("gs://bucket/k.pub", LocationScheme.GS, "bucket", "k.pub"),
        ("awskms:///alias/release", LocationScheme.AWSKMS, "", "alias/release"),
        (
            "awskms://kms.eu-west-1.amazonaws.com/1234abcd-12ab-34cd-56ef-1234567890ab",
            LocationScheme.AWSKMS,
            "kms.eu-west-1.amazonaws.com",
            "1234abcd-12ab-34cd-56ef-1234567890ab",
        ),
        (
            "gcpkms://projects/p/locations/global/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1",
            LocationScheme.GCPKMS,
            "",
            "projects/p/locations/global/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1",
        ),
        (
            "azurekms://acme.vault.azure.net/release",
            LocationScheme.AZUREKMS,
            "acme.vault.azure.net",
            "release",
        ),
        (
            "secret://regwarden/slack/payments",
            LocationScheme.SECRET,
            "",
            "regwarden/slack/payments",
        ),
        (
            "https://keys.example.com/release.pub",
            LocationScheme.HTTPS,
            "keys.example.com",
            "release.pub",
        ),
        ("http://127.0.0.1:8080/hook", LocationScheme.HTTP, "127.0.0.1:8080", "hook"),
        ("http://[::1]:8080/hook", LocationScheme.HTTP, "[::1]:8080", "hook"),
        ("http://localhost/hook", LocationScheme.HTTP, "localhost", "hook"),
    ],
)
def test_locations_parse(text: str, scheme: LocationScheme, host: str, path: str) -> None:
    location = Location.parse(text)
    assert (location.scheme, location.host, location.path) == (scheme, host, path)
    assert str(location) == text


def test_inline_pem_is_a_location() -> None:
    pem = "-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----\n"
    location = Location.parse(pem)
    assert location.scheme is LocationScheme.PEM
    assert location.target == pem.strip()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("keys/release.pub", "did you mean 'file://keys/release.pub'"),
        ("ftp://host/k", "got scheme 'ftp://'"),
        ("file://", "non-empty path"),
        ("s3://bucket", "expected s3://BUCKET/KEY"),
        ("gs:///obj", "expected gs://BUCKET/KEY"),
        ("awskms://", "expected awskms://"),
        ("gcpkms://projects/p/keys/k", "expected gcpkms://projects/P/locations"),
        ("azurekms://vault", "expected azurekms://VAULT-HOST/KEY-NAME"),
        ("secret://", "expected secret://NAME"),
        ("secret://a b", "expected secret://NAME"),
        ("http://example.com/hook", "plain http is allowed only for loopback"),
        ("http://10.0.0.1/hook", "plain http is allowed only for loopback"),
        ("https:///path", "expected https://HOST"),
        ("https://host:99999/x", "valid https URL"),
        ("-----BEGIN PUBLIC KEY-----\nMFkw\n", "matching '-----END"),
        ("pem://x", "inline PEM is written as the PEM text itself"),
        ("", "expected a location"),
        (42, "expected a location"),
    ],
)
def test_bad_locations(text: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Location.parse(text)


def test_resolve_file_is_relative_to_the_policy_directory() -> None:
    base = PurePosixPath("/etc/regwarden")
    rel = Location.parse("file://keys/release.pub")
    absolute = Location.parse("file:///opt/keys/k.pub")
    assert resolve_file(rel, base) == Path("/etc/regwarden/keys/release.pub")
    assert resolve_file(absolute, base) == Path("/opt/keys/k.pub")
    with pytest.raises(ValueError, match="expected file://"):
        resolve_file(Location.parse("s3://b/k"), base)


@pytest.mark.parametrize(
    ("name", "variable"),
    [
        ("regwarden/slack/payments", "REGWARDEN_SECRET_REGWARDEN_SLACK_PAYMENTS"),
        ("secret://regwarden/hmac", "REGWARDEN_SECRET_REGWARDEN_HMAC"),
        ("hook-key.v2", "REGWARDEN_SECRET_HOOK_KEY_V2"),
        ("MixedCase", "REGWARDEN_SECRET_MIXEDCASE"),
    ],
)
def test_secret_environment_variable_names(name: str, variable: str) -> None:
    assert secret_env_var(name) == variable
    assert resolve_secret(name, {variable: "s3cr3t"}) == "s3cr3t"


def test_missing_secret_names_the_variable_not_a_value() -> None:
    env = {"REGWARDEN_SECRET_OTHER": "do-not-print"}
    with pytest.raises(UsageError, match="REGWARDEN_SECRET_REGWARDEN_HMAC is not set") as caught:
        resolve_secret("secret://regwarden/hmac", env)
    assert "do-not-print" not in str(caught.value)
    with pytest.raises(UsageError, match="is empty"):
        resolve_secret("regwarden/hmac", {"REGWARDEN_SECRET_REGWARDEN_HMAC": ""})
    with pytest.raises(UsageError, match="expected letters"):
        resolve_secret("bad name", env)


# -- sections with their own rules -------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "source", "rendered"),
    [
        ("quarantine/{repository}", "payments/api", "quarantine/payments/api"),
        ("{repository}-quarantined", "payments/api", "payments/api-quarantined"),
        ("quarantine", "payments/api", "quarantine"),
    ],
)
def test_quarantine_templates(template: str, source: str, rendered: str) -> None:
    quarantine = Quarantine(repository=template)
    assert quarantine.render(source) == rendered
    assert quarantine.holds(rendered)
    assert not quarantine.holds("unrelated/repo")


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{repository}", "own repository"),
        ("quarantine/{repo}", "unknown placeholder {repo}"),
        ("quarantine/{}", "unknown placeholder"),
        ("Quarantine/{repository}", "not a valid repository name"),
        ("quarantine//{repository}", "not a valid repository name"),
        ("quarantine/{repository", "expected '}'"),
    ],
)
def test_bad_quarantine_templates(template: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Quarantine(repository=template)


def test_required_signatures_need_a_verifier() -> None:
    with pytest.raises(ValueError, match="no verifier is configured"):
        Signatures()
    assert Signatures(required=False).cosign is None


@pytest.mark.parametrize(
    ("match", "alert", "expected"),
    [
        ({}, {}, True),
        ({"team": "payments"}, {"team": "payments"}, True),
        ({"team": "payments"}, {"team": "search"}, False),
        ({"team": "payments"}, {}, False),
        ({"severity": ["high", "critical"]}, {"severity": Severity.CRITICAL}, True),
        ({"severity": ["critical"]}, {"severity": Severity.HIGH}, False),
        ({"severity": ["critical"]}, {}, False),
        ({"action": ["quarantine"]}, {"action": "quarantine"}, True),
        ({"action": ["delete"]}, {"action": "quarantine"}, False),
        ({"repository": "payments/**"}, {"repository": "payments/api"}, True),
        ({"repository": "payments/**"}, {"repository": "search/api"}, False),
        (
            {"team": "payments", "severity": ["critical"]},
            {"team": "payments", "severity": Severity.LOW},
            False,
        ),
    ],
)
def test_route_match(match: dict[str, object], alert: dict[str, object], expected: bool) -> None:
    route = RouteMatch.model_validate(match, by_alias=True, by_name=False)
    full = {"team": None, "severity": None, "action": None, "repository": None, **alert}
    assert route.matches(**full) is expected  # type: ignore[arg-type]
