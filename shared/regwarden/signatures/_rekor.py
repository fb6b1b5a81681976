"""Transparency-log evidence, checked offline.

- Signed entry timestamp (SET, "inclusion promise"): the log's signature over the canonical
  JSON `{"body", "integratedTime", "logID", "logIndex"}`.
- Inclusion proof: an RFC 9162 Merkle audit path from the entry's leaf hash to a root hash,
  plus a checkpoint (a signed note) in which the log commits to that root.
- Entry body: the `hashedrekord` / `rekord` / `dsse` 0.0.1 entry must describe this very
  signature, key and payload, otherwise the log entry proves nothing about it.

Every function returns `None` when the check passes, or the reason it failed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ._errors import SignatureFormatError
from ._trust import TransparencyLog, TrustedRoot
from ._util import (
    array,
    b64decode,
    canonical_json,
    integer,
    load_json_object,
    obj,
    opt_obj,
    string,
)
from .keys import PublicKey

_MAX_PROOF_HASHES = 64


@dataclass(frozen=True, slots=True)
class InclusionProof:
    log_index: int
    root_hash: bytes
    tree_size: int
    hashes: tuple[bytes, ...]
    checkpoint: str | None


@dataclass(frozen=True, slots=True)
class TlogEntry:
    """One transparency-log entry as carried by a bundle or a legacy `cosign/bundle` annotation."""

    log_index: int
    log_id: bytes
    integrated_time: int
    body: bytes
    kind: str = ""
    version: str = ""
    signed_entry_timestamp: bytes | None = None
    proof: InclusionProof | None = None


def parse_bundle_entry(doc: object, what: str) -> TlogEntry:
    """A `tlogEntries[]` element of a Sigstore bundle."""
    if not isinstance(doc, dict):
        raise SignatureFormatError(f"{what}: expected an object")
    log_id = b64decode(
        string(obj(doc, "logId", what, alt="log_id"), "keyId", what, alt="key_id"), f"{what}.logId"
    )
    kv = opt_obj(doc, "kindVersion", what, alt="kind_version") or {}
    promise = opt_obj(doc, "inclusionPromise", what, alt="inclusion_promise")
    set_bytes = (
        b64decode(
            string(promise, "signedEntryTimestamp", what, alt="signed_entry_timestamp"),
            f"{what}.inclusionPromise",
        )
        if promise is not None
        else None
    )
    proof_doc = opt_obj(doc, "inclusionProof", what, alt="inclusion_proof")
    proof = None
    if proof_doc is not None:
        hashes = array(proof_doc, "hashes", what)
        if len(hashes) > _MAX_PROOF_HASHES:
            raise SignatureFormatError(
                f"{what}: inclusion proof has {len(hashes)} hashes, too many"
            )
        checkpoint_doc = opt_obj(proof_doc, "checkpoint", what)
        proof = InclusionProof(
            log_index=integer(proof_doc, "logIndex", what, alt="log_index"),
            root_hash=b64decode(
                string(proof_doc, "rootHash", what, alt="root_hash"), f"{what}.rootHash"
            ),
            tree_size=integer(proof_doc, "treeSize", what, alt="tree_size"),
            hashes=tuple(b64decode(h, f"{what}.hashes") for h in hashes),
            checkpoint=string(checkpoint_doc, "envelope", what) if checkpoint_doc else None,
        )
    kind = kv.get("kind", "")
    version = kv.get("version", "")
    return TlogEntry(
        log_index=integer(doc, "logIndex", what, alt="log_index"),
        log_id=log_id,
        integrated_time=integer(doc, "integratedTime", what, alt="integrated_time"),
        body=b64decode(
            string(doc, "canonicalizedBody", what, alt="canonicalized_body"),
            f"{what}.canonicalizedBody",
        ),
        kind=kind if isinstance(kind, str) else "",
        version=version if isinstance(version, str) else "",
        signed_entry_timestamp=set_bytes,
        proof=proof,
    )


def parse_legacy_bundle(text: str) -> TlogEntry:
    """The `dev.sigstore.cosign/bundle` annotation: `{"SignedEntryTimestamp", "Payload"}`."""
    what = "annotation dev.sigstore.cosign/bundle"
    doc = load_json_object(text, what)
    payload = obj(doc, "Payload", what)
    log_id_hex = string(payload, "logID", what)
    try:
        log_id = bytes.fromhex(log_id_hex)
    except ValueError:
        raise SignatureFormatError(f"{what}: logID got {log_id_hex[:40]!r}, expected hex") from None
    body = b64decode(string(payload, "body", what), f"{what}.Payload.body")
    return TlogEntry(
        log_index=integer(payload, "logIndex", what),
        log_id=log_id,
        integrated_time=integer(payload, "integratedTime", what),
        body=body,
        signed_entry_timestamp=b64decode(string(doc, "SignedEntryTimestamp", what), f"{what} SET"),
    )


# --------------------------------------------------------------------------- SET


def set_payload(entry: TlogEntry) -> bytes:
    return canonical_json(
        {
            "body": base64.b64encode(entry.body).decode("ascii"),
            "integratedTime": entry.integrated_time,
            "logID": entry.log_id.hex(),
            "logIndex": entry.log_index,
        }
    )


def verify_set(entry: TlogEntry, log: TransparencyLog) -> str | None:
    if entry.signed_entry_timestamp is None:
        return "log entry has no signed entry timestamp"
    if not log.key.verify(entry.signed_entry_timestamp, set_payload(entry)):
        return f"signed entry timestamp does not verify with log key {log.log_id_hex[:16]}…"
    return None


# --------------------------------------------------------------------------- Merkle proofs


def _leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def _node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def merkle_root_from_proof(
    leaf_data: bytes, index: int, tree_size: int, path: Sequence[bytes]
) -> bytes | None:
    """RFC 9162 §2.1.3.2: the root an audit path leads to, or None if the path is malformed."""
    if not 0 <= index < tree_size:
        return None
    fn, sn = index, tree_size - 1
    node = _leaf_hash(leaf_data)
    for sibling in path:
        if len(sibling) != 32 or sn == 0:
            return None
        if fn & 1 or fn == sn:
            node = _node_hash(sibling, node)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            node = _node_hash(node, sibling)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        return None
    return node


def verify_inclusion(entry: TlogEntry, log: TransparencyLog) -> str | None:
    proof = entry.proof
    if proof is None:
        return "log entry has no inclusion proof"
    root = merkle_root_from_proof(entry.body, proof.log_index, proof.tree_size, proof.hashes)
    if root is None:
        return (
            f"inclusion proof is malformed (index {proof.log_index}, tree size {proof.tree_size}, "
            f"{len(proof.hashes)} hashes)"
        )
    if root != proof.root_hash:
        return (
            f"inclusion proof leads to root {root.hex()[:16]}…, "
            f"expected {proof.root_hash.hex()[:16]}…"
        )
    if proof.checkpoint is None:
        return "inclusion proof has no checkpoint"
    return verify_checkpoint(
        proof.checkpoint, log, tree_size=proof.tree_size, root_hash=proof.root_hash
    )


def verify_checkpoint(
    envelope: str, log: TransparencyLog, *, tree_size: int, root_hash: bytes
) -> str | None:
    """A signed note (`origin\\nsize\\nroot\\n[extra]\\n\\n— name b64(hint4‖sig)\\n`)."""
    text, sep, signatures = envelope.partition("\n\n")
    if not sep:
        return "checkpoint is not a signed note (no blank line before the signatures)"
    note = (text + "\n").encode("utf-8")
    lines = text.split("\n")
    if len(lines) < 3:
        return "checkpoint has fewer than 3 lines (origin, size, root hash)"
    if lines[1] != str(tree_size):
        return f"checkpoint tree size got {lines[1][:20]!r}, expected {tree_size}"
    try:
        checkpoint_root = base64.b64decode(lines[2], validate=True)
    except (binascii.Error, ValueError):
        return "checkpoint root hash is not base64"
    if checkpoint_root != root_hash:
        return "checkpoint root hash differs from the inclusion proof's root hash"
    tried = 0
    for line in signatures.split("\n"):
        if not line.startswith("\u2014 "):
            continue
        _, _, sig_b64 = line[2:].rpartition(" ")
        try:
            raw = base64.b64decode(sig_b64, validate=True)
        except (binascii.Error, ValueError):
            continue
        if len(raw) < 5 or raw[:4] != log.log_id[:4]:
            continue
        tried += 1
        if log.key.verify(raw[4:], note):
            return None
    if tried == 0:
        return "checkpoint has no signature from this log's key"
    return "checkpoint signature does not verify with the log key"


# --------------------------------------------------------------------------- entry bodies


def _pem_matches(content_b64: str, key: PublicKey | None, cert_der: bytes | None) -> bool:
    try:
        pem = base64.b64decode(content_b64, validate=True)
    except (binascii.Error, ValueError):
        return False
    if b"CERTIFICATE" in pem:
        if cert_der is None:
            return False
        try:
            cert = x509.load_pem_x509_certificate(pem)
        except ValueError:
            return False
        return cert.public_bytes(serialization.Encoding.DER) == cert_der
    if key is None:
        return False
    try:
        loaded = serialization.load_pem_public_key(pem)
        der = loaded.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    except (ValueError, TypeError):
        return False
    return der == key.der


def check_body(
    entry: TlogEntry,
    *,
    signatures: Sequence[bytes],
    data_digest: str,
    key: PublicKey | None = None,
    cert_der: bytes | None = None,
) -> str | None:
    """Check that the entry body records this signature, key and data.

    `data_digest` is `sha256:<hex>` of what was signed: the legacy payload, the artifact of
    a message signature, or the DSSE payload.
    """
    try:
        body = load_json_object(entry.body, "log entry body")
    except SignatureFormatError as exc:
        return str(exc)
    kind = body.get("kind")
    version = body.get("apiVersion")
    spec = body.get("spec")
    if not isinstance(spec, dict):
        return "log entry body has no spec"
    algo, _, hexpart = data_digest.partition(":")
    try:
        if kind in ("hashedrekord", "rekord") and version == "0.0.1":
            return _check_hashedrekord(spec, signatures, algo, hexpart, key, cert_der)
        if kind == "dsse" and version == "0.0.1":
            return _check_dsse(spec, signatures, algo, hexpart, key, cert_der)
    except SignatureFormatError as exc:
        return f"log entry body: {exc}"
    return (
        f"log entry kind {kind!r} {version!r} is not supported; "
        "valid: hashedrekord, rekord, dsse 0.0.1"
    )


def _check_hashedrekord(
    spec: dict[str, Any],
    signatures: Sequence[bytes],
    algo: str,
    hexpart: str,
    key: PublicKey | None,
    cert_der: bytes | None,
) -> str | None:
    what = "hashedrekord"
    data_hash = obj(obj(spec, "data", what), "hash", what)
    if string(data_hash, "algorithm", what) != algo or string(data_hash, "value", what) != hexpart:
        return "log entry records a different payload hash"
    sig = obj(spec, "signature", what)
    if b64decode(string(sig, "content", what), "log entry signature") not in signatures:
        return "log entry records a different signature"
    if not _pem_matches(string(obj(sig, "publicKey", what), "content", what), key, cert_der):
        return "log entry records a different public key or certificate"
    return None


def _check_dsse(
    spec: dict[str, Any],
    signatures: Sequence[bytes],
    algo: str,
    hexpart: str,
    key: PublicKey | None,
    cert_der: bytes | None,
) -> str | None:
    what = "dsse"
    payload_hash = obj(spec, "payloadHash", what)
    if (
        string(payload_hash, "algorithm", what) != algo
        or string(payload_hash, "value", what) != hexpart
    ):
        return "log entry records a different DSSE payload hash"
    recorded = array(spec, "signatures", what)
    seen: list[bytes] = []
    for item in recorded:
        if not isinstance(item, dict):
            return "log entry signature is not an object"
        if not _pem_matches(string(item, "verifier", what), key, cert_der):
            return "log entry records a different public key or certificate"
        seen.append(b64decode(string(item, "signature", what), "log entry signature"))
    if sorted(seen) != sorted(signatures):
        return "log entry signatures do not match the envelope's signatures"
    return None


# --------------------------------------------------------------------------- all together


def verify_entry(
    entry: TlogEntry,
    root: TrustedRoot,
    *,
    signatures: Sequence[bytes],
    data_digest: str,
    key: PublicKey | None = None,
    cert_der: bytes | None = None,
    require_proof: bool = False,
) -> str | None:
    """Every check that applies to one entry: log known, SET and/or proof, body matches."""
    log = root.tlog(entry.log_id)
    if log is None:
        return f"log entry is from unknown log {entry.log_id.hex()[:16]}…"
    if entry.signed_entry_timestamp is None and entry.proof is None:
        return "log entry has neither a signed entry timestamp nor an inclusion proof"
    if require_proof and entry.proof is None:
        return "log entry has no inclusion proof (required by this bundle version)"
    if entry.signed_entry_timestamp is not None and (reason := verify_set(entry, log)):
        return reason
    if entry.proof is not None and (reason := verify_inclusion(entry, log)):
        return reason
    return check_body(
        entry, signatures=signatures, data_digest=data_digest, key=key, cert_der=cert_der
    )
