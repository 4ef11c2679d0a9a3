# -*- coding: utf-8 -*-
# SPDX-License-Identifier: Apache-2.0
"""Filters for the runtime's data volume (colab_runtime_data_volume).

Which device node is the volume, and what its first bytes say: an EBS volume id is found by
its NVMe serial on Nitro instances (udev links it as
/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol<id without the dash>), else as /dev/xvdf,
the name Xen instances give the /dev/sdf it was attached at; any other value is a device path.
A device is formatted only when blkid finds nothing on it at all: a filesystem is mounted as it
is, and anything else (a partition table, LVM, swap, LUKS) is refused, never overwritten.
"""

from __future__ import annotations

import re

_VOLUME_ID = re.compile(r"^vol-([0-9a-f]{8}|[0-9a-f]{17})$")
_MOUNTABLE = ("ext4", "ext3", "ext2", "xfs", "btrfs")


def colab_runtime_data_device_paths(volume, attached_as="/dev/sdf"):
    """The paths that may be the volume's device node, most specific first."""
    value = str(volume or "").strip()
    found = _VOLUME_ID.match(value)
    if found:
        xen = re.sub(r"^/dev/sd", "/dev/xvd", attached_as)
        return ["/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol" + found.group(1), xen]
    return [value] if value.startswith("/dev/") else []


def colab_runtime_data_device(volume, present, attached_as="/dev/sdf"):
    """The first candidate of colab_runtime_data_device_paths that exists ('' when none does).

    `present` lists existing paths (e.g. what ansible.builtin.find matched)."""
    present = set(present or [])
    return next((p for p in colab_runtime_data_device_paths(volume, attached_as) if p in present), "")


def colab_runtime_data_filesystem(blkid, device):
    """Decide from `blkid -p -o export DEVICE` (a registered command result) what to do.

    Returns {format: bool, fstype, uuid, error}: rc 2 (nothing found) means a new, blank volume to
    format; a mountable filesystem is used as it is; anything else is an error that names it.
    """
    rc = blkid.get("rc")
    if rc == 2:
        return {"format": True, "fstype": "ext4", "uuid": "", "error": ""}
    values = dict(line.split("=", 1) for line in str(blkid.get("stdout") or "").splitlines() if "=" in line)
    fstype = values.get("TYPE", "")
    if rc == 0 and fstype in _MOUNTABLE:
        return {"format": False, "fstype": fstype, "uuid": values.get("UUID", ""), "error": ""}
    what = (
        "a %s signature" % fstype if fstype
        else "a %s partition table" % values["PTTYPE"] if values.get("PTTYPE")
        else "an unreadable start (blkid exit %s: %s)" % (rc, " ".join(str(blkid.get("stderr") or "").split()))
    )
    return {
        "format": False, "fstype": fstype, "uuid": values.get("UUID", ""),
        "error": (
            "The data volume %s has %s, not a filesystem the runtime can mount (%s). It was left as it is: a volume that"
            " holds anything is never formatted. Fix: point colab_runtime_data_volume at an empty volume or one with such"
            " a filesystem, or wipe this one yourself if its contents are not needed (wipefs -a %s)."
            % (device, what, ", ".join(_MOUNTABLE), device)
        ),
    }  # fmt: skip


class FilterModule:
    def filters(self):
        return {
            "colab_runtime_data_device_paths": colab_runtime_data_device_paths,
            "colab_runtime_data_device": colab_runtime_data_device,
            "colab_runtime_data_filesystem": colab_runtime_data_filesystem,
        }
