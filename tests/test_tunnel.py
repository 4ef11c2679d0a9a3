"""colab_tunnel: the supervised SSH port forward on the controller (Linux here; macOS artefacts by content).

The host runs a plain HTTP server on its 127.0.0.1 in place of Jupyter: these tests are about the
tunnel's life cycle, not the runtime (the end-to-end tests prove a Colab cell through it).
"""

from __future__ import annotations

import configparser
import os
import plistlib
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from substrate import ROOT, ansible_playbook, free_port, http_get, play_recap

HOST = "gpu-tunnel-test"


@pytest.fixture(scope="module")
def tunnel_host(request, tmp_path_factory, bookworm_image, ssh_key, _cleanup_leftover_hosts):
    from substrate import RemoteHost

    host = RemoteHost.start(image=bookworm_image, key_path=ssh_key)
    request.addfinalizer(host.remove)
    port = free_port()
    host.exec("sh", "-c", "install -d -m 700 /etc/colab-runtime && echo 0123456789abcdef0123456789abcdef > /etc/colab-runtime/token")
    host.exec("systemd-run", "--unit=stand-in-jupyter", "python3", "-m", "http.server", str(port), "--bind", "127.0.0.1")
    workdir = tmp_path_factory.mktemp("tunnel")
    inventory = workdir / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {"children": host.inventory(hostname=HOST)}}))
    return host, port, inventory, workdir


def connect(tunnel_host, *extra: str, state: str = "started"):
    host, port, inventory, workdir = tunnel_host
    return ansible_playbook(
        "-i", str(inventory), "playbooks/connect.yml",
        "-e", f"colab_runtime_port={port}",
        "-e", "colab_tunnel_prove=false",
        "-e", f"colab_tunnel_state_dir={workdir}/state",
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
            "-e", f"colab_tunnel_host_alias=colab-other",
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


def render(tmp_path: Path, template: str, extra: dict) -> str:
    """Render one of the role's templates with the role's defaults, as the role would."""
    out = tmp_path / "rendered"
    play = [
        {
            "name": "Render",
            "hosts": "gpu1",
            "connection": "local",
            "gather_facts": False,
            "vars": {"ansible_python_interpreter": "{{ ansible_playbook_python }}"},
            "tasks": [
                {"name": "Load role defaults", "ansible.builtin.include_vars": str(ROOT / "roles/colab_tunnel/defaults/main.yml")},
                {
                    "name": "Render",
                    "ansible.builtin.copy": {
                        "content": "{{ lookup('ansible.builtin.template', '%s/roles/colab_tunnel/templates/%s') }}" % (ROOT, template),
                        "dest": str(out),
                        "mode": "0600",
                    },
                },
            ],
        }
    ]
    (tmp_path / "render.yml").write_text(yaml.safe_dump(play))
    args = ["-i", "gpu1,", str(tmp_path / "render.yml")]
    for k, v in extra.items():
        args += ["-e", yaml.safe_dump({k: v}, default_flow_style=True).strip()]
    res = ansible_playbook(*args)
    assert res.returncode == 0, res.stdout[-3000:]
    return out.read_text()


COMMON = {
    "_colab_tunnel_hostname": "203.0.113.10",
    "_colab_tunnel_port": 22,
    "_colab_tunnel_user": "ubuntu",
    "_colab_tunnel_key": "/home/u/.ssh/colab",
    "_colab_tunnel_launchd_label": "com.colab-gpu-runtime.colab-gpu1",
    "colab_tunnel_state_dir": "/Users/u/colab-gpu-runtime/.colab",
}


def test_launchd_agent_keeps_the_tunnel_alive(tmp_path):
    plist = plistlib.loads(render(tmp_path, "colab-tunnel.plist.j2", COMMON).encode())
    assert plist["Label"] == "com.colab-gpu-runtime.colab-gpu1"
    assert plist["KeepAlive"] is True and plist["RunAtLoad"] is True
    assert plist["ProgramArguments"] == [
        "/usr/bin/ssh", "-F", "/Users/u/colab-gpu-runtime/.colab/ssh_config", "colab-gpu1-tunnel", "exec sleep infinity",
    ]  # fmt: skip


def test_systemd_user_unit_restarts_forever(tmp_path):
    unit = configparser.ConfigParser(interpolation=None)
    unit.read_string(render(tmp_path, "colab-tunnel.service.j2", COMMON))
    assert unit["Service"]["Restart"] == "always"
    assert unit["Unit"]["StartLimitIntervalSec"] == "0"
    assert unit["Service"]["ExecStart"].endswith("colab-gpu1-tunnel exec sleep infinity")
    assert unit["Install"]["WantedBy"] == "default.target"


def ssh_config_for(tmp_path: Path, extra: dict) -> str:
    text = render(tmp_path, "ssh_config.j2", {**COMMON, **extra})
    path = tmp_path / "ssh_config"
    path.write_text(text)
    return str(path)


def ssh_g(config: str, alias: str) -> dict[str, str]:
    """What OpenSSH itself makes of the generated file (`ssh -G`)."""
    out = subprocess.run(["ssh", "-F", config, "-G", alias], capture_output=True, text=True, check=True).stdout
    values: dict[str, str] = {}
    for line in out.splitlines():
        key, _, value = line.partition(" ")
        values.setdefault(key, value)
    return values


def test_ssh_config_tunnel_entry(tmp_path):
    cfg = ssh_g(ssh_config_for(tmp_path, {}), "colab-gpu1-tunnel")
    assert cfg["hostname"] == "203.0.113.10"
    assert cfg["user"] == "ubuntu"
    assert cfg["localforward"] == "[127.0.0.1]:8888 [127.0.0.1]:8888"
    assert cfg["exitonforwardfailure"] == "yes"
    assert cfg["serveraliveinterval"] == "5" and cfg["serveralivecountmax"] == "3"
    assert cfg["stricthostkeychecking"] == "accept-new"
    assert cfg["hostkeyalias"] == "gpu1"
    shell = ssh_g(ssh_config_for(tmp_path, {}), "colab-gpu1")
    assert "localforward" not in shell
    assert shell["controlmaster"] == "auto"
    assert shell["controlpath"] == cfg["controlpath"]


def test_ssh_config_ssm_proxy(tmp_path):
    extra = {
        "colab_tunnel_ssm": True,
        "_colab_tunnel_hostname": "i-0123456789abcdef0",
        "colab_tunnel_ssm_region": "us-east-2",
        "colab_tunnel_ssm_profile": "work",
    }
    cfg = ssh_g(ssh_config_for(tmp_path, extra), "colab-gpu1-tunnel")
    assert cfg["hostname"] == "i-0123456789abcdef0"
    assert cfg["proxycommand"] == (
        "aws ssm start-session --target %h --document-name AWS-StartSSHSession "
        "--parameters portNumber=%p --region us-east-2 --profile work"
    )
