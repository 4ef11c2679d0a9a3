"""idle_stop on Debian 12/13: the timer runs the installed script, and a limit of 0 removes it."""

from __future__ import annotations

import json
import time

from colab_testkit.molecule import reconverge as converge

SCRIPT = "/usr/local/lib/idle-stop/idle_stop.py"
CONFIG = "/etc/idle-stop.json"


def test_script_is_root_owned_and_runs_with_the_system_python(host):
    script = host.file(SCRIPT)
    assert script.is_file
    assert (script.user, script.group, script.mode) == ("root", "root", 0o755)
    assert host.file("/usr/local/lib/idle-stop").mode == 0o755
    host.run_test("/usr/bin/python3 -m py_compile %s", SCRIPT)


def test_configuration_holds_the_converge_values(host):
    cfg_file = host.file(CONFIG)
    assert (cfg_file.user, cfg_file.mode) == ("root", 0o644)
    cfg = json.loads(cfg_file.content_string)
    assert cfg["limit_seconds"] == 45 * 60
    assert cfg["warning_seconds"] == 3 * 60
    assert cfg["dry_run"] is True
    assert cfg["jupyter_url"] == "http://127.0.0.1:8888/"
    assert cfg["count_kernel_connections"] is True
    assert cfg["count_idle_tty_sessions"] is False
    assert cfg["gpu_utilization_threshold"] == 10


def test_timer_enabled_active_and_on_time(host):
    timer = host.service("idle-stop.timer")
    assert timer.is_enabled
    assert timer.is_running
    unit = host.file("/etc/systemd/system/idle-stop.timer").content_string
    assert "OnUnitActiveSec=30s" in unit
    assert "AccuracySec=1s" in unit


def test_service_ran_and_logged_one_decision_line(host):
    # The timer ran once when it started (before the configuration existed: nothing to do), then
    # runs every 30 s.
    deadline = time.monotonic() + 90
    lines = []
    while time.monotonic() < deadline:
        out = host.run("journalctl -t idle-stop -o cat --no-pager")
        lines = [line for line in out.stdout.splitlines() if line.startswith("idle_stop: idle for")]
        if lines:
            break
        time.sleep(2)
    assert lines, f"idle-stop.service never logged a decision: {out.stdout}"
    # No Jupyter, no terminal, no GPU here: a just-configured host is idle for less than the limit.
    assert "< 45 min" in lines[-1], lines[-1]
    assert "jupyter: no token file" in lines[-1] or "jupyter: not running" in lines[-1], lines[-1]
    assert "gpu: no nvidia-smi" in lines[-1], lines[-1]
    result = host.run("systemctl show -p Result --value idle-stop.service")
    assert result.stdout.strip() == "success"


def test_dry_run_never_powers_off_past_the_limit(host):
    # A host that booted longer ago than a tiny limit: the script must only say what it would do.
    out = host.run(
        'python3 -c \'import json; c = json.load(open("%s")); '
        'c.update(limit_seconds=1, warning_seconds=0, state_file="/tmp/idle-stop-test.json"); '
        'json.dump(c, open("/tmp/idle-stop-test-config.json", "w"))\' && sleep 2 && '
        "python3 %s --config /tmp/idle-stop-test-config.json --dry-run",
        CONFIG,
        SCRIPT,
    )
    assert out.rc == 0, out.stderr
    assert "would power off (dry run)" in out.stdout, out.stdout
    assert host.run("systemctl is-system-running").stdout.strip() in ("running", "degraded")


def test_limit_zero_removes_the_timer_and_bad_values_change_nothing(host):
    before = host.file(CONFIG).content_string
    bad = converge(host, "-e", "idle_stop_warning_minutes=50")
    assert bad.returncode != 0
    assert (
        "idle_stop_warning_minutes=50 must be shorter than the limit (idle_stop_limit_minutes=45)" in bad.stdout
    ), bad.stdout[-3000:]
    assert host.file(CONFIG).content_string == before

    off = converge(host, "-e", "idle_stop_limit_minutes=0")
    assert off.returncode == 0, off.stdout[-3000:]
    assert "idle auto-stop disabled" in off.stdout
    assert not host.service("idle-stop.timer").is_running
    assert not host.file("/etc/systemd/system/idle-stop.timer").exists
    assert not host.file(CONFIG).exists
    assert not host.file(SCRIPT).exists
    assert "idle-stop.timer" not in host.run("systemctl list-timers --all --no-legend").stdout

    again = converge(host, "-e", "idle_stop_limit_minutes=0")
    assert again.returncode == 0 and "changed=0" in again.stdout, again.stdout[-3000:]
