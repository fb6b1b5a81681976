"""Command tree. Each command parses flags, calls the core, renders: no rule logic here."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated

import typer

from ..errors import NotImplementedYet, UsageError
from ._deadletters import deadletters_app

DEFAULT_LEDGER = "~/.local/state/regwarden/ledger.db"

app = typer.Typer(
    name="regwarden",
    help=(
        "Keep container registries safe and clean: verify signatures, gate pushes on scans "
        "and tag rules, quarantine, and apply retention that never deletes what is running.\n\n"
        "Exit codes: 0 ok (PASSED, WARN) · 1 policy says no (FAILED, PENDING, guard rail) · "
        "2 usage or configuration error · 3 registry or cloud unreachable."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)
policy_app = typer.Typer(
    help="Validate policy files and print their JSON Schema.", no_args_is_help=True
)
retention_app = typer.Typer(help="Plan and apply retention rules.", no_args_is_help=True)
quarantine_app = typer.Typer(help="Inspect and release quarantined images.", no_args_is_help=True)
app.add_typer(policy_app, name="policy")
app.add_typer(retention_app, name="retention")
app.add_typer(quarantine_app, name="quarantine")
app.add_typer(deadletters_app, name="deadletters")


class OutputFormat(enum.StrEnum):
    table = "table"
    json = "json"


class GlobalOptions:
    """Flags every command shares, set by the callback."""

    insecure: bool = False
    ledger: str = DEFAULT_LEDGER
    """A store URL or path (`store.open_ledger`)."""
    queue: str | None = None
    """A queue URL or path (`store.open_queue`); None: the ledger's own."""
    debug: bool = False


OPTIONS = GlobalOptions()

OutputOpt = Annotated[
    OutputFormat, typer.Option("--output", "-o", help="table for people, json for scripts.")
]
LedgerOpt = Annotated[
    str | None,
    typer.Option(
        "--ledger",
        metavar="URL",
        help="The ledger to read (as the global --ledger: a path, sqlite:///PATH, "
        "dynamodb://TABLE, postgresql://…, …); default: the global one.",
    ),
]


def _print_version(value: bool) -> None:
    if value:
        from .. import __version__

        typer.echo(f"regwarden {__version__}")
        raise typer.Exit(0)


@app.callback()
def _global(
    insecure: Annotated[
        bool,
        typer.Option(
            "--insecure",
            help="Allow plain HTTP to a non-loopback registry (loopback always may).",
        ),
    ] = False,
    ledger: Annotated[
        str,
        typer.Option(
            "--ledger",
            metavar="URL",
            help="Ledger of verdicts, actions, tags and first-seen times: a path or "
            "sqlite:///PATH (an SQLite file), dynamodb://TABLE?region=REGION&endpoint=URL, "
            "firestore://PROJECT, azuretable://ACCOUNT, or "
            "postgresql://USER@HOST/DB?password_file=PATH (shared by serve replicas).",
            envvar="REGWARDEN_LEDGER",
        ),
    ] = DEFAULT_LEDGER,
    queue: Annotated[
        str | None,
        typer.Option(
            "--queue",
            metavar="URL",
            help="serve's work queue (and its dead letters): a path, sqlite:///PATH or "
            "postgresql://…. Default: the ledger's own (an SQLite or PostgreSQL ledger is its "
            "own queue; with a dynamodb:// ledger, name one).",
            envvar="REGWARDEN_QUEUE",
        ),
    ] = None,
    debug: Annotated[
        bool,
        typer.Option(
            "--debug",
            help="Show the traceback of an unexpected error (otherwise one line and exit 3).",
            envvar="REGWARDEN_DEBUG",
        ),
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version.", is_eager=True, callback=_print_version
        ),
    ] = False,
) -> None:
    OPTIONS.insecure = insecure
    OPTIONS.ledger = ledger
    OPTIONS.queue = queue or None
    OPTIONS.debug = debug


def _not_yet(command: str, issue: str) -> NotImplementedYet:
    return NotImplementedYet(f"'regwarden {command}' is not implemented yet ({issue})")


# -- images -------------------------------------------------------------------------------


@app.command()
def images(
    repository: Annotated[
        str, typer.Argument(help="Repository as HOST/NAME, e.g. 127.0.0.1:5000/payments/api.")
    ],
    output: OutputOpt = OutputFormat.table,
    include_artifacts: Annotated[
        bool,
        typer.Option("--include-artifacts", help="Also list signatures, attestations, SBOMs."),
    ] = False,
) -> None:
    """List the images in a repository: digest, tags, size, created (newest first).

    Tags that point at the same digest are shown together; a multi-platform index is one
    image whose size sums its platforms.
    """
    from ._images import run_images

    run_images(
        repository,
        output=output.value,
        include_artifacts=include_artifacts,
        insecure=OPTIONS.insecure,
    )


# -- policy -------------------------------------------------------------------------------


@policy_app.command("validate")
def policy_validate(
    file: Annotated[Path, typer.Argument(help="Policy file (regwarden.yaml).")],
    output: OutputOpt = OutputFormat.table,
    registry: Annotated[
        str | None,
        typer.Option(
            "--registry",
            help="Registry host[:port] the policy runs against: its scan sources must be "
            "ones this registry serves (default: the policy's listed registries).",
        ),
    ] = None,
) -> None:
    """Check a policy file; print every problem with its path and line. Exit 2 if invalid.

    Besides structure and rules, anything regwarden would accept but not carry out is a
    problem: a scan source the registry cannot serve or that is not read yet, a quarantine
    strategy no provider supports. `serve`, `invoke` and the functions refuse the same.
    """
    from ._policy import run_validate

    run_validate(file, output=output.value, registry=registry)


@policy_app.command("schema")
def policy_schema() -> None:
    """Print the policy file's JSON Schema (point your editor's YAML plugin at it)."""
    from ._policy import run_schema

    run_schema()


# -- commands that later issues build ------------------------------------------------------


class Require(enum.StrEnum):
    all = "all"
    any = "any"


class SignFormat(enum.StrEnum):
    legacy = "legacy"
    bundle = "bundle"


@app.command()
def verify(
    image: Annotated[str, typer.Argument(help="Image reference (tag or digest) or oci:DIR[:TAG].")],
    key: Annotated[
        list[str],
        typer.Option("--key", help="cosign public key: PEM file or awskms://… (repeatable)."),
    ] = [],  # noqa: B006
    trust_policy: Annotated[str | None, typer.Option(help="Notation trust policy JSON.")] = None,
    trust_store: Annotated[
        str | None,
        typer.Option(help="Notation trust store directory (x509/{ca,signingAuthority,tsa}/NAME/)."),
    ] = None,
    certificate_identity: Annotated[
        list[str], typer.Option(help="Keyless: expected certificate SAN (repeatable).")
    ] = [],  # noqa: B006
    certificate_identity_regexp: Annotated[
        list[str],
        typer.Option(
            help="Keyless: SAN regex, searched as cosign does (anchor it with ^ and $).",
        ),
    ] = [],  # noqa: B006
    certificate_oidc_issuer: Annotated[
        str | None, typer.Option(help="Keyless: expected OIDC issuer.")
    ] = None,
    certificate_oidc_issuer_regexp: Annotated[
        str | None,
        typer.Option(help="Keyless: OIDC issuer regex, searched as cosign does (anchor it)."),
    ] = None,
    trusted_root: Annotated[
        str | None,
        typer.Option(
            help="Sigstore trusted_root.json (Fulcio, Rekor, TSA keys) for keyless and tlog."
        ),
    ] = None,
    rekor_public_key: Annotated[
        str | None, typer.Option(help="Rekor public key to check legacy signatures' SETs.")
    ] = None,
    require: Annotated[
        Require,
        typer.Option(
            help="all: every key/identity/trust policy needs a valid signature; any: one does."
        ),
    ] = Require.all,
    signature_repository: Annotated[
        str | None, typer.Option(help="Repository holding the signatures (like COSIGN_REPOSITORY).")
    ] = None,
    verdict: Annotated[
        bool,
        typer.Option(
            "--verdict",
            help="Check regwarden's verdict attestation instead: exit 0 only for a valid, "
            "fresh PASSED signed with --key (a public key, or the gcpkms:// / azurekms:// key).",
        ),
    ] = False,
    max_age: Annotated[
        str | None,
        typer.Option(help="With --verdict: the oldest decision accepted, e.g. 7d or 12h."),
    ] = None,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Verify an image's cosign (legacy and bundle) and Notation signatures, by digest.

    Exit 0 when the requirement is met, 1 when it is not, 2 for bad input, 3 when the
    registry cannot be reached. Signatures by unknown keys are listed, not fatal.
    With --verdict: exit 0 only when the newest valid verdict attestation is PASSED and
    no older than --max-age (what a deploy step checks where no admission controller runs).
    """
    if verdict:
        from ._verdict import run_verify_verdict

        run_verify_verdict(
            image,
            keys=key,
            max_age=max_age,
            signature_repository=signature_repository,
            output=output.value,
            insecure=OPTIONS.insecure,
        )
        return
    if max_age is not None:
        raise UsageError("--max-age goes with --verdict")
    from ._signing import run_verify

    run_verify(
        image,
        keys=key,
        trust_policy=trust_policy,
        trust_store=trust_store,
        identities=certificate_identity,
        identity_regexps=certificate_identity_regexp,
        issuer=certificate_oidc_issuer,
        issuer_regexp=certificate_oidc_issuer_regexp,
        trusted_root=trusted_root,
        rekor_key=rekor_public_key,
        require=require.value,
        signature_repository=signature_repository,
        output=output.value,
        insecure=OPTIONS.insecure,
    )


@app.command()
def sign(
    image: Annotated[str, typer.Argument(help="Image reference (tag or digest).")],
    key: Annotated[
        str,
        typer.Option(
            "--key",
            help="Private key PEM (cosign-encrypted keys read the password from COSIGN_PASSWORD).",
        ),
    ],
    format: Annotated[
        SignFormat,
        typer.Option("--format", help="legacy: .sig tag (cosign 2); bundle: v3 bundle referrer."),
    ] = SignFormat.legacy,
    annotation: Annotated[
        list[str],
        typer.Option("--annotation", "-a", help="KEY=VALUE in the signed payload (legacy)."),
    ] = [],  # noqa: B006
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Sign an image exactly as cosign does, without uploading to a transparency log."""
    from ._signing import run_sign

    run_sign(
        image,
        key=key,
        fmt=format.value,
        annotations=annotation,
        output=output.value,
        insecure=OPTIONS.insecure,
    )


@app.command()
def attest(
    image: Annotated[str, typer.Argument(help="Image reference (tag or digest).")],
    key: Annotated[str, typer.Option("--key", help="Private key PEM.")],
    type: Annotated[
        str,
        typer.Option(
            "--type", help="vuln | slsaprovenance | slsaprovenance1 | a predicate type URI."
        ),
    ],
    predicate: Annotated[str, typer.Option("--predicate", help="Predicate JSON file.")],
    format: Annotated[
        SignFormat, typer.Option("--format", help="legacy: .att tag; bundle: v3 bundle referrer.")
    ] = SignFormat.legacy,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Attach a signed in-toto attestation, as `cosign attest` does (DSSE)."""
    from ._signing import run_attest

    run_attest(
        image,
        key=key,
        kind=type,
        predicate=predicate,
        fmt=format.value,
        output=output.value,
        insecure=OPTIONS.insecure,
    )


class ReportType(enum.StrEnum):
    trivy = "trivy"
    grype = "grype"


@app.command()
def attach(
    image: Annotated[str, typer.Argument(help="Image reference (tag or digest).")],
    type: Annotated[
        ReportType,
        typer.Option(
            "--type", help="trivy: `trivy image --format json`; grype: `grype IMAGE -o json`."
        ),
    ],
    report: Annotated[str, typer.Option("--report", help="The scanner's JSON report file.")],
    sign: Annotated[
        bool, typer.Option("--sign", help="Sign the report referrer (as `regwarden sign` does).")
    ] = False,
    key: Annotated[
        str | None,
        typer.Option(
            "--key",
            help="Private key PEM for --sign (cosign-encrypted keys read COSIGN_PASSWORD).",
        ),
    ] = None,
    format: Annotated[
        SignFormat,
        typer.Option("--format", help="--sign as legacy: .sig tag; bundle: v3 bundle referrer."),
    ] = SignFormat.legacy,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Attach a Trivy or Grype JSON report to an image as an OCI referrer, for the
    `trivy-referrer` / `grype-referrer` scan sources.

    The report is checked with the gate's own parser first (refused, nothing pushed, when it
    is not that scanner's JSON or names another image); IMAGE is resolved to its digest once.
    Prints the referrer's digest. The gate counts only signed report referrers unless the
    policy says `vulnerabilities.referrers.requireSigned: false`.

    Example:

        trivy image --format json --output trivy.json reg.example.com/app:1.4.2

        regwarden attach reg.example.com/app:1.4.2 --type trivy --report trivy.json --sign --key k
    """
    from ._attach import run_attach

    run_attach(
        image,
        kind_name=type.value,
        report_path=report,
        key=key,
        sign=sign,
        fmt=format.value,
        output=output.value,
        insecure=OPTIONS.insecure,
    )


PolicyOpt = Annotated[
    Path,
    typer.Option("--policy", "-p", help="Policy file (regwarden.yaml).", envvar="REGWARDEN_POLICY"),
]


@app.command()
def check(
    image: Annotated[str, typer.Argument(help="Image reference (tag or digest).")],
    policy: PolicyOpt,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Run every push check against an image without acting on it.

    Exit 0 for PASSED/WARN, 1 for FAILED/PENDING, 3 for ERROR.
    """
    from ._gate import run_check

    run_check(
        image, policy=policy, ledger=OPTIONS.ledger, insecure=OPTIONS.insecure, output=output.value
    )


@app.command()
def assess(
    target: Annotated[
        str,
        typer.Argument(
            metavar="HOST/REPOSITORY-GLOB",
            help="Registry and repositories, e.g. 127.0.0.1:5000/payments/** (HOST alone: all).",
        ),
    ],
    policy: PolicyOpt,
    concurrency: Annotated[
        int, typer.Option("--concurrency", min=1, help="Images judged at a time.")
    ] = 8,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Judge every image already in a registry with the policy's checks, and summarise
    what enforce would do, per team: how many would pass, warn, be quarantined (and the
    top reasons) or wait.

    Nothing is changed: no action, no ledger written, no alert; only the registry named is
    contacted. A failing check counts as a quarantine even under mode: audit. Exit 0.
    """
    from ._assess import run_assess

    run_assess(
        target,
        policy=policy,
        concurrency=concurrency,
        insecure=OPTIONS.insecure,
        output=output.value,
    )


@app.command()
def invoke(
    function: Annotated[str, typer.Argument(help="on_push | on_scan | retention | notify")],
    event_file: Annotated[
        Path | None,
        typer.Argument(
            help="Event payload (distribution, Harbor, EventBridge or Pub/Sub JSON; see events/)."
        ),
    ] = None,
    policy: PolicyOpt = Path("regwarden.yaml"),
    output: OutputOpt = OutputFormat.table,
    registry: Annotated[
        str | None,
        typer.Option(
            "--registry",
            help="retention: the registry host when the event does not name one.",
            envvar="REGWARDEN_REGISTRY",
        ),
    ] = None,
    yes: Annotated[
        bool,
        typer.Option("--yes", help="retention: delete (else a dry run, like the event's apply)."),
    ] = False,
) -> None:
    """Run a function in-process on an event file, exactly as the deployed one would.

    retention: the event is {"registry": HOST, "repository": GLOB, "apply": true}; without
    an event file, --registry names the host and every repository is planned.
    """
    if function == "retention":
        from ._retention import run_invoke_retention

        run_invoke_retention(
            event_file,
            policy=policy,
            registry=registry,
            yes=yes,
            output=output.value,
            ledger=OPTIONS.ledger,
            insecure=OPTIONS.insecure,
        )
        return
    from ._gate import run_invoke

    run_invoke(
        function,
        event_file,
        policy=policy,
        ledger=OPTIONS.ledger,
        insecure=OPTIONS.insecure,
        output=output.value,
        debug=OPTIONS.debug,
    )


@app.command()
def serve(
    policy: PolicyOpt,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="Port to bind (0: any free port).")
    ] = 8080,
    auth_token_file: Annotated[
        Path | None,
        typer.Option(
            help="Tokens callers must present (Bearer, Basic password, or Harbor auth_header)."
        ),
    ] = None,
    basic_user: Annotated[
        str,
        typer.Option(
            "--basic-user",
            metavar="USER",
            envvar="REGWARDEN_BASIC_USER",
            help="The user name of Basic-auth callers, whose password is a token; '' turns "
            "Basic off (Bearer and Harbor's verbatim header stay).",
        ),
    ] = "regwarden",
    workers: Annotated[int, typer.Option(min=1, help="Worker threads processing events.")] = 4,
    registry: Annotated[
        list[str],
        typer.Option(
            "--registry",
            metavar="HOST[:PORT]",
            help="A registry host events may name, besides the policy's registries "
            "(repeatable; REGWARDEN_REGISTRIES=HOST,HOST adds more).",
        ),
    ] = [],  # noqa: B006
    body_timeout: Annotated[
        float,
        typer.Option(
            min=0.1,
            max=300.0,
            metavar="SECONDS",
            help="A webhook body must arrive within this time, or the caller is dropped.",
        ),
    ] = 10.0,
    instance: Annotated[
        str | None,
        typer.Option(
            help="This process's id on the shared queue (default HOST:PORT). Restarted "
            "with the same id, it takes back the events it held at once.",
        ),
    ] = None,
    lease_timeout: Annotated[
        float,
        typer.Option(
            min=1.0,
            metavar="SECONDS",
            help="An event whose worker sent no heartbeat for this long is taken over.",
        ),
    ] = 30.0,
    metrics_public: Annotated[
        bool,
        typer.Option(
            "--metrics-public",
            help="Serve /metrics without credentials (default: the webhook's tokens).",
        ),
    ] = False,
    metrics_token_file: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="Tokens (Bearer) that may read /metrics, instead of the webhook's.",
        ),
    ] = None,
    tls_cert: Annotated[
        Path | None,
        typer.Option(metavar="PEM", help="Serve HTTPS with this certificate (with --tls-key)."),
    ] = None,
    tls_key: Annotated[
        Path | None,
        typer.Option(metavar="PEM", help="The certificate's private key (unencrypted)."),
    ] = None,
    access_queue: Annotated[
        int,
        typer.Option(
            min=1,
            metavar="EVENTS",
            help="Pull and push events held for the access monitor; a body that does not "
            "fit is answered 503 and the registry sends it again.",
        ),
    ] = 10_000,
    access_sweep: Annotated[
        float,
        typer.Option(
            min=0.1,
            max=300.0,
            metavar="SECONDS",
            help="How often closed access alert windows are looked for and summarised.",
        ),
    ] = 5.0,
) -> None:
    """Receive registry webhooks and run the push gate.

    POST /events/distribution and /events/harbor. Each body is checked, persisted in the
    work queue and acknowledged (202) before any registry I/O; workers process it. The queue
    is the ledger's own (an SQLite --ledger) or the one --queue names (sqlite:///PATH).

    regwarden contacts only the registries it is configured with: the policy's
    [bold]registries[/] hosts, [bold]--registry[/] and [bold]REGWARDEN_REGISTRIES[/]. An event
    naming any other host is refused (400) and never contacted; with none configured, serve
    does not start (exit 2). Bodies are capped at 1 MiB.

    Manifest pulls (and pushes) also go to the access monitor (the policy's
    [bold]access[/] section): a pull of a quarantined, FAILED or PENDING image or an
    unexpected puller or pusher alerts, and pull times and counts are recorded. Pulls
    are held in memory, never in the work queue. See docs/access.md.

    Crash-safe: an event counts as handled only when its verdict, action and alert are
    committed; after a crash the same instance takes its events back at once, and a
    recovery sweep (at start and every 30 s) finishes any half-done quarantine.

    For operators: a start-up line on stderr (address, policy digest, ledger, workers,
    auth); GET /metrics (Prometheus); GET /readyz (503 while the queue cannot be worked on);
    GET /healthz (liveness). See docs/serve.md.
    """
    from ._gate import run_serve

    run_serve(
        policy=policy,
        host=host,
        port=port,
        auth_token_file=auth_token_file,
        ledger=OPTIONS.ledger,
        queue=OPTIONS.queue,
        insecure=OPTIONS.insecure,
        workers=workers,
        registries=registry,
        body_timeout=body_timeout,
        debug=OPTIONS.debug,
        instance=instance,
        lease_timeout=lease_timeout,
        metrics_public=metrics_public,
        metrics_token_file=metrics_token_file,
        tls_cert=tls_cert,
        tls_key=tls_key,
        basic_user=basic_user,
        access_queue=access_queue,
        access_sweep=access_sweep,
    )


@app.command()
def demo(
    keep: Annotated[
        bool, typer.Option("--keep", help="Leave the registry running until Ctrl-C.")
    ] = False,
    state: Annotated[
        Path | None,
        typer.Option(
            "--state",
            help="Keep the demo's ledger, policy and registry storage in this new directory "
            "and print the `regwarden report` command for them; on a directory a demo kept, "
            "serve its registry again until Ctrl-C.",
        ),
    ] = None,
) -> None:
    """End-to-end demo against a real local registry (docker-registry on loopback)."""
    from ._demo import run_demo

    run_demo(keep=keep, state=state)


class PlanOutput(enum.StrEnum):
    table = "table"
    json = "json"
    markdown = "markdown"


RegistryOpt = Annotated[
    str | None,
    typer.Option(
        "--registry",
        help="Registry host[:port] to work on (the policy names repositories, not hosts).",
        envvar="REGWARDEN_REGISTRY",
    ),
]
RepositoryGlobOpt = Annotated[
    list[str],
    typer.Option(
        "--repository",
        "-r",
        help="Only repositories matching this glob (repeatable); default: every repository "
        "with retention rules.",
    ),
]
MaxDeletesOpt = Annotated[
    int | None,
    typer.Option(
        "--max-deletes",
        min=0,
        help="Run-wide guard: a run that would delete more deletes nothing (exit 1).",
    ),
]


@retention_app.command("plan")
def retention_plan(
    policy: PolicyOpt,
    registry: RegistryOpt = None,
    repository: RepositoryGlobOpt = [],  # noqa: B006
    output: Annotated[
        PlanOutput,
        typer.Option("--output", "-o", help="table for people, json for scripts, markdown."),
    ] = PlanOutput.table,
    max_deletes: MaxDeletesOpt = None,
) -> None:
    """Show what retention would keep and delete, and the rule that decided each image.

    Never deletes. Per repository: every digest kept or deleted with its rule and reason,
    totals of images and bytes freed. Exit 1 when a guard rail trips.
    """
    from ._retention import run_plan

    run_plan(
        policy=policy,
        registry=registry,
        repositories=repository,
        output=output.value,
        ledger=OPTIONS.ledger,
        insecure=OPTIONS.insecure,
        max_deletes=max_deletes,
    )


@retention_app.command("apply")
def retention_apply(
    policy: PolicyOpt,
    registry: RegistryOpt = None,
    repository: RepositoryGlobOpt = [],  # noqa: B006
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Really delete (without it: a dry run, exit 1).")
    ] = False,
    concurrency: Annotated[
        int, typer.Option(min=1, help="Deletions in flight at most (halved on throttling).")
    ] = 8,
    resume: Annotated[
        str | None,
        typer.Option(
            "--resume", metavar="RUN_ID", help="Continue an interrupted run without re-planning."
        ),
    ] = None,
    output: OutputOpt = OutputFormat.table,
    max_deletes: MaxDeletesOpt = None,
) -> None:
    """Delete what the plan selects, within guard rails.

    Without --yes nothing is deleted: the plan's deletions are printed and the exit code
    is 1 (new policies start in dry run). A tripped guard rail deletes nothing, alerts and
    exits 1. An interrupted apply resumes with --resume RUN_ID --yes.
    """
    from ._retention import run_apply

    run_apply(
        policy=policy,
        registry=registry,
        repositories=repository,
        output=output.value,
        ledger=OPTIONS.ledger,
        insecure=OPTIONS.insecure,
        yes=yes,
        concurrency=concurrency,
        resume=resume,
        max_deletes=max_deletes,
    )


@quarantine_app.command("release")
def quarantine_release(
    image: Annotated[
        str,
        typer.Argument(help="The quarantined image: REPO@sha256:… (its original repository)."),
    ],
    reason: Annotated[str, typer.Option(help="Why it is released (audited).")],
    output: OutputOpt = OutputFormat.table,
    by: Annotated[
        str | None,
        typer.Option("--by", metavar="NAME", help="Who releases it (audited; default: $USER)."),
    ] = None,
    ledger: LedgerOpt = None,
) -> None:
    """Restore exactly what quarantine changed (tags, repository), from the ledger.

    An image that is not quarantined (never was, or released already) is left alone:
    the command says so and exits 1.
    """
    from ._gate import run_release
    from ._quarantine import operator_name

    run_release(
        image,
        reason=reason,
        ledger=ledger or OPTIONS.ledger,
        insecure=OPTIONS.insecure,
        output=output.value,
        by=by or operator_name(),
    )


@quarantine_app.command("list")
def quarantine_list(
    ledger: LedgerOpt = None,
    policy: Annotated[
        Path | None,
        typer.Option(
            "--policy",
            "-p",
            help="Policy file: gives each image its team (none: team unknown).",
            envvar="REGWARDEN_POLICY",
        ),
    ] = None,
    team: Annotated[
        str | None, typer.Option("--team", help="Only this team's images (needs --policy).")
    ] = None,
    repository: Annotated[
        list[str],
        typer.Option(
            "--repository", "-r", metavar="GLOB", help="Only repositories matching (repeatable)."
        ),
    ] = [],  # noqa: B006
    older_than: Annotated[
        str | None,
        typer.Option(
            "--older-than", metavar="AGE", help="Only quarantined longer than AGE (7d, 12h)."
        ),
    ] = None,
    released: Annotated[
        bool, typer.Option("--released", help="Released ones instead of standing ones.")
    ] = False,
    all_: Annotated[bool, typer.Option("--all", help="Standing and released ones.")] = False,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """List quarantined images from the ledger: since when, why, team, who released them.

    Standing quarantines by default; --released or --all for the history. Reads the
    ledger only (no registry is contacted).
    """
    from ._quarantine import ListFilters, parse_age, run_list

    if released and all_:
        raise UsageError("--released and --all cannot be combined", hint="pick one")
    filters = ListFilters(
        team=team,
        repositories=tuple(repository),
        older_than=parse_age(older_than),
        released=None if all_ else released,
    )
    run_list(ledger=ledger or OPTIONS.ledger, policy=policy, filters=filters, output=output.value)


@quarantine_app.command("show")
def quarantine_show(
    image: Annotated[
        str, typer.Argument(help="The image by digest: HOST/REPO@sha256:… (its own repository).")
    ],
    ledger: LedgerOpt = None,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """The image's whole audit trail: verdicts, quarantine and release (who, why), alerts.

    Exit 1 when the ledger has no record of the image. Alerts are listed where the ledger
    keeps them readable (SQLite, DynamoDB).
    """
    from ._quarantine import run_show

    run_show(image, ledger=ledger or OPTIONS.ledger, output=output.value)


def parse_repository(text: str) -> tuple[str, str]:
    """`HOST/NAME` → (host, name); a tag or digest is a usage error here."""
    from ..reference import ImageRef

    ref = ImageRef.parse(text)
    if ref.tag or ref.digest:
        raise UsageError(
            f"expected a repository, got an image reference {text!r}",
            hint=f"drop the tag or digest: {ref.name}",
        )
    return ref.api_host, ref.repository


# -- report -------------------------------------------------------------------------------


class ReportFormat(enum.StrEnum):
    html = "html"
    json = "json"


@app.command()
def report(
    registry: Annotated[
        str | None,
        typer.Option(
            "--registry", metavar="HOST", help="Registry host[:port].", envvar="REGWARDEN_REGISTRY"
        ),
    ] = None,
    repository: Annotated[
        list[str] | None,
        typer.Option(
            "--repository", metavar="GLOB", help="Only repositories matching GLOB (repeatable)."
        ),
    ] = None,
    policy: Annotated[
        Path | None,
        typer.Option(
            "--policy",
            help="Policy file: teams by repository, maxScanAge, and the retention plan.",
        ),
    ] = None,
    top: Annotated[int, typer.Option("--top", metavar="N", help="Rows per list.")] = 10,
    stale_days: Annotated[
        int,
        typer.Option("--stale-days", metavar="N", help="Stale: not pulled within N days."),
    ] = 90,
    out: Annotated[
        Path | None,
        typer.Option("--out", metavar="FILE", help="Where to write (json: stdout if absent)."),
    ] = None,
    output: Annotated[
        ReportFormat,
        typer.Option("--output", "-o", help="html: one offline page; json: the same data."),
    ] = ReportFormat.html,
) -> None:
    """Write the registry hygiene report: storage (unique blobs), age, security, hygiene
    and retention history, per team and repository.

    The HTML file is self-contained and opens offline. Each report's summary is kept in
    the ledger (--ledger) so the next one draws trends. Nothing is deleted.
    """
    from ._report import run_report

    run_report(
        registry=registry,
        repositories=repository or [],
        policy=policy,
        ledger=OPTIONS.ledger,
        insecure=OPTIONS.insecure,
        top=top,
        stale_days=stale_days,
        out=out,
        output=output.value,
    )


# -- keys ---------------------------------------------------------------------------------

keys_app = typer.Typer(
    help="Make cosign-compatible signing keys and print their public half.", no_args_is_help=True
)
app.add_typer(keys_app, name="keys")


@keys_app.command("generate")
def keys_generate(
    output_key_prefix: Annotated[
        str,
        typer.Option(
            "--output-key-prefix", metavar="PREFIX", help="Write PREFIX.key and PREFIX.pub."
        ),
    ] = "cosign",
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite PREFIX.key and PREFIX.pub if they exist.")
    ] = False,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Generate an ECDSA P-256 key pair as `cosign generate-key-pair` does.

    PREFIX.key is the private key encrypted in cosign's format (mode 0600), PREFIX.pub
    the public key (PEM). The password comes from COSIGN_PASSWORD when set, else from a
    hidden prompt (asked twice), else from standard input. `regwarden sign` and cosign
    both read the key.
    """
    from ._keys import run_generate

    run_generate(output_key_prefix, force=force, output=output.value)


@keys_app.command("public")
def keys_public(
    key: Annotated[
        str, typer.Option("--key", help="Private key PEM (cosign-encrypted or plain PKCS#8).")
    ],
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Print the public key (PEM) of a private key, as `cosign public-key` does.

    The password comes from COSIGN_PASSWORD when set, else a hidden prompt, else stdin.
    """
    from ._keys import run_public

    run_public(key, output=output.value)
