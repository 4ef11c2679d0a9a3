"""The ec2_gpu_host role's filter plugin: the launch order, login user, reachable subnets,
same-named resources and the inventory's region/owner, without AWS."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from colab_testkit.substrate import ROOT, load_role_file

filters = load_role_file("ec2_gpu_host", "filter_plugins/ec2_gpu_host.py", "ec2_gpu_host_filters")

SUBNETS = [
    {"subnet_id": "subnet-a", "availability_zone": "us-east-2a", "vpc_id": "vpc-1"},
    {"subnet_id": "subnet-b", "availability_zone": "us-east-2b", "vpc_id": "vpc-1"},
]
TYPES = {"g4dn.xlarge": {"zones": ["us-east-2a", "us-east-2b"]}, "g5.xlarge": {"zones": ["us-east-2b"]}}


def test_candidates_spot_first_then_type_then_zone():
    got = filters.ec2_gpu_host_launch_candidates(["g4dn.xlarge", "g5.xlarge"], SUBNETS, TYPES, True, True)
    assert [(c["market"], c["type"], c["zone"]) for c in got] == [
        ("spot", "g4dn.xlarge", "us-east-2a"),
        ("spot", "g4dn.xlarge", "us-east-2b"),
        ("spot", "g5.xlarge", "us-east-2b"),
        ("on-demand", "g4dn.xlarge", "us-east-2a"),
        ("on-demand", "g4dn.xlarge", "us-east-2b"),
        ("on-demand", "g5.xlarge", "us-east-2b"),
    ]
    assert got[0]["subnet_id"] == "subnet-a"


@pytest.mark.parametrize(("spot", "fallback", "markets"), [(True, False, {"spot"}), (False, False, {"on-demand"})])
def test_candidates_markets(spot, fallback, markets):
    got = filters.ec2_gpu_host_launch_candidates(["g5.xlarge"], SUBNETS, TYPES, spot, fallback)
    assert {c["market"] for c in got} == markets and {c["zone"] for c in got} == {"us-east-2b"}


RULES = [{"pattern": "(?i)amazon linux|amzn", "user": "ec2-user"}, {"pattern": "(?i)ubuntu", "user": "ubuntu"}]


def test_login_user_explicit_then_first_matching_rule():
    assert filters.ec2_gpu_host_login_user({"name": "Deep Learning AMI Ubuntu"}, RULES, "admin") == "admin"
    assert filters.ec2_gpu_host_login_user({"name": "x", "description": "Amazon Linux 2023 Ubuntu"}, RULES) == "ec2-user"
    assert filters.ec2_gpu_host_login_user({"name": "ubuntu/images/jammy"}, RULES, "") == "ubuntu"
    assert filters.ec2_gpu_host_login_user({"name": "rocky"}, RULES) == ""


def _table(vpc, routes, subnet=None, main=False):
    return {
        "vpc_id": vpc,
        "associations": [{"subnet_id": subnet, "main": main}],
        "routes": [{"destination_cidr_block": d, "gateway_id": g, "state": "active"} for d, g in routes],
    }


def test_private_subnets_use_the_associated_table_else_the_main_one():
    tables = [
        _table("vpc-1", [("10.0.0.0/16", "local")], main=True),
        _table("vpc-1", [("10.0.0.0/16", "local"), ("0.0.0.0/0", "igw-1")], subnet="subnet-b"),
    ]
    assert filters.ec2_gpu_host_private_subnets(SUBNETS, tables) == ["subnet-a"]
    # A NAT gateway is no way in from the internet.
    tables[1]["routes"][1]["gateway_id"] = "nat-1"
    assert filters.ec2_gpu_host_private_subnets(SUBNETS, tables) == ["subnet-a", "subnet-b"]
    tables[0]["routes"].append({"destination_cidr_block": "0.0.0.0/0", "gateway_id": "igw-1"})
    assert filters.ec2_gpu_host_private_subnets(SUBNETS, tables) == ["subnet-b"]


def test_same_named_lists_each_kind_with_its_setting():
    got = filters.ec2_gpu_host_same_named(
        [{"group_name": "n", "tags": {"a": "b"}}], [{"key_name": "n"}], [{"launch_template_name": "n-spot"}]
    )
    assert [(g["kind"], g["name"], g["setting"], g["tags"]) for g in got] == [
        ("Security group", "n", "ec2_gpu_host_security_group_name", {"a": "b"}),
        ("Key pair", "n", "ec2_gpu_host_key_name", {}),
        ("Launch template", "n-spot", "ec2_gpu_host_name", {}),
    ]


ENV = {"AWS_REGION": "eu-west-1", "AWS_DEFAULT_REGION": "eu-central-1", "COLAB_OWNER": "alice", "USER": "root"}


@pytest.mark.parametrize(
    ("settings", "env", "region", "owner"),
    [
        ("ec2_gpu_host_region: us-east-2\nec2_gpu_host_owner: bob\n", ENV, "us-east-2", "bob"),
        ("ec2_gpu_host_region: \"{{ x }}\"\nec2_gpu_host_owner: >-\n  {{ lookup('env', 'X') }}\n", ENV, "eu-west-1", "alice"),
        ("", {"AWS_DEFAULT_REGION": "eu-central-1", "USER": "root"}, "eu-central-1", "root"),
        ("not: [valid", {}, "us-east-2", ""),
    ],
)
def test_inventory_scope_reads_plain_settings_else_the_environment(settings, env, region, owner):
    got = filters.ec2_gpu_host_inventory_scope(settings, env)
    assert (got["region"], got["owner"]) == (region, owner)


TEAM = """colab_runtimes:
  hosts:
    alice: {ec2_gpu_host_owner: alice}
    carol-big: {ec2_gpu_host_runtime_name: big}
    bob:
      ec2_gpu_host_owner: bob
    templated: {ec2_gpu_host_owner: "{{ x }}"}
  vars: {ansible_connection: local, ec2_gpu_host_owner: carol}
"""


@pytest.mark.parametrize(
    ("team", "owners"),
    [
        ("", ["scope-owner"]),
        (TEAM, ["scope-owner", "alice", "carol", "bob"]),
        ("colab_runtimes:\n  hosts:\n    one:\n    two: {ec2_gpu_host_owner: scope-owner}\n", ["scope-owner"]),
        ("[not, a, team]", ["scope-owner"]),
    ],
)
def test_inventory_scope_matches_what_the_inventory_file_resolves(tmp_path, team, owners):
    """The filter and inventory/aws_ec2.yml's own templates must agree (the preflight relies on it),
    read from the ansible.cfg's directory even from a play in a subdirectory (a refresh in playbooks/)."""
    project = tmp_path / "project"
    (project / "inventory" / "group_vars").mkdir(parents=True)
    shutil.copy(ROOT / "ansible.cfg", project / "ansible.cfg")
    settings = (ROOT / "inventory" / "group_vars" / "all.yml").read_text()
    (project / "inventory" / "group_vars" / "all.yml").write_text(settings)
    if team:
        (project / "inventory" / "team.yml").write_text(team)
    env = {"PATH": str(Path(sys.executable).parent), "COLAB_OWNER": "scope-owner", "AWS_REGION": "eu-west-1",
           "HOME": str(tmp_path), "ANSIBLE_CONFIG": str(project / "ansible.cfg")}  # fmt: skip
    expected = filters.ec2_gpu_host_inventory_scope(settings, env, team)
    # The inventory's own templates, evaluated by ansible with the same files and environment.
    data = yaml.safe_load((ROOT / "inventory" / "aws_ec2.yml").read_text())
    probe = project / "playbooks" / "probe.yml"
    probe.parent.mkdir()
    probe.write_text(yaml.safe_dump([{
        "hosts": "localhost", "gather_facts": False,
        "tasks": [{"ansible.builtin.debug": {"msg": "SCOPE={{ [region | trim, owner] | to_json | b64encode }}"},
                   "vars": {"region": data["regions"][0], "owner": data["filters"]["tag:colab-gpu-runtime:owner"]}}],
    }]))  # fmt: skip
    out = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", "-c", "local", str(probe)],
        cwd=project, env=env, capture_output=True, text=True, timeout=120,
    ).stdout  # fmt: skip
    found = re.search(r"SCOPE=([A-Za-z0-9+/=]+)", out)
    assert found, out[-3000:]
    assert json.loads(base64.b64decode(found.group(1))) == [expected["region"], expected["owners"]]
    assert expected == {"region": "us-east-2", "owner": "scope-owner", "owners": owners, "region_from": "settings",
                        "owner_from": "environment"}  # fmt: skip


INSTANCE = {"id": "i-1", "region": "us-east-2", "type": "g4dn.xlarge", "price": 0.526, "started": True, "launched": True,
            "stop": {"changed": True}}  # fmt: skip


def test_failure_report_of_a_stopped_instance():
    got = filters.ec2_gpu_host_failure_report("Task X failed:\n  boom", INSTANCE)
    assert got.startswith("Task X failed: boom -- Instance i-1 (g4dn.xlarge in us-east-2, $0.5260/h while running), which"
                          " this run launched, has been STOPPED")  # fmt: skip
    assert "`ansible-playbook playbooks/teardown.yml -e ec2_gpu_host_terminate=i-1`" in got


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"stop": None}, "(ec2_gpu_host_stop_on_failure is false)"),
        ({"stop": {"failed": True, "msg": "UnauthorizedOperation\n  nope"}}, ": stopping it failed (UnauthorizedOperation nope)"),
        ({"stop": None, "started": False, "launched": False, "price": None}, "(it was running before this run;"),
    ],
)
def test_failure_report_of_an_instance_left_running(change, reason):
    got = filters.ec2_gpu_host_failure_report("It failed.", dict(INSTANCE, **change))
    assert " is still RUNNING and billing " in got and reason in got, got
    assert got.endswith("Stop it: `aws ec2 stop-instances --region us-east-2 --instance-ids i-1`."), got


def test_failure_report_of_a_host_that_is_no_instance():
    assert filters.ec2_gpu_host_failure_report("It failed.", {"id": ""}) == "It failed."


def test_a_generated_session_name_counts_as_its_role():
    """botocore names an assumed role's session botocore-session-<epoch>: a new ARN on every login."""
    principal = filters.ec2_gpu_host_caller_principal
    assert principal("arn:aws:sts::123456789012:assumed-role/Dev/botocore-session-1764583200") == (
        "arn:aws:sts::123456789012:assumed-role/Dev/*"
    )
    for kept in (
        "arn:aws:sts::123456789012:assumed-role/AWSReservedSSO_Admin_0123/alice@example.com",
        "arn:aws:sts::123456789012:assumed-role/Dev/alice",
        "arn:aws:iam::123456789012:user/bob",
    ):
        assert principal(kept) == kept


# --------------------------------------------------------------------------- resize and status
REQUESTED = "colab-gpu-runtime:requested-type"


@pytest.mark.parametrize(
    ("itype", "recorded", "types", "expected"),
    [
        ("g4dn.xlarge", "g4dn.xlarge", ["g4dn.xlarge", "g5.xlarge"], ""),  # unchanged
        ("g4dn.xlarge", "g4dn.xlarge", ["g5.xlarge", "g4dn.xlarge"], "g5.xlarge"),  # new first choice
        ("g6.xlarge", "g4dn.xlarge", ["g4dn.xlarge", "g5.xlarge", "g6.xlarge"], ""),  # launched as a fallback
        ("g6.xlarge", "g4dn.xlarge", ["g5.xlarge", "g6.xlarge"], "g5.xlarge"),  # fallback, then a new first choice
        ("g4dn.xlarge", None, ["g5.xlarge"], "g5.xlarge"),  # launched before the tag existed
        ("g4dn.xlarge", None, ["g4dn.xlarge"], ""),
        ("g4dn.xlarge", None, [], ""),
    ],
)
def test_resize_target(itype, recorded, types, expected):
    instance = {"instance_type": itype, "tags": {REQUESTED: recorded} if recorded else {}}
    assert filters.ec2_gpu_host_resize_target(instance, types, REQUESTED) == expected


IDLE_TEXT = """idle-stop on host, checked 2026-12-01 14:00:00 UTC
state:        idle for 12 min
in use by:    nothing
idle since:   2026-12-01 13:48:00 UTC (last: kernel)
planned stop: 2026-12-01 14:48:00 UTC (in 48 min) unless the host is used
"""


def _instance(name, state="running", itype="g4dn.xlarge", **extra):
    return {
        "instance_id": "i-" + name, "instance_type": itype, "state": {"name": state},
        "placement": {"availability_zone": "us-east-2a"}, "launch_time": "2026-12-01T12:00:00+00:00",
        "tags": {"Name": name}, "root_device_name": "/dev/sda1",
        "block_device_mappings": [
            {"device_name": "/dev/sda1", "ebs": {"volume_id": "vol-root"}},
            {"device_name": "/dev/sdf", "ebs": {"volume_id": "vol-data"}},
        ],
        **extra,
    }  # fmt: skip


def test_status_table_rows():
    now = filters._parse_time("2026-12-01T14:30:00+00:00")
    types = {"g4dn.xlarge": {"gpus": ["1x NVIDIA T4 16 GiB"]}, "g5.xlarge": {"gpus": ["1x NVIDIA A10G 24 GiB"],
             "spot_prices": {"us-east-2a": 0.4}}}  # fmt: skip
    view = filters.ec2_gpu_host_status_table(
        [_instance("colab-b", itype="g5.xlarge", instance_lifecycle="spot"), _instance("colab-a"),
         _instance("colab-c", state="stopped")],
        types, {"g4dn.xlarge": 0.526},
        {"colab-a": {"running": True, "healthy": True, "url": "http://localhost:8888/", "url_file": "/s/colab-a.url"}},
        {"colab-a": IDLE_TEXT, "colab-b": ""}, now, "alice", "us-east-2", "colab-gpu-runtime:market",
    )  # fmt: skip
    a, b, c = view["rows"]
    assert [r["name"] for r in view["rows"]] == ["colab-a", "colab-b", "colab-c"]
    assert (a["uptime"], a["price_per_hour"], a["spent_since_start"]) == ("2h30m", 0.526, pytest.approx(1.315))
    assert (a["idle"], a["auto_stop"], a["tunnel"]) == ("12 min", "in 48 min", "up http://localhost:8888/")
    assert a["data_volumes"] == ["vol-data (/dev/sdf)"] and a["gpu"] == "1x NVIDIA T4 16 GiB"
    assert (b["market"], b["price_per_hour"], b["idle"], b["tunnel"]) == ("spot", 0.4, "unknown", "down")
    assert (c["uptime"], c["spent_since_start"], c["idle"]) == ("-", None, "-")
    assert view["lines"][0] == "3 runtime(s) for alice in us-east-2, 2 running ($0.9260/h while they run)"
    assert view["lines"][1].split() == ["NAME", "STATE", "TYPE", "GPU", "ZONE", "UP", "$/H", "SPENT", "IDLE",
                                        "AUTO-STOP", "TUNNEL", "DATA", "VOLUME", "RUNTIME"]  # fmt: skip
    assert "colab-a: the URL with its token is in /s/colab-a.url" in view["lines"]


def test_status_table_without_runtimes():
    view = filters.ec2_gpu_host_status_table([], {}, {}, {}, {}, 0, "alice", "us-east-2", "m")
    assert view == {"rows": [], "lines": ["No runtimes for alice in us-east-2."]}


MARKET_TAG = "colab-gpu-runtime:market"


@pytest.mark.parametrize(
    "instance,market",
    [
        ({"instance_lifecycle": "spot", "tags": {}}, "spot"),
        ({"tags": {MARKET_TAG: "spot"}}, "spot"),
        ({"tags": {MARKET_TAG: "on-demand"}}, "on-demand"),
        ({"instance_type": "g4dn.xlarge"}, "on-demand"),
        (None, "on-demand"),
    ],
    ids=["lifecycle", "tag", "tag-on-demand", "neither", "none"],
)
def test_market_of_an_instance(instance, market):
    assert filters.ec2_gpu_host_market_of(instance, MARKET_TAG) == market


ARCH_TYPES = {"g4dn.xlarge": {"architectures": ["x86_64"]}, "g5g.xlarge": {"architectures": ["arm64"]}, "p9.x": {}}


def test_types_for_image_keep_their_order_and_the_image_architecture():
    types = ["g5g.xlarge", "p9.x", "g4dn.xlarge"]
    assert filters.ec2_gpu_host_types_for_image(types, ARCH_TYPES, {"architecture": "x86_64"}) == ["g4dn.xlarge"]
    assert filters.ec2_gpu_host_types_for_image(types, ARCH_TYPES, {"architecture": "arm64"}) == ["g5g.xlarge"]
    assert filters.ec2_gpu_host_types_for_image(types, ARCH_TYPES, {"architecture": "i386"}) == []
    assert filters.ec2_gpu_host_types_for_image(["unknown.type"], ARCH_TYPES, {"architecture": "x86_64"}) == []


@pytest.mark.parametrize(
    "image,size",
    [
        ({"root_device_name": "/dev/xvda", "block_device_mappings": [
            {"device_name": "/dev/sdb", "ebs": {"volume_size": 500}}, {"device_name": "/dev/xvda", "ebs": {"volume_size": "45"}}]}, 45),
        ({"block_device_mappings": [{"device_name": "/dev/sda1", "ebs": {"volume_size": 8}}]}, 8),
        ({"root_device_name": "/dev/xvda", "block_device_mappings": [{"device_name": "/dev/xvda"}]}, 0),
        ({"root_device_name": "/dev/xvda"}, 0),
    ],
    ids=["named-root", "default-root", "no-ebs", "no-mappings"],
)  # fmt: skip
def test_image_root_size(image, size):
    assert filters.ec2_gpu_host_image_root_size(image) == size


SG_TAGS = {"colab-gpu-runtime:project": "colab-gpu-runtime", "colab-gpu-runtime:owner": "alice", "Name": "sg"}


def described_group(**changes) -> dict:
    """One group as ec2_security_group_info describes it, as the module leaves it for alice at 203.0.113.7."""
    group = {
        "group_id": "sg-1", "group_name": "colab-gpu-runtime-alice", "description": "anything",
        "ip_permissions": [{"ip_protocol": "tcp", "from_port": 22, "to_port": 22,
                            "ip_ranges": [{"cidr_ip": "203.0.113.7/32", "description": "SSH from alice"}],
                            "ipv6_ranges": [], "prefix_list_ids": [], "user_id_group_pairs": []}],
        "ip_permissions_egress": [{"ip_protocol": "-1", "ip_ranges": [{"cidr_ip": "0.0.0.0/0"}]}],
        "tags": {**SG_TAGS, "aws:cloudformation:stack-name": "kept by AWS"},
    }  # fmt: skip
    group.update(changes)
    return group


def in_place(groups, cidr="203.0.113.7/32"):
    return filters.ec2_gpu_host_security_group_in_place(groups, cidr, "SSH from alice", SG_TAGS)


def test_security_group_in_place_when_rule_and_tags_match():
    assert in_place([described_group()]) == "sg-1"


def rule(**changes) -> list:
    return [{**described_group()["ip_permissions"][0], **changes}]


@pytest.mark.parametrize(
    "groups, cidr",
    [
        ([], "203.0.113.7/32"),  # no group yet: the module creates it
        ([described_group()], "198.51.100.7/32"),  # the caller's address moved
        ([described_group(ip_permissions=rule(ip_ranges=[{"cidr_ip": "203.0.113.7/32", "description": "old"}]))], "203.0.113.7/32"),
        ([described_group(ip_permissions=rule() + rule(from_port=80, to_port=80))], "203.0.113.7/32"),  # an extra rule
        ([described_group(ip_permissions=rule(ipv6_ranges=[{"cidr_ipv6": "::/0"}]))], "203.0.113.7/32"),
        ([described_group(ip_permissions=[])], "203.0.113.7/32"),  # the rule was removed
        ([described_group()], ""),  # SSM access: no inbound rule wanted
        ([described_group(tags={"colab-gpu-runtime:owner": "alice"})], "203.0.113.7/32"),  # tags missing
        ([described_group(tags={**SG_TAGS, "extra": "x"})], "203.0.113.7/32"),  # a tag the module would purge
        ([described_group(), described_group(group_id="sg-2")], "203.0.113.7/32"),
    ],
)
def test_security_group_not_in_place_runs_the_module(groups, cidr):
    assert in_place(groups, cidr) == ""


def test_security_group_in_place_without_rule_for_ssm_access():
    assert in_place([described_group(ip_permissions=[])], "") == "sg-1"


def test_status_table_names_each_runtime():
    view = filters.ec2_gpu_host_status_table(
        [_instance("colab-a"), _instance("colab-a-big", tags={"Name": "colab-a-big", "colab-gpu-runtime:runtime": "big"})],
        {}, {}, {}, {}, 0, "alice", "us-east-2", "colab-gpu-runtime:market", "colab-gpu-runtime:runtime",
    )  # fmt: skip
    assert [(r["name"], r["runtime"]) for r in view["rows"]] == [("colab-a", ""), ("colab-a-big", "big")]
    assert [line.split()[-1] for line in view["lines"][1:4]] == ["RUNTIME", "-", "big"]
