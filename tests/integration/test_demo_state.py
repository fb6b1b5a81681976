"""`regwarden demo --state DIR` leaves what it made usable: run as a user runs it (child
processes), then `regwarden demo --state DIR` again brings its registry back on the same
address, and the `regwarden report` command it prints reports what the demo did — the
quarantined images, the signature coverage, the findings of the scans it attached."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from support.cli import run_cli

from regwarden.devtools import DEFAULT_BINARY
from regwarden.store import SqliteLedger

pytestmark = pytest.mark.integration


def _printed_command(text: str) -> list[str]:
    """The `regwarden report …` line the demo printed, as argv for this interpreter."""
    (line,) = [x.strip() for x in text.splitlines() if x.strip().startswith("regwarden --ledger")]
    words = shlex.split(line)
    return [sys.executable, "-m", "regwarden", *words[1:]]


@pytest.mark.skipif(not os.access(DEFAULT_BINARY, os.X_OK), reason="no docker-registry")
def test_the_report_on_a_kept_demo_names_what_the_demo_did(tmp_path: Path) -> None:
    state = tmp_path / "demo"
    ran = run_cli("demo", "--state", str(state), timeout=300)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "demo finished" in ran.stdout
    command = _printed_command(ran.stdout)
    assert (state / "ledger.db").is_file() and (state / "registry" / "storage").is_dir()
    ledger = SqliteLedger(state / "ledger.db")
    try:
        records = ledger.quarantines()
        standing = {q.digest for q in records if q.released_at is None}
        released = {q.digest for q in records if q.released_at is not None}
        assert len(standing) == 2 and len(released) == 1  # 1.1.0 and the overwrite; 1.2.0 back
        # the node's pull of 1.1.0 from quarantine: the registry's pull notification reached
        # the access monitor, which alerted once and wrote its tally when it stopped
        alerted = [json.loads(x) for x in (state / "alerts.jsonl").read_text().splitlines()]
        (blocked,) = [a for a in alerted if a.get("kind") == "access"]
        assert blocked["access"]["finding"] == "blocked-pull"
        assert blocked["access"]["user_agent"] == "containerd/1.7.13 (demo)"
        host, _, pulled = blocked["image"].partition("/payments/api@")
        assert pulled in standing
        (tally,) = ledger.pull_tallies(host, "payments/api")
        assert (tally.digest, tally.count) == (pulled, 1)
    finally:
        ledger.close()

    # the registry comes back on the address the ledger names images by
    serving = subprocess.Popen(
        [sys.executable, "-m", "regwarden", "demo", "--state", str(state)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert serving.stdout is not None
        seen: list[str] = []
        ready = threading.Event()

        def read() -> None:
            assert serving.stdout is not None
            for line in serving.stdout:
                seen.append(line)
                if "Ctrl-C stops the registry" in line:
                    ready.set()

        threading.Thread(target=read, daemon=True).start()
        assert ready.wait(60), "".join(seen)
        assert _printed_command("".join(seen)) == command  # the same command, the same host

        html = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        assert html.returncode == 0, html.stderr
        page = (state / "report.html").read_text()
        doc_run = subprocess.run(
            [*command[: command.index("--out")], "-o", "json"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert doc_run.returncode == 0, doc_run.stderr
        doc = json.loads(doc_run.stdout)
    finally:
        serving.send_signal(signal.SIGINT)
        code = serving.wait(30)
    assert code == 0, "".join(seen)

    sec = doc["security"]
    assert doc["images"] == 4  # 1.0.0, 1.2.0 (released) and the two still in quarantine
    assert {t["team"] for t in doc["teams"]} == {"payments"}  # quarantined: still theirs
    # signed: 1.0.0, 1.2.0 and the overwrite (their .sig tags stay in payments/api); the
    # gate verified 1.0.0 only
    assert (sec["signed"], sec["verified"], sec["unsigned"]) == (3, 1, 1)
    assert sec["verdicts"] == {"FAILED": 3, "PASSED": 1}
    assert {q["digest"] for q in sec["quarantines"]} == standing | released
    (back,) = [q for q in sec["quarantines"] if q["released_at"] is not None]
    assert back["released_because"] == "risk accepted by security (demo)"
    # the Trivy scans the demo attested: 1.0.0's low finding, 1.2.0's critical one
    assert sec["findings_by_severity"]["critical"] == 1
    assert sec["findings_by_severity"]["low"] >= 1
    for digest in standing:
        assert digest[:19] in page
    assert "Findings by team" in page and "Signature coverage" in page


def test_state_refuses_a_directory_that_holds_something_else(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine\n")
    ran = run_cli("demo", "--state", str(tmp_path))
    assert ran.returncode == 2, ran.stdout + ran.stderr
    assert "not an empty directory" in ran.stderr
    assert (tmp_path / "notes.txt").read_text() == "mine\n"
