"""Every command's --help in an 80-column terminal: no line is wider than 80 columns, no
option name is cut or split, a paragraph's lines are wrapped where the next word did
not fit (never a stub left by a line break in the source), and flags show no `<bool>`."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest
from rich.cells import cell_len
from support.cli import run_cli

from regwarden.cli import main
from regwarden.cli._app import app
from regwarden.cli._help import command_for, reflow

WIDTH = 80
BOX = "╭│╰"


def commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    yield path, command
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        if not sub.hidden:
            yield from commands(sub, (*path, name))


ALL = list(commands(command_for(app)))


def render(path: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as done:
        main([*path, "--help"])
    assert done.value.code == 0
    return capsys.readouterr().out


def problems(text: str, command: Any) -> list[str]:
    found = []
    lines = text.splitlines()
    for number, line in enumerate(lines):
        if cell_len(line) > WIDTH:
            found.append(f"line {number} is {cell_len(line)} columns: {line!r}")
    flat = " ".join(text.split())
    for param in command.params:
        for name in [*param.opts, *param.secondary_opts]:
            if name.startswith("-") and f"{name} " not in flat and f"{name}," not in flat:
                found.append(f"option {name} is not shown whole")
    if "<bool>" in text:
        found.append("a flag is shown with <bool>")
    # prose outside the panels: a line followed by more of its paragraph must be full
    for line, after in itertools.pairwise(lines):
        if not line.strip() or not after.strip() or line.lstrip()[:1] in BOX:
            continue
        if after.lstrip()[:1] in BOX or after.startswith("  ") or after.lstrip()[:2] in ("- ",):
            continue  # an example or a list kept as written
        next_word = after.split()[0]
        if cell_len(line.rstrip()) + 1 + cell_len(next_word) <= WIDTH - 1:
            found.append(f"line broken early: {line.rstrip()!r} / {after.strip()!r}")
    return found


@pytest.mark.parametrize(("path", "command"), ALL, ids=[" ".join(p) or "regwarden" for p, _ in ALL])
def test_help_fits_80_columns(
    path: tuple[str, ...],
    command: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("COLUMNS", str(WIDTH))
    text = render(path, capsys)
    assert text.strip()
    assert problems(text, command) == [], text


def test_verify_help_from_the_shell_keeps_long_option_names() -> None:
    """The option names cosign users type, whole, in the real command's output."""
    proc = run_cli("verify", "--help", env={"PATH": "/usr/bin:/bin", "COLUMNS": "80"})
    assert proc.returncode == 0, proc.stderr
    for name in ("--certificate-identity-regexp", "--certificate-oidc-issuer-regexp"):
        assert name in proc.stdout.split(), proc.stdout
    assert "…" not in "".join(w for w in proc.stdout.split() if w.startswith("--"))
    assert max(cell_len(line) for line in proc.stdout.splitlines()) <= WIDTH
    assert "3 when the registry cannot be reached" in " ".join(proc.stdout.split())


def test_flags_show_no_type_and_options_with_values_do() -> None:
    proc = run_cli("keys", "generate", "--help", env={"PATH": "/usr/bin:/bin", "COLUMNS": "80"})
    lines = proc.stdout.splitlines()
    [force] = [line for line in lines if "--force" in line]
    [prefix] = [line for line in lines if "--output-key-prefix" in line]
    assert force.split()[1:3] == ["--force", "Overwrite"], force
    assert "PREFIX" in prefix


def test_reflow_keeps_paragraphs_lists_and_examples() -> None:
    kept = "- a\n- b\n\nExample:\n\n    cmd --x\n    cmd --y\n\n    one --line\n\n\bkept\nas is"
    assert reflow("One two\nthree.\n\n" + kept) == "One two three.\n\n" + kept
