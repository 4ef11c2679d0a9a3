"""Test double: EC2 launch faults that moto cannot produce. Loaded only by tests.

tests/e2e/test_provision.py puts this directory on PYTHONPATH, so every Python process of the
run (ansible-playbook and the modules it starts) imports it at start-up. With
COLAB_TEST_EC2_FAULTS set it hooks botocore so that RunInstances answers with the EC2 error
code given for matching calls instead of reaching the endpoint, and logs every RunInstances
call to COLAB_TEST_EC2_CALL_LOG (JSON lines). Production code has no knowledge of it.

It also corrects one moto deviation from AWS: moto stores a launch template's own tags
(TagSpecifications of type "launch-template" given to CreateLaunchTemplate) inside the
template's LaunchTemplateData, where AWS never returns them ("launch-template" is not a
valid resource type there). amazon.aws.ec2_launch_template compares that data to decide
whether a new version is needed, so against plain moto the second run would add a version
that AWS would not. The hook drops those entries from DescribeLaunchTemplateVersions answers.

A second moto deviation: DescribeVolumes leaves out SnapshotId for a volume that was not
created from a snapshot and MultiAttachEnabled, where AWS answers "" and false
(amazon.aws.ec2_vol_info and ec2_vol then fail with KeyError 'snapshot_id' or
'multi_attach_enabled'). The hook adds those values.

With COLAB_TEST_EC2_SPOT_INTERRUPTED (a JSON list of instance ids) DescribeInstances shows those
instances as spot instances that AWS stopped (lifecycle "spot", state reason
Server.SpotInstanceShutdown), which moto cannot produce.

With COLAB_TEST_AWS_CALL_LOG set (a file path), every AWS API call of every service is appended
to that file as one JSON line {"service", "operation"}: what the bench counts per run.

With COLAB_TEST_EC2_IMAGE_LOG set (a file path), each CreateImage request's instance and block
device mappings are appended as one JSON line: moto ignores NoDevice, so the request is the evidence.

COLAB_TEST_EC2_FAULTS is a JSON list of rules, first match wins:
    [{"type": "g4dn.xlarge", "market": "on-demand", "code": "InsufficientInstanceCapacity"}]
"type" and "market" ("spot" | "on-demand") are optional filters. A launch counts as spot
when it names a launch template, as the role's spot path does.

amazon.aws retries InsufficientInstanceCapacity with back-off (up to minutes). Once this hook
has injected a fault, it caps time.sleep in that process at 10 ms so the retries finish in
milliseconds; the number and order of calls are unchanged.
"""

from __future__ import annotations

import json
import os
import time

_FAULTS = os.environ.get("COLAB_TEST_EC2_FAULTS")
_LOG = os.environ.get("COLAB_TEST_EC2_CALL_LOG")
_INTERRUPTED = os.environ.get("COLAB_TEST_EC2_SPOT_INTERRUPTED")
_ALL_CALLS_LOG = os.environ.get("COLAB_TEST_AWS_CALL_LOG")
_IMAGE_LOG = os.environ.get("COLAB_TEST_EC2_IMAGE_LOG")
_real_sleep = time.sleep


def _short_sleep(seconds: float) -> None:
    _real_sleep(min(seconds, 0.01))


def _launch_facts(params: dict) -> dict:
    nics = params.get("NetworkInterfaces") or [{}]
    return {
        "type": params.get("InstanceType"),
        "market": "spot" if params.get("LaunchTemplate") else "on-demand",
        "launch_template": (params.get("LaunchTemplate") or {}).get("LaunchTemplateId"),
        "subnet": params.get("SubnetId") or nics[0].get("SubnetId"),
    }


def _log(entry: dict) -> None:
    if _LOG:
        with open(_LOG, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry) + "\n")


def _decide(params, context, **_kwargs):
    facts = _launch_facts(params)
    code = None
    for rule in json.loads(_FAULTS or "[]"):
        if rule.get("type", facts["type"]) == facts["type"] and rule.get("market", facts["market"]) == facts["market"]:
            code = rule["code"]
            break
    context["colab_test_fault"] = code
    _log({**facts, "result": code or "sent"})


class _ErrorResponse:
    status_code = 400
    headers: dict = {}
    content = b""


def _answer(context, **_kwargs):
    code = context.get("colab_test_fault")
    if not code:
        return None
    time.sleep = _short_sleep
    parsed = {
        "Error": {"Code": code, "Message": f"Injected by the test double: {code}"},
        "ResponseMetadata": {"HTTPStatusCode": 400, "RequestId": "colab-test"},
    }
    return _ErrorResponse(), parsed


def _log_image_request(params, **_kwargs):
    with open(_IMAGE_LOG, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"instance": params.get("InstanceId"), "mappings": params.get("BlockDeviceMappings", [])}) + "\n")


def _log_any_call(model, **_kwargs):
    with open(_ALL_CALLS_LOG, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"service": model.service_model.service_name, "operation": model.name}) + "\n")


def _drop_template_own_tags(parsed, **_kwargs):
    for version in (parsed or {}).get("LaunchTemplateVersions", []):
        data = version.get("LaunchTemplateData") or {}
        specs = [t for t in data.get("TagSpecifications", []) if t.get("ResourceType") != "launch-template"]
        if specs:
            data["TagSpecifications"] = specs
        else:
            data.pop("TagSpecifications", None)


def _add_volume_defaults(parsed, **_kwargs):
    for volume in (parsed or {}).get("Volumes", []):
        volume.setdefault("SnapshotId", "")
        volume.setdefault("MultiAttachEnabled", False)


def _show_spot_interruptions(parsed, **_kwargs):
    interrupted = set(json.loads(_INTERRUPTED or "[]"))
    for reservation in (parsed or {}).get("Reservations", []):
        for instance in reservation.get("Instances", []):
            if instance.get("InstanceId") in interrupted:
                instance["InstanceLifecycle"] = "spot"
                instance["StateReason"] = {
                    "Code": "Server.SpotInstanceShutdown",
                    "Message": "Server.SpotInstanceShutdown: Spot instance shutdown (injected by the test double)",
                }


def _install() -> None:
    import botocore.session

    original = botocore.session.Session.create_client

    def create_client(self, *args, **kwargs):
        client = original(self, *args, **kwargs)
        if _ALL_CALLS_LOG:
            # before-call: once per API call actually sent (retries of it are not counted again).
            client.meta.events.register("before-call", _log_any_call)
        if client.meta.service_model.service_name == "ec2":
            client.meta.events.register("before-parameter-build.ec2.RunInstances", _decide)
            client.meta.events.register("before-call.ec2.RunInstances", _answer)
            client.meta.events.register("after-call.ec2.DescribeLaunchTemplateVersions", _drop_template_own_tags)
            client.meta.events.register("after-call.ec2.DescribeVolumes", _add_volume_defaults)
            if _INTERRUPTED:
                client.meta.events.register("after-call.ec2.DescribeInstances", _show_spot_interruptions)
            if _IMAGE_LOG:
                client.meta.events.register("before-parameter-build.ec2.CreateImage", _log_image_request)
        return client

    botocore.session.Session.create_client = create_client


if _FAULTS is not None or _LOG or _INTERRUPTED or _ALL_CALLS_LOG or _IMAGE_LOG:
    try:
        _install()
    except ImportError:  # a Python without botocore (e.g. a tool in the same environment)
        pass
