"""regwarden.der: the one BER/DER reader — what it accepts (DER, BER's indefinite lengths and
constructed OCTET STRINGs), what it refuses (each with Asn1Error, never another exception),
and that the writer's output reads back."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from regwarden import der


def test_writer_output_reads_back() -> None:
    when = datetime(2025, 6, 1, 12, 30, 5, 250000, tzinfo=UTC)
    encoded = der.der_seq(
        der.der_int(-129),
        der.der_int(1 << 70),
        der.der_oid("1.2.840.113549.1.9.16.1.4"),
        der.der_octets(b"\x00\xff"),
        der.der_generalized_time(when),
        der.der_explicit(0, der.der_null()),
        der.der_set([der.der_int(2), der.der_int(1)]),
    )
    fields = der.seq(der.parse(encoded), "test")
    assert der.decode_int(fields[0]) == -129
    assert der.decode_int(fields[1]) == 1 << 70
    assert der.decode_oid(fields[2]) == "1.2.840.113549.1.9.16.1.4"
    assert der.decode_octets(fields[3]) == b"\x00\xff"
    assert der.decode_generalized_time(fields[4]) == when
    assert fields[5].is_context(0) and fields[5].children()[0].is_universal(der.TAG_NULL)
    # a SET is written in DER order (sorted encodings)
    assert [der.decode_int(e) for e in fields[6].children()] == [1, 2]
    assert b"".join(f.raw for f in fields) == der.parse(encoded).content


def test_ber_indefinite_length_and_constructed_octets_are_joined() -> None:
    # SEQUENCE (indefinite) { OCTET STRING (constructed, indefinite) { "ab", "cd" } }
    ber = b"\x30\x80" + b"\x24\x80\x04\x02ab\x04\x02cd\x00\x00" + b"\x00\x00"
    (inner,) = der.parse(ber).children()
    assert der.decode_octets(inner) == b"abcd"
    # the same, definite-length constructed
    assert der.decode_octets(der.parse(b"\x24\x08\x04\x02ab\x04\x02cd")) == b"abcd"


def test_long_form_tags_and_lengths() -> None:
    body = b"x" * 300
    el = der.parse(b"\x9f\x81\x00\x82\x01\x2c" + body)  # context tag 128, 2-byte length
    assert el.is_context(128) and el.content == body


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "missing tag"),
        (b"\x30", "missing length"),
        (b"\x04\x05abc", "needs 5 bytes"),
        (b"\x04\x01a\x00", "trailing"),
        (b"\x04\x80", "indefinite length on a primitive"),
        (b"\x30\x80\x02\x01\x01", "without end-of-contents"),
        (b"\x04\x85\x01\x00\x00\x00\x00", "length field too long"),
        (b"\x24\x03\x02\x01\x01", "non-OCTET STRING segment"),
        (b"\x1f\xff\xff\xff\x7f\x00", "tag number too large"),
        (b"\x30\x80" * 40, "nesting too deep"),
    ],
)
def test_malformed_input_raises_asn1_error(data: bytes, message: str) -> None:
    with pytest.raises(der.Asn1Error, match=message):
        der.parse(data)


@pytest.mark.parametrize(
    ("encoded", "decode"),
    [
        (b"\x06\x01\x81", der.decode_oid),  # last arc unfinished
        (b"\x06\x00", der.decode_oid),
        (b"\x02\x00", der.decode_int),
        (b"\x18\x0d20250601120000", der.decode_generalized_time),  # no Z
        (b"\x18\x0f20251301120000Z", der.decode_generalized_time),  # month 13
        (b"\x04\x01a", der.decode_int),  # wrong tag
    ],
)
def test_malformed_values_raise_asn1_error(
    encoded: bytes, decode: Callable[[der.Element], object]
) -> None:
    with pytest.raises(der.Asn1Error):
        decode(der.parse(encoded))


def test_reads_a_certificate_exactly_as_cryptography_does() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "der test")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(42)
        .not_valid_before(datetime(2025, 1, 1, tzinfo=UTC))
        .not_valid_after(datetime(2026, 1, 1, tzinfo=UTC))
        .sign(key, hashes.SHA256())
    )
    tbs, _algorithm, signature = der.seq(der.parse(cert.public_bytes(Encoding.DER)), "cert")
    assert tbs.raw == cert.tbs_certificate_bytes
    assert signature.is_universal(der.TAG_BIT_STRING) and signature.content[1:] == cert.signature
    version, serial = der.seq(tbs, "tbs")[:2]
    assert version.is_context(0) and der.decode_int(serial) == 42
