"""`regwarden verify | sign | attest`: the signature commands."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import typer

from .. import USER_AGENT
from ..errors import NotFound, UsageError
from ..reference import ImageRef
from ._render import print_json

_LAYOUT = re.compile(r"^oci:(?P<dir>[^:]+)(?::(?P<tag>.+))?$")


@dataclass(frozen=True)
class Target:
    image: ImageRef
    """By digest (tags are resolved once, then never used again)."""
    source: Any
    """A RegistryClient or a LayoutSource."""
    media_type: str
    size: int


def open_client(image: ImageRef, *, insecure: bool, writable: bool = False) -> Any:
    """A data-plane client. Signing writes go out under their own User-Agent: a signature
    pushed by `regwarden sign` is news to the gate (re-evaluate the image), not one of the
    gate's own writes, which it ignores."""
    from .. import __version__
    from ..oci import Credentials, RegistryClient

    return RegistryClient(
        image.api_host,
        credentials=Credentials.from_docker_config(image.registry),
        insecure=insecure,
        user_agent=f"regwarden-sign/{__version__}" if writable else USER_AGENT,
    )


@contextmanager
def open_target(text: str, *, insecure: bool, writable: bool = False) -> Iterator[Target]:
    """IMAGE as a registry reference or `oci:DIR[:TAG]`, resolved to its digest."""
    m = _LAYOUT.match(text)
    if m is not None:
        if writable:
            raise UsageError("signing an OCI layout is not supported; push it to a registry first")
        from ..signatures import LayoutSource

        layout = LayoutSource(Path(m["dir"]))
        desc = layout.resolve(m["tag"])
        name = re.sub(r"[^a-z0-9]+", "-", Path(m["dir"]).resolve().name.lower()).strip("-")
        image = ImageRef(
            registry="oci-layout.local",
            repository=name or "layout",
            tag=m["tag"],
            digest=desc.digest,
        )
        yield Target(image, layout, desc.media_type, desc.size)
        return
    ref = ImageRef.parse(text)
    client = open_client(ref, insecure=insecure, writable=writable)
    try:
        desc = client.head_manifest(ref.repository, ref.reference)
        if desc is None:
            raise NotFound(f"image {ref} does not exist")
        if ref.digest and desc.digest != ref.digest:
            raise UsageError(f"{ref}: registry answered digest {desc.digest}")
        yield Target(ref.with_digest(desc.digest), client, desc.media_type, desc.size)
    finally:
        client.close()


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path!r}: {exc.strerror}") from None


def _public_keys(keys: Sequence[str]) -> tuple[Any, ...]:
    from ..signatures.keys import fetch_public_key, load_public_key

    out = []
    for key in keys:
        if "://" in key and not key.startswith("file://"):
            out.append(fetch_public_key(key))
        else:
            out.append(load_public_key(_read(key.removeprefix("file://"), "key file")))
    return tuple(out)


def _searched(pattern: str, option: str) -> str:
    """cosign matches --certificate-identity-regexp and --certificate-oidc-issuer-regexp
    with Go's MatchString, which finds the pattern anywhere in the value (like re.search),
    so an unanchored pattern is a search here too; the verifier matches whole values, so
    the pattern is rewritten into the whole-value form that accepts the same values."""
    from ..signatures import searched

    try:
        return searched(re.compile(pattern))
    except re.error as exc:
        raise UsageError(
            f"{option}: invalid regex {pattern!r}: {exc}",
            hint="anchor it with ^ and $ to match the whole value",
        ) from None


def keyless_identities(
    subjects: Sequence[str],
    subject_regexps: Sequence[str],
    issuer: str | None,
    issuer_regexp: str | None,
) -> tuple[Any, ...]:
    """The KeylessIdentity of each --certificate-identity[-regexp], regexes searched."""
    from ..signatures import KeylessIdentity

    issuer_re = (
        _searched(issuer_regexp, "--certificate-oidc-issuer-regexp") if issuer_regexp else None
    )
    return tuple(
        [KeylessIdentity(subject=s, issuer=issuer, issuer_regex=issuer_re) for s in subjects]
        + [
            KeylessIdentity(
                subject_regex=_searched(s, "--certificate-identity-regexp"),
                issuer=issuer,
                issuer_regex=issuer_re,
            )
            for s in subject_regexps
        ]
    )


def run_verify(
    image: str,
    *,
    keys: Sequence[str],
    trust_policy: str | None,
    trust_store: str | None,
    identities: Sequence[str],
    identity_regexps: Sequence[str],
    issuer: str | None,
    issuer_regexp: str | None,
    trusted_root: str | None,
    rekor_key: str | None,
    require: Literal["all", "any"],
    signature_repository: str | None,
    output: str,
    insecure: bool,
) -> None:
    from ..signatures import CosignPolicy, NotationTrust, TrustedRoot, verify_image

    if bool(trust_policy) != bool(trust_store):
        raise UsageError("--trust-policy and --trust-store go together")
    if (identities or identity_regexps) and not (issuer or issuer_regexp):
        raise UsageError("keyless verification needs --certificate-oidc-issuer[-regexp]")
    root = None
    if trusted_root:
        root = TrustedRoot.from_json(_read(trusted_root, "trusted root"))
    elif rekor_key:
        root = TrustedRoot.from_rekor_keys(*_public_keys([rekor_key]))
    idents = keyless_identities(identities, identity_regexps, issuer, issuer_regexp)
    public_keys = _public_keys(keys)
    cosign = (
        CosignPolicy(keys=public_keys, identities=idents, trusted_root=root)
        if public_keys or idents
        else None
    )
    notation = None
    if trust_policy and trust_store:
        from ..signatures.notation import load_trust_policy, load_trust_store

        notation = NotationTrust(load_trust_policy(trust_policy), load_trust_store(trust_store))
    with open_target(image, insecure=insecure) as target:
        report = verify_image(
            target.source,
            target.image,
            cosign=cosign,
            notation=notation,
            require=require,
            now=datetime.now(UTC),
            signature_repo=signature_repository,
        )
    if output == "json":
        print_json(
            {
                "image": str(target.image),
                "digest": target.image.digest,
                "require": require,
                "met": report.met,
                "unmet": list(report.unmet),
                "reason": report.reason,
                "signatures": [r.model_dump(mode="json") for r in report.results],
            }
        )
    else:
        from rich.console import Console
        from rich.table import Table

        console = Console(highlight=False)
        table = Table(title=str(target.image), title_justify="left", show_edge=False)
        for col in ("FORMAT", "SIGNATURE", "SIGNER", "RESULT"):
            table.add_column(col)
        for r in report.results:
            table.add_row(
                r.format,
                r.digest[:19],
                r.signer or "-",
                "[green]valid[/]" if r.verified else f"[red]invalid[/]: {r.reason}",
            )
        if report.results:
            console.print(table)
        style = "green" if report.met else "red"
        console.print(f"[{style}]{report.reason}[/]")
    if not report.met:
        raise typer.Exit(1)


def _private_key(path: str) -> Any:
    from ..signatures.keys import load_private_key

    return load_private_key(_read(path, "key file"), env=os.environ)


def run_sign(
    image: str, *, key: str, fmt: str, annotations: Sequence[str], output: str, insecure: bool
) -> None:
    from ..signatures import existing_attachment, publish, sign_bundle, sign_legacy, signature_tag

    private = _private_key(key)
    notes = dict(_pair(a) for a in annotations)
    with open_target(image, insecure=insecure, writable=True) as target:
        ref, client = target.image, target.source
        assert ref.digest is not None
        if fmt == "legacy":
            tag = signature_tag(ref.digest, "sig")
            artifact = sign_legacy(
                image_digest=ref.digest,
                docker_reference=ref.name,
                key=private,
                annotations=notes or None,
                existing_manifest=existing_attachment(client, ref.repository, tag),
            )
        else:
            if notes:
                raise UsageError("--annotation is only supported with --format legacy")
            artifact = sign_bundle(
                subject={"mediaType": target.media_type, "digest": ref.digest, "size": target.size},
                key=private,
                created=datetime.now(UTC),
            )
        digest = publish(client, ref.repository, artifact)
    _report(output, "signed", ref, digest, artifact.tag, private.public_key.key_id)


def run_attest(
    image: str, *, key: str, kind: str, predicate: str, fmt: str, output: str, insecure: bool
) -> None:
    from ..signatures import (
        COSIGN_VULN_PREDICATE,
        attest_bundle,
        attest_legacy,
        existing_attachment,
        publish,
        resolve_predicate_type,
        signature_tag,
    )

    private = _private_key(key)
    try:
        body = json.loads(_read(predicate, "predicate file"))
    except ValueError as exc:
        raise UsageError(f"predicate file {predicate!r} is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise UsageError(f"predicate file {predicate!r}: expected a JSON object")
    uri = resolve_predicate_type(kind)
    with open_target(image, insecure=insecure, writable=True) as target:
        ref, client = target.image, target.source
        assert ref.digest is not None
        if uri == COSIGN_VULN_PREDICATE:
            _require_readable_vuln(body, predicate, ref.digest)
        if fmt == "legacy":
            tag = signature_tag(ref.digest, "att")
            artifact = attest_legacy(
                image_digest=ref.digest,
                repository=ref.name,
                key=private,
                predicate_type=kind,
                predicate=body,
                existing_manifest=existing_attachment(client, ref.repository, tag),
            )
        else:
            artifact = attest_bundle(
                subject={"mediaType": target.media_type, "digest": ref.digest, "size": target.size},
                key=private,
                predicate_type=kind,
                predicate=body,
                created=datetime.now(UTC),
            )
        digest = publish(client, ref.repository, artifact)
    _report(output, "attested", ref, digest, artifact.tag, private.public_key.key_id)


VULN_SHAPE = (
    '{"invocation": {...}, "scanner": {"uri": "pkg:github/aquasecurity/trivy@<version>", '
    '"version": "<version>", "result": <the Trivy or Grype JSON report>}, '
    '"metadata": {"scanStartedOn": "<RFC 3339>", "scanFinishedOn": "<RFC 3339>"}}'
)
VULN_HINT = (
    f"a vuln predicate is the cosign-vuln wrapper around a report: {VULN_SHAPE}; "
    "`trivy image --format cosign-vuln --output vuln.json IMAGE` writes it"
)


def _require_readable_vuln(body: dict[str, Any], path: str, image_digest: str) -> None:
    """Refuse, before anything is pushed, a vuln predicate the gate could not read.

    The gate reads a signed vuln attestation's statement with `parse_cosign_vuln` and
    ignores one that does not parse: an attestation it cannot read is as good as none. So
    the same parser judges the statement `attest` would sign; what the file looks like
    only chooses the words of the refusal."""
    from ..scanning import ScanFormatError, parse_cosign_vuln
    from ..signatures import COSIGN_VULN_PREDICATE, in_toto_statement

    statement = in_toto_statement(image_digest, COSIGN_VULN_PREDICATE, body, name=None, v1=True)
    try:
        parse_cosign_vuln(statement, digest=image_digest)
    except ScanFormatError as exc:
        if "SchemaVersion" in body or "Results" in body:
            what = "is a raw Trivy report, not a cosign vuln predicate"
        elif "matches" in body:
            what = "is a raw Grype report, not a cosign vuln predicate"
        elif "predicateType" in body or "_type" in body:
            what = "is a whole in-toto statement; give only its 'predicate'"
        else:
            what = f"is not a cosign vuln predicate the gate can read ({exc.message})"
        raise UsageError(
            f"predicate file {path!r} {what}: the gate could not read this attestation, "
            "so nothing was pushed",
            hint=VULN_HINT,
        ) from None


def _pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise UsageError(f"--annotation expects KEY=VALUE, got {text!r}")
    return key, value


def _report(
    output: str, verb: str, ref: ImageRef, digest: str, tag: str | None, key_id: str
) -> None:
    where = f"{ref.name}:{tag}" if tag else f"{ref.name}@{digest} (referrer)"
    if output == "json":
        print_json(
            {"image": str(ref), verb: True, "manifest": digest, "location": where, "keyId": key_id}
        )
    else:
        print(f"{verb} {ref} with key {key_id[:16]} → {where}")
