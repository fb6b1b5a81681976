"""`regwarden keys generate | public`: cosign-compatible signing keys.

`generate` writes what `cosign generate-key-pair` writes: `PREFIX.key`, the ECDSA P-256
private key as PKCS#8 encrypted in cosign's envelope (scrypt N=32768 r=8 p=1, the work
factor of the keys the real cosign makes, and nacl/secretbox) under the PEM type cosign
writes today, `ENCRYPTED SIGSTORE PRIVATE KEY`, mode 0600; and `PREFIX.pub`, the PKIX
`PUBLIC KEY` PEM. The password is read as cosign reads it: `COSIGN_PASSWORD` when set
(even empty), else a hidden prompt on the terminal (twice for a new key), else standard
input (a piped password; its one trailing newline is dropped, so `echo pw |` means `pw`).
"""

from __future__ import annotations

import getpass
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ._render import print_json

#: The work factor cosign's own keys use (go-securesystemslib's scrypt default).
SCRYPT_N = 32768
PEM_TYPE = "ENCRYPTED SIGSTORE PRIVATE KEY"


def read_password(*, confirm: bool, env: Mapping[str, str] | None = None) -> bytes:
    """The key's password: COSIGN_PASSWORD, else the terminal (hidden), else stdin."""
    from ..signatures.keys import COSIGN_PASSWORD_ENV

    source = os.environ if env is None else env
    if COSIGN_PASSWORD_ENV in source:
        return source[COSIGN_PASSWORD_ENV].encode("utf-8")
    if not sys.stdin.isatty():
        text = sys.stdin.read()
        return text.removesuffix("\n").removesuffix("\r").encode("utf-8")
    first = getpass.getpass("Enter password for private key: ")
    if confirm:
        again = getpass.getpass("Enter password for private key again: ")
        if again != first:
            raise UsageError("passwords do not match; nothing was written")
    return first.encode("utf-8")


def _write(path: Path, data: bytes, mode: int) -> None:
    """Create `path` with `mode` from the start (never readable by others in between)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except OSError as exc:
        raise UsageError(f"cannot write {str(path)!r}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.chmod(path, mode)  # the umask may have taken bits away from the public key


def run_generate(prefix: str, *, force: bool, output: str) -> None:
    from ..signatures.keys import encrypt_private_key, generate_private_key

    key_path, pub_path = Path(f"{prefix}.key"), Path(f"{prefix}.pub")
    existing = [str(p) for p in (key_path, pub_path) if p.exists() or p.is_symlink()]
    if existing and not force:
        raise UsageError(
            f"{' and '.join(existing)} already exist{'s' if len(existing) == 1 else ''}; "
            "nothing was written",
            hint="pass --force to overwrite, or --output-key-prefix to choose other names",
        )
    password = read_password(confirm=True)
    private = generate_private_key("ecdsa-p256")
    pem = encrypt_private_key(private, password, pem_type=PEM_TYPE, scrypt_n=SCRYPT_N)
    for path in (key_path, pub_path):
        if force and (path.exists() or path.is_symlink()):
            path.unlink()
    _write(key_path, pem, 0o600)
    _write(pub_path, private.public_key.pem, 0o644)
    key_id = private.public_key.key_id
    if output == "json":
        print_json({"privateKey": str(key_path), "publicKey": str(pub_path), "keyId": key_id})
    else:
        print(f"Private key written to {key_path}")
        print(f"Public key written to {pub_path}")


def load_key_file(path: str) -> Any:
    """A private key file (cosign-encrypted or plain PEM), its password read as cosign does."""
    from ..signatures.keys import load_private_key

    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read key file {path!r}: {exc.strerror}") from None
    password = read_password(confirm=False) if b"ENCRYPTED" in data else b""
    return load_private_key(data, password)


def run_public(key: str, *, output: str) -> None:
    public = load_key_file(key).public_key
    if output == "json":
        print_json(
            {"keyId": public.key_id, "algorithm": public.algorithm, "pem": public.pem.decode()}
        )
    else:
        sys.stdout.write(public.pem.decode())
