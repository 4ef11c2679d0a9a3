"""Two runtimes of one owner side by side: the unnamed one and "big" (site.yml against the
emulated EC2 API, two containers playing the instances).

Each gets its own instance, security group, tunnel, local port and URL file, and both URLs
execute a cell; the key pair is shared. A run for one never reconfigures or reconnects the other;
status lists both; terminating big stops its tunnel and leaves the unnamed runtime running,
connected and with its key.
"""

from __future__ import annotations

import re

import pytest
from colab_testkit.substrate import (
    EmulatedSite,
    RemoteHost,
    TunnelState,
    cell,
    flat,
    free_port,
    pid_alive,
    play_recap,
    runtime_image,
    seed_emulated_account,
    tags,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

OWNER = "rt"
REGION = "us-east-2"
UNNAMED = f"colab-gpu-runtime-{OWNER}"
BIG = f"{UNNAMED}-big"
RUNTIME_TAG = "colab-gpu-runtime:runtime"


class Runtimes(EmulatedSite):
    """One owner's unnamed runtime and "big", run from this checkout."""

    def __init__(self, moto, hosts: dict[str, RemoteHost], workdir) -> None:
        self.tunnels = TunnelState(workdir / "state")
        # The unnamed runtime's port, free here; "big" must be assigned another one by itself.
        self.port = free_port()
        # Settings, not -e: a named runtime's server port follows its assigned tunnel port.
        settings = {"colab_tunnel_state_dir": str(self.tunnels.path), "colab_runtime_port": self.port}
        super().__init__(moto.url, hosts, workdir, OWNER, REGION, settings)

    def instances(self) -> dict[str, dict]:
        return super().instances(OWNER)


@pytest.fixture(scope="module")
def runtimes(request, moto_server, tmp_path_factory, bookworm_image, ssh_key, _cleanup_leftover_hosts):
    moto_server.reset()
    seed_emulated_account(moto_server.url, REGION)
    work = tmp_path_factory.mktemp("runtimes")
    image = runtime_image(bookworm_image, ssh_key, work)
    hosts = {name: RemoteHost.start(image=image, key_path=ssh_key, user="ubuntu") for name in (UNNAMED, BIG)}
    r = Runtimes(moto_server, hosts, work)

    def cleanup():
        for name in ("", "big"):
            r.run("playbooks/connect.yml", "-e", "colab_tunnel_state=stopped", "-e", f"ec2_gpu_host_runtime_name={name}")
        for host in hosts.values():
            host.remove()
        moto_server.reset()

    request.addfinalizer(cleanup)
    r.unnamed_run = r.run("site.yml")
    r.big_run = r.run("site.yml", "-e", "ec2_gpu_host_runtime_name=big")
    return r


def test_two_runtimes_have_their_own_instances_groups_ports_and_urls(runtimes):
    assert runtimes.unnamed_run.returncode == 0, runtimes.unnamed_run.stdout[-8000:]
    assert runtimes.big_run.returncode == 0, runtimes.big_run.stdout[-8000:]
    found = runtimes.instances()
    assert sorted(found) == [UNNAMED, BIG]
    assert found[UNNAMED]["State"]["Name"] == found[BIG]["State"]["Name"] == "running"
    # The unnamed runtime is as before names existed; big's resources say whose they are.
    assert RUNTIME_TAG not in tags(found[UNNAMED]) and tags(found[BIG])[RUNTIME_TAG] == "big"
    groups = {g["GroupName"]: g for g in runtimes.ec2().describe_security_groups()["SecurityGroups"] if g["GroupName"] != "default"}
    assert sorted(groups) == [UNNAMED, BIG]
    assert tags(groups[BIG])[RUNTIME_TAG] == "big"
    assert [g["GroupId"] for g in found[BIG]["SecurityGroups"]] == [groups[BIG]["GroupId"]]
    # One key pair for the owner, used by both instances.
    assert [k["KeyName"] for k in runtimes.ec2().describe_key_pairs()["KeyPairs"]] == [UNNAMED]
    assert found[UNNAMED]["KeyName"] == found[BIG]["KeyName"] == UNNAMED
    unnamed_url, big_url = runtimes.tunnels.url(UNNAMED), runtimes.tunnels.url(BIG)
    big_port = runtimes.tunnels.port(BIG)
    assert unnamed_url.startswith(f"http://localhost:{runtimes.port}/?token=")
    assert big_port != runtimes.port and big_url.startswith(f"http://localhost:{big_port}/?token=")
    assert runtimes.tunnels.pid(UNNAMED) != runtimes.tunnels.pid(BIG)
    # Big's server listens on its own port on its own host.
    assert f"localhost:{big_port} -> {BIG}:{big_port}" in flat(runtimes.big_run)


@pytest.mark.parametrize("alias", [UNNAMED, BIG])
def test_both_urls_execute_a_cell(runtimes, alias):
    assert cell(runtimes.tunnels.url(alias)) == "42"


def test_a_run_for_one_runtime_leaves_the_other_alone(runtimes):
    """Big's run ended the unnamed host before any SSH command; a re-run keeps big's port."""
    # The unnamed host ran no task at all: it is not even in the recap.
    assert sorted(play_recap(runtimes.big_run.stdout)) == [BIG, "localhost"], runtimes.big_run.stdout[-8000:]
    unnamed_pid, big_pid, big_url = runtimes.tunnels.pid(UNNAMED), runtimes.tunnels.pid(BIG), runtimes.tunnels.url(BIG)
    again = runtimes.run("site.yml", "-e", "ec2_gpu_host_runtime_name=big")
    assert again.returncode == 0, again.stdout[-8000:]
    assert play_recap(again.stdout)[BIG]["changed"] == 0, again.stdout[-8000:]
    assert (runtimes.tunnels.pid(UNNAMED), runtimes.tunnels.pid(BIG), runtimes.tunnels.url(BIG)) == (unnamed_pid, big_pid, big_url)


def test_an_explicit_port_of_another_runtime_is_refused(runtimes):
    res = runtimes.run("playbooks/connect.yml", "-e", "ec2_gpu_host_runtime_name=big", "-e", f"colab_tunnel_local_port={runtimes.port}")
    assert res.returncode != 0
    assert (
        f"colab_tunnel_local_port {runtimes.port} is the port of runtime {UNNAMED} (recorded in its state files): two tunnels "
        "cannot share it."
    ) in flat(res), res.stdout[-4000:]
    assert cell(runtimes.tunnels.url(BIG)) == "42"


def test_status_lists_both_runtimes_with_their_tunnels(runtimes):
    res = runtimes.run("playbooks/status.yml")
    assert res.returncode == 0, res.stdout[-4000:]
    lines = [line.strip() for line in res.stdout.splitlines()]
    header = re.split(r"\s{2,}", next(line for line in lines if line.startswith("NAME ")))
    cells = [re.split(r"\s{2,}", line) for line in lines if line.startswith(UNNAMED)]
    rows = {r[0]: dict(zip(header, r)) for r in cells if len(r) == len(header)}
    assert sorted(rows) == [UNNAMED, BIG], res.stdout[-4000:]
    assert (rows[UNNAMED]["RUNTIME"], rows[UNNAMED]["STATE"]) == ("-", "running"), rows
    assert (rows[BIG]["RUNTIME"], rows[BIG]["STATE"]) == ("big", "running"), rows
    big_port = runtimes.tunnels.port(BIG)
    assert rows[UNNAMED]["TUNNEL"] == f"up http://localhost:{runtimes.port}/"
    assert rows[BIG]["TUNNEL"] == f"up http://localhost:{big_port}/"


def test_invalid_runtime_name_is_refused_before_anything(runtimes):
    res = runtimes.run("playbooks/teardown.yml", "-e", "ec2_gpu_host_runtime_name=Big_One")
    assert res.returncode != 0
    assert (
        "ec2_gpu_host_runtime_name is 'Big_One': a runtime name must be 1-32 lowercase letters, digits or '-'"
    ) in flat(res), res.stdout[-4000:]
    assert "Fix: -e ec2_gpu_host_runtime_name=big-one, or leave it empty for the unnamed runtime." in flat(res)
    assert sorted(runtimes.instances()) == [UNNAMED, BIG]


def test_terminating_big_leaves_the_unnamed_runtime_running_connected_and_with_its_key(runtimes):
    unnamed_pid, big_pid = runtimes.tunnels.pid(UNNAMED), runtimes.tunnels.pid(BIG)
    res = runtimes.run("playbooks/teardown.yml", "-e", "ec2_gpu_host_runtime_name=big", "-e", "ec2_gpu_host_terminate=yes")
    assert res.returncode == 0, res.stdout[-6000:]
    assert f"Kept key pair {UNNAMED}: runtime(s) {UNNAMED} still use it." in flat(res)
    found = runtimes.instances()
    assert sorted(found) == [UNNAMED] and found[UNNAMED]["State"]["Name"] == "running"
    names = [g["GroupName"] for g in runtimes.ec2().describe_security_groups()["SecurityGroups"]]
    assert UNNAMED in names and BIG not in names
    assert [k["KeyName"] for k in runtimes.ec2().describe_key_pairs()["KeyPairs"]] == [UNNAMED]
    # Big's tunnel, port record, URL and SSH entries are gone with it; the unnamed runtime's tunnel never moved.
    for leftover in (f"{BIG}.port", f"{BIG}.url", f"{BIG}.ssh_config", f"{BIG}-tunnel.pid"):
        assert not (runtimes.tunnels.path / leftover).exists(), leftover
    assert not pid_alive(big_pid)
    assert runtimes.tunnels.pid(UNNAMED) == unnamed_pid
    assert cell(runtimes.tunnels.url(UNNAMED)) == "42"
