"""A loopback stand-in for Cloud KMS's REST API (v1): the three calls a signer makes.

    with FakeCloudKms() as kms:
        name = kms.add_version("projects/p/locations/global/keyRings/r/cryptoKeys/k")
        env = {"REGWARDEN_GCP_ENDPOINT_CLOUDKMS": kms.url}

Each version holds a real private key made here, so its signatures verify with the
public key it hands out. Shapes from googleapis' `google/cloud/kms/v1`
(`service.proto`'s HTTP bindings and messages, `resources.proto`), in proto3's JSON
mapping (camelCase, enums by name, int64 as strings, bytes as base64):

- `GET /v1/{parent=…/cryptoKeys/*}/cryptoKeyVersions?filter=&pageSize=&pageToken=` →
  `ListCryptoKeyVersionsResponse {cryptoKeyVersions: [CryptoKeyVersion {name, state,
  protectionLevel, algorithm, createTime}], nextPageToken, totalSize}`; the only filter
  understood is `state=ENABLED` (what the signer sends).
- `GET /v1/{name=…/cryptoKeyVersions/*}/publicKey` → `PublicKey {pem, algorithm,
  pemCrc32c, name, protectionLevel}`.
- `POST /v1/{name=…/cryptoKeyVersions/*}:asymmetricSign` with `AsymmetricSignRequest
  {digest: {sha256|sha384|sha512}, digestCrc32c}` or `{data, dataCrc32c}` (Ed25519) →
  `AsymmetricSignResponse {signature, signatureCrc32c, verifiedDigestCrc32c, name,
  verifiedDataCrc32c, protectionLevel}`. A digest of the wrong algorithm or length is
  `400 INVALID_ARGUMENT`; a disabled or destroyed version `400 FAILED_PRECONDITION` as
  KMS answers it; an unknown one `404 NOT_FOUND`; a wrong `digestCrc32c` `400`.

`page_size` caps list pages (to drive paging); `requests` (GoogleFake) records calls.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from regwarden.attest._signer_gcp import crc32c
from support.google_fake import GoogleFake, Reply, Request, google_error

__all__ = ["FakeCloudKms"]

_KEY = r"projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/:]+"
_VERSION = _KEY + r"/cryptoKeyVersions/[^/:]+"


@dataclass
class _Version:
    name: str
    algorithm: str
    private: Any
    state: str
    created: str


def _private_for(algorithm: str) -> Any:
    if algorithm.startswith("EC_SIGN_P256"):
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm.startswith("EC_SIGN_P384"):
        return ec.generate_private_key(ec.SECP384R1())
    if algorithm == "EC_SIGN_ED25519":
        return ed25519.Ed25519PrivateKey.generate()
    if algorithm.startswith(("RSA_SIGN_PSS_", "RSA_SIGN_PKCS1_")):
        return rsa.generate_private_key(
            public_exponent=65537, key_size=int(algorithm.split("_")[3])
        )
    raise ValueError(f"the fake does not make {algorithm} keys")


class FakeCloudKms(GoogleFake):
    def __init__(self) -> None:
        super().__init__()
        self.versions: dict[str, _Version] = {}
        self.page_size = 100
        self.route("GET", rf"/v1/(?P<parent>{_KEY})/cryptoKeyVersions", self._list)
        self.route("GET", rf"/v1/(?P<name>{_VERSION})/publicKey", self._public_key)
        self.route("POST", rf"/v1/(?P<name>{_VERSION}):asymmetricSign", self._sign)

    def add_version(
        self, key: str, algorithm: str = "EC_SIGN_P256_SHA256", *, state: str = "ENABLED"
    ) -> str:
        """A new version of `key` (numbered after the last) holding a new private key."""
        with self.lock:
            number = 1 + sum(1 for v in self.versions if v.startswith(key + "/"))
            name = f"{key}/cryptoKeyVersions/{number}"
            created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            self.versions[name] = _Version(name, algorithm, _private_for(algorithm), state, created)
            return name

    def set_state(self, name: str, state: str) -> None:
        with self.lock:
            self.versions[name].state = state

    def public_pem(self, name: str) -> bytes:
        return bytes(
            self.versions[name]
            .private.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    # -- routes ----------------------------------------------------------------------------

    def _resource(self, version: _Version) -> dict[str, Any]:
        return {
            "name": version.name,
            "state": version.state,
            "protectionLevel": "SOFTWARE",
            "algorithm": version.algorithm,
            "createTime": version.created,
            "generateTime": version.created,
        }

    def _list(self, request: Request) -> Reply:
        parent = request.params["parent"]
        wanted = request.arg("filter")
        if wanted not in (None, "", "state=ENABLED"):
            return google_error(400, f"The fake understands only state=ENABLED, got {wanted!r}")
        items = [
            self._resource(v)
            for n, v in self.versions.items()
            if n.startswith(parent + "/") and (not wanted or v.state == "ENABLED")
        ]
        size = min(int(request.arg("pageSize") or self.page_size), self.page_size)
        start = int(request.arg("pageToken") or 0)
        page: dict[str, Any] = {"cryptoKeyVersions": items[start : start + size]}
        page["totalSize"] = len(items)
        if start + size < len(items):
            page["nextPageToken"] = str(start + size)
        return 200, page

    def _public_key(self, request: Request) -> Reply:
        version = self.versions.get(request.params["name"])
        if version is None:
            return google_error(404, f"{request.params['name']} not found.")
        if version.state != "ENABLED":
            return google_error(
                400, f"{version.name} is not enabled, current state is: {version.state}."
            )
        pem = self.public_pem(version.name).decode()
        return 200, {
            "pem": pem,
            "algorithm": version.algorithm,
            "pemCrc32c": str(crc32c(pem.encode())),
            "name": version.name,
            "protectionLevel": "SOFTWARE",
        }

    def _sign(self, request: Request) -> Reply:
        version = self.versions.get(request.params["name"])
        if version is None:
            return google_error(404, f"{request.params['name']} not found.")
        if version.state != "ENABLED":
            return google_error(
                400, f"{version.name} is not enabled, current state is: {version.state}."
            )
        body = request.body if isinstance(request.body, dict) else {}
        key = version.private
        answer: dict[str, Any] = {
            "name": version.name,
            "protectionLevel": "SOFTWARE",
            "verifiedDigestCrc32c": False,
            "verifiedDataCrc32c": False,
        }
        if version.algorithm == "EC_SIGN_ED25519":
            data = base64.b64decode(body.get("data") or "")
            if "dataCrc32c" in body:
                if str(body["dataCrc32c"]) != str(crc32c(data)):
                    return google_error(400, "The checksum in field data_crc32c did not match.")
                answer["verifiedDataCrc32c"] = True
            signature = key.sign(data)
        else:
            want = "sha384" if version.algorithm.endswith("SHA384") else "sha256"
            digests = body.get("digest") or {}
            if list(digests) != [want]:
                return google_error(
                    400, f"The digest type does not match the algorithm {version.algorithm}."
                )
            digest = base64.b64decode(digests[want])
            if len(digest) != hashlib.new(want).digest_size:
                return google_error(400, "The length of digest is invalid.")
            if "digestCrc32c" in body:
                if str(body["digestCrc32c"]) != str(crc32c(digest)):
                    return google_error(400, "The checksum in field digest_crc32c did not match.")
                answer["verifiedDigestCrc32c"] = True
            algo: Any = hashes.SHA384() if want == "sha384" else hashes.SHA256()
            if isinstance(key, ec.EllipticCurvePrivateKey):
                signature = key.sign(digest, ec.ECDSA(Prehashed(algo)))
            elif "PSS" in version.algorithm:
                pss = padding.PSS(mgf=padding.MGF1(algo), salt_length=algo.digest_size)
                signature = key.sign(digest, pss, Prehashed(algo))
            else:
                signature = key.sign(digest, padding.PKCS1v15(), Prehashed(algo))
        answer["signature"] = base64.b64encode(signature).decode()
        answer["signatureCrc32c"] = str(crc32c(signature))
        return 200, answer
