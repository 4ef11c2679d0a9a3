# -*- coding: utf-8 -*-
# SPDX-License-Identifier: Apache-2.0
"""What the controller can tell about a process by its pid: alive, command line, parent, start time.

A pid file or a lock file can outlive its process, and the pid be reused by any program: these
tell a process of ours from a stranger before anything is signalled or a lock is taken over.
Linux answers from /proc; where there is none (macOS), ps answers.

The one home of these helpers: the colab_tunnel role's action plugins (colab_tunnel,
colab_tunnel_lock) load this file from the role's module_utils folder, and the test kit
(tests/colab_testkit) imports it from here too.
"""

from __future__ import annotations

import os
import subprocess


def pid_alive(pid):
    """Whether a process with this id exists (one of another user counts)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _ps(pid, field):
    """One ps field of the process, '' when there is no such process."""
    return subprocess.run(["ps", "-ww", "-o", field + "=", "-p", str(pid)], capture_output=True, text=True).stdout.strip()


def _stat_fields(pid):
    """/proc/<pid>/stat after the command name (state, ppid, ...); OSError when it cannot be read.

    The command name is in parentheses and may itself hold spaces and parentheses: split after the last one.
    """
    with open("/proc/%d/stat" % pid) as fh:
        return fh.read().rsplit(")", 1)[1].split()


def command_line(pid):
    """The process's command line, its arguments joined by spaces; None when it cannot be read."""
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
    except OSError:
        if os.path.isdir("/proc/self"):
            return None
    return _ps(pid, "command") or None


def parent_pid(pid):
    """The pid of the process's parent, or None when it cannot be read."""
    try:
        return int(_stat_fields(pid)[1])
    except (OSError, ValueError, IndexError):
        if os.path.isdir("/proc/self"):
            return None
    text = _ps(pid, "ppid")
    return int(text) if text.isdigit() else None


def process_info(pid):
    """(command line, parent pid) of a live process, or (None, None) when it cannot be read."""
    command, parent = command_line(pid), parent_pid(pid)
    return (command, parent) if command is not None and parent is not None else (None, None)


def start_time(pid):
    """A token that changes when the pid is reused: the process's start time, or None when it is gone."""
    try:
        return _stat_fields(pid)[19]
    except (OSError, IndexError):
        if os.path.isdir("/proc/self"):
            return None
    return _ps(pid, "lstart") or None
