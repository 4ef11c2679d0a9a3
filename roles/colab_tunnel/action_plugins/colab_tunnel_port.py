# -*- coding: utf-8 -*-
"""Action colab_tunnel_port: the local port of one runtime's tunnel, never another runtime's.

Several runtimes (of one person, or a team's) run side by side on one controller, each with its
own tunnel, URL file and port. The unnamed runtime keeps the port it always had
(colab_runtime_port, 8888) unless another runtime holds it (a teammate's unnamed runtime connected
from the same machine). Any other is assigned the first port above it that no other runtime's record
holds and nothing listens on. The choice is recorded (<state dir>/<alias>.port), so that it stays
the same on every run (Colab remembers the URL) and a runtime connected in the same run sees it.
An explicitly set port is used as given, unless another runtime's record holds it. A guard file taken with flock makes read-decide-record atomic when
several runtimes are connected in one run (forks). Options and return values are documented in
library/colab_tunnel_port.py.
"""

from __future__ import annotations

import errno
import fcntl
import glob
import os
import re
import socket

from ansible.plugins.action import ActionBase

ARGUMENT_SPEC = dict(
    state_dir=dict(type="path", required=True),
    host_alias=dict(type="str", required=True),
    requested=dict(type="int", default=0),
    default_port=dict(type="int", default=8888),
    runtime_name=dict(type="str", default=""),
    bind_address=dict(type="str", default="127.0.0.1"),
)

# How far above the unnamed runtime's port a named runtime's port is looked for.
SEARCH_SPAN = 200
_URL_PORT = re.compile(r"^https?://[^/:]+:([0-9]+)/")


def choose_port(requested, runtime_name, default_port, own_record, others, listening):
    """The decision alone: (port, assigned, error).

    requested: the port set explicitly (0: none); runtime_name: "" for the unnamed runtime;
    default_port: the unnamed runtime's port; own_record: the port recorded for this runtime (0:
    none); others: {other runtime's alias: its recorded port}; listening: port -> whether
    something listens there now. `assigned` is true when the port was chosen here (no explicit
    port) and must be recorded.
    """
    holders = {}
    for alias, port in sorted(others.items()):
        holders.setdefault(port, alias)
    if requested:
        if requested in holders:
            return 0, False, (
                "colab_tunnel_local_port %d is the port of runtime %s (recorded in its state files): two tunnels cannot "
                "share it. Fix: choose another port, or leave colab_tunnel_local_port unset (0) to get a free one assigned."
                % (requested, holders[requested])
            )
        return requested, False, ""
    if not runtime_name and default_port not in holders:
        return default_port, True, ""
    if own_record and own_record not in holders:
        return own_record, True, ""
    # The unnamed runtime's port is never handed to another one: it would collide with it later.
    for port in range(default_port + 1, min(default_port + 1 + SEARCH_SPAN, 65536)):
        if port not in holders and not listening(port):
            return port, True, ""
    return 0, False, (
        "No free local port from %d to %d for runtime %s: other runtimes record or something listens on all of them. "
        "Fix: set colab_tunnel_local_port to a free port."
        % (default_port + 1, default_port + SEARCH_SPAN, runtime_name or "(unnamed)")
    )


def read_records(state_dir, own_alias):
    """({other alias: port}, own recorded port) from the assignment records and the URL files."""
    others, own = {}, 0
    for path in sorted(glob.glob(os.path.join(glob.escape(state_dir), "*.port"))
                       + glob.glob(os.path.join(glob.escape(state_dir), "*.url"))):
        alias, kind = os.path.splitext(os.path.basename(path))
        try:
            with open(path) as fh:
                text = fh.read().strip()
        except OSError:
            continue
        match = _URL_PORT.match(text) if kind == ".url" else re.fullmatch(r"[0-9]+", text)
        if not match:
            continue
        port = int(match.group(1) if kind == ".url" else match.group(0))
        if alias == own_alias:
            # The assignment record wins over the URL file (written after it, by the same choice).
            own = port if kind == ".port" or not own else own
        else:
            others.setdefault(alias, port)
    return others, own


def listens(address, port):
    """Whether the port is taken on this machine: a bind to it fails with 'address in use'."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((address, port))
        except OSError as err:
            return err.errno == errno.EADDRINUSE
    return False


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        _, params = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        state_dir, alias = params["state_dir"], params["host_alias"]
        record = os.path.join(state_dir, alias + ".port")
        exists = os.path.isdir(state_dir)
        if not exists and not self._task.check_mode:
            os.makedirs(state_dir, mode=0o700, exist_ok=True)
            exists = True
        guard = open(os.path.join(state_dir, "ports.guard"), "a") if exists else None
        try:
            if guard:
                fcntl.flock(guard, fcntl.LOCK_EX)
            others, own = read_records(state_dir, alias) if exists else ({}, 0)
            port, assigned, error = choose_port(
                params["requested"], params["runtime_name"], params["default_port"], own, others,
                lambda p: listens(params["bind_address"], p),
            )  # fmt: skip
            if error:
                result.update(failed=True, msg=error)
                return result
            changed = assigned and own != port
            if changed and not self._task.check_mode:
                tmp_path = "%s.%d.tmp" % (record, os.getpid())
                with open(os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as fh:
                    fh.write("%d\n" % port)
                os.replace(tmp_path, record)
        finally:
            if guard:
                guard.close()
        result.update(changed=changed, port=port, assigned=assigned, record=record if assigned else "")
        return result
