"""colab_tunnel: the supervised SSH port forward on the controller (Linux here; macOS artefacts by content).

The host runs a plain HTTP server on its 127.0.0.1 in place of Jupyter: these tests are about the
tunnel's life cycle, not the runtime (the end-to-end tests prove a Colab cell through it).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from colab_testkit.substrate import ansible_playbook, colab_process, free_port, http_get, play_recap

HOST = "gpu-tunnel-test"
# Longer than any socket path allows, with a space, as in ~/My Projects/... checkouts.
LONG_DIR = "My Projects/" + "colab-gpu-runtime-checkout-with-a-long-name" * 3


@pytest.fixture(scope="module")
def tunnel_host(request, tmp_path_factory, bookworm_image, ssh_key, _cleanup_leftover_hosts):
    from colab_testkit.substrate import RemoteHost

    host = RemoteHost.start(image=bookworm_image, key_path=ssh_key)
    request.addfinalizer(host.remove)
    port = free_port()
    host.exec("sh", "-c", "install -d -m 700 /etc/colab-runtime && echo 0123456789abcdef0123456789abcdef > /etc/colab-runtime/token")
    host.exec("systemd-run", "--unit=stand-in-jupyter", "python3", "-m", "http.server", str(port), "--bind", "127.0.0.1")
    # The tunnel's state lives where a user's checkout may be: a long path with a space in it.
    workdir = tmp_path_factory.mktemp("tunnel") / LONG_DIR
    workdir.mkdir(parents=True)
    inventory = workdir / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {"children": host.inventory(hostname=HOST)}}))
    return host, port, inventory, workdir


def connect(tunnel_host, *extra: str, state: str = "started"):
    host, port, inventory, workdir = tunnel_host
    return ansible_playbook(
        "-i", str(inventory), "playbooks/connect.yml",
        "-e", f"colab_runtime_port={port}",
        "-e", "colab_tunnel_prove=false",
        "-e", json.dumps({"colab_tunnel_state_dir": f"{workdir}/state"}),
        "-e", f"colab_tunnel_state={state}",
        *extra,
    )  # fmt: skip


def pidfile(tunnel_host) -> Path:
    return tunnel_host[3] / "state" / f"colab-{HOST}-tunnel.pid"


def wait_http(port: int, timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        status, _ = http_get(f"http://127.0.0.1:{port}/", timeout=1)
        if status == 200:
            return time.monotonic() - start
        time.sleep(0.2)
    raise AssertionError(f"localhost:{port} did not answer through the tunnel within {timeout}s")


@pytest.fixture(scope="module")
def started(tunnel_host):
    res = connect(tunnel_host)
    assert res.returncode == 0, res.stdout[-4000:]
    yield tunnel_host
    connect(tunnel_host, state="stopped")


def test_start_forwards_localhost_port(started):
    _, port, _, _ = started
    assert wait_http(port, 5) < 5
    # The forward listens on loopback only.
    out = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True).stdout
    local_addresses = {line.split()[3] for line in out.splitlines()}
    assert local_addresses == {f"127.0.0.1:{port}"}


def test_second_start_keeps_the_healthy_tunnel(started):
    before = int(pidfile(started).read_text())
    res = connect(started)
    assert res.returncode == 0, res.stdout[-3000:]
    assert play_recap(res.stdout)[HOST]["changed"] == 0
    assert int(pidfile(started).read_text()) == before


def test_killed_ssh_comes_back_by_itself(started):
    _, port, _, _ = started
    child = Path(str(pidfile(started)) + ".child")
    old = int(child.read_text())
    os.kill(old, signal.SIGKILL)
    elapsed = wait_http(port, 15)
    assert int(child.read_text()) != old
    assert elapsed < 15


def test_status_reports_running_and_healthy(started):
    res = connect(started, state="status")
    assert res.returncode == 0
    assert "running, carrying HTTP" in res.stdout


def test_network_drop_is_noticed_and_repaired(started):
    """Freeze the tunnel's connection on the host (SIGSTOP the sshd process that serves it, the
    parent of its `sleep infinity` session): keep-alives go unanswered, ssh gives up, the supervisor
    reconnects — with no help from the user."""
    host, port, _, _ = started
    pids = host.exec("sh", "-c", "ps -o ppid= -p \"$(pgrep -d, -x sleep)\"").stdout.split()
    assert pids, "no sshd process serves the tunnel's session on the host"
    host.exec("kill", "-STOP", *pids)
    try:
        # ServerAliveInterval 5 x CountMax 3: the dead link is noticed within ~15 s, then reconnects.
        time.sleep(2)
        elapsed = wait_http(port, 40)
    finally:
        host.exec("kill", "-CONT", *pids, check=False)
    assert elapsed < 40


def test_port_in_use_is_refused_naming_the_holder(tunnel_host):
    _, port, _, _ = tunnel_host
    other = free_port()
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", other))
        blocker.listen()
        res = connect(
            tunnel_host,
            "-e", f"colab_tunnel_local_port={other}",
            "-e", f"colab_tunnel_remote_port={other}",
            "-e", "colab_tunnel_host_alias=colab-other",
        )  # fmt: skip
    assert res.returncode != 0
    # The holder is this test process (ss names it by its command, e.g. pytest or python3).
    assert f"Local port 127.0.0.1:{other} is already in use by " in res.stdout
    assert f"(pid {os.getpid()})" in res.stdout


def test_different_local_port_refused_for_classic_flow(tunnel_host):
    res = connect(tunnel_host, "-e", "colab_tunnel_local_port=18888")
    assert res.returncode != 0
    assert "colab_tunnel_local_port 18888 differs from the runtime's port" in res.stdout


def test_different_local_port_allowed_for_direct_flow_only(tunnel_host):
    _, _, _, workdir = tunnel_host
    local = free_port()
    res = connect(
        tunnel_host,
        "-e", f"colab_tunnel_local_port={local}",
        "-e", '{"colab_tunnel_prove_flows": ["direct"]}',
        "-e", "colab_tunnel_host_alias=colab-direct",
    )  # fmt: skip
    try:
        assert res.returncode == 0, res.stdout[-3000:]
        wait_http(local, 5)
    finally:
        connect(tunnel_host, "-e", "colab_tunnel_host_alias=colab-direct", state="stopped")


def test_stop_closes_the_forward(tunnel_host):
    _, port, _, _ = tunnel_host
    assert connect(tunnel_host).returncode == 0
    res = connect(tunnel_host, state="stopped")
    assert res.returncode == 0
    assert "not running" in res.stdout
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    assert not pidfile(tunnel_host).exists()


def test_stale_pid_file_naming_another_process_is_never_signalled(tunnel_host):
    """A pid file left by a crashed run whose pid now belongs to another program."""
    _, port, _, _ = tunnel_host
    assert connect(tunnel_host, state="stopped").returncode == 0
    stranger = subprocess.Popen(["sleep", "300"])
    try:
        pidfile(tunnel_host).write_text(f"{stranger.pid}\n")
        Path(str(pidfile(tunnel_host)) + ".child").write_text(f"{stranger.pid}\n")
        res = connect(tunnel_host, state="stopped")
        assert res.returncode == 0, res.stdout[-3000:]
        assert stranger.poll() is None, "the tunnel's stop signalled a process that is not its own"
        assert not pidfile(tunnel_host).exists()
        # A start with the stale file in place starts a real tunnel and leaves the stranger alone.
        pidfile(tunnel_host).write_text(f"{stranger.pid}\n")
        res = connect(tunnel_host)
        assert res.returncode == 0, res.stdout[-3000:]
        assert wait_http(port, 5) < 5
        assert stranger.poll() is None
        assert int(pidfile(tunnel_host).read_text()) != stranger.pid
    finally:
        stranger.kill()
        stranger.wait()


def test_a_second_run_for_the_same_runtime_is_refused_naming_the_first(tunnel_host):
    """The run lock: a live holder (this test process stands in for a running ansible-playbook)."""
    workdir = tunnel_host[3]
    lock = workdir / "state" / f"{HOST}.lock"
    holder = {"pid": os.getpid(), "start": colab_process.start_time(os.getpid()), "command": "ansible-playbook site.yml", "since": "10:00"}
    lock.write_text(json.dumps(holder))
    try:
        res = connect(tunnel_host)
        assert res.returncode != 0
        assert (
            f"Another run is working on this runtime: pid {os.getpid()} (ansible-playbook site.yml), since 10:00."
            in " ".join(res.stdout.split())
        ), res.stdout[-3000:]
        # A holder that has gone (its pid reused by another process: the start time differs) is replaced.
        lock.write_text(json.dumps({**holder, "start": "1"}))
        res = connect(tunnel_host)
        assert res.returncode == 0, res.stdout[-3000:]
        assert json.loads(lock.read_text())["pid"] != os.getpid()
    finally:
        lock.unlink(missing_ok=True)


@pytest.mark.parametrize(
    "setting, message",
    [
        ("colab_tunnel_local_port=70000", "colab_tunnel_local_port 70000 is not a port the tunnel can open"),
        ("colab_tunnel_local_port=80", "colab_tunnel_local_port 80 is not a port the tunnel can open"),
        ("colab_tunnel_bind_address=0.0.0.0", "colab_tunnel_bind_address 0.0.0.0 would let other machines reach"),
        ("colab_tunnel_control_dir=/tmp/" + "x" * 60, "cannot hold the tunnel's SSH control socket"),
    ],
)
def test_bad_tunnel_settings_are_refused_before_anything_starts(tunnel_host, setting, message):
    res = connect(tunnel_host, "-e", setting, "-e", "colab_tunnel_host_alias=colab-bad-input")
    assert res.returncode != 0
    assert message in " ".join(res.stdout.split()), res.stdout[-3000:]
    assert not (tunnel_host[3] / "state" / "colab-bad-input-tunnel.pid").exists()


def test_control_dir_that_others_can_enter_is_refused(tunnel_host):
    shared = Path(tempfile.mkdtemp(prefix="colab-shared-", dir="/tmp"))
    shared.chmod(0o777)
    try:
        res = connect(tunnel_host, "-e", f"colab_tunnel_control_dir={shared}", "-e", "colab_tunnel_host_alias=colab-shared")
    finally:
        shared.rmdir()
    assert res.returncode != 0
    assert f"{shared} (the tunnel's SSH control socket directory) exists but is not a private directory of yours" in (
        " ".join(res.stdout.split())
    ), res.stdout[-3000:]
