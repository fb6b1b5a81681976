"""`regwarden verify oci:DIR:TAG` on the notation CLI's own e2e layouts: the layout whose
signature layer is a tar file reports an invalid signature (not "no signatures found");
the validly signed one passes; the unsigned one has none."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from regwarden.cli import main

FIXTURES = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures"
E2E = FIXTURES / "notation" / "cli-e2e"

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(not E2E.is_dir(), reason=f"interop fixtures absent at {E2E}"),
]
SIGNATURE = "sha256:321fcc674d6771dd0e5bd21e599f2df3a482de99a400fd3a3fe371221b97a9c9"
LAYER = "sha256:9a8decdf3775708f4eed16859f19561d730cad40b1af0dcfc37ac1e5f879a934"


@pytest.fixture
def trust(tmp_path: Path) -> list[str]:
    store = tmp_path / "truststore" / "x509" / "ca" / "e2e"
    store.mkdir(parents=True)
    shutil.copy(E2E / "certs" / "e2e.crt", store / "e2e.crt")
    policy = E2E / "trustpolicies" / "trustpolicy.json"
    return ["--trust-policy", str(policy), "--trust-store", str(tmp_path / "truststore")]


def verify(
    capsys: pytest.CaptureFixture[str], layout: str, trust: list[str]
) -> tuple[int, dict[str, Any]]:
    with pytest.raises(SystemExit) as exited:
        main(["verify", f"oci:{E2E / 'oci-layouts' / layout}:v1", *trust, "--output", "json"])
    code = exited.value.code
    return (code if isinstance(code, int) else 1), json.loads(capsys.readouterr().out)


def test_layer_that_is_not_an_envelope_is_an_invalid_signature(
    capsys: pytest.CaptureFixture[str], trust: list[str]
) -> None:
    code, doc = verify(capsys, "e2e-invalid-signature", trust)
    assert code == 1
    assert doc["reason"] == (
        "requirement 'all' not met: no valid signature from notation trust policy"
    )
    assert doc["signatures"] == [
        {
            "format": "notation-jws",
            "digest": SIGNATURE,
            "verified": False,
            "signer": None,
            "reason": f"not a Notation signature envelope: layer {LAYER} is "
            "application/vnd.oci.image.layer.v1.tar (expected application/jose+json or "
            "application/cose)",
        }
    ]


def test_valid_and_unsigned_layouts(capsys: pytest.CaptureFixture[str], trust: list[str]) -> None:
    code, doc = verify(capsys, "e2e-valid-signature", trust)
    assert code == 0, doc
    assert [s["verified"] for s in doc["signatures"]] == [True]
    code, doc = verify(capsys, "e2e", trust)
    assert code == 1
    assert (doc["reason"], doc["signatures"]) == ("no signatures found", [])
