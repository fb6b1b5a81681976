"""Evidence for a policy without signature or attestation rules never imports the
signatures package (the cryptography stack): a gate's cold start does not pay for
verifiers it will not run (issue #12 item 8). With signature rules it does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CODE = """
import json, sys
from datetime import UTC, datetime
from regwarden.gate import gather_evidence
from regwarden.gate._from_policy import gate_rules
from regwarden.policy import load_policy_text
from regwarden.reference import ImageRef

class Plane:  # the registry is down: any lookup fails
    def __getattr__(self, name):
        from regwarden.errors import RegistryError
        def fail(*args, **kwargs):
            raise RegistryError("registry down", status=503)
        return fail

class Registry:
    host, kind, capabilities = "registry.example", "oci", frozenset()
    def data_plane(self):
        return Plane()

text = "apiVersion: regwarden/v1\\nkind: Policy\\n" + sys.argv[1]
policy = load_policy_text(text, source="test.yaml", base_dir=sys.argv[2])
image = ImageRef(registry="registry.example", repository="app", digest="sha256:" + "a" * 64)
rules = gate_rules(policy.for_repository("app"))
found = gather_evidence(policy, Registry(), image, rules, env={}, now=datetime.now(UTC))
print(json.dumps({"signatures": "regwarden.signatures" in sys.modules,
                  "cryptography": "cryptography.x509" in sys.modules,
                  "error": found.signature_error}))
"""


def _gather(body: str, base: Path) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", CODE, body, str(base)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_no_signature_rules_no_signatures_package(tmp_path: Path) -> None:
    body = "defaults:\n  tags: {forbidden: [latest]}\n"
    assert _gather(body, tmp_path) == {"signatures": False, "cryptography": False, "error": None}


def test_signature_rules_load_the_verifiers(tmp_path: Path) -> None:
    from regwarden.signatures.keys import generate_private_key

    pem = generate_private_key("ecdsa-p256").public_key.pem
    (tmp_path / "cosign.pub").write_bytes(pem if isinstance(pem, bytes) else pem.encode())
    body = 'defaults:\n  signatures: {required: true, cosign: {keys: ["file://cosign.pub"]}}\n'
    found = _gather(body, tmp_path)
    assert found["signatures"] is True and found["cryptography"] is True
    assert "signature discovery failed" in str(found["error"])  # it did look
