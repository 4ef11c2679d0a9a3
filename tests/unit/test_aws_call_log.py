"""tests/aws_hooks: with COLAB_TEST_AWS_CALL_LOG every AWS API call a process sends is logged."""

from __future__ import annotations

import json
import subprocess
import sys

from colab_testkit.substrate import ROOT, free_port

CALLS = """
import boto3, botocore.config, botocore.exceptions
config = botocore.config.Config(retries={"max_attempts": 1}, connect_timeout=1)
for service, call in (("ec2", "describe_instances"), ("ec2", "describe_security_groups"), ("ssm", "get_parameter")):
    client = boto3.client(service, region_name="us-east-2", endpoint_url=ENDPOINT, config=config,
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    kwargs = {"Name": "x"} if service == "ssm" else {}
    try:
        getattr(client, call)(**kwargs)
    except botocore.exceptions.EndpointConnectionError:
        pass  # nothing listens: the call was still made
"""


def test_every_api_call_is_logged_with_its_service_and_operation(tmp_path):
    log = tmp_path / "calls.jsonl"
    code = f"ENDPOINT = 'http://127.0.0.1:{free_port()}'\n" + CALLS
    env = {"PYTHONPATH": str(ROOT / "tests" / "aws_hooks"), "COLAB_TEST_AWS_CALL_LOG": str(log),
           "AWS_EC2_METADATA_DISABLED": "true", "PATH": "/usr/bin:/bin"}  # fmt: skip
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert calls == [
        {"service": "ec2", "operation": "DescribeInstances"},
        {"service": "ec2", "operation": "DescribeSecurityGroups"},
        {"service": "ssm", "operation": "GetParameter"},
    ]
