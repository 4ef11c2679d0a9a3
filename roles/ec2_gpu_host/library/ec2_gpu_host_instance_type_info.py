#!/usr/bin/python
# -*- coding: utf-8 -*-
# SPDX-License-Identifier: Apache-2.0

# Why this module exists: amazon.aws 10 has no module for DescribeInstanceTypes,
# DescribeInstanceTypeOfferings or DescribeSpotPriceHistory, and the role needs all three
# (reject unknown instance types before anything is created, try only zones that offer a
# type, report the current spot price). It is read-only and built on the collection's
# AnsibleAWSModule, so credentials, region, endpoint and retries behave exactly like the
# amazon.aws modules used everywhere else in the role.

from __future__ import annotations

DOCUMENTATION = r"""
---
module: ec2_gpu_host_instance_type_info
short_description: Describe EC2 instance types, the zones offering them and their spot price
description:
  - Read-only. Returns, for each requested instance type that EC2 knows in the region, its vCPUs,
    memory, GPUs, CPU architectures and the availability zones that offer it.
  - Types EC2 does not know are listed in RV(unknown) instead of failing, so the caller can
    name them in one error.
  - With O(spot_price=true), also returns the current Linux spot price per zone.
options:
  instance_types:
    description: Instance types to describe.
    type: list
    elements: str
    required: true
  spot_price:
    description: Also look up the current spot price (DescribeSpotPriceHistory) of each known type.
    type: bool
    default: false
extends_documentation_fragment:
  - action_common_attributes
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
attributes:
  check_mode:
    support: full
    details: Read-only; it makes the same calls in check mode.
  diff_mode:
    support: none
  platform:
    platforms: posix
author: colab-gpu-runtime
"""

EXAMPLES = r"""
- name: Check the GPU types before launching
  ec2_gpu_host_instance_type_info:
    region: us-east-2
    instance_types: [g4dn.xlarge, g5.xlarge]
    spot_price: true
  register: types
"""

RETURN = r"""
instance_types:
  description: Known types, keyed by name.
  returned: always
  type: dict
  sample:
    g4dn.xlarge:
      vcpus: 4
      memory_mib: 16384
      gpu_count: 1
      gpus: ["1x NVIDIA T4 16 GiB"]
      architectures: [x86_64]
      zones: [us-east-2a, us-east-2b, us-east-2c]
      spot_prices: {us-east-2a: 0.2226}
unknown:
  description: Requested types that EC2 does not know in this region.
  returned: always
  type: list
  elements: str
"""

import datetime

try:
    from botocore.exceptions import BotoCoreError
    from botocore.exceptions import ClientError
except ImportError:
    pass  # AnsibleAWSModule reports the missing botocore

from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule
from ansible_collections.amazon.aws.plugins.module_utils.retries import AWSRetry

# DescribeSpotPriceHistory reports Linux prices under either name depending on the account's
# platform history; both describe the same market.
LINUX_PRODUCTS = ["Linux/UNIX", "Linux/UNIX (Amazon VPC)"]


def _paginate(client, operation, key, **params):
    paginator = client.get_paginator(operation)
    return paginator.paginate(**params).build_full_result().get(key, [])


def describe_types(client, names):
    filters = [{"Name": "instance-type", "Values": names}]
    found = {}
    for itype in _paginate(client, "describe_instance_types", "InstanceTypes", Filters=filters):
        gpu_info = itype.get("GpuInfo") or {}
        gpus = gpu_info.get("Gpus") or []
        found[itype["InstanceType"]] = {
            "vcpus": itype.get("VCpuInfo", {}).get("DefaultVCpus"),
            "memory_mib": itype.get("MemoryInfo", {}).get("SizeInMiB"),
            "gpu_count": sum(g.get("Count", 0) for g in gpus),
            "gpus": [
                f"{g.get('Count', 0)}x {g.get('Manufacturer', '')} {g.get('Name', '')}"
                f" {g.get('MemoryInfo', {}).get('SizeInMiB', 0) // 1024} GiB".strip()
                for g in gpus
            ],
            "architectures": itype.get("ProcessorInfo", {}).get("SupportedArchitectures", []),
            "zones": [],
            "spot_prices": {},
        }
    return found


def add_zones(client, found):
    offerings = _paginate(
        client,
        "describe_instance_type_offerings",
        "InstanceTypeOfferings",
        LocationType="availability-zone",
        Filters=[{"Name": "instance-type", "Values": sorted(found)}],
    )
    for offer in offerings:
        if offer["InstanceType"] in found:
            found[offer["InstanceType"]]["zones"].append(offer["Location"])
    for info in found.values():
        info["zones"].sort()


def add_spot_prices(client, found):
    # StartTime=now returns the price in effect now for every zone; keep the newest per zone.
    history = _paginate(
        client,
        "describe_spot_price_history",
        "SpotPriceHistory",
        InstanceTypes=sorted(found),
        ProductDescriptions=LINUX_PRODUCTS,
        StartTime=datetime.datetime.now(datetime.timezone.utc),
    )
    newest = {}
    for entry in history:
        key = (entry["InstanceType"], entry["AvailabilityZone"])
        if key not in newest or entry["Timestamp"] > newest[key]["Timestamp"]:
            newest[key] = entry
    for (itype, zone), entry in newest.items():
        found[itype]["spot_prices"][zone] = float(entry["SpotPrice"])


def main():
    module = AnsibleAWSModule(
        argument_spec=dict(
            instance_types=dict(type="list", elements="str", required=True),
            spot_price=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    names = [n for n in module.params["instance_types"] if n]
    client = module.client("ec2", retry_decorator=AWSRetry.jittered_backoff())
    try:
        found = describe_types(client, names) if names else {}
        if found:
            add_zones(client, found)
            if module.params["spot_price"]:
                add_spot_prices(client, found)
    except (BotoCoreError, ClientError) as e:
        module.fail_json_aws(e, msg="Could not describe the EC2 instance types")
    module.exit_json(
        changed=False,
        instance_types=found,
        unknown=[n for n in names if n not in found],
    )


if __name__ == "__main__":
    main()
