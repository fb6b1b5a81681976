"""`regwarden deadletters list | retry`: the events the receiver gave up on.

`--source` picks whose dead letters: `receiver` (the work queue of `regwarden serve`: the
one `--queue` names, else the ledger's own) today; `aws` (the functions' SQS dead-letter
queues) is where the AWS side plugs in with its own options (`--queue-url`, `--function`),
so the commands keep one shape.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from ..errors import UsageError

if TYPE_CHECKING:
    from ..store import DeadLetter, EventQueue

deadletters_app = typer.Typer(
    help="Events the gate gave up on after its retries: see why, and queue them again.",
    no_args_is_help=True,
)


class Source(enum.StrEnum):
    receiver = "receiver"
    aws = "aws"


class Output(enum.StrEnum):
    table = "table"
    json = "json"


SourceOpt = Annotated[
    Source,
    typer.Option(
        "--source",
        help="receiver: the queue of `regwarden serve` (--queue, else --ledger's own). aws: "
        "the functions' SQS "
        "dead-letter queues, chosen with --stack or --queue-url (and --function, --table).",
    ),
]
OutputOpt = Annotated[
    Output, typer.Option("--output", "-o", help="table for people, json for scripts.")
]
# --source aws: which dead-letter queues (the AWS side is cli/_deadletters_aws.py)
StackOpt = Annotated[
    str | None,
    typer.Option("--stack", help="aws: the deployed stack (its DLQ outputs and ledger table)."),
]
QueueUrlOpt = Annotated[
    list[str] | None,
    typer.Option("--queue-url", help="aws: a dead-letter queue URL (repeatable)."),
]
FunctionOpt = Annotated[
    str | None,
    typer.Option("--function", help="aws: one function's queue (on_push, on_scan, notify, ...)."),
]
TableOpt = Annotated[
    str | None, typer.Option("--table", help="aws: the ledger table (default: the stack's).")
]


@deadletters_app.command("list")
def list_command(
    source: SourceOpt = Source.receiver,
    output: OutputOpt = Output.table,
    stack: StackOpt = None,
    queue_url: QueueUrlOpt = None,
    function: FunctionOpt = None,
    table: TableOpt = None,
) -> None:
    """Every dead letter: id, source, first received, attempts, last error, and the images
    its body names."""
    if source == Source.aws:
        from ._deadletters_aws import run_list

        run_list(
            stack=stack,
            queue_urls=queue_url or [],
            function=function,
            table=table,
            json_output=output == Output.json,
        )
        return
    with _queue() as queue:
        letters = queue.dead_letter_events()
    if output == Output.json:
        _print_json([_row(d) for d in letters])
        return
    _print_letters(letters, where=_where())


@deadletters_app.command("retry")
def retry_command(
    ids: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="ID...", help="Dead letter ids, from `deadletters list` (aws: message ids)."
        ),
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every dead letter.")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be queued again; change nothing.")
    ] = False,
    source: SourceOpt = Source.receiver,
    output: OutputOpt = Output.table,
    stack: StackOpt = None,
    queue_url: QueueUrlOpt = None,
    function: FunctionOpt = None,
    table: TableOpt = None,
) -> None:
    """Queue dead letters again, due at once and with their attempts reset: a running
    `regwarden serve` on this ledger picks them up (aws: moved back to the queue they were
    dead-lettered from). Prints what it queued. An id that is not a dead letter is an
    error (exit 2) and nothing is queued."""
    if all_ == bool(ids):
        raise UsageError(
            "name the dead letters to retry: give their ids, or --all (not both)",
            hint="see them with `regwarden deadletters list`",
        )
    if source == Source.aws:
        from ._deadletters_aws import run_retry

        run_retry(
            ids=None if all_ else ids,
            dry_run=dry_run,
            stack=stack,
            queue_urls=queue_url or [],
            function=function,
            table=table,
            json_output=output == Output.json,
        )
        return
    numbers = [_number(i) for i in ids or ()]
    with _queue() as queue:
        chosen = queue.dead_letter_events(None if all_ else numbers)
        missing = sorted(set(numbers) - {d.id for d in chosen})
        if missing:
            raise UsageError(
                f"no dead letter with id {', '.join(map(str, missing))} in {_where()}",
                hint="see them with `regwarden deadletters list`",
            )
        if not dry_run:
            requeued = set(queue.requeue_dead([d.id for d in chosen]))
            # a concurrent retry may have taken one between the read and the write
            chosen = [d for d in chosen if d.id in requeued]
    if output == Output.json:
        _print_json({"dryRun": dry_run, "requeued": [_row(d) for d in chosen]})
        return
    verb = "would queue again" if dry_run else "queued again"
    if not chosen:
        print(f"no dead letters: nothing {verb}")
        return
    print(f"{verb}: {len(chosen)} event(s)")
    for d in chosen:
        print(f"  {d.id}  {d.source}  {', '.join(named_images(d)) or '-'}")


def named_images(letter: DeadLetter) -> list[str]:
    """The images a dead letter's body names, if it parses (a body that does not is often
    why it failed: then none)."""
    from .. import service
    from ..errors import RegwardenError

    try:
        if letter.source == service.RECHECK:
            return [str(json.loads(letter.body)["image"])]
        events = service.parse_body(letter.source, letter.body, letter.content_type)
    except (RegwardenError, ValueError, KeyError, TypeError):
        return []
    return list(dict.fromkeys(str(e.image) for e in events))


def _number(text: str) -> int:
    """A receiver dead letter's id (a number); anything else names none."""
    if not text.isdigit():
        raise UsageError(
            f"no dead letter with id {text} in {_where()}",
            hint="see them with `regwarden deadletters list`",
        )
    return int(text)


def _target() -> tuple[Literal["ledger", "queue"], str]:
    """(role, URL) of serve's queue: `--queue`'s, else the ledger (its own queue)."""
    from ._app import OPTIONS  # set by the global callback; imported late: _app imports us

    return ("queue", OPTIONS.queue) if OPTIONS.queue else ("ledger", OPTIONS.ledger)


def _where() -> str:
    """The queue as messages name it: its SQLite file, else its URL (secrets masked)."""
    from ..store import display_url, parse_store_url

    role, url = _target()
    parsed = parse_store_url(url, role=role)
    if parsed.scheme == "sqlite":
        return str(Path(parsed.location).expanduser())
    return display_url(parsed.text)


@contextmanager
def _queue() -> Iterator[EventQueue]:
    from ..store import open_ledger, open_queue, parse_store_url

    role, url = _target()
    parsed = parse_store_url(url, role=role)
    if parsed.scheme == "sqlite" and not Path(parsed.location).expanduser().is_file():
        # opening would create an empty one: say where we looked
        raise UsageError(
            f"no {role} at {_where()}",
            hint=f"give the one `regwarden serve` uses: --{role} PATH or REGWARDEN_{role.upper()}",
        )
    # a ledger with no queue of its own (dynamodb://) is refused: it opened nothing yet
    queue = open_queue(url) if role == "queue" else open_queue(ledger=open_ledger(url))
    try:
        yield queue
    finally:
        queue.close()


def _row(d: DeadLetter) -> dict[str, object]:
    return {
        "id": d.id,
        "source": d.source,
        "receivedAt": d.received_at.isoformat(),
        "failedAt": d.failed_at.isoformat(),
        "attempts": d.attempts,
        "error": d.error,
        "images": named_images(d),
    }


def _print_json(value: object) -> None:
    from ._render import print_json

    print_json(value)


def _print_letters(letters: Sequence[DeadLetter], *, where: str) -> None:
    # one block per letter rather than a table: errors and image names are long, and a
    # table squeezed into a terminal cuts exactly those
    for d in letters:
        print(
            f"{d.id}  {d.source}  received {d.received_at:%Y-%m-%d %H:%M:%S}Z, "
            f"failed {d.failed_at:%Y-%m-%d %H:%M:%S}Z after {d.attempts} attempt(s)"
        )
        for image in named_images(d) or ["- (the body names none it can read)"]:
            print(f"    image: {image}")
        print(f"    error: {d.error}")
    print(f"{len(letters)} dead letter(s) in {where}")
    if letters:
        print("queue them again: regwarden deadletters retry ID... | --all")
