#!/usr/bin/python
# -*- coding: utf-8 -*-
# SPDX-License-Identifier: Apache-2.0

# Why this module exists: a no-op re-run of ~100 idempotent tasks costs ~100 SSH round trips.
# This module answers in one round trip whether the host is still exactly as the last complete
# converge left it (same roles and settings, same managed files, same unit states, same kernel,
# same GPUs), so the play can skip the roles, and re-runs them as soon as anything differs.

from __future__ import annotations

DOCUMENTATION = r"""
---
module: converge_state
short_description: Record, and later verify, what a complete converge left on a host
description:
  - With O(state=record), writes a stamp file holding the converge O(digest), the SHA-256 of
    every O(files) entry, the active and enabled states of O(units), the kernel release, the
    output of each of O(commands) and the O(facts) to restore. It is written atomically and only
    when its content changes.
  - With O(state=check), reads the stamp and verifies every recorded item again on the host.
    RV(current) is true only when the digest matches and nothing drifted; RV(reasons) says what
    differs. A stamp that is not current is removed (outside check mode), so an interrupted
    re-converge can never be taken for a complete one.
options:
  state:
    description: C(check) or C(record).
    type: str
    choices: [check, record]
    required: true
  path:
    description: The stamp file (root-owned, mode 0600).
    type: path
    required: true
  digest:
    description: Digest of what the controller would apply (roles and settings).
    type: str
    required: true
  files:
    description: Files whose content is recorded (O(state=record)).
    type: list
    elements: path
    default: []
  units:
    description: systemd units whose ActiveState and UnitFileState are recorded (O(state=record)).
    type: list
    elements: str
    default: []
  commands:
    description: Commands (argument lists) whose exit status and output are recorded (O(state=record)).
    type: list
    elements: list
    default: []
  facts:
    description: Facts handed back by O(state=check) when the stamp is current (O(state=record)).
    type: dict
    default: {}
extends_documentation_fragment:
  - action_common_attributes
attributes:
  check_mode:
    support: full
    details: O(state=check) removes nothing and O(state=record) writes nothing; both report what they would do.
  diff_mode:
    support: none
  platform:
    platforms: posix
author:
  - colab-gpu-runtime
"""

EXAMPLES = r"""
- name: Check the host against the last converge
  converge_state:
    state: check
    path: /var/lib/colab-gpu-runtime/converged.json
    digest: "{{ digest }}"
  register: result

- name: End the play for this host when nothing changed
  ansible.builtin.meta: end_host
  when: result.current

- name: Record what the complete converge left on the host
  converge_state:
    state: record
    path: /var/lib/colab-gpu-runtime/converged.json
    digest: "{{ digest }}"
    files: [/etc/colab-runtime/jupyter_server_config.py]
    units: [colab-runtime.service]
    commands: [[nvidia-smi, -L]]
    facts:
      nvidia_gpu_summary: "{{ nvidia_gpu_summary }}"
"""

RETURN = r"""
current:
  description: Whether the stamp exists, its digest matches and nothing recorded has changed.
  returned: state=check
  type: bool
reasons:
  description: What differs (empty when current).
  returned: state=check
  type: list
  elements: str
facts:
  description: The facts recorded with the stamp (only when current).
  returned: state=check
  type: dict
  sample: {nvidia_gpu_summary: "1x NVIDIA T4, 15360 MiB, driver 580.95.05, CUDA 13.0"}
files:
  description: How many files the stamp records.
  returned: state=record
  type: int
  sample: 9
units:
  description: How many units the stamp records.
  returned: state=record
  type: int
  sample: 2
"""

import hashlib
import json
import os
import subprocess
import tempfile

from ansible.module_utils.basic import AnsibleModule

STAMP_VERSION = 1


def file_sha256(path):
    try:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        return digest.hexdigest()
    except FileNotFoundError:
        return None


def unit_states(module, units):
    """{unit: [ActiveState, UnitFileState]} in one systemctl call."""
    if not units:
        return {}
    rc, out, err = module.run_command(
        ["systemctl", "show", "--property=Id,ActiveState,UnitFileState", "--", *units]
    )
    if rc != 0:
        module.fail_json(msg="systemctl show failed: %s" % err.strip())
    states, block = {}, {}
    # One block per unit, in the order asked, separated by blank lines.
    for line in out.splitlines() + [""]:
        if line.strip():
            key, _, value = line.partition("=")
            block[key] = value
        elif block:
            states[len(states)] = [block.get("ActiveState", ""), block.get("UnitFileState", "")]
            block = {}
    return {unit: states.get(index, ["", ""]) for index, unit in enumerate(units)}


def command_results(commands):
    results = []
    for argv in commands:
        try:
            proc = subprocess.run(
                [str(arg) for arg in argv], capture_output=True, text=True, timeout=60, check=False
            )
            results.append([proc.returncode, proc.stdout])
        except (OSError, subprocess.TimeoutExpired) as exc:
            results.append([-1, type(exc).__name__])
    return results


def kernel_release():
    return os.uname().release


def snapshot(module, files, units, commands):
    return {
        "kernel": kernel_release(),
        "files": {path: file_sha256(path) for path in files},
        "units": unit_states(module, units),
        "commands": [{"argv": [str(a) for a in argv], "result": res}
                     for argv, res in zip(commands, command_results(commands))],
    }


def read_stamp(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def differences(module, stamp, digest):
    if stamp is None:
        return ["no record of a complete converge"]
    if stamp.get("version") != STAMP_VERSION:
        return ["the record was written by another version"]
    if stamp.get("digest") != digest:
        return ["roles or settings changed since the last converge"]
    reasons = []
    if stamp.get("kernel") != kernel_release():
        reasons.append("kernel changed: %s -> %s" % (stamp.get("kernel"), kernel_release()))
    for path, sha in sorted(stamp.get("files", {}).items()):
        now = file_sha256(path)
        if now != sha:
            reasons.append("%s %s" % (path, "is missing" if now is None else "changed"))
    recorded_units = stamp.get("units", {})
    for unit, now in unit_states(module, sorted(recorded_units)).items():
        if now != recorded_units[unit]:
            reasons.append("%s is %s/%s (was %s/%s)" % (unit, now[0], now[1], *recorded_units[unit]))
    recorded_commands = stamp.get("commands", [])
    for entry, now in zip(recorded_commands, command_results([c["argv"] for c in recorded_commands])):
        if now != entry["result"]:
            reasons.append("`%s` answers differently" % " ".join(entry["argv"]))
    return reasons


def write_atomic(path, text):
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".converge-state.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type="str", required=True, choices=["check", "record"]),
            path=dict(type="path", required=True),
            digest=dict(type="str", required=True),
            files=dict(type="list", elements="path", default=[]),
            units=dict(type="list", elements="str", default=[]),
            commands=dict(type="list", elements="list", default=[]),
            facts=dict(type="dict", default={}),
        ),
        supports_check_mode=True,
    )
    p = module.params
    stamp = read_stamp(p["path"])

    if p["state"] == "check":
        reasons = differences(module, stamp, p["digest"])
        if reasons and stamp is not None and not module.check_mode:
            # Bookkeeping, not configuration: the next complete converge writes it again.
            os.unlink(p["path"])
        module.exit_json(
            changed=False,
            current=not reasons,
            reasons=reasons,
            facts=(stamp or {}).get("facts", {}) if not reasons else {},
        )

    record = {
        "version": STAMP_VERSION,
        "digest": p["digest"],
        **snapshot(module, p["files"], p["units"], p["commands"]),
        "facts": p["facts"],
    }
    text = json.dumps(record, indent=1, sort_keys=True) + "\n"
    previous = None
    try:
        with open(p["path"], encoding="utf-8") as handle:
            previous = handle.read()
    except OSError:
        pass
    changed = previous != text
    if changed and not module.check_mode:
        write_atomic(p["path"], text)
    module.exit_json(changed=changed, files=len(p["files"]), units=len(p["units"]))


if __name__ == "__main__":
    main()
