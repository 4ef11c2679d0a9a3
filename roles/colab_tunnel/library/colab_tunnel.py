#!/usr/bin/python
"""Ansible module: start, check or stop the supervised SSH port forward to a Colab runtime."""

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
    script, the URL file): one module run instead of one per file, which is most of what a
    no-op run of the connect play costs.
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
  supervisor_script:
    description: Path of the supervisor script.
    type: path
    required: true
  python:
    description: Python interpreter that runs the supervisor; defaults to the module's own.
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
  supervisor_source:
    description: File copied to I(supervisor_script) (mode 0700) when their contents differ.
    type: path
  url:
    description: URL to keep in I(url_file) (mode 0600) once the tunnel carries HTTP; never logged.
    type: str
  url_file:
    description: Where I(url) is written.
    type: path
author: colab-gpu-runtime
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
  description: Supervisor process id, when running.
  type: int
  returned: always
ssh_pid:
  description: Current ssh process id, when running.
  type: int
  returned: always
log_tail:
  description: Last lines of the tunnel log.
  type: list
  elements: str
  returned: always
files_changed:
  description: Which of the tunnel's files were (or in check mode would be) written.
  type: list
  elements: str
  returned: always
"""

import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

from ansible.module_utils.basic import AnsibleModule


def read_int(path):
    try:
        with open(path) as fh:
            return int(fh.read().strip())
    except (OSError, ValueError):
        return None


def alive(pid):
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def http_answers(address, port, timeout=2.0):
    """True when an HTTP request through the forward gets an HTTP status line back."""
    try:
        with socket.create_connection((address, port), timeout=timeout) as sock:
            sock.sendall(b"GET /api/status HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            return sock.recv(12).startswith(b"HTTP/1.")
    except OSError:
        return False


def port_holder(address, port):
    """Describe what listens on address:port, or None when the port is free."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # As ssh does for its listener: connections of an earlier tunnel in TIME_WAIT do not hold the port.
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        probe.bind((address, port))
        return None
    except OSError:
        pass
    finally:
        probe.close()
    if shutil.which("ss"):
        out = subprocess.run(["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True).stdout
        found = re.findall(r'\("([^"]+)",pid=(\d+)', out)
        if found:
            return ", ".join(f"{name} (pid {pid})" for name, pid in dict.fromkeys(found))
    if shutil.which("lsof"):
        out = subprocess.run(
            ["lsof", "-nP", f"-iTCP:{port}", "-sTCP:LISTEN", "-Fpc"], capture_output=True, text=True
        ).stdout
        pids = re.findall(r"^p(\d+)$", out, re.M)
        names = re.findall(r"^c(.+)$", out, re.M)
        if pids:
            return ", ".join(f"{n} (pid {p})" for n, p in zip(names, pids))
    return "an unknown program"


def read_bytes(path):
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        return None


def write_file(path, data, mode):
    """Atomic write with the final mode from the start (the URL file holds the token)."""
    directory = os.path.dirname(path) or "."
    tmp = os.path.join(directory, ".%s.%d.tmp" % (os.path.basename(path), os.getpid()))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def ensure_file(module, path, data, mode, changed, diff=None):
    """Write path when its content or mode differs; record it in `changed` (and `diff`)."""
    before = read_bytes(path)
    same_mode = before is not None and (os.stat(path).st_mode & 0o7777) == mode
    if before == data and same_mode:
        return
    changed.append(path)
    if diff is not None:
        diff.append({
            "before_header": path, "after_header": path,
            "before": (before or b"").decode("utf-8", "replace"), "after": data.decode("utf-8", "replace"),
        })
    if not module.check_mode:
        write_file(path, data, mode)


def ensure_files(module):
    """The SSH configuration and supervisor script the tunnel runs with."""
    p = module.params
    changed, diff = [], []
    if p["ssh_config_content"] is None and p["supervisor_source"] is None:
        return changed, diff
    if not os.path.isdir(p["state_dir"]):
        changed.append(p["state_dir"])
        if not module.check_mode:
            os.makedirs(p["state_dir"], mode=0o700)
    if p["ssh_config_content"] is not None:
        ensure_file(module, p["ssh_config"], p["ssh_config_content"].encode(), 0o600, changed, diff)
    if p["supervisor_source"] is not None:
        source = read_bytes(p["supervisor_source"])
        if source is None:
            module.fail_json(msg="supervisor_source %s does not exist" % p["supervisor_source"])
        ensure_file(module, p["supervisor_script"], source, 0o700, changed)
    return changed, diff


class Tunnel:
    def __init__(self, module):
        self.m = module
        p = module.params
        self.alias = p["host_alias"]
        self.port = p["local_port"]
        self.address = p["bind_address"]
        base = os.path.join(p["state_dir"], self.alias)
        self.pidfile = base + ".pid"
        self.logfile = base + ".log"
        self.stampfile = base + ".config-sha256"
        config = p["ssh_config_content"].encode() if p["ssh_config_content"] is not None else read_bytes(p["ssh_config"])
        if config is None and not module.check_mode and p["state"] == "started":
            module.fail_json(msg="ssh_config %s does not exist" % p["ssh_config"])
        # None: check mode before the first run, nothing written yet.
        self.config_hash = None if config is None else hashlib.sha256(config + p["remote_command"].encode()).hexdigest()

    def pid(self):
        pid = read_int(self.pidfile)
        return pid if alive(pid) else None

    def ssh_pid(self):
        pid = read_int(self.pidfile + ".child")
        return pid if alive(pid) else None

    def healthy(self, wait=0.0):
        deadline = time.monotonic() + wait
        while True:
            if http_answers(self.address, self.port):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.25)

    def current_config(self):
        try:
            with open(self.stampfile) as fh:
                return fh.read().strip() == self.config_hash
        except OSError:
            return False

    def log_tail(self, n=15):
        try:
            with open(self.logfile, errors="replace") as fh:
                return [line.rstrip() for line in fh.readlines()[-n:]]
        except OSError:
            return []

    def stop(self):
        pid = self.pid()
        if not pid:
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
        return True

    def start(self):
        p = self.m.params
        command = [
            p["python"] or sys.executable, p["supervisor_script"], "--pidfile", self.pidfile, "--logfile", self.logfile, "--",
            "ssh", "-F", p["ssh_config"], self.alias, p["remote_command"],
        ]  # fmt: skip
        # The supervisor daemonizes itself; this call returns once it has forked.
        subprocess.run(command, check=True, stdin=subprocess.DEVNULL)
        with open(self.stampfile, "w") as fh:
            fh.write(self.config_hash + "\n")

    def result(self, changed, **extra):
        pid = self.pid()
        res = dict(
            changed=changed,
            running=bool(pid),
            healthy=bool(pid) and self.healthy(),
            pid=pid or 0,
            ssh_pid=self.ssh_pid() or 0,
            log_tail=self.log_tail(),
        )
        res.update(extra)
        return res


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type="str", default="started", choices=["started", "stopped", "status"]),
            host_alias=dict(type="str", required=True),
            ssh_config=dict(type="path", required=True),
            local_port=dict(type="int", required=True),
            bind_address=dict(type="str", default="127.0.0.1"),
            state_dir=dict(type="path", required=True),
            supervisor_script=dict(type="path", required=True),
            python=dict(type="path"),
            remote_command=dict(type="str", default="exec sleep infinity"),
            timeout=dict(type="int", default=30),
            ssh_config_content=dict(type="str"),
            supervisor_source=dict(type="path"),
            url=dict(type="str", no_log=True),
            url_file=dict(type="path"),
        ),
        required_together=[("url", "url_file")],
        supports_check_mode=True,
    )
    state = module.params["state"]
    files, diff = ensure_files(module) if state == "started" else ([], [])
    tunnel = Tunnel(module)

    def done(changed, **extra):
        if state == "started" and module.params["url_file"] and (module.check_mode or tunnel.healthy()):
            ensure_file(module, module.params["url_file"], (module.params["url"] + "\n").encode(), 0o600, files)
        result = tunnel.result(changed or bool(files), files_changed=files, **extra)
        if diff and module._diff:
            result["diff"] = diff
        module.exit_json(**result)

    if state == "status":
        module.exit_json(**tunnel.result(False))

    if state == "stopped":
        running = bool(tunnel.pid())
        if running and not module.check_mode:
            tunnel.stop()
        module.exit_json(**tunnel.result(running))

    # started: keep a healthy tunnel that runs the same configuration.
    if tunnel.pid() and tunnel.current_config() and tunnel.healthy(wait=3):
        done(False)
    if module.check_mode:
        done(True)
    tunnel.stop()
    holder = port_holder(tunnel.address, tunnel.port)
    if holder:
        module.fail_json(
            msg=(
                f"Local port {tunnel.address}:{tunnel.port} is already in use by {holder}. Stop that program, "
                f"or choose another port with colab_tunnel_local_port (the runtime's colab_runtime_port must match "
                f"it for Colab's classic flow)."
            ),
            **tunnel.result(False),
        )
    tunnel.start()
    if not tunnel.healthy(wait=module.params["timeout"]):
        tail = tunnel.log_tail()
        tunnel.stop()
        module.fail_json(
            msg=(
                f"The SSH tunnel {tunnel.address}:{tunnel.port} -> {tunnel.alias} did not carry HTTP within "
                f"{module.params['timeout']}s; see the log below and {tunnel.logfile}."
            ),
            **tunnel.result(True, log_tail=tail),
        )
    done(True)


if __name__ == "__main__":
    sys.exit(main())
