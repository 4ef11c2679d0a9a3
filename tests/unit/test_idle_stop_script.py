"""roles/idle_stop's script (files/idle_stop.py) reading Jupyter's answers, on this machine.

A test double serves the Jupyter REST answers; boot time and terminal logins are pinned so that
only the answers decide. The decision itself is tests/unit/test_idle_stop_decision.py; the role on
real hosts is tests/e2e/test_idle_stop.py.
"""

from __future__ import annotations

import http.server
import json
import os
import sys
import threading
import time
import urllib.parse

import pytest

from colab_testkit.substrate import free_port, load_role_file


class JupyterApiTestDouble(http.server.ThreadingHTTPServer):
    """Answers /api/status, /api/kernels and /api/sessions with canned JSON; records requests."""

    def __init__(self) -> None:
        self.answers: dict[str, object] = {}
        self.status_code = 200
        self.requests: list[tuple[str, str | None]] = []
        double = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                double.requests.append((self.path, self.headers.get("Authorization")))
                path = urllib.parse.urlsplit(self.path).path.rstrip("/")
                body = json.dumps(double.answers.get(path, {})).encode()
                self.send_response(double.status_code)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"


def iso(seconds_ago: float) -> str:
    stamp = time.gmtime(time.time() - seconds_ago)
    return time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", stamp)


@pytest.fixture
def script(tmp_path, monkeypatch):
    monkeypatch.delitem(sys.modules, "idle_stop_script", raising=False)  # put back as it was after the test
    module = load_role_file("idle_stop", "files/idle_stop.py", "idle_stop_script")
    monkeypatch.setattr(module, "boot_time", lambda: time.time() - 86400)
    monkeypatch.setattr(module, "gather_terminals", tuple)
    monkeypatch.setattr(module.shutil, "which", lambda name: None)  # no nvidia-smi
    return module


@pytest.fixture
def jupyter():
    server = JupyterApiTestDouble()
    server.answers = {"/api/status": {"last_activity": iso(3600)}, "/api/kernels": [], "/api/sessions": []}
    yield server
    server.shutdown()
    server.server_close()


def decide(script, tmp_path, jupyter, capsys, limit: int = 600, **extra) -> str:
    """One run of the script in dry-run mode; returns its log line."""
    token = tmp_path / "token"
    token.write_text("t0ken\n")
    config = tmp_path / "idle-stop.json"
    cfg = {
        "limit_seconds": limit,
        "warning_seconds": 120,
        "jupyter_url": jupyter.url,
        "jupyter_token_file": str(token),
        "count_kernel_connections": True,
        "gpu_utilization_threshold": 10,
        "state_file": str(tmp_path / "state.json"),
        **extra,
    }
    config.write_text(json.dumps(cfg))
    old = time.time() - 86400
    os.utime(config, (old, old))  # configured long ago
    assert script.main(["--config", str(config), "--dry-run"]) == 0
    return capsys.readouterr().out.strip()


def test_script_names_busy_kernels_and_open_notebooks_without_counting_its_own_polls(script, tmp_path, jupyter, capsys):
    kid = "abcdef12-3456-7890-abcd-ef1234567890"
    jupyter.answers["/api/kernels"] = [
        {"id": kid, "execution_state": "busy", "last_activity": iso(3600), "connections": 2},
        # Never connected: stays "starting" for ever, which is no use.
        {"id": "99999999-0000", "execution_state": "starting", "last_activity": iso(3600), "connections": 0},
    ]
    jupyter.answers["/api/sessions"] = [{"path": "train.ipynb", "kernel": {"id": kid}}]
    line = decide(script, tmp_path, jupyter, capsys)
    assert line.startswith("idle_stop: busy: kernel abcdef12 (train.ipynb) busy; 2 open kernel connections |"), line
    assert "99999999" not in line.split("|")[0]
    assert len(jupyter.requests) == 3
    for path, auth in jupyter.requests:
        assert "no_track_activity=1" in path
        assert auth == "token t0ken"

    # The cell finished; a tab is still open but not counted: idle, counted from the last busy run.
    jupyter.answers["/api/kernels"][0].update(execution_state="idle", connections=1)
    line = decide(script, tmp_path, jupyter, capsys, count_kernel_connections=False)
    assert "idle for 0s < 10 min (last: last seen in use, 0s ago)" in line, line
    assert "1 open kernel connection (not counted)" in line, line


def test_script_powers_off_only_once_the_latest_activity_is_a_limit_old(script, tmp_path, jupyter, capsys):
    jupyter.answers["/api/kernels"] = [{"id": "k1", "execution_state": "idle", "last_activity": iso(500)}]
    line = decide(script, tmp_path, jupyter, capsys, limit=600)
    assert "idle for 8 min < 10 min (last: kernel k1 activity" in line, line
    assert "would warn 0 terminal(s) (dry run)" in line  # inside the warning window (last 120 s)
    jupyter.answers["/api/kernels"][0]["last_activity"] = iso(601)
    line = decide(script, tmp_path, jupyter, capsys, limit=600)
    assert "idle for 10 min >= 10 min" in line and "would power off (dry run)" in line, line


def test_script_keeps_an_unreadable_jupyter_up_for_one_limit_only(script, tmp_path, jupyter, capsys):
    jupyter.status_code = 500
    line = decide(script, tmp_path, jupyter, capsys, limit=600)
    assert line.startswith("idle_stop: busy: cannot tell (jupyter answered HTTP 500"), line
    state_file = tmp_path / "state.json"
    state = json.loads(state_file.read_text())
    assert "last_busy" not in state  # unknown is no use: the idle time keeps running
    state["unknown_since"] -= 601
    state_file.write_text(json.dumps(state))
    line = decide(script, tmp_path, jupyter, capsys, limit=600)
    assert "ignored, unknown for 10 min: jupyter answered HTTP 500" in line, line
    assert "would power off (dry run)" in line, line


def test_script_treats_a_stopped_or_absent_runtime_as_unused(script, tmp_path, jupyter, capsys):
    line = decide(script, tmp_path, jupyter, capsys, jupyter_url=f"http://127.0.0.1:{free_port()}/")
    assert "jupyter: not running" in line and "would power off" in line, line
    line = decide(script, tmp_path, jupyter, capsys, jupyter_token_file=str(tmp_path / "missing"))
    assert "jupyter: no token file" in line and "would power off" in line, line
