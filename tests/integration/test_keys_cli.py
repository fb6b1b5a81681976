"""`regwarden keys generate | public` as a user runs them: the key pair is written in
cosign's format with cosign's file modes, the password comes from COSIGN_PASSWORD, a
hidden terminal prompt (twice) or a pipe, nothing is overwritten without --force, a wrong
password is refused in one clear line, and a generated key signs with `regwarden sign`
and verifies with `regwarden verify` on the real local registry."""

from __future__ import annotations

import base64
import json
import os
import pty
import select
import stat
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from support.cli import run_cli
from support.registries import PushImage

from regwarden.devtools import LocalRegistry
from regwarden.signatures import KeyFormatError, load_private_key, load_public_key

pytestmark = pytest.mark.integration
BASE_ENV = {"PATH": "/usr/bin:/bin", "COLUMNS": "400"}


def keys(
    cwd: Path,
    *args: str,
    password: str | None = "pw",  # noqa: S107 - a test key's password
    stdin: str | None = None,
) -> Any:
    env = dict(BASE_ENV)
    if password is not None:
        env["COSIGN_PASSWORD"] = password
    if stdin is None:
        return run_cli("keys", *args, env=env, cwd=cwd)
    import subprocess

    return subprocess.run(
        [sys.executable, "-m", "regwarden", "keys", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=120,
        check=False,
    )


def envelope(pem: bytes) -> tuple[str, dict[str, Any]]:
    lines = pem.decode().strip().splitlines()
    label = lines[0].removeprefix("-----BEGIN ").removesuffix("-----")
    assert lines[-1] == f"-----END {label}-----"
    return label, json.loads(base64.b64decode("".join(lines[1:-1])))


def test_generate_writes_a_cosign_key_pair(tmp_path: Path) -> None:
    proc = keys(tmp_path, "generate")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "Private key written to cosign.key",
        "Public key written to cosign.pub",
    ]
    key, pub = tmp_path / "cosign.key", tmp_path / "cosign.pub"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(pub.stat().st_mode) == 0o644
    label, doc = envelope(key.read_bytes())
    assert label == "ENCRYPTED SIGSTORE PRIVATE KEY"
    assert doc["kdf"]["name"] == "scrypt"
    assert doc["kdf"]["params"] == {"N": 32768, "r": 8, "p": 1}
    assert len(base64.b64decode(doc["kdf"]["salt"])) == 32
    assert doc["cipher"]["name"] == "nacl/secretbox"
    assert len(base64.b64decode(doc["cipher"]["nonce"])) == 24
    private = load_private_key(key.read_bytes(), "pw")
    assert private.algorithm == "ecdsa-p256"
    assert pub.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----\n")
    assert load_public_key(pub.read_bytes()) == private.public_key
    with pytest.raises(KeyFormatError, match="wrong password"):
        load_private_key(key.read_bytes(), "pW")


def test_prefix_json_and_public(tmp_path: Path) -> None:
    (tmp_path / "k").mkdir()
    proc = keys(tmp_path, "generate", "--output-key-prefix", "k/release", "--output", "json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["privateKey"] == "k/release.key" and out["publicKey"] == "k/release.pub"
    pub = (tmp_path / "k/release.pub").read_text()
    assert load_public_key(pub.encode()).key_id == out["keyId"]
    shown = keys(tmp_path, "public", "--key", "k/release.key")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == pub
    as_json = json.loads(keys(tmp_path, "public", "--key", "k/release.key", "-o", "json").stdout)
    assert as_json == {"keyId": out["keyId"], "algorithm": "ecdsa-p256", "pem": pub}


def test_nothing_is_overwritten_without_force(tmp_path: Path) -> None:
    assert keys(tmp_path, "generate").returncode == 0
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    proc = keys(tmp_path, "generate", password="other")
    assert proc.returncode == 2
    assert proc.stderr.count("cosign.key and cosign.pub already exist") == 1
    assert "--force" in proc.stderr
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    (tmp_path / "cosign.pub").unlink()  # one of the two is enough to refuse
    assert keys(tmp_path, "generate", password="other").returncode == 2
    assert (tmp_path / "cosign.key").read_bytes() == before["cosign.key"]
    forced = keys(tmp_path, "generate", "--force", password="other")
    assert forced.returncode == 0, forced.stderr
    key = tmp_path / "cosign.key"
    assert key.read_bytes() != before["cosign.key"]
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    load_private_key(key.read_bytes(), "other")


def test_wrong_password_is_refused_once_and_clearly(tmp_path: Path) -> None:
    assert keys(tmp_path, "generate").returncode == 0
    proc = keys(tmp_path, "public", "--key", "cosign.key", password="wrong")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    assert proc.stderr.count("decryption failed (wrong password or corrupted key)") == 1
    assert "COSIGN_PASSWORD" in proc.stderr


def test_a_piped_password_is_read_from_stdin(tmp_path: Path) -> None:
    proc = keys(tmp_path, "generate", password=None, stdin="piped secret\n")
    assert proc.returncode == 0, proc.stderr
    load_private_key((tmp_path / "cosign.key").read_bytes(), "piped secret")
    shown = keys(tmp_path, "public", "--key", "cosign.key", password=None, stdin="piped secret\n")
    assert shown.stdout == (tmp_path / "cosign.pub").read_text()


def _on_a_terminal(cwd: Path, typed: list[str]) -> tuple[int, str]:
    """Run `keys generate` on a pseudo-terminal, typing each answer when a prompt shows;
    returns the exit code and everything the terminal displayed."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: its controlling terminal is the pty
        os.chdir(cwd)
        argv = [sys.executable, "-m", "regwarden", "keys", "generate"]
        os.execve(sys.executable, argv, BASE_ENV)  # noqa: S606 - no shell: argv as given
    seen, answers, sent = b"", list(typed), 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 1.0)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
        # answer each prompt once, right after it shows (echo is off by then): typed
        # between two prompts, the answer would be echoed, then flushed by the next one
        if answers and seen.count(b"Enter password") > sent and seen.endswith(b": "):
            os.write(fd, answers.pop(0).encode() + b"\n")
            sent += 1
    os.close(fd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), seen.decode(errors="replace")


def test_the_terminal_prompt_is_hidden_and_asked_twice(tmp_path: Path) -> None:
    code, shown = _on_a_terminal(tmp_path, ["s3cret-pw", "s3cret-pw"])
    assert code == 0, shown
    assert "Enter password for private key:" in shown
    assert "Enter password for private key again:" in shown
    assert "s3cret-pw" not in shown  # not echoed
    load_private_key((tmp_path / "cosign.key").read_bytes(), "s3cret-pw")


def test_a_mistyped_confirmation_writes_nothing(tmp_path: Path) -> None:
    code, shown = _on_a_terminal(tmp_path, ["s3cret-pw", "s3cret-px"])
    assert code == 2, shown
    assert shown.count("passwords do not match") == 1
    assert list(tmp_path.iterdir()) == []


def test_a_generated_key_signs_and_verifies_on_the_registry(
    registry: LocalRegistry, repo: str, push: PushImage, tmp_path: Path
) -> None:
    image = push(repo, "1.0.0", seed=71)
    ref = f"{registry.host}/{repo}@{image.manifest_digest}"
    assert keys(tmp_path, "generate").returncode == 0
    (tmp_path / "other").mkdir()
    assert keys(tmp_path / "other", "generate").returncode == 0
    env = {**BASE_ENV, "COSIGN_PASSWORD": "pw"}
    signed = run_cli("sign", ref, "--key", "cosign.key", env=env, cwd=tmp_path)
    assert signed.returncode == 0, signed.stderr
    ok = run_cli("verify", ref, "--key", "cosign.pub", "-o", "json", env=env, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    report = json.loads(ok.stdout)
    assert report["met"] is True
    key_id = load_public_key((tmp_path / "cosign.pub").read_bytes()).key_id
    assert [s["verified"] for s in report["signatures"]] == [True]
    assert key_id[:16] in signed.stdout
    other = run_cli("verify", ref, "--key", "other/cosign.pub", env=env, cwd=tmp_path)
    assert other.returncode == 1, other.stdout
    wrong = run_cli(
        "sign", ref, "--key", "cosign.key", env={**BASE_ENV, "COSIGN_PASSWORD": "x"}, cwd=tmp_path
    )
    assert wrong.returncode == 2
    assert wrong.stderr.count("wrong password") == 1
