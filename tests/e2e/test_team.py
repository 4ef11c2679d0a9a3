"""A team from one inventory: three runtimes of two owners provisioned, configured and connected
in one run of site.yml, one fork each (the emulated EC2 API, three containers playing the
instances, the project copied to a path with a space and given inventory/team.yml).

Each runtime gets its own instance, tags, security group, tunnel, port and URL, each owner one key
pair; a re-run changes nothing; each owner's status and teardown see only their own; one member's
bad setting stops the whole run before anything is created.
"""

from __future__ import annotations

import re
import time

import pytest
import yaml
from colab_testkit.substrate import (
    AwsCallLog,
    EmulatedSite,
    RemoteHost,
    TunnelState,
    cell,
    copy_checkout,
    flat,
    free_port,
    play_recap,
    runtime_image,
    seed_emulated_account,
    tags,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

REGION = "us-east-2"
# The settings' owner runs it for the team; the team file names every runtime's owner.
LEAD = "tm-a"
TEAM = {"tm-a": {"ec2_gpu_host_owner": "tm-a"},
        "tm-b": {"ec2_gpu_host_owner": "tm-b"},
        "tm-b-big": {"ec2_gpu_host_owner": "tm-b", "ec2_gpu_host_runtime_name": "big"}}  # fmt: skip
NAMES = {member: f"colab-gpu-runtime-{member}" for member in TEAM}
OWNER_TAG, RUNTIME_TAG = "colab-gpu-runtime:owner", "colab-gpu-runtime:runtime"


def team_file(members: dict) -> str:
    return yaml.safe_dump({"colab_runtimes": {
        "hosts": members,
        "vars": {"ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}"},
    }})  # fmt: skip


class Team(EmulatedSite):
    """The team's site: a copy of the project with inventory/team.yml, run as the lead."""

    def __init__(self, moto, hosts: dict[str, RemoteHost], workdir) -> None:
        self.checkout = copy_checkout(workdir / "team run")
        (self.checkout / "inventory" / "team.yml").write_text(team_file(TEAM))
        self.tunnels = TunnelState(workdir / "state")
        self.port = free_port()
        settings = {"colab_tunnel_state_dir": str(self.tunnels.path), "colab_runtime_port": self.port}
        super().__init__(moto.url, hosts, workdir, LEAD, REGION, settings, root=self.checkout)
        self.seconds: dict[str, float] = {}

    def run(self, playbook: str, *extra: str, label: str = "", env: dict | None = None):
        start = time.monotonic()
        res = super().run(playbook, *extra, env=env)
        if label:
            self.seconds[label] = time.monotonic() - start
        return res


def failures(res) -> str:
    """Each failed task of a run with its message, then the run's end: what a failed assert shows."""
    fatal = re.findall(r"^(?:fatal|failed): .*?(?=^\S|\Z)", res.stdout, flags=re.M | re.S)
    return "\n".join(f[:3000] for f in fatal) + "\n...\n" + res.stdout[-4000:]


def status_rows(res) -> dict[str, dict]:
    lines = [line.strip() for line in res.stdout.splitlines()]
    header = re.split(r"\s{2,}", next(line for line in lines if line.startswith("NAME ")))
    cells = [re.split(r"\s{2,}", line) for line in lines if line.startswith("colab-gpu-runtime-")]
    return {r[0]: dict(zip(header, r)) for r in cells if len(r) == len(header)}


@pytest.fixture(scope="module")
def team(request, moto_server, tmp_path_factory, bookworm_image, ssh_key, _cleanup_leftover_hosts):
    moto_server.reset()
    seed_emulated_account(moto_server.url, REGION)
    work = tmp_path_factory.mktemp("team")
    image = runtime_image(bookworm_image, ssh_key, work)
    hosts = {name: RemoteHost.start(image=image, key_path=ssh_key, user="ubuntu") for name in NAMES.values()}
    t = Team(moto_server, hosts, work)

    def cleanup():
        t.run("playbooks/connect.yml", "-e", "colab_tunnel_state=stopped")
        for host in hosts.values():
            host.remove()
        moto_server.reset()

    request.addfinalizer(cleanup)
    t.fresh = t.run("site.yml", label="fresh")
    return t


def test_one_run_provisions_configures_and_connects_every_runtime(team):
    assert team.fresh.returncode == 0, failures(team.fresh)
    found = team.instances()
    assert sorted(found) == sorted(NAMES.values())
    for member, name in NAMES.items():
        instance = found[name]
        assert instance["State"]["Name"] == "running"
        assert tags(instance)[OWNER_TAG] == TEAM[member]["ec2_gpu_host_owner"]
        assert tags(instance).get(RUNTIME_TAG, "") == TEAM[member].get("ec2_gpu_host_runtime_name", "")
    # One key pair per owner (tm-b's two runtimes share theirs), one security group per runtime.
    assert sorted(k["KeyName"] for k in team.ec2().describe_key_pairs()["KeyPairs"]) == [NAMES["tm-a"], NAMES["tm-b"]]
    assert found[NAMES["tm-b"]]["KeyName"] == found[NAMES["tm-b-big"]]["KeyName"] == NAMES["tm-b"]
    groups = [g["GroupName"] for g in team.ec2().describe_security_groups()["SecurityGroups"] if g["GroupName"] != "default"]
    assert sorted(groups) == sorted(NAMES.values())
    # Every request and every instance took part, in the one run.
    assert sorted(play_recap(team.fresh.stdout)) == sorted([*TEAM, *NAMES.values()]), team.fresh.stdout[-6000:]


def test_every_runtime_has_its_own_port_tunnel_and_url_and_executes_a_cell(team):
    urls = {name: team.tunnels.url(name) for name in NAMES.values()}
    ports = {int(re.match(r"http://localhost:([0-9]+)/\?token=", url).group(1)) for url in urls.values()}
    assert len(ports) == 3 and team.port in ports, urls
    assert len({team.tunnels.pid(name) for name in NAMES.values()}) == 3
    for name, url in urls.items():
        assert cell(url) == "42", name


def test_a_re_run_of_the_team_changes_nothing(team, tmp_path):
    before = {name: (team.tunnels.pid(name), team.tunnels.url(name)) for name in NAMES.values()}
    calls = AwsCallLog(tmp_path / "aws-calls.jsonl")
    again = team.run("site.yml", label="no-op", env=calls.env())
    assert again.returncode == 0, again.stdout[-8000:]
    recap = play_recap(again.stdout)
    assert {host: stats["changed"] for host, stats in recap.items()} == dict.fromkeys([*TEAM, *NAMES.values()], 0), again.stdout[-8000:]
    assert {name: (team.tunnels.pid(name), team.tunnels.url(name)) for name in NAMES.values()} == before
    # One AWS call per kind for the whole team: the inventory's describe (every owner at once), one
    # security-group describe for the three runtimes, one identity lookup (aws_caller_info).
    assert calls.take() == {
        "ec2:DescribeInstances": 1, "ec2:DescribeSecurityGroups": 1, "iam:ListAccountAliases": 1, "sts:GetCallerIdentity": 1,
    }  # fmt: skip
    print(f"team of 3: fresh run {team.seconds['fresh']:.1f} s, no-op re-run {team.seconds['no-op']:.1f} s")


def test_each_owner_sees_only_their_own_runtimes(team):
    lead = team.run("playbooks/status.yml")
    assert lead.returncode == 0, lead.stdout[-4000:]
    assert sorted(status_rows(lead)) == [NAMES["tm-a"]], lead.stdout[-4000:]
    other = team.run("playbooks/status.yml", "-e", "ec2_gpu_host_owner=tm-b")
    assert other.returncode == 0, other.stdout[-4000:]
    rows = status_rows(other)
    assert sorted(rows) == [NAMES["tm-b"], NAMES["tm-b-big"]], other.stdout[-4000:]
    assert (rows[NAMES["tm-b-big"]]["RUNTIME"], rows[NAMES["tm-b-big"]]["STATE"]) == ("big", "running")


def test_a_bad_setting_of_one_member_stops_the_whole_run_before_anything(team, tmp_path):
    bad = {**TEAM, "tm-c": {"ec2_gpu_host_owner": "tm-c", "ec2_gpu_host_runtime_name": "Big_One"}}
    team_path = team.checkout / "inventory" / "team.yml"
    team_path.write_text(team_file(bad))
    try:
        res = team.run("site.yml")
    finally:
        team_path.write_text(team_file(TEAM))
    assert res.returncode != 0
    assert "ec2_gpu_host_runtime_name is 'Big_One': a runtime name must be 1-32 lowercase letters" in flat(res), res.stdout[-4000:]
    # Every other runtime stopped at the same point, before any change; no later play ran.
    assert "Runtime(s) tm-c of this run failed the settings checks above. Nothing was created or changed" in flat(res), failures(res)
    recap = play_recap(res.stdout)
    assert sorted(recap) == sorted([*TEAM, "tm-c"]) and all(s["changed"] == 0 and s["failed"] == 1 for s in recap.values()), recap
    assert sorted(team.instances()) == sorted(NAMES.values())


def test_one_owners_teardown_stops_only_that_runtime(team):
    res = team.run("playbooks/teardown.yml", "-e", "ec2_gpu_host_owner=tm-b", "-e", "ec2_gpu_host_runtime_name=big")
    assert res.returncode == 0, res.stdout[-6000:]
    states = {name: i["State"]["Name"] for name, i in team.instances().items()}
    assert states == {NAMES["tm-a"]: "running", NAMES["tm-b"]: "running", NAMES["tm-b-big"]: "stopped"}, states
    assert cell(team.tunnels.url(NAMES["tm-a"])) == "42"
