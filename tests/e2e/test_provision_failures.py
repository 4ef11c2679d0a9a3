"""Failure paths of provisioning against moto: bad input stops the run before anything exists,
what provisioning launched is what gets configured, and a run that launched or started an
instance and then fails stops it again and says what is left.

Runs go through ansible-playbook with botocore pointed at the moto server (AWS_ENDPOINT_URL), the
key pair under a temporary directory and, unless a test detects it, the SSH source network given.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from colab_testkit.substrate import ROOT, VENV_BIN, RemoteHost, seed_emulated_account, text_server, tool, write_ec2_overlay

REGION = "us-east-2"
OTHER_REGION = "us-west-2"
OWNER = "failtester"
NAME = f"colab-gpu-runtime-{OWNER}"
SSH_CIDR = "203.0.113.7/32"

pytestmark = pytest.mark.timeout(600)


# --------------------------------------------------------------------------- helpers
def client(moto, service: str = "ec2", region: str = REGION):
    return moto.client(service, region)


def env_for(moto, **extra: str) -> dict:
    """Only moto is reachable as AWS; nothing from the machine's AWS setup or proxies."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and "proxy" not in k.lower()}
    env.update(moto.aws_env(REGION))
    env.update(
        {
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": "/nonexistent/aws-config",
            "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
            "COLAB_OWNER": OWNER,
        }
    )
    env.update(
        {
            "PATH": f"{VENV_BIN}:{env.get('PATH', '')}",
            "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
        }
    )
    env.update(extra)
    return env


def base_vars(tmp: Path, **overrides) -> dict:
    values = {
        "ec2_gpu_host_ssh_cidr": SSH_CIDR,
        "ec2_gpu_host_ssh_private_key_file": str(tmp / "keys" / "id_ed25519"),
        "ec2_gpu_host_ami_ssm_parameter": "",
        "ec2_gpu_host_ami_name_filter": "ubuntu/images/hvm-ssd/ubuntu-xenial-16.04-amd64-server-*",
        "ec2_gpu_host_root_volume_size": 120,
        "ec2_gpu_host_wait_timeout": 60,
    }
    values.update(overrides)
    return values


def run(moto, tmp: Path, playbook: str, *args: str, env: dict | None = None, timeout: float = 400, **overrides):
    vars_file = tmp / f"vars-{os.urandom(4).hex()}.json"
    vars_file.write_text(json.dumps(base_vars(tmp, **overrides)))
    return subprocess.run(
        [tool("ansible-playbook"), "-e", f"@{vars_file}", *args, playbook],
        cwd=ROOT,
        env=env or env_for(moto),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )


def unwrap(text: str) -> str:
    """Line wrapping and YAML's quote doubling undone, so that a message can be matched as written."""
    return " ".join(text.split()).replace("''", "'")


def flat(proc) -> str:
    return unwrap(proc.stdout)


def instances(moto, region: str = REGION) -> list[dict]:
    found = [i for r in client(moto, region=region).describe_instances()["Reservations"] for i in r["Instances"]]
    return [i for i in found if i["State"]["Name"] != "terminated"]


def leftovers(moto, region: str = REGION) -> dict:
    ec2 = client(moto, region=region)
    return {
        "instances": [i["InstanceId"] for i in instances(moto, region)],
        "security_groups": [g["GroupName"] for g in ec2.describe_security_groups()["SecurityGroups"] if g["GroupName"] != "default"],
        "key_pairs": [k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]],
        "launch_templates": [t["LaunchTemplateName"] for t in ec2.describe_launch_templates()["LaunchTemplates"]],
    }


NOTHING = {"instances": [], "security_groups": [], "key_pairs": [], "launch_templates": []}


def assert_refused_before_anything(moto, tmp: Path, proc, *fragments: str, regions=(REGION,)) -> str:
    text = flat(proc)
    assert proc.returncode != 0, proc.stdout[-6000:]
    for fragment in fragments:
        assert fragment in text, proc.stdout[-6000:]
    errors = [line for line in proc.stdout.splitlines() if line.startswith(("fatal: [", "failed: ["))]
    assert len(errors) == 1, proc.stdout[-6000:]
    for region in regions:
        assert leftovers(moto, region) == NOTHING, region
    assert not (tmp / "keys").exists(), "no key may be generated before the preflight passed"
    return text


def fatal_message(proc) -> str:
    """The msg of the last fatal line: what the user reads last."""
    lines = proc.stdout.splitlines()
    start = max(i for i, line in enumerate(lines) if line.startswith(("fatal: [", "failed: [")))
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith(("PLAY RECAP", "NO MORE HOSTS"))), len(lines))
    return unwrap(" ".join(lines[start:end]))


# --------------------------------------------------------------------------- bad input: site.yml
def test_bad_runtime_port_stops_site_in_the_preflight(moto, tmp_path):
    """The issue's scenario: today it launches, then waits for a host the runtime role rejects."""
    start = time.monotonic()
    proc = run(moto, tmp_path, "site.yml", "-e", "colab_runtime_port=70000")
    text = assert_refused_before_anything(moto, tmp_path, proc, "colab_runtime_port=70000 is not a TCP port")
    assert "TASK [colab_runtime : Check colab_runtime_port]" in proc.stdout
    assert "fatal: [localhost]" in text, "checked on the controller, before any host exists"
    assert time.monotonic() - start < 120


BAD_INPUT = {
    "SSH prefix limit 0": (
        {"ec2_gpu_host_ssh_cidr_min_prefix": 0},
        ["ec2_gpu_host_ssh_cidr_min_prefix is 0: it must be a prefix length from 1 to 32"],
    ),
    "SSH prefix limit 33": (
        {"ec2_gpu_host_ssh_cidr_min_prefix": 33},
        ["ec2_gpu_host_ssh_cidr_min_prefix is 33: it must be a prefix length from 1 to 32"],
    ),
    "name with spaces (spot)": (
        {"ec2_gpu_host_name": "my gpu box", "ec2_gpu_host_spot": True},
        ["ec2_gpu_host_name is 'my gpu box': a name must be 1-120 letters", "Fix: set ec2_gpu_host_name to e.g. 'my-gpu-box'"],
    ),
    "security group name with spaces": (
        {"ec2_gpu_host_security_group_name": "colab sg"},
        ["ec2_gpu_host_security_group_name is 'colab sg'"],
    ),
    "driver branch": (
        {"nvidia_gpu_branch": "latest"},
        ["nvidia_gpu_branch is 'latest', expected a driver branch number"],
    ),
    "runtime token": (
        {"colab_runtime_token": "short"},
        ["colab_runtime_token must be at least 32 hexadecimal characters"],
    ),
    "missing instance profile": (
        {"ec2_gpu_host_iam_instance_profile": "no-such-profile"},
        ["ec2_gpu_host_iam_instance_profile 'no-such-profile' is not an instance profile of this account"],
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUT), ids=list(BAD_INPUT))
def test_bad_input_stops_site_before_anything_is_created(moto, tmp_path, case):
    overrides, expected = BAD_INPUT[case]
    proc = run(moto, tmp_path, "site.yml", **overrides)
    assert_refused_before_anything(moto, tmp_path, proc, *expected)


def test_instance_profile_without_ssm_policy_is_refused_for_ssm_access(moto, tmp_path):
    iam = client(moto, "iam")
    iam.create_role(RoleName="colab-no-ssm", AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}))
    iam.create_instance_profile(InstanceProfileName="colab-no-ssm")
    iam.add_role_to_instance_profile(InstanceProfileName="colab-no-ssm", RoleName="colab-no-ssm")
    proc = run(moto, tmp_path, "site.yml", ec2_gpu_host_access="ssm", ec2_gpu_host_iam_instance_profile="colab-no-ssm")
    assert_refused_before_anything(
        moto, tmp_path, proc,
        "instance profile 'colab-no-ssm' (role colab-no-ssm) has no AmazonSSMManagedInstanceCore policy attached",
        "aws iam attach-role-policy",
    )  # fmt: skip


def test_private_subnet_is_refused_before_anything_is_created(moto, tmp_path):
    ec2 = client(moto)
    vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
    private = ec2.create_subnet(VpcId=vpc, CidrBlock="10.20.1.0/24", AvailabilityZone=f"{REGION}a")["Subnet"]["SubnetId"]
    proc = run(moto, tmp_path, "site.yml", ec2_gpu_host_subnet_ids=[private])
    assert_refused_before_anything(
        moto, tmp_path, proc, f"Subnet(s) {private} in ec2_gpu_host_subnet_ids have no route 0.0.0.0/0 to an internet gateway"
    )
    # The same subnet with a route to an internet gateway passes the check (and launches there).
    gateway = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    ec2.attach_internet_gateway(InternetGatewayId=gateway, VpcId=vpc)
    table = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
    ec2.create_route(RouteTableId=table, DestinationCidrBlock="0.0.0.0/0", GatewayId=gateway)
    ec2.associate_route_table(RouteTableId=table, SubnetId=private)
    proc = run(moto, tmp_path, "playbooks/provision.yml", ec2_gpu_host_subnet_ids=[private])
    assert proc.returncode == 0, proc.stdout[-6000:]
    assert [i["SubnetId"] for i in instances(moto)] == [private]


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"ec2_gpu_host_region": OTHER_REGION}, f"ec2_gpu_host_region is '{OTHER_REGION}' but inventory/aws_ec2.yml looks for instances with region '{REGION}'"),
        ({"ec2_gpu_host_owner": "someone-else"}, f"ec2_gpu_host_owner is 'someone-else' but inventory/aws_ec2.yml looks for instances with owner '{OWNER}' (from the environment)"),
    ],
    ids=["region", "owner"],
)
def test_region_or_owner_only_in_extra_vars_is_refused(moto, tmp_path, override, expected):
    """-e reaches the role but not the aws_ec2 inventory: the launch would be invisible to configure."""
    proc = run(moto, tmp_path, "site.yml", **override)
    assert_refused_before_anything(moto, tmp_path, proc, expected, "Nothing was created", regions=(REGION, OTHER_REGION))


# --------------------------------------------------------------------------- caller address
@pytest.fixture
def echo_and_proxy():
    """A "what is my IP" service on 127.0.0.2 and an HTTP proxy on 127.0.0.1 that answers with its own address."""
    with text_server("198.51.100.23\n", "127.0.0.2") as echo, text_server("192.0.2.99\n") as proxy:
        yield f"{echo}/", proxy


def test_caller_address_lookup_bypasses_the_proxy(moto, tmp_path, echo_and_proxy):
    """Through HTTPS_PROXY the lookup would see the proxy's address, and the SG would let the proxy in."""
    echo_url, proxy_url = echo_and_proxy
    proxies = {k: proxy_url for k in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")}
    # moto itself is reached directly, as botocore would reach AWS without the proxy.
    env = env_for(moto, **proxies, NO_PROXY="127.0.0.1", no_proxy="127.0.0.1")
    proc = run(
        moto, tmp_path, "playbooks/provision.yml", env=env, ec2_gpu_host_ssh_cidr="", ec2_gpu_host_ip_lookup_url=echo_url
    )
    assert proc.returncode == 0, proc.stdout[-6000:]
    [group] = client(moto).describe_security_groups(GroupNames=[NAME])["SecurityGroups"]
    assert [c["CidrIp"] for r in group["IpPermissions"] for c in r["IpRanges"]] == ["198.51.100.23/32"]


def test_failed_lookup_behind_a_proxy_says_why(moto, tmp_path):
    env = env_for(moto, HTTPS_PROXY="http://127.0.0.1:9", NO_PROXY="127.0.0.1")
    proc = run(
        moto, tmp_path, "site.yml", env=env, ec2_gpu_host_ssh_cidr="", ec2_gpu_host_ip_lookup_url="http://127.0.0.2:9/"
    )
    assert_refused_before_anything(
        moto, tmp_path, proc, "is not a valid IPv4 network", "the lookup bypasses the proxy set in HTTPS_PROXY on purpose"
    )


# --------------------------------------------------------------------------- after the launch
def test_settings_changed_after_the_launch_are_refused_before_any_change(moto, tmp_path, ssh_key):
    proc = run(moto, tmp_path, "playbooks/provision.yml", ec2_gpu_host_ssh_private_key_file=str(ssh_key))
    assert proc.returncode == 0, proc.stdout[-6000:]
    [inst] = instances(moto)
    before = leftovers(moto)

    # Running (the inventory's short path) and stopped (the launch path): a renamed security group.
    for state in ("running", "stopped"):
        if state == "stopped":
            client(moto).stop_instances(InstanceIds=[inst["InstanceId"]])
        proc = run(
            moto, tmp_path, "playbooks/provision.yml",
            ec2_gpu_host_ssh_private_key_file=str(ssh_key), ec2_gpu_host_security_group_name="renamed-group",
        )  # fmt: skip
        text = flat(proc)
        assert proc.returncode != 0, proc.stdout[-6000:]
        assert (
            f"Instance {inst['InstanceId']} uses security group(s) {NAME}, not 'renamed-group' "
            "(ec2_gpu_host_security_group_name was changed after the launch)"
        ) in text, proc.stdout[-6000:]
        assert f"Fix: set ec2_gpu_host_security_group_name back to '{NAME}'" in text
        assert leftovers(moto) == before, state

    # A different key file than the one the (stopped) instance was launched with.
    other_key = tmp_path / "other" / "id_ed25519"
    other_key.parent.mkdir()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other_key)], check=True)
    key_before = client(moto).describe_key_pairs(KeyNames=[NAME], IncludePublicKey=True)["KeyPairs"][0]["PublicKey"]
    proc = run(moto, tmp_path, "playbooks/provision.yml", ec2_gpu_host_ssh_private_key_file=str(other_key))
    text = flat(proc)
    assert proc.returncode != 0, proc.stdout[-6000:]
    assert f"Instance {inst['InstanceId']} was launched with key pair '{NAME}' and accepts only that key" in text
    assert f"{other_key}.pub is a different key (the key file changed after the launch)" in text
    after = client(moto).describe_key_pairs(KeyNames=[NAME], IncludePublicKey=True)["KeyPairs"][0]["PublicKey"]
    assert after == key_before, "the key pair was not overwritten"
    assert client(moto).describe_instances(InstanceIds=[inst["InstanceId"]])["Reservations"][0]["Instances"][0]["State"]["Name"] == "stopped"


def test_instance_missing_from_the_inventory_is_stopped_and_reported(moto, tmp_path, ssh_key):
    """An inventory source that reads other settings: the launched instance is not in colab_gpu_hosts."""
    elsewhere = tmp_path / "elsewhere_aws_ec2.yml"
    text = (ROOT / "inventory" / "aws_ec2.yml").read_text()
    for old, new in (("'us-east-2'", f"'{OTHER_REGION}'"),
                     ("AWS_REGION', default=''", "NO_SUCH_VARIABLE', default=''"),
                     ("AWS_DEFAULT_REGION', default=''", "NO_SUCH_VARIABLE', default=''"),
                     ("lookup('ansible.builtin.file', root ~ '/inventory/group_vars/all.yml', errors='ignore')", "'{}'")):  # fmt: skip
        assert old in text, f"inventory/aws_ec2.yml no longer has {old}: this test must rewrite it another way"
        text = text.replace(old, new)
    elsewhere.write_text(text)
    proc = run(moto, tmp_path, "playbooks/provision.yml", "-i", str(elsewhere), ec2_gpu_host_ssh_private_key_file=str(ssh_key))
    assert proc.returncode != 0, proc.stdout[-6000:]
    [inst] = instances(moto)
    assert inst["State"]["Name"] == "stopped"
    last = fatal_message(proc)
    assert f"Instance {inst['InstanceId']} is not in the inventory group colab_gpu_hosts" in last, last
    assert f"-- Instance {inst['InstanceId']} (g4dn.xlarge in {REGION}, $0.5260/h while running), which this run launched, has been STOPPED" in last, last
    assert f"ansible-playbook playbooks/teardown.yml -e ec2_gpu_host_terminate={inst['InstanceId']}" in last


# --------------------------------------------------------------------------- configure fails on the host
@pytest.fixture
def emulated(moto, tmp_path, bookworm_image, ssh_key, _cleanup_leftover_hosts):
    """The emulated account plus a container playing the instance (login user ubuntu)."""
    seed_emulated_account(moto.url, REGION)
    host = RemoteHost.start(image=bookworm_image, key_path=ssh_key, user="ubuntu")
    overlay = write_ec2_overlay(tmp_path / "overlay", NAME, host.ssh_port, ssh_key, OWNER, REGION)
    yield host, overlay
    host.remove()


def site_on(moto, tmp_path, host: RemoteHost, overlay: Path, *extra: str):
    return run(
        moto, tmp_path, "site.yml", "-i", "inventory/", "-i", str(overlay),
        "-e", f"colab_tunnel_state_dir={tmp_path / 'colab'}", *extra,
        ec2_gpu_host_ssh_private_key_file=str(host.key_path),
    )  # fmt: skip


def state_of(moto, instance_id: str) -> str:
    return client(moto).describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]["State"]["Name"]


def test_wrong_login_user_fails_fast_and_stops_the_new_instance(moto, tmp_path, emulated):
    host, overlay = emulated
    start = time.monotonic()
    proc = site_on(moto, tmp_path, host, overlay, "-e", "ec2_gpu_host_ssh_user=wronguser", "-e", "colab_configure_login_timeout=15")
    elapsed = time.monotonic() - start
    assert proc.returncode != 0, proc.stdout[-6000:]
    assert elapsed < 180, f"{elapsed:.0f}s: the refused login must not wait for the boot timeout"
    [inst] = instances(moto)
    assert state_of(moto, inst["InstanceId"]) == "stopped"
    last = fatal_message(proc)
    assert f"Cannot log in to {NAME} (127.0.0.1:{host.ssh_port}) as 'wronguser' with key {host.key_path}" in last, last
    assert "Fix: set ec2_gpu_host_ssh_user" in last
    assert f"-- Instance {inst['InstanceId']} (" in last and "which this run launched, has been STOPPED" in last, last

    # Opted out: the next run starts it, fails the same way, and leaves it running with the stop command.
    proc = site_on(moto, tmp_path, host, overlay, "-e", "ec2_gpu_host_ssh_user=wronguser", "-e", "colab_configure_login_timeout=5",
                   "-e", "ec2_gpu_host_stop_on_failure=false")  # fmt: skip
    assert proc.returncode != 0, proc.stdout[-6000:]
    assert state_of(moto, inst["InstanceId"]) == "running"
    last = fatal_message(proc)
    assert "is still RUNNING and billing $" in last and "(ec2_gpu_host_stop_on_failure is false)" in last, last
    assert f"Stop it: `aws ec2 stop-instances --region {REGION} --instance-ids {inst['InstanceId']}`" in last, last


def test_failing_role_leaves_the_auto_stop_installed_and_the_instance_stopped(moto, tmp_path, emulated):
    """nvidia_gpu fails (a GPU is required, the host has none) after idle_stop, which runs first."""
    host, overlay = emulated
    proc = site_on(moto, tmp_path, host, overlay, "-e", "nvidia_gpu_required=true")
    assert proc.returncode != 0, proc.stdout[-6000:]
    assert "TASK [idle_stop : Enable and start the idle-stop timer]" in proc.stdout
    assert host.exec("systemctl", "is-enabled", "idle-stop.timer", check=False).stdout.strip() == "enabled"
    [inst] = instances(moto)
    assert state_of(moto, inst["InstanceId"]) == "stopped"
    last = fatal_message(proc)
    assert f"failed on {NAME}" in last and "GPU" in last, last
    assert f"-- Instance {inst['InstanceId']} (" in last and "has been STOPPED" in last, last
