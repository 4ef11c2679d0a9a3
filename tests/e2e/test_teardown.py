"""Teardown is deliberate (playbooks/teardown.yml against moto).

It acts on this runtime's instance only, terminates only when the command names the instance
(or says "yes"), says what it deletes, cancels the spot request, forgets the host key and can
keep a final image of the disk. A spot instance AWS stopped is explained, and the commands the
explanation offers do continue on-demand with the same disk.
"""

from __future__ import annotations

import json

import pytest

from colab_testkit.provisioning import (
    CREATOR_TAG,
    DLAMI_PARAMETER,
    HOOKS,
    NAME,
    OURS,
    OWNER,
    OWNER_TAG,
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
    teardown,
)
from colab_testkit.substrate import flat, seed_emulated_account, tags

pytestmark = pytest.mark.timeout(900)



def tag_list(values: dict) -> list[dict]:
    return [{"Key": k, "Value": v} for k, v in values.items()]


def state(client, instance_id: str) -> str:
    found = client.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    return found["State"]["Name"]


# --------------------------------------------------------------------------- confirmation
@pytest.fixture(scope="class")
def runtime(moto_server, tmp_path_factory):
    """This runtime as provisioning leaves it (persistent spot instance, group, key pair,
    launch template), built directly, and another runtime of the same owner."""
    moto_server.reset()
    tmp = tmp_path_factory.mktemp("teardown")
    client = ec2(moto_server)
    image = client.describe_images(Owners=["099720109477"])["Images"][0]["ImageId"]
    vpc = client.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    group = client.create_security_group(
        GroupName=NAME, Description="ours", VpcId=vpc,
        TagSpecifications=[{"ResourceType": "security-group", "Tags": tag_list(OURS)}],
    )["GroupId"]  # fmt: skip
    client.create_key_pair(KeyName=NAME, KeyType="ed25519", TagSpecifications=[{"ResourceType": "key-pair", "Tags": tag_list(OURS)}])
    client.create_launch_template(
        LaunchTemplateName=f"{NAME}-spot", LaunchTemplateData={"InstanceMarketOptions": {"MarketType": "spot"}},
        TagSpecifications=[{"ResourceType": "launch-template", "Tags": tag_list(OURS)}],
    )  # fmt: skip
    request = client.request_spot_instances(
        InstanceCount=1, Type="persistent",
        LaunchSpecification={"ImageId": image, "InstanceType": "g4dn.xlarge", "KeyName": NAME, "SecurityGroupIds": [group]},
    )["SpotInstanceRequests"][0]["SpotInstanceRequestId"]  # fmt: skip
    instance_id = client.describe_spot_instance_requests(SpotInstanceRequestIds=[request])["SpotInstanceRequests"][0]["InstanceId"]
    client.create_tags(Resources=[instance_id], Tags=tag_list({"Name": NAME, **OURS}))
    other = client.run_instances(
        ImageId=image, MinCount=1, MaxCount=1, InstanceType="g4dn.xlarge",
        TagSpecifications=[{"ResourceType": "instance", "Tags": tag_list({"Name": f"{NAME}-2", **OURS})}],
    )["Instances"][0]["InstanceId"]  # fmt: skip
    [inst] = client.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"]
    assert inst.get("InstanceLifecycle") == "spot"
    yield {
        "server": moto_server, "tmp": tmp, "client": client, "instance_id": instance_id, "other": other,
        "group": group, "request": request, "volume": inst["BlockDeviceMappings"][0]["Ebs"]["VolumeId"],
    }  # fmt: skip
    moto_server.reset()


class TestTerminate:
    def test_stop_acts_on_this_runtime_only(self, runtime):
        client = runtime["client"]
        proc = teardown(runtime["server"])
        assert proc.returncode == 0, output(proc)[-6000:]
        assert state(client, runtime["instance_id"]) == "stopped"
        assert state(client, runtime["other"]) == "running", "another runtime of the same owner is not this one"
        assert (
            f"The disk is kept (about $0.08 per GB-month); to delete everything: ansible-playbook playbooks/teardown.yml "
            f"-e ec2_gpu_host_terminate={runtime['instance_id']}" in flat(proc)
        )

    @pytest.mark.parametrize("value", ["true", "i-0123456789abcdef0"])
    def test_terminate_without_this_instance_id_is_refused(self, runtime, value):
        client = runtime["client"]
        before = leftovers(client)
        proc = teardown(runtime["server"], ec2_gpu_host_terminate=value)
        text = flat(proc)
        assert proc.returncode != 0
        assert (
            f"ec2_gpu_host_terminate={value} is not a confirmation. Terminating runtime {NAME} in {REGION} deletes: "
            f"instance {runtime['instance_id']}; volumes {runtime['volume']}; security group {NAME} {runtime['group']}; "
            f"key pair {NAME}; launch template {NAME}-spot. To go ahead, name the instance in the command: "
            f"ansible-playbook playbooks/teardown.yml -e ec2_gpu_host_terminate={runtime['instance_id']} "
            "(add -e ec2_gpu_host_final_snapshot=true to keep an image of the disk first). Nothing was changed."
        ) in text, output(proc)[-4000:]
        assert text.count("fatal: [localhost]") == 1
        assert leftovers(client) == before
        assert state(client, runtime["instance_id"]) == "stopped"

    def test_terminate_deletes_this_runtime_and_forgets_its_host_key(self, runtime):
        client, tmp = runtime["client"], runtime["tmp"]
        known_hosts = tmp / "known_hosts"
        key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
        known_hosts.write_text(f"{runtime['instance_id']} {key}\n{NAME} {key}\n{runtime['other']} {key}\n")
        proc = teardown(
            runtime["server"], ec2_gpu_host_terminate=runtime["instance_id"], ec2_gpu_host_known_hosts_file=str(known_hosts)
        )
        assert proc.returncode == 0, output(proc)[-6000:]
        assert state(client, runtime["instance_id"]) == "terminated"
        assert state(client, runtime["other"]) == "running"
        live = [
            r["SpotInstanceRequestId"]
            for r in client.describe_spot_instance_requests()["SpotInstanceRequests"]
            if r["State"] in ("open", "active", "disabled")
        ]
        assert live == [], "a live persistent request would launch a replacement"
        left = leftovers(client)
        assert (left["instances"], left["security_groups"], left["key_pairs"], left["launch_templates"]) == (
            [runtime["other"]], [], [], []
        )
        assert known_hosts.read_text() == f"{runtime['other']} {key}\n"
        assert (
            f"Terminated runtime {NAME} in {REGION} and deleted: instance {runtime['instance_id']}; volumes {runtime['volume']}; "
            f"security group {NAME} {runtime['group']}; key pair {NAME}; launch template {NAME}-spot."
        ) in flat(proc)


# --------------------------------------------------------------------------- interrupted spot
def interrupted_env(server, instance_id: str) -> dict:
    """AWS stopped the instance (spot interruption), as DescribeInstances shows it."""
    env = ansible_env(server)
    env["PYTHONPATH"] = str(HOOKS)
    env["COLAB_TEST_EC2_SPOT_INTERRUPTED"] = json.dumps([instance_id])
    return env


@pytest.fixture(scope="class")
def interrupted(moto_server, tmp_path_factory, ssh_key):
    moto_server.reset()
    tmp = tmp_path_factory.mktemp("interrupted")
    seed_emulated_account(moto_server.url, REGION, DLAMI_PARAMETER)
    proc, facts = provision(moto_server, tmp, ec2_gpu_host_ssh_private_key_file=str(ssh_key), **SPOT)
    assert proc.returncode == 0, output(proc)[-6000:]
    client = ec2(moto_server)
    client.stop_instances(InstanceIds=[facts["facts"]["instance_id"]])
    yield {"server": moto_server, "tmp": tmp, "client": client, "instance_id": facts["facts"]["instance_id"], "key": ssh_key}
    moto_server.reset()


class TestInterruptedSpot:
    state: dict = {}

    def test_stopped_spot_instance_is_explained_not_started(self, interrupted):
        client, instance_id = interrupted["client"], interrupted["instance_id"]
        proc, _ = provision(
            interrupted["server"], interrupted["tmp"], env=interrupted_env(interrupted["server"], instance_id),
            ec2_gpu_host_ssh_private_key_file=str(interrupted["key"]), **SPOT,
        )  # fmt: skip
        text = flat(proc)
        assert proc.returncode != 0
        assert (
            f"Instance {instance_id} is a spot instance that AWS stopped (Server.SpotInstanceShutdown: Spot instance shutdown"
        ) in text, output(proc)[-4000:]
        assert "only AWS can start it again, when capacity returns at your price; nothing was changed." in text
        assert (
            f"ansible-playbook playbooks/teardown.yml -e ec2_gpu_host_terminate={instance_id} -e ec2_gpu_host_final_snapshot=true"
            " && ansible-playbook site.yml -e ec2_gpu_host_spot=false -e ec2_gpu_host_ami_id=<the image id it prints>"
            " -e ec2_gpu_host_ssh_user=ubuntu"
        ) in text
        assert text.count("fatal: [localhost]") == 1, output(proc)[-4000:]
        assert "TASK [ec2_gpu_host : Start the stopped instance]" not in text
        assert state(client, instance_id) == "stopped"
        assert len(instances(client)) == 1

    def test_offered_commands_continue_on_demand_with_the_same_disk(self, interrupted):
        client, server, tmp, instance_id = (interrupted[k] for k in ("client", "server", "tmp", "instance_id"))
        proc = teardown(
            server, interrupted_env(server, instance_id),
            ec2_gpu_host_terminate=instance_id, ec2_gpu_host_final_snapshot=True,
        )  # fmt: skip
        assert proc.returncode == 0, output(proc)[-6000:]
        assert state(client, instance_id) == "terminated"
        [image] = client.describe_images(Owners=["self"])["Images"]
        assert image["Name"] == f"{NAME}-final-{instance_id}"
        assert {k: tags(image)[k] for k in OURS} == OURS
        snapshots = [m["Ebs"]["SnapshotId"] for m in image["BlockDeviceMappings"] if m.get("Ebs", {}).get("SnapshotId")]
        assert snapshots
        for snapshot in client.describe_snapshots(SnapshotIds=snapshots)["Snapshots"]:
            assert tags(snapshot)[CREATOR_TAG] == YOU and tags(snapshot)[OWNER_TAG] == OWNER
        text = flat(proc)
        assert f"Final image {image['ImageId']} (snapshots {', '.join(snapshots)}," in text, output(proc)[-4000:]
        assert (
            f"launch a new runtime from it with ansible-playbook site.yml -e ec2_gpu_host_ami_id={image['ImageId']}"
            " -e ec2_gpu_host_ssh_user=ubuntu"
        ) in text
        assert f"aws ec2 deregister-image --region {REGION} --image-id {image['ImageId']}" in text

        # The second command, run through the provisioning it names (site.yml = provision + configure).
        proc, facts = provision(
            server, tmp, ec2_gpu_host_spot=False, ec2_gpu_host_ami_id=image["ImageId"], ec2_gpu_host_ssh_user="ubuntu",
            ec2_gpu_host_ssh_private_key_file=str(interrupted["key"]), ec2_gpu_host_ssh_cidr=SSH_CIDR,
        )  # fmt: skip
        assert proc.returncode == 0, output(proc)[-6000:]
        [replacement] = instances(client)
        assert replacement["InstanceId"] == facts["facts"]["instance_id"] != instance_id
        assert replacement["ImageId"] == image["ImageId"]
        assert tags(replacement)["colab-gpu-runtime:market"] == "on-demand"
