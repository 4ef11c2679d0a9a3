"""converge_state on Debian 12/13 in front of idle_stop: the record, the short path, and every
kind of drift it must notice (an edited file, a stopped unit, a changed setting)."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess

from colab_testkit.molecule import reconverge as converge

RECORD = "/var/lib/colab-gpu-runtime/converged.json"
CONFIG = "/etc/idle-stop.json"


def text(res: subprocess.CompletedProcess) -> str:
    """The run's output with the result callback's line wrapping undone."""
    return " ".join(res.stdout.split())


def changed(res: subprocess.CompletedProcess) -> int:
    found = re.search(r"changed=(\d+)", res.stdout.split("PLAY RECAP")[-1])
    assert found, res.stdout[-3000:]
    return int(found.group(1))


def short_path(res: subprocess.CompletedProcess) -> bool:
    """The role's tasks did not run."""
    return "Converging:" not in res.stdout and "TASK [idle_stop : Install the idle-stop service" not in res.stdout


def sha256(host, path: str) -> str:
    return hashlib.sha256(host.file(path).content).hexdigest()


def test_record_holds_what_the_role_manages(host):
    record = host.file(RECORD)
    assert (record.user, record.group, record.mode) == ("root", "root", 0o600)
    data = json.loads(record.content_string)
    assert re.fullmatch(r"[0-9a-f]{64}", data["digest"])
    assert data["kernel"] == host.check_output("uname -r")
    assert data["units"] == {"idle-stop.timer": ["active", "enabled"]}
    assert set(data["files"]) == {CONFIG, "/usr/local/lib/idle-stop/idle_stop.py",
                                  "/etc/systemd/system/idle-stop.service", "/etc/systemd/system/idle-stop.timer"}  # fmt: skip
    for path, digest in data["files"].items():
        assert digest == sha256(host, path), path
    assert list(data["facts"]) == ["idle_stop_summary"]
    assert data["facts"]["idle_stop_summary"].startswith("idle auto-stop after 60 min without use (dry run: log only)")


def test_unchanged_host_takes_the_short_path(host):
    res = converge(host)
    assert res.returncode == 0, res.stdout[-4000:]
    assert short_path(res) and changed(res) == 0, res.stdout[-4000:]


def test_edited_file_is_noticed_and_repaired(host):
    original = sha256(host, CONFIG)
    host.check_output(f"sh -c 'echo \"{{}}\" > {CONFIG}'")
    res = converge(host)
    assert res.returncode == 0, res.stdout[-4000:]
    assert f"Converging: {CONFIG} changed" in text(res)
    assert changed(res) >= 1 and sha256(host, CONFIG) == original
    assert short_path(converge(host))


def test_stopped_unit_is_noticed_and_started(host):
    host.check_output("systemctl stop idle-stop.timer")
    res = converge(host)
    assert res.returncode == 0, res.stdout[-4000:]
    assert "idle-stop.timer is inactive/enabled (was active/enabled)" in text(res)
    assert host.service("idle-stop.timer").is_running


def test_changed_setting_runs_the_role(host):
    res = converge(host, "-e", "idle_stop_limit_minutes=50")
    assert res.returncode == 0, res.stdout[-4000:]
    assert "Converging: roles or settings changed since the last converge" in text(res)
    assert json.loads(host.file(CONFIG).content_string)["limit_seconds"] == 3000
    back = converge(host)
    assert "Converging: roles or settings changed" in text(back)
    assert json.loads(host.file(CONFIG).content_string)["limit_seconds"] == 3600
    assert short_path(converge(host))


def test_check_mode_keeps_the_record_and_reports_the_repair(host):
    before = host.file(RECORD).content_string
    host.check_output(f"sh -c 'echo \"{{}}\" > {CONFIG}'")
    res = converge(host, "--check", "--diff")
    assert res.returncode == 0, res.stdout[-4000:]
    assert f"Converging: {CONFIG} changed" in text(res) and changed(res) >= 1
    assert host.file(RECORD).content_string == before, "check mode removes nothing"
    assert converge(host).returncode == 0


def test_disabled_runs_the_role_and_leaves_the_record(host):
    before = host.file(RECORD).content_string
    res = converge(host, "-e", "converge_state_enabled=false")
    assert res.returncode == 0, res.stdout[-4000:]
    assert "TASK [idle_stop : Install the idle-stop service and timer units]" in res.stdout
    assert changed(res) == 0, res.stdout[-4000:]
    assert host.file(RECORD).content_string == before


def test_role_without_its_managed_fact_is_refused(host):
    res = converge(host, "-e", '{"converge_state_roles": ["idle_stop", "colab_runtime"]}')
    assert res.returncode != 0
    assert "Role colab_runtime did not publish the fact colab_runtime_managed" in text(res)
    # The roles or settings changed, so the old record was dropped: the next run converges fully.
    res = converge(host)
    assert res.returncode == 0 and "Converging:" in res.stdout
    assert short_path(converge(host))
