#!/usr/bin/python
"""Documentation of the colab_tunnel_port action (action_plugins/colab_tunnel_port.py)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: colab_tunnel_port
short_description: Choose the local port of a runtime's tunnel so that no two runtimes share one
description:
  - An explicitly requested port is used as given, unless another runtime's record holds it (then the task fails
    naming that runtime).
  - The unnamed runtime (empty I(runtime_name)) keeps I(default_port), as it always had, unless another runtime
    records it (e.g. a teammate's unnamed runtime connected from the same machine).
  - Any other runtime keeps the port recorded for it; without a record it is assigned the first port above
    I(default_port) that no other runtime records and nothing listens on.
  - The choice is recorded in I(state_dir)/I(host_alias).port, so that the URL Colab remembers stays the same and
    a runtime connected in the same run (forks) does not take it.
  - Other runtimes' ports are read from their records and from their URL files (C(<alias>.url)).
options:
  state_dir:
    description: The tunnels' state directory (records, URL files); created with mode 0700.
    type: path
    required: true
  host_alias:
    description: This runtime's tunnel alias (names its record).
    type: str
    required: true
  requested:
    description: The port set explicitly; 0 chooses one.
    type: int
    default: 0
  default_port:
    description: The unnamed runtime's port; named runtimes are assigned ports above it.
    type: int
    default: 8888
  runtime_name:
    description: The runtime's name; empty for the unnamed runtime.
    type: str
    default: ""
  bind_address:
    description: Address the tunnel listens on, where a candidate port is tried.
    type: str
    default: 127.0.0.1
extends_documentation_fragment:
  - action_common_attributes
  - action_common_attributes.flow
attributes:
  action:
    support: full
    details: The work is done by the action plugin, on the controller; no module runs on a host.
  async:
    support: none
  bypass_host_loop:
    support: none
  check_mode:
    support: full
    details: The port is chosen but not recorded.
  diff_mode:
    support: none
  platform:
    platforms: posix
author: colab-gpu-runtime
"""

EXAMPLES = r"""
- name: Choose the tunnel's local port
  colab_tunnel_port:
    state_dir: "{{ colab_tunnel_state_dir }}"
    host_alias: "{{ colab_tunnel_host_alias }}"
    runtime_name: big
"""

RETURN = r"""
port:
  description: The local port of this runtime's tunnel.
  returned: success
  type: int
assigned:
  description: True when the port was chosen here and recorded (not requested).
  returned: success
  type: bool
record:
  description: The file that records an assigned port (empty when none is assigned).
  returned: success
  type: str
"""
