"""Certificate chains on cryptography's verifier with Notation's extension policies
(`_x509.validate_chain`, `_x509.build_path`), and RFC 3161 tokens that were changed after
signing (Notation's `_timestamp` and cosign's `_tsa`)."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from regwarden import der
from regwarden.signatures import _tsa
from regwarden.signatures._trust import TimestampAuthority
from regwarden.signatures.notation import _sign
from regwarden.signatures.notation._sign import PrivateKey, Timestamper, issue, name, new_key
from regwarden.signatures.notation._timestamp import TimestampError, verify_token
from regwarden.signatures.notation._x509 import ChainError, PathError, build_path, validate_chain

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
START, END = NOW - timedelta(days=1), NOW + timedelta(days=30)
UNKNOWN = x509.ObjectIdentifier("1.3.6.1.4.1.99999.1")
LEAF_USAGE = x509.KeyUsage(True, False, False, False, False, False, False, False, False)
CA_USAGE = x509.KeyUsage(False, False, False, False, False, True, True, False, False)

Extra = Sequence[tuple[x509.ExtensionType, bool]]


def make(
    cn: str,
    key: PrivateKey,
    *,
    issuer: tuple[x509.Certificate, PrivateKey] | None = None,
    ca: bool = False,
    eku: Sequence[x509.ObjectIdentifier] | None = (ExtendedKeyUsageOID.CODE_SIGNING,),
    eku_critical: bool = False,
    extra: Extra = (),
) -> x509.Certificate:
    """A certificate like `_sign.issue` makes, with `extra` extensions added."""
    subject = name(cn)
    issuer_name, signing_key = (subject, key) if issuer is None else (issuer[0].subject, issuer[1])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(START)
        .not_valid_after(END)
        .add_extension(CA_USAGE if ca else LEAF_USAGE, critical=True)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if eku is not None and not ca:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=eku_critical)
    for ext, critical in extra:
        builder = builder.add_extension(ext, critical=critical)
    return builder.sign(signing_key, hashes.SHA256())


def unknown(critical: bool) -> tuple[x509.ExtensionType, bool]:
    return x509.UnrecognizedExtension(UNKNOWN, b"\x05\x00"), critical


def chain3(
    *, root_extra: Extra = (), mid_extra: Extra = (), leaf_extra: Extra = (), **leaf: object
) -> list[x509.Certificate]:
    """[leaf, intermediate, root], each able to carry extra extensions."""
    root_key, mid_key, leaf_key = new_key("ec", 256), new_key("ec", 256), new_key("ec", 256)
    root = make("x root", root_key, ca=True, extra=root_extra)
    mid = make("x mid", mid_key, issuer=(root, root_key), ca=True, extra=mid_extra)
    end = make("x leaf", leaf_key, issuer=(mid, mid_key), extra=leaf_extra, **leaf)  # type: ignore[arg-type]
    return [end, mid, root]


# -- good chains --------------------------------------------------------------------------


def test_good_chains_are_accepted() -> None:
    validate_chain(chain3(), "codesigning")
    root_key, leaf_key = new_key(), new_key()
    root = make("x root", root_key, ca=True)
    validate_chain([make("x leaf", leaf_key, issuer=(root, root_key)), root], "codesigning")
    validate_chain([make("x self", leaf_key)], "codesigning")  # self-signed signing cert
    # a leaf without EKU, and extensions the rules do not name (non-critical), are fine
    validate_chain(chain3(eku=None, leaf_extra=[unknown(False)]), "codesigning")


def test_path_is_built_from_an_unordered_pool_to_a_trusted_root() -> None:
    leaf, mid, root = chain3(
        eku=(ExtendedKeyUsageOID.TIME_STAMPING,), eku_critical=True, leaf_extra=()
    )
    stranger = make("x stranger", new_key(), ca=True)
    path = build_path(leaf, [stranger, root, mid], [stranger, root], "timestamping", NOW)
    assert [c.cert for c in path] == [leaf, mid, root]
    with pytest.raises(PathError, match="no issuer found among them"):
        build_path(leaf, [mid], [stranger], "timestamping", NOW)
    with pytest.raises(PathError, match="cert is not valid at validation time"):
        build_path(leaf, [mid], [root], "timestamping", END + timedelta(days=1))


# -- unknown critical extensions ----------------------------------------------------------


@pytest.mark.parametrize("where", ["root_extra", "mid_extra", "leaf_extra"])
def test_unknown_critical_extension_is_rejected(where: str) -> None:
    with pytest.raises(ChainError, match=r"1\.3\.6\.1\.4\.1\.99999\.1 is critical and not under"):
        validate_chain(chain3(**{where: [unknown(True)]}), "codesigning")
    validate_chain(chain3(**{where: [unknown(False)]}), "codesigning")


def test_unknown_critical_extension_names_the_leaf() -> None:
    with pytest.raises(ChainError) as caught:
        validate_chain(chain3(leaf_extra=[unknown(True)]), "codesigning")
    assert str(caught.value) == (
        "certificate 'CN=x leaf,O=regwarden test,ST=WA,C=US': the extension "
        "1.3.6.1.4.1.99999.1 is critical and not understood"
    )


# -- name constraints ---------------------------------------------------------------------


def dns_constrained(permitted: str, leaf_san: x509.GeneralName) -> list[x509.Certificate]:
    nc = x509.NameConstraints([x509.DNSName(permitted)], None)
    return chain3(
        mid_extra=[(nc, True)], leaf_extra=[(x509.SubjectAlternativeName([leaf_san]), False)]
    )


def test_name_constraints_are_honoured() -> None:
    validate_chain(dns_constrained("example.com", x509.DNSName("a.example.com")), "codesigning")
    with pytest.raises(PathError, match="no permitted name constraints matched SAN"):
        validate_chain(dns_constrained("example.com", x509.DNSName("evil.org")), "codesigning")
    excluded = x509.NameConstraints(None, [x509.IPAddress(ipaddress.ip_network("10.0.0.0/8"))])
    with pytest.raises(PathError, match="excluded name constraint"):
        validate_chain(
            chain3(
                root_extra=[(excluded, True)],
                leaf_extra=[
                    (
                        x509.SubjectAlternativeName(
                            [x509.IPAddress(ipaddress.ip_address("10.1.2.3"))]
                        ),
                        False,
                    )
                ],
            ),
            "codesigning",
        )


@pytest.mark.parametrize("critical", [True, False])
def test_directory_name_constraints_are_refused(critical: bool) -> None:
    # cryptography skips a non-critical directoryName constraint; the subject DN is what
    # trusted identities match, so an unenforced one must not pass silently
    only_de = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "DE")])
    nc = x509.NameConstraints([x509.DirectoryName(only_de)], None)
    with pytest.raises(ChainError, match="name constraint on a DirectoryName, which is not"):
        validate_chain(chain3(mid_extra=[(nc, critical)]), "codesigning")


# -- extended key usage -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("eku", "reason"),
    [
        ((ExtendedKeyUsageOID.SERVER_AUTH,), "must not contain serverAuth"),
        (
            (ExtendedKeyUsageOID.CODE_SIGNING, ExtendedKeyUsageOID.TIME_STAMPING),
            "must not contain timeStamping",
        ),
        ((ExtendedKeyUsageOID.CODE_SIGNING, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE), "anyEx"),
        ((ExtendedKeyUsageOID.EMAIL_PROTECTION,), "must not contain emailProtection"),
        ((x509.ObjectIdentifier("1.3.6.1.4.1.99999.7"),), "lacks codeSigning"),
    ],
)
def test_wrong_code_signing_eku_is_rejected(
    eku: tuple[x509.ObjectIdentifier, ...], reason: str
) -> None:
    with pytest.raises(ChainError, match=reason) as caught:
        validate_chain(chain3(eku=eku), "codesigning")
    assert not isinstance(caught.value, PathError)  # a Notation rule, not a path problem


def test_wrong_timestamping_eku_is_rejected() -> None:
    ok = chain3(eku=(ExtendedKeyUsageOID.TIME_STAMPING,), eku_critical=True)
    validate_chain(ok, "timestamping")
    with pytest.raises(ChainError, match="must have timeStamping as its only extended key"):
        validate_chain(chain3(eku_critical=True), "timestamping")  # codeSigning
    with pytest.raises(ChainError, match=r"extended key usage extension 2\.5\.29\.37 must be crit"):
        validate_chain(chain3(eku=(ExtendedKeyUsageOID.TIME_STAMPING,)), "timestamping")
    # and a TSA certificate cannot sign code
    with pytest.raises(ChainError, match="must not contain timeStamping"):
        validate_chain(ok, "codesigning")


def test_chain_valid_at_no_instant_is_rejected() -> None:
    root_key, leaf_key = new_key(), new_key()
    root = issue(name("x root"), root_key, ca=True, not_before=START, not_after=NOW)
    leaf = issue(
        name("x leaf"),
        leaf_key,
        issuer=(root, root_key),
        not_before=NOW + timedelta(days=1),
        not_after=END,
    )
    with pytest.raises(ChainError, match="the chain is valid at no time"):
        validate_chain([leaf, root], "codesigning")


# -- RFC 3161 tokens changed after signing ---------------------------------------------------

STAMPER, TSA_ROOT = _sign.demo_timestamper(NOW)
SIGNATURE = b"the artifact signature"


def flip(data: bytes, at: int) -> bytes:
    out = bytearray(data)
    out[at] ^= 0x01
    return bytes(out)


def token_parts(token: bytes) -> tuple[bytes, bytes]:
    """(the TSA leaf certificate's DER, the SignerInfo signature) inside a token."""
    leaf_der = STAMPER.chain[0].public_bytes(Encoding.DER)
    content_info = der.parse(token).children()
    signed_data = content_info[1].children()[0].children()
    signer_info = signed_data[-1].children()[0].children()
    return leaf_der, der.decode_octets(signer_info[-1])


def test_notation_token_changed_after_signing_is_rejected() -> None:
    token = STAMPER.stamp(SIGNATURE)
    assert verify_token(token, SIGNATURE, [TSA_ROOT]).gen_time == NOW
    leaf_der, sig = token_parts(token)
    with pytest.raises(TimestampError, match="the TSA signature over the time-stamp token does"):
        verify_token(token.replace(sig, flip(sig, len(sig) // 2)), SIGNATURE, [TSA_ROOT])
    # a changed embedded certificate no longer matches signingCertificateV2
    tampered_cert = token.replace(leaf_der, flip(leaf_der, len(leaf_der) - 5))
    with pytest.raises(TimestampError):
        verify_token(tampered_cert, SIGNATURE, [TSA_ROOT])
    with pytest.raises(TimestampError, match="message imprint mismatch"):
        verify_token(token, SIGNATURE + b"!", [TSA_ROOT])


def test_notation_token_outside_the_tsa_validity_is_rejected() -> None:
    late = Timestamper(STAMPER.key, STAMPER.chain, NOW + timedelta(days=400))
    with pytest.raises(TimestampError) as caught:
        verify_token(late.stamp(SIGNATURE), SIGNATURE, [TSA_ROOT])
    assert "does not chain to a trusted TSA root valid at the time stamp" in str(caught.value)
    assert "cert is not valid at validation time" in str(caught.value)


def time_stamp_response(token: bytes) -> bytes:
    """The TimeStampResp a TSA answers: status granted, then the token."""
    return der.der_seq(der.der_seq(der.der_int(0)), token)


def test_cosign_timestamp_changed_after_signing_is_rejected() -> None:
    authority = TimestampAuthority(chain=(STAMPER.chain[0], TSA_ROOT))
    token = STAMPER.stamp(SIGNATURE)
    good = time_stamp_response(token)
    assert _tsa.verify_timestamp(good, SIGNATURE, [authority]) == (NOW, "")
    _, sig = token_parts(token)
    when, reason = _tsa.verify_timestamp(
        good.replace(sig, flip(sig, len(sig) // 2)), SIGNATURE, [authority]
    )
    assert when is None
    assert reason == (
        "RFC 3161 timestamp not verified: signature does not verify with the TSA certificate"
    )
    when, reason = _tsa.verify_timestamp(good, SIGNATURE + b"!", [authority])
    assert (when, reason) == (None, "RFC 3161 timestamp is over a different signature")
    gen = der.der_generalized_time(NOW)
    when, reason = _tsa.verify_timestamp(
        good.replace(gen, gen[:-2] + b"1Z"), SIGNATURE, [authority]
    )
    assert (when, reason) == (
        None,
        "RFC 3161 timestamp's signed digest does not match its TSTInfo",
    )
