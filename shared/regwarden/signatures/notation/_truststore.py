"""The Notation X.509 trust store: `x509/{ca,signingAuthority,tsa}/<name>/*.{pem,crt,cer}`.

Each named store is a directory of PEM or DER certificate files. Symlinks are refused;
sub-directories of a named store are ignored with a warning, as the specification says.
A store that cannot be used (unreadable file, no certificate, a non-CA certificate that is
not self-signed, a TSA certificate that is not a self-issued CA) is recorded with its
problem and only fails a verification whose trust policy refers to it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ...errors import PolicyError
from ._policy import TRUST_STORE_TYPES
from ._x509 import CERT_ERRORS, issued_by, load_der_strict, subject

log = logging.getLogger(__name__)

CERT_SUFFIXES = (".pem", ".crt", ".cer")


@dataclass(frozen=True)
class NamedStore:
    """Certificates of one named store, or why it cannot be used."""

    certificates: tuple[x509.Certificate, ...] = ()
    problem: str | None = None
    der: frozenset[bytes] = field(default=frozenset())


@dataclass(frozen=True)
class TrustStore:
    """Named stores by (type, name); build with `load_trust_store` or `from_certificates`."""

    stores: Mapping[tuple[str, str], NamedStore]

    @classmethod
    def from_certificates(
        cls, stores: Mapping[tuple[str, str], Iterable[x509.Certificate]]
    ) -> TrustStore:
        """An in-memory trust store, validated like one read from disk."""
        out: dict[tuple[str, str], NamedStore] = {}
        for (kind, name), certs in stores.items():
            _check_type(kind)
            out[(kind, name)] = _named(kind, f"{kind}:{name}", list(certs))
        return cls(out)

    def get(self, store_type: str, name: str) -> tuple[x509.Certificate, ...]:
        """The certificates of `type:name`; raises LookupError with the reason if unusable."""
        named = self.stores.get((store_type, name))
        if named is None:
            have = ", ".join(f"{t}:{n}" for t, n in sorted(self.stores)) or "none"
            raise LookupError(f"trust store {store_type}:{name} does not exist (have: {have})")
        if named.problem is not None:
            raise LookupError(f"trust store {store_type}:{name} is unusable: {named.problem}")
        return named.certificates

    def contains_der(self, store_type: str, names: Sequence[str], der: bytes) -> bool:
        for name in names:  # noqa: SIM110  (verification hot path: no generator)
            if der in self.stores[(store_type, name)].der:
                return True
        return False


def _check_type(kind: str) -> None:
    if kind not in TRUST_STORE_TYPES:
        raise PolicyError(
            f"unknown trust store type {kind!r}; valid: {', '.join(TRUST_STORE_TYPES)}"
        )


def _named(kind: str, where: str, certs: list[x509.Certificate]) -> NamedStore:
    if not certs:
        return NamedStore(problem=f"{where} holds no X.509 certificates")
    for cert in certs:
        problem = _cert_problem(kind, cert)
        if problem is not None:
            return NamedStore(problem=f"{where}: {problem}")
    return NamedStore(tuple(certs), None, frozenset(c.public_bytes(Encoding.DER) for c in certs))


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    except CERT_ERRORS:
        return False
    return bc.ca


def _cert_problem(kind: str, cert: x509.Certificate) -> str | None:
    if kind == "tsa":
        if not _is_ca(cert) or cert.subject != cert.issuer:
            return (
                f"certificate {subject(cert)!r} is not a self-issued CA root; a TSA store holds "
                "root certificates only"
            )
    elif not _is_ca(cert) and not issued_by(cert, cert):
        return (
            f"certificate {subject(cert)!r} is neither a CA certificate nor a self-signed "
            "signing certificate"
        )
    return None


def read_certificates(data: bytes, where: str) -> list[x509.Certificate]:
    """PEM (one or more certificates) or a single DER certificate."""
    try:
        if b"-----BEGIN" in data:
            pem = x509.load_pem_x509_certificates(data)
            return [load_der_strict(c.public_bytes(Encoding.DER)) for c in pem]
        return [load_der_strict(data)]
    except CERT_ERRORS as exc:
        raise ValueError(f"{where} is not a PEM or DER certificate: {exc}") from None


def _load_named(kind: str, directory: Path) -> NamedStore:
    where = f"{kind}:{directory.name} ({directory})"
    certs: list[x509.Certificate] = []
    for entry in sorted(directory.iterdir()):
        if entry.is_symlink():
            return NamedStore(problem=f"{entry} is a symlink; symlinks are not supported")
        if entry.is_dir():
            log.warning("ignoring sub-directory %s of trust store %s", entry, where)
            continue
        if entry.suffix.lower() not in CERT_SUFFIXES:
            log.warning("ignoring %s: not a %s file", entry, "/".join(CERT_SUFFIXES))
            continue
        try:
            certs.extend(read_certificates(entry.read_bytes(), str(entry)))
        except (OSError, ValueError) as exc:
            return NamedStore(problem=str(exc))
    return _named(kind, where, certs)


def load_trust_store(directory: str | Path) -> TrustStore:
    """Load `<directory>/x509/<type>/<name>/` certificate files (see module doc)."""
    root = Path(directory)
    base = root / "x509"
    if not base.is_dir():
        raise PolicyError(
            f"trust store {root} has no x509/ directory; expected "
            "x509/{ca,signingAuthority,tsa}/<name>/*.pem",
            problems=[(str(root), "missing x509/ directory")],
        )
    if root.is_symlink() or base.is_symlink():
        raise PolicyError(f"trust store {base} is a symlink; symlinks are not supported")
    stores: dict[tuple[str, str], NamedStore] = {}
    for type_dir in sorted(base.iterdir()):
        if type_dir.name not in TRUST_STORE_TYPES:
            log.warning("ignoring unknown trust store type directory %s", type_dir)
            continue
        if type_dir.is_symlink() or not type_dir.is_dir():
            raise PolicyError(f"{type_dir} is not a regular directory (symlinks are not supported)")
        for named in sorted(type_dir.iterdir()):
            key = (type_dir.name, named.name)
            if named.is_symlink():
                stores[key] = NamedStore(
                    problem=f"{named} is a symlink; symlinks are not supported"
                )
            elif named.is_dir():
                stores[key] = _load_named(type_dir.name, named)
            else:
                log.warning("ignoring file %s outside any named store", named)
    return TrustStore(stores)
