#!/usr/bin/python
"""Documentation of the colab_tunnel_prove action (action_plugins/colab_tunnel_prove.py).

The proof runs on the controller, in-process in the action plugin. This file only documents it.
"""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: colab_tunnel_prove
short_description: Execute a cell on a Colab runtime the way Colab does, in each Colab flow
description:
  - Starts one kernel through the first of O(flows), runs O(code) in it, then reaches that same
    kernel through every other flow (its own REST call and kernel channel) and runs O(code)
    there too. Starting a kernel is most of what a check costs; one kernel serves all flows.
  - When the first flow fails, each other flow is checked on a kernel of its own, so that every
    flow gets its own verdict.
  - Fails unless every flow printed O(expect). The kernel is deleted afterwards.
  - With O(gpu), one more cell runs on that kernel once every flow passed, reporting the GPUs the kernel sees
    (torch when importable, else libcuda through ctypes), a small device computation when torch sees
    one, and a C(%pip install) of O(pip_package), removed again. Its verdict is returned, not failed
    on; RV(gpu_failure) says whether the caller should stop.
  - Runs on the controller; the token is never logged.
options:
  url:
    description: Base URL of the runtime as Colab reaches it, e.g. C(http://localhost:8888/).
    type: str
    required: true
  token:
    description: The runtime's token.
    type: str
    required: true
  flows:
    description: Colab flows to check, C(http_over_ws) (classic) and/or C(direct).
    type: list
    elements: str
    required: true
  code:
    description: The cell.
    type: str
    default: print(6*7)
  expect:
    description: What the cell must print (stripped); any output passes when unset.
    type: str
  origin:
    description: The Origin header each request carries, as Colab's page sends it.
    type: str
    default: https://colab.research.google.com
  gpu:
    description: Run the GPU and pip proof cell after the flows passed.
    type: bool
    default: false
  pip_package:
    description: Package the proof cell installs with C(%pip install) and removes again; empty skips pip.
    type: str
    default: ""
  gpu_required:
    description: Set RV(gpu_failure) when root sees a GPU (O(root_gpus) > 0) that the kernel does not.
    type: bool
    default: false
  root_gpus:
    description: GPUs root saw with a working driver; unset when the run did not check the host.
    type: int
  service:
    description: The runtime's systemd service, named in the fix.
    type: str
    default: colab-runtime
  gpu_timeout:
    description: Seconds the proof cell may take (importing torch and a pip install).
    type: int
    default: 300
extends_documentation_fragment:
  - action_common_attributes
  - action_common_attributes.flow
attributes:
  action:
    support: full
    details: Runs in the action plugin, on the controller; no module runs on a host.
  async:
    support: none
  bypass_host_loop:
    support: none
  check_mode:
    support: full
    details: >-
      Changes nothing that persists (the kernel it starts is deleted), so it runs the cell in
      check mode too.
  diff_mode:
    support: none
  platform:
    platforms: posix
author: colab-gpu-runtime
"""

EXAMPLES = r"""
- name: Execute a cell through the tunnel in both Colab flows
  colab_tunnel_prove:
    url: http://localhost:8888/
    token: "{{ colab_token }}"
    flows: [http_over_ws, direct]
    code: print(6*7)
    expect: "42"
  register: proof
"""

RETURN = r"""
stdout:
  description: "One line per flow, e.g. C(direct: OK: printed '42')."
  type: str
  returned: always
stdout_lines:
  description: The same lines as a list.
  type: list
  elements: str
  returned: always
gpu:
  description: What the kernel saw (gpus with name and memory, cuda, framework, compute, reason, pip).
  type: dict
  returned: when O(gpu) and every flow passed
gpu_summary:
  description: "C(GPU in notebooks: 1x NVIDIA T4 15 GiB, CUDA 13.0, torch 2.11.0) or C(no GPU visible to notebooks: <reason>)."
  type: str
  returned: when O(gpu) and every flow passed
pip:
  description: What the C(%pip install) check found.
  type: str
  returned: when O(gpu) and every flow passed
gpu_failure:
  description: Empty, or why the run must stop (root sees a GPU the kernel does not) and the fix.
  type: str
  returned: when O(gpu) and every flow passed
ok_flows:
  description: The flows that printed what was expected.
  type: list
  elements: str
  returned: always
"""
