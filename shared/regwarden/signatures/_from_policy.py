"""From one repository's effective policy to the verifiers' inputs.

    cosign = cosign_policy(effective, base_dir=policy.base_dir, env=os.environ)
    notation = notation_trust(effective, base_dir=policy.base_dir)
    attest = attestation_policy(effective, base_dir=policy.base_dir, env=os.environ)
    report = verify_image(source, image, cosign=cosign, notation=notation,
                          signature_repo=signature_repository(effective), now=now)

Keys, trusted roots and Notation trust material are read when a verifier is built, never
when the policy is loaded. `file://` is relative to the policy file's directory; loaded
files are cached per (path, mtime, size), so a warm function re-reads only what changed.
`awskms://` keys are fetched from KMS and cached for `KMS_CACHE_SECONDS` (an alias may be
moved to a new key). Every error names the policy path of the location it concerns:
`repositories[0].signatures.cosign.keys[0]: file not found: keys/release.pub`.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any, TypeVar

from ..errors import NotImplementedYet, PolicyError, RegistryError, UsageError
from ..policy import (
    CosignIdentity,
    CosignVerifier,
    EffectiveRepositoryPolicy,
    Location,
    LocationScheme,
    resolve_file,
    resolve_secret,
)
from ._errors import SignatureFormatError
from ._image import NotationTrust
from ._model import (
    COSIGN_VULN_PREDICATE,
    SLSA_PROVENANCE_V02,
    SLSA_PROVENANCE_V1,
    CosignPolicy,
    KeylessIdentity,
)
from ._trust import TrustedRoot
from .keys import KeyRef, PublicKey, fetch_public_key, load_public_key

__all__ = [
    "ATTESTATION_PREDICATES",
    "KMS_CACHE_SECONDS",
    "attestation_policy",
    "clear_cache",
    "cosign_policy",
    "notation_trust",
    "result_formats",
    "searched",
    "signature_repository",
]

#: The attestations regwarden reads: cosign vulnerability reports and SLSA provenance.
ATTESTATION_PREDICATES = frozenset({COSIGN_VULN_PREDICATE, SLSA_PROVENANCE_V02, SLSA_PROVENANCE_V1})
#: How long a public key fetched from a KMS is reused.
KMS_CACHE_SECONDS = 900.0

#: `signatures.formats` names -> the `SignatureResult.format` values they admit.
_RESULT_FORMATS = {
    "cosign": ("cosign-legacy",),
    "cosign-bundle": ("cosign-bundle",),
    "notation": ("notation-jws", "notation-cose"),
}
_CACHE_LIMIT = 256

T = TypeVar("T")


# -- public API -------------------------------------------------------------------------------


def cosign_policy(
    effective: EffectiveRepositoryPolicy,
    *,
    base_dir: str | PurePath | None,
    env: Mapping[str, str],
    kms_client: Any | None = None,
) -> CosignPolicy | None:
    """The cosign verifier's policy for signatures, or None when no cosign format applies.

    `env` resolves `secret://` keys (pass `os.environ` at the edge); `kms_client` is an
    optional ready boto3 KMS client for `awskms://` keys.
    """
    section = effective.signatures
    if section is None or section.cosign is None:
        return None
    if not {"cosign", "cosign-bundle"} & set(section.effective_formats()):
        return None
    cosign = section.cosign
    loader = _Loader(base_dir=base_dir, env=env, kms_client=kms_client)
    prefix = ("signatures", "cosign")
    keys = tuple(
        loader.key(location, effective.path(*prefix, "keys", i))
        for i, location in enumerate(cosign.keys)
    )
    identities = tuple(_identity(identity) for identity in cosign.identities)
    root = _trusted_root(effective, cosign, loader)
    return _build(
        effective.path(*prefix),
        keys=keys,
        identities=identities,
        trusted_root=root,
        require_tlog=cosign.require_tlog,
        require_timestamp=cosign.require_timestamp,
    )


def attestation_policy(
    effective: EffectiveRepositoryPolicy,
    *,
    base_dir: str | PurePath | None,
    env: Mapping[str, str],
    kms_client: Any | None = None,
) -> CosignPolicy | None:
    """The cosign verifier's policy for attestations (vulnerability reports, SLSA
    provenance v0.2 and v1): the `attestations` signers, else the `signatures.cosign` ones.

    The trusted root and the tlog/timestamp requirements come from `signatures.cosign`.
    None when neither section names a signer.
    """
    signatures = effective.signatures
    cosign = signatures.cosign if signatures is not None else None
    loader = _Loader(base_dir=base_dir, env=env, kms_client=kms_client)
    if effective.attestations is not None:
        section: tuple[str, ...] = ("attestations",)
        locations, wanted = effective.attestations.keys, effective.attestations.identities
    elif cosign is not None:
        section = ("signatures", "cosign")
        locations, wanted = cosign.keys, cosign.identities
    else:
        return None
    keys = tuple(
        loader.key(location, effective.path(*section, "keys", i))
        for i, location in enumerate(locations)
    )
    identities = tuple(_identity(identity) for identity in wanted)
    root = _trusted_root(effective, cosign, loader) if cosign is not None else None
    if identities and (root is None or not root.raw):
        raise PolicyError(
            f"{effective.path(*section, 'identities')}: keyless attestation identities need "
            "'signatures.cosign.trustedRoot'; expected a trusted root or attestation keys",
            problems=[(effective.path(*section, "identities"), "no trusted root")],
        )
    return _build(
        effective.path(*section),
        keys=keys,
        identities=identities,
        trusted_root=root,
        require_tlog=cosign.require_tlog if cosign is not None else False,
        require_timestamp=cosign.require_timestamp if cosign is not None else False,
        predicate_types=ATTESTATION_PREDICATES,
    )


def notation_trust(
    effective: EffectiveRepositoryPolicy, *, base_dir: str | PurePath | None
) -> NotationTrust | None:
    """The Notation trust policy and trust store, or None when Notation does not apply."""
    from .notation import load_trust_store, parse_trust_policy

    section = effective.signatures
    if section is None or section.notation is None:
        return None
    if "notation" not in section.effective_formats():
        return None
    loader = _Loader(base_dir=base_dir, env={}, kms_client=None)
    policy_where = effective.path("signatures", "notation", "trustPolicy")
    store_where = effective.path("signatures", "notation", "trustStore")
    policy_path = loader.local_path(section.notation.trust_policy, policy_where, "a trust policy")
    store_path = loader.local_path(section.notation.trust_store, store_where, "a trust store")
    if policy_path.is_symlink():  # as Notation does
        raise _policy_error(policy_where, f"{policy_path} is a symlink; expected a regular file")
    document = _cached_file(
        "notation-policy",
        policy_path,
        section.notation.trust_policy,
        policy_where,
        lambda data: parse_trust_policy(data, kind="oci"),
    )
    store = _cached_tree(
        store_path,
        section.notation.trust_store,
        store_where,
        lambda: load_trust_store(store_path),
    )
    return NotationTrust(policy=document, store=store)


def signature_repository(effective: EffectiveRepositoryPolicy) -> str | None:
    """Where the image's signatures are stored, when not in its own repository."""
    section = effective.signatures
    if section is None or section.repository is None:
        return None
    rendered = section.repository.replace("{repository}", effective.repository)
    return None if rendered == effective.repository else rendered


def result_formats(effective: EffectiveRepositoryPolicy) -> frozenset[str]:
    """The `SignatureResult.format` values that count under `signatures.formats`
    (`cosign-legacy`, `cosign-bundle`, `notation-jws`, `notation-cose`); empty without a
    signatures section."""
    section = effective.signatures
    if section is None:
        return frozenset()
    return frozenset(name for fmt in section.effective_formats() for name in _RESULT_FORMATS[fmt])


def searched(pattern: re.Pattern[str]) -> str:
    """Regex text that, matched against a whole value, accepts exactly the values in which
    `pattern` is found: the policy's regexes are searched (`re.search`), the keyless
    verifier matches whole values (`re.fullmatch`). Inline flags are kept."""
    body = _GLOBAL_FLAGS.sub("", pattern.pattern)
    flags = "".join(letter for flag, letter in _FLAG_LETTERS if pattern.flags & flag)
    prefix = f"(?{flags})" if flags else ""
    end = "\n" if pattern.flags & re.VERBOSE else ""  # close a trailing verbose comment
    return f"{prefix}(?s:.*?)(?:{body}{end})(?s:.*)"


def clear_cache() -> None:
    """Forget every cached key, trusted root and trust store (tests, key rotation)."""
    with _LOCK:
        _FILES.clear()
        _KMS.clear()


# -- building ---------------------------------------------------------------------------------

_GLOBAL_FLAGS = re.compile(r"\A(?:\(\?[aiLmsux]+\))+")
_FLAG_LETTERS = (
    (re.ASCII, "a"),
    (re.IGNORECASE, "i"),
    (re.MULTILINE, "m"),
    (re.DOTALL, "s"),
    (re.VERBOSE, "x"),
)


def _identity(identity: CosignIdentity) -> KeylessIdentity:
    return KeylessIdentity(
        subject=identity.subject,
        issuer=identity.issuer,
        subject_regex=searched(identity.subject_regex) if identity.subject_regex else None,
        issuer_regex=searched(identity.issuer_regex) if identity.issuer_regex else None,
    )


def _trusted_root(
    effective: EffectiveRepositoryPolicy, cosign: CosignVerifier, loader: _Loader
) -> TrustedRoot | None:
    prefix = ("signatures", "cosign")
    if cosign.trusted_root is not None:
        where = effective.path(*prefix, "trustedRoot")
        path = loader.local_path(cosign.trusted_root, where, "a trusted root")
        return _cached_file(
            "trusted-root", path, cosign.trusted_root, where, _parse_trusted_root(where)
        )
    if cosign.rekor_key is not None:
        key = loader.key(cosign.rekor_key, effective.path(*prefix, "rekorKey"))
        return TrustedRoot.from_rekor_keys(key)
    return None


def _parse_trusted_root(where: str) -> Callable[[bytes], TrustedRoot]:
    def parse(data: bytes) -> TrustedRoot:
        try:
            return TrustedRoot.from_json(data)
        except SignatureFormatError as exc:
            raise _policy_error(where, f"not a usable trusted_root.json: {exc.message}") from None

    return parse


def _build(
    where: str,
    *,
    keys: tuple[PublicKey, ...],
    identities: tuple[KeylessIdentity, ...],
    trusted_root: TrustedRoot | None,
    require_tlog: bool,
    require_timestamp: bool,
    predicate_types: frozenset[str] | None = None,
) -> CosignPolicy:
    extra: dict[str, Any] = {}
    if predicate_types is not None:
        extra["predicate_types"] = predicate_types
    try:
        return CosignPolicy(
            keys=keys,
            identities=identities,
            trusted_root=trusted_root,
            require_tlog=require_tlog,
            require_timestamp=require_timestamp,
            **extra,
        )
    except UsageError as exc:  # the policy's rules prevent this; keep the path if not
        raise _policy_error(where, exc.message) from None


def _policy_error(where: str, message: str) -> PolicyError:
    return PolicyError(f"{where}: {message}", problems=[(where, message)])


# -- loading with caches ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Loader:
    base_dir: str | PurePath | None
    env: Mapping[str, str]
    kms_client: Any | None

    def local_path(self, location: Location, where: str, what: str) -> Path:
        """The file of a `file://` location; other schemes are not read here yet."""
        if location.scheme is not LocationScheme.FILE:
            raise NotImplementedYet(
                f"{where}: reading {what} from {location.scheme}:// is not implemented yet "
                f"(got {location.raw!r}); expected file://",
                hint="copy it next to the policy file and refer to it with file://",
            )
        if self.base_dir is None and not Path(location.target).is_absolute():
            raise UsageError(
                f"{where}: cannot resolve {location.raw!r}: the policy was not loaded from a "
                "file; expected an absolute file:// path or a policy loaded from a file"
            )
        return resolve_file(location, self.base_dir or "/")

    def key(self, location: Location, where: str) -> PublicKey:
        """A public key from any key location the verifiers support."""
        scheme = location.scheme
        if scheme is LocationScheme.PEM:
            return _parse_key(where, location.target)
        if scheme is LocationScheme.FILE:
            path = self.local_path(location, where, "a public key")
            return _cached_file("key", path, location, where, lambda data: _parse_key(where, data))
        if scheme is LocationScheme.SECRET:
            try:
                value = resolve_secret(location.target, self.env)
            except UsageError as exc:
                raise UsageError(f"{where}: {exc.message}", hint=exc.hint) from None
            return _parse_key(where, value, what=f"secret {location.target!r}")
        if scheme in (LocationScheme.AWSKMS, LocationScheme.GCPKMS, LocationScheme.AZUREKMS):
            return self._kms_key(location, where)
        raise NotImplementedYet(
            f"{where}: reading a public key from {scheme}:// is not implemented yet (got "
            f"{location.raw!r}); expected file://, inline PEM, secret:// or awskms://",
            hint="copy the key next to the policy file and refer to it with file://",
        )

    def _kms_key(self, location: Location, where: str) -> PublicKey:
        now = time.monotonic()
        with _LOCK:
            hit = _KMS.get(location.raw)
        if hit is not None and now - hit[0] < KMS_CACHE_SECONDS:
            return hit[1]
        try:
            key = fetch_public_key(KeyRef.parse(location.raw), kms_client=self.kms_client)
        except NotImplementedYet as exc:
            raise NotImplementedYet(f"{where}: {exc.message}", hint=exc.hint) from None
        except SignatureFormatError as exc:
            raise _policy_error(where, exc.message) from None
        except RegistryError as exc:  # KMS unreachable: infrastructure, retried by the caller
            raise RegistryError(f"{where}: {exc.message}", status=exc.status) from None
        with _LOCK:
            _remember(_KMS, location.raw, (now, key))
        return key


def _parse_key(where: str, data: bytes | str, *, what: str = "") -> PublicKey:
    try:
        return load_public_key(data.encode() if isinstance(data, str) else data)
    except SignatureFormatError as exc:
        source = f"{what}: " if what else ""
        raise _policy_error(where, f"{source}{exc.message}") from None


_LOCK = threading.Lock()
_FILES: dict[tuple[object, ...], object] = {}
_KMS: dict[str, tuple[float, PublicKey]] = {}


def _remember(cache: dict[Any, Any], key: object, value: object) -> None:
    cache.pop(key, None)
    cache[key] = value
    while len(cache) > _CACHE_LIMIT:
        cache.pop(next(iter(cache)))


def _cached_file(
    kind: str, path: Path, location: Location, where: str, parse: Callable[[bytes], T]
) -> T:
    """`parse(contents)`, reused while the file's mtime and size stay the same."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise _policy_error(where, f"file not found: {location.target}") from None
    except OSError as exc:
        raise _policy_error(where, f"cannot read {path}: {exc.strerror or exc}") from None
    if not path.is_file():
        raise _policy_error(where, f"{location.target} is not a file; expected a file")
    cache_key = (kind, str(path), stat.st_mtime_ns, stat.st_size)
    with _LOCK:
        hit = _FILES.get(cache_key)
    if hit is not None:
        return hit  # type: ignore[return-value]  # stored by this function for this kind
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise _policy_error(where, f"cannot read {path}: {exc.strerror or exc}") from None
    value = _wrap_policy_errors(where, lambda: parse(data))
    with _LOCK:
        _remember(_FILES, cache_key, value)
    return value


def _cached_tree(path: Path, location: Location, where: str, load: Callable[[], T]) -> T:
    """`load()` for a directory, reused while no file under it changes."""
    if not path.exists():
        raise _policy_error(where, f"directory not found: {location.target}")
    if not path.is_dir():
        raise _policy_error(where, f"{location.target} is not a directory; expected a directory")
    entries: list[tuple[str, int, int]] = []
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            try:
                stat = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            entries.append((os.path.join(root, name), stat.st_mtime_ns, stat.st_size))
    cache_key = ("tree", str(path), tuple(entries))
    with _LOCK:
        hit = _FILES.get(cache_key)
    if hit is not None:
        return hit  # type: ignore[return-value]
    value = _wrap_policy_errors(where, load)
    with _LOCK:
        _remember(_FILES, cache_key, value)
    return value


def _wrap_policy_errors(where: str, call: Callable[[], T]) -> T:
    try:
        return call()
    except PolicyError as exc:
        if exc.message.startswith(f"{where}: "):
            raise
        problems = [(where, message) for _, message in exc.problems] or [(where, exc.message)]
        raise PolicyError(f"{where}: {exc.message}", problems=problems) from None
