"""The one ASN.1 BER/DER reader (and DER writer) in regwarden: small and defensive.

`cryptography` and `rfc3161-client` parse what they know (certificates, strict-DER
time-stamp responses) but offer no reader for the rest, so this module reads: Notation's
RFC 3161 tokens (CMS SignedData + TSTInfo, which real TSAs send with BER certificate sets
that `rfc3161-client` refuses), a certificate's raw parts exactly as signed, and a Fulcio
extension's UTF8String. TLV walking with definite and indefinite lengths, constructed
OCTET STRING reassembly, and decoders for OID, INTEGER, OCTET STRING and GeneralizedTime.
Every failure raises `Asn1Error`; callers turn it into their own error. The writer half
exists for the test and demo signers.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

CLASS_UNIVERSAL = 0
CLASS_CONTEXT = 2

TAG_INTEGER = 2
TAG_BIT_STRING = 3
TAG_OCTET_STRING = 4
TAG_NULL = 5
TAG_OID = 6
TAG_UTF8_STRING = 12
TAG_SEQUENCE = 16
TAG_SET = 17
TAG_GENERALIZED_TIME = 24

_MAX_DEPTH = 32
_MAX_TAG_NUMBER = 1 << 20


class Asn1Error(ValueError):
    """The bytes are not the ASN.1 structure we expected."""


@dataclass(frozen=True, slots=True)
class Element:
    """One TLV: `raw` is the whole encoding, `content` the value bytes (reassembled for BER)."""

    cls: int
    constructed: bool
    tag: int
    raw: bytes
    content: bytes

    def is_universal(self, tag: int) -> bool:
        return self.cls == CLASS_UNIVERSAL and self.tag == tag

    def is_context(self, tag: int) -> bool:
        return self.cls == CLASS_CONTEXT and self.tag == tag

    def children(self) -> list[Element]:
        if not self.constructed:
            raise Asn1Error(f"expected a constructed element, got primitive tag {self.tag}")
        return list(iter_elements(self.content))

    def describe(self) -> str:
        kind = {0: "universal", 1: "application", 2: "context", 3: "private"}[self.cls]
        return f"{kind} tag {self.tag}"


def _read_header(data: bytes, pos: int) -> tuple[int, bool, int, int | None, int]:
    """Return (class, constructed, tag, length or None for indefinite, content start)."""
    end = len(data)
    if pos >= end:
        raise Asn1Error("truncated: missing tag")
    first = data[pos]
    pos += 1
    cls = first >> 6
    constructed = bool(first & 0x20)
    tag = first & 0x1F
    if tag == 0x1F:
        tag = 0
        while True:
            if pos >= end:
                raise Asn1Error("truncated: long-form tag")
            b = data[pos]
            pos += 1
            tag = (tag << 7) | (b & 0x7F)
            if tag > _MAX_TAG_NUMBER:
                raise Asn1Error("tag number too large")
            if not b & 0x80:
                break
    if pos >= end:
        raise Asn1Error("truncated: missing length")
    lb = data[pos]
    pos += 1
    if lb < 0x80:
        return cls, constructed, tag, lb, pos
    if lb == 0x80:
        if not constructed:
            raise Asn1Error("indefinite length on a primitive element")
        return cls, constructed, tag, None, pos
    n = lb & 0x7F
    if n > 4 or pos + n > end:
        raise Asn1Error("length field too long or truncated")
    length = int.from_bytes(data[pos : pos + n], "big")
    return cls, constructed, tag, length, pos + n


def _read(data: bytes, pos: int, depth: int) -> tuple[Element, int]:
    if depth > _MAX_DEPTH:
        raise Asn1Error("nesting too deep")
    start = pos
    cls, constructed, tag, length, pos = _read_header(data, pos)
    if length is not None:
        stop = pos + length
        if stop > len(data):
            raise Asn1Error(f"truncated: element needs {length} bytes, {len(data) - pos} left")
        content = data[pos:stop]
        if constructed and cls == CLASS_UNIVERSAL and tag == TAG_OCTET_STRING:
            content = _join_octets(content, depth)
        return Element(cls, constructed, tag, data[start:stop], content), stop
    # Indefinite length: children until an end-of-contents marker (00 00).
    octets = cls == CLASS_UNIVERSAL and tag == TAG_OCTET_STRING
    parts: list[bytes] = []
    while data[pos : pos + 2] != b"\x00\x00":
        if pos >= len(data):
            raise Asn1Error("truncated: indefinite-length element without end-of-contents")
        child, pos = _read(data, pos, depth + 1)
        if octets and not child.is_universal(TAG_OCTET_STRING):
            raise Asn1Error("constructed OCTET STRING holds a non-OCTET STRING segment")
        parts.append(child.content if octets else child.raw)
    stop = pos + 2
    return Element(cls, constructed, tag, data[start:stop], b"".join(parts)), stop


def _join_octets(content: bytes, depth: int) -> bytes:
    out: list[bytes] = []
    pos = 0
    while pos < len(content):
        child, pos = _read(content, pos, depth + 1)
        if not child.is_universal(TAG_OCTET_STRING):
            raise Asn1Error("constructed OCTET STRING holds a non-OCTET STRING segment")
        out.append(child.content)
    return b"".join(out)


def iter_elements(data: bytes) -> Iterator[Element]:
    pos = 0
    while pos < len(data):
        el, pos = _read(data, pos, 1)
        yield el


def parse(data: bytes) -> Element:
    """Parse exactly one element; trailing bytes are an error."""
    el, pos = _read(data, 0, 0)
    if pos != len(data):
        raise Asn1Error(f"{len(data) - pos} trailing bytes after the outer element")
    return el


def expect(el: Element, tag: int, what: str) -> Element:
    if not el.is_universal(tag):
        raise Asn1Error(f"{what}: expected universal tag {tag}, got {el.describe()}")
    return el


def seq(el: Element, what: str) -> list[Element]:
    return expect(el, TAG_SEQUENCE, what).children()


def decode_oid(el: Element) -> str:
    expect(el, TAG_OID, "object identifier")
    body = el.content
    if not body or body[-1] & 0x80:
        raise Asn1Error("malformed object identifier")
    arcs: list[int] = []
    value = 0
    for b in body:
        value = (value << 7) | (b & 0x7F)
        if not b & 0x80:
            arcs.append(value)
            value = 0
    first = arcs[0]
    head = [0, first] if first < 40 else [1, first - 40] if first < 80 else [2, first - 80]
    return ".".join(str(a) for a in head + arcs[1:])


def decode_int(el: Element, *, implicit: bool = False) -> int:
    if not implicit:
        expect(el, TAG_INTEGER, "integer")
    if not el.content or el.constructed:
        raise Asn1Error("malformed integer")
    return int.from_bytes(el.content, "big", signed=True)


def decode_octets(el: Element) -> bytes:
    expect(el, TAG_OCTET_STRING, "octet string")
    return el.content


_GENTIME = re.compile(rb"(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(?:\.(\d{1,9}))?Z")


def decode_generalized_time(el: Element) -> datetime:
    expect(el, TAG_GENERALIZED_TIME, "GeneralizedTime")
    m = _GENTIME.fullmatch(el.content)
    if m is None:
        raise Asn1Error(
            f"malformed GeneralizedTime {el.content[:32]!r} (expected YYYYMMDDhhmmss[.f]Z)"
        )
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    try:
        out = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError as exc:
        raise Asn1Error(f"invalid GeneralizedTime: {exc}") from None
    frac = m.group(7)
    if frac:
        out += timedelta(microseconds=int(frac.decode().ljust(6, "0")[:6]))
    return out


# -- writer (DER) ---------------------------------------------------------------------------


def _len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def tlv(tag_byte: int, content: bytes) -> bytes:
    return bytes([tag_byte]) + _len(len(content)) + content


def der_seq(*items: bytes) -> bytes:
    return tlv(0x30, b"".join(items))


def der_set(items: Sequence[bytes]) -> bytes:
    return tlv(0x31, b"".join(sorted(items)))


def der_int(value: int) -> bytes:
    length = max(1, (value.bit_length() + 8) // 8)
    return tlv(0x02, value.to_bytes(length, "big", signed=True))


def der_octets(value: bytes) -> bytes:
    return tlv(0x04, value)


def der_null() -> bytes:
    return b"\x05\x00"


def der_oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    body = bytearray()
    for arc in [arcs[0] * 40 + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body.extend(reversed(chunk))
    return tlv(0x06, bytes(body))


def der_generalized_time(value: datetime) -> bytes:
    value = value.astimezone(UTC)
    text = value.strftime("%Y%m%d%H%M%S")
    if value.microsecond:
        text += "." + f"{value.microsecond:06d}".rstrip("0")
    return tlv(0x18, (text + "Z").encode())


def der_explicit(number: int, content: bytes) -> bytes:
    return tlv(0xA0 | number, content)


def der_implicit_constructed(number: int, content: bytes) -> bytes:
    return tlv(0xA0 | number, content)
