"""The bench scripts start and find what they import (they are not run by the suite: `make bench`)."""

from __future__ import annotations

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
