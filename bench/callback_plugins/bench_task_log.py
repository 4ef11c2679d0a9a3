# -*- coding: utf-8 -*-
# SPDX-License-Identifier: Apache-2.0
"""Bench-only callback: when each task starts, as JSON lines in $COLAB_BENCH_TASK_LOG.

bench/run.py's latency phase reads it next to the relay's turn times to count the SSH turns of
each role (every turn between a task's start and the next task's start belongs to that task;
the plays run one host at a time, so tasks do not overlap).
"""

from __future__ import annotations

DOCUMENTATION = r"""
name: bench_task_log
type: aggregate
short_description: Log the start time, role and name of every task (bench only)
description:
  - Appends one JSON line per task and handler start to the file named by E(COLAB_BENCH_TASK_LOG).
requirements:
  - enabled by the bench through E(ANSIBLE_CALLBACKS_ENABLED)
"""

import json
import os
import time

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "bench_task_log"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._path = os.environ.get("COLAB_BENCH_TASK_LOG")
        self._play = ""

    def _log(self, task) -> None:
        if not self._path:
            return
        role = task._role.get_name() if task._role else ""
        entry = {"time": time.time(), "play": self._play, "role": role, "task": task.get_name()}
        with open(self._path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry) + "\n")

    def v2_playbook_on_play_start(self, play):
        self._play = play.get_name()

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._log(task)

    def v2_playbook_on_handler_task_start(self, task):
        self._log(task)
