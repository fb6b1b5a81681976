"""Notation JWS verification throughput against a bare-`cryptography` floor.

`bench_notation_jws(duration)` signs one envelope in memory (RSA-2048 leaf under an
RSA-2048 root, PS256, as `notation sign` does with its default key) and then, for about
`duration` seconds in total, alternates between:

- the real thing: `verify_notation` with a strict trust policy and an in-memory trust store
  (parse JSON and base64, the two certificates, verify the envelope signature, validate
  the chain — each link's signature, key usage, EKU, basic constraints —, authenticity,
  validity, expiry, revocation pointers, payload match, result model);
- the floor: the same primitive work with bare `cryptography`: load the two DER
  certificates, verify the PS256 signature over the signing input, and verify the two chain
  links (leaf by root, root by itself) as plain signature checks over each certificate's
  TBSCertificate, taken from its DER exactly as signed;
- the warm floor: only the three signature verifications, with both keys loaded and both
  TBSCertificates extracted beforehand.

Both floors do that work the cheapest way `cryptography` allows, so the ratio is not
flattered: `verify_directly_issued_by` would add ~15 µs per link (it re-encodes the
TBSCertificate and re-loads the issuer key on every call) and `tbs_certificate_bytes`
~7 µs per link (it re-encodes). The verifier verifies all three signatures on every call;
it parses a certificate once per exact DER encoding (see `_x509.cert_of`), so in this loop,
which verifies one signer's envelope again and again, it loads no certificate and its keys
are warm: the warm floor is its true primitive cost, and `ratio_warm` the strict figure.

It returns {"ops_per_s", "floor_ops_per_s", "ratio", "floor_warm_ops_per_s", "ratio_warm"}
where ratio = ops / floor (target ≥ 0.5). The lead's bench/verify.py prints it as JSON.
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

Op = Callable[[], bool]


def _tbs(der: bytes) -> bytes:
    """The TBSCertificate of a DER certificate, as signed: the first element inside the
    outer SEQUENCE (definite lengths, as DER has)."""

    def content(pos: int) -> tuple[int, int]:  # (content offset, content length)
        first = der[pos + 1]
        if first < 0x80:
            return pos + 2, first
        n = first & 0x7F
        return pos + 2 + n, int.from_bytes(der[pos + 2 : pos + 2 + n], "big")

    start, _ = content(0)
    body, length = content(start)
    return der[start : body + length]


def _setup() -> dict[str, Op]:
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
    leaf_der, top_der = (base64.b64decode(c) for c in doc["header"]["x5c"])
    sha256 = hashes.SHA256()
    pss = padding.PSS(mgf=padding.MGF1(sha256), salt_length=32)
    pkcs1 = padding.PKCS1v15()
    for der in (leaf_der, top_der):  # what the floors assume about the certificates
        cert = x509.load_der_x509_certificate(der)
        assert _tbs(der) == cert.tbs_certificate_bytes
        assert isinstance(cert.signature_algorithm_parameters, padding.PKCS1v15)
        assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)

    def floor() -> bool:
        leaf = x509.load_der_x509_certificate(leaf_der)
        top = x509.load_der_x509_certificate(top_der)
        key = leaf.public_key()
        top_key = top.public_key()
        assert isinstance(key, rsa.RSAPublicKey) and isinstance(top_key, rsa.RSAPublicKey)
        key.verify(signature, signing_input, pss, sha256)
        top_key.verify(leaf.signature, _tbs(leaf_der), pkcs1, sha256)
        top_key.verify(top.signature, _tbs(top_der), pkcs1, sha256)
        return True

    leaf, top = x509.load_der_x509_certificate(leaf_der), x509.load_der_x509_certificate(top_der)
    leaf_key, top_key = leaf.public_key(), top.public_key()
    assert isinstance(leaf_key, rsa.RSAPublicKey) and isinstance(top_key, rsa.RSAPublicKey)
    links = ((leaf.signature, _tbs(leaf_der)), (top.signature, _tbs(top_der)))

    def warm() -> bool:
        leaf_key.verify(signature, signing_input, pss, sha256)
        for sig, tbs in links:
            top_key.verify(sig, tbs, pkcs1, sha256)
        return True

    ops = {"real": real, "floor": floor, "warm": warm}
    if not all(op() for op in ops.values()):
        raise RuntimeError("benchmark envelope does not verify")
    return ops


def _rate(fn: Op, seconds: float) -> tuple[int, float]:
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
    """Verifications per second of verify_notation and of the bare floors (see module doc)."""
    ops = _setup()
    for _ in range(50):  # warm up every path
        for fn in ops.values():
            fn()
    rounds = 5
    slice_s = max(duration, 0.2) / (len(ops) * rounds)
    totals = {name: [0, 0.0] for name in ops}
    for _ in range(rounds):  # interleave so drift hits all alike
        for name, fn in ops.items():
            n, t = _rate(fn, slice_s)
            totals[name][0] += n
            totals[name][1] += t
    rate = {name: count / spent for name, (count, spent) in totals.items()}
    return {
        "ops_per_s": round(rate["real"], 1),
        "floor_ops_per_s": round(rate["floor"], 1),
        "ratio": round(rate["real"] / rate["floor"], 3),
        "floor_warm_ops_per_s": round(rate["warm"], 1),
        "ratio_warm": round(rate["real"] / rate["warm"], 3),
    }


if __name__ == "__main__":
    print(json.dumps({"notation_jws": bench_notation_jws(5.0)}))
