"""The `registries` section, the scan sources each registry serves and reads by default, and
the support check that `policy validate`, `serve`, `invoke` and the functions share."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from regwarden.cli import main
from regwarden.errors import PolicyError
from regwarden.policy import (
    REGISTRY_KINDS,
    Policy,
    check_support,
    ensure_supported,
    load_policy_text,
    native_sources,
    policy_json_schema,
    scan_sources,
    validate_text,
)
from regwarden.policy._registries import KIND_SOURCES
from regwarden.providers import provider_kind

HEAD = "apiVersion: regwarden/v1\nkind: Policy\n"
ECR = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"
HARBOR = "harbor.example.com"
KEYS = 'signatures: {cosign: {keys: ["file://k.pub"]}}'


def load(text: str) -> Policy:
    return load_policy_text(HEAD + text, source="test.yaml", base_dir="/policies")


def problems(text: str, **kw: str) -> list[tuple[int | None, str, str]]:
    return [(p.line, p.path, p.message) for p in validate_text(HEAD + text, **kw)]  # type: ignore[arg-type]


def supported(text: str, registry: str | None = None) -> list[tuple[int | None, str, str]]:
    return [
        (p.line, p.path, p.message)
        for p in validate_text(HEAD + text, support=True, registry=registry)
    ]


# -- the section -------------------------------------------------------------------------------


def test_registries_parse_with_hosts_lowercased_and_defaults() -> None:
    policy = load(
        "registries:\n"
        f"  - {{host: Harbor.Example.com, kind: harbor, api: 'https://{HARBOR}/api/v2.0/'}}\n"
        f"  - {{host: {ECR}, kind: ecr}}\n"
        "  - {host: '127.0.0.1:5000', kind: distribution}\n"
        "  - {host: 'zot.internal:8080', kind: distribution, insecure: true}\n"
    )
    harbor, ecr, local, zot = policy.registries
    assert (harbor.host, harbor.kind, harbor.api) == (
        HARBOR,
        "harbor",
        f"https://{HARBOR}/api/v2.0",
    )
    assert (ecr.kind, ecr.api, ecr.insecure) == ("ecr", None, False)
    assert local.host == "127.0.0.1:5000" and zot.insecure is True
    assert policy.registry("HARBOR.example.com") is harbor
    assert policy.registry("other.example.com") is None


def test_kind_is_as_listed_else_from_the_host_name() -> None:
    policy = load(f"registries:\n  - {{host: {HARBOR}, kind: harbor}}\n")
    assert policy.registry_kind(HARBOR) == "harbor"
    assert policy.registry_kind(ECR) == "ecr"  # not listed: by its name
    assert policy.registry_kind("europe-docker.pkg.dev") == "gar"
    assert policy.registry_kind("acme.azurecr.io") == "acr"
    assert policy.registry_kind("registry.example.com") == "distribution"
    # the provider follows the listed kind; an unlisted host, its name
    assert provider_kind(HARBOR, "harbor") == provider_kind("x", "distribution") == "oci"
    assert provider_kind(ECR) == "ecr" and provider_kind("registry.example.com") == "oci"


@pytest.mark.parametrize(
    ("host", "kind"),
    [
        ("gcr.io", "gar"),  # Artifact Registry serves gcr.io since Container Registry closed
        ("us.gcr.io", "gar"),
        ("EU.gcr.io:443", "gar"),
        ("asia.gcr.io", "gar"),
        ("mirror.gcr.io", "distribution"),  # Google's Docker Hub mirror: not Artifact Registry
        ("evil-gcr.io", "distribution"),
        ("gcr.io.example.com", "distribution"),
    ],
)
def test_gcr_io_hosts_are_artifact_registry(host: str, kind: str) -> None:
    assert load("").registry_kind(host) == kind


@pytest.mark.parametrize(
    ("entry", "path", "message"),
    [
        (
            "{host: r.example.com, kind: quay}",
            "registries[0].kind",
            "got 'quay', expected 'distribution', 'harbor', 'ecr', 'gar' or 'acr'",
        ),
        (
            "{host: 'https://r.example.com', kind: distribution}",
            "registries[0].host",
            "got 'https://r.example.com', expected host[:port] without a scheme "
            "(e.g. 'r.example.com')",
        ),
        (
            "{host: 'r.example.com/team', kind: distribution}",
            "registries[0].host",
            "got 'r.example.com/team', expected a registry host[:port] such as "
            "'registry.example.com' or '127.0.0.1:5000' (no path)",
        ),
        (
            "{host: r.example.com, kind: harbor, api: 'harbor.example.com'}",
            "registries[0].api",
            "got 'harbor.example.com', expected https://HOST[:PORT][/api/v2.0]",
        ),
        (
            "{host: r.example.com, kind: harbor, api: 'https://h.example.com/?x=1'}",
            "registries[0].api",
            "got 'https://h.example.com/?x=1', expected a URL without query or fragment",
        ),
        (
            "{host: r.example.com, kind: harbor, api: 'http://h.example.com'}",
            "registries[0].api",
            "got 'http://h.example.com': plain http to a non-loopback host; expected "
            "https://, or 'insecure: true' if you really mean it",
        ),
        (
            "{host: r.example.com, kind: distribution, api: 'https://r.example.com'}",
            "registries[0].api",
            "'api' is read only for kind harbor, not 'distribution'; remove it",
        ),
        (
            "{host: r.example.com, kind: ecr}",
            "registries[0].host",
            "got 'r.example.com' for kind 'ecr', expected ACCOUNT.dkr.ecr.REGION.amazonaws.com",
        ),
        (
            "{host: r.example.com, kind: harbor, clair: x}",
            "registries[0].clair",
            "got 'x', expected a mapping",
        ),
        (
            "{host: r.example.com, kind: harbor, clair: {url: 'https://c.example.com', iss: x}}",
            "registries[0].clair.iss",
            "unknown key 'iss'; valid keys: url, psk",
        ),
    ],
)
def test_bad_entries_are_reported_at_their_path(entry: str, path: str, message: str) -> None:
    assert problems(f"registries:\n  - {entry}\n") == [(4, path, message)]


def test_plain_http_api_is_fine_on_loopback_or_when_insecure() -> None:
    load("registries:\n  - {host: r.example.com, kind: harbor, api: 'http://127.0.0.1:9000'}\n")
    load(
        "registries:\n  - {host: r.example.com, kind: harbor, api: 'http://h.lan', "
        "insecure: true}\n"
    )


def test_duplicate_hosts_are_an_error_whatever_their_case() -> None:
    text = (
        "registries:\n"
        "  - {host: r.example.com, kind: harbor}\n"
        "  - {host: R.Example.com, kind: distribution}\n"
    )
    assert problems(text) == [
        (
            5,
            "registries[1].host",
            "duplicate host 'r.example.com' (first at registries[0])",
        )
    ]


def test_the_schema_has_the_section() -> None:
    schema = json.dumps(policy_json_schema())
    assert '"registries"' in schema
    entry = policy_json_schema()["$defs"]["RegistryEntry"]
    assert entry["properties"]["kind"]["enum"] == ["distribution", "harbor", "ecr", "gar", "acr"]
    assert set(entry["required"]) == {"host", "kind"}


# -- scan sources: what each registry reads ----------------------------------------------------


def sources_for(text: str, host: str, repository: str = "app") -> tuple[str, ...]:
    policy = load(text)
    return scan_sources(policy.for_repository(repository), policy, host)


def test_default_sources_are_the_registry_own_plus_cosign_vuln_with_signers() -> None:
    vuln = "defaults:\n  vulnerabilities: {maxSeverity: high}\n"
    listed = f"registries:\n  - {{host: {HARBOR}, kind: harbor}}\n"
    assert sources_for(vuln, ECR) == ("ecr",)  # unlisted ECR host: by its name
    assert sources_for(listed + vuln, HARBOR) == ("harbor",)
    assert sources_for(vuln, HARBOR) == ()  # unlisted: distribution, no scanner of its own
    assert sources_for(vuln, "127.0.0.1:5000") == ()
    signed = vuln + f"  {KEYS}\n"
    assert sources_for(signed, ECR) == ("ecr", "cosign-vuln")
    assert sources_for(listed + signed, HARBOR) == ("harbor", "cosign-vuln")
    assert sources_for(signed, "127.0.0.1:5000") == ("cosign-vuln",)
    attest = vuln + '  attestations: {keys: ["file://a.pub"]}\n'
    assert sources_for(attest, "127.0.0.1:5000") == ("cosign-vuln",)
    assert sources_for("defaults: {mode: audit}\n", ECR) == ()  # no vulnerabilities section


def test_explicit_sources_are_read_where_the_registry_serves_them() -> None:
    text = (
        f"registries:\n  - {{host: {HARBOR}, kind: harbor}}\n"
        "  - {host: 'plain.example.com', kind: distribution}\n"
        "defaults:\n"
        "  vulnerabilities: {maxSeverity: high, sources: [ecr, harbor, cosign-vuln]}\n"
    )
    assert sources_for(text, ECR) == ("ecr",)  # cosign-vuln: no signer configured
    assert sources_for(text, HARBOR) == ("harbor",)
    assert sources_for(text, "plain.example.com") == ()  # listed distribution: no harbor
    # an unlisted generic host reads an explicit harbor source, as it always did
    assert sources_for(text, "127.0.0.1:5000") == ("harbor",)
    signed = text + f"  {KEYS}\n"
    assert sources_for(signed, ECR) == ("ecr", "cosign-vuln")


# -- the support check ---------------------------------------------------------------------------


def test_sources_no_code_reads_and_lock_are_refused_with_paths_and_lines() -> None:
    text = (
        "defaults:\n"
        "  quarantine: {strategy: lock}\n"
        "  vulnerabilities:\n"
        "    maxSeverity: high\n"
        "    sources: [trivy-referrer, artifact-analysis, defender, ecr]\n"
    )
    assert problems(text) == []  # the document itself is well-formed
    found = supported(text)
    # artifact-analysis (GAR's Artifact Analysis) and defender (ACR's Defender for
    # Containers) are read: only the others are refused
    assert [(line, path) for line, path, _ in found] == [
        (4, "defaults.quarantine.strategy"),
        (7, "defaults.vulnerabilities.sources[0]"),
    ]
    assert found[0][2] == (
        "quarantine strategy 'lock' needs a registry that locks manifests (acr): no registry "
        "is listed or named; expected 'move' or 'retag', or the acr registry in 'registries'"
    )
    # trivy-referrer is read, but with requireSigned (the default) and no signer configured
    # no report could ever count
    assert found[1][2] == (
        "scan source 'trivy-referrer' counts only signed report referrers "
        "(vulnerabilities.referrers.requireSigned), but no signature key, identity or "
        "Notation trust policy is configured, so no report would ever count; expected "
        "'signatures.cosign' or 'signatures.notation', or referrers: {requireSigned: false}"
    )


def test_lock_is_taken_for_an_acr_registry_only() -> None:
    text = "defaults:\n  quarantine: {strategy: lock}\n"
    assert supported(text, registry="myreg.azurecr.io") == []
    assert supported(text, registry=ECR) == [
        (
            4,
            "defaults.quarantine.strategy",
            "quarantine strategy 'lock' needs a registry that locks manifests (acr): "
            f"{ECR} (ecr, not in registries: kind from its name) cannot; expected 'move' or "
            "'retag', or the acr registry in 'registries'",
        )
    ]


def test_a_named_registry_must_serve_every_source() -> None:
    text = "defaults:\n  vulnerabilities: {maxSeverity: high, sources: [ecr, inspector]}\n"
    assert supported(text) == []  # no registry known: some kind can serve them
    assert supported(text, registry=ECR) == []
    assert supported(text, registry="127.0.0.1:5000") == [
        (
            4,
            f"defaults.vulnerabilities.sources[{i}]",
            "registry 127.0.0.1:5000 (distribution, not in registries: kind from its name) "
            f"cannot serve scan source {source!r}; it serves: cosign-vuln, grype-referrer, "
            "harbor, trivy-referrer",
        )
        for i, source in enumerate(["ecr", "inspector"])
    ]


def test_listed_registries_must_serve_each_source_and_some_must_scan() -> None:
    text = (
        f"registries:\n  - {{host: {HARBOR}, kind: harbor}}\n"
        "repositories:\n"
        "  - match: 'a/**'\n"
        "    vulnerabilities: {maxSeverity: high, sources: [harbor, ecr]}\n"
    )
    ((line, path, message),) = supported(text)
    assert (line, path) == (7, "repositories[0].vulnerabilities.sources[1]")
    assert message == (
        f"registry {HARBOR} (harbor, registries[0]) cannot serve scan source 'ecr'; it "
        "serves: cosign-vuln, grype-referrer, harbor, trivy-referrer"
    )
    # named on the command line, an ECR host serves ecr but not harbor
    ((_, path, message),) = supported(text, registry=ECR)
    assert path == "repositories[0].vulnerabilities.sources[0]"
    assert "cannot serve scan source 'harbor'" in message
    # defaults on a distribution registry with no attestation signer: nothing would scan
    plain = "registries:\n  - {host: 'r.example.com', kind: distribution}\n"
    vuln = "defaults:\n  vulnerabilities: {maxSeverity: high}\n"
    ((line, path, message),) = supported(plain + vuln)
    assert (line, path) == (6, "defaults.vulnerabilities")
    assert message.startswith("no scan source: 'sources' is unset, registry r.example.com")
    assert supported(plain + vuln + f"  {KEYS}\n") == []  # cosign-vuln is the default
    harbor = f"registries:\n  - {{host: {HARBOR}, kind: harbor}}\n"
    assert supported(harbor + vuln) == []  # harbor scans by default


def test_cosign_vuln_needs_a_signer_in_each_combination_that_names_it() -> None:
    text = (
        "defaults:\n"
        "  vulnerabilities: {maxSeverity: high, sources: [cosign-vuln]}\n"
        f"  {KEYS}\n"
        "repositories:\n"
        "  - match: 'a/**'\n"
        "    signatures: {notation: {trustPolicy: 'file://t.json', trustStore: 'file://s'}}\n"
    )
    ((line, path, message),) = supported(text)
    assert (line, path) == (4, "defaults.vulnerabilities.sources[0]")
    assert message == (
        "scan source 'cosign-vuln' reads signed vulnerability attestations, but no attestation "
        "signer is configured (as it applies to repositories[0]); expected 'attestations' or "
        "'signatures.cosign' keys or identities"
    )


def test_listed_acr_and_gar_can_be_used() -> None:
    text = (
        "registries:\n"
        "  - {host: europe-docker.pkg.dev, kind: gar}\n"
        "  - {host: acme.azurecr.io, kind: acr}\n"
    )
    assert supported(text) == []


def test_ensure_supported_raises_a_policy_error_naming_each_setting() -> None:
    policy = load("defaults:\n  vulnerabilities: {maxSeverity: high, sources: [trivy-referrer]}\n")
    assert [p.path for p in check_support(policy)] == ["defaults.vulnerabilities.sources[0]"]
    with pytest.raises(PolicyError) as raised:
        ensure_supported(policy)
    assert raised.value.exit_code == 2
    assert "refusing to start" in raised.value.message
    assert raised.value.problems[0][0] == "defaults.vulnerabilities.sources[0]"
    ensure_supported(load("defaults:\n  vulnerabilities: {maxSeverity: high}\n"))


# -- the command -------------------------------------------------------------------------------


def validate(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        main(["policy", "validate", *args])
    out, err = capsys.readouterr()
    code = exited.value.code
    return (code if isinstance(code, int) else 1), out, err


def test_policy_validate_with_registry_reports_what_it_cannot_serve(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "regwarden.yaml"
    file.write_text(HEAD + "defaults:\n  vulnerabilities: {maxSeverity: high, sources: [ecr]}\n")
    code, out, _ = validate(capsys, str(file))
    assert (code, out.strip()) == (0, f"{file}: valid")
    code, out, err = validate(capsys, str(file), "--registry", "127.0.0.1:5000")
    assert code == 2
    assert f"{file}:4: defaults.vulnerabilities.sources[0]: registry 127.0.0.1:5000" in err
    code, out, _ = validate(capsys, str(file), "--registry", ECR, "--output", "json")
    report = json.loads(out)
    assert (code, report["valid"], report["registry"]) == (0, True, ECR)


# -- the docs say what the code does ---------------------------------------------------------------

DOCS = Path(__file__).resolve().parents[2] / "docs" / "policy.md"


def _registries_section() -> str:
    text = DOCS.read_text(encoding="utf-8")
    return text.split("\n## registries\n", 1)[1].split("\n## ", 1)[0]


def test_the_docs_table_of_kinds_is_what_the_code_applies() -> None:
    rows: dict[str, tuple[str, str]] = {}
    table = _registries_section().split("| kind | provider |", 1)[1].split("\n\n", 1)[0]
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4:
            for kind in re.findall(r"`([a-z]+)`", cells[0]):
                rows[kind] = (cells[2], cells[3])
    assert set(rows) == set(REGISTRY_KINDS)
    for kind, (serves, unset) in rows.items():
        assert set(re.findall(r"`([a-z-]+)`", serves)) == KIND_SOURCES[kind], kind
        own = set(re.findall(r"`([a-z-]+)`", unset))
        assert own == {*native_sources(kind), "cosign-vuln"}, kind
        assert "with attestation signers" in unset, kind
        host = {"ecr": ECR, "gar": "europe-docker.pkg.dev", "acr": "acme.azurecr.io"}
        listed = f"registries:\n  - {{host: '{host.get(kind, 'r.example.com')}', kind: {kind}}}\n"
        vuln = "defaults:\n  vulnerabilities: {maxSeverity: high}\n"
        assert sources_for(listed + vuln, host.get(kind, "r.example.com")) == native_sources(kind)


def test_the_docs_example_of_the_section_validates() -> None:
    block = re.search(r"```yaml\n(registries:.*?)```", _registries_section(), re.DOTALL)
    assert block is not None
    policy = load(block.group(1))
    assert [r.kind for r in policy.registries] == ["harbor", "ecr", "distribution"]
    assert check_support(policy) == []
