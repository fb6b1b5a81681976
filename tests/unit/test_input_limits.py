"""Bounded input (issue #11): nesting limits for JSON and YAML, the registry hosts an event
may name, envelopes with no valid event, and the receiver's body bounds and error lines."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from regwarden.errors import HostNotAllowed, IntakeError, PolicyError, UsageError
from regwarden.intake import (
    check_event_hosts,
    host_allowed,
    normalize_host,
    parse_distribution_batch,
    parse_host,
)
from regwarden.nesting import MAX_DEPTH, TooDeep, check_depth, loads_json
from regwarden.policy import load_policy_text
from regwarden.policy._yaml import parse_yaml
from regwarden.receiver import CallerAuthenticator, create_app
from regwarden.runtime import configured_hosts, load_runtime, registries_from_env
from regwarden.service import count_events, detect_source, parse_body
from regwarden.store import SqliteLedger

DIGEST = "sha256:" + "ab" * 32
AUTH = {"Authorization": "Bearer t0ken"}


def nested_json(depth: int) -> str:
    return "[" * depth + "]" * depth


def push(host: str, *, digest: str = DIGEST, repo: str = "team/app") -> dict[str, Any]:
    return {
        "id": f"push-{host}-{digest[-4:]}",
        "timestamp": "2026-11-27T10:00:00Z",
        "action": "push",
        "target": {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest,
            "repository": repo,
            "tag": "v1",
        },
        "request": {"host": host, "useragent": "containers/5.23.1"},
    }


BLOB = {
    "id": "blob-1",
    "timestamp": "2026-11-27T10:00:00Z",
    "action": "push",
    "target": {
        "mediaType": "application/octet-stream",
        "digest": DIGEST,
        "repository": "team/app",
        "url": "http://r/v2/team/app/blobs/" + DIGEST,
    },
    "request": {"host": "127.0.0.1:5000"},
}


def envelope(*events: object) -> bytes:
    return json.dumps({"events": list(events)}).encode()


# -- nesting --------------------------------------------------------------------------------


def test_json_at_the_limit_parses_and_one_level_more_is_refused_naming_it() -> None:
    assert loads_json(nested_json(MAX_DEPTH)) is not None
    with pytest.raises(TooDeep, match=f"nested deeper than {MAX_DEPTH} levels"):
        loads_json(nested_json(MAX_DEPTH + 1))
    mixed = '{"a": ' * 40 + "[" * 25 + "]" * 25 + "}" * 40  # objects and arrays both count
    with pytest.raises(TooDeep):
        loads_json(mixed)


def test_json_deeper_than_pythons_stack_is_the_same_error_not_a_recursion_error() -> None:
    with pytest.raises(TooDeep):
        loads_json(nested_json(200_000))
    value: object = []
    for _ in range(5_000):  # built in Python, deeper than any recursive walker survives
        value = [value]
    with pytest.raises(TooDeep):
        check_depth(value)


@pytest.mark.parametrize("source", ["distribution", "harbor"])
def test_a_deep_event_body_is_an_intake_error_naming_the_limit(source: str) -> None:
    body = ('{"events": ' if source == "distribution" else '{"type": ') + nested_json(100) + "}"
    with pytest.raises(IntakeError, match=f"nested deeper than {MAX_DEPTH} levels"):
        parse_body(source, body.encode(), "application/json")


def test_a_deep_event_file_is_an_intake_error_naming_the_limit() -> None:
    with pytest.raises(IntakeError, match=f"event file: JSON nested deeper than {MAX_DEPTH}"):
        detect_source(nested_json(50_000).encode())


def yaml_policy(value: str) -> str:
    return f"apiVersion: regwarden/v1\nkind: Policy\nextra: {value}\n"


def test_yaml_at_the_limit_parses_and_deeper_is_one_located_problem() -> None:
    # the root mapping is one level, so `extra` may hold MAX_DEPTH - 1
    document, problems = parse_yaml(yaml_policy(nested_json(MAX_DEPTH - 1)))
    assert document is not None and problems == []
    for depth in (MAX_DEPTH, 100_000):
        document, problems = parse_yaml(yaml_policy(nested_json(depth)))
        assert document is None
        assert [(p.line, p.message.split(";")[0]) for p in problems] == [
            (3, f"document nested deeper than {MAX_DEPTH} levels (the limit)")
        ]


def test_yaml_nesting_through_aliases_counts_the_expanded_depth() -> None:
    text = (
        "apiVersion: regwarden/v1\nkind: Policy\n"
        f"a: &deep {nested_json(40)}\n"
        f"b: {'[' * 30}*deep{']' * 30}\n"
    )
    document, problems = parse_yaml(text)
    assert document is None and len(problems) == 1
    assert "nested deeper than 64 levels" in problems[0].message
    assert problems[0].loc[0] == "b"


def test_a_deep_policy_is_a_policy_error() -> None:
    with pytest.raises(PolicyError) as err:
        load_policy_text(yaml_policy(nested_json(5_000)), source="deep.yaml", base_dir=".")
    assert any("nested deeper than 64 levels" in m for _, m in err.value.problems)


# -- hosts ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "normal"),
    [
        ("Registry.Example.COM", "registry.example.com"),
        ("registry.example.com:443", "registry.example.com"),
        ("registry.example.com:80", "registry.example.com"),
        ("registry.example.com:5000", "registry.example.com:5000"),
        ("127.0.0.1:5000", "127.0.0.1:5000"),
        ("[::1]:443", "[::1]"),
        ("[::1]:5000", "[::1]:5000"),
        ("index.docker.io", "docker.io"),
        ("registry-1.docker.io:443", "docker.io"),
    ],
)
def test_hosts_compare_without_case_or_default_ports(given: str, normal: str) -> None:
    assert normalize_host(given) == normal
    assert host_allowed(given, frozenset({normal}))


def test_other_ports_and_hosts_are_not_allowed_and_none_allows_any() -> None:
    allowed = frozenset({normalize_host("registry.example.com")})
    assert not host_allowed("registry.example.com:5000", allowed)
    assert not host_allowed("registry.example.com.evil.io", allowed)
    assert not host_allowed("127.0.0.1", allowed)
    assert host_allowed("anything.example:1", None)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("https://registry.example.com/v2", "without a scheme"),
        ("registry.example.com/team", "expected a registry host"),
        ("registry.example.com:99999", "expected a registry host"),
        ("two words", "expected a registry host"),
    ],
)
def test_configured_hosts_must_be_host_and_port(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_host(text, what="--registry")


def test_serve_hosts_are_the_policys_plus_the_flag_plus_the_environment() -> None:
    policy = load_policy_text(
        "apiVersion: regwarden/v1\nkind: Policy\n"
        "registries:\n  - {host: Harbor.Example.com, kind: harbor}\n",
        source="p.yaml",
        base_dir=".",
    )
    env = {"REGWARDEN_REGISTRIES": " b.example:5000 ,, C.example:443"}
    extra = [parse_host("a.example", what="--registry"), *registries_from_env(env)]
    assert configured_hosts(policy, extra) == {
        "harbor.example.com",
        "a.example",
        "b.example:5000",
        "c.example",
    }
    with pytest.raises(UsageError, match="REGWARDEN_REGISTRIES"):
        registries_from_env({"REGWARDEN_REGISTRIES": "ok.example,http://bad.example"})


def test_an_event_for_another_host_is_refused_naming_every_such_host() -> None:
    events = parse_body(
        "distribution",
        envelope(push("127.0.0.1:5000"), push("evil.example:1"), push("Other.Example")),
        None,
    )
    with pytest.raises(HostNotAllowed) as err:
        check_event_hosts(events, frozenset({"127.0.0.1:5000"}))
    assert "'Other.Example', 'evil.example:1'" in str(err.value)
    assert "registries" in (err.value.hint or "")
    check_event_hosts(events, None)  # one-shot: any host
    validate = count_events("distribution", allowed_hosts=frozenset({"127.0.0.1:5000"}))
    assert validate(envelope(push("127.0.0.1:5000")), None) == 1
    with pytest.raises(HostNotAllowed):
        validate(envelope(push("evil.example:1")), None)


POLICY = "apiVersion: regwarden/v1\nkind: Policy\nrepositories:\n  - {match: 'team/**'}\n"


def test_the_runtime_never_opens_a_host_outside_its_allowed_set(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(POLICY)
    runtime = load_runtime(tmp_path / "p.yaml", ledger=tmp_path / "l.db", registries=["a.io"])
    opened: list[str] = []
    runtime._factory = lambda host: opened.append(host) or object()  # type: ignore[assignment,func-returns-value]
    try:
        assert runtime.allowed_hosts == {"a.io"}
        with pytest.raises(HostNotAllowed, match=r"'evil\.example:1'"):
            runtime.registry("evil.example:1")
        runtime.registry("A.io:443")
        assert opened == ["A.io:443"]
    finally:
        runtime.ledger.close()
    one_shot = load_runtime(tmp_path / "p.yaml", ledger=tmp_path / "l.db")
    assert one_shot.allowed_hosts is None
    one_shot.ledger.close()


# -- envelopes ------------------------------------------------------------------------------


def test_an_envelope_with_no_valid_event_names_each_problem() -> None:
    bad_digest = push("127.0.0.1:5000", digest="sha256:nothex")
    with pytest.raises(IntakeError) as err:
        parse_body("distribution", envelope({"action": "push"}, bad_digest), None)
    message = str(err.value)
    assert message.startswith("no valid event in the envelope (2 problems)")
    assert "events[0].target" in message and "events[1].target.digest" in message


def test_blob_events_and_mixed_envelopes_are_not_errors() -> None:
    assert parse_body("distribution", envelope(BLOB), None) == []
    batch = parse_distribution_batch(envelope(BLOB, {"action": "push"}), content_type=None)
    assert (batch.events, len(batch.errors), batch.skipped) == ((), 1, 1)
    assert parse_body("distribution", envelope(BLOB, {"action": "push"}), None) == []
    good = parse_body("distribution", envelope({"action": "?"}, push("127.0.0.1:5000")), None)
    assert [e.image.repository for e in good] == ["team/app"]
    assert parse_body("distribution", envelope(), None) == []


def test_many_problems_are_listed_up_to_a_bound() -> None:
    with pytest.raises(IntakeError) as err:
        parse_body("distribution", envelope(*[{"action": "push"}] * 50), None)
    assert "(50 problems)" in str(err.value) and str(err.value).endswith("and 30 more")


# -- the receiver ---------------------------------------------------------------------------


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[SqliteLedger]:
    store = SqliteLedger(tmp_path / "ledger.db")
    yield store
    store.close()


def client(ledger: SqliteLedger, **kwargs: Any) -> TestClient:
    validators = {"distribution": count_events("distribution", allowed_hosts=frozenset({"r.io"}))}
    validators |= kwargs.pop("validators", {})
    app = create_app(
        ledger=ledger, auth=CallerAuthenticator(["t0ken"]), validators=validators, **kwargs
    )
    return TestClient(app, raise_server_exceptions=False)


def test_receiver_answers_400_for_another_host_and_for_no_valid_event(
    ledger: SqliteLedger, caplog: pytest.LogCaptureFixture
) -> None:
    c = client(ledger)
    with caplog.at_level(logging.WARNING, "regwarden.receiver"):
        resp = c.post("/events/distribution", content=envelope(push("evil.example")), headers=AUTH)
    assert resp.status_code == 400 and "'evil.example'" in resp.json()["error"]
    assert any("evil.example" in r.getMessage() for r in caplog.records)
    resp = c.post("/events/distribution", content=envelope({"x": 1}), headers=AUTH)
    assert resp.status_code == 400 and "no valid event" in resp.json()["error"]
    resp = c.post("/events/distribution", content=envelope(BLOB), headers=AUTH)
    assert (resp.status_code, resp.json()) == (202, {"accepted": 0})
    resp = c.post("/events/distribution", content=envelope(push("R.io:443")), headers=AUTH)
    assert resp.status_code == 202 and resp.json()["accepted"] == 1
    assert ledger.pending_count() == 1


def test_receiver_refuses_an_announced_or_streamed_body_past_the_cap(
    ledger: SqliteLedger,
) -> None:
    c = client(ledger, max_body=1000)
    announced = {**AUTH, "Content-Length": "2000000000"}
    resp = c.post("/events/distribution", content=b"{", headers=announced)
    assert resp.status_code == 413 and "2000000000 bytes" in resp.json()["error"]

    def chunks() -> Iterator[bytes]:
        for _ in range(10):
            yield b" " * 300

    resp = c.post("/events/distribution", content=chunks(), headers=AUTH)
    assert resp.status_code == 413 and "larger than 1000 bytes" in resp.json()["error"]
    assert ledger.pending_count() == 0


def test_an_unexpected_error_is_one_log_line_and_a_500(
    ledger: SqliteLedger, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(body: bytes, content_type: str | None) -> int:
        raise RuntimeError("bug in a validator")

    for debug in (False, True):
        caplog.clear()
        c = client(ledger, validators={"distribution": broken}, debug=debug)
        with caplog.at_level(logging.ERROR, "regwarden.receiver"):
            resp = c.post("/events/distribution", content=envelope(), headers=AUTH)
        assert (resp.status_code, resp.json()) == (500, {"error": "internal error"})
        [record] = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert "RuntimeError: bug in a validator" in record.getMessage()
        assert bool(record.exc_info) is debug  # the traceback only under --debug
