"""idle_stop's decision (roles/idle_stop/files/idle_stop.py decide()) and platform default
(roles/idle_stop/library/idle_stop_platform.py classify()), from plain values: no host, no
podman, nothing patched."""

from __future__ import annotations

import pytest

from colab_testkit.substrate import load_role_file

idle_stop = load_role_file("idle_stop", "files/idle_stop.py", "idle_stop_script")
platform = load_role_file("idle_stop", "library/idle_stop_platform.py", "idle_stop_platform_module")

NOW = 1_800_000_000.0
HOUR = 3600.0
SETTINGS = idle_stop.Settings(limit=600, warning=120, gpu_threshold=10, cpu_threshold=5)


def observe(**kw) -> idle_stop.Observation:
    """Booted and configured a day ago, Jupyter idle for an hour, nothing else."""
    values = {
        "now": NOW,
        "boot": NOW - 24 * HOUR,
        "configured": NOW - 24 * HOUR,
        "jupyter": {"status": {"last_activity": iso(NOW - HOUR)}, "kernels": [], "sessions": []},
    }
    values.update(kw)
    return idle_stop.Observation(**values)


def iso(stamp: float) -> str:
    return idle_stop.dt.datetime.fromtimestamp(stamp, idle_stop.dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def cpu(boot: float, **ticks: int) -> idle_stop.CpuSample:
    return idle_stop.CpuSample(boot=boot, ticks=ticks, labels={k: f"colab: python3 pid {k}" for k in ticks})


# --------------------------------------------------------------------------- verdicts
def test_idle_for_the_limit_stops_and_says_since_when():
    d = idle_stop.decide(SETTINGS, observe(), {})
    assert d.verdict == "stop"
    assert d.in_use == ()
    assert d.idle_since == NOW - HOUR and d.last_activity == "jupyter server activity"
    assert d.stop_at == NOW - HOUR + 600


def test_idle_below_the_limit_keeps_and_plans_the_stop():
    obs = observe(jupyter={"status": {"last_activity": iso(NOW - 100)}, "kernels": [], "sessions": []})
    d = idle_stop.decide(SETTINGS, obs, {})
    assert (d.verdict, d.idle_since, d.stop_at) == ("keep", NOW - 100, NOW + 500)


def test_warning_window_warns_idle_terminals_once_per_idle_period():
    term = idle_stop.Terminal("admin", "pts/0", NOW - 500)
    d = idle_stop.decide(SETTINGS, observe(terminals=(term,)), {})
    assert d.verdict == "warn" and d.warn == (term,)
    assert d.stop_at == NOW + 100 and d.last_activity == "input on admin@pts/0"
    again = idle_stop.decide(SETTINGS, observe(now=NOW + 10, terminals=(term,)), d.state)
    assert again.verdict == "keep" and again.stop_at == NOW + 100


def test_busy_kernel_and_open_notebook_are_reasons_and_reset_the_idle_time():
    kid = "abcdef12-3456"
    obs = observe(jupyter={
        "status": {"last_activity": iso(NOW - HOUR)},
        "kernels": [{"id": kid, "execution_state": "busy", "last_activity": iso(NOW - HOUR), "connections": 2}],
        "sessions": [{"path": "train.ipynb", "kernel": {"id": kid}}],
    })  # fmt: skip
    d = idle_stop.decide(SETTINGS, obs, {"warned_for": 1.0})
    assert d.verdict == "keep"
    assert d.in_use == ("kernel abcdef12 (train.ipynb) busy", "2 open kernel connections")
    assert d.idle_since is None and d.stop_at is None
    assert d.state["last_busy"] == NOW and "warned_for" not in d.state
    # Next run, all idle: the idle time runs from the last busy run.
    later = idle_stop.decide(SETTINGS, observe(now=NOW + 60), d.state)
    assert (later.verdict, later.idle_since, later.last_activity) == ("keep", NOW, "last seen in use")


def test_a_negative_connection_count_is_no_open_notebook():
    obs = observe(jupyter={
        "status": {"last_activity": iso(NOW - HOUR)},
        "kernels": [{"id": "k1", "execution_state": "idle", "last_activity": iso(NOW - HOUR), "connections": -1}],
        "sessions": [],
    })  # fmt: skip
    assert idle_stop.decide(SETTINGS, obs, {}).verdict == "stop"


def test_an_unreadable_jupyter_holds_for_one_limit_only():
    d = idle_stop.decide(SETTINGS, observe(jupyter=None, jupyter_error="jupyter answered HTTP 500"), {})
    assert d.verdict == "keep" and d.in_use == ("cannot tell (jupyter answered HTTP 500)",)
    assert "last_busy" not in d.state and d.state["unknown_since"] == NOW
    later = idle_stop.decide(SETTINGS, observe(now=NOW + 601, jupyter=None, jupyter_error="jupyter answered HTTP 500"), d.state)
    assert later.verdict == "stop"
    assert "ignored, unknown for 10 min: jupyter answered HTTP 500" in later.notes
    garbled = idle_stop.decide(SETTINGS, observe(jupyter={"status": []}), {})
    assert garbled.in_use[0].startswith("cannot tell (jupyter answered something unexpected")


def test_a_busy_gpu_keeps_the_host_up():
    d = idle_stop.decide(SETTINGS, observe(gpus=(("0", 97.0), ("1", 3.0))), {})
    assert d.in_use == ("gpu 0 at 97% > 10%",)
    assert idle_stop.decide(SETTINGS, observe(gpus=(("0", 9.0),)), {}).verdict == "stop"


def test_counted_tty_session_is_in_use_however_idle():
    term = idle_stop.Terminal("admin", "pts/1", NOW - HOUR)
    settings = idle_stop.dataclasses.replace(SETTINGS, count_idle_tty_sessions=True)
    assert idle_stop.decide(settings, observe(terminals=(term,)), {}).in_use == ("tty session admin@pts/1 (idle 60 min)",)


def test_recent_boot_or_configuration_counts_as_activity():
    assert idle_stop.decide(SETTINGS, observe(boot=NOW - 30), {}).last_activity == "boot"
    d = idle_stop.decide(SETTINGS, observe(configured=NOW - 30), {})
    assert (d.verdict, d.last_activity) == ("keep", "idle-stop configured")


# --------------------------------------------------------------------------- CPU use
def test_cpu_work_of_the_notebook_user_keeps_the_host_up():
    boot = NOW - 24 * HOUR
    first = idle_stop.decide(SETTINGS, observe(cpu=cpu(boot, **{"42:100": 1000})), {})
    # The first run has nothing to compare with: no verdict from the CPU, only a sample.
    assert first.verdict == "stop" and "cpu: first sample" in first.notes
    assert first.state["cpu"] == {"boot": boot, "at": NOW, "ticks": {"42:100": 1000}}
    # 60 s later prep.py used 57 s of CPU (95% of a core), the idle kernel 0.1 s.
    obs = observe(now=NOW + 60, cpu=cpu(boot, **{"42:100": 6700, "43:200": 10}))
    d = idle_stop.decide(SETTINGS, obs, first.state)
    assert d.verdict == "keep"
    assert d.in_use == ("cpu 95% of a core > 5% (colab: python3 pid 42:100)",)
    assert d.state["last_busy"] == NOW + 60


def test_cpu_below_the_threshold_or_from_a_new_boot_does_not_count():
    boot = NOW - 24 * HOUR
    state = {"cpu": {"boot": boot, "at": NOW - 60, "ticks": {"42:100": 1000}}}
    # 1.2 s in 60 s: 2% of a core (an idle kernel and our own polls stay far below that).
    d = idle_stop.decide(SETTINGS, observe(cpu=cpu(boot, **{"42:100": 1120})), state)
    assert d.verdict == "stop" and "cpu 2.0%" in d.notes
    # After a reboot the old sample says nothing, even for a reused pid:start key.
    d = idle_stop.decide(SETTINGS, observe(boot=NOW - 7200, cpu=cpu(NOW - 7200, **{"42:100": 90000})), state)
    assert d.verdict == "stop" and "cpu: first sample" in d.notes


def test_cpu_of_processes_started_or_ended_between_two_runs():
    boot = NOW - 24 * HOUR
    state = {"cpu": {"boot": boot, "at": NOW - 60, "ticks": {"42:100": 1000, "50:300": 5000}}}
    # 50 ended (its time is gone from both sides); 77 started since: all of its 30 s are new.
    d = idle_stop.decide(SETTINGS, observe(cpu=cpu(boot, **{"42:100": 1000, "77:900": 3000})), state)
    assert d.in_use == ("cpu 50% of a core > 5% (colab: python3 pid 77:900)",)


def test_cpu_ignored_when_no_users_are_counted():
    settings = idle_stop.Settings.from_config({"limit_seconds": 600, "cpu_users": [], "cpu_threshold_percent": 5})
    assert settings.cpu_threshold is None
    d = idle_stop.decide(settings, observe(cpu=cpu(NOW - 24 * HOUR, **{"1:1": 10**9})), {})
    assert d.verdict == "stop" and "cpu" not in d.state


# --------------------------------------------------------------------------- what users see
def test_log_line_and_status_name_the_planned_stop():
    obs = observe(jupyter={"status": {"last_activity": iso(NOW - 100)}, "kernels": [], "sessions": []})
    d = idle_stop.decide(SETTINGS, obs, {})
    line = idle_stop.log_line(SETTINGS, d, NOW, dry_run=False, reached=None)
    stop = idle_stop.fmt_time(NOW + 500)
    assert line.startswith(f"idle for 100s < 10 min (last: jupyter server activity, 100s ago), stop at {stop[11:]}"), line
    status = idle_stop.status_text(SETTINGS, d, NOW, dry_run=False, host="gpu1")
    assert f"planned stop: {stop} (in 8 min) unless the host is used" in status, status
    assert "state:        idle for 100s" in status
    assert f"idle since:   {idle_stop.fmt_time(NOW - 100)} (last: jupyter server activity)" in status
    assert "powers the host off after 10 min without use; terminals are warned 2 min before" in status


def test_status_while_in_use_and_when_stopping():
    busy = idle_stop.decide(SETTINGS, observe(gpus=(("0", 97.0),)), {})
    status = idle_stop.status_text(SETTINGS, busy, NOW, dry_run=False)
    assert "state:        in use\nin use by:    gpu 0 at 97% > 10%\n" in status, status
    assert "planned stop: none while in use" in status
    stop = idle_stop.decide(SETTINGS, observe(), {})
    assert "planned stop: now (powering off)" in idle_stop.status_text(SETTINGS, stop, NOW, dry_run=False)
    assert idle_stop.log_line(SETTINGS, stop, NOW, dry_run=True, reached=None).endswith(
        ": would power off (dry run) | jupyter: 0 kernel(s); no tty sessions"
    )


def test_warned_terminals_are_listed_in_the_line():
    term = idle_stop.Terminal("admin", "pts/0", NOW - 500)
    d = idle_stop.decide(SETTINGS, observe(terminals=(term,)), {})
    line = idle_stop.log_line(SETTINGS, d, NOW, dry_run=False, reached=["admin@pts/0"])
    assert "; warned 1 terminal(s) admin@pts/0: power off in 100s |" in line, line
    assert "will power off in 100s unless it is used" in idle_stop.warning_message(d, NOW)


# --------------------------------------------------------------------------- platform default
@pytest.mark.parametrize(
    ("dmi", "project_ec2", "expected", "on"),
    [
        ({}, True, "ec2", True),  # the project's inventory lists it: launched with shutdown behaviour stop
        ({"sys_vendor": "Amazon EC2", "product_name": "g4dn.xlarge"}, False, "ec2", False),
        ({"sys_vendor": "Xen", "bios_version": "4.11.amazon"}, False, "ec2", False),
        ({"sys_vendor": "Xen", "hypervisor_uuid": "ec2e1916-9099-7caf-fd21-012345abcdef"}, False, "ec2", False),
        ({"sys_vendor": "Google", "product_name": "Google Compute Engine"}, False, "gce", True),
        ({"sys_vendor": "Microsoft Corporation", "product_name": "Virtual Machine",
          "chassis_asset_tag": "7783-7084-3265-9085-8269-3286-77"}, False, "azure", False),  # fmt: skip
        # Hyper-V on a desk, not Azure: same vendor and product, no Azure asset tag.
        ({"sys_vendor": "Microsoft Corporation", "product_name": "Virtual Machine", "chassis_asset_tag": "None"},
         False, "other", False),  # fmt: skip
        ({"sys_vendor": "Dell Inc.", "product_name": "PowerEdge R750xa"}, False, "other", False),
        ({}, False, "other", False),  # a container on a host without DMI
    ],
)
def test_platform_default(dmi, project_ec2, expected, on):
    name, default_on, why = platform.classify(dmi, project_ec2)
    assert (name, default_on) == (expected, on)
    assert why


def test_platform_reasons_say_what_a_power_off_costs():
    assert "az vm deallocate" in platform.classify({"sys_vendor": "Microsoft Corporation",
                                                     "chassis_asset_tag": platform.AZURE_ASSET_TAG})[2]  # fmt: skip
    assert "instanceInitiatedShutdownBehavior" in platform.classify({"sys_vendor": "Amazon EC2"})[2]
    assert "on-prem or shared box would stay off" in platform.classify({})[2]
    assert "disk kept" in platform.classify({}, True)[2]


def test_platform_reads_dmi_files(tmp_path):
    (tmp_path / "sys_vendor").write_text("Google\n")
    (tmp_path / "product_name").write_text("Google Compute Engine\n")
    dmi = platform.read_dmi(str(tmp_path), str(tmp_path / "absent"))
    assert dmi["sys_vendor"] == "Google" and dmi["chassis_asset_tag"] == "" and dmi["hypervisor_uuid"] == ""
    assert platform.classify(dmi)[0] == "gce"
