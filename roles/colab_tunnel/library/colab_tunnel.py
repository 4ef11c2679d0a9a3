#!/usr/bin/python
"""Documentation of the colab_tunnel action (action_plugins/colab_tunnel.py).

The tunnel lives on the controller, so the work runs in-process in the action plugin: no module
payload to build and no interpreter to start on every run. This file only documents it.
"""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: colab_tunnel
short_description: Keep an OpenSSH port forward to a Colab runtime alive on the controller
description:
  - Runs C(ssh -F ssh_config host_alias remote_command) under a small supervisor process that
    restarts ssh whenever it exits, and reports whether the forward really carries HTTP.
  - I(state=started) keeps a healthy tunnel started with the same SSH configuration, and
    replaces a dead, unhealthy or outdated one.
  - A local port held by another program is refused with the name and pid of that program.
  - It also writes the tunnel's own files when asked (the SSH configuration, the supervisor
    script, the URL file), in one task instead of one per file.
  - Runs in-process on the controller (an action plugin), so a no-op run builds no module
    payload and starts no interpreter.
options:
  state:
    description: Desired state; C(status) only reports.
    type: str
    choices: [started, stopped, status]
    default: started
  host_alias:
    description: Host entry in I(ssh_config) that carries the LocalForward.
    type: str
    required: true
  ssh_config:
    description: Path of the generated SSH client configuration.
    type: path
    required: true
  local_port:
    description: Local TCP port of the forward.
    type: int
    required: true
  bind_address:
    description: Local address of the forward.
    type: str
    default: 127.0.0.1
  state_dir:
    description: Directory for the pid, log and state files.
    type: path
    required: true
  control_dir:
    description:
      - Directory of ssh's ControlMaster socket, created with mode 0700 and re-created by the
        supervisor before each start. An existing one must be a private directory of this user.
    type: path
  supervisor_script:
    description: Path of the supervisor script.
    type: path
    required: true
  python:
    description: Python interpreter that runs the supervisor; defaults to the one running Ansible.
    type: path
  remote_command:
    description:
      - Command the tunnel's session runs on the host. A session (not C(ssh -N)) makes sshd turn
        off Nagle's algorithm on its socket, which removes a 40 ms stall per Colab cell.
    type: str
    default: exec sleep infinity
  timeout:
    description: Seconds to wait for a new tunnel to carry HTTP.
    type: int
    default: 30
  ssh_config_content:
    description:
      - Content of I(ssh_config), written (mode 0600, I(state_dir) created with mode 0700) when it
        differs. A tunnel started with another configuration is replaced.
    type: str
  ssh_config_index:
    description:
      - A file for people to C(Include) from their own SSH configuration, which includes every runtime's I(ssh_config).
    type: path
  ssh_config_index_content:
    description: Content of I(ssh_config_index), written (mode 0600) when it differs; the tunnel does not read it.
    type: str
  supervisor_source:
    description: File copied to I(supervisor_script) (mode 0700) when their contents differ.
    type: path
  url:
    description: URL to keep in I(url_file) (mode 0600) once the tunnel carries HTTP; never logged.
    type: str
  url_file:
    description: Where I(url) is written.
    type: path
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
    details: Reports which files it would write and whether the tunnel would be started, replaced or stopped.
  diff_mode:
    support: partial
    details: Shows the diff of the SSH configuration; the supervisor script and the URL file (a secret) are only named.
  platform:
    platforms: posix
author: colab-gpu-runtime
"""

EXAMPLES = r"""
- name: Start the tunnel, or keep a healthy one
  colab_tunnel:
    state: started
    host_alias: colab-myhost-tunnel
    ssh_config: "{{ playbook_dir }}/.colab/ssh_config"
    local_port: 8888
    state_dir: "{{ playbook_dir }}/.colab"
    supervisor_script: "{{ playbook_dir }}/.colab/colab_tunnel_supervisor.py"
  register: tunnel

- name: Report the tunnel without changing it
  colab_tunnel:
    state: status
    host_alias: colab-myhost-tunnel
    ssh_config: "{{ playbook_dir }}/.colab/ssh_config"
    local_port: 8888
    state_dir: "{{ playbook_dir }}/.colab"
    supervisor_script: "{{ playbook_dir }}/.colab/colab_tunnel_supervisor.py"
"""

RETURN = r"""
running:
  description: Whether the supervisor runs.
  type: bool
  returned: always
healthy:
  description: Whether an HTTP request through the forward got an HTTP answer.
  type: bool
  returned: always
pid:
  description: Supervisor process id; 0 when it does not run.
  type: int
  returned: always
  sample: 41236
ssh_pid:
  description: Current ssh process id; 0 when none runs.
  type: int
  returned: always
  sample: 41240
log_tail:
  description: Last lines of the tunnel log.
  type: list
  elements: str
  returned: always
files_changed:
  description: Which of the tunnel's files were (or in check mode would be) written.
  type: list
  elements: str
  returned: when O(state=started)
  sample: [/home/me/colab-gpu-runtime/.colab/ssh_config]
"""
