# -*- coding: utf-8 -*-
# SPDX-License-Identifier: Apache-2.0
"""Filters of the ec2_gpu_host role.

ec2_gpu_host_running picks the owner's running instance out of the aws_ec2 inventory, so a
re-run does not describe again what the inventory has just described.

ec2_gpu_host_caller_principal turns the caller's STS ARN into the identity recorded on what
the project creates (tag colab-gpu-runtime:created-by) and compared before anything is changed.

ansible.utils' ipaddr needs the netaddr library, which the controller does not otherwise
need; Python's ipaddress module gives an exact answer with no extra dependency.
"""

from __future__ import annotations

import ipaddress
import re

# botocore names a session it assumes for a profile's role_arn "botocore-session-<epoch>", so
# the same person has a new ARN on every login; such sessions count as their role.
_GENERATED_SESSION = re.compile(r"^(arn:[^:]+:sts::[0-9]+:assumed-role/[^/]+)/botocore-session-[0-9]+$")


def ec2_gpu_host_caller_principal(arn):
    """The caller's ARN, with a session name that botocore generated replaced by "*".

    "arn:aws:sts::1:assumed-role/Dev/botocore-session-1733050000" -> "arn:aws:sts::1:assumed-role/Dev/*";
    users, SSO sessions (named after the person) and named sessions are kept as they are.
    """
    text = str(arn or "").strip()
    return _GENERATED_SESSION.sub(r"\1/*", text)


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


def ec2_gpu_host_resource(described, kind, name_key):
    """{kind, name, tags} of one described resource, as tasks/creator.yml checks it."""
    return {"kind": kind, "name": described.get(name_key, ""), "tags": described.get("tags") or {}}


class FilterModule:
    def filters(self):
        return {
            "ec2_gpu_host_caller_principal": ec2_gpu_host_caller_principal,
            "ec2_gpu_host_cidr_info": ec2_gpu_host_cidr_info,
            "ec2_gpu_host_resource": ec2_gpu_host_resource,
            "ec2_gpu_host_running": ec2_gpu_host_running,
        }
