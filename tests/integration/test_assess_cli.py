"""`regwarden assess HOST/GLOB` as a platform team runs it (a child process) on the real
local registry: images signed with the project's own cosign signer and unsigned ones, in
repositories of two teams and one no entry covers; counts per team, the top reasons, and
that nothing changed (the registry's repositories, tags and manifests, and no ledger).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from support.cli import run_cli
from support.registries import PushImage

from regwarden.devtools import LocalRegistry, make_multiarch, push_image
from regwarden.oci import RegistryClient
from regwarden.signatures import publish, sign_legacy
from regwarden.signatures.keys import generate_private_key

pytestmark = pytest.mark.integration


def snapshot(client: RegistryClient, prefix: str) -> dict[str, Any]:
    """Every repository under `prefix` (and any quarantine copy) with its tags → digests."""
    repos = sorted(r for r in client.catalog() if prefix in r)
    return {
        r: {t: client.head_manifest(r, t).digest for t in sorted(client.list_tags(r))}
        for r in repos
    }


def test_assess_counts_what_enforce_would_do_per_team_and_changes_nothing(
    registry: LocalRegistry, client: RegistryClient, repo: str, push: PushImage, tmp_path: Path
) -> None:
    key = generate_private_key("ecdsa-p256")
    pem = key.public_key.pem
    (tmp_path / "cosign.pub").write_bytes(pem if isinstance(pem, bytes) else pem.encode())
    signed = "signatures: {required: true, cosign: {keys: ['file://cosign.pub']}, gracePeriod: 1h}"
    policy = tmp_path / "regwarden.yaml"
    policy.write_text(
        "apiVersion: regwarden/v1\nkind: Policy\ndefaults: {mode: enforce}\nrepositories:\n"
        f"  - match: '{repo}/pay/**'\n    team: payments\n    {signed}\n"
        f"  - match: '{repo}/web/**'\n    team: web\n    mode: audit\n    {signed}\n"
    )
    pay, web, tools = f"{repo}/pay/api", f"{repo}/web/site", f"{repo}/tools/lint"
    push(pay, "1.0", seed=11)  # unsigned
    good = push(pay, "1.1", seed=12).manifest_digest
    publish(
        client,
        pay,
        sign_legacy(image_digest=good, docker_reference=f"{registry.host}/{pay}", key=key),
    )
    push_image(client, pay, make_multiarch(layers=1, layer_size=64, seed=13), tag="2.0")  # unsigned
    push(web, "3.0", seed=14)  # unsigned, but web is in audit mode
    push(tools, "0.1", seed=15)  # no entry covers it: the defaults alone (no signature rule)
    push(f"{repo}-other/pay/api", "9.9", seed=16)  # outside the glob: not judged
    before = snapshot(client, repo)
    ledger = tmp_path / "state" / "ledger.db"
    env = dict(os.environ, REGWARDEN_LEDGER=str(ledger))

    proc = run_cli(
        "assess", f"{registry.host}/{repo}/**", "--policy", str(policy), "--concurrency", "3",
        "-o", "json", env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["registry"] == registry.host and doc["repositoriesMatched"] == 3
    assert doc["judged"] == 5  # the index once, with its platforms; the .sig not at all
    teams = {t["team"]: t for t in doc["teams"]}
    assert set(teams) == {"payments", "web", None}
    payments = teams["payments"]
    assert (payments["images"], payments["quarantine"], payments["pass"]) == (3, 2, 1)
    (top,) = payments["topReasons"]
    assert top["images"] == 2 and top["reason"].startswith("signatures:")
    assert "not signed" in top["reason"]
    # audit mode only warns today; enforce would quarantine it, and that is what assess counts
    assert (teams["web"]["images"], teams["web"]["quarantine"]) == (1, 1)
    (web_row,) = [r for r in doc["images"] if r["team"] == "web"]
    assert (web_row["verdict"], web_row["mode"], web_row["would"]) == (
        "WARN",
        "audit",
        "quarantine",
    )
    assert (teams[None]["images"], teams[None]["pass"]) == (1, 1)
    assert doc["totals"] == {"pass": 2, "warn": 0, "quarantine": 3, "pending": 0, "error": 0}
    assert not any("-other/" in r["image"] for r in doc["images"])

    table = run_cli("assess", f"{registry.host}/{repo}/**", "--policy", str(policy), env=env)
    assert table.returncode == 0, table.stderr
    assert "payments" in table.stdout and "3 would be quarantined" in table.stdout
    assert "judging" not in table.stderr  # stderr is not a terminal: no progress bar

    assert snapshot(client, repo) == before  # nothing moved, retagged or added
    assert not ledger.exists()  # and no ledger was written (or even created)


@pytest.mark.parametrize(
    ("target", "message"),
    [("https://127.0.0.1:5000/a/**", "without a scheme"), ("127.0.0.1:5000/A/**", "lower case")],
)
def test_assess_refuses_a_bad_target(target: str, message: str, tmp_path: Path) -> None:
    policy = tmp_path / "regwarden.yaml"
    policy.write_text("apiVersion: regwarden/v1\nkind: Policy\n")
    proc = run_cli("assess", target, "--policy", str(policy))
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
