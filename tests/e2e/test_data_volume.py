"""The data volume that outlives the instance (ec2_gpu_host_data_volume_size) against moto.

Created encrypted and tagged in the instance's zone and attached; recorded on the instance for
the inventory (the host's mount task reads it as colab_runtime_data_volume); kept when the
instance is terminated and attached to the runtime's next instance, which is launched in the
volume's zone; an existing instance in another zone is refused with the fix.
"""

from __future__ import annotations

import base64
import json
import os
import re

import pytest

from colab_testkit.provisioning import DLAMI_PARAMETER, NAME, OURS, OWNER, REGION, ansible_env, base_vars, ec2, instances, output, run_playbook
from colab_testkit.provisioning import teardown as teardown_playbook
from colab_testkit.substrate import ROOT, flat, play_recap, seed_emulated_account, tags

pytestmark = pytest.mark.timeout(900)

DATA_NAME = f"{NAME}-data"
DATA_TAG = "colab-gpu-runtime:data-volume"

WRAPPER = """\
- name: Provision
  ansible.builtin.import_playbook: {provision}

- name: Report what the configure play would mount
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Print the summary and the host's data volume setting
      ansible.builtin.debug:
        msg: >-
          COLAB_DATA={{{{ {{'summary': ec2_gpu_host_summary, 'instance_id': ec2_gpu_host_instance_id,
              'mount': dict(groups['colab_gpu_hosts'] | default([]) | zip(groups['colab_gpu_hosts'] | default([])
                            | map('extract', hostvars) | map(attribute='colab_runtime_data_volume')))}} | to_json | b64encode }}}}
"""


def hooked_env(server) -> dict:
    """moto with the test double's corrections of DescribeVolumes (tests/aws_hooks), no faults."""
    return ansible_env(server, faults=[])


def teardown(server, **variables):
    return teardown_playbook(server, hooked_env(server), **variables)


def provision(server, tmp, **overrides):
    wrapper = tmp / f"provision-{os.urandom(4).hex()}.yml"
    wrapper.write_text(WRAPPER.format(provision=ROOT / "playbooks" / "provision.yml"))
    proc = run_playbook(wrapper, hooked_env(server), base_vars(tmp, **overrides))
    found = re.search(r"COLAB_DATA=([A-Za-z0-9+/=]+)", proc.stdout)
    return proc, json.loads(base64.b64decode(found.group(1))) if found else None


def data_volumes(client) -> list[dict]:
    return client.describe_volumes(Filters=[{"Name": "tag:Name", "Values": [DATA_NAME]}])["Volumes"]


def instance(client, instance_id: str) -> dict:
    return client.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]


@pytest.fixture(scope="class")
def world(moto_server, tmp_path_factory, ssh_key):
    moto_server.reset()
    seed_emulated_account(moto_server.url, REGION, DLAMI_PARAMETER)
    yield {"server": moto_server, "tmp": tmp_path_factory.mktemp("datavol"), "client": ec2(moto_server), "key": str(ssh_key)}
    moto_server.reset()


class TestDataVolumeLifecycle:
    state: dict = {}

    def run(self, world, **overrides):
        overrides.setdefault("ec2_gpu_host_data_volume_size", 20)
        return provision(world["server"], world["tmp"], ec2_gpu_host_ssh_private_key_file=world["key"], **overrides)

    def test_first_run_creates_an_encrypted_tagged_volume_in_the_instance_zone(self, world):
        client = world["client"]
        proc, got = self.run(world)
        assert proc.returncode == 0, output(proc)[-6000:]
        [volume] = data_volumes(client)
        inst = instance(client, got["instance_id"])
        assert (volume["Encrypted"], volume["VolumeType"], volume["Size"]) == (True, "gp3", 20)
        assert volume["AvailabilityZone"] == inst["Placement"]["AvailabilityZone"]
        assert {k: tags(volume)[k] for k in OURS} == OURS and tags(volume)["Name"] == DATA_NAME
        assert [(a["InstanceId"], a["Device"], a["State"]) for a in volume["Attachments"]] == [(got["instance_id"], "/dev/sdf", "attached")]
        [mapping] = [m for m in inst["BlockDeviceMappings"] if m["DeviceName"] == "/dev/sdf"]
        assert mapping["Ebs"]["DeleteOnTermination"] is False
        assert tags(inst)[DATA_TAG] == volume["VolumeId"]
        # The inventory hands the volume to the host's mount task.
        assert got["mount"] == {NAME: volume["VolumeId"]}
        assert f"data volume {volume['VolumeId']} (20 GiB gp3, encrypted, created;" in " ".join(got["summary"].split())
        assert "about $1.60/month" in got["summary"]
        self.state.update(volume=volume["VolumeId"], instance=got["instance_id"], zone=volume["AvailabilityZone"])

    def test_second_run_changes_nothing(self, world):
        proc, got = self.run(world)
        assert proc.returncode == 0, output(proc)[-6000:]
        assert play_recap(proc.stdout)["localhost"]["changed"] == 0, proc.stdout[-6000:]
        assert [v["VolumeId"] for v in data_volumes(world["client"])] == [self.state["volume"]]

    def test_terminate_keeps_the_volume_and_says_what_it_costs(self, world):
        client = world["client"]
        images = world["tmp"] / "create-image.jsonl"
        env = {**hooked_env(world["server"]), "COLAB_TEST_EC2_IMAGE_LOG": str(images)}
        proc = teardown_playbook(world["server"], env, ec2_gpu_host_terminate=self.state["instance"], ec2_gpu_host_final_snapshot=True)
        assert proc.returncode == 0, output(proc)[-6000:]
        # The final image leaves the kept volume out (an instance launched from it attaches the
        # volume itself at /dev/sdf). moto ignores NoDevice: the request is the evidence.
        [request] = [json.loads(line) for line in images.read_text().splitlines()]
        assert request == {"instance": self.state["instance"], "mappings": [{"DeviceName": "/dev/sdf", "Ebs": {}, "NoDevice": ""}]}, request
        assert "Final image ami-" in flat(proc), output(proc)[-4000:]
        assert instance(client, self.state["instance"])["State"]["Name"] == "terminated"
        [volume] = data_volumes(client)
        assert (volume["VolumeId"], volume["State"]) == (self.state["volume"], "available")
        text = flat(proc)
        assert (
            f"Kept data volume {volume['VolumeId']} (20 GiB in {self.state['zone']}, about $1.60 per month while it exists): "
            "the next instance of this runtime attaches it"
        ) in text, output(proc)[-4000:]
        assert f"data volume {volume['VolumeId']}" not in text.split("and deleted:")[1].split(".")[0]

    def test_next_instance_attaches_the_same_volume(self, world):
        client = world["client"]
        proc, got = self.run(world, ec2_gpu_host_data_volume_size=50, ec2_gpu_host_instance_types=["g5.xlarge"])
        assert proc.returncode == 0, output(proc)[-6000:]
        assert got["instance_id"] != self.state["instance"]
        [volume] = data_volumes(client)
        assert volume["VolumeId"] == self.state["volume"] and volume["Size"] == 20, "the same volume, its size kept"
        assert [a["InstanceId"] for a in volume["Attachments"]] == [got["instance_id"]]
        assert instance(client, got["instance_id"])["InstanceType"] == "g5.xlarge"
        assert got["mount"] == {NAME: volume["VolumeId"]}
        assert f"data volume {volume['VolumeId']} (20 GiB gp3, encrypted, attached;" in " ".join(got["summary"].split())
        self.state["instance"] = got["instance_id"]

    def test_terminate_with_delete_data_volume_deletes_it(self, world):
        proc = teardown(world["server"], ec2_gpu_host_terminate=self.state["instance"], ec2_gpu_host_delete_data_volume=True)
        assert proc.returncode == 0, output(proc)[-6000:]
        assert data_volumes(world["client"]) == []
        assert f"data volume {self.state['volume']}" in flat(proc).split("and deleted:")[1]
        assert "Kept data volume" not in flat(proc)


def test_volume_zone_decides_where_the_instance_runs(moto, tmp_path, ssh_key):
    """A kept volume in another zone: named while off, an instance elsewhere refused, the fix works."""
    seed_emulated_account(moto.url, REGION, DLAMI_PARAMETER)
    client = ec2(moto)
    zone = f"{REGION}b"
    volume = client.create_volume(
        AvailabilityZone=zone, Size=8, VolumeType="gp3", Encrypted=True,
        TagSpecifications=[{"ResourceType": "volume", "Tags": [{"Key": k, "Value": v} for k, v in {**OURS, "Name": DATA_NAME}.items()]}],
    )["VolumeId"]  # fmt: skip
    key = {"ec2_gpu_host_ssh_private_key_file": str(ssh_key)}

    # Off: the instance launches in the first zone, and the summary names the billing volume.
    proc, got = provision(moto, tmp_path, ec2_gpu_host_data_volume_size=0, **key)
    assert proc.returncode == 0, output(proc)[-6000:]
    first = got["instance_id"]
    assert instance(client, first)["Placement"]["AvailabilityZone"] == f"{REGION}a"
    assert (
        f"data volume {volume} (8 GiB in {zone}, about $0.64/month) is kept from an earlier instance and NOT attached"
    ) in " ".join(got["summary"].split())

    # On, with the instance in another zone: refused before any change, never a second volume.
    proc, _ = provision(moto, tmp_path, ec2_gpu_host_data_volume_size=10, **key)
    text = flat(proc)
    assert proc.returncode != 0
    assert (
        f"Data volume {volume} of runtime {NAME} is in {zone}, but instance {first} is in {REGION}a: an EBS volume attaches"
        " only to an instance in its own zone, and a second, empty volume would hide your data. Nothing was changed."
        f" Fix: terminate the instance (its root disk goes, the data volume stays) and run again, which launches the new"
        f" instance in {zone}: ansible-playbook playbooks/teardown.yml -e ec2_gpu_host_terminate={first} &&"
        " ansible-playbook site.yml;"
    ) in text, output(proc)[-4000:]
    assert f"aws ec2 create-snapshot --region {REGION} --volume-id {volume}" in text
    assert text.count("fatal: [localhost]") == 1
    assert [v["VolumeId"] for v in data_volumes(client)] == [volume]
    assert client.describe_volumes(VolumeIds=[volume])["Volumes"][0]["Attachments"] == []

    # The fix it names: terminate, run again; the new instance starts in the volume's zone.
    proc = teardown(moto, ec2_gpu_host_terminate=first)
    assert proc.returncode == 0, output(proc)[-6000:]
    proc, got = provision(moto, tmp_path, ec2_gpu_host_data_volume_size=10, **key)
    assert proc.returncode == 0, output(proc)[-6000:]
    assert instance(client, got["instance_id"])["Placement"]["AvailabilityZone"] == zone
    [attached] = client.describe_volumes(VolumeIds=[volume])["Volumes"][0]["Attachments"]
    assert attached["InstanceId"] == got["instance_id"]
    assert [v["VolumeId"] for v in data_volumes(client)] == [volume]
    assert len(instances(client)) == 1
    assert OWNER in NAME
