# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters of the ec2_gpu_host role.

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


class FilterModule:
    def filters(self):
        return {"ec2_gpu_host_cidr_info": ec2_gpu_host_cidr_info}
