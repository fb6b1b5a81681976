"""Interop: `regwarden keys generate` writes what the real cosign writes. The loader that
`sign` and `keys public` use reads the keys cosign made (handbook fixtures, password
`hello`), and a generated key's envelope has the fixture's fields, types, work factor and
sizes, under the PEM type cosign writes today."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from support.cli import run_cli

from regwarden.signatures import KeyFormatError, load_private_key

KEYS = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures" / "cosign" / "keys"
pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(not KEYS.is_dir(), reason="../shared/fixtures is absent"),
]
ENV = {"PATH": "/usr/bin:/bin", "COLUMNS": "400"}


def envelope(pem: bytes) -> tuple[str, dict[str, Any]]:
    lines = pem.decode().strip().splitlines()
    label = lines[0].removeprefix("-----BEGIN ").removesuffix("-----")
    return label, json.loads(base64.b64decode("".join(lines[1:-1])))


def shape(doc: Any) -> Any:
    """The envelope's structure: keys and value types, with base64 fields' decoded sizes
    and the KDF's parameters kept as values (they must match too)."""
    if isinstance(doc, dict):
        return {
            k: (v if k == "params" or k == "name" else shape(v)) for k, v in sorted(doc.items())
        }
    if isinstance(doc, str):
        return ("base64", len(base64.b64decode(doc, validate=True)))
    return type(doc).__name__


@pytest.mark.parametrize("name", ["cosign-n32768.key", "sigstore-n32768.key"])
def test_keys_public_reads_the_keys_cosign_made(name: str, tmp_path: Path) -> None:
    path = KEYS / name
    expected = load_private_key(path.read_bytes(), "hello").public_key.pem.decode()
    proc = run_cli("keys", "public", "--key", str(path), env={**ENV, "COSIGN_PASSWORD": "hello"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == expected
    assert proc.stdout.startswith("-----BEGIN PUBLIC KEY-----\n")
    wrong = run_cli("keys", "public", "--key", str(path), env={**ENV, "COSIGN_PASSWORD": "x"})
    assert wrong.returncode == 2
    assert wrong.stderr.count("wrong password") == 1


def test_a_generated_key_has_the_envelope_of_cosigns(tmp_path: Path) -> None:
    proc = run_cli("keys", "generate", env={**ENV, "COSIGN_PASSWORD": "hello"}, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    ours = (tmp_path / "cosign.key").read_bytes()
    label, doc = envelope(ours)
    theirs_label, theirs = envelope((KEYS / "sigstore-n32768.key").read_bytes())
    assert label == theirs_label == "ENCRYPTED SIGSTORE PRIVATE KEY"
    assert list(doc) == list(theirs)  # field order too: kdf, cipher, ciphertext
    assert shape(doc) == shape(theirs)  # same N/r/p, salt, nonce and ciphertext sizes
    assert max(len(line) for line in ours.decode().splitlines()) == 64  # PEM line width
    key = load_private_key(ours, "hello")
    with pytest.raises(KeyFormatError, match="wrong password"):
        load_private_key(ours, "hellO")
    assert (
        key.algorithm
        == load_private_key((KEYS / "sigstore-n32768.key").read_bytes(), "hello").algorithm
    )
