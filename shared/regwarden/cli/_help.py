"""Help text that reads well in an 80-column terminal.

Typer's rich help keeps every single line break of a docstring's later paragraphs, so
text wrapped in the source at 90 columns comes out as a long line cut by the terminal and
a stub; its options table shrinks the option-name column with the help column, so a long
name (`--certificate-oidc-issuer-regexp`) is cut to `--certificate-oidc-issuer…` (and a
long word of help, an environment variable's name, to `REGWARDEN_POLIC…`); and a
flag is shown with a `<bool>` type as if it took a value. `command_for` builds the click
command once and fixes all three: paragraphs are reflowed (a paragraph starting with
`\\b`, or lines indented for an example, are kept as written), names never wrap (types
and help text do, folding a long word instead of cutting it), and flags show no type.
"""

from __future__ import annotations

import inspect
import re
from functools import cache
from typing import Any

import typer
import typer.main

_LIST_ITEM = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s")


def reflow(text: str) -> str:
    """Join the lines of each paragraph, keeping paragraphs, `\\b` blocks, lists and
    indented examples as written."""
    out = []
    for paragraph in text.split("\n\n"):
        lines = paragraph.split("\n")
        kept = (
            paragraph.startswith("\b")
            or any(line.startswith(" ") for line in lines)
            or any(_LIST_ITEM.match(line) for line in lines[1:])
        )
        out.append(paragraph if kept else " ".join(line.strip() for line in lines))
    return "\n\n".join(out)


@cache
def _keep_names() -> None:
    """Give typer's help a table whose name columns never wrap; only when help is shown
    (typer.rich_utils and its rich modules cost every other command start-up time)."""
    import typer.rich_utils
    from rich.columns import Columns
    from rich.table import Table
    from rich.text import Text

    class NamesKeptTable(Table):
        """The options and commands tables of typer's help: names keep their content
        whole, the type and help columns wrap and fold a long word instead of cutting it."""

        def add_row(self, *renderables: Any, **kwargs: Any) -> None:
            for cell in renderables[-1:]:
                # an option's help is Columns of Texts (help, env var, default): each folds
                for item in cell.renderables if isinstance(cell, Columns) else [cell]:
                    if isinstance(item, Text):
                        item.overflow = "fold"
            super().add_row(*renderables, **kwargs)
            # options: [required], names…, type, help; commands: name, help
            names = self.columns[:-2] if len(self.columns) > 2 else self.columns[:-1]
            for column in names:
                column.no_wrap = True
            for column in self.columns[len(names) :]:
                column.overflow = "fold"

    setattr(typer.rich_utils, "Table", NamesKeptTable)  # noqa: B010 - typer's private name


def _tidy(command: Any) -> None:
    """Typer ships its own copy of click (typer._click): duck-typed, not isinstance."""
    if command.help:
        command.help = reflow(inspect.cleandoc(command.help))
    for param in command.params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""  # typer shows the metavar instead of the `<bool>` type
    make_help_option, format_help = command.get_help_option, command.format_help

    def help_option(ctx: Any) -> Any:
        option = make_help_option(ctx)
        if option is not None:
            option.metavar = ""
        return option

    def formatted_help(ctx: Any, formatter: Any) -> None:
        _keep_names()
        format_help(ctx, formatter)

    command.get_help_option, command.format_help = help_option, formatted_help
    for sub in getattr(command, "commands", {}).values():
        _tidy(sub)


def command_for(app: typer.Typer) -> Any:
    """The click command of `app`, with help fit for an 80-column terminal."""
    command = typer.main.get_command(app)
    _tidy(command)
    return command
