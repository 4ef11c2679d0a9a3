"""The host side of the data volume (colab_runtime's data-volume.yml) on a podman test host.

No EBS here: a loop device on this machine, handed to the container, is the volume. A blank
one is formatted and mounted by UUID with nofail, with the existing data directory copied onto
it; a re-run changes nothing; on a "new instance" (mount and fstab line gone) the same volume
is mounted again with its data, not formatted; a volume with a partition table is refused and
left untouched. The EBS id lookup (NVMe serial, /dev/xvdf) is covered by
tests/unit/test_data_volume_filters.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from colab_testkit.substrate import ROOT, ansible_playbook, play_recap

pytestmark = pytest.mark.timeout(900)

DATA_DIR = "/var/lib/colab-runtime"
PLAYBOOK = """\
- name: Data volume
  hosts: colab_gpu_hosts
  become: true
  gather_facts: false
  tasks:
    - name: Mount the data volume at the data directory
      ansible.builtin.include_role:
        name: colab_runtime
        tasks_from: data-volume
"""
# A stand-in for the runtime's service: the copy stops it and the mount restarts it.
UNIT = "[Unit]\nDescription=stand-in\n[Service]\nExecStart=/bin/sleep infinity\n[Install]\nWantedBy=multi-user.target\n"


def dos_partition_table(path: Path) -> None:
    """One Linux partition in an MBR, as fdisk writes it."""
    entry = bytes([0x00, 0, 0, 0, 0x83, 0, 0, 0]) + (2048).to_bytes(4, "little") + (8192).to_bytes(4, "little")
    with open(path, "r+b") as fh:
        fh.seek(446)
        fh.write(entry)
        fh.seek(510)
        fh.write(b"\x55\xaa")


@pytest.fixture
def loop_devices(tmp_path):
    if os.geteuid() != 0 or not shutil.which("losetup"):
        pytest.skip("needs root and losetup for loop devices")
    made: list[str] = []

    def make(partitioned: bool = False) -> str:
        backing = tmp_path / f"volume{len(made)}.img"
        with open(backing, "wb") as fh:
            fh.truncate(64 * 1024 * 1024)
        if partitioned:
            dos_partition_table(backing)
        dev = subprocess.run(["losetup", "--find", "--show", str(backing)], check=True, capture_output=True, text=True).stdout.strip()
        made.append(dev)
        return dev

    yield make
    for dev in made:
        subprocess.run(["losetup", "-d", dev], check=False)


def test_mount_formats_once_copies_and_never_reformats(loop_devices, remote_host_factory, tmp_path):
    volume, partitioned = loop_devices(), loop_devices(partitioned=True)
    host = remote_host_factory(extra_args=["--device", volume, "--device", partitioned, "--cap-add", "SYS_ADMIN"])
    host.exec("sh", "-c", f"mkdir -p {DATA_DIR}/notebooks && echo kept > {DATA_DIR}/notebooks/kept.ipynb")
    host.exec("sh", "-c", f"printf '{UNIT}' > /etc/systemd/system/colab-runtime.service && systemctl daemon-reload"
              " && systemctl start colab-runtime")  # fmt: skip
    inventory = tmp_path / "inventory.json"
    inventory.write_text(json.dumps(host.inventory()))
    playbook = tmp_path / "data-volume.yml"
    playbook.write_text(PLAYBOOK)

    def converge(device: str):
        return ansible_playbook("-i", str(inventory), str(playbook), extra_vars={"colab_runtime_data_volume": device},
                                env={"ANSIBLE_ROLES_PATH": str(ROOT / "roles")})  # fmt: skip

    def sh(command: str) -> str:
        return host.exec("sh", "-c", command).stdout.strip()

    proc = converge(volume)
    assert proc.returncode == 0, proc.stdout[-6000:]
    mounted = host.exec("findmnt", "-n", "-o", "SOURCE,FSTYPE", DATA_DIR, check=False).stdout.split()
    assert mounted == [volume, "ext4"], (
        host.ssh("sudo findmnt; sudo journalctl --no-pager | grep -i 'mount\\|colab' | tail -20", check=False).stdout
    )
    uuid = sh(f"blkid -s UUID -o value {volume}")
    assert f"UUID={uuid} {DATA_DIR} ext4 defaults,nofail,x-systemd.device-timeout=30s 0 0" in sh("cat /etc/fstab")
    assert sh(f"cat {DATA_DIR}/notebooks/kept.ipynb") == "kept", "the data directory was copied onto the volume"
    assert host.exec("findmnt", "/mnt/colab-runtime-data-new", check=False).returncode == 1, "the staging mount is gone"
    assert sh("systemctl is-active colab-runtime") == "active"

    proc = converge(volume)
    assert proc.returncode == 0, proc.stdout[-6000:]
    assert play_recap(proc.stdout)[host.name]["changed"] == 0, proc.stdout[-6000:]

    # A new instance: the volume arrives with its data, no mount, no fstab line, no data directory.
    sh(f"echo more > {DATA_DIR}/notebooks/later.ipynb && umount {DATA_DIR} && sed -i '\\#{DATA_DIR}#d' /etc/fstab && rm -rf {DATA_DIR}")
    proc = converge(volume)
    assert proc.returncode == 0, proc.stdout[-6000:]
    assert "TASK [colab_runtime : Create a filesystem on the blank volume]" not in proc.stdout
    assert sh(f"blkid -s UUID -o value {volume}") == uuid, "not formatted again"
    assert sh(f"cat {DATA_DIR}/notebooks/later.ipynb {DATA_DIR}/notebooks/kept.ipynb").split() == ["more", "kept"]

    # Anything but a filesystem is refused and left as it is.
    proc = converge(partitioned)
    text = " ".join(proc.stdout.split())
    assert proc.returncode != 0
    assert (
        f"The data volume {partitioned} has a dos partition table, not a filesystem the runtime can mount"
        " (ext4, ext3, ext2, xfs, btrfs). It was left as it is: a volume that holds anything is never formatted."
    ) in text, proc.stdout[-4000:]
    assert sh(f"blkid -p -o value -s PTTYPE {partitioned}") == "dos"
