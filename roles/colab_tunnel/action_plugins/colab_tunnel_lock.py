# -*- coding: utf-8 -*-
"""Action colab_tunnel_lock: one ansible-playbook run at a time per runtime on this controller.

Two runs at once could launch two instances or start two tunnel supervisors. The lock is a file
naming the ansible-playbook process that holds it (pid and start time, so that a reused pid is not
mistaken for the holder); it is released when that process exits, however it ends, because the
next run finds the holder gone. A guard file taken with flock makes check-and-take atomic.
Options and return values are documented in library/colab_tunnel_lock.py.
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import runpy
import time
import types

from ansible.plugins.action import ActionBase
from ansible.plugins.loader import module_utils_loader

ARGUMENT_SPEC = dict(
    path=dict(type="path", required=True),
    timeout=dict(type="int", default=0),
)


# The role's process helpers, module_utils/colab_process.py: this plugin's import of them, by path
# (an action plugin outside a collection cannot import a role's module_utils by name; see colab_tunnel_prove).
_process = functools.cache(lambda: types.SimpleNamespace(**runpy.run_path(module_utils_loader.find_plugin("colab_process"))))


def read_holder(path):
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def holder_alive(holder):
    return bool(holder) and _process().start_time(int(holder.get("pid", 0))) == holder.get("start")


def take(path, me):
    """Take the lock for `me`, or return the live holder that has it. (changed, holder)"""
    with open(path + ".guard", "a") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        holder = read_holder(path)
        if holder and holder.get("pid") == me["pid"] and holder.get("start") == me["start"]:
            return False, None
        if holder_alive(holder):
            return False, holder
        tmp = "%s.%d.tmp" % (path, os.getpid())
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as fh:
            json.dump(me, fh)
        os.replace(tmp, path)
        return True, None


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        _, params = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        path = params["path"]
        # Task workers are forked from the ansible-playbook process: the run is our parent.
        run_pid = os.getppid()
        me = {
            "pid": run_pid,
            "start": _process().start_time(run_pid),
            "command": _process().command_line(run_pid),
            "since": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        }
        result.update(path=path, holder=me)
        if self._task.check_mode and not os.path.isdir(os.path.dirname(path)):
            return result
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        deadline = time.monotonic() + params["timeout"]
        while True:
            changed, holder = take(path, me)
            if holder is None:
                # Bookkeeping of this run, not a change to the runtime: a no-op run stays changed=0.
                result.update(changed=False, taken=changed)
                return result
            if time.monotonic() >= deadline:
                result.update(
                    failed=True,
                    holder=holder,
                    msg=(
                        f"Another run is working on this runtime: pid {holder['pid']} ({holder.get('command') or '?'}), "
                        f"since {holder.get('since', '?')}. Wait for it to finish (or stop it) and run again; "
                        f"colab_tunnel_lock_timeout sets how many seconds a run waits for the lock."
                    ),
                )
                return result
            time.sleep(1)
