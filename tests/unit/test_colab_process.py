"""The controller's process helpers (roles/colab_tunnel/module_utils/colab_process.py): what they
say of live, gone and reused pids, from /proc and, where there is none (macOS), from ps; and that
they have no copies elsewhere."""

from __future__ import annotations

import ast
import builtins
import os
import subprocess
import sys

import pytest

from colab_testkit.substrate import ROOT, colab_process, pid_alive

HOME = ROOT / "roles" / "colab_tunnel" / "module_utils" / "colab_process.py"
HELPERS = {"alive", "pid_alive", "process_info", "command_line", "parent_pid", "start_time", "process_start"}


@pytest.fixture
def child():
    code = "import time; print(1, flush=True); time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", code, "colab process test"], stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"1"  # running Python, not still the forked test process
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture(params=["proc", "ps"])
def process(request, monkeypatch):
    """The helpers as Linux runs them, and as a system without /proc does (ps answers)."""
    if request.param == "ps":
        real_open = builtins.open

        def no_proc(path, *args, **kwargs):
            if str(path).startswith("/proc/"):
                raise FileNotFoundError(path)
            return real_open(path, *args, **kwargs)

        monkeypatch.setattr(colab_process, "open", no_proc, raising=False)
        monkeypatch.setattr(colab_process.os.path, "isdir", lambda path: False if path == "/proc/self" else os.path.isdir(path))
    return colab_process


def gone_pid():
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_live_process(process, child):
    assert process.pid_alive(child.pid)
    command, parent = process.process_info(child.pid)
    assert command.endswith("import time; print(1, flush=True); time.sleep(60) colab process test")
    assert parent == os.getpid() == process.parent_pid(child.pid)
    assert process.start_time(child.pid) and process.start_time(child.pid) == process.start_time(child.pid)


def test_a_gone_process(process):
    pid = gone_pid()
    assert not process.pid_alive(pid) and not process.pid_alive(None) and not process.pid_alive(0)
    assert process.process_info(pid) == (None, None)
    assert process.command_line(pid) is None and process.parent_pid(pid) is None and process.start_time(pid) is None


def test_start_time_tells_processes_apart(child):
    # The lock compares it with the holder's recorded one: another process's is another value.
    assert colab_process.start_time(child.pid) != colab_process.start_time(1)


def test_the_kit_uses_the_role_file():
    assert pid_alive is colab_process.pid_alive
    assert colab_process.__file__ == str(HOME)


def test_no_copies_of_the_helpers():
    tracked = subprocess.run(["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    copies = []
    for rel in tracked:
        path = ROOT / rel
        if path == HOME or not path.is_file():
            continue
        tree = ast.parse(path.read_text())
        copies += [f"{rel}:{n.lineno} {n.name}" for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name in HELPERS]
    assert copies == [], "use roles/colab_tunnel/module_utils/colab_process.py (colab_testkit.substrate.colab_process)"
