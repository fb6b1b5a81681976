"""Signature verification throughput, next to its floor.

Each benchmark times regwarden's full verification of one signature and, in the same run,
the bare primitive it cannot avoid (one ECDSA P-256 verify with `cryptography`), and
reports verifications per second, the floor and the ratio (target: at least 50% of the
floor). Prints JSON.

    .venv/bin/python bench/verify.py [--seconds 1.0] [--only NAME]

Benchmarks live in `BENCHMARKS`, a dict of name → function(seconds) → figures; other
signature formats add an entry there.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import platform
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from regwarden.signatures import (
    CosignPolicy,
    SignatureCandidate,
    parse_signature_manifest,
    sign_bundle,
    sign_legacy,
    verify_bundle,
    verify_candidates,
)
from regwarden.signatures._dsse import pae
from regwarden.signatures.keys import generate_private_key

TARGET_RATIO = 0.5
Benchmark = Callable[[float], dict[str, Any]]


def _rates(
    ours: Callable[[], object], floor: Callable[[], object], seconds: float
) -> tuple[float, float]:
    """Calls per second of `ours` and `floor`, timed in alternating batches.

    Interleaving keeps the ratio fair on a busy machine: both see the same load.
    """
    for _ in range(20):
        ours()
        floor()
    batch = 50
    spent = {"ours": 0.0, "floor": 0.0}
    count = 0
    deadline = time.perf_counter() + 2 * seconds
    while time.perf_counter() < deadline:
        for name, fn in (("ours", ours), ("floor", floor)):
            start = time.perf_counter()
            for _ in range(batch):
                fn()
            spent[name] += time.perf_counter() - start
        count += batch
    return count / spent["ours"], count / spent["floor"]


def _figures(ours: float, floor: float, what: str) -> dict[str, Any]:
    ratio = ours / floor if floor else 0.0
    return {
        "what": what,
        "verifications_per_s": round(ours, 1),
        "floor_per_s": round(floor, 1),
        "floor": "cryptography: one ECDSA P-256 SHA-256 verify of the same bytes",
        "ratio": round(ratio, 3),
        "target_ratio": TARGET_RATIO,
        "meets_target": ratio >= TARGET_RATIO,
    }


def bench_cosign_legacy_ecdsa(seconds: float) -> dict[str, Any]:
    """Full legacy check of one signature: digest, ECDSA signature, payload claims."""
    key = generate_private_key("ecdsa-p256")
    image = "sha256:" + hashlib.sha256(b"bench image").hexdigest()
    art = sign_legacy(image_digest=image, docker_reference="registry.example/app", key=key)
    [layer] = parse_signature_manifest(art.manifest).layers
    candidate = SignatureCandidate(art.digest, layer, art.blobs[layer.digest])
    policy = CosignPolicy(keys=(key.public_key,))
    [check] = verify_candidates([candidate], image_digest=image, policy=policy)
    assert check.verified, check.reason
    raw_key = key.key.public_key()
    assert isinstance(raw_key, ec.EllipticCurvePublicKey)
    signature = base64.b64decode(layer.annotations["dev.cosignproject.cosign/signature"])
    blob = candidate.blob

    def ours() -> None:
        verify_candidates([candidate], image_digest=image, policy=policy)

    def floor() -> None:
        raw_key.verify(signature, blob, ec.ECDSA(hashes.SHA256()))

    ours_rate, floor_rate = _rates(ours, floor, seconds)
    return _figures(ours_rate, floor_rate, "cosign legacy .sig, ECDSA P-256 key")


def bench_cosign_bundle_key(seconds: float) -> dict[str, Any]:
    """Full key-based v0.3 bundle check: parse, DSSE signature, in-toto statement."""
    key = generate_private_key("ecdsa-p256")
    manifest = b'{"schemaVersion":2}'
    subject = {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": "sha256:" + hashlib.sha256(manifest).hexdigest(),
        "size": len(manifest),
    }
    art = sign_bundle(subject=subject, key=key, created=datetime.now(UTC))
    [layer] = parse_signature_manifest(art.manifest).layers
    bundle = art.blobs[layer.digest]
    policy = CosignPolicy(keys=(key.public_key,))
    image = str(subject["digest"])
    assert verify_bundle(bundle, expected_digest=image, policy=policy).result.verified
    doc = json.loads(bundle)
    payload = base64.b64decode(doc["dsseEnvelope"]["payload"])
    signature = base64.b64decode(doc["dsseEnvelope"]["signatures"][0]["sig"])
    signed = pae("application/vnd.in-toto+json", payload)
    raw_key = key.key.public_key()
    assert isinstance(raw_key, ec.EllipticCurvePublicKey)

    def ours() -> None:
        verify_bundle(bundle, expected_digest=image, policy=policy, digest=layer.digest)

    def floor() -> None:
        raw_key.verify(signature, signed, ec.ECDSA(hashes.SHA256()))

    ours_rate, floor_rate = _rates(ours, floor, seconds)
    return _figures(ours_rate, floor_rate, "cosign v3 bundle (DSSE), ECDSA P-256 key")


def bench_notation_jws(seconds: float) -> dict[str, Any]:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _verify_notation import bench_notation_jws as run

    return dict(run(seconds))


BENCHMARKS: dict[str, Benchmark] = {
    "cosign_legacy_ecdsa_p256": bench_cosign_legacy_ecdsa,
    "cosign_bundle_ecdsa_p256": bench_cosign_bundle_key,
    "notation_jws_rsa_chain": bench_notation_jws,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    parser.add_argument("--only", choices=sorted(BENCHMARKS), action="append")
    args = parser.parse_args(argv)
    names = args.only or list(BENCHMARKS)
    results = {name: BENCHMARKS[name](args.seconds) for name in names}
    out = {
        "benchmark": "signature verification",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "results": results,
    }
    json.dump(out, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
