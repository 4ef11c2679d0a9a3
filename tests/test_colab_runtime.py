"""End-to-end: the colab_runtime role on a test host over SSH, used the way Colab uses it.

One Debian 12 host per module (systemd + sshd in podman) gets the role through
ansible-playbook over SSH; the tests then talk to Jupyter through an `ssh -L` forward that
keeps the port number (Colab's classic flow fetches its auth URL from inside the server at
the browser's port), with roles/colab_tunnel/files/colab_client.py speaking both of Colab's flows.
"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
import colab_client
from colab_client import COLAB_ORIGIN, FLOWS, ColabClient, ColabProtocolError, check_flows
from substrate import (
    ROOT,
    RemoteHost,
    ansible_playbook,
    free_port,
    play_recap,
    podman,
    wait_tcp,
)

pytestmark = pytest.mark.slow

SERVICE = "colab-runtime"
TOKEN_FILE = "/etc/colab-runtime/token"
CLIENT = Path(__file__).resolve().parents[1] / "roles" / "colab_tunnel" / "files" / "colab_client.py"
# The role's default kernel package set (Colab's, several GB) is not what these tests are about.
KERNEL_SETTINGS = {"colab_runtime_kernel_package_set": "minimal"}


def start_host(image: str, key: Path) -> RemoteHost:
    # Not the shared colab-test- prefix: a parallel test session's leftover cleanup removes
    # those, and this module's host lives for minutes. Removed by the fixtures below.
    return RemoteHost.start(image=image, key_path=key, name=f"colab-runtime-test-{uuid.uuid4().hex[:8]}")

PLAYBOOK = """\
- name: Colab runtime
  hosts: colab_gpu_hosts
  become: true
  roles:
    - role: colab_runtime
  post_tasks:
    - name: Hand the published facts to the test (0600, never printed)
      ansible.builtin.copy:
        content: "{{ {'token': colab_runtime_token, 'port': colab_runtime_port} | to_json }}"
        dest: "%(facts)s"
        mode: "0600"
      delegate_to: localhost
      become: false
      no_log: true
"""


class Runtime:
    """The converged host, its SSH forward and how to re-run the role on it."""

    def __init__(self, host: RemoteHost, workdir: Path, port: int) -> None:
        self.host = host
        self.workdir = workdir
        self.port = port
        self.inventory = workdir / "inventory.json"
        self.inventory.write_text(json.dumps(host.inventory()))
        self.facts_file = workdir / "facts.json"
        self.playbook = workdir / "site.yml"
        self.playbook.write_text(PLAYBOOK % {"facts": self.facts_file})
        self.tunnel: subprocess.Popen | None = None

    def converge(self, **extra_vars) -> subprocess.CompletedProcess:
        variables = {"colab_runtime_port": self.port, **KERNEL_SETTINGS, **extra_vars}
        return ansible_playbook(
            "-v", "-i", str(self.inventory), str(self.playbook), "-e", json.dumps(variables),
            env={"ANSIBLE_ROLES_PATH": str(ROOT / "roles")},
        )  # fmt: skip

    @property
    def token(self) -> str:
        return self.host.exec("cat", TOKEN_FILE).stdout.strip()

    @property
    def url(self) -> str:
        return f"http://localhost:{self.port}/?token={self.token}"

    @property
    def base(self) -> str:
        return f"http://localhost:{self.port}"

    def main_pid(self) -> str:
        return self.host.exec("systemctl", "show", "-p", "MainPID", "--value", SERVICE).stdout.strip()

    def open_tunnel(self) -> None:
        self.tunnel = subprocess.Popen(
            ["ssh", *self.host.ssh_options(), "-N", "-o", "ExitOnForwardFailure=yes",
             "-L", f"{self.port}:127.0.0.1:{self.port}", f"{self.host.user}@127.0.0.1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_tcp("127.0.0.1", self.port, timeout=30)

    def close_tunnel(self) -> None:
        if self.tunnel is not None:
            self.tunnel.terminate()
            self.tunnel.wait(timeout=10)

    def state(self) -> dict[str, str]:
        """What a failed run must leave alone."""
        script = (
            f"sha256sum /etc/colab-runtime/* /etc/systemd/system/{SERVICE}.service /opt/colab-runtime/*.txt; "
            f"systemctl show -p MainPID -p ActiveState {SERVICE}"
        )
        return {"files": self.host.exec("sh", "-c", script).stdout}


def http(url: str, method: str = "GET", headers: dict | None = None, body: bytes | None = None):
    req = urllib.request.Request(url, method=method, headers=headers or {}, data=body)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()


def elapsed(func):
    start = time.monotonic()
    result = func()
    return result, time.monotonic() - start


@pytest.fixture(scope="module")
def runtime(bookworm_image, ssh_key, tmp_path_factory):
    host = start_host(bookworm_image, ssh_key)
    rt = Runtime(host, tmp_path_factory.mktemp("colab_runtime"), free_port())
    try:
        first, rt.first_seconds = elapsed(rt.converge)
        assert first.returncode == 0, first.stdout[-6000:]
        rt.first_output = first.stdout
        second, rt.second_seconds = elapsed(rt.converge)
        assert second.returncode == 0, second.stdout[-6000:]
        rt.second_output = second.stdout
        rt.second_recap = play_recap(second.stdout)
        print(f"\nconverge on a fresh host: {rt.first_seconds:.0f} s; re-run: {rt.second_seconds:.0f} s")
        rt.open_tunnel()
        yield rt
    finally:
        rt.close_tunnel()
        host.remove()


def test_rerun_changes_nothing(runtime):
    assert runtime.second_recap[runtime.host.name]["changed"] == 0, runtime.second_output[-4000:]
    assert runtime.second_recap[runtime.host.name]["failed"] == 0


def test_check_mode_reports_no_change_on_converged_host(runtime):
    res = ansible_playbook(
        "-i", str(runtime.inventory), str(runtime.playbook), "--check", "--diff",
        "-e", json.dumps({"colab_runtime_port": runtime.port, **KERNEL_SETTINGS}), env={"ANSIBLE_ROLES_PATH": str(ROOT / "roles")},
    )  # fmt: skip
    assert res.returncode == 0, res.stdout[-4000:]
    assert play_recap(res.stdout)[runtime.host.name]["changed"] == 0, res.stdout[-4000:]
    assert runtime.token not in res.stdout


def test_token_fact_published_and_never_logged(runtime):
    facts = json.loads(runtime.facts_file.read_text())
    token = runtime.token
    assert facts == {"token": token, "port": runtime.port}
    assert re.fullmatch(r"[0-9a-f]{48}", token)
    assert token not in runtime.first_output
    assert token not in runtime.second_output
    journal = runtime.host.exec("journalctl", "-u", SERVICE, "--no-pager").stdout
    assert token not in journal


@pytest.mark.parametrize("flow", ["http_over_ws", "direct"])
def test_colab_executes_code(runtime, flow):
    with ColabClient(runtime.url, None, flow=flow) as client:
        assert client.execute("print(6*7)") == "42\n"


def kernel_ids(runtime) -> list[str]:
    return [k["id"] for k in ColabClient(runtime.url, None, flow="direct").request("GET", "/api/kernels").json()]


def test_one_kernel_proves_every_flow(runtime):
    before = kernel_ids(runtime)
    started = []
    real_start = ColabClient.start_kernel

    def counting_start(self):
        started.append(self.flow)
        return real_start(self)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ColabClient, "start_kernel", counting_start)
        results = check_flows(runtime.url, FLOWS, "print(6*7)", "42")
    assert results == [(True, "http_over_ws: OK: printed '42'"), (True, "direct: OK: printed '42'")]
    assert started == ["http_over_ws"]
    assert kernel_ids(runtime) == before


def test_failing_first_flow_still_checks_the_others(runtime, monkeypatch):
    def refuse(self, *args):
        raise ColabProtocolError("refused for the test", 403)

    before = kernel_ids(runtime)
    monkeypatch.setattr(colab_client.ColabClient, "_request_http_over_ws", refuse)
    results = check_flows(runtime.url, FLOWS, "print(6*7)", "42")
    assert results == [(False, "http_over_ws: FAILED: refused for the test"), (True, "direct: OK: printed '42'")]
    # The direct flow got a kernel of its own, and deleted it.
    assert kernel_ids(runtime) == before


def test_wrong_origin_refused_at_extension_handshake(runtime):
    client = ColabClient(runtime.url, None, flow="http_over_ws", origin="https://colab.example.com")
    with pytest.raises(ColabProtocolError) as err:
        client.request("GET", "/api/status")
    assert err.value.status == 403


@pytest.mark.parametrize("flow", ["http_over_ws", "direct"])
@pytest.mark.parametrize("bad_token", ["", "0" * 48], ids=["missing", "wrong"])
def test_bad_token_refused(runtime, flow, bad_token):
    with ColabClient(runtime.url, None, flow="direct") as good:
        bad = ColabClient(runtime.base, bad_token, flow=flow)
        try:
            assert bad.request("GET", "/api/kernels").status == 403
            assert bad.request("POST", "/api/kernels", {}).status == 403
            # The kernel channel of an existing kernel stays closed too.
            bad.kernel_id = good.kernel_id
            with pytest.raises(ColabProtocolError) as err:
                bad.open_channel()
            assert err.value.status == 403
        finally:
            bad.kernel_id = None  # not ours to delete
            bad.close()
        assert good.execute("print('still here')") == "still here\n"


def test_cors_preflight(runtime):
    status, headers, _ = http(
        f"{runtime.base}/api/kernels",
        method="OPTIONS",
        headers={
            "Origin": COLAB_ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
            "Access-Control-Request-Private-Network": "true",
        },
    )
    assert status in (200, 204)
    assert headers["Access-Control-Allow-Private-Network"] == "true"
    assert headers["Access-Control-Allow-Origin"] == COLAB_ORIGIN
    assert headers["Access-Control-Allow-Credentials"] == "true"
    # Another page gets no permission: the allowed origin is never echoed back.
    _, other, _ = http(f"{runtime.base}/api/kernels", method="OPTIONS", headers={"Origin": "https://evil.example"})
    assert other["Access-Control-Allow-Origin"] == COLAB_ORIGIN


def test_service_comes_back_after_kill_and_keeps_notebooks(runtime):
    auth = {"Authorization": f"token {runtime.token}", "Content-Type": "application/json"}
    notebook = {"type": "notebook", "content": {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}}
    status, _, _ = http(f"{runtime.base}/api/contents/resilience.ipynb", "PUT", auth, json.dumps(notebook).encode())
    assert status in (200, 201)

    # No kernel may be running at the kill: in these containers (cgroup v1 hybrid) systemd gets
    # no cgroup-empty event, so a killed orphan kernel holds the restart for TimeoutStopSec
    # (20 s). On a VM the unit's KillMode=mixed removes it at once.
    status, _, body = http(f"{runtime.base}/api/kernels", headers=auth)
    assert (status, json.loads(body)) == (200, [])

    old_pid = runtime.main_pid()
    runtime.host.exec("kill", "-9", old_pid)
    start = time.monotonic()
    status = None
    while time.monotonic() - start < 30:
        try:
            status, _, _ = http(f"{runtime.base}/api/status", headers=auth)
        except OSError:
            status = None
        if status == 200:
            break
        time.sleep(0.1)
    back_after = time.monotonic() - start
    print(f"\nanswered again {back_after:.1f} s after kill -9")
    assert status == 200
    assert back_after < 5
    assert runtime.main_pid() not in (old_pid, "0")
    status, _, body = http(f"{runtime.base}/api/contents/resilience.ipynb", headers=auth)
    assert status == 200
    assert json.loads(body)["type"] == "notebook"


BAD_INPUTS = [
    ({"colab_runtime_port": 70000}, r"colab_runtime_port=70000 is not a TCP port: use a number from 1 to 65535"),
    ({"colab_runtime_port": 0}, r"colab_runtime_port=0 is not a TCP port"),
    ({"colab_runtime_token": "abc123"}, r"colab_runtime_token must be at least 32 hexadecimal characters"),
    ({"colab_runtime_token": "z" * 40}, r"40 characters long and not hexadecimal"),
    ({"colab_runtime_flows": ["http_over_ws", "carrier_pigeon"]},
     r"colab_runtime_flows must be one or more of: http_over_ws, direct\. Got no match for: carrier_pigeon"),
    ({"colab_runtime_installer": "conda"}, r"colab_runtime_installer must be one of: uv, pip, got: conda"),
]  # fmt: skip


@pytest.mark.parametrize("extra_vars,message", BAD_INPUTS, ids=[next(iter(v)) + "-" + str(i) for i, (v, _) in enumerate(BAD_INPUTS)])
def test_bad_input_stops_before_any_change(runtime, extra_vars, message):
    before = runtime.state()
    res = runtime.converge(**extra_vars)
    out = res.stdout
    assert res.returncode != 0
    assert re.search(message, re.sub(r"\s+", " ", out)), out[-3000:]
    recap = play_recap(res.stdout).get(runtime.host.name, {"changed": 0})
    assert recap["changed"] == 0
    assert runtime.state() == before
    if "colab_runtime_token" in extra_vars:
        assert extra_vars["colab_runtime_token"] not in out


def test_bad_input_on_fresh_host_creates_nothing(bookworm_image, ssh_key, tmp_path):
    host = start_host(bookworm_image, ssh_key)
    try:
        rt = Runtime(host, tmp_path, free_port())
        res = rt.converge(colab_runtime_port=65536)
        assert res.returncode != 0
        assert "colab_runtime_port=65536 is not a TCP port" in res.stdout
        leftovers = host.exec(
            "sh", "-c", "ls -d /opt/colab-runtime /etc/colab-runtime /var/lib/colab-runtime 2>/dev/null; getent passwd colab",
            check=False,
        ).stdout  # fmt: skip
        assert leftovers == ""
    finally:
        host.remove()


def loopback_medians(runtime: Runtime, n: int = 50) -> dict[str, float]:
    """Median ms per trivial execute, measured on the host itself (no SSH hop in the path)."""
    podman("cp", str(CLIENT), f"{runtime.host.name}:/tmp/colab_client.py")
    script = f"""
import json, statistics, sys
sys.path.insert(0, "/tmp")
from colab_client import ColabClient
url = "http://localhost:{runtime.port}/?token=" + open("{TOKEN_FILE}").read().strip()
out = {{}}
for flow in ("http_over_ws", "direct"):
    with ColabClient(url, None, flow=flow) as client:
        client.roundtrip_times(5)
        out[flow] = statistics.median(client.roundtrip_times({n})) * 1000
print(json.dumps(out))
"""
    res = subprocess.run(
        ["podman", "exec", "-i", runtime.host.name, "/opt/colab-runtime/venv/bin/python", "-"],
        input=script, capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_tcp_nodelay_removes_the_websocket_stall(runtime):
    """Per-execute round trip with the fix off, then on (the role's default).

    Without TCP_NODELAY on the websocket streams each execute waits for a delayed ACK
    (~40 ms); with it the round trip is a few ms. Compared on the same host and load.
    """
    assert runtime.converge(colab_runtime_tcp_nodelay=False).returncode == 0
    off = loopback_medians(runtime)
    res = runtime.converge()
    assert res.returncode == 0
    on = loopback_medians(runtime)
    print(f"\nmedian ms per execute, NODELAY off: {off}; on: {on}")
    for flow in ("http_over_ws", "direct"):
        assert off[flow] >= 35, off  # the stall the fix is about is really there
        assert on[flow] < off[flow] / 2, (on, off)
        assert on[flow] < 25, on
