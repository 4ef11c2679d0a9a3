"""The data volume's decisions without AWS or a host: where the volume lets an instance run
(ec2_gpu_host_data_volume_plan), which device node is the volume and whether it may be
formatted (colab_runtime's data_volume filters). The mount itself needs a block device and is
not run here."""

from __future__ import annotations

import pytest

from colab_testkit.substrate import load_role_file

ec2 = load_role_file("ec2_gpu_host", "filter_plugins/ec2_gpu_host.py", "ec2_gpu_host_filters_dv")
host = load_role_file("colab_runtime", "filter_plugins/data_volume.py", "colab_runtime_data_volume")

CONTEXT = {"region": "us-east-2", "name": "colab-gpu-runtime-alice"}
SUBNETS = [
    {"subnet_id": "subnet-a", "availability_zone": "us-east-2a"},
    {"subnet_id": "subnet-b", "availability_zone": "us-east-2b"},
]
TYPES = {"g4dn.xlarge": {"zones": ["us-east-2a", "us-east-2b"]}, "g5.xlarge": {"zones": ["us-east-2a"]}}


def volume(zone="us-east-2b", attached_to=None, vid="vol-0123456789abcdef0"):
    attachments = [{"instance_id": attached_to, "status": "attached"}] if attached_to else []
    return {"id": vid, "zone": zone, "size": 20, "attachment_set": attachments, "tags": {}}


def plan(volumes, instance=None, subnets=SUBNETS, types=("g4dn.xlarge", "g5.xlarge")):
    return ec2.ec2_gpu_host_data_volume_plan(volumes, instance, subnets, TYPES, list(types), CONTEXT)


def test_no_volume_leaves_every_subnet():
    assert plan([]) == {"volume": None, "subnets": SUBNETS, "error": ""}


def test_new_instance_is_launched_only_in_the_volume_zone():
    got = plan([volume()])
    assert got["error"] == "" and [s["subnet_id"] for s in got["subnets"]] == ["subnet-b"]


def test_existing_instance_in_the_volume_zone_is_fine():
    inst = {"instance_id": "i-1", "placement": {"availability_zone": "us-east-2b"}}
    assert plan([volume(attached_to="i-1")], inst)["error"] == ""


def test_existing_instance_in_another_zone_is_refused_with_the_fix():
    inst = {"instance_id": "i-1", "placement": {"availability_zone": "us-east-2a"}}
    error = plan([volume()], inst)["error"]
    assert "is in us-east-2b, but instance i-1 is in us-east-2a" in error
    assert "ansible-playbook playbooks/teardown.yml -e ec2_gpu_host_terminate=i-1 && ansible-playbook site.yml" in error
    assert "aws ec2 create-volume --region us-east-2 --availability-zone us-east-2a --snapshot-id" in error


def test_subnets_outside_the_volume_zone_are_refused():
    error = plan([volume()], subnets=SUBNETS[:1])["error"]
    assert "none of the launch subnets is (us-east-2a)" in error and "add a subnet in us-east-2b" in error


def test_types_not_offered_in_the_volume_zone_are_refused():
    error = plan([volume()], types=["g5.xlarge"])["error"]
    assert "in us-east-2b, where none of g5.xlarge is offered" in error


def test_volume_attached_to_a_foreign_instance_is_refused():
    error = plan([volume(attached_to="i-other")])["error"]
    assert "is attached to instance i-other, which is not the instance of this runtime" in error
    assert "aws ec2 detach-volume --region us-east-2 --volume-id vol-0123456789abcdef0" in error


def test_two_volumes_are_refused():
    error = plan([volume(), volume(vid="vol-0fedcba9876543210")])["error"]
    assert error.startswith("Found 2 data volumes of runtime colab-gpu-runtime-alice in us-east-2: vol-0123456789abcdef0, vol-0fedcba9876543210.")


# --------------------------------------------------------------------------- on the host
@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("vol-0123456789abcdef0", ["/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0123456789abcdef0", "/dev/xvdf"]),
        ("vol-0123abcd", ["/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0123abcd", "/dev/xvdf"]),
        ("/dev/nvme1n1", ["/dev/nvme1n1"]),
        ("", []),
        ("vol-XYZ", []),
        ("sdb", []),
    ],
)
def test_device_candidates(setting, expected):
    assert host.colab_runtime_data_device_paths(setting) == expected


def test_nitro_serial_link_wins_and_xen_name_is_the_fallback():
    link = "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0123456789abcdef0"
    assert host.colab_runtime_data_device("vol-0123456789abcdef0", ["/dev/xvdf", link]) == link
    assert host.colab_runtime_data_device("vol-0123456789abcdef0", ["/dev/xvdf"]) == "/dev/xvdf"
    assert host.colab_runtime_data_device("vol-0123456789abcdef0", ["/dev/nvme1n1"]) == ""


def test_blank_volume_is_formatted():
    assert host.colab_runtime_data_filesystem({"rc": 2, "stdout": ""}, "/dev/xvdf")["format"] is True


@pytest.mark.parametrize("fstype", ["ext4", "xfs"])
def test_volume_with_a_filesystem_is_mounted_as_it_is(fstype):
    got = host.colab_runtime_data_filesystem({"rc": 0, "stdout": f"DEVNAME=/dev/xvdf\nUUID=1234-abcd\nTYPE={fstype}\n"}, "/dev/xvdf")
    assert got == {"format": False, "fstype": fstype, "uuid": "1234-abcd", "error": ""}


@pytest.mark.parametrize(
    ("stdout", "what"),
    [("DEVNAME=/dev/xvdf\nPTUUID=x\nPTTYPE=gpt\n", "a gpt partition table"), ("TYPE=LVM2_member\n", "a LVM2_member signature")],
)
def test_anything_else_is_never_formatted(stdout, what):
    got = host.colab_runtime_data_filesystem({"rc": 0, "stdout": stdout}, "/dev/xvdf")
    assert got["format"] is False
    assert f"The data volume /dev/xvdf has {what}, not a filesystem the runtime can mount" in got["error"]
    assert "never formatted" in got["error"]
