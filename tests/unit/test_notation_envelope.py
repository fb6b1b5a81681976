"""Envelope parsing: malformed input raises NotationError with a precise message, and
nothing else ever escapes the JWS, COSE and time-stamp parsers (Hypothesis)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from regwarden import der
from regwarden.signatures.notation import (
    MEDIA_TYPE_COSE,
    MEDIA_TYPE_JWS,
    NotationError,
    Target,
    TrustStore,
    _sign,
    parse_envelope,
    parse_trust_policy,
    verify_notation,
)
from regwarden.signatures.notation._timestamp import TimestampError, verify_token

NOW = datetime(2025, 6, 1, tzinfo=UTC)
TARGET = Target("application/vnd.oci.image.manifest.v1+json", "sha256:" + "ef" * 32, 99)
IDENT, ROOT = _sign.demo_identity(NOW, kind="ec", size=256)
TSA, TSA_ROOT = _sign.demo_timestamper(NOW)
JWS = _sign.sign_jws(IDENT, TARGET, signing_time=NOW, timestamper=TSA)
COSE = _sign.sign_cose(IDENT, TARGET, signing_time=NOW, timestamper=TSA)


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jws_with(header_doc: dict[str, Any] | None = None, **env: Any) -> bytes:
    doc = json.loads(JWS)
    if header_doc is not None:
        doc["protected"] = b64u(json.dumps(header_doc).encode())
    doc.update(env)
    return json.dumps(doc).encode()


def good_protected(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "alg": "ES256",
        "cty": "application/vnd.cncf.notary.payload.v1+json",
        "crit": ["io.cncf.notary.signingScheme"],
        "io.cncf.notary.signingScheme": "notary.x509",
        "io.cncf.notary.signingTime": "2025-06-01T00:00:00Z",
    }
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


def test_parsed_fields() -> None:
    info = parse_envelope(JWS, MEDIA_TYPE_JWS)
    assert info.target == TARGET
    assert info.signing_time == NOW
    assert info.timestamp_token is not None
    assert info.chain == IDENT.chain
    cose = parse_envelope(COSE, MEDIA_TYPE_COSE)
    assert (cose.target, cose.signing_time, cose.algorithm) == (TARGET, NOW, info.algorithm)


@pytest.mark.parametrize(
    ("envelope", "message"),
    [
        (b"{", "the JWS envelope is not valid JSON"),
        (b"[]", "the JWS envelope must be a JSON object"),
        (jws_with(protected=b64u(b'{"alg": "ES256", "alg": "ES256"}')), "duplicate key 'alg'"),
        (jws_with(signatures=[]), "general serialization is not supported"),
        (jws_with(payload=5), "has no 'payload' string"),
        (jws_with(payload="a=="), "the JWS payload is not unpadded base64url text"),
        (jws_with(header=[]), "no unprotected 'header' object"),
        (jws_with(header={"x5c": []}), "has no 'x5c' certificate chain"),
        (jws_with(header={"x5c": ["***"]}), "x5c[0] is not padded standard base64 text"),
        (
            jws_with(header={"x5c": [base64.b64encode(b"nope").decode()]}),
            "certificate #0 of the chain is not DER X.509",
        ),
        (jws_with(header={"x5c": ["AA=="], "X5C": ["AA=="]}), "repeats a name (ignoring case)"),
        (
            jws_with(good_protected(alg="HS256")),
            "unsupported JWS algorithm 'HS256'; expected one of PS256",
        ),
        (jws_with(good_protected(alg="none")), "unsupported JWS algorithm 'none'"),
        (
            jws_with(good_protected(cty="application/json")),
            "unsupported payload content type 'application/json'",
        ),
        (jws_with(good_protected(crit=None)), "has no 'crit' list"),
        (jws_with(good_protected(crit=[])), "has no 'crit' list"),
        (
            jws_with(good_protected(crit="io.cncf.notary.signingScheme")),
            "'crit' header must be a list of strings",
        ),
        (
            jws_with(good_protected(crit=["io.cncf.notary.signingScheme"] * 2)),
            "names a header more than once",
        ),
        (
            jws_with(good_protected(crit=["io.cncf.notary.signingScheme", "cty"])),
            "'cty' is marked critical but is not present",
        ),
        (
            jws_with(good_protected(**{"io.cncf.notary.signingScheme": "notary.pgp"})),
            "unsupported signing scheme 'notary.pgp'",
        ),
        (
            jws_with(good_protected(**{"io.cncf.notary.signingTime": None})),
            "is required for signing scheme notary.x509",
        ),
        (
            jws_with(good_protected(**{"io.cncf.notary.signingTime": "2025-06-01"})),
            "must be an RFC 3339 time with a zone",
        ),
        (
            jws_with(good_protected(**{"io.cncf.notary.signingTime": "2025-06-01T00:00:00"})),
            "must be an RFC 3339 time with a zone",
        ),
        (
            jws_with(good_protected(**{"io.cncf.notary.signingTime": "2025-13-01T00:00:00Z"})),
            "is not a valid time",
        ),
        (
            jws_with(
                good_protected(**{"io.cncf.notary.authenticSigningTime": "2025-06-01T00:00:00Z"})
            ),
            "must not be present for signing scheme notary.x509",
        ),
        (
            jws_with(
                good_protected(**{"io.cncf.notary.signingScheme": "notary.x509.signingAuthority"})
            ),
            "'io.cncf.notary.authenticSigningTime' is required",
        ),
        (jws_with(signature=""), "the envelope carries an empty signature"),
        (jws_with(payload=b64u(b"[1]")), "the signed payload has no 'targetArtifact' object"),
        (
            jws_with(
                payload=b64u(
                    b'{"targetArtifact": {"mediaType": "x", "digest": "md5:00", "size": 1}}'
                )
            ),
            "targetArtifact.digest 'md5:00' is not a valid digest",
        ),
        (
            jws_with(
                payload=b64u(
                    b'{"targetArtifact": {"mediaType": "x", "digest": "sha256:'
                    + b"0" * 64
                    + b'", "size": -1}}'
                )
            ),
            "targetArtifact.size -1 is not a non-negative integer",
        ),
        (
            jws_with(
                payload=b64u(
                    b'{"targetArtifact": {"mediaType": "x", "digest": "sha256:'
                    + b"0" * 64
                    + b'", "size": true}}'
                )
            ),
            "targetArtifact.size True",
        ),
        (
            jws_with(
                payload=b64u(
                    b'{"targetArtifact": {"digest": "sha256:' + b"0" * 64 + b'", "size": 1}}'
                )
            ),
            "targetArtifact.mediaType is missing",
        ),
    ],
)
def test_malformed_jws(envelope: bytes, message: str) -> None:
    with pytest.raises(
        NotationError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
    ):
        parse_envelope(envelope, MEDIA_TYPE_JWS)


def cose_with(
    protected: dict[object, Any] | None = None,
    unprotected: dict[object, Any] | None = None,
    tag: int = 18,
    payload: Any = None,
) -> bytes:
    top = cbor2.loads(COSE)
    prot_raw, unprot, body, sig = top.value
    if protected is not None:
        prot_raw = cbor2.dumps(protected)
    return cbor2.dumps(
        cbor2.CBORTag(
            tag,
            [
                prot_raw,
                unprotected if unprotected is not None else unprot,
                body if payload is None else payload,
                sig,
            ],
        )
    )


def cose_protected(**over: Any) -> dict[object, Any]:
    base: dict[object, Any] = {
        1: -7,
        2: ["io.cncf.notary.signingScheme"],
        3: "application/vnd.cncf.notary.payload.v1+json",
        "io.cncf.notary.signingScheme": "notary.x509",
        "io.cncf.notary.signingTime": cbor2.CBORTag(1, int(NOW.timestamp())),
    }
    for key, value in over.items():
        label: object = int(key[1:]) if key.startswith("L") else key.replace("__", ".")
        if value is None:
            base.pop(label, None)
        else:
            base[label] = value
    return base


@pytest.mark.parametrize(
    ("envelope", "message"),
    [
        (b"\xff", "the COSE envelope is not valid CBOR"),
        (cbor2.dumps([1, 2, 3, 4]), "is not a COSE_Sign1_Tagged (tag 18) message"),
        (cose_with(tag=98), "is not a COSE_Sign1_Tagged (tag 18) message"),
        (cbor2.dumps(cbor2.CBORTag(18, [b"", {}, b""])), "must be an array of 4 items"),
        (cose_with(payload=cbor2.undefined), "payload must be an attached byte string"),
        (cose_with(unprotected={}), "has no x5chain (label 33) array"),
        (cose_with(unprotected={33: "x"}), "has no x5chain (label 33) array"),
        (cose_with(unprotected={33: [b"\x00"]}), "certificate #0 of the chain is not DER X.509"),
        (cose_with(unprotected={33: [1]}), "every x5chain entry must be a byte string"),
        (cose_with(cose_protected(L1=-8)), "unsupported COSE algorithm -8"),
        (cose_with(cose_protected(L1="ES256")), "unsupported COSE algorithm 'ES256'"),
        (cose_with(cose_protected(L3=50)), "has no content type (label 3) string"),
        (cose_with(cose_protected(L2=None)), "has no 'crit' list"),
        (
            cose_with(cose_protected(L2=[7])),
            "COSE header label 7 is marked critical but is not present",
        ),
        (
            cose_with(cose_protected(L2=["io.cncf.notary.signingScheme", 4], L4=b"kid")),
            "unknown critical COSE header label 4",
        ),
        (
            cose_with(cose_protected(L2=["io.cncf.notary.signingScheme", 1.5])),
            "is neither an integer nor text",
        ),
        (
            cose_with(cose_protected(io__cncf__notary__signingTime="2025-06-01T00:00:00Z")),
            "must be a tag 1 epoch time",
        ),
        (
            cose_with(
                cose_protected(
                    io__cncf__notary__signingTime=cbor2.CBORTag(0, "2025-06-01T00:00:00Z")
                )
            ),
            "must be a tag 1 epoch time",
        ),
        (
            cose_with(cose_protected(io__cncf__notary__signingTime=cbor2.CBORTag(1, "soon"))),
            "tag 1 must hold a number",
        ),
        (
            cose_with(cose_protected(io__cncf__notary__signingTime=cbor2.CBORTag(1, 2**62))),
            "is out of range",
        ),
        (
            cbor2.dumps(cbor2.CBORTag(18, [cbor2.dumps([1]), {}, b"", b""])),
            "the COSE protected header must be a map",
        ),
        (bytes.fromhex("d2849f40ffa04040"), "is not valid CBOR"),  # indefinite-length array
    ],
)
def test_malformed_cose(envelope: bytes, message: str) -> None:
    escaped = message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
    with pytest.raises(NotationError, match=escaped):
        parse_envelope(envelope, MEDIA_TYPE_COSE)


def test_cose_duplicate_protected_labels() -> None:
    # {1: -7, 1: -7} written by hand: cbor2 refuses to encode duplicates
    raw = bytes.fromhex("a2") + bytes.fromhex("0126") * 2
    with pytest.raises(NotationError, match="Duplicate map key"):
        parse_envelope(cose_with_raw_protected(raw), MEDIA_TYPE_COSE)


def cose_with_raw_protected(raw: bytes) -> bytes:
    top = cbor2.loads(COSE)
    _, unprot, body, sig = top.value
    return cbor2.dumps(cbor2.CBORTag(18, [raw, unprot, body, sig]))


# -- the timestamp parser ------------------------------------------------------------------


def test_token_round_trip() -> None:
    sig = b"the signature bytes"
    ts = verify_token(TSA.stamp(sig), sig, [TSA_ROOT])
    assert ts.gen_time == NOW and ts.accuracy == timedelta(seconds=1)
    assert [c.subject for c in ts.tsa_chain] == [TSA.chain[0].subject, TSA_ROOT.subject]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda t: t[:-1], "malformed"),
        (lambda t: t + b"\x00", "trailing bytes"),
        (lambda t: b"\x30\x00", "is not a CMS SignedData ContentInfo"),
    ],
)
def test_token_malformed(mutate: Any, message: str) -> None:
    with pytest.raises(TimestampError, match=message):
        verify_token(mutate(TSA.stamp(b"s")), b"s", [TSA_ROOT])


def test_token_with_a_tampered_tst_info() -> None:
    token = bytearray(TSA.stamp(b"s"))
    gen = der.der_generalized_time(NOW)[2:]
    at = bytes(token).index(gen)
    token[at + 3] ^= 0x01  # a digit of the year inside TSTInfo.genTime
    with pytest.raises(TimestampError, match="messageDigest does not match the TSTInfo"):
        verify_token(bytes(token), b"s", [TSA_ROOT])


def test_token_without_roots() -> None:
    with pytest.raises(TimestampError, match="no trusted TSA certificate is configured"):
        verify_token(TSA.stamp(b"s"), b"s", [])


def test_asn1_indefinite_length_and_constructed_octets() -> None:
    # SEQUENCE (indefinite) { OCTET STRING (constructed, indefinite) { "ab", "cd" } }
    ber = bytes.fromhex("30802480040261620402636400000000")
    outer = der.parse(ber)
    (inner,) = outer.children()
    assert der.decode_octets(inner) == b"abcd"
    assert (
        der.decode_oid(der.parse(der.der_oid("1.2.840.113549.1.9.16.1.4")))
        == "1.2.840.113549.1.9.16.1.4"
    )
    assert der.decode_int(der.parse(der.der_int(-129))) == -129


# -- Hypothesis: nothing but NotationError (or TimestampError) escapes ---------------------


def parses_or_refuses(data: bytes, media_type: str) -> None:
    """Either a structurally valid SignerInfo comes back or NotationError says why."""
    try:
        info = parse_envelope(data, media_type)
    except NotationError as exc:
        refusal = str(exc)
    else:
        assert info.chain and info.signature and info.target.digest.startswith("sha")
        return
    assert refusal


def _mutations(seed: bytes) -> st.SearchStrategy[bytes]:
    def flip(data: bytes, at: int, value: int) -> bytes:
        if not data:
            return bytes([value])
        i = at % len(data)
        return data[:i] + bytes([value]) + data[i + 1 :]

    return st.one_of(
        st.binary(max_size=512),
        st.builds(flip, st.just(seed), st.integers(0, 1 << 16), st.integers(0, 255)),
        st.builds(lambda n: seed[:n], st.integers(0, len(seed))),
        st.builds(
            lambda a, b: seed[:a] + b + seed[a:], st.integers(0, len(seed)), st.binary(max_size=16)
        ),
    )


_FUZZ = settings(
    max_examples=int(__import__("os").environ.get("FUZZ_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@_FUZZ
@given(_mutations(JWS))
def test_fuzz_jws_parser(data: bytes) -> None:
    parses_or_refuses(data, MEDIA_TYPE_JWS)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@_FUZZ
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "alg",
                "cty",
                "crit",
                "io.cncf.notary.signingScheme",
                "io.cncf.notary.signingTime",
                "io.cncf.notary.expiry",
                "io.cncf.notary.authenticSigningTime",
                "x",
            ]
        ),
        json_values,
    )
)
def test_fuzz_jws_protected_header(protected: dict[str, Any]) -> None:
    parses_or_refuses(jws_with(protected), MEDIA_TYPE_JWS)


@_FUZZ
@given(_mutations(COSE))
def test_fuzz_cose_parser(data: bytes) -> None:
    parses_or_refuses(data, MEDIA_TYPE_COSE)


cbor_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.integers(-40, 40) | st.text(max_size=30), inner, max_size=4)
        | st.builds(cbor2.CBORTag, st.integers(0, 300), inner)
    ),
    max_leaves=12,
)


@_FUZZ
@given(
    st.dictionaries(
        st.sampled_from(
            [
                1,
                2,
                3,
                4,
                33,
                "io.cncf.notary.signingScheme",
                "io.cncf.notary.signingTime",
                "io.cncf.notary.expiry",
            ]
        ),
        cbor_values,
    ),
    st.dictionaries(st.sampled_from([33, "io.cncf.notary.timestampSignature", 5]), cbor_values),
)
def test_fuzz_cose_headers(protected: dict[object, Any], unprotected: dict[object, Any]) -> None:
    try:
        envelope = cose_with(protected, unprotected)
    except (cbor2.CBOREncodeError, TypeError, ValueError):
        return  # not encodable: nothing to parse
    parses_or_refuses(envelope, MEDIA_TYPE_COSE)


@_FUZZ
@given(_mutations(TSA.stamp(b"s")))
def test_fuzz_timestamp_token(data: bytes) -> None:
    try:
        ts = verify_token(data, b"s", [TSA_ROOT])
    except TimestampError as exc:
        refusal = str(exc)
    else:
        assert ts.gen_time == NOW  # only an intact token verifies
        return
    assert refusal


# verification as a whole: a mutated envelope gives a result or NotationError, never a crash
_POLICY = parse_trust_policy(
    {
        "version": "1.0",
        "trustPolicies": [
            {
                "name": "p",
                "registryScopes": ["*"],
                "signatureVerification": {"level": "strict"},
                "trustStores": ["ca:r", "tsa:t"],
                "trustedIdentities": ["x509.subject: C=US, ST=WA, O=regwarden test"],
            }
        ],
    }
)
_STORE = TrustStore.from_certificates({("ca", "r"): [ROOT], ("tsa", "t"): [TSA_ROOT]})


def assert_refused(exc: NotationError) -> None:
    assert str(exc)


def verifies_or_refuses(data: bytes, media_type: str) -> None:
    try:
        result = verify_notation(
            data,
            media_type,
            target=TARGET,
            reference="r.io/a/b",
            trust_policy=_POLICY,
            trust_store=_STORE,
            now=NOW,
        )
    except NotationError as exc:
        assert_refused(exc)
    else:
        if result.verified:  # then every signed byte is the original's
            original = parse_envelope(JWS if media_type == MEDIA_TYPE_JWS else COSE, media_type)
            info = parse_envelope(data, media_type)
            assert (info.signed_message, info.signature) == (
                original.signed_message,
                original.signature,
            )
        else:
            assert result.reason


def test_unmutated_envelopes_verify() -> None:
    for data, media_type in ((JWS, MEDIA_TYPE_JWS), (COSE, MEDIA_TYPE_COSE)):
        result = verify_notation(
            data,
            media_type,
            target=TARGET,
            reference="r.io/a/b",
            trust_policy=_POLICY,
            trust_store=_STORE,
            now=NOW,
        )
        assert result.verified, result.reason
        assert result.timestamp == NOW


@_FUZZ
@given(_mutations(JWS))
def test_fuzz_jws_verification(data: bytes) -> None:
    verifies_or_refuses(data, MEDIA_TYPE_JWS)


@_FUZZ
@given(_mutations(COSE))
def test_fuzz_cose_verification(data: bytes) -> None:
    verifies_or_refuses(data, MEDIA_TYPE_COSE)
