"""The bench scripts start and find what they import (they are not run by the suite: `make bench`)."""

from __future__ import annotations

import json
import subprocess
import sys

from colab_testkit.substrate import ROOT


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)


def test_probe_imports_the_colab_client_and_the_chromium_driver():
    # probe.py imports the Chromium driver only when asked for the browser client: import it here.
    code = "import runpy; from colab_testkit.browser import ColabBrowser; print(runpy.run_path('bench/probe.py')['FLOWS'])"
    res = run("-c", code)
    assert res.returncode == 0, res.stderr
    assert "http_over_ws" in res.stdout


def test_run_py_starts():
    res = run("bench/run.py", "--help")
    assert res.returncode == 0, res.stderr
    assert "--only" in res.stdout


def test_bench_tunnel_alias_is_the_role_s():
    code = (
        "import runpy; "
        "print(runpy.run_path('bench/run.py')['Site'].alias.fget(None))"
    )
    res = run("-c", code)
    assert res.returncode == 0, res.stderr
    # colab_tunnel_host_alias: the inventory name when it already starts with colab-.
    assert res.stdout.strip() == "colab-gpu-runtime-bench"


def test_turns_are_counted_for_the_task_running_when_they_happened(tmp_path):
    log = tmp_path / "tasks.jsonl"
    log.write_text(
        '{"time": 10.0, "play": "Configure", "role": "", "task": "Gather"}\n'
        '{"time": 30.0, "play": "Configure", "role": "nvidia_gpu", "task": "Detect"}\n'
        '{"time": 20.0, "play": "Configure", "role": "idle_stop", "task": "Install"}\n'
    )
    turns = [(5.0, "ansible"), (11.0, "ansible"), (21.0, "ansible"), (22.0, "ansible"), (25.0, "tunnel"), (31.0, "ansible")]
    code = (
        "import runpy, sys, json, pathlib; f = runpy.run_path('bench/run.py')['turns_by_role']; "
        f"print(json.dumps(f({turns!r}, pathlib.Path({str(log)!r}))))"
    )
    res = run("-c", code)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == {
        "idle_stop": 2, "(before the first task)": 1, "play: Configure": 1, "nvidia_gpu": 1,
    }


def test_latency_report_puts_each_cell_beside_the_network_alone():
    phase = {
        "round_trips_ms": [0.0, 40.0], "steps": {}, "first_converge": {},
        "network": {"0": {"median_ms": 0.3, "p90_ms": 0.9}, "40": {"median_ms": 41.3, "p90_ms": 41.6}},
        "cells": [
            {"rtt_ms": 0.0, "server": "ours", "path": "tunnel", "client": "python",
             "flows": {"direct": {"ok": True, "median_ms": 4.5, "p90_ms": 6.0}, "http_over_ws": {"ok": False}}},
            {"rtt_ms": 40.0, "server": "ours", "path": "tunnel", "client": "python",
             "flows": {"direct": {"ok": True, "median_ms": 46.0, "p90_ms": 48.0}}},
            {"rtt_ms": 40.0, "server": "stock", "path": "ssh -N", "client": "python",
             "flows": {"direct": {"ok": True, "median_ms": 88.0, "p90_ms": 90.0}}},
        ],
        "idle_gap": {"pause_ms": 40.0, "kernel_alone": {"median_ms": 3.1, "p90_ms": 4.0},
                     "kernel_alone_paused": {"median_ms": 5.4, "p90_ms": 6.0},
                     "ours": {"direct": {"ok": True, "median_ms": 4.0, "p90_ms": 5.0}}},
    }  # fmt: skip
    code = (
        "import runpy, json, sys; g = runpy.run_path('bench/run.py'); p = json.loads(sys.argv[1]); "
        "print(json.dumps({'excess': [[*k, v] for k, v in g['cell_over_network'](p).items()], 'lines': g['latency_lines'](p)}))"
    )
    res = run("-c", code, json.dumps(phase))
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    # Only our cells that worked, each minus the network alone at the same round trip.
    assert out["excess"] == [["python", "direct", "0", 4.2], ["python", "direct", "40", 4.7]]
    network_row = next(line for line in out["lines"] if "network alone (echo" in line)
    assert network_row.split()[-6:] == ["0.3", "/", "0.9", "41.3", "/", "41.6"]
    assert any(line.split() == ["python", "direct", "4.2", "4.7"] for line in out["lines"])
    # The idle-gap control: the same cell after a pause as long as the delay, with no delay.
    assert any("back to back / after the pause  3.1 / 4.0  ->  5.4 / 6.0" in line for line in out["lines"])
    assert any("ours minus the network alone minus this: 0.7 ms" in line for line in out["lines"])
