# -*- coding: utf-8 -*-
# SPDX-License-Identifier: Apache-2.0
"""Filters of the ec2_gpu_host role.

ec2_gpu_host_running picks the owner's running instance out of the aws_ec2 inventory, so a
re-run does not describe again what the inventory has just described.

ansible.utils' ipaddr needs the netaddr library, which the controller does not otherwise
need; Python's ipaddress module gives an exact answer with no extra dependency.
"""

from __future__ import annotations

import ipaddress


def ec2_gpu_host_cidr_info(value):
    """Parse an IPv4 address or CIDR into {valid, network, prefixlen, error}.

    A bare address means that host (/32); host bits are cleared ("203.0.113.7/24" ->
    "203.0.113.0/24") because a security group stores the network anyway.
    """
    text = str(value or "").strip()
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError as exc:
        return {"valid": False, "network": "", "prefixlen": -1, "error": str(exc) or "empty value"}
    if net.version != 4:
        return {"valid": False, "network": str(net), "prefixlen": net.prefixlen, "error": "not an IPv4 network"}
    return {"valid": True, "network": str(net), "prefixlen": net.prefixlen, "error": ""}


# What the short path needs of a running instance, from the aws_ec2 inventory's host variables.
_RUNNING_KEYS = (
    "instance_id", "instance_type", "image_id", "vpc_id", "placement", "public_ip_address",
    "private_ip_address", "tags", "instance_lifecycle", "security_groups", "state",
)


def ec2_gpu_host_running(hosts_vars, region, tags):
    """Running instances among inventory hosts whose EC2 tags include all of `tags`, in `region`.

    Each is returned as the subset of its aws_* host variables the role uses, named like
    ec2_instance_info's keys, plus its inventory name.
    """
    found = []
    for host_vars in hosts_vars:
        have = host_vars.get("aws_tags") or {}
        if not host_vars.get("aws_instance_id") or any(have.get(k) != v for k, v in tags.items()):
            continue
        if (host_vars.get("aws_state") or {}).get("name") != "running":
            continue
        if (host_vars.get("aws_placement") or {}).get("region") != region:
            continue
        instance = {key: host_vars.get("aws_" + key) for key in _RUNNING_KEYS}
        instance["inventory_hostname"] = host_vars.get("inventory_hostname")
        found.append(instance)
    return found


class FilterModule:
    def filters(self):
        return {
            "ec2_gpu_host_cidr_info": ec2_gpu_host_cidr_info,
            "ec2_gpu_host_running": ec2_gpu_host_running,
        }
