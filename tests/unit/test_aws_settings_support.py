"""The AWS functions load their policy once per cold start and refuse one with settings no
code would carry out, as `regwarden policy validate` reports them (never "valid" and then
ignored at run time)."""

from __future__ import annotations

from pathlib import Path

import pytest

from functions.aws._settings import load_policy
from regwarden.errors import PolicyError

HEAD = "apiVersion: regwarden/v1\nkind: Policy\n"


def test_a_bundled_policy_with_unread_settings_fails_the_cold_start(tmp_path: Path) -> None:
    bundled = tmp_path / "regwarden.yaml"
    bundled.write_text(
        HEAD + "defaults:\n"
        "  quarantine: {strategy: lock}\n"
        "  vulnerabilities: {maxSeverity: high, sources: [ecr, defender]}\n"
    )
    with pytest.raises(PolicyError) as raised:
        load_policy(str(bundled))
    assert raised.value.exit_code == 2
    # defender is read (on ACR) and no registry is named: only lock is refused
    assert [path for path, _ in raised.value.problems] == ["defaults.quarantine.strategy"]
    assert "refusing to start" in raised.value.message


def test_a_policy_that_ecr_can_carry_out_loads(tmp_path: Path) -> None:
    bundled = tmp_path / "regwarden.yaml"
    bundled.write_text(
        HEAD + "defaults:\n"
        "  quarantine: {strategy: retag}\n"
        "  vulnerabilities: {maxSeverity: high, sources: [ecr, inspector]}\n"
    )
    policy = load_policy(str(bundled))
    assert policy.defaults.quarantine is not None
    assert policy.defaults.quarantine.strategy == "retag"
