# -*- coding: utf-8 -*-
# SPDX-License-Identifier: Apache-2.0
"""Filters of the colab_tunnel role.

colab_tunnel_alias_of is the one rule that names a runtime's SSH alias (and from it the tunnel's
pid, log and URL files): the connect play applies it to the inventory host name
(colab_tunnel_host_alias's default), the status view to each runtime's Name tag, which is the
inventory host name of an EC2 runtime.
"""

from __future__ import annotations


def colab_tunnel_alias_of(name):
    """The SSH alias of the runtime called `name`: the name itself when it starts with "colab-", else "colab-<name>"."""
    text = str(name)
    return text if text.startswith("colab-") else "colab-" + text


class FilterModule:
    def filters(self):
        return {"colab_tunnel_alias_of": colab_tunnel_alias_of}
