"""Notation JWS verification throughput against a bare-`cryptography` floor.

`bench_notation_jws(duration)` signs one envelope in memory (RSA-2048 leaf under an
RSA-2048 root, PS256, as `notation sign` does with its default key) and then, for about
`duration` seconds in total, alternates between:

- the real thing: `verify_notation` with a strict trust policy and an in-memory trust store
  (parse JSON and base64, load both certificates, verify the envelope signature, validate
  the chain — each link's signature, key usage, EKU, basic constraints —, authenticity,
  validity, expiry, revocation pointers, payload match, result model);
- the floor: the same primitive work with bare `cryptography`: load the two DER
  certificates, verify the PS256 signature over the signing input, and verify the two chain
  links (leaf by root, root by itself).

It returns {"ops_per_s", "floor_ops_per_s", "ratio"} where ratio = ops / floor (target
≥ 0.5). The lead's bench/verify.py prints it as JSON.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from regwarden.signatures.notation import (
    MEDIA_TYPE_JWS,
    Target,
    TrustStore,
    parse_trust_policy,
    verify_notation,
)
from regwarden.signatures.notation._sign import demo_identity, sign_jws

_NOW = datetime(2025, 6, 1, tzinfo=UTC)
_TARGET = Target("application/vnd.oci.image.manifest.v1+json", "sha256:" + "5e" * 32, 1024)


def _setup() -> tuple[Callable[[], bool], Callable[[], bool]]:
    ident, root = demo_identity(_NOW, kind="rsa", size=2048)
    envelope = sign_jws(ident, _TARGET, signing_time=_NOW - timedelta(minutes=5))
    store = TrustStore.from_certificates({("ca", "bench"): [root]})
    policy = parse_trust_policy(
        {
            "version": "1.0",
            "trustPolicies": [
                {
                    "name": "bench",
                    "registryScopes": ["registry.example.com/bench/app"],
                    "signatureVerification": {"level": "strict"},
                    "trustStores": ["ca:bench"],
                    "trustedIdentities": ["x509.subject: C=US, ST=WA, O=regwarden test"],
                }
            ],
        }
    )

    def real() -> bool:
        return verify_notation(
            envelope,
            MEDIA_TYPE_JWS,
            target=_TARGET,
            reference="registry.example.com/bench/app",
            trust_policy=policy,
            trust_store=store,
            now=_NOW,
        ).verified

    doc = json.loads(envelope)
    signing_input = f"{doc['protected']}.{doc['payload']}".encode()
    signature = base64.urlsafe_b64decode(doc["signature"] + "=" * (-len(doc["signature"]) % 4))
    ders = [base64.b64decode(c) for c in doc["header"]["x5c"]]
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)

    def floor() -> bool:
        leaf, top = (x509.load_der_x509_certificate(d) for d in ders)
        key = leaf.public_key()
        assert isinstance(key, rsa.RSAPublicKey)
        key.verify(signature, signing_input, pss, hashes.SHA256())
        leaf.verify_directly_issued_by(top)
        top.verify_directly_issued_by(top)
        return True

    if not (real() and floor()):
        raise RuntimeError("benchmark envelope does not verify")
    return real, floor


def _rate(fn: Callable[[], bool], seconds: float) -> tuple[int, float]:
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(20):
            fn()
        count += 20
        now = time.perf_counter()
        if now >= deadline:
            return count, now - start


def bench_notation_jws(duration: float) -> dict[str, float]:
    """Verifications per second of verify_notation and of the bare floor (see module doc)."""
    real, floor = _setup()
    for _ in range(50):  # warm up both paths
        real()
        floor()
    rounds = 5
    slice_s = max(duration, 0.2) / (2 * rounds)
    totals = {"real": [0, 0.0], "floor": [0, 0.0]}
    for _ in range(rounds):  # interleave so drift hits both alike
        for name, fn in (("real", real), ("floor", floor)):
            n, t = _rate(fn, slice_s)
            totals[name][0] += n
            totals[name][1] += t
    ops = totals["real"][0] / totals["real"][1]
    floor_ops = totals["floor"][0] / totals["floor"][1]
    return {
        "ops_per_s": round(ops, 1),
        "floor_ops_per_s": round(floor_ops, 1),
        "ratio": round(ops / floor_ops, 3),
    }


if __name__ == "__main__":
    print(json.dumps({"notation_jws": bench_notation_jws(5.0)}))
