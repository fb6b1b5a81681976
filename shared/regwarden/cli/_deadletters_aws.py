"""`regwarden deadletters list | retry --source aws`: the AWS functions' SQS dead-letter queues.

Which queues: the dead-letter queue outputs of a deployed stack (`--stack NAME`), or queue
URLs given one by one (`--queue-url`). Listing peeks: the messages are received with a
short visibility timeout, read, and made visible again at once, so nothing is consumed
(SQS has no read-only peek; each listing adds one to a message's receive count). Each
letter shows the function whose queue it came from, the event id, the images its body
names, how often SQS handed it out, and the first and latest error the function noted in
the ledger table, when the stack's table is known.

Retry moves a message back to the queue it was dead-lettered from (SQS's
`ListDeadLetterSourceQueues`): sent there with its body and attributes, then deleted from
the dead-letter queue, so a crash in between leaves a copy in each (at-least-once; the
functions are idempotent on the event id). A queue nothing redrives to (the retention
fan-out's, fed by the scheduler) has no source: its letters are listed, not retried.

boto3 is imported on first use; the clients honour the usual AWS settings (profile,
region, `AWS_ENDPOINT_URL`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from ..errors import RegistryError, UsageError

__all__ = [
    "STACK_OUTPUTS",
    "AwsDeadLetter",
    "DeadLetterQueue",
    "Target",
    "list_letters",
    "print_letters",
    "resolve",
    "retry_letters",
    "row",
    "run_list",
    "run_retry",
]

STACK_OUTPUTS: dict[str, str] = {
    "PushDeadLetterQueueUrl": "on_push",
    "ScanDeadLetterQueueUrl": "on_scan",
    "NotifyDeadLetterQueueUrl": "notify",
    "RetentionDeadLetterQueueUrl": "retention_worker",
    "RetentionFanoutDeadLetterQueueUrl": "retention_fanout",
    "AccessDeadLetterQueueUrl": "on_access",
}
"""template.yaml's outputs naming a dead-letter queue → the function it holds letters of."""
TABLE_OUTPUT = "LedgerTableName"
NOTED_FUNCTIONS = ("on_push", "on_scan", "notify", "on_access")
"""The functions that note why a record failed (for a queue given by URL alone)."""
HOLD_SECONDS = 60
"""Visibility timeout while a listing reads a queue: long enough not to see a message
twice, short enough that an interrupted listing hides nothing for long."""
_BATCH = 10
"""SQS's most messages per receive and entries per batch call."""


@dataclass(frozen=True, slots=True)
class DeadLetterQueue:
    url: str
    function: str | None
    """Whose letters these are; None for a queue given by URL without `--function`."""


@dataclass(frozen=True, slots=True)
class Target:
    queues: tuple[DeadLetterQueue, ...]
    table: str | None
    """The ledger table (first errors); None: errors unknown."""


@dataclass(frozen=True, slots=True)
class AwsDeadLetter:
    id: str
    """The SQS message id (what `retry` takes)."""
    queue: str
    function: str | None
    event_id: str
    images: tuple[str, ...]
    receives: int
    """SQS's receive count before this listing (failed attempts, plus earlier listings)."""
    sent_at: datetime | None
    first_error: str | None = None
    last_error: str | None = None
    failures: int | None = None
    """Failed attempts the function noted; None when unknown."""
    body: str = ""
    attributes: Mapping[str, Any] | None = None


# -- which queues ------------------------------------------------------------------------------


def _client(service: str) -> Any:
    import boto3

    from .. import USER_AGENT

    try:
        from botocore.config import Config

        return boto3.session.Session().client(
            service, config=Config(user_agent_extra=USER_AGENT, retries={"mode": "standard"})
        )
    except Exception as exc:  # no region, unknown profile: the operator's setup
        raise UsageError(
            f"cannot reach AWS {service}: {exc}",
            hint="set AWS_REGION (or AWS_DEFAULT_REGION) and credentials, or --profile",
        ) from None


def _aws_errors() -> tuple[type[Exception], ...]:
    from botocore.exceptions import BotoCoreError, ClientError

    return (ClientError, BotoCoreError)


def _call(client: Any, operation: str, what: str, **params: Any) -> dict[str, Any]:
    from botocore.exceptions import NoCredentialsError, NoRegionError

    try:
        response: dict[str, Any] = getattr(client, operation)(**params)
    except (NoCredentialsError, NoRegionError) as exc:
        raise UsageError(f"{what}: {exc}", hint="configure AWS credentials and a region") from None
    except _aws_errors() as exc:
        code = str(((getattr(exc, "response", None) or {}).get("Error") or {}).get("Code", ""))
        if code in ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"):
            raise UsageError(f"{what}: no such queue", hint="check --queue-url") from None
        if code == "ValidationError" and "does not exist" in str(exc):
            raise UsageError(f"{what}: {exc}", hint="check --stack") from None
        raise RegistryError(f"{what}: {exc}") from exc
    return response


def resolve(
    *,
    stack: str | None = None,
    queue_urls: Sequence[str] = (),
    function: str | None = None,
    table: str | None = None,
) -> Target:
    """The dead-letter queues to read: a stack's (its outputs), and/or queues by URL.
    `function` keeps one function's queue of the stack, or names whose the URLs are."""
    if not stack and not queue_urls:
        raise UsageError(
            "name the AWS dead-letter queues: --stack NAME (the deployed template.yaml) "
            "or --queue-url URL",
        )
    known = set(STACK_OUTPUTS.values())
    if function is not None and function not in known:
        raise UsageError(
            f"unknown function {function!r}; expected one of: {', '.join(sorted(known))}"
        )
    queues: list[DeadLetterQueue] = []
    if stack:
        cfn = _client("cloudformation")
        found = _call(cfn, "describe_stacks", f"stack {stack!r}", StackName=stack)["Stacks"]
        outputs = {o["OutputKey"]: o["OutputValue"] for o in found[0].get("Outputs") or []}
        for key, name in STACK_OUTPUTS.items():
            if key in outputs and function in (None, name):
                queues.append(DeadLetterQueue(outputs[key], name))
        if not queues:
            raise UsageError(f"stack {stack!r} has no dead-letter queue outputs (is it regwarden?)")
        table = table or outputs.get(TABLE_OUTPUT)
    queues += [DeadLetterQueue(url, function) for url in queue_urls]
    return Target(tuple(dict.fromkeys(queues)), table)


# -- reading ---------------------------------------------------------------------------------


def _receive_all(sqs: Any, url: str) -> list[dict[str, Any]]:
    """Every message of the queue, held invisible for `HOLD_SECONDS` (release them)."""
    attrs = _call(
        sqs,
        "get_queue_attributes",
        f"queue {url}",
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages"],
    )["Attributes"]
    expected = int(attrs.get("ApproximateNumberOfMessages", "0"))
    got: dict[str, dict[str, Any]] = {}
    while expected and len(got) < expected:
        page = _call(
            sqs,
            "receive_message",
            f"queue {url}",
            QueueUrl=url,
            MaxNumberOfMessages=_BATCH,
            VisibilityTimeout=HOLD_SECONDS,
            WaitTimeSeconds=1,  # long polling: every server answers, not a sample
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not page:
            break
        for message in page:
            got.setdefault(message["MessageId"], message)
    return list(got.values())


def _release(sqs: Any, url: str, messages: Iterable[dict[str, Any]]) -> None:
    """Visible again at once: a listing consumes nothing."""
    entries = [
        {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
        for n, m in enumerate(messages)
    ]
    for first in range(0, len(entries), _BATCH):
        _call(
            sqs,
            "change_message_visibility_batch",
            f"queue {url}",
            QueueUrl=url,
            Entries=entries[first : first + _BATCH],
        )


def _what(body: str) -> tuple[str | None, tuple[str, ...]]:
    """(event id, images) named by a body: an EventBridge event, a recheck, an alert or a
    retention work message. A body that does not parse names nothing."""
    from ..errors import RegwardenError

    try:
        doc = json.loads(body)
    except ValueError:
        return None, ()
    if not isinstance(doc, dict):
        return None, ()
    event_id = doc.get("id") if isinstance(doc.get("id"), str) else doc.get("dedup_key")
    images: list[str] = []
    if isinstance(doc.get("image"), str):  # a recheck or an alert
        images.append(doc["image"])
    elif "detail-type" in doc:
        from ..intake.eventbridge import parse_eventbridge

        try:
            images = [str(e.image) for e in parse_eventbridge(doc)]
        except (RegwardenError, ValueError, KeyError, TypeError):
            images = []
    elif isinstance(doc.get("registry"), str) and isinstance(doc.get("repository"), str):
        images.append(f"{doc['registry']}/{doc['repository']}")  # a repository, for retention
    return (str(event_id) if event_id else None), tuple(dict.fromkeys(images))


def _letter(queue: DeadLetterQueue, message: Mapping[str, Any], ledger: Any) -> AwsDeadLetter:
    from ..store import dead_letter_key

    body = str(message.get("Body", ""))
    attrs = message.get("Attributes") or {}
    event_id, images = _what(body)
    sent = attrs.get("SentTimestamp")
    letter = AwsDeadLetter(
        id=str(message["MessageId"]),
        queue=queue.url,
        function=queue.function,
        event_id=event_id or str(message["MessageId"]),
        images=images,
        receives=max(int(attrs.get("ApproximateReceiveCount", "1")) - 1, 0),
        sent_at=datetime.fromtimestamp(int(sent) / 1000, UTC) if sent else None,
        body=body,
        attributes=message.get("MessageAttributes") or {},
    )
    if ledger is None:
        return letter
    key = dead_letter_key(body, letter.id)
    for function in (queue.function,) if queue.function else NOTED_FUNCTIONS:
        note = ledger.failure(function, key)
        if note is not None:
            return replace(
                letter,
                function=function,
                first_error=note.first_error,
                last_error=note.last_error,
                failures=note.failures,
            )
    return letter


def _ledger(target: Target) -> Any:
    if target.table is None:
        return None
    from ..store import DynamoLedger

    return DynamoLedger(target.table, client=_client("dynamodb"))


def list_letters(target: Target) -> list[AwsDeadLetter]:
    """Every message in the target's dead-letter queues, consuming none."""
    sqs = _client("sqs")
    ledger = _ledger(target)
    letters: list[AwsDeadLetter] = []
    try:
        for queue in target.queues:
            messages = _receive_all(sqs, queue.url)
            try:
                letters += [_letter(queue, m, ledger) for m in messages]
            finally:
                _release(sqs, queue.url, messages)
    finally:
        if ledger is not None:
            ledger.close()
    return sorted(letters, key=lambda d: (d.sent_at or datetime.min.replace(tzinfo=UTC), d.id))


# -- retrying --------------------------------------------------------------------------------


def _source(sqs: Any, url: str) -> str | None:
    """The one queue that dead-letters into `url`, or None (none, or several)."""
    answer = _call(sqs, "list_dead_letter_source_queues", f"queue {url}", QueueUrl=url).get(
        "queueUrls", []
    )
    return str(answer[0]) if len(answer) == 1 else None


def _attributes(message: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in (message.get("MessageAttributes") or {}).items():
        kept = {k: v for k, v in value.items() if k in ("DataType", "StringValue", "BinaryValue")}
        out[name] = kept
    return out


def retry_letters(
    target: Target, ids: Sequence[str] | None, *, dry_run: bool = False
) -> list[AwsDeadLetter]:
    """Move the chosen letters (message ids; None: all) back to the queues they were
    dead-lettered from; the rest stay as they were. Returns what was (or, dry run, would
    be) moved. An id found in no queue, or in a queue with no single source, is an error
    (exit 2) and nothing is moved."""
    sqs = _client("sqs")
    held: list[tuple[DeadLetterQueue, list[dict[str, Any]]]] = []
    gone: set[str] = set()
    try:
        for queue in target.queues:
            held.append((queue, _receive_all(sqs, queue.url)))
        wanted = None if ids is None else set(ids)
        chosen = [
            (queue, m)
            for queue, messages in held
            for m in messages
            if wanted is None or m["MessageId"] in wanted
        ]
        missing = sorted((wanted or set()) - {m["MessageId"] for _, m in chosen})
        if missing:
            raise UsageError(
                f"no dead letter with id {', '.join(missing)} in the chosen queues",
                hint="see them with `regwarden deadletters list --source aws`",
            )
        sources = {q.url: _source(sqs, q.url) for q in {q for q, _ in chosen}}
        orphans = sorted(url for url, source in sources.items() if source is None)
        if orphans:
            raise UsageError(
                f"no single source queue dead-letters into {', '.join(orphans)}: "
                "its letters cannot be moved back",
                hint="the retention fan-out's letters: invoke the fan-out again (or wait "
                "for the next scheduled run)",
            )
        moved: list[AwsDeadLetter] = []
        for queue, message in chosen:
            if not dry_run:
                params: dict[str, Any] = {
                    "QueueUrl": sources[queue.url],
                    "MessageBody": message["Body"],
                }
                attributes = _attributes(message)
                if attributes:
                    params["MessageAttributes"] = attributes
                _call(sqs, "send_message", f"queue {sources[queue.url]}", **params)
                _call(
                    sqs,
                    "delete_message",
                    f"queue {queue.url}",
                    QueueUrl=queue.url,
                    ReceiptHandle=message["ReceiptHandle"],
                )
                gone.add(message["MessageId"])
            moved.append(_letter(queue, message, None))
        return moved
    finally:
        for queue, messages in held:
            _release(sqs, queue.url, [m for m in messages if m["MessageId"] not in gone])


# -- rendering -------------------------------------------------------------------------------


def row(letter: AwsDeadLetter) -> dict[str, object]:
    """One letter for `--output json`."""
    return {
        "id": letter.id,
        "queue": letter.queue,
        "function": letter.function,
        "eventId": letter.event_id,
        "images": list(letter.images),
        "receives": letter.receives,
        "failures": letter.failures,
        "sentAt": letter.sent_at.isoformat() if letter.sent_at else None,
        "firstError": letter.first_error,
        "lastError": letter.last_error,
    }


def print_letters(letters: Sequence[AwsDeadLetter], *, title: str) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text  # bodies and errors are data, never markup

    table = Table(title=Text(title), title_justify="left", show_edge=False)
    table.add_column("MESSAGE ID", no_wrap=True)
    table.add_column("FUNCTION", no_wrap=True)
    table.add_column("EVENT ID")
    table.add_column("SENT", no_wrap=True)
    table.add_column("RECEIVES", justify="right")
    table.add_column("FIRST ERROR")
    table.add_column("IMAGES")
    for d in letters:
        table.add_row(
            d.id,
            d.function or "-",
            Text(d.event_id),
            d.sent_at.strftime("%Y-%m-%d %H:%M:%S") if d.sent_at else "-",
            str(d.receives),
            Text(d.first_error or "-"),
            Text("\n".join(d.images) or "-"),
        )
    console = Console()
    console.print(table)
    console.print(f"{len(letters)} dead letter(s)", style="dim")


# -- the commands' AWS side (`cli/_deadletters.py` calls these for --source aws) ---------------


def run_list(
    *,
    stack: str | None,
    queue_urls: Sequence[str],
    function: str | None,
    table: str | None,
    json_output: bool,
) -> None:
    target = resolve(stack=stack, queue_urls=queue_urls, function=function, table=table)
    letters = list_letters(target)
    if json_output:
        from ._render import print_json

        print_json([row(d) for d in letters])
        return
    where = f"stack {stack}" if stack else ", ".join(q.url for q in target.queues)
    print_letters(letters, title=f"AWS dead letters ({where})")


def run_retry(
    *,
    ids: Sequence[str] | None,
    dry_run: bool,
    stack: str | None,
    queue_urls: Sequence[str],
    function: str | None,
    table: str | None,
    json_output: bool,
) -> None:
    """`ids` None: every letter of the chosen queues (`--all`)."""
    target = resolve(stack=stack, queue_urls=queue_urls, function=function, table=table)
    moved = retry_letters(target, ids, dry_run=dry_run)
    if json_output:
        from ._render import print_json

        print_json({"dryRun": dry_run, "requeued": [row(d) for d in moved]})
        return
    verb = "would move back" if dry_run else "moved back"
    if not moved:
        print(f"no dead letters: nothing {verb}")
        return
    print(f"{verb} to their source queues: {len(moved)} message(s)")
    for d in moved:
        print(f"  {d.id}  {d.function or '-'}  {', '.join(d.images) or d.event_id}")
