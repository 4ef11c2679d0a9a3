# -*- coding: utf-8 -*-
# SPDX-License-Identifier: Apache-2.0
"""Action colab_tunnel: start, check or stop the supervised SSH port forward to a Colab runtime.

The tunnel, its files and its supervisor all live on the controller, so this runs in-process in
Ansible's worker instead of as a module: no module payload is built and no interpreter started,
which was most of the time a no-op run of the connect play took. Options and return values are
documented in library/colab_tunnel.py.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import runpy
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import types

from ansible.plugins.action import ActionBase
from ansible.plugins.loader import module_utils_loader

ARGUMENT_SPEC = dict(
    state=dict(type="str", default="started", choices=["started", "stopped", "status"]),
    host_alias=dict(type="str", required=True),
    ssh_config=dict(type="path", required=True),
    local_port=dict(type="int", required=True),
    bind_address=dict(type="str", default="127.0.0.1"),
    state_dir=dict(type="path", required=True),
    control_dir=dict(type="path"),
    supervisor_script=dict(type="path", required=True),
    python=dict(type="path"),
    remote_command=dict(type="str", default="exec sleep infinity"),
    timeout=dict(type="int", default=30),
    ssh_config_content=dict(type="str"),
    ssh_config_index=dict(type="path"),
    ssh_config_index_content=dict(type="str"),
    supervisor_source=dict(type="path"),
    url=dict(type="str", no_log=True),
    url_file=dict(type="path"),
)


class TunnelError(Exception):
    """A failure to report; ``result`` carries the tunnel's state at that moment."""

    def __init__(self, msg, **result):
        super().__init__(msg)
        self.result = result


# The role's process helpers, module_utils/colab_process.py: this plugin's import of them, by path
# (an action plugin outside a collection cannot import a role's module_utils by name; see colab_tunnel_prove).
_process = functools.cache(lambda: types.SimpleNamespace(**runpy.run_path(module_utils_loader.find_plugin("colab_process"))))


def read_int(path):
    try:
        with open(path) as fh:
            return int(fh.read().strip())
    except (OSError, ValueError):
        return None


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


def ensure_file(check_mode, path, data, mode, changed, diff=None):
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
    if not check_mode:
        write_file(path, data, mode)


def ensure_private_dir(check_mode, path, changed):
    """A directory only this user can enter (the SSH control socket lives there, in /tmp)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        changed.append(path)
        if not check_mode:
            os.mkdir(path, 0o700)
        return
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise TunnelError(
            f"{path} (the tunnel's SSH control socket directory) exists but is not a private directory of yours "
            f"(owner uid {st.st_uid}, mode {stat.filemode(st.st_mode)}): another user could reach your SSH connection "
            f"through it. Remove it if it is yours, or set colab_tunnel_control_dir to another short directory."
        )


def ensure_files(p, check_mode):
    """The SSH configuration and supervisor script the tunnel runs with."""
    changed, diff = [], []
    if p["ssh_config_content"] is None and p["supervisor_source"] is None:
        return changed, diff
    if not os.path.isdir(p["state_dir"]):
        changed.append(p["state_dir"])
        if not check_mode:
            os.makedirs(p["state_dir"], mode=0o700)
    if p["control_dir"]:
        ensure_private_dir(check_mode, p["control_dir"], changed)
    if p["ssh_config_content"] is not None:
        ensure_file(check_mode, p["ssh_config"], p["ssh_config_content"].encode(), 0o600, changed, diff)
    if p["ssh_config_index"] and p["ssh_config_index_content"] is not None:
        ensure_file(check_mode, p["ssh_config_index"], p["ssh_config_index_content"].encode(), 0o600, changed, diff)
    if p["supervisor_source"] is not None:
        source = read_bytes(p["supervisor_source"])
        if source is None:
            raise TunnelError("supervisor_source %s does not exist" % p["supervisor_source"])
        ensure_file(check_mode, p["supervisor_script"], source, 0o700, changed)
    return changed, diff


class Tunnel:
    def __init__(self, params, check_mode):
        p = self.params = params
        self.check_mode = check_mode
        self.alias = p["host_alias"]
        self.port = p["local_port"]
        self.address = p["bind_address"]
        base = os.path.join(p["state_dir"], self.alias)
        self.pidfile = base + ".pid"
        self.logfile = base + ".log"
        self.stampfile = base + ".config-sha256"
        self.supervisor_script = p["supervisor_script"]
        self._answered = False
        config = p["ssh_config_content"].encode() if p["ssh_config_content"] is not None else read_bytes(p["ssh_config"])
        if config is None and not check_mode and p["state"] == "started":
            raise TunnelError("ssh_config %s does not exist" % p["ssh_config"])
        self.config_hash = None if config is None else hashlib.sha256(config + p["remote_command"].encode()).hexdigest()
    def pid(self):
        """The supervisor's pid when the pid file names a live supervisor of this very tunnel."""
        pid, process = read_int(self.pidfile), _process()
        if not process.pid_alive(pid):
            return None
        command, _ = process.process_info(pid)
        return pid if command and self.supervisor_script in command and self.pidfile in command else None

    def ssh_pid(self):
        """The ssh the supervisor runs (a child of it), else None."""
        supervisor, pid, process = self.pid(), read_int(self.pidfile + ".child"), _process()
        return pid if supervisor and process.pid_alive(pid) and process.process_info(pid)[1] == supervisor else None

    def healthy(self, wait=0.0):
        """Whether the forward carries HTTP, polled for up to wait seconds.

        Each probe is a new connection through the tunnel (an SSH channel, then a request): two
        network round trips. Once it answered in this task, later questions of the same task are
        answered from that, not asked over the network again.
        """
        if self._answered:
            return True
        deadline = time.monotonic() + wait
        while True:
            if http_answers(self.address, self.port):
                self._answered = True
                return True
            if time.monotonic() >= deadline:
                return False
            # Short polls: a starting ssh is ready a few round trips after start, not at a tick.
            time.sleep(0.05)

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
        """Stop our supervisor and its ssh; a pid file naming any other process is only removed."""
        self._answered = False
        pid = self.pid()
        if not pid:
            for stale in (self.pidfile, self.pidfile + ".child"):
                if not self.check_mode and os.path.exists(stale):
                    os.unlink(stale)
            return False
        try:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while _process().pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _process().pid_alive(pid):
                # The supervisor leads its own process group (it called setsid): this takes its ssh too.
                os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        except PermissionError as err:
            raise TunnelError(
                f"Cannot stop the tunnel's supervisor (pid {pid}): {err.strerror}. It was started by another user; "
                f"stop it as that user, or remove {self.pidfile} if it is not a tunnel of yours."
            ) from err
        return True

    def start(self):
        p = self.params
        command = [
            p["python"] or sys.executable, p["supervisor_script"], "--pidfile", self.pidfile, "--logfile", self.logfile,
            *(["--mkdir", p["control_dir"]] if p["control_dir"] else []), "--",
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



def manage(p, check_mode, want_diff):
    """The result dict for state p["state"]; raises TunnelError on failure."""
    state = p["state"]
    files, diff = ensure_files(p, check_mode) if state == "started" else ([], [])
    tunnel = Tunnel(p, check_mode)

    def done(changed, **extra):
        if state == "started" and p["url_file"] and (check_mode or tunnel.healthy()):
            ensure_file(check_mode, p["url_file"], (p["url"] + "\n").encode(), 0o600, files)
        result = tunnel.result(changed or bool(files), files_changed=files, **extra)
        if diff and want_diff:
            result["diff"] = diff
        return result

    if state == "status":
        return tunnel.result(False)
    if state == "stopped":
        running = bool(tunnel.pid())
        if not check_mode:
            tunnel.stop()  # also clears pid files that name no tunnel of ours
        return tunnel.result(running)
    if tunnel.pid() and tunnel.current_config() and tunnel.healthy(wait=3):
        return done(False)
    if check_mode:
        return done(True)
    tunnel.stop()
    holder = port_holder(tunnel.address, tunnel.port)
    if holder:
        raise TunnelError(
            f"Local port {tunnel.address}:{tunnel.port} is already in use by {holder}. Stop that program, "
            f"or choose another port with colab_tunnel_local_port (the runtime's colab_runtime_port must match "
            f"it for Colab's classic flow).",
            **tunnel.result(False),
        )
    tunnel.start()
    if not tunnel.healthy(wait=p["timeout"]):
        tail = tunnel.log_tail()
        tunnel.stop()
        raise TunnelError(
            f"The SSH tunnel {tunnel.address}:{tunnel.port} -> {tunnel.alias} did not carry HTTP within "
            f"{p['timeout']}s; see the log below and {tunnel.logfile}.",
            **tunnel.result(True, log_tail=tail),
        )
    return done(True)


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        _, params = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        try:
            result.update(manage(params, self._task.check_mode, self._task.diff))
        except TunnelError as err:
            result.update(err.result, failed=True, msg=str(err))
        return result
