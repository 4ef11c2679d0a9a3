"""End to end: site.yml against the emulated EC2 API and a container playing the instance.

clean start -> site.yml (provision, configure, connect) -> a cell executes through the tunnel in
both Colab flows -> a second run changes nothing, keeps the same tunnel and takes the short paths
(no launch checks, no role tasks) -> drift on the host (an edited file, a stopped unit) and a
changed setting each make the roles run again and are repaired -> a killed tunnel
comes back by itself -> a restarted host brings service and tunnel back -> the example on-prem
inventory configures and connects the same way -> teardown leaves nothing running.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from colab_client import ColabClient
from colab_testkit.substrate import (
    RemoteHost,
    ansible_playbook,
    copy_checkout,
    ec2_env,
    free_port,
    http_get,
    play_recap,
    seed_emulated_account,
    write_ec2_overlay,
)

pytestmark = pytest.mark.slow

OWNER = "e2e"
REGION = "us-east-2"
HOST = f"colab-gpu-runtime-{OWNER}"
# A free port rather than the default 8888, so a runtime already running here cannot interfere.
PORT = free_port()


# Where a user's checkout may be: over 100 characters with a space in it. The runs use that
# checkout's defaults, so the tunnel's files live in <checkout>/.colab as for a user.
CHECKOUT = "Alice's Projects/" + "gpu-notebooks-for-the-colab-runtime-of-our-team/" * 2 + "colab-gpu-runtime"


class Site:
    def __init__(self, moto, host: RemoteHost, workdir: Path) -> None:
        self.moto, self.host, self.workdir = moto, host, workdir
        self.root = copy_checkout(workdir / CHECKOUT)
        assert len(str(self.root)) > 100 and " " in str(self.root)
        self.state_dir = self.root / ".colab"
        self.overlay = write_ec2_overlay(workdir / "overlay", HOST, host.ssh_port, host.key_path, OWNER, REGION)
        self.env = ec2_env(moto.url, OWNER, REGION)

    def run(self, playbook: str = "site.yml", *extra: str, inventory: list[str] | None = None):
        inventories = inventory or ["inventory/", str(self.overlay)]
        args = [a for inv in inventories for a in ("-i", inv)]
        return ansible_playbook(
            *args, playbook, "-e", f"colab_runtime_port={PORT}", *extra, env=self.env, root=self.root
        )  # fmt: skip

    def pid(self, alias: str = HOST) -> int:
        return int((self.state_dir / f"{alias}-tunnel.pid").read_text())

    def ssh_pid(self, alias: str = HOST) -> int:
        return int((self.state_dir / f"{alias}-tunnel.pid.child").read_text())

    def url(self, alias: str = HOST) -> str:
        return (self.state_dir / f"{alias}.url").read_text().strip()

    def ec2(self):
        return self.moto.client("ec2", REGION)

    def instances(self, *states: str) -> list[dict]:
        res = self.ec2().describe_instances(Filters=[{"Name": "tag:colab-gpu-runtime:owner", "Values": [OWNER]}])
        found = [i for r in res["Reservations"] for i in r["Instances"]]
        return [i for i in found if not states or i["State"]["Name"] in states]


def wait_answers(url: str, timeout: float) -> float:
    base, _, query = url.partition("?")
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if http_get(f"{base.rstrip('/')}/api/status?{query}", timeout=2)[0] == 200:
            return time.monotonic() - start
        time.sleep(0.25)
    raise AssertionError(f"{base} did not answer within {timeout}s")


def cell(url: str, flow: str) -> str:
    with ColabClient(url, None, flow=flow) as client:
        return client.execute("import os; print(6*7, os.getuid() != 0)").strip()


def cell_output(url: str, code: str) -> str:
    with ColabClient(url, None, flow="direct") as client:
        return client.execute(code).strip()


@pytest.fixture(scope="module")
def site(request, moto_server, tmp_path_factory, bookworm_image, ssh_key, _cleanup_leftover_hosts):
    moto_server.reset()
    seed_emulated_account(moto_server.url, REGION)
    host = RemoteHost.start(image=bookworm_image, key_path=ssh_key, user="ubuntu")
    s = Site(moto_server, host, tmp_path_factory.mktemp("e2e"))

    def cleanup():
        s.run("playbooks/connect.yml", "-e", "colab_tunnel_state=stopped")
        host.remove()
        moto_server.reset()

    request.addfinalizer(cleanup)
    # The first run belongs to the fixture, so that every test also passes when run alone.
    s.first_run = s.run()
    return s


def test_site_yml_from_clean_start_prints_a_working_url(site):
    res = site.first_run
    assert res.returncode == 0, res.stdout[-8000:]
    assert len(site.instances("running")) == 1
    assert f"Paste into Colab > Connect > Connect to a local runtime: http://localhost:{PORT}/?token=" in res.stdout
    # connect proved both flows before printing the URL
    assert "http_over_ws: OK" in res.stdout and "direct: OK" in res.stdout
    assert wait_answers(site.url(), 5) < 5


@pytest.mark.parametrize("flow", ["http_over_ws", "direct"])
def test_cell_executes_through_the_tunnel(site, flow):
    assert cell(site.url(), flow) == "42 True"


def test_second_run_changes_nothing_and_keeps_the_tunnel(site):
    pid = site.pid()
    start = time.monotonic()
    res = site.run()
    elapsed = time.monotonic() - start
    assert res.returncode == 0, res.stdout[-6000:]
    recap = play_recap(res.stdout)
    assert recap[HOST]["changed"] == 0, res.stdout[-6000:]
    assert recap["localhost"]["changed"] == 0, res.stdout[-6000:]
    assert site.pid() == pid
    # The short paths: the running instance is taken from the inventory, the host's record of its
    # last converge matches, so neither launch checks nor role tasks run; the cells were proved.
    assert "TASK [ec2_gpu_host : Use the inventory's description of the running instance]" in res.stdout
    assert "Describe the requested instance types" not in res.stdout
    assert "Converging:" not in res.stdout
    # (The preflight runs the runtime's value checks on the controller: only tasks on the host count.)
    assert not [t for t in res.stdout.split("\nTASK [") if t.startswith("colab_runtime :") and f"[{HOST}]" in t]
    assert "TASK [idle_stop : Install" not in res.stdout
    # The URL written last time carries the token the host's record vouches for: not read again.
    assert "Read the runtime's token from the host" not in res.stdout
    assert "http_over_ws: OK" in res.stdout and "direct: OK" in res.stdout
    assert "Idle auto-stop after 60 min" in res.stdout and "GPU: no GPU" in res.stdout
    print(f"no-op re-run of site.yml: {elapsed:.1f}s")


def test_verbose_connect_logs_no_token_and_leaves_no_kernel(site):
    url = site.url()
    token = url.split("token=", 1)[1]
    res = site.run("playbooks/connect.yml", "-vvv")
    assert res.returncode == 0, res.stdout[-6000:]
    assert "http_over_ws: OK" in res.stdout and "direct: OK" in res.stdout
    # The token appears only inside the URL printed for the user, even at -vvv (no command line,
    # environment or module argument shows it).
    output = (res.stdout + (res.stderr or "")).replace(f"localhost:{PORT}/?token={token}", "")
    assert token not in output
    # One kernel served both flows, and it was deleted afterwards.
    status, body = http_get(f"http://127.0.0.1:{PORT}/api/kernels?token={token}")
    assert status == 200 and json.loads(body) == [], body


def sha256(site, path: str) -> str:
    return site.host.exec("sha256sum", path).stdout.split()[0]


def text(res) -> str:
    """The run's output with the result callback's line wrapping undone."""
    return " ".join(res.stdout.split())


def test_proof_says_what_a_notebook_gets_on_a_host_without_gpu(site):
    out = text(site.first_run)
    # Asked from a cell, as the notebook user: no driver on the stand-in host, so libcuda is absent.
    assert "Notebooks: no GPU visible to notebooks: libcuda.so.1 cannot be loaded (" in out, out[-3000:]
    assert "%pip install iniconfig==" in out and "ok (removed again)" in out, out[-3000:]
    # The first connection's browser prompt, and what to check when Colab cannot connect.
    assert "Chrome 142+ asks whether colab.research.google.com may reach local services (Local Network Access)" in out
    assert "Unable to connect" in out and "? Check in this order: 1. the site permission (lock icon" in out
    # Removed again: a new kernel does not find it.
    assert cell_output(site.url(), "import importlib.util as u; print(u.find_spec('iniconfig') is None)") == "True"


def test_required_gpu_that_root_sees_and_notebooks_do_not_fails_the_run(site):
    # Root's view as the nvidia_gpu role would publish it for a host with one working GPU; what the
    # kernel sees is asked for real, and the stand-in host has no driver.
    root_sees_a_gpu = {"nvidia_gpu_required": True, "nvidia_gpu_count": 1, "nvidia_gpu_driver_working": True}
    res = site.run("playbooks/connect.yml", "-e", json.dumps(root_sees_a_gpu))
    assert res.returncode != 0, res.stdout[-4000:]
    out = text(res)
    assert "TASK [colab_tunnel : Stop when root sees a GPU that notebooks do not]" in out
    assert (
        "The host has 1 NVIDIA GPU(s) that root sees, but the notebook kernel (not root) sees none:"
        " libcuda.so.1 cannot be loaded ("
    ) in out, out[-4000:]
    assert "Fix: the driver's user-space library is not visible to the service" in out
    assert "or set nvidia_gpu_required: false to go on without a GPU in notebooks." in out
    # Not required: the same host connects and says why notebooks have no GPU.
    res = site.run("playbooks/connect.yml", "-e", json.dumps(root_sees_a_gpu | {"nvidia_gpu_required": False}))
    assert res.returncode == 0, res.stdout[-4000:]
    assert "Notebooks: no GPU visible to notebooks: libcuda.so.1 cannot be loaded (" in text(res)


def test_drift_on_the_host_makes_the_roles_run_and_is_repaired(site):
    config = "/etc/colab-runtime/jupyter_server_config.py"
    original = sha256(site, config)
    site.host.exec("sh", "-c", f"echo 'c.ServerApp.ip = \"0.0.0.0\"' >> {config}")
    site.host.exec("systemctl", "stop", "idle-stop.timer")
    res = site.run()
    assert res.returncode == 0, res.stdout[-8000:]
    assert f"{config} changed" in text(res)
    assert "idle-stop.timer is inactive/enabled (was active/enabled)" in text(res)
    assert play_recap(res.stdout)[HOST]["changed"] >= 2
    assert sha256(site, config) == original
    assert site.host.exec("systemctl", "is-active", "idle-stop.timer").stdout.strip() == "active"
    # The runtime was restarted with the repaired configuration: loopback only again.
    listening = site.host.exec("ss", "-Hltn", f"sport = :{PORT}").stdout
    local = [line.split()[3] for line in listening.splitlines()]
    assert local == [f"127.0.0.1:{PORT}"], listening
    again = site.run()
    assert play_recap(again.stdout)[HOST]["changed"] == 0, again.stdout[-6000:]
    assert "Converging:" not in again.stdout


def test_changed_setting_makes_the_roles_run(site):
    def limit() -> int:
        return json.loads(site.host.exec("cat", "/etc/idle-stop.json").stdout)["limit_seconds"]

    res = site.run("site.yml", "-e", "idle_stop_limit_minutes=30")
    assert res.returncode == 0, res.stdout[-8000:]
    assert "Converging: roles or settings changed since the last converge" in text(res)
    assert limit() == 1800 and "Idle auto-stop after 30 min" in text(res)
    back = site.run()
    assert back.returncode == 0, back.stdout[-8000:]
    assert limit() == 3600 and play_recap(back.stdout)[HOST]["changed"] >= 1


def test_token_rotates_in_one_command_and_can_stay_out_of_the_log(site):
    old_url = site.url()
    res = site.run("site.yml", "-e", "colab_runtime_token_rotate=true", "-e", "colab_tunnel_show_token=false")
    assert res.returncode == 0, res.stdout[-8000:]
    new_url = site.url()
    old_token, new_token = old_url.split("token=")[1], new_url.split("token=")[1]
    assert new_token != old_token and len(new_token) == 48
    # The log names the 0600 file instead of the URL; neither token appears in it.
    # (The path itself is quoted by the output's YAML: the checkout's name has an apostrophe.)
    assert "Paste into Colab > Connect > Connect to a local runtime: the URL in /" in text(res)
    assert f"/.colab/{HOST}.url (readable by you only: cat " in text(res)
    assert new_token not in res.stdout and old_token not in res.stdout
    assert (site.state_dir / f"{HOST}.url").stat().st_mode & 0o777 == 0o600
    # The old URL no longer opens the runtime; the new one does, in both flows.
    base = old_url.split("?")[0].rstrip("/")
    assert http_get(f"{base}/api/kernels?token={old_token}")[0] == 403
    assert cell(new_url, "direct") == "42 True" and cell(new_url, "http_over_ws") == "42 True"


def test_full_converge_on_request_changes_nothing(site):
    res = site.run("site.yml", "-e", "converge_state_enabled=false")
    assert res.returncode == 0, res.stdout[-8000:]
    assert "TASK [colab_runtime : Install the systemd unit]" in res.stdout
    recap = play_recap(res.stdout)
    assert recap[HOST]["changed"] == 0 and recap["localhost"]["changed"] == 0, res.stdout[-6000:]


def test_killed_tunnel_comes_back_by_itself(site):
    old = site.ssh_pid()
    os.kill(old, signal.SIGKILL)
    assert wait_answers(site.url(), 15) < 15
    assert site.ssh_pid() != old
    assert cell(site.url(), "http_over_ws") == "42 True"


def test_restarted_host_brings_service_and_tunnel_back(site):
    site.host.restart()
    assert site.host.exec("systemctl", "is-active", "colab-runtime").stdout.strip() == "active"
    assert wait_answers(site.url(), 60) < 60
    assert cell(site.url(), "direct") == "42 True"


def test_onprem_example_inventory_configures_and_connects(site, tmp_path):
    # The example file as shipped, plus a source that points its host at the container.
    mapping = tmp_path / "onprem-address.yml"
    mapping.write_text(
        f"""all:
  hosts:
    gpu-workstation:
      ansible_host: 127.0.0.1
      ansible_port: {site.host.ssh_port}
      ansible_user: ubuntu
      ansible_ssh_private_key_file: {site.host.key_path}
      ansible_ssh_common_args: -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
      nvidia_gpu_required: false
      colab_runtime_kernel_package_set: minimal
"""
    )
    # The EC2 host's tunnel holds the port on this machine: close it first. Its records hold the port
    # too (a second unnamed runtime would be given the next one): this same host takes it over.
    assert site.run("playbooks/connect.yml", "-e", "colab_tunnel_state=stopped").returncode == 0
    forget_records(site, HOST)
    res = site.run("site.yml", "--skip-tags", "provision", inventory=["inventory/examples/onprem.yml", str(mapping)])
    try:
        assert res.returncode == 0, res.stdout[-8000:]
        assert play_recap(res.stdout)["gpu-workstation"]["failed"] == 0
        assert f"http://localhost:{PORT}/?token=" in res.stdout
        assert cell(site.url("colab-gpu-workstation"), "http_over_ws") == "42 True"
    finally:
        site.run(
            "playbooks/connect.yml", "-e", "colab_tunnel_state=stopped",
            inventory=["inventory/examples/onprem.yml", str(mapping)],
        )  # fmt: skip
        # The EC2 runtime gets its port back on its next connect (later tests).
        forget_records(site, "colab-gpu-workstation")


def forget_records(site, alias: str) -> None:
    """A runtime's port and URL records in the tunnel state dir, removed (colab_tunnel's forget)."""
    for suffix in (".port", ".url"):
        (site.state_dir / f"{alias}{suffix}").unlink(missing_ok=True)


def test_busy_kernel_survives_a_converge_that_would_restart_the_runtime(site):
    def main_pid() -> str:
        return site.host.exec("systemctl", "show", "-p", "MainPID", "--value", "colab-runtime").stdout.strip()

    # The tunnel this test reaches the runtime through (an earlier test may have stopped it).
    assert site.run("playbooks/connect.yml").returncode == 0
    pid = main_pid()
    changed_setting = ("-e", "colab_runtime_cull_idle_timeout=7777")  # a server setting: needs a restart
    with ColabClient(site.url(), None, flow="direct", timeout=60) as client:
        client.submit("import time; time.sleep(600)")
        deadline = time.monotonic() + 30
        while client.get_kernel()["execution_state"] != "busy":
            assert time.monotonic() < deadline, "the cell did not start"
            time.sleep(0.2)
        res = site.run("site.yml", *changed_setting, "-e", "colab_runtime_busy_kernel_wait=10")
        assert res.returncode != 0, res.stdout[-4000:]
        out = text(res)
        assert f"Not restarting colab-runtime on {HOST} for the changed settings: kernel {client.kernel_id} (python3, busy since " in out, out[-4000:]
        assert "is still running a cell after 10 s of waiting (colab_runtime_busy_kernel_wait)" in out
        assert "add -e colab_runtime_busy_kernel_wait=0 to restart now (the running cell is lost)" in out
        # The cell is still running in the same server, and the restart is pending.
        assert main_pid() == pid
        assert client.get_kernel()["execution_state"] == "busy"
        assert site.host.exec("test", "-f", "/etc/colab-runtime/restart-pending", check=False).returncode == 0
    # The kernel is gone now (the client deleted it): the next converge takes up the pending restart.
    res = site.run("site.yml", *changed_setting)
    assert res.returncode == 0, res.stdout[-4000:]
    assert main_pid() != pid
    assert site.host.exec("test", "-e", "/etc/colab-runtime/restart-pending", check=False).returncode != 0


def test_teardown_leaves_nothing_running(site):
    # Reopen the EC2 host's tunnel (closed for the on-prem run), then take everything down.
    assert site.run("playbooks/connect.yml").returncode == 0
    assert wait_answers(site.url(), 10) < 10
    stop = site.run("playbooks/connect.yml", "-e", "colab_tunnel_state=stopped")
    assert stop.returncode == 0, stop.stdout[-4000:]
    assert not (site.state_dir / f"{HOST}-tunnel.pid").exists()
    assert http_get(f"http://127.0.0.1:{PORT}/api", timeout=2)[0] == 0
    res = site.run("playbooks/teardown.yml", "-e", "ec2_gpu_host_terminate=yes")
    assert res.returncode == 0, res.stdout[-6000:]
    assert site.instances("pending", "running", "stopping", "stopped") == []
    groups = site.ec2().describe_security_groups(Filters=[{"Name": "tag:colab-gpu-runtime:owner", "Values": [OWNER]}])
    assert groups["SecurityGroups"] == []
