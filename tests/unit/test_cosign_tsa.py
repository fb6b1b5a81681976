"""cosign's RFC 3161 check (`signatures._tsa`) on rfc3161-client: which tokens pass, and
the reason each refused one gives. Tokens come from the test TSA (`notation._sign`),
whose chains are varied here: intermediates, the leaf's extended key usage, validity."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from regwarden import der
from regwarden.signatures import _tsa
from regwarden.signatures._trust import TimestampAuthority, Validity
from regwarden.signatures.notation._sign import Timestamper, issue, name, new_key

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
SIGNATURE = b"the artifact signature"
STAMPING = (ExtendedKeyUsageOID.TIME_STAMPING,)


def make_tsa(
    *,
    intermediate: bool = False,
    eku: Sequence[x509.ObjectIdentifier] = STAMPING,
    eku_critical: bool = True,
    leaf_until: datetime = NOW + timedelta(days=365),
    gen_time: datetime = NOW,
) -> tuple[Timestamper, TimestampAuthority]:
    """A TSA (root, optional intermediate, leaf) stamping at `gen_time`, and the trusted
    root's entry for it."""
    start = NOW - timedelta(days=30)
    root_key = new_key("ec", 256)
    root = issue(
        name("tsa test root"),
        root_key,
        ca=True,
        not_before=start,
        not_after=NOW + timedelta(days=3650),
    )
    issuer, cas = (root, root_key), [root]
    if intermediate:
        mid_key = new_key("ec", 256)
        mid = issue(
            name("tsa test intermediate"),
            mid_key,
            issuer=issuer,
            ca=True,
            not_before=start,
            not_after=NOW + timedelta(days=3650),
        )
        issuer, cas = (mid, mid_key), [mid, root]
    leaf_key = new_key("ec", 256)
    leaf = issue(
        name("tsa test leaf"),
        leaf_key,
        issuer=issuer,
        not_before=start,
        not_after=leaf_until,
        eku=eku,
        eku_critical=eku_critical,
    )
    chain = (leaf, *cas)
    return Timestamper(leaf_key, chain, gen_time), TimestampAuthority(chain=chain)


def response(token: bytes, status: int = 0) -> bytes:
    """The TimeStampResp a TSA answers: the status, then the token."""
    return der.der_seq(der.der_seq(der.der_int(status)), token)


def stamp(stamper: Timestamper, signature: bytes = SIGNATURE) -> bytes:
    return response(stamper.stamp(signature))


STAMPER, AUTHORITY = make_tsa()


def test_a_timestamp_verifies_through_an_intermediate() -> None:
    stamper, authority = make_tsa(intermediate=True)
    assert _tsa.verify_timestamp(stamp(stamper), SIGNATURE, [authority]) == (NOW, "")


def test_the_signer_must_be_the_leaf_the_trusted_root_names() -> None:
    _, other = make_tsa()
    tsr = stamp(STAMPER)
    assert _tsa.verify_timestamp(tsr, SIGNATURE, [other, AUTHORITY]) == (NOW, "")
    assert _tsa.verify_timestamp(tsr, SIGNATURE, [other]) == (
        None,
        "RFC 3161 timestamp not verified: signed by another TSA certificate",
    )
    assert _tsa.verify_timestamp(tsr, SIGNATURE, []) == (
        None,
        "RFC 3161 timestamp not verified: no timestamp authority in the trusted root",
    )


@pytest.mark.parametrize(
    ("eku", "critical"),
    [
        (STAMPING, False),  # RFC 3161 §2.3: the extension must be critical
        ((*STAMPING, ExtendedKeyUsageOID.CODE_SIGNING), True),  # ... and timeStamping only
        ((ExtendedKeyUsageOID.CODE_SIGNING,), True),
    ],
)
def test_the_leaf_must_be_for_time_stamping_only(
    eku: Sequence[x509.ObjectIdentifier], critical: bool
) -> None:
    stamper, authority = make_tsa(eku=eku, eku_critical=critical)
    when, reason = _tsa.verify_timestamp(stamp(stamper), SIGNATURE, [authority])
    assert when is None
    assert reason == (
        "RFC 3161 timestamp not verified: TSA certificate is not for time stamping "
        "(extended key usage must be timeStamping only, and critical)"
    )


def test_the_tsa_certificate_must_be_valid_at_gen_time() -> None:
    stamper, authority = make_tsa(
        leaf_until=NOW + timedelta(days=1), gen_time=NOW + timedelta(days=2)
    )
    assert _tsa.verify_timestamp(stamp(stamper), SIGNATURE, [authority]) == (
        None,
        "RFC 3161 timestamp not verified: TSA certificate was not valid at the timestamp's time",
    )


def test_gen_time_must_fall_in_the_tsa_validity_of_the_trusted_root() -> None:
    ended = TimestampAuthority(chain=AUTHORITY.chain, validity=Validity(end=NOW - timedelta(1)))
    tsr = stamp(STAMPER)
    assert _tsa.verify_timestamp(tsr, SIGNATURE, [ended]) == (
        None,
        "RFC 3161 timestamp not verified: timestamp falls outside the TSA's validity in the "
        "trusted root",
    )
    # another TSA entry for the same certificate, still open, accepts it
    current = TimestampAuthority(chain=AUTHORITY.chain, validity=Validity(start=NOW))
    assert _tsa.verify_timestamp(tsr, SIGNATURE, [ended, current]) == (NOW, "")


def test_a_response_that_was_not_granted_is_refused() -> None:
    when, reason = _tsa.verify_timestamp(
        response(STAMPER.stamp(SIGNATURE), status=2), SIGNATURE, [AUTHORITY]
    )
    assert (when, reason) == (None, "RFC 3161 timestamp was not granted (status 2)")


def test_certificates_out_of_der_order_are_malformed() -> None:
    """GlobalSign's tokens (Notation's) have this shape; the strict decoder refuses them,
    which is why Notation keeps its own BER reader."""
    token = STAMPER.stamp(SIGNATURE)
    certs = [c.public_bytes(Encoding.DER) for c in STAMPER.chain]
    in_order = b"".join(sorted(certs))
    assert token.count(in_order) == 1
    unsorted = token.replace(in_order, b"".join(sorted(certs, reverse=True)))
    when, reason = _tsa.verify_timestamp(response(unsorted), SIGNATURE, [AUTHORITY])
    assert when is None
    assert reason.startswith("RFC 3161 timestamp is malformed: ")
    assert "InvalidSetOrdering" in reason


@pytest.mark.parametrize("tsr", [b"", b"\x30\x00", b"\x30\x03\x02\x01\x00", b"junk" * 20])
def test_garbage_is_malformed(tsr: bytes) -> None:
    when, reason = _tsa.verify_timestamp(tsr, SIGNATURE, [AUTHORITY])
    assert when is None and reason.startswith("RFC 3161 timestamp is malformed: ")
    assert len(reason) < 300


def test_every_response_is_checked_and_the_count_is_capped() -> None:
    good, other = stamp(STAMPER), stamp(STAMPER, b"another signature")
    assert _tsa.verify_timestamps([good, other], SIGNATURE, [AUTHORITY]) == (
        [NOW],
        ["RFC 3161 timestamp is over a different signature"],
    )
    assert _tsa.verify_timestamps([good, good], SIGNATURE, [AUTHORITY]) == (
        [],
        ["duplicate RFC 3161 timestamps"],
    )
    many = [stamp(STAMPER, bytes([i])) for i in range(33)]
    assert _tsa.verify_timestamps(many, SIGNATURE, [AUTHORITY]) == (
        [],
        ["too many RFC 3161 timestamps (33 > 32)"],
    )
