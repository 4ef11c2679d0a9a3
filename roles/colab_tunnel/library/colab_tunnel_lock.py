#!/usr/bin/python
"""Documentation of the colab_tunnel_lock action (action_plugins/colab_tunnel_lock.py)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: colab_tunnel_lock
short_description: Let one ansible-playbook run at a time work on a runtime from this controller
description:
  - Takes a lock file named after the runtime, held by the ansible-playbook process that runs the
    task, until that process exits (however it ends). Two runs at once could otherwise launch two
    instances or start two tunnel supervisors.
  - A run that already holds the lock takes it again at once (the provision and connect plays of
    one site.yml run share it).
  - The holder is named by pid and process start time, so a reused pid is never taken for it.
options:
  path:
    description: Lock file; its directory is created with mode 0700.
    type: path
    required: true
  timeout:
    description: Seconds to wait for another run to finish before failing with its pid and command.
    type: int
    default: 0
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
    details: The lock is taken in check mode too, so that a check run does not race a real one.
  diff_mode:
    support: none
  platform:
    platforms: posix
author: colab-gpu-runtime
"""

EXAMPLES = r"""
- name: One run at a time for this runtime
  colab_tunnel_lock:
    path: "{{ colab_tunnel_state_dir }}/{{ inventory_hostname }}.lock"
    timeout: 60
"""

RETURN = r"""
taken:
  description: True when this task took the lock, false when this run held it already. The task never reports a change.
  returned: success
  type: bool
path:
  description: The lock file.
  returned: always
  type: str
holder:
  description: The process that holds the lock (this run on success, the other run on failure).
  returned: always
  type: dict
  contains:
    pid:
      description: Process id of the ansible-playbook run.
      returned: always
      type: int
    command:
      description: Its command line.
      returned: always
      type: str
    since:
      description: When it took the lock.
      returned: always
      type: str
"""
