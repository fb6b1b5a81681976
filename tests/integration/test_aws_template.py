"""`template.yaml` against the real event shapes: each EventBridge rule's pattern (with and
without a repository prefix) is tested with moto's TestEventPattern on the `events/aws/`
samples, and the wiring the handlers rely on is checked (SQS sources reporting partial
batch failures, handler paths that import, a DLQ behind every queue)."""

from __future__ import annotations

import copy
import importlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
from support import moto_server as support
from support.cfn import load_template
from support.moto_server import ACCOUNT, REGION, MotoServer

moto_server = support.moto_server
moto = support.moto

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events" / "aws"


TEMPLATE: dict[str, Any] = load_template()
RESOURCES: dict[str, Any] = TEMPLATE["Resources"]
_DROP = object()


def resolve(value: Any, params: dict[str, str]) -> Any:
    """The intrinsics the event patterns use: Ref, Sub, If (on HasRepositoryPrefix)."""
    pseudo = {"AWS::Partition": "aws", "AWS::Region": REGION, "AWS::AccountId": ACCOUNT}
    if isinstance(value, dict) and len(value) == 1:
        ((key, arg),) = value.items()
        if key == "Ref":
            return _DROP if arg == "AWS::NoValue" else {**pseudo, **params}[arg]
        if key == "Fn::Sub":
            return re.sub(r"\$\{([^}]+)\}", lambda m: {**pseudo, **params}[m[1]], arg)
        if key == "Fn::If":
            condition, yes, no = arg
            assert condition == "HasRepositoryPrefix"
            return resolve(yes if params["RepositoryPrefix"] else no, params)
    if isinstance(value, dict):
        out = {k: resolve(v, params) for k, v in value.items()}
        return {k: v for k, v in out.items() if v is not _DROP}
    if isinstance(value, list):
        return [resolve(v, params) for v in value]
    return value


def pattern(rule: str, prefix: str) -> str:
    raw = RESOURCES[rule]["Properties"]["EventPattern"]
    return json.dumps(resolve(copy.deepcopy(raw), {"RepositoryPrefix": prefix}))


def entry(name: str, repository: str) -> dict[str, Any]:
    """A `put_events` entry carrying the sample's source, detail-type and detail."""
    event = json.loads((EVENTS / name).read_text())
    arn = f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/{repository}"
    is_inspector = event["source"] == "aws.inspector2"
    event["detail"]["repository-name"] = arn if is_inspector else repository
    return {
        "Source": event["source"],
        "DetailType": event["detail-type"],
        "Detail": json.dumps(event["detail"]),
        "Resources": [arn] if event["resources"] else [],
    }


# rule → the samples it must take (all others in events/aws/ it must not)
ROUTES = {
    "ImagePushRule": {"ecr-image-push.json"},
    "ReferrerRule": {"ecr-referrer-action.json"},
    "PullThroughCacheRule": {"ecr-pull-through-cache.json"},
    "ReplicationRule": {"ecr-replication-action.json"},
    "ImageScanRule": {"ecr-image-scan.json"},
    "InspectorScanRule": {"inspector2-scan.json"},
}
SAMPLES = sorted(p.name for p in EVENTS.glob("*.json"))


@pytest.mark.parametrize("prefix", ["", "apps/"])
def test_rules_take_exactly_their_events(moto: MotoServer, prefix: str) -> None:
    """Each rule's pattern, deployed in moto's EventBridge with an SQS target; every sample
    is put on the bus for a repository inside and outside the prefix."""
    events, sqs = moto.client("events"), moto.client("sqs")
    queues = {}
    for rule in ROUTES:
        url = sqs.create_queue(QueueName=rule)["QueueUrl"]
        queues[rule] = url
        events.put_rule(Name=rule, EventPattern=pattern(rule, prefix))
        arn = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{rule}"
        events.put_targets(Rule=rule, Targets=[{"Id": "queue", "Arn": arn}])
    for name in SAMPLES:
        for repository in ("apps/web", "other/web"):
            result = events.put_events(Entries=[entry(name, repository)])
            assert result["FailedEntryCount"] == 0
    for rule, url in queues.items():
        got = []
        while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get(
            "Messages", []
        ):
            for m in messages:
                body = json.loads(m["Body"])
                repo = body["detail"]["repository-name"].rsplit("repository/", 1)[-1]
                got.append((body["detail-type"], repo))
                sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
        kinds = {json.loads((EVENTS / n).read_text())["detail-type"] for n in ROUTES[rule]}
        wanted = {(k, "apps/web") for k in kinds}
        if not prefix:
            wanted |= {(k, "other/web") for k in kinds}
        assert sorted(got) == sorted(wanted), rule


def test_each_rule_targets_the_queue_of_the_function_that_accepts_it() -> None:
    sys_path_root = str(ROOT)
    import sys

    if sys_path_root not in sys.path:
        sys.path.insert(0, sys_path_root)
    from functions.aws._app import GATE_FUNCTIONS

    queue_function = {"PushQueue": "on_push", "ScanQueue": "on_scan"}
    for rule in ROUTES:
        props = RESOURCES[rule]["Properties"]
        (target,) = props["Targets"]
        queue = target["Arn"]["Fn::GetAtt"].split(".")[0]
        function = queue_function[queue]
        for kind in props["EventPattern"]["detail-type"]:
            assert kind in GATE_FUNCTIONS[function], (rule, kind, function)


def test_functions_read_queues_with_partial_batch_reports_and_importable_handlers() -> None:
    import sys

    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    globals_ = TEMPLATE["Globals"]["Function"]
    assert globals_["Runtime"] == "python3.12" and globals_["Architectures"] == ["arm64"]
    functions = {n: r for n, r in RESOURCES.items() if r["Type"] == "AWS::Serverless::Function"}
    assert set(functions) == {
        "OnPushFunction",
        "OnScanFunction",
        "NotifyFunction",
        "RecoveryFunction",  # on a schedule (tests/integration/test_aws_recovery.py)
        "RetentionFanoutFunction",  # invoked by the schedule (see the retention tests below)
        "RetentionWorkerFunction",
        "ReportFunction",  # invoked by its schedule (tests/integration/test_aws_report.py)
        "OnAccessFunction",  # CloudTrail pulls and pushes (tests/integration/test_aws_access.py)
    }
    for name, res in functions.items():
        props = res["Properties"]
        assert res["Metadata"]["BuildMethod"] == "makefile"
        module, attr = props["Handler"].rsplit(".", 1)
        assert callable(getattr(importlib.import_module(module), attr)), name
        if name == "RetentionFanoutFunction":
            assert "Events" not in props
            continue
        if name == "RecoveryFunction":
            continue
        if name == "ReportFunction":
            assert "Events" not in props
            continue
        (source,) = props["Events"].values()
        assert source["Type"] == "SQS"
        assert source["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        queue = source["Properties"]["Queue"]["Fn::GetAtt"].split(".")[0]
        redrive = RESOURCES[queue]["Properties"]["RedrivePolicy"]
        dlq = redrive["deadLetterTargetArn"]["Fn::GetAtt"].split(".")[0]
        alarms = [
            r
            for r in RESOURCES.values()
            if r["Type"] == "AWS::CloudWatch::Alarm"
            and r["Properties"]["Dimensions"][0]["Value"]["Fn::GetAtt"] == f"{dlq}.QueueName"
        ]
        assert len(alarms) == 1, f"{name}: no alarm on {dlq}"
    table = RESOURCES["LedgerTable"]["Properties"]
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expiration", "Enabled": True}
    from regwarden.store._dynamo import TTL_ATTRIBUTE, table_definition

    assert TTL_ATTRIBUTE == "expiration"
    assert table["KeySchema"] == table_definition("x")["KeySchema"]
    assert table["AttributeDefinitions"] == table_definition("x")["AttributeDefinitions"]
    assert table["GlobalSecondaryIndexes"] == table_definition("x")["GlobalSecondaryIndexes"]


# -- delivery that survives throttling: event-source scaling, rule retries and dead letters -----

QUEUE_FUNCTIONS = ("OnPushFunction", "OnScanFunction", "NotifyFunction", "OnAccessFunction")


def test_queue_functions_scale_their_event_source_instead_of_being_throttled() -> None:
    """A throttled receive counts toward maxReceiveCount: the event source itself stops at
    the reserved concurrency (MaximumConcurrency), so SQS never hands Lambda more."""
    param = TEMPLATE["Parameters"]["ReservedConcurrency"]
    assert param["MinValue"] >= 2 and param.get("MaxValue", 1000) <= 1000  # SQS's range
    reserved_default = TEMPLATE["Globals"]["Function"].get("ReservedConcurrentExecutions")
    for name in QUEUE_FUNCTIONS:
        props = RESOURCES[name]["Properties"]
        (source,) = props["Events"].values()
        scaling = source["Properties"]["ScalingConfig"]
        assert scaling == {"MaximumConcurrency": {"Ref": "ReservedConcurrency"}}, name
        # never more pollers than reserved executions (both the same parameter)
        reserved = props.get("ReservedConcurrentExecutions", reserved_default)
        assert reserved in (None, {"Ref": "ReservedConcurrency"}), name


def _rule_dead_letters() -> dict[str, str]:
    """Rule → the dead-letter queue of its target."""
    out = {}
    for rule in ROUTES:
        (target,) = RESOURCES[rule]["Properties"]["Targets"]
        out[rule] = target["DeadLetterConfig"]["Arn"]["Fn::GetAtt"].split(".")[0]
    return out


def test_rule_targets_retry_then_keep_the_event_in_their_queues_dead_letter_queue() -> None:
    dead = _rule_dead_letters()
    for rule in ROUTES:
        (target,) = RESOURCES[rule]["Properties"]["Targets"]
        assert target["RetryPolicy"] == {
            "MaximumRetryAttempts": 185,  # EventBridge's maxima: drop nothing early
            "MaximumEventAgeInSeconds": 86400,
        }, rule
        # the DLQ of the queue the rule feeds: one alarm and one redrive for both failures
        queue = target["Arn"]["Fn::GetAtt"].split(".")[0]
        redrive = RESOURCES[queue]["Properties"]["RedrivePolicy"]["deadLetterTargetArn"]
        assert redrive == {"Fn::GetAtt": f"{dead[rule]}.Arn"}, rule
    # EventBridge may send to those DLQs, and only from these rules
    (policy,) = [
        r
        for r in RESOURCES.values()
        if r["Type"] == "AWS::SQS::QueuePolicy"
        and {"Ref": "PushDeadLetterQueue"} in r["Properties"]["Queues"]
    ]
    granted: dict[str, set[str]] = {}
    for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
        assert statement["Principal"] == {"Service": "events.amazonaws.com"}
        assert statement["Action"] == "sqs:SendMessage"
        queue = statement["Resource"]["Fn::GetAtt"].split(".")[0]
        for arn in statement["Condition"]["ArnEquals"]["aws:SourceArn"]:
            granted.setdefault(arn["Fn::GetAtt"].split(".")[0], set()).add(queue)
    assert granted == {rule: {queue} for rule, queue in dead.items()}
    # the queues are KMS-encrypted: EventBridge must be allowed to use the key
    (services,) = [
        s
        for s in RESOURCES["Key"]["Properties"]["KeyPolicy"]["Statement"]
        if s["Sid"] == "ServicesDeliverEncryptedMessages"
    ]
    assert "events.amazonaws.com" in services["Principal"]["Service"]


def test_rule_targets_deploy_with_their_retry_policy_and_dead_letter_queue(
    moto: MotoServer,
) -> None:
    """The targets as written, put through moto's EventBridge API, read back unchanged."""
    events, sqs = moto.client("events"), moto.client("sqs")
    for rule, dead in _rule_dead_letters().items():
        (target,) = RESOURCES[rule]["Properties"]["Targets"]
        for name in (rule + "-q", rule + "-dlq"):
            sqs.create_queue(QueueName=name)
        events.put_rule(Name=rule, EventPattern=pattern(rule, ""))
        deployed = {
            "Id": target["Id"],
            "Arn": f"arn:aws:sqs:{REGION}:{ACCOUNT}:{rule}-q",
            "RetryPolicy": target["RetryPolicy"],
            "DeadLetterConfig": {"Arn": f"arn:aws:sqs:{REGION}:{ACCOUNT}:{rule}-dlq"},
        }
        result = events.put_targets(Rule=rule, Targets=[deployed])
        assert result["FailedEntryCount"] == 0, (rule, dead)
        (got,) = events.list_targets_by_rule(Rule=rule)["Targets"]
        assert got["RetryPolicy"] == target["RetryPolicy"]
        assert got["DeadLetterConfig"] == deployed["DeadLetterConfig"]


# -- retention: schedule → fan-out → work queue → worker ----------------------------------------


def _statements(role: str) -> list[dict[str, Any]]:
    return [
        statement
        for policy in RESOURCES[role]["Properties"]["Policies"]
        for statement in policy["PolicyDocument"]["Statement"]
    ]


def _listed(value: Any) -> list[Any]:
    """Actions or resources as a list; both branches of an `!If`."""
    if isinstance(value, dict) and "Fn::If" in value:
        _, yes, no = value["Fn::If"]
        return _listed(yes) + _listed(no)
    return value if isinstance(value, list) else [value]


def _import_functions() -> None:
    import sys

    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


def test_retention_mode_defaults_to_plan_in_both_functions() -> None:
    _import_functions()
    from functions.aws._settings import RETENTION_MODES, RetentionSettings

    param = TEMPLATE["Parameters"]["RetentionMode"]
    assert param["Default"] == "plan"
    assert tuple(param["AllowedValues"]) == RETENTION_MODES
    for name in ("RetentionFanoutFunction", "RetentionWorkerFunction"):
        env = RESOURCES[name]["Properties"]["Environment"]["Variables"]
        assert env["RETENTION_MODE"] == {"Ref": "RetentionMode"}, name
    # and without the variable at all, nothing is deleted either
    host = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"
    assert not RetentionSettings.from_env({"REGWARDEN_REGISTRY": host}).apply
    inventory = TEMPLATE["Parameters"]["RetentionInventory"]
    worker_env = RESOURCES["RetentionWorkerFunction"]["Properties"]["Environment"]["Variables"]
    assert worker_env["REGWARDEN_RETENTION_INVENTORY"] == {"Ref": "RetentionInventory"}
    assert inventory["Default"] == "aws"  # ECS and Lambda are read unless turned off


def test_schedule_targets_the_fan_out_with_a_payload_it_accepts() -> None:
    _import_functions()
    from regwarden.retention import scheduled_run

    schedule = RESOURCES["RetentionRunSchedule"]
    assert schedule["Type"] == "AWS::Scheduler::Schedule"
    props = schedule["Properties"]
    assert props["ScheduleExpression"] == {"Ref": "RetentionSchedule"}
    assert TEMPLATE["Parameters"]["RetentionSchedule"]["Default"].startswith("cron(")
    target = props["Target"]
    assert target["Arn"] == {"Fn::GetAtt": "RetentionFanoutFunction.Arn"}
    assert target["RoleArn"] == {"Fn::GetAtt": "RetentionSchedulerRole.Arn"}
    # what the scheduler sends once it has filled in the context attribute
    sent = target["Input"].replace("<aws.scheduler.scheduled-time>", "2026-11-27T03:00:00Z")
    assert scheduled_run(json.loads(sent)).scheduled is not None
    dead = target["DeadLetterConfig"]["Arn"]["Fn::GetAtt"].split(".")[0]
    fanout = RESOURCES["RetentionFanoutFunction"]["Properties"]
    assert fanout["DeadLetterQueue"]["TargetArn"]["Fn::GetAtt"].split(".")[0] == dead
    assert any(
        r["Type"] == "AWS::CloudWatch::Alarm"
        and r["Properties"]["Dimensions"][0]["Value"]["Fn::GetAtt"] == f"{dead}.QueueName"
        for r in RESOURCES.values()
    )
    scheduler = _statements("RetentionSchedulerRole")
    assert {a for s in scheduler for a in _listed(s["Action"])} == {
        "lambda:InvokeFunction",
        "sqs:SendMessage",
        "kms:Decrypt",
        "kms:GenerateDataKey",
    }
    (invoke,) = [s for s in scheduler if s["Action"] == "lambda:InvokeFunction"]
    assert invoke["Resource"] == {"Fn::GetAtt": "RetentionFanoutFunction.Arn"}


def test_retention_queue_outlasts_the_worker_and_has_a_dead_letter_queue() -> None:
    _import_functions()
    from functions.aws._settings import RetentionSettings

    worker = RESOURCES["RetentionWorkerFunction"]["Properties"]
    (source,) = worker["Events"].values()
    assert source["Type"] == "SQS"
    assert source["Properties"]["BatchSize"] == 1
    assert source["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    queue_name = source["Properties"]["Queue"]["Fn::GetAtt"].split(".")[0]
    queue = RESOURCES[queue_name]["Properties"]
    assert queue["VisibilityTimeout"] >= 6 * worker["Timeout"]
    assert queue["KmsMasterKeyId"] == {"Fn::GetAtt": "Key.Arn"}
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {
        "Fn::GetAtt": "RetentionDeadLetterQueue.Arn"
    }
    # the worker stops deleting well before its timeout, so a run never dies mid-batch
    host = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"
    assert (
        RetentionSettings.from_env({"REGWARDEN_REGISTRY": host}).stop_ms < worker["Timeout"] * 500
    )
    assert worker["ReservedConcurrentExecutions"] == {"Ref": "RetentionConcurrency"}
    env = worker["Environment"]["Variables"]
    assert env["REGWARDEN_RETENTION_QUEUE"] == {"Ref": queue_name}
    fanout_env = RESOURCES["RetentionFanoutFunction"]["Properties"]["Environment"]["Variables"]
    assert fanout_env["REGWARDEN_RETENTION_QUEUE"] == {"Ref": queue_name}


@pytest.mark.parametrize("prefix", ["", "apps/"])
def test_retention_scope_and_iam_grants_agree(prefix: str) -> None:
    """The repositories the functions consider in scope are exactly those the worker's ECR
    grants reach: nothing is queued that IAM would refuse, nothing granted goes unused."""
    _import_functions()
    import fnmatch

    from regwarden.retention import in_scope

    params = {"RepositoryPrefix": prefix, "QuarantinePrefix": "quarantine/"}
    env = RESOURCES["RetentionWorkerFunction"]["Properties"]["Environment"]["Variables"]
    prefixes = tuple(resolve(env["REGWARDEN_RETENTION_PREFIXES"], params).split(","))
    fanout_env = RESOURCES["RetentionFanoutFunction"]["Properties"]["Environment"]["Variables"]
    assert fanout_env["REGWARDEN_RETENTION_PREFIXES"] == env["REGWARDEN_RETENTION_PREFIXES"]
    (ecr,) = [
        s
        for s in _statements("RetentionWorkerRole")
        if any(a.startswith("ecr:") for a in _listed(s["Action"]))
    ]
    arns = [resolve(r, params) for r in ecr["Resource"]]
    names = ["apps/web", "apps/team/api", "other/web", "quarantine/apps/web", "quarantine/other"]
    for name in names:
        arn = f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/{name}"
        assert in_scope(name, prefixes) == any(fnmatch.fnmatchcase(arn, a) for a in arns), name


def test_retention_roles_are_least_privilege() -> None:
    worker = _statements("RetentionWorkerRole")
    worker_actions = {a for s in worker for a in _listed(s["Action"])}
    assert not any(a.endswith(":*") or a == "*" for a in worker_actions)
    for statement in worker:
        actions = _listed(statement["Action"])
        ecr = [a for a in actions if a.startswith("ecr:")]
        if statement["Resource"] == "*":
            assert set(ecr) <= {"ecr:GetAuthorizationToken"}, statement["Sid"]
        if ecr:  # reads and deletes images; never writes, tags or creates
            assert set(ecr) <= {
                "ecr:DescribeImages",
                "ecr:BatchGetImage",
                "ecr:BatchDeleteImage",
                "ecr:GetAuthorizationToken",
            }
    writes = {"dynamodb:Scan", "sns:Publish", "sqs:SendMessage"}
    assert worker_actions & writes == {"sns:Publish"}
    (alerts,) = [s for s in worker if s["Action"] == "sns:Publish"]
    assert alerts["Resource"] == {"Ref": "AlertsTopic"}

    fanout = _statements("RetentionFanoutRole")
    fanout_actions = {a for s in fanout for a in _listed(s["Action"])}
    assert {a for a in fanout_actions if a.startswith("ecr:")} == {"ecr:DescribeRepositories"}
    assert not any(a.startswith(("dynamodb:", "sns:", "ecs:", "lambda:")) for a in fanout_actions)
    (send,) = [s for s in fanout if s["Action"] == "sqs:SendMessage"]
    assert send["Resource"] == [
        {"Fn::GetAtt": "RetentionQueue.Arn"},
        {"Fn::GetAtt": "RetentionFanoutDeadLetterQueue.Arn"},
    ]


# -- access monitoring: CloudTrail → AccessRule → AccessQueue → on_access ------------------------

ACCESS_EVENTS = ROOT / "events" / "access"
ACCESS_RESOURCES = (
    "AccessRule",
    "AccessDeadLetterQueue",
    "AccessQueue",
    "AccessQueuesPolicy",
    "AccessDeadLettersAlarm",
    "OnAccessLogGroup",
    "OnAccessFunction",
    "AccessSweepSchedule",
    "AccessSchedulerRole",
    "OnAccessRole",
)


def _cloudtrail_entry(event: dict[str, Any], repository: str) -> dict[str, Any]:
    detail = copy.deepcopy(event["detail"])
    detail["requestParameters"]["repositoryName"] = repository
    return {
        "Source": event["source"],
        "DetailType": event["detail-type"],
        "Detail": json.dumps(detail),
        "Resources": [],
    }


@pytest.mark.parametrize("prefix", ["", "apps/"])
def test_access_rule_takes_successful_pulls_and_pushes_of_the_watched_repositories(
    moto: MotoServer, prefix: str
) -> None:
    """The rule's pattern in moto's EventBridge: the CloudTrail samples of events/access/
    (and a layer download, and every push and scan sample of events/aws/) for repositories
    inside and outside the prefix and its quarantine copies."""
    events, sqs = moto.client("events"), moto.client("sqs")
    params = {"RepositoryPrefix": prefix, "QuarantinePrefix": "quarantine/"}
    raw = RESOURCES["AccessRule"]["Properties"]["EventPattern"]
    events.put_rule(Name="access", EventPattern=json.dumps(resolve(copy.deepcopy(raw), params)))
    url = sqs.create_queue(QueueName="access")["QueueUrl"]
    arn = f"arn:aws:sqs:{REGION}:{ACCOUNT}:access"
    events.put_targets(Rule="access", Targets=[{"Id": "queue", "Arn": arn}])
    trail = {p.name: json.loads(p.read_text()) for p in ACCESS_EVENTS.glob("cloudtrail-*.json")}
    trail.pop("cloudtrail-sqs-batch.json")  # the Lambda event, not a bus event
    layer = copy.deepcopy(trail["cloudtrail-batchgetimage-digest.json"])
    layer["detail"]["eventName"] = "GetDownloadUrlForLayer"
    trail["layer-download"] = layer
    repositories = ("apps/web", "quarantine/apps/web", "other/web")
    for event in trail.values():
        for repository in repositories:
            result = events.put_events(Entries=[_cloudtrail_entry(event, repository)])
            assert result["FailedEntryCount"] == 0
    for name in SAMPLES:
        assert events.put_events(Entries=[entry(name, "apps/web")])["FailedEntryCount"] == 0
    got = []
    while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        for m in messages:
            detail = json.loads(m["Body"])["detail"]
            got.append((detail["eventName"], detail["requestParameters"]["repositoryName"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    taken = {"apps/web", "quarantine/apps/web"} | ({"other/web"} if not prefix else set())
    # the tag and digest pulls, the AWS-internal pull and the push: not the refused pull
    # (errorCode), not the layer download, nothing of events/aws/
    wanted = [
        (name, repo)
        for name in ("BatchGetImage", "BatchGetImage", "BatchGetImage", "PutImage")
        for repo in taken
    ]
    assert sorted(got) == sorted(wanted)


def test_access_rule_sees_read_only_management_events_and_feeds_on_access() -> None:
    _import_functions()
    from functions.aws._access import CLOUDTRAIL, SWEEP

    rule = RESOURCES["AccessRule"]["Properties"]
    assert rule["State"] == "ENABLED_WITH_ALL_CLOUDTRAIL_MANAGEMENT_EVENTS"  # BatchGetImage
    assert rule["EventPattern"]["detail-type"] == [CLOUDTRAIL]
    assert rule["EventPattern"]["detail"]["eventName"] == ["BatchGetImage", "PutImage"]
    (target,) = rule["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": "AccessQueue.Arn"}
    assert target["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": "AccessDeadLetterQueue.Arn"}}
    function = RESOURCES["OnAccessFunction"]["Properties"]
    (source,) = function["Events"].values()
    assert source["Properties"]["Queue"] == {"Fn::GetAtt": "AccessQueue.Arn"}
    queue = RESOURCES["AccessQueue"]["Properties"]
    assert queue["KmsMasterKeyId"] == {"Fn::GetAtt": "Key.Arn"}
    assert queue["VisibilityTimeout"] >= 6 * TEMPLATE["Globals"]["Function"]["Timeout"]
    # only the rule may send, to the queue and to its dead-letter queue
    statements = RESOURCES["AccessQueuesPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert {s["Resource"]["Fn::GetAtt"] for s in statements} == {
        "AccessQueue.Arn",
        "AccessDeadLetterQueue.Arn",
    }
    for s in statements:
        assert s["Principal"] == {"Service": "events.amazonaws.com"}
        assert s["Condition"] == {"ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": "AccessRule.Arn"}}}
    # the sweep tick: every minute, a payload the handler takes, invoking nothing else
    schedule = RESOURCES["AccessSweepSchedule"]["Properties"]
    assert schedule["ScheduleExpression"] == "rate(1 minute)"
    assert schedule["Target"]["Arn"] == {"Fn::GetAtt": "OnAccessFunction.Arn"}
    assert json.loads(schedule["Target"]["Input"])["regwarden"] == SWEEP
    (invoke,) = _statements("AccessSchedulerRole")
    assert invoke["Action"] == "lambda:InvokeFunction"
    assert invoke["Resource"] == {"Fn::GetAtt": "OnAccessFunction.Arn"}
    # regwarden's own roles are not watched
    ignored = function["Environment"]["Variables"]["REGWARDEN_ACCESS_IGNORE_PRINCIPALS"]
    roles = {r["Fn::GetAtt"].split(".")[0] for r in ignored["Fn::Join"][1]}
    assert roles == {
        "OnPushRole",
        "OnScanRole",
        "RecoveryRole",
        "RetentionWorkerRole",
        "ReportRole",
    }


def test_access_monitoring_turns_off_as_a_whole() -> None:
    param = TEMPLATE["Parameters"]["AccessMonitoring"]
    assert param["Default"] == "enabled" and param["AllowedValues"] == ["enabled", "disabled"]
    assert TEMPLATE["Conditions"]["AccessMonitoringOn"] == {
        "Fn::Equals": [{"Ref": "AccessMonitoring"}, "enabled"]
    }
    conditional = {n for n, r in RESOURCES.items() if r.get("Condition") == "AccessMonitoringOn"}
    assert conditional == set(ACCESS_RESOURCES)
    assert TEMPLATE["Outputs"]["AccessDeadLetterQueueUrl"]["Condition"] == "AccessMonitoringOn"
    # nothing else refers to them (a reference from an unconditional resource would fail
    # the stack with monitoring off)
    text = json.dumps({n: r for n, r in RESOURCES.items() if n not in conditional})
    for name in ACCESS_RESOURCES:
        assert f'"{name}"' not in text and f'"{name}.' not in text, name
