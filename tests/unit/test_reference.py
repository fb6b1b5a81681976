"""ImageRef: every reference form parses and prints back; malformed ones name the problem."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from regwarden.errors import InvalidReference
from regwarden.reference import ImageRef, short_digest, validate_digest

D = "sha256:" + "0123456789abcdef" * 4
D512 = "sha512:" + "ab" * 64


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest", "printed"),
    [
        ("alpine", "docker.io", "library/alpine", None, None, "docker.io/library/alpine"),
        (
            "alpine:3.19",
            "docker.io",
            "library/alpine",
            "3.19",
            None,
            "docker.io/library/alpine:3.19",
        ),
        ("library/alpine", "docker.io", "library/alpine", None, None, "docker.io/library/alpine"),
        ("acme/api", "docker.io", "acme/api", None, None, "docker.io/acme/api"),
        ("docker.io/alpine", "docker.io", "library/alpine", None, None, "docker.io/library/alpine"),
        (
            "index.docker.io/acme/api:v1",
            "docker.io",
            "acme/api",
            "v1",
            None,
            "docker.io/acme/api:v1",
        ),
        ("ghcr.io/acme/api:1.2.3", "ghcr.io", "acme/api", "1.2.3", None, None),
        (f"ghcr.io/acme/api@{D}", "ghcr.io", "acme/api", None, D, None),
        (f"ghcr.io/acme/api:v1@{D}", "ghcr.io", "acme/api", "v1", D, None),
        (f"ghcr.io/acme/api@{D512}", "ghcr.io", "acme/api", None, D512, None),
        ("localhost/api", "localhost", "api", None, None, None),
        ("localhost:5000/api:dev", "localhost:5000", "api", "dev", None, None),
        ("127.0.0.1:5000/a/b/c:t", "127.0.0.1:5000", "a/b/c", "t", None, None),
        ("[::1]:5000/api:v1", "[::1]:5000", "api", "v1", None, None),
        ("[::1]/api", "[::1]", "api", None, None, None),
        ("[2001:db8::1]:443/team/app@" + D, "[2001:db8::1]:443", "team/app", None, D, None),
        ("Registry.Example.com/x", "Registry.Example.com", "x", None, None, None),
        (
            "123456789012.dkr.ecr.us-east-1.amazonaws.com/payments/api:1.0.0",
            "123456789012.dkr.ecr.us-east-1.amazonaws.com",
            "payments/api",
            "1.0.0",
            None,
            None,
        ),
        (
            "europe-docker.pkg.dev/proj/repo/img:t",
            "europe-docker.pkg.dev",
            "proj/repo/img",
            "t",
            None,
            None,
        ),
        (
            "acme.azurecr.io/a__b/c-d/e.f:T_1.x-y",
            "acme.azurecr.io",
            "a__b/c-d/e.f",
            "T_1.x-y",
            None,
            None,
        ),
        ("reg.io/a--b:_tag", "reg.io", "a--b", "_tag", None, None),
        ("reg.io:8443/deep/er/path/name", "reg.io:8443", "deep/er/path/name", None, None, None),
    ],
)
def test_parse_every_form(
    text: str,
    registry: str,
    repository: str,
    tag: str | None,
    digest: str | None,
    printed: str | None,
) -> None:
    ref = ImageRef.parse(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (
        registry,
        repository,
        tag,
        digest,
    )
    assert str(ref) == (printed or text)
    assert ImageRef.parse(str(ref)) == ref  # printing is a fixed point


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        (" alpine", "white space"),
        ("alpine ", "white space"),
        ("al pine", "white space"),
        ("https://ghcr.io/acme/api", "URL scheme"),
        ("ghcr.io/Acme/api", "lowercase"),
        ("ghcr.io/acme//api", "empty path component"),
        ("ghcr.io/acme/api/", "empty path component"),
        ("ghcr.io/", "missing repository"),
        ("ghcr.io/acme/-api", "invalid repository path component"),
        ("ghcr.io/acme/api-", "invalid repository path component"),
        ("ghcr.io/acme/a...b", "invalid repository path component"),
        ("ghcr.io/acme/a___b", "invalid repository path component"),
        ("ghcr.io/acme/api:", "invalid tag"),
        ("ghcr.io/acme/api:-bad", "invalid tag"),
        ("ghcr.io/acme/api:" + "t" * 129, "invalid tag"),
        ("ghcr.io/acme/api:tag!", "invalid tag"),
        ("ghcr.io/acme/api@sha256:abc", "64 lowercase hex"),
        ("ghcr.io/acme/api@sha256:" + "A" * 64, "64 lowercase hex"),
        ("ghcr.io/acme/api@md5:" + "a" * 32, "unsupported digest algorithm"),
        ("ghcr.io/acme/api@" + "a" * 64, "malformed digest"),
        ("ghcr.io/acme/api@" + D + "@" + D, "more than one '@'"),
        ("ghcr.io/acme/api@", "malformed digest"),
        ("ghcr.io:99999/api", "invalid port"),
        ("ghcr.io:/api", "empty port"),
        ("ghcr.io:x1/api", "invalid port"),
        ("-bad.io/api", "malformed registry host"),
        ("[::1/api", "malformed IPv6"),
        ("[zz::1]:5000/api", "malformed IPv6"),
        (":tag", "missing repository"),
        ("@" + D, "missing repository"),
        ("reg.io/" + "a" * 250, "longer than 255"),
    ],
)
def test_malformed_references_name_the_problem(text: str, reason: str) -> None:
    with pytest.raises(InvalidReference, match=reason) as info:
        ImageRef.parse(text)
    assert info.value.exit_code == 2
    assert repr(text) in str(info.value)


def test_derived_views() -> None:
    hub = ImageRef.parse("alpine:3")
    assert hub.api_host == "registry-1.docker.io"
    assert hub.familiar() == "alpine:3"
    assert hub.reference == "3"
    local = ImageRef.parse(f"127.0.0.1:5000/a/b:t@{D}")
    assert local.is_loopback and local.api_host == "127.0.0.1:5000"
    assert local.reference == D  # digest wins over tag: verify by digest, never by tag
    assert ImageRef.parse("[::1]:5/x").is_loopback
    assert ImageRef.parse("localhost/x").is_loopback
    assert not ImageRef.parse("ghcr.io/x").is_loopback
    assert ImageRef.parse("ghcr.io/x").reference == "latest"
    moved = local.in_repository("quarantine/a/b").with_tag(None)
    assert str(moved) == f"127.0.0.1:5000/quarantine/a/b@{D}"
    assert short_digest(D) == "0123456789ab"


def test_validate_digest_and_pydantic_coercion() -> None:
    assert validate_digest(D) == D
    with pytest.raises(InvalidReference):
        validate_digest("sha256:xyz")
    assert ImageRef.model_validate("ghcr.io/a/b:c") == ImageRef.parse("ghcr.io/a/b:c")


_component = st.from_regex(r"[a-z0-9]{1,8}([._-][a-z0-9]{1,8}){0,2}", fullmatch=True)


@given(
    host=st.sampled_from(["ghcr.io", "127.0.0.1:5000", "[::1]:5000", "reg.example.com:443"]),
    path=st.lists(_component, min_size=1, max_size=4),
    tag=st.none() | st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True),
    digest=st.none() | st.from_regex(r"sha256:[0-9a-f]{64}", fullmatch=True),
)
def test_roundtrip_property(
    host: str, path: list[str], tag: str | None, digest: str | None
) -> None:
    text = host + "/" + "/".join(path)
    if tag:
        text += f":{tag}"
    if digest:
        text += f"@{digest}"
    ref = ImageRef.parse(text)
    assert str(ref) == text
    assert (ref.tag, ref.digest) == (tag, digest)


@given(st.text(max_size=80))
def test_arbitrary_text_raises_only_invalid_reference(text: str) -> None:
    try:
        ref = ImageRef.parse(text)
    except InvalidReference:
        return
    assert ImageRef.parse(str(ref)) == ref
