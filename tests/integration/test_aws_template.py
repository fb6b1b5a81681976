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
import yaml
from support import moto_server as support
from support.moto_server import ACCOUNT, REGION, MotoServer

moto_server = support.moto_server
moto = support.moto

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events" / "aws"


class _Loader(yaml.SafeLoader):
    """CloudFormation short-form intrinsics (`!Ref X`) as `{"Ref": X}` / `{"Fn::If": …}`."""


def _intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        return {name: loader.construct_scalar(node)}
    if isinstance(node, yaml.SequenceNode):
        return {name: loader.construct_sequence(node, deep=True)}
    return {name: loader.construct_mapping(node, deep=True)}  # type: ignore[arg-type]


_Loader.add_multi_constructor("!", _intrinsic)
_TEXT = (ROOT / "template.yaml").read_text()
TEMPLATE: dict[str, Any] = yaml.load(_TEXT, Loader=_Loader)  # noqa: S506  # SafeLoader subclass
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
    assert set(functions) == {"OnPushFunction", "OnScanFunction", "NotifyFunction"}
    for name, res in functions.items():
        props = res["Properties"]
        assert res["Metadata"]["BuildMethod"] == "makefile"
        module, attr = props["Handler"].rsplit(".", 1)
        assert callable(getattr(importlib.import_module(module), attr)), name
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
