"""idle_stop on Debian 12/13: the timer runs the installed script, CPU work of the notebook user
counts as use, the platform decides the default, the status file tells a notebook, and a limit
of 0 removes it."""

from __future__ import annotations

import json
import re
import time

from colab_testkit.molecule import reconverge

SCRIPT = "/usr/local/lib/idle-stop/idle_stop.py"
CONFIG = "/etc/idle-stop.json"
STATUS = "/var/lib/idle-stop/status"


def converge(host, *extra: str):
    """The scenario's converge again on this host, with JSON results: the summary line comes out
    whole (the YAML format wraps long ones)."""
    return reconverge(host, *extra, env={"ANSIBLE_CALLBACK_RESULT_FORMAT": "json"})


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
    assert cfg["cpu_users"] == ["colab"]
    assert cfg["cpu_threshold_percent"] == 5
    assert cfg["cpu_exclude_units"] == ["colab-runtime.service"]
    assert cfg["status_file"] == STATUS


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


def test_status_file_tells_anyone_on_the_host_when_it_will_stop(host):
    status = host.file(STATUS)
    assert (status.user, status.mode) == ("root", 0o644)
    assert host.file("/var/lib/idle-stop").mode == 0o755
    # Read as an unprivileged user, as a notebook's `!cat` does.
    out = host.run("runuser -u nobody -- cat %s", STATUS)
    assert out.rc == 0, out.stderr
    assert re.search(r"^state: +idle for ", out.stdout, re.M), out.stdout
    assert re.search(r"^planned stop: +\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \(in \d+ min\) unless the host is used", out.stdout, re.M), out.stdout
    assert "powers the host off after 45 min without use; terminals are warned 3 min before (dry run" in out.stdout


def dry_run_config(host, **changes) -> str:
    """A copy of the installed configuration with changes, and its own state; returns its path."""
    changes = {"state_file": "/tmp/idle-stop-test/state.json", "status_file": "/tmp/idle-stop-test/status", **changes}
    program = (
        f"import json, sys; c = json.load(open({CONFIG!r})); c.update(json.loads(sys.argv[1])); "
        "json.dump(c, open('/tmp/idle-stop-test/config.json', 'w'))"
    )
    out = host.run("mkdir -p /tmp/idle-stop-test && python3 -c %s %s", program, json.dumps(changes))
    assert out.rc == 0, out.stderr
    return "/tmp/idle-stop-test/config.json"


def decide_now(host, config: str) -> str:
    out = host.run("python3 %s --config %s --dry-run", SCRIPT, config)
    assert out.rc == 0, out.stderr
    return out.stdout.strip()


# One core for 15 s at most: enough to be seen even on a crowded test machine, bounded if a test dies.
BURN_A_CORE = "import time\nend = time.time() + 15\nwhile time.time() < end:\n    pass"


def test_cpu_work_of_the_notebook_user_keeps_the_host_up(host):
    """A `!nohup python prep.py &` job of the runtime's user, with no kernel busy and no GPU."""
    host.run("rm -rf /tmp/idle-stop-test")
    host.run_test("id colab || useradd --system --no-create-home --shell /usr/sbin/nologin colab")
    # The job as the Jupyter service's main process would be: left out of the count.
    host.run_test("systemd-run --quiet --unit=colab-runtime --uid=colab /usr/bin/python3 -c %s", BURN_A_CORE)
    try:
        config = dry_run_config(host, limit_seconds=1, warning_seconds=0)
        time.sleep(1.5)
        assert "cpu: first sample" in decide_now(host, config)
        time.sleep(2)
        line = decide_now(host, config)
        assert "would power off (dry run)" in line and re.search(r"cpu \d+\.\d%", line), line
        # The same work in a process of its own (a job the notebook started): in use.
        host.run_test("systemd-run --quiet --unit=idle-stop-test-prep --uid=colab /usr/bin/python3 -c %s", BURN_A_CORE)
        decide_now(host, config)  # a sample with the job running: the next run sees only its work
        time.sleep(3)
        line = decide_now(host, config)
        assert re.match(r"idle_stop: busy: cpu \d+% of a core > 5% \(colab: python3 pid \d+\)", line), line
        status = host.file("/tmp/idle-stop-test/status").content_string
        assert re.search(r"^in use by: +cpu \d+% of a core > 5%", status, re.M), status
    finally:
        host.run("systemctl stop idle-stop-test-prep.service colab-runtime.service")
    time.sleep(2)
    decide_now(host, config)  # the job's last moments
    time.sleep(2)
    line = decide_now(host, config)
    assert "cpu 0.0%" in line and "would power off (dry run)" in line, line


def test_platform_default_is_on_only_for_the_projects_ec2_hosts(host):
    # Not an EC2 instance of the project (no instance id from the inventory): a container on a
    # machine without DMI is "other", where the default is off and the timer goes.
    off = converge(host, "-e", "ec2_gpu_host_instance_id=")
    assert off.returncode == 0, off.stdout[-3000:]
    assert (
        "idle auto-stop off by default here: not a cloud VM known to stop billing when powered off (an on-prem or"
        " shared box would stay off); set idle_stop_enabled: true to turn it on" in off.stdout
    ), off.stdout[-3000:]
    assert not host.file("/etc/systemd/system/idle-stop.timer").exists
    assert not host.file(CONFIG).exists

    on = converge(host, "-e", "ec2_gpu_host_instance_id=", "-e", "idle_stop_enabled=true")
    assert on.returncode == 0, on.stdout[-3000:]
    assert (
        "idle auto-stop after 45 min without use (dry run: log only): not a cloud VM known to stop billing when"
        " powered off (an on-prem or shared box would stay off) (on by idle_stop_enabled); terminals warned 3 min"
        " before; in a notebook, !cat /var/lib/idle-stop/status shows when it will stop" in on.stdout
    ), on.stdout[-3000:]
    assert host.service("idle-stop.timer").is_running

    explicit_off = converge(host, "-e", "idle_stop_enabled=false")
    assert explicit_off.returncode == 0, explicit_off.stdout[-3000:]
    assert "idle auto-stop disabled (idle_stop_enabled: false)" in explicit_off.stdout
    assert not host.file("/etc/systemd/system/idle-stop.timer").exists

    # Back as converged: the project's EC2 instance, on by default.
    back = converge(host)
    assert back.returncode == 0, back.stdout[-3000:]
    assert "idle auto-stop after 45 min without use (dry run: log only): EC2 instance of this project" in back.stdout
    assert host.service("idle-stop.timer").is_running


def test_dry_run_never_powers_off_past_the_limit(host):
    # A host that booted longer ago than a tiny limit: the script must only say what it would do.
    host.run("rm -rf /tmp/idle-stop-test")
    config = dry_run_config(host, limit_seconds=1, warning_seconds=0)
    time.sleep(2)
    line = decide_now(host, config)
    assert "would power off (dry run)" in line, line
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
    assert "idle auto-stop disabled (limit 0)" in off.stdout
    assert not host.service("idle-stop.timer").is_running
    assert not host.file("/etc/systemd/system/idle-stop.timer").exists
    assert not host.file(CONFIG).exists
    assert not host.file(SCRIPT).exists
    assert "idle-stop.timer" not in host.run("systemctl list-timers --all --no-legend").stdout

    again = converge(host, "-e", "idle_stop_limit_minutes=0")
    assert again.returncode == 0 and "changed=0" in again.stdout, again.stdout[-3000:]
