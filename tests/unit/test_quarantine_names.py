"""Quarantine's names: templates render, validate and match in one place, and the policy,
the pipeline's event filter and retention agree on which repositories are quarantine
repositories (those a `move` section's template renders to, and no others)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from regwarden import USER_AGENT
from regwarden.errors import NotFound
from regwarden.model import EventKind, ImageEvent
from regwarden.notify import everything_to
from regwarden.pipeline import Pipeline
from regwarden.policy import Policy, Quarantine, load_policy_text
from regwarden.quarantine_names import (
    DEFAULT_TEMPLATE,
    TAG_PREFIX,
    destination_templates,
    is_destination,
    is_quarantine_repo,
    is_quarantine_tag,
    quarantine_tag,
    quarantine_template_problem,
    render,
    sources_of,
    template_problem,
)
from regwarden.reference import ImageRef
from regwarden.retention import ImageRecord, quarantine_protections
from regwarden.store import QuarantineRecord, SqliteLedger

DIGEST = "sha256:" + hashlib.sha256(b"image").hexdigest()
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
HOST = "registry.test"

# defaults: retag (its template, the built-in one, names nothing); one entry moves to
# held/…, one retags with a template of its own, one locks.
MIXED = """\
apiVersion: regwarden/v1
kind: Policy
defaults:
  quarantine: {strategy: retag}
repositories:
  - match: "payments/**"
    quarantine: {strategy: move, repository: "held/{repository}"}
  - match: "base/**"
    quarantine: {strategy: retag, repository: "jail/{repository}"}
  - match: "vault/**"
    quarantine: {strategy: move, repository: "vault-jail"}
"""
ONLY_RETAG = """\
apiVersion: regwarden/v1
kind: Policy
defaults:
  quarantine: {strategy: retag}
"""
BUILT_IN = "apiVersion: regwarden/v1\nkind: Policy\n"


def load(text: str) -> Policy:
    return load_policy_text(text, source="test.yaml", base_dir="/policies")


def event(repository: str, *, tag: str | None = "v1", user_agent: str = "docker/27") -> ImageEvent:
    return ImageEvent(
        kind=EventKind.PUSHED,
        source="distribution",
        image=ImageRef(registry=HOST, repository=repository, tag=tag, digest=DIGEST),
        time=NOW,
        delivery_id=f"{repository}:{tag}:{user_agent}",
        media_type="application/vnd.oci.image.manifest.v1+json",
        user_agent=user_agent,
        actor="ci",
    )


def _no_registry(host: str) -> Any:
    raise NotFound(f"no registry {host} in this test")


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[SqliteLedger]:
    store = SqliteLedger(tmp_path / "ledger.db")
    yield store
    store.close()


def pipeline(policy: Policy, ledger: SqliteLedger) -> Pipeline:
    return Pipeline(
        ledger=ledger,
        rules_for=lambda _repository: None,
        registry_for=_no_registry,
        router=everything_to(),
        quarantine_templates=policy.quarantine_templates(),
    )


# -- rendering and validation ----------------------------------------------------------------


def test_render_replaces_every_placeholder_and_leaves_a_fixed_name_alone() -> None:
    assert render(DEFAULT_TEMPLATE, "team/app") == "quarantine/team/app"
    assert render("{repository}-held", "team/app") == "team/app-held"
    assert render("q/{repository}/{repository}", "a") == "q/a/a"
    assert render("jail", "team/app") == "jail"
    assert Quarantine().repository == DEFAULT_TEMPLATE
    assert Quarantine().render("team/app") == "quarantine/team/app"


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("quarantine/{repository}", None),
        ("jail", None),
        ("{repository}", "own repository"),
        (" {repository} ", "own repository"),
        ("quarantine/{repo}", "unknown placeholder {repo}"),
        ("quarantine/{repository", "expected '}'"),
        ("Quarantine/{repository}", "not a valid repository name"),
        ("quarantine//{repository}", "not a valid repository name"),
    ],
)
def test_quarantine_template_problems(template: str, problem: str | None) -> None:
    found = quarantine_template_problem(template)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found, found


def test_other_templates_may_name_the_image_own_repository() -> None:
    assert template_problem("{repository}", own_repository=None) is None
    assert template_problem("{repository}", own_repository="nope") == "nope"


# -- matching ---------------------------------------------------------------------------------


def test_only_move_sections_name_quarantine_repositories() -> None:
    sections = [
        SimpleNamespace(strategy="move", repository="held/{repository}"),
        SimpleNamespace(strategy="retag", repository="jail/{repository}"),
        SimpleNamespace(strategy="lock", repository="locked/{repository}"),
        SimpleNamespace(strategy="move", repository="held/{repository}"),
        SimpleNamespace(strategy="move", repository="a-jail"),
    ]
    assert destination_templates(sections) == ("a-jail", "held/{repository}")
    assert destination_templates([]) == ()


def test_sources_of_reads_the_source_back_out_of_the_quarantine_repository() -> None:
    templates = ("held/{repository}", "{repository}-q", "vault-jail")
    assert sources_of("held/payments/api", templates) == ["payments/api"]
    assert sources_of("payments/api-q", templates) == ["payments/api"]
    assert sources_of("vault-jail", templates) == []  # a fixed name: no source in it
    assert is_destination("vault-jail", templates)
    assert sources_of("payments/api", templates) == []
    assert not is_destination("payments/api", templates)
    assert not is_destination("held/x", ())


def test_a_repeated_placeholder_names_the_same_source_twice() -> None:
    template = "q/{repository}/{repository}"
    assert is_quarantine_repo("q/a/a", template)
    assert sources_of("q/a/a", [template]) == ["a"]
    assert not is_quarantine_repo("q/a/b", template)


def test_policy_templates_are_its_move_sections() -> None:
    assert load(MIXED).quarantine_templates() == ("held/{repository}", "vault-jail")
    assert load(ONLY_RETAG).quarantine_templates() == ()
    assert load(BUILT_IN).quarantine_templates() == (DEFAULT_TEMPLATE,)


@pytest.mark.parametrize(
    ("repository", "quarantine"),
    [
        ("held/payments/api", True),
        ("vault-jail", True),
        ("jail/base/debian", False),  # under a retag template: an ordinary repository
        ("quarantine/payments/api", False),  # the built-in template, but no move uses it
        ("payments/api", False),
        ("held", False),
    ],
)
def test_the_pipeline_and_the_policy_agree_on_quarantine_repositories(
    ledger: SqliteLedger, repository: str, quarantine: bool
) -> None:
    policy = load(MIXED)
    gate = pipeline(policy, ledger)
    assert policy.is_quarantine_repository(repository) is quarantine
    assert gate.wants(event(repository)) is not quarantine


def test_a_policy_that_never_moves_still_ignores_own_writes_and_quarantine_tags(
    ledger: SqliteLedger,
) -> None:
    gate = pipeline(load(ONLY_RETAG), ledger)
    assert gate.wants(event("quarantine/team/app"))
    assert not gate.wants(event("team/app", user_agent=f"{USER_AGENT} (gate)"))
    assert not gate.wants(event("team/app", tag=quarantine_tag(DIGEST)))


def test_retention_holds_a_move_destination_and_finds_its_source(ledger: SqliteLedger) -> None:
    policy = load(MIXED)
    other = "sha256:" + hashlib.sha256(b"other").hexdigest()
    ledger.record_quarantine(
        QuarantineRecord(
            HOST, "payments/api", DIGEST, "move", "held/payments/api", (), "test", NOW, None
        )
    )
    records = [ImageRecord(DIGEST), ImageRecord(other)]
    held = quarantine_protections(
        "held/payments/api", records, policy, ledger, registry_name=HOST
    ).quarantined
    # the recorded one since its quarantine; the unrecorded one held with no known start
    assert held == {DIGEST: NOW.timestamp(), other: None}
    ordinary = quarantine_protections(
        "jail/base/debian", records, policy, ledger, registry_name=HOST
    ).quarantined
    assert ordinary == {}


# -- tags -------------------------------------------------------------------------------------


def test_the_quarantine_tag_is_the_prefix_and_the_short_digest() -> None:
    tag = quarantine_tag(DIGEST)
    assert tag == TAG_PREFIX + DIGEST.split(":")[1][:12]
    assert is_quarantine_tag(tag, DIGEST)
    assert is_quarantine_tag(f"{TAG_PREFIX}anything")
    assert not is_quarantine_tag(f"{TAG_PREFIX}anything", DIGEST)
    assert not is_quarantine_tag("v1")
    assert not is_quarantine_tag("")
