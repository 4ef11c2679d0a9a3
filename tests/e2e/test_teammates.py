"""Teammates never touch each other's runtimes (roles/ec2_gpu_host against moto).

Two AWS identities share one owner name: "bob" is an IAM user of the emulated account with
his own access key (moto answers GetCallerIdentity with that user's ARN), "you" are moto's
default identity. Bob provisions; nothing you run may change what he created.
"""

from __future__ import annotations

import pytest
import yaml

from colab_testkit.provisioning import (
    CREATOR_TAG,
    DLAMI_PARAMETER,
    NAME,
    OWNER,
    REGION,
    SPOT,
    SSH_CIDR,
    YOU,
    ansible_env,
    ec2,
    instances,
    leftovers,
    output,
    provision,
    run_playbook,
)
from colab_testkit.substrate import ROOT, flat, seed_emulated_account, tags

pytestmark = pytest.mark.timeout(900)

BOB = "arn:aws:iam::123456789012:user/bob"
YOUR_CIDR = "198.51.100.99/32"


def teardown(env: dict, **variables):
    return run_playbook(ROOT / "playbooks" / "teardown.yml", env, {"ec2_gpu_host_region": REGION, **variables})


def refused_for_creator(proc, *resources: str) -> str:
    text = flat(proc)
    assert proc.returncode != 0, output(proc)[-4000:]
    assert f"{', '.join(resources)} (runtime {NAME}, owner {OWNER})" in text, output(proc)[-4000:]
    assert f"created by {BOB}, not by you ({YOU}): most likely a teammate" in text, output(proc)[-4000:]
    assert "export COLAB_OWNER=<your name>" in text and "-e ec2_gpu_host_ignore_creator_arn=true" in text
    assert text.count("fatal: [localhost]") == 1, output(proc)[-4000:]
    return text


@pytest.fixture(scope="module")
def bobs_runtime(moto_server, tmp_path_factory):
    """Bob's spot runtime, provisioned with his own credentials under the shared owner name."""
    moto_server.reset()
    tmp = tmp_path_factory.mktemp("teammates")
    for person in ("bob", "you"):
        (tmp / person).mkdir()
    seed_emulated_account(moto_server.url, REGION, DLAMI_PARAMETER)
    iam = moto_server.client("iam", REGION)
    iam.create_user(UserName="bob")
    key = iam.create_access_key(UserName="bob")["AccessKey"]
    bob_env = ansible_env(moto_server)
    bob_env.update({"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]})
    proc, facts = provision(moto_server, tmp / "bob", env=bob_env, **SPOT)
    assert proc.returncode == 0, output(proc)[-6000:]
    yield {"server": moto_server, "tmp": tmp, "client": ec2(moto_server), "instance_id": facts["facts"]["instance_id"]}
    moto_server.reset()


def snapshot(client) -> dict:
    """What you could damage: states, SSH rules, key material and tags of Bob's resources."""
    group = client.describe_security_groups(GroupNames=[NAME])["SecurityGroups"][0]
    key = client.describe_key_pairs(KeyNames=[NAME], IncludePublicKey=True)["KeyPairs"][0]
    return {
        "instances": {i["InstanceId"]: (i["State"]["Name"], tags(i)) for i in instances(client)},
        "rules": group["IpPermissions"],
        "group_id": group["GroupId"],
        "group_tags": tags(group),
        "key": (key["PublicKey"], tags(key)),
        "leftovers": leftovers(client),
    }


class TestTeammates:
    def test_what_bob_creates_records_his_arn(self, bobs_runtime):
        client, instance_id = bobs_runtime["client"], bobs_runtime["instance_id"]
        [inst] = instances(client)
        assert inst["InstanceId"] == instance_id
        assert tags(inst)[CREATOR_TAG] == BOB
        volumes = client.describe_volumes(VolumeIds=[m["Ebs"]["VolumeId"] for m in inst["BlockDeviceMappings"]])
        assert [tags(v).get(CREATOR_TAG) for v in volumes["Volumes"]] == [BOB]
        [group] = client.describe_security_groups(GroupNames=[NAME])["SecurityGroups"]
        assert tags(group)[CREATOR_TAG] == BOB
        [key] = client.describe_key_pairs(KeyNames=[NAME])["KeyPairs"]
        assert tags(key)[CREATOR_TAG] == BOB
        [template] = client.describe_launch_templates()["LaunchTemplates"]
        assert tags(template)[CREATOR_TAG] == BOB

    def test_your_run_does_not_move_bobs_ssh_rule(self, bobs_runtime):
        """His instance runs, so your run takes the short path; it stops before the SG update."""
        client = bobs_runtime["client"]
        before = snapshot(client)
        key_dir = bobs_runtime["tmp"] / "you"
        proc, _ = provision(bobs_runtime["server"], key_dir, ec2_gpu_host_ssh_cidr=YOUR_CIDR, **SPOT)
        text = refused_for_creator(proc, f"Instance {bobs_runtime['instance_id']}")
        assert "Use the inventory's description of the running instance" in text
        assert snapshot(client) == before
        assert [c["CidrIp"] for r in before["rules"] for c in r["IpRanges"]] == [SSH_CIDR]

    def test_your_teardown_does_not_stop_or_terminate_bobs_instance(self, bobs_runtime):
        client, server = bobs_runtime["client"], bobs_runtime["server"]
        before = snapshot(client)
        proc = teardown(ansible_env(server))
        refused_for_creator(proc, f"Instance {bobs_runtime['instance_id']}")
        proc = teardown(ansible_env(server), ec2_gpu_host_terminate=bobs_runtime["instance_id"])
        refused_for_creator(
            proc, f"Instance {bobs_runtime['instance_id']}", f"Security group {before['group_id']}", f"Key pair {NAME}",
            f"Launch template {NAME}-spot",
        )  # fmt: skip
        assert snapshot(client) == before

    def test_your_launch_path_does_not_touch_bobs_group_or_key(self, bobs_runtime):
        """Bob's instance is stopped: your run goes the launch way and meets his key pair and group first."""
        client = bobs_runtime["client"]
        client.stop_instances(InstanceIds=[bobs_runtime["instance_id"]])
        before = snapshot(client)
        proc, _ = provision(bobs_runtime["server"], bobs_runtime["tmp"] / "you", ec2_gpu_host_ssh_cidr=YOUR_CIDR, **SPOT)
        refused_for_creator(proc, f"Security group {NAME}", f"Key pair {NAME}", f"Launch template {NAME}-spot")
        assert snapshot(client) == before
        assert not (bobs_runtime["tmp"] / "you" / "keys").exists(), "no key generated for a refused run"

    def test_override_acts_and_keeps_the_recorded_creator(self, bobs_runtime):
        """The explicit override is the one way through; terminating then removes Bob's runtime."""
        client, server = bobs_runtime["client"], bobs_runtime["server"]
        proc = teardown(
            ansible_env(server),
            ec2_gpu_host_terminate=bobs_runtime["instance_id"], ec2_gpu_host_ignore_creator_arn=True,
        )  # fmt: skip
        assert proc.returncode == 0, output(proc)[-6000:]
        assert instances(client) == []
        assert leftovers(client) == {"instances": [], "security_groups": [], "key_pairs": [], "launch_templates": []}


GENERIC = ["root", "ubuntu", "admin", "ec2-user", "vscode", "codespace", "runner", "user", "jovyan", "gitpod"]


def test_generic_owner_names_are_all_refused():
    generic = yaml.safe_load((ROOT / "roles" / "ec2_gpu_host" / "vars" / "main.yml").read_text())["ec2_gpu_host_generic_owners"]
    assert [name for name in GENERIC if name not in generic] == []


def test_generic_owner_is_refused_before_anything_is_created(moto, tmp_path):
    env = ansible_env(moto)
    env.update({"COLAB_OWNER": "", "USER": "vscode"})
    # The default owner is the login name: $USER=vscode, as in a dev container.
    proc, _ = provision(moto, tmp_path, env=env)
    text = flat(proc)
    assert proc.returncode != 0
    assert "ec2_gpu_host_owner is 'vscode' (from COLAB_OWNER, else your login name), a name many people have" in text, text[-4000:]
    assert "Fix: export COLAB_OWNER=<your name>" in text and "ec2_gpu_host_owner: <your name>" in text
    assert text.count("fatal: [localhost]") == 1, text[-4000:]
    assert leftovers(ec2(moto)) == {"instances": [], "security_groups": [], "key_pairs": [], "launch_templates": []}
    assert not (tmp_path / "keys").exists()

