#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Which platform the host runs on, and whether a power-off from inside stops its billing."""

from __future__ import annotations

DOCUMENTATION = r"""
module: idle_stop_platform
short_description: Tell whether a guest power-off stops this host's billing (read-only)
description:
  - Reads the firmware's identification (DMI, C(/sys/class/dmi/id)) and, on old Xen-based EC2
    instances, C(/sys/hypervisor/uuid), and names the platform - C(ec2), C(gce), C(azure) or
    C(other) - with whether the idle auto-stop should be on there by default.
  - On by default only where powering the guest off is what a user wants - an EC2 instance this
    project launched (its shutdown behaviour is C(stop), the disk is kept) and a GCE VM (a guest
    power-off moves it to TERMINATED; vCPUs and GPUs are no longer billed).
  - Off by default on Azure (a VM that powers itself off stays allocated and billed until it is
    deallocated), on an EC2 instance this project did not launch (its shutdown behaviour may be
    C(terminate), which deletes it) and everywhere else (an on-prem or shared box would stay off
    until somebody powers it on).
  - Changes nothing; supports check mode.
options:
  project_ec2:
    description:
      - The host is an EC2 instance this project launched (listed by the project's C(aws_ec2)
        inventory). Only the controller knows this; the host cannot tell how it was launched.
    type: bool
    default: false
extends_documentation_fragment:
  - action_common_attributes
attributes:
  check_mode:
    support: full
    details: Only reads DMI files; it runs in check mode too.
  diff_mode:
    support: none
  platform:
    platforms: posix
author: colab-gpu-runtime
"""

EXAMPLES = r"""
- name: Find out whether a power-off stops the billing here
  idle_stop_platform:
    project_ec2: "{{ ec2_gpu_host_instance_id is defined }}"
  register: platform
"""

RETURN = r"""
platform:
  description: C(ec2), C(gce), C(azure) or C(other).
  type: str
  returned: always
  sample: gce
project_ec2:
  description: The host is an EC2 instance this project launched (as given).
  type: bool
  returned: always
  sample: false
default_on:
  description: Whether the idle auto-stop is on by default here (a guest power-off stops the billing).
  type: bool
  returned: always
  sample: true
why:
  description: One line for the run summary - the platform and what a power-off from inside does to its bill.
  type: str
  returned: always
  sample: "GCE VM: a power-off from inside stops it (no more vCPU/GPU charges; disks stay billed)"
dmi:
  description: The identification strings read (empty where absent, e.g. in a container on a host without DMI).
  type: dict
  returned: always
  sample: {"sys_vendor": "Google", "product_name": "Google Compute Engine"}
"""

import os

from ansible.module_utils.basic import AnsibleModule

DMI_DIR = "/sys/class/dmi/id"
DMI_FIELDS = ("sys_vendor", "product_name", "bios_vendor", "bios_version", "chassis_asset_tag")
# Every Azure VM carries this chassis asset tag; a Hyper-V VM elsewhere (same vendor and
# product name, "Microsoft Corporation" / "Virtual Machine") does not.
AZURE_ASSET_TAG = "7783-7084-3265-9085-8269-3286-77"

WHY = {
    "ec2": "EC2 instance of this project: a power-off from inside stops it (shutdown behaviour stop, disk kept)",
    "ec2_foreign": (
        "EC2 instance this project did not launch: a power-off from inside terminates it if its shutdown"
        " behaviour is terminate (check: aws ec2 describe-instance-attribute --attribute"
        " instanceInitiatedShutdownBehavior)"
    ),
    "gce": "GCE VM: a power-off from inside stops it (no more vCPU/GPU charges; disks stay billed)",
    "azure": (
        "Azure VM: one powered off from inside stays allocated and billed; only a deallocation stops the bill"
        " (az vm deallocate --resource-group <group> --name <vm>)"
    ),
    "other": "not a cloud VM known to stop billing when powered off (an on-prem or shared box would stay off)",
}


def read_dmi(dmi_dir=DMI_DIR, hypervisor_uuid="/sys/hypervisor/uuid"):
    """The DMI strings (and the Xen hypervisor uuid), "" where unreadable."""
    values = {}
    for name, path in [(f, os.path.join(dmi_dir, f)) for f in DMI_FIELDS] + [("hypervisor_uuid", hypervisor_uuid)]:
        try:
            with open(path, "r", encoding="utf-8", errors="replace") as handle:
                values[name] = handle.read().strip()
        except OSError:
            values[name] = ""
    return values


def classify(dmi, project_ec2=False):
    """(platform, default_on, why) from the DMI strings and the controller's knowledge."""
    vendor = dmi.get("sys_vendor", "").lower()
    product = dmi.get("product_name", "").lower()
    if project_ec2:
        # The controller's inventory is the proof: the project launches with shutdown behaviour stop.
        return "ec2", True, WHY["ec2"]
    # Nitro instances say "Amazon EC2"; Xen-based ones "Xen" with an "...amazon" BIOS version
    # and a hypervisor uuid starting with "ec2".
    if (
        vendor.startswith("amazon ec2")
        or dmi.get("bios_vendor", "").lower().startswith("amazon ec2")
        or dmi.get("bios_version", "").lower().endswith("amazon")
        or dmi.get("hypervisor_uuid", "").lower().startswith("ec2")
    ):
        return "ec2", False, WHY["ec2_foreign"]
    if vendor == "google" or product == "google compute engine":
        return "gce", True, WHY["gce"]
    if vendor == "microsoft corporation" and dmi.get("chassis_asset_tag", "") == AZURE_ASSET_TAG:
        return "azure", False, WHY["azure"]
    return "other", False, WHY["other"]


def main():
    module = AnsibleModule(argument_spec=dict(project_ec2=dict(type="bool", default=False)), supports_check_mode=True)
    dmi = read_dmi()
    platform, default_on, why = classify(dmi, module.params["project_ec2"])
    module.exit_json(
        changed=False,
        platform=platform,
        project_ec2=module.params["project_ec2"],
        default_on=default_on,
        why=why,
        dmi=dmi,
    )


if __name__ == "__main__":
    main()
