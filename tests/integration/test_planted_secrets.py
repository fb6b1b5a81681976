"""No secret in any log or alert: known secrets are planted where an operator puts them and
every line the serve, invoke and Lambda paths print, every alert body and the ledger are
searched for them.

Planted: a registry password (htpasswd on a real `docker-registry`; ECR's data-plane token
on the Lambda path), the receiver's bearer token, a Slack webhook URL (its path is the
credential), a webhook `?token=` value, an HMAC signing key, and (Lambda) the AWS secret
key. Each is really used — the registry accepts the password, the alert reaches the webhook
with its token and a valid signature, the Slack receiver is called at its secret path —
so their absence from the output means something. The Slack receiver answers 500 and a
second webhook points at a closed port, so channel errors are logged on every path.

Without `logging_setup` (root at INFO, as `logging.basicConfig` had it) httpx logs
`HTTP Request: POST http://…/services/…?token=…` for every alert and this test fails.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from support import aws_gate
from support import moto_server as support
from support.aws_gate import Aws
from support.loopback import LoopbackServer

from regwarden.devtools import LocalRegistry, free_port, make_image, push_image
from regwarden.notify import verify_signature
from regwarden.oci import Credentials, RegistryClient

moto_server = support.moto_server
moto = support.moto
ecr_proxy = support.ecr_proxy
local = aws_gate.local
aws = aws_gate.aws

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("docker-registry") is None, reason="needs the docker-registry binary"
    ),
]

ROOT = Path(__file__).resolve().parents[2]
USER = "ci-pusher"
REGISTRY_PASSWORD = "planted-Registry-Pw-7Q2x"
BEARER = "planted-bearer-token-K9vT3"
SLACK_PATH = "/services/TPLANT01/BPLANT02/planted-slack-path-5sQe"
WEBHOOK_TOKEN = "planted-webhook-query-token-Hh4"
HMAC_KEY = "planted-hmac-signing-key-Z8w"
AWS_SECRET = "planted-aws-secret-access-key-Lm0"


def _forms(secret: str) -> set[str]:
    """A secret and the spellings it takes in transit (URL-encoded, base64)."""
    return {secret, quote(secret, safe=""), base64.b64encode(secret.encode()).decode()}


BASE_SECRETS = {
    "registry password": {
        *_forms(REGISTRY_PASSWORD),
        base64.b64encode(f"{USER}:{REGISTRY_PASSWORD}".encode()).decode(),
    },
    "bearer token": _forms(BEARER),
    "Slack URL path": _forms(SLACK_PATH) | _forms(SLACK_PATH.rsplit("/", 1)[1]),
    "webhook token": _forms(WEBHOOK_TOKEN),
    "HMAC key": _forms(HMAC_KEY),
}


def assert_no_secret(where: str, text: str, secrets: dict[str, set[str]] = BASE_SECRETS) -> None:
    for name, forms in secrets.items():
        for form in forms:
            at = text.find(form)
            assert at < 0, f"{name} in {where}: …{text[max(0, at - 200) : at + 100]}…"


# -- receivers --------------------------------------------------------------------------------


@dataclass
class Receiver:
    """A loopback HTTP endpoint that records every request and answers `status`."""

    status: int
    requests: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    server: LoopbackServer | None = None

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.requests.append((self.path, dict(self.headers), body))
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = LoopbackServer(Handler).start()
        return self

    @property
    def base(self) -> str:
        assert self.server is not None
        return self.server.url

    def bodies(self) -> str:
        return "\n".join(b.decode("utf-8", "replace") for _, _, b in self.requests)


@pytest.fixture(scope="module")
def slack() -> Iterator[Receiver]:
    """Slack having a bad minute: every POST gets a 500."""
    receiver = Receiver(500).start()
    yield receiver
    assert receiver.server is not None
    receiver.server.stop()


@pytest.fixture(scope="module")
def hook() -> Iterator[Receiver]:
    receiver = Receiver(204).start()
    yield receiver
    assert receiver.server is not None
    receiver.server.stop()


def channels(slack_url: str, hook: Receiver, secret: str) -> str:
    """The policy's channels: Slack and the signing key from `secret://`, the webhook with
    its token in the query, a second webhook on a closed port; every alert to all."""
    broken = f"http://127.0.0.1:{free_port()}/broken?token={WEBHOOK_TOKEN}"
    return f"""\
notifications:
  channels:
    slack: {{type: slack, url: "{slack_url}"}}
    hook: {{type: webhook, url: "{hook.base}/hook?token={WEBHOOK_TOKEN}", secret: "{secret}"}}
    broken: {{type: webhook, url: "{broken}", secret: "{secret}"}}
"""


def wait_for(
    cond: Callable[[], object], what: str, log: Callable[[], str], timeout: float = 60
) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n--- log ---\n{log()[-4000:]}")
        time.sleep(0.05)


def assert_used(hook: Receiver, slack: Receiver, digest: str) -> None:
    """The planted secrets did their job: the webhook got the alert with its token and a
    valid signature, Slack was called at its secret path (and failed)."""
    mine = [r for r in hook.requests if digest in r[2].decode()]
    assert mine, "no alert reached the webhook"
    for path, headers, body in mine:
        assert path == f"/hook?token={WEBHOOK_TOKEN}"
        assert verify_signature(HMAC_KEY.encode(), headers, body, now=datetime.now(UTC))
    assert any(path == SLACK_PATH and digest in body.decode() for path, _, body in slack.requests)


# -- serve and invoke -------------------------------------------------------------------------

GATE_POLICY = """\
apiVersion: regwarden/v1
kind: Policy
registries:
  - {{host: "{serve_host}", kind: distribution}}
  - {{host: "{invoke_host}", kind: distribution}}
defaults:
  mode: enforce
  team: planted
  quarantine: {{strategy: move, repository: "quarantine/{{repository}}"}}
  signatures: {{required: false}}
repositories:
  - match: "**"
    tags: {{forbidden: [latest]}}
{channels}  routes:
    - {{match: {{}}, to: [slack, hook, broken]}}
"""


def distribution_event(host: str, repo: str, digest: str, media_type: str, size: int) -> str:
    return json.dumps(
        {
            "events": [
                {
                    "id": "planted-1",
                    "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "action": "push",
                    "target": {
                        "mediaType": media_type,
                        "digest": digest,
                        "repository": repo,
                        "tag": "latest",
                        "size": size,
                    },
                    "request": {"host": host, "useragent": "ci/1.0", "method": "PUT"},
                }
            ]
        }
    )


def test_serve_and_invoke_log_no_secret(tmp_path: Path, slack: Receiver, hook: Receiver) -> None:
    serve_port = free_port()
    serve_url = f"http://127.0.0.1:{serve_port}"
    users = {USER: REGISTRY_PASSWORD}
    with (
        LocalRegistry(
            users=users,
            notifications=f"{serve_url}/events/distribution",
            notification_headers={"Authorization": f"Bearer {BEARER}"},
            notification_timeout="2s",
            notification_backoff="200ms",
        ) as served,
        LocalRegistry(users=users) as invoked,
    ):
        auth = {"auths": {}}  # type: dict[str, Any]
        for reg in (served, invoked):
            pair = base64.b64encode(f"{USER}:{REGISTRY_PASSWORD}".encode()).decode()
            auth["auths"][reg.host] = {"auth": pair}
        (tmp_path / "auth.json").write_text(json.dumps(auth))
        (tmp_path / "tokens").write_text(BEARER + "\n")
        policy = tmp_path / "regwarden.yaml"
        policy.write_text(
            GATE_POLICY.format(
                serve_host=served.host,
                invoke_host=invoked.host,
                channels=channels("secret://slack", hook, "secret://hmac"),
            )
        )
        env = {
            **os.environ,
            "REGISTRY_AUTH_FILE": str(tmp_path / "auth.json"),
            "REGWARDEN_SECRET_SLACK": slack.base + SLACK_PATH,
            "REGWARDEN_SECRET_HMAC": HMAC_KEY,
        }
        creds = Credentials(USER, REGISTRY_PASSWORD)

        # invoke: the one-shot path, against its own registry and ledger
        with RegistryClient(invoked.host, credentials=creds) as client:
            image = make_image(seed=9101)
            digest = push_image(client, "planted/invoked", image, tag="latest")
        event = tmp_path / "push.json"
        event.write_text(
            distribution_event(
                invoked.host, "planted/invoked", digest, image.media_type, len(image.manifest)
            )
        )
        invoke = subprocess.run(
            [sys.executable, "-m", "regwarden", "--ledger", str(tmp_path / "invoke.db"),
             "invoke", "on_push", str(event), "--policy", str(policy)],
            capture_output=True, text=True, env=env, timeout=120, check=False,
        )  # fmt: skip
        invoke_out = invoke.stdout + invoke.stderr
        assert invoke.returncode == 1, invoke_out  # FAILED: the forbidden tag
        assert "quarantine" in invoke_out
        assert "channel 'slack'" in invoke_out and "channel 'broken'" in invoke_out
        assert_used(hook, slack, digest)

        # serve: the long-running path, fed by the registry's notifications
        log = tmp_path / "serve.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "regwarden", "--ledger", str(tmp_path / "serve.db"),
                 "serve", "--policy", str(policy), "--port", str(serve_port),
                 "--auth-token-file", str(tmp_path / "tokens"), "--workers", "2"],
                stdout=out, stderr=subprocess.STDOUT, env=env,
            )  # fmt: skip
        try:
            text = lambda: log.read_text(errors="replace")  # noqa: E731
            wait_for(lambda: _healthy(serve_url), "serve to start", text)
            # as CI pushes (serve ignores regwarden's own writes by their User-Agent)
            with RegistryClient(served.host, credentials=creds, user_agent="ci/1.0") as client:
                digest = push_image(client, "planted/served", make_image(seed=9102), "latest")
                wait_for(
                    lambda: client.head_manifest("quarantine/planted/served", digest) is not None,
                    "the move to quarantine (with the planted registry password)",
                    text,
                )
            wait_for(
                lambda: "channel 'slack'" in text() and "channel 'broken'" in text(),
                "both channel failures in the log",
                text,
            )
            # a caller with the right token and a bad body, and one with a wrong token
            bad = httpx.post(
                f"{serve_url}/events/distribution",
                content=b"{not json",
                headers={"Authorization": f"Bearer {BEARER}", "Content-Type": "application/json"},
            )
            assert bad.status_code == 400
            wrong = httpx.post(
                f"{serve_url}/events/distribution",
                content=b"{}",
                headers={"Authorization": "Bearer some-other-token-123"},
            )
            assert wrong.status_code == 401
        finally:
            proc.terminate()
            proc.wait(30)
        assert_used(hook, slack, digest)
        serve_out = log.read_text(errors="replace")

    assert_no_secret("invoke output", invoke_out)
    assert_no_secret("serve log", serve_out)
    assert_no_secret("webhook alert bodies", hook.bodies())
    assert_no_secret("Slack alert bodies", slack.bodies())
    # the ledgers (with their WAL): errors are kept there for dead letters and the outbox
    for ledger in [*tmp_path.glob("invoke.db*"), *tmp_path.glob("serve.db*")]:
        assert_no_secret(ledger.name, ledger.read_bytes().decode("latin-1"))


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


# -- the Lambda handlers ----------------------------------------------------------------------

AWS_POLICY = """\
apiVersion: regwarden/v1
kind: Policy
defaults:
  mode: enforce
  team: planted
  quarantine: {{strategy: retag}}
repositories:
  - match: "planted/**"
    tags: {{forbidden: [latest]}}
CHANNELS
    alerts-topic: {{type: sns, topicArn: "{topic}"}}
  routes:
    - {{match: {{}}, to: [alerts-topic, slack, hook, broken]}}
"""
"""`{topic}` is filled in by the `aws` fixture (str.format); CHANNELS here."""

_HANDLER = """\
import json, logging, sys
sys.path.insert(0, {root!r})
# the runtime's own root handler, at the most talkative level an operator can choose
# (AWS_LAMBDA_LOG_LEVEL=DEBUG): botocore would print Secrets Manager's answers there
logging.basicConfig(
    level=logging.DEBUG, stream=sys.stdout, format="[%(levelname)s] %(name)s %(message)s"
)
function = sys.argv[1]
module = __import__(f"functions.aws.{{function}}", fromlist=["handler"])

class Context:
    function_name = f"regwarden-{{function}}"
    memory_limit_in_mb = 512
    aws_request_id = "planted-request"
    invoked_function_arn = f"arn:aws:lambda:us-east-1:123456789012:function:{{function_name}}"
    def get_remaining_time_in_millis(self):
        return 120_000

result = module.handler(json.load(sys.stdin), Context())
print("HANDLER-RESULT " + json.dumps(result))
"""


@pytest.fixture
def aws_policy(slack: Receiver, hook: Receiver) -> str:
    text = channels("secret://regwarden/planted-slack", hook, "secret://regwarden/planted-hmac")
    return AWS_POLICY.replace("CHANNELS\n", text.replace("{", "{{").replace("}", "}}"))


@dataclass
class Lambda:
    """The handlers run as the Lambda runtime runs them: a fresh process, Powertools'
    logging set up (AWS_LAMBDA_FUNCTION_NAME), every byte of output kept."""

    aws: Aws
    script: Path
    output: list[str] = field(default_factory=list)

    def invoke(self, function: str, event: dict[str, Any]) -> dict[str, Any]:
        env = {
            **os.environ,
            "AWS_LAMBDA_FUNCTION_NAME": f"regwarden-{function}",
            "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
            "POWERTOOLS_LOG_LEVEL": "INFO",
        }
        proc = subprocess.run(
            [sys.executable, str(self.script), function],
            input=json.dumps(event), capture_output=True, text=True, env=env, timeout=180,
            check=False, cwd=ROOT,
        )  # fmt: skip
        self.output.append(proc.stdout + proc.stderr)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        (line,) = [ln for ln in proc.stdout.splitlines() if ln.startswith("HANDLER-RESULT ")]
        result: dict[str, Any] = json.loads(line.split(" ", 1)[1])
        return result


def test_lambda_handlers_log_no_secret(
    aws: Aws, slack: Receiver, hook: Receiver, tmp_path: Path
) -> None:
    secrets = aws.moto.client("secretsmanager")
    secrets.create_secret(Name="regwarden/planted-slack", SecretString=slack.base + SLACK_PATH)
    secrets.create_secret(Name="regwarden/planted-hmac", SecretString=HMAC_KEY)
    token = aws.ecr.get_authorization_token()["authorizationData"][0]["authorizationToken"]
    ecr_password = base64.b64decode(token).decode().split(":", 1)[1]
    planted = {
        **{k: v for k, v in BASE_SECRETS.items() if k not in ("registry password", "bearer token")},
        "ECR registry password": {ecr_password, token},
        "AWS secret key": _forms(AWS_SECRET),
    }
    script = tmp_path / "handler.py"
    script.write_text(_HANDLER.format(root=str(ROOT)))
    run = Lambda(aws, script)

    repo = "planted/app"
    aws.repository(repo)
    digest = aws.push(repo, make_image(seed=9103), "latest")
    push = aws.sample("ecr-image-push.json", repository=repo, digest=digest, tag="latest")
    assert run.invoke("on_push", aws.sqs_event(json.dumps(push))) == {"batchItemFailures": []}
    assert aws.tags(repo, digest) != ["latest"]  # quarantined (retag)

    alerts = aws.receive("notify", 1)  # the alert, as the topic delivered it
    result = run.invoke("notify", alerts)
    # slack and the closed port failed: the record is retried, the webhook got it once
    assert result["batchItemFailures"] == [{"itemIdentifier": alerts["Records"][0]["messageId"]}]
    assert_used(hook, slack, digest)
    output = "\n".join(run.output)
    assert "channel 'slack'" in output and "channel 'broken'" in output

    assert_no_secret("Lambda output", output, planted)
    assert_no_secret("alerts on the topic", json.dumps(alerts), planted)
    assert_no_secret("webhook alert bodies", hook.bodies(), planted)
    assert_no_secret("Slack alert bodies", slack.bodies(), planted)
