"""The test kit (tests/colab_testkit) itself: one copy of the shared code, and its helpers behave."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import colab_client
from colab_testkit import substrate
from colab_testkit.substrate import (
    AWS_HOOKS,
    ROOT,
    AwsCallLog,
    PodmanError,
    RemoteHost,
    ansible_env,
    http_get,
    pid_alive,
    stop_process,
    text_server,
    write_ec2_overlay,
)

PATH_HACK = re.compile(r"sys\.path\.(insert|append)\(|site\.addsitedir\(")


def tracked_python_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True, check=True)
    return [ROOT / line for line in listed.stdout.splitlines()]


def test_no_python_file_edits_the_import_path():
    hacks = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in tracked_python_files()
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if PATH_HACK.search(line)
    ]
    assert hacks == [], "import the kit (colab_testkit) or the client (colab_client) instead"


def test_the_client_the_tests_import_is_the_one_the_role_loads():
    assert Path(colab_client.__file__).resolve() == ROOT / "roles" / "colab_tunnel" / "module_utils" / "colab_client.py"
    copies = [p for p in tracked_python_files() if p.name == "colab_client.py"]
    assert copies == [ROOT / "roles" / "colab_tunnel" / "module_utils" / "colab_client.py"]


def test_stop_process_kills_what_ignores_sigterm():
    proc = subprocess.Popen(
        [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(1, flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout.readline().strip() == b"1"  # the handler is in place
    started = time.monotonic()
    stop_process(proc, timeout=1)
    assert proc.returncode == -signal.SIGKILL
    assert time.monotonic() - started < 5
    stop_process(proc)  # already gone: nothing to do


def test_pid_alive():
    assert pid_alive(os.getpid())
    assert not pid_alive(None) and not pid_alive(0)
    child = subprocess.Popen(["true"])
    child.wait()
    assert not pid_alive(child.pid)


def test_text_server_answers_every_get_until_it_is_closed():
    with text_server("198.51.100.23\n") as url:
        assert http_get(url + "/") == (200, b"198.51.100.23\n")
        assert http_get(url + "/any/path") == (200, b"198.51.100.23\n")
    assert http_get(url + "/", timeout=1) == (0, b"")


def test_isolated_aws_environment_keeps_only_what_the_test_gives(monkeypatch):
    monkeypatch.setenv("AWS_PROFILE", "someones-real-account")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAREAL")
    env = ansible_env({"AWS_ENDPOINT_URL": "http://127.0.0.1:5000"}, isolate_aws=True)
    assert "AWS_PROFILE" not in env and "AWS_ACCESS_KEY_ID" not in env
    assert env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:5000"
    assert not Path(env["AWS_CONFIG_FILE"]).exists() and not Path(env["AWS_SHARED_CREDENTIALS_FILE"]).exists()
    assert env["AWS_EC2_METADATA_DISABLED"] == "true"
    assert ansible_env()["AWS_PROFILE"] == "someones-real-account"  # not isolated: passed on


def documented_variables() -> set[str]:
    names: set[str] = set()
    for spec in ROOT.glob("roles/*/meta/argument_specs.yml"):
        for entry in (yaml.safe_load(spec.read_text())["argument_specs"] or {}).values():
            names |= set((entry or {}).get("options") or {})
    return names


def test_overlay_sets_only_documented_variables(tmp_path):
    # The extra settings are the bench's: its own overlay once named a variable that no longer existed.
    overlay = write_ec2_overlay(
        tmp_path, "colab-gpu-runtime-bench", 2222, tmp_path / "id_ed25519", "bench",
        extra_vars={"colab_runtime_port": 18888, "colab_tunnel_state_dir": str(tmp_path / "colab")},
    )  # fmt: skip
    settings = yaml.safe_load((overlay / "group_vars" / "all.yml").read_text())
    assert settings["colab_runtime_port"] == 18888
    assert sorted(set(settings) - documented_variables()) == []
    hosts = yaml.safe_load((overlay / "hosts.yml").read_text())
    assert hosts["all"]["hosts"]["colab-gpu-runtime-bench"]["ansible_port"] == 2222


def test_no_test_file_imports_another():
    """Shared test code lives in the kit: a test module importing another couples their fixtures."""
    importing = re.compile(r"^\s*(from|import)\s+test_\w+", re.M)
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("test_*.py") if importing.search(p.read_text())]
    assert offenders == []


def test_aws_call_log_counts_each_operation_and_starts_over(tmp_path):
    log = AwsCallLog(tmp_path / "calls.jsonl")
    assert log.take() == {}, "no run yet, no file"
    env = log.env()
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(AWS_HOOKS) and (AWS_HOOKS / "sitecustomize.py").is_file()
    assert env["COLAB_TEST_AWS_CALL_LOG"] == str(log.path)
    log.path.write_text("".join(f'{{"service": "{s}", "operation": "{o}"}}\n' for s, o in
                                [("ec2", "DescribeInstances"), ("sts", "GetCallerIdentity"), ("ec2", "DescribeInstances")]))  # fmt: skip
    assert log.take() == {"ec2:DescribeInstances": 2, "sts:GetCallerIdentity": 1}
    assert log.take() == {}, "each call is counted once"


class FakePodman:
    """Answers `podman restart` with the given return codes in turn; `inspect` with states in turn."""

    def __init__(self, restarts: list[int], states: list[str]):
        self.restarts, self.states, self.calls = list(restarts), list(states), []

    def __call__(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        self.calls.append(args[0])
        if args[0] == "restart":
            rc = self.restarts.pop(0)
            return subprocess.CompletedProcess(["podman", *args], rc, "", "Error: container state improper" if rc else "")
        if args[0] == "inspect":
            return subprocess.CompletedProcess(["podman", *args], 0, self.states.pop(0) + "\n", "")
        raise AssertionError(args)


def fake_host(monkeypatch, fake: FakePodman) -> RemoteHost:
    monkeypatch.setattr(substrate, "podman", fake)
    monkeypatch.setattr(substrate.time, "sleep", lambda _s: None)
    host = RemoteHost(name="h", image="i", ssh_port=2222, key_path=Path("k"))
    monkeypatch.setattr(host, "wait_systemd", lambda: None)
    monkeypatch.setattr(host, "wait_ssh", lambda: None)
    return host


def test_restart_that_fails_half_way_waits_for_a_settled_state_and_boots_again(monkeypatch):
    fake = FakePodman(restarts=[125, 0], states=["stopping", "stopping", "exited"])
    fake_host(monkeypatch, fake).restart()
    assert fake.calls == ["restart", "inspect", "inspect", "inspect", "restart"]


def test_restart_that_keeps_failing_raises_with_podmans_reason(monkeypatch):
    fake = FakePodman(restarts=[125, 125, 125], states=["exited", "exited"])
    with pytest.raises(PodmanError, match="container state improper") as failed:
        fake_host(monkeypatch, fake).restart()
    assert failed.value.returncode == 125
    assert fake.calls.count("restart") == 3


def test_runtime_image_digest_follows_the_role_files_not_their_bytecode(tmp_path):
    """The runtime image is kept per digest of roles/colab_runtime: bytecode that importing role
    files leaves behind (with the checkout's mtimes in it) must not make a fresh clone rebuild it."""
    role = tmp_path / "role"
    (role / "files").mkdir(parents=True)
    (role / "files" / "script.py").write_text("print('runtime')\n")
    clean = substrate.role_digest(role)
    (role / "files" / "__pycache__").mkdir()
    (role / "files" / "__pycache__" / "script.cpython-311.pyc").write_bytes(os.urandom(64))
    (role / "files" / "stray.pyc").write_bytes(os.urandom(64))
    assert substrate.role_digest(role) == clean
    (role / "files" / "script.py").write_text("print('changed')\n")
    assert substrate.role_digest(role) != clean
