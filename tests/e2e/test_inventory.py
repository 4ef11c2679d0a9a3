"""inventory/aws_ec2.yml against moto: which instances become hosts of colab_gpu_hosts, and how.

Each test copies the inventory file into a temporary project directory (with its own
inventory/group_vars/all.yml where the test needs one) and runs ansible-inventory there, as a
user does from the repository root.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from colab_testkit.substrate import ROOT, VENV_BIN, tool

REGION = "us-east-2"
PROJECT = {"colab-gpu-runtime:project": "colab-gpu-runtime"}

pytestmark = pytest.mark.timeout(300)


def ec2(server, region: str = REGION):
    return server.client("ec2", region)


def launch(client, name: str, tags: dict, state: str = "running") -> dict:
    image = client.describe_images(Owners=["099720109477"])["Images"][0]["ImageId"]
    tag_list = [{"Key": "Name", "Value": name}] + [{"Key": k, "Value": v} for k, v in tags.items()]
    inst = client.run_instances(
        ImageId=image, MinCount=1, MaxCount=1, InstanceType="g4dn.xlarge",
        TagSpecifications=[{"ResourceType": "instance", "Tags": tag_list}],
    )["Instances"][0]  # fmt: skip
    if state == "stopped":
        client.stop_instances(InstanceIds=[inst["InstanceId"]])
    return client.describe_instances(InstanceIds=[inst["InstanceId"]])["Reservations"][0]["Instances"][0]


def project_dir(tmp: Path, config: str | None, team: str | None = None) -> Path:
    """A directory laid out like the repository: ansible.cfg, inventory/aws_ec2.yml (+ group_vars/all.yml,
    team.yml). The inventory reads its files from the directory of the ansible.cfg in use."""
    inv = tmp / "inventory"
    inv.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "ansible.cfg", tmp / "ansible.cfg")
    shutil.copy(ROOT / "inventory" / "aws_ec2.yml", inv / "aws_ec2.yml")
    if config is not None:
        (inv / "group_vars").mkdir(exist_ok=True)
        (inv / "group_vars" / "all.yml").write_text(config)
    if team is not None:
        (inv / "team.yml").write_text(team)
    return tmp


def inventory(server, cwd: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    run_env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    run_env.update(server.aws_env(REGION))
    run_env.update(
        {
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": "/nonexistent/aws-config",
            "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
            "PATH": f"{VENV_BIN}:{run_env.get('PATH', '')}",
            "ANSIBLE_CONFIG": str(cwd / "ansible.cfg"),
            "ANSIBLE_NOCOLOR": "1",
        }
    )
    run_env.update(env or {})
    proc = subprocess.run(
        [tool("ansible-inventory"), "-i", "inventory/aws_ec2.yml", *args],
        cwd=cwd, env=run_env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def plain(value):
    """ansible-inventory marks values from the plugin as unsafe: {"__ansible_unsafe": "..."}."""
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def listing(proc) -> dict:
    data = plain(json.loads(proc.stdout))
    return {
        "group": sorted(data.get("colab_gpu_hosts", {}).get("hosts", [])),
        "hostvars": data.get("_meta", {}).get("hostvars", {}),
    }


@pytest.fixture
def fleet(moto):
    """Instances of several owners, states and regions; only alice's running ones are hers."""
    client = ec2(moto)
    return {
        "alice": launch(client, "colab-gpu-runtime-alice", {**PROJECT, "colab-gpu-runtime:owner": "alice",
                                                             "colab-gpu-runtime:ssh-user": "ubuntu"}),
        "alice_ssm": launch(client, "colab-gpu-runtime-alice-ssm", {**PROJECT, "colab-gpu-runtime:owner": "alice",
                                                                     "colab-gpu-runtime:ssh-user": "ec2-user",
                                                                     "colab-gpu-runtime:access": "ssm"}),
        "alice_stopped": launch(client, "colab-gpu-runtime-alice-old", {**PROJECT, "colab-gpu-runtime:owner": "alice"},
                                state="stopped"),
        "bob": launch(client, "colab-gpu-runtime-bob", {**PROJECT, "colab-gpu-runtime:owner": "bob"}),
        # Same name as alice's, but not created by the project.
        "impostor": launch(client, "colab-gpu-runtime-alice", {"colab-gpu-runtime:owner": "alice"}),
        # Alice's, but in a region her config does not name: never scanned.
        "elsewhere": launch(ec2(moto, "us-west-2"), "colab-gpu-runtime-alice-west",
                            {**PROJECT, "colab-gpu-runtime:owner": "alice"}),
    }  # fmt: skip


def test_graph_shows_the_owners_running_hosts_in_colab_gpu_hosts(moto, fleet, tmp_path):
    cwd = project_dir(tmp_path, f"ec2_gpu_host_region: {REGION}\nec2_gpu_host_owner: alice\n")
    graph = inventory(moto, cwd, "--graph", "colab_gpu_hosts").stdout.splitlines()
    assert graph[0] == "@colab_gpu_hosts:"
    assert sorted(graph[1:]) == ["  |--colab-gpu-runtime-alice", "  |--colab-gpu-runtime-alice-ssm"], graph


def test_host_variables_come_from_the_instance_tags(moto, fleet, tmp_path):
    cwd = project_dir(tmp_path, f"ec2_gpu_host_region: {REGION}\nec2_gpu_host_owner: alice\n")
    found = listing(inventory(moto, cwd, "--list"))
    assert found["group"] == ["colab-gpu-runtime-alice", "colab-gpu-runtime-alice-ssm"]

    alice = found["hostvars"]["colab-gpu-runtime-alice"]
    assert alice["ansible_host"] == fleet["alice"]["PublicIpAddress"]
    assert alice["ansible_user"] == "ubuntu"
    assert alice["ansible_python_interpreter"] == "/usr/bin/python3"  # no discovery round trip
    # Known-hosts entries follow the instance, not its changing public IP.
    assert alice["ansible_ssh_extra_args"] == (
        f"-o HostKeyAlias={fleet['alice']['InstanceId']} -o StrictHostKeyChecking=accept-new"
    )
    assert alice["ec2_gpu_host_instance_id"] == fleet["alice"]["InstanceId"]
    assert alice["ec2_gpu_host_region_used"] == REGION
    assert "tags" not in alice and alice["aws_tags"]["colab-gpu-runtime:owner"] == "alice"

    ssm = found["hostvars"]["colab-gpu-runtime-alice-ssm"]
    assert ssm["ansible_host"] == fleet["alice_ssm"]["InstanceId"]
    assert ssm["ansible_user"] == "ec2-user"
    assert ssm["ansible_ssh_extra_args"] == (
        f"-o HostKeyAlias={fleet['alice_ssm']['InstanceId']} -o StrictHostKeyChecking=accept-new"
        ' -o ProxyCommand="aws ssm start-session --target %h --document-name AWS-StartSSHSession'
        f' --parameters portNumber=%p --region {REGION}"'
    )


def test_a_team_file_adds_its_owners(moto, fleet, tmp_path):
    team = "colab_runtimes:\n  hosts:\n    bob: {ec2_gpu_host_owner: bob}\n    mine-too:\n"
    cwd = project_dir(tmp_path, f"ec2_gpu_host_region: {REGION}\nec2_gpu_host_owner: alice\n", team)
    found = listing(inventory(moto, cwd, "--list"))
    assert found["group"] == ["colab-gpu-runtime-alice", "colab-gpu-runtime-alice-ssm", "colab-gpu-runtime-bob"]
    assert found["hostvars"]["colab-gpu-runtime-bob"]["ec2_gpu_host_instance_owner"] == "bob"


def test_plain_config_values_win_over_the_environment(moto, fleet, tmp_path):
    cwd = project_dir(tmp_path, f"ec2_gpu_host_region: {REGION}\nec2_gpu_host_owner: bob\n")
    found = listing(inventory(moto, cwd, "--list", env={"COLAB_OWNER": "alice", "AWS_REGION": "us-west-2"}))
    assert found["group"] == ["colab-gpu-runtime-bob"]


def test_templated_or_missing_config_falls_back_to_the_environment(moto, fleet, tmp_path):
    # The config's default is an expression; the inventory resolves the same variables itself.
    templated = (
        "ec2_gpu_host_region: \"{{ lookup('ansible.builtin.env', 'AWS_REGION') }}\"\n"
        "ec2_gpu_host_owner: \"{{ lookup('ansible.builtin.env', 'COLAB_OWNER') }}\"\n"
    )
    cwd = project_dir(tmp_path / "templated", templated)
    found = listing(inventory(moto, cwd, "--list", env={"COLAB_OWNER": "bob"}))
    assert found["group"] == ["colab-gpu-runtime-bob"]

    cwd = project_dir(tmp_path / "none", None)
    found = listing(inventory(moto, cwd, "--list", env={"COLAB_OWNER": "", "USER": "alice", "AWS_REGION": "us-west-2"}))
    assert found["group"] == ["colab-gpu-runtime-alice-west"]
