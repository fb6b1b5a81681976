"""`azure_clients.transport_options`: what every Azure SDK client is made with — requests'
environment settings off when the environment holds nothing for them but a CA bundle
(which is then passed explicitly), left on when a proxy or netrc is there."""

from __future__ import annotations

from pathlib import Path

import pytest

from regwarden.azure_clients import transport_options


@pytest.fixture
def home(tmp_path: Path) -> str:
    return str(tmp_path)


def test_a_plain_environment_turns_environment_settings_off(home: str) -> None:
    env = {"PATH": "/usr/bin", "WEBSITE_INSTANCE_ID": "abc", "REGWARDEN_POLICY": "x"}
    assert transport_options(env=env, home=home) == {
        "connection_verify": True,
        "use_env_settings": False,
    }
    assert transport_options("/ca.pem", env=env, home=home) == {
        "connection_verify": "/ca.pem",
        "use_env_settings": False,
    }


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"REQUESTS_CA_BUNDLE": "/r.pem"}, "/r.pem"),
        ({"CURL_CA_BUNDLE": "/c.pem"}, "/c.pem"),
        ({"REQUESTS_CA_BUNDLE": "/r.pem", "CURL_CA_BUNDLE": "/c.pem"}, "/r.pem"),
        ({"REQUESTS_CA_BUNDLE": "", "CURL_CA_BUNDLE": "/c.pem"}, "/c.pem"),
    ],
)
def test_the_bundle_requests_would_take_is_given_instead(
    env: dict[str, str], expected: str, home: str
) -> None:
    assert transport_options(env=env, home=home) == {
        "connection_verify": expected,
        "use_env_settings": False,
    }
    # a client's own bundle wins, as it does in requests
    assert transport_options("/own.pem", env=env, home=home)["connection_verify"] == "/own.pem"


@pytest.mark.parametrize(
    "env",
    [
        {"HTTPS_PROXY": "http://proxy:3128"},
        {"https_proxy": "http://proxy:3128"},
        {"ALL_PROXY": "socks5://proxy:1080"},
        {"NO_PROXY": "localhost"},
        {"NETRC": "/etc/netrc"},
        {"HTTP_PROXY": "http://proxy:3128", "REQUESTS_CA_BUNDLE": "/r.pem"},
    ],
)
def test_a_proxy_or_netrc_leaves_the_environment_to_requests(
    env: dict[str, str], home: str
) -> None:
    assert transport_options(env=env, home=home) == {"connection_verify": True}
    assert transport_options("/ca.pem", env=env, home=home) == {"connection_verify": "/ca.pem"}


@pytest.mark.parametrize("name", [".netrc", "_netrc"])
def test_a_netrc_file_at_home_leaves_the_environment_to_requests(name: str, tmp_path: Path) -> None:
    (tmp_path / name).write_text("machine example.com login a password b\n")
    assert transport_options(env={}, home=str(tmp_path)) == {"connection_verify": True}
