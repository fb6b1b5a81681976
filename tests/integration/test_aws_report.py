"""The scheduled report on AWS: the `report` Lambda handler against moto in server mode
(S3, DynamoDB, ECR over boto3's wire protocol) with a real local distribution as ECR's
data plane, and the template resources it runs in (bucket, schedule, least-privilege role).

The handler is invoked as EventBridge Scheduler invokes it (the payload template.yaml
configures) and must leave `reports/YYYY/MM/DD/report.html` and `report.json` in the
reports bucket, keep its summary in the DynamoDB ledger, read only the repositories under
its prefixes, and write nothing to the ledger but `report` records (its role may write
no other key)."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from support import moto_server as support
from support.aws_gate import LambdaContext
from support.cfn import load_template
from support.moto_server import REGISTRY_HOST, EcrLimitsProxy, MotoServer, put_manifest

from regwarden.devtools import LocalRegistry, make_image, push_image
from regwarden.oci import RegistryClient
from regwarden.report import record_report, report_summaries
from regwarden.store import DynamoLedger
from regwarden.store._dynamo import table_definition

moto_server = support.moto_server
moto = support.moto
ecr_proxy = support.ecr_proxy

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `functions/` imports from the repo root
    sys.path.insert(0, str(ROOT))

pytestmark = pytest.mark.integration

TABLE = "regwarden"
CONFIG = "regwarden-config"
REPORTS = "regwarden-reports"
POLICY = """\
apiVersion: regwarden/v1
kind: Policy
defaults:
  team: platform
repositories:
  - match: "apps/api"
    team: api
  - match: "apps/**"
    team: apps
"""
TEMPLATE = load_template()
RESOURCES: dict[str, Any] = TEMPLATE["Resources"]


@pytest.fixture
def data_plane() -> Iterator[LocalRegistry]:
    """A registry of this module's own: the session's is shared with tests that push to
    repositories of the same names, and the report counts every tag it finds."""
    with LocalRegistry() as reg:
        yield reg


@pytest.fixture
def aws(
    moto: MotoServer,
    ecr_proxy: EcrLimitsProxy,
    data_plane: LocalRegistry,
    monkeypatch: pytest.MonkeyPatch,
) -> MotoServer:
    """Three ECR repositories (two under apps/, one outside), their images in the real
    data plane, the ledger table, the policy in S3 and the reports bucket."""
    s3 = moto.client("s3")
    s3.create_bucket(Bucket=CONFIG)
    s3.put_object(Bucket=CONFIG, Key="regwarden.yaml", Body=POLICY.encode())
    s3.create_bucket(Bucket=REPORTS)
    moto.client("dynamodb").create_table(**table_definition(TABLE))
    ecr = moto.client("ecr")
    base = make_image(layers=2, layer_size=4096, seed=41)
    images = {
        ("apps/api", "1.0.0"): make_image(layers=2, layer_size=4096, seed=41, labels={"n": "1"}),
        ("apps/api", "1.0.1"): make_image(layers=2, layer_size=4096, seed=41, labels={"n": "2"}),
        ("apps/web", "latest"): base,
        ("other/tool", "1.0"): make_image(layers=1, layer_size=2048, seed=42),
    }
    with RegistryClient(data_plane.host) as oci:
        for repo in {r for r, _ in images}:
            ecr.create_repository(repositoryName=repo)
        for (repo, tag), image in images.items():
            push_image(oci, repo, image, tag)
            put_manifest(ecr, repo, image.manifest, tag=tag, media_type=image.media_type)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto.endpoint_url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_ECR", ecr_proxy.endpoint_url)
    monkeypatch.setenv("ECR_DATA_PLANE", data_plane.host)
    monkeypatch.setenv("REGWARDEN_POLICY", f"s3://{CONFIG}/regwarden.yaml")
    monkeypatch.setenv("REGWARDEN_TABLE", TABLE)
    monkeypatch.setenv("REGWARDEN_REGISTRY", REGISTRY_HOST)
    monkeypatch.setenv("REGWARDEN_REPORT_BUCKET", REPORTS)
    monkeypatch.setenv("REGWARDEN_REPORT_PREFIXES", "apps/")
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "regwarden-test")
    for name in ("REGWARDEN_REPORT_PREFIX", "REGWARDEN_ALERTS_TOPIC"):
        monkeypatch.delenv(name, raising=False)
    return moto


def _invoke(at: str) -> dict[str, Any]:
    from functions.aws import report

    result: dict[str, Any] = report.handler(
        {"scheduledTime": at}, LambdaContext("regwarden-report")
    )
    return result


def test_the_scheduled_report_lands_in_the_bucket_and_its_summary_in_the_ledger(
    aws: MotoServer,
) -> None:
    from functions.aws._report import report_keys

    before = datetime.now(UTC)
    done = _invoke("2026-12-07T06:00:00Z")
    html_key, json_key = report_keys("reports/", before)
    assert re.fullmatch(r"reports/\d{4}/\d{2}/\d{2}/report\.html", html_key)
    assert done["html"] == f"s3://{REPORTS}/{html_key}"
    assert done["json"] == f"s3://{REPORTS}/{json_key}"
    assert (done["images"], done["repositories"]) == (3, 2)

    s3 = aws.client("s3")
    listed = s3.list_objects_v2(Bucket=REPORTS)["Contents"]
    assert sorted(o["Key"] for o in listed) == sorted([html_key, json_key])
    page = s3.get_object(Bucket=REPORTS, Key=html_key)
    assert page["ContentType"] == "text/html; charset=utf-8"
    html = page["Body"].read().decode()
    assert html.lstrip().lower().startswith("<!doctype html") and "<svg" in html
    data = s3.get_object(Bucket=REPORTS, Key=json_key)
    assert data["ContentType"] == "application/json"
    text = data["Body"].read().decode()
    body = json.loads(text)
    assert body["registry"] == REGISTRY_HOST and body["images"] == 3
    assert "other/tool" not in text and "other/tool" not in html  # outside its prefixes
    teams = {g["name"] for g in body["storage"]["by_team"]}
    assert teams == {"api", "apps"}  # from the policy, by repository

    ledger = DynamoLedger(TABLE)
    try:
        kept = report_summaries(ledger, REGISTRY_HOST)
        assert [k["images"] for k in kept] == [3]
        # the role may write only keys under action#report: (LedgerReportSummaries)
        items = aws.client("dynamodb").scan(TableName=TABLE)["Items"]
        written = [i["pk"]["S"] for i in items]
        assert written and all(pk.startswith("action#report:") for pk in written), written
    finally:
        ledger.close()

    again = _invoke("2026-12-08T06:00:00Z")  # the next day's report sees the first one
    assert again["images"] == 3
    ledger = DynamoLedger(TABLE)
    try:
        assert len(report_summaries(ledger, REGISTRY_HOST)) == 2
    finally:
        ledger.close()


def test_a_report_that_cannot_be_written_fails_the_invocation(
    aws: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from regwarden.errors import RegistryError

    monkeypatch.setenv("REGWARDEN_REPORT_BUCKET", "no-such-bucket")
    with pytest.raises(RegistryError, match="no-such-bucket"):
        _invoke("2026-12-07T06:00:00Z")


def test_settings_and_keys() -> None:
    from functions.aws._report import ReportSettings, report_keys
    from regwarden.errors import UsageError

    with pytest.raises(UsageError, match="REGWARDEN_REPORT_BUCKET"):
        ReportSettings.from_env({})
    s = ReportSettings.from_env(
        {"REGWARDEN_REPORT_BUCKET": "b", "REGWARDEN_REPORT_PREFIXES": "apps/,quarantine/apps/"}
    )
    assert (s.prefix, s.globs) == ("reports/", ("apps/*", "quarantine/apps/*"))
    assert ReportSettings.from_env({"REGWARDEN_REPORT_BUCKET": "b"}).globs == ()
    assert (
        ReportSettings.from_env(
            {"REGWARDEN_REPORT_BUCKET": "b", "REGWARDEN_REPORT_PREFIX": "/x/y/"}
        ).prefix
        == "x/y/"
    )
    late = datetime(2026, 12, 31, 23, 30, tzinfo=UTC)
    assert report_keys("reports/", late) == (
        "reports/2026/12/31/report.html",
        "reports/2026/12/31/report.json",
    )


# -- the template -----------------------------------------------------------------------------


def _statements(role: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for policy in RESOURCES[role]["Properties"]["Policies"]:
        out += policy["PolicyDocument"]["Statement"]
    return out


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def test_reports_bucket_is_private_encrypted_tls_only_and_expires_old_reports() -> None:
    bucket = RESOURCES["ReportsBucket"]["Properties"]
    (rule,) = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"] == {
        "SSEAlgorithm": "aws:kms",
        "KMSMasterKeyID": {"Fn::GetAtt": "Key.Arn"},
    }
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    assert len(bucket["PublicAccessBlockConfiguration"]) == 4
    rules = {r["Id"]: r for r in bucket["LifecycleConfiguration"]["Rules"]}
    expire = rules["expire-old-reports"]
    env = RESOURCES["ReportFunction"]["Properties"]["Environment"]["Variables"]
    assert expire["Prefix"] == env["REGWARDEN_REPORT_PREFIX"] == "reports/"
    assert expire["ExpirationInDays"] == {"Ref": "ReportRetentionDays"}
    assert TEMPLATE["Parameters"]["ReportRetentionDays"]["Type"] == "Number"
    (deny,) = RESOURCES["ReportsBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert deny["Effect"] == "Deny" and deny["Principal"] == "*" and deny["Action"] == "s3:*"
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert {"Fn::GetAtt": "ReportsBucket.Arn"} in deny["Resource"]


def test_report_role_is_least_privilege() -> None:
    statements = _statements("ReportRole")
    actions = {a for s in statements for a in _listed(s["Action"]) if isinstance(a, str)}
    assert all(s["Effect"] == "Allow" for s in statements)
    assert not any(a.endswith("*") for a in actions)
    # S3: put objects under the report prefix, nothing else
    s3 = [s for s in statements if any(str(a).startswith("s3:") for a in _listed(s["Action"]))]
    puts = [s for s in s3 if s["Action"] == "s3:PutObject"]
    assert len(puts) == 1 and puts[0]["Resource"] == {"Fn::Sub": "${ReportsBucket.Arn}/reports/*"}
    assert all(s["Sid"] in ("WriteReports", "Policy") for s in s3)
    # ECR: reads only; DynamoDB: reads, and writes of the report's own records only
    assert not {a for a in actions if a.startswith("ecr:")} - {
        "ecr:DescribeRepositories",
        "ecr:ListImages",
        "ecr:DescribeImages",
        "ecr:BatchGetImage",
        "ecr:GetDownloadUrlForLayer",
        "ecr:GetAuthorizationToken",
    }
    writes = [
        s
        for s in statements
        if {"dynamodb:PutItem", "dynamodb:UpdateItem"}
        & {a for a in _listed(s["Action"]) if isinstance(a, str)}
    ]
    assert len(writes) == 1
    (leading,) = writes[0]["Condition"]["ForAllValues:StringLike"]["dynamodb:LeadingKeys"]
    assert leading == "action#report:*"
    assert not {a for a in actions if a.startswith("dynamodb:")} - {
        "dynamodb:GetItem",
        "dynamodb:Query",
        "dynamodb:Scan",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
    }


def test_report_records_are_keyed_as_the_role_allows() -> None:
    """record_report's key is what the LeadingKeys condition lets the role write."""

    class Keys:
        def __init__(self) -> None:
            self.keys: list[str] = []

        def begin_action(self, key: str, **_: Any) -> None:
            self.keys.append(key)

        def finish_action(self, key: str, **_: Any) -> None:
            return None

    seen = Keys()
    record_report(seen, {"registry": REGISTRY_HOST}, now=datetime(2026, 12, 7, tzinfo=UTC))
    (key,) = seen.keys
    assert f"action#{key}".startswith("action#report:")


def test_schedule_invokes_the_report_function_daily_with_a_dead_letter_queue() -> None:
    props = RESOURCES["ReportRunSchedule"]["Properties"]
    assert props["ScheduleExpression"] == {"Ref": "ReportSchedule"}
    assert TEMPLATE["Parameters"]["ReportSchedule"]["Default"].startswith("cron(")
    target = props["Target"]
    assert target["Arn"] == {"Fn::GetAtt": "ReportFunction.Arn"}
    assert target["RoleArn"] == {"Fn::GetAtt": "ReportSchedulerRole.Arn"}
    sent = json.loads(
        target["Input"].replace("<aws.scheduler.scheduled-time>", "2026-12-07T06:00:00Z")
    )
    assert sent == {"scheduledTime": "2026-12-07T06:00:00Z"}
    dead = target["DeadLetterConfig"]["Arn"]["Fn::GetAtt"].split(".")[0]
    function = RESOURCES["ReportFunction"]
    assert (
        function["Properties"]["DeadLetterQueue"]["TargetArn"]["Fn::GetAtt"].split(".")[0] == dead
    )
    assert function["Properties"]["Layers"] == [{"Ref": "ReportLayer"}]  # after SharedLayer
    assert function["Properties"]["Handler"] == "functions.aws.report.handler"
    scheduler = _statements("ReportSchedulerRole")
    assert {a for s in scheduler for a in _listed(s["Action"])} == {
        "lambda:InvokeFunction",
        "sqs:SendMessage",
        "kms:Decrypt",
        "kms:GenerateDataKey",
    }
    assert any(
        r["Type"] == "AWS::CloudWatch::Alarm"
        and r["Properties"]["Dimensions"][0]["Value"]["Fn::GetAtt"] == f"{dead}.QueueName"
        for r in RESOURCES.values()
    )
