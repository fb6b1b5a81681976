"""The Dockerfile, read as Docker reads it (no builder runs here): two stages on one base
pinned by a full version tag, the runtime stage holding only the build stage's virtualenv,
a numeric non-root user, no secrets, no remote ADD, no HEALTHCHECK (and why), and a
.dockerignore that keeps everything but the package out of the build context."""

from __future__ import annotations

import fnmatch
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Instruction:
    keyword: str
    args: str


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [i.args for i in self.instructions if i.keyword == keyword]


def instructions(text: str) -> list[Instruction]:
    """Docker's line rules: `#` lines are comments (also inside a continued instruction),
    a trailing backslash continues the instruction on the next line."""
    out: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        whole = pending + line
        pending = ""
        keyword, _, args = whole.partition(" ")
        out.append(Instruction(keyword.upper(), args.strip()))
    assert not pending, "the Dockerfile ends inside a continued instruction"
    return out


def stages(text: str) -> tuple[list[Instruction], list[Stage]]:
    """Instructions before the first FROM (global ARGs) and the stages in order."""
    head: list[Instruction] = []
    found: list[Stage] = []
    for instruction in instructions(text):
        if instruction.keyword == "FROM":
            words = instruction.args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            assert len(words) in (1, 3), instruction.args
            found.append(Stage(words[0], name))
        elif found:
            found[-1].instructions.append(instruction)
        else:
            head.append(instruction)
    return head, found


def test_the_parser_reads_continuations_stages_and_comments() -> None:
    text = "ARG X=1\n# c\nFROM a:1 AS one\nRUN a \\\n  # inner\n  b\nFROM one\nUSER 5\n"
    head, found = stages(text)
    assert [i.keyword for i in head] == ["ARG"]
    assert [(s.base, s.name) for s in found] == [("a:1", "one"), ("one", None)]
    assert found[0].all("RUN") == ["a  b"]
    assert found[1].all("USER") == ["5"]


def dockerfile() -> tuple[str, list[Instruction], list[Stage]]:
    text = (ROOT / "Dockerfile").read_text()
    head, found = stages(text)
    return text, head, found


def test_two_named_stages_on_one_pinned_base() -> None:
    _, head, found = dockerfile()
    assert not head  # a base image chosen by a build ARG could be anything
    assert [s.name for s in found] == ["build", "runtime"]
    base = found[0].base
    # the same interpreter in both: the venv's python links to the base's /usr/local/bin
    assert found[1].base == base
    image, _, digest = base.partition("@")
    assert re.fullmatch(r"python:3\.\d+\.\d+-slim-[a-z]+", image), base
    assert not digest or re.fullmatch(r"sha256:[0-9a-f]{64}", digest)


def test_the_runtime_stage_carries_only_the_virtualenv() -> None:
    _, _, (build, runtime) = dockerfile()
    assert runtime.all("COPY") == ["--from=build /opt/regwarden /opt/regwarden"]
    assert not runtime.all("ADD")
    # nothing of regwarden is installed or compiled in the runtime: it runs what the build
    # made; the one RUN adds libpq (psycopg's pure-Python build links it) and no cache
    (run,) = runtime.all("RUN")
    assert "install -y --no-install-recommends libpq5 " in run
    assert run.endswith("rm -rf /var/lib/apt/lists/*") and "pip" not in run
    assert any("/opt/regwarden/bin/pip install" in run for run in build.all("RUN"))
    sources = [c.split()[:-1] for c in build.all("COPY")]
    assert sources == [["pyproject.toml", "README.md"], ["shared/"]]
    env = " ".join(runtime.all("ENV"))
    assert "PATH=/opt/regwarden/bin:$PATH" in env
    assert runtime.all("ENTRYPOINT") == ['["regwarden"]']
    cmd = shlex.split(runtime.all("CMD")[0].strip("[]").replace(",", " "))
    assert cmd[0] == "serve" and "--port=8080" in cmd
    assert runtime.all("EXPOSE") == ["8080"]


def test_the_image_runs_as_a_numeric_non_root_user() -> None:
    _, _, (_build, runtime) = dockerfile()
    users = runtime.all("USER")
    assert len(users) == 1
    user, _, group = users[0].partition(":")
    assert user.isdigit() and int(user) != 0, users
    assert group.isdigit() and int(group) != 0, users
    # the last instruction that changes the user is that one: nothing after it is root
    last_user = [i for i in runtime.instructions if i.keyword == "USER"][-1]
    after = runtime.instructions[runtime.instructions.index(last_user) + 1 :]
    assert not [i for i in after if i.keyword in ("RUN", "USER")]
    # and the manifests run the same user
    assert "runAsUser: " + user in (ROOT / "infra/k8s/receiver.yaml").read_text()


def test_no_secrets_no_remote_add_and_no_healthcheck_without_a_reason() -> None:
    text, head, found = dockerfile()
    everything = head + [i for s in found for i in s.instructions]
    assert not [i for i in everything if i.keyword == "ADD"]  # COPY only: no URLs, no tars
    secretish = re.compile(r"(PASSWORD|SECRET|TOKEN|API_?KEY|PRIVATE)", re.IGNORECASE)
    for instruction in everything:
        if instruction.keyword in ("ENV", "ARG", "LABEL"):
            assert not secretish.search(instruction.args), instruction
        assert "://" not in instruction.args or instruction.keyword == "LABEL", instruction
    assert not [i for i in everything if i.keyword == "HEALTHCHECK"]
    reason = [line for line in text.splitlines() if line.startswith("# No HEALTHCHECK")]
    assert reason, "say why there is no HEALTHCHECK"


def ignored(patterns: list[str], path: str) -> bool:
    """.dockerignore's rule: the last pattern matching the path (or a parent) decides;
    `!` re-includes. `**/` matches any depth."""
    verdict = False
    parts = path.split("/")
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern[1:] if negate else pattern
        body = body.rstrip("/")
        prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        regex = fnmatch.translate(body).replace(".*", "[^/]*")
        if body.startswith("**/"):
            regex = "(?:.*/)?" + fnmatch.translate(body[3:]).replace(".*", "[^/]*")
        if any(re.fullmatch(regex, p) for p in prefixes):
            verdict = not negate
    return verdict


@pytest.mark.parametrize(
    ("path", "kept"),
    [
        ("pyproject.toml", True),
        ("README.md", True),
        ("shared/regwarden/cli/_app.py", True),
        ("shared/regwarden/__pycache__/x.cpython-311.pyc", False),
        (".venv/bin/python", False),
        (".git/config", False),
        ("tests/unit/test_dockerfile.py", False),
        ("infra/k8s/receiver.yaml", False),
        ("cosign.key", False),
        ("shared/regwarden/cosign.key", False),
        ("ledger.db", False),
        ("shared/ledger.db", False),
        ("Dockerfile", False),
    ],
)
def test_the_build_context_is_the_package_only(path: str, kept: bool) -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert ignored(patterns, path) is not kept
    # everything the Dockerfile copies is in the context
    _, _, (build, _) = dockerfile()
    for copy in build.all("COPY"):
        for source in copy.split()[:-1]:
            assert not ignored(patterns, source.rstrip("/")), source
