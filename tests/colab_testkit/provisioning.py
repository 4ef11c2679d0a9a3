"""The provision and teardown playbooks against the emulated EC2 API, as the end-to-end tests run them.

Every run goes through ansible-playbook with botocore pointed at the moto server
(AWS_ENDPOINT_URL), the SSH source network given explicitly (no IP lookup) and the key pair
under the test's temporary directory. Faults moto cannot produce (capacity, quota) come from the
test double in tests/aws_hooks (``ansible_env(faults=...)``).
"""

from __future__ import annotations

import base64
import json
import os
import re
import tempfile
from pathlib import Path

import yaml

from colab_testkit.substrate import AWS_HOOKS, ROOT, ansible_playbook


def _config_value(key: str, default: str) -> str:
    """A plain value from the project's config file, which the inventory reads too, else default."""
    try:
        value = yaml.safe_load((ROOT / "inventory" / "group_vars" / "all.yml").read_text()).get(key)
    except (OSError, AttributeError):
        return default
    return value if isinstance(value, str) and value and "{" not in value else default


REGION = _config_value("ec2_gpu_host_region", "us-east-2")
OWNER = _config_value("ec2_gpu_host_owner", "ci-tester")
FIRST_ZONE = f"{REGION}a"
NAME = f"colab-gpu-runtime-{OWNER}"
PROJECT_TAG = "colab-gpu-runtime:project"
OWNER_TAG = "colab-gpu-runtime:owner"
CREATOR_TAG = "colab-gpu-runtime:created-by"
REQUESTED_TAG = "colab-gpu-runtime:requested-type"
# The caller moto reports for the emulated account.
YOU = "arn:aws:sts::123456789012:user/moto"
# The tags everything this owner's runs create carries.
OURS = {PROJECT_TAG: "colab-gpu-runtime", OWNER_TAG: OWNER, CREATOR_TAG: YOU}
SSH_CIDR = "203.0.113.7/32"
HOOKS = AWS_HOOKS
# moto ships Canonical's xenial image and a Deep Learning AMI (Ubuntu) owned by AWS.
XENIAL_FILTER = "ubuntu/images/hvm-ssd/ubuntu-xenial-16.04-amd64-server-*"
DLAMI_PARAMETER = "/colab-test/dlami/ami-id"
SPOT = {"ec2_gpu_host_spot": True, "ec2_gpu_host_spot_max_price": "0.30"}

def ec2(server):
    return server.client("ec2", REGION)


def ansible_env(
    server, *, credentials: bool = True, faults: list | None = None, call_log: Path | None = None,
    aws_call_log: Path | None = None,
):
    """What one run gets as AWS: only moto (the runner drops the caller's AWS settings).

    call_log records the launches (RunInstances); aws_call_log every AWS API call of the run.
    """
    if credentials:
        env = server.aws_env(REGION)
    else:
        env = {"AWS_ENDPOINT_URL": server.url, "AWS_REGION": REGION, "AWS_DEFAULT_REGION": REGION}
    env["COLAB_OWNER"] = OWNER
    if faults is not None or call_log is not None or aws_call_log is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HOOKS), os.environ.get("PYTHONPATH", "")) if p)
        env["COLAB_TEST_EC2_FAULTS"] = json.dumps(faults or [])
        if call_log is not None:
            env["COLAB_TEST_EC2_CALL_LOG"] = str(call_log)
        if aws_call_log is not None:
            env["COLAB_TEST_AWS_CALL_LOG"] = str(aws_call_log)
    return env


def base_vars(tmp: Path, **overrides) -> dict:
    values = {
        "ec2_gpu_host_region": REGION,
        "ec2_gpu_host_ssh_cidr": SSH_CIDR,
        "ec2_gpu_host_ssh_private_key_file": str(tmp / "keys" / "id_ed25519"),
        "ec2_gpu_host_ami_ssm_parameter": DLAMI_PARAMETER,
        "ec2_gpu_host_ami_name_filter": XENIAL_FILTER,
        "ec2_gpu_host_root_volume_size": 120,
        "ec2_gpu_host_wait_timeout": 60,
    }
    values.update(overrides)
    return values


# The tunnel's state dir (its run lock, known_hosts) of this test process, not the checkout's
# .colab: test files run side by side on pytest-xdist workers, and each would otherwise wait for
# the other's lock on the same runtime name.
STATE_DIR = Path(tempfile.gettempdir()) / f"colab-gpu-runtime-e2e-{os.getpid()}"


def run_playbook(playbook: Path | str, env: dict, variables: dict, *args: str):
    variables = {"colab_tunnel_state_dir": str(STATE_DIR), **variables}
    return ansible_playbook(*args, str(playbook), env=env, extra_vars=variables, isolate_aws=True, timeout=500)


FACTS_PLAY = """\
- name: Provision
  ansible.builtin.import_playbook: {provision}

# debug runs inside the controller (no module start); base64 keeps the line unwrapped.
- name: Report what provisioning published
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Print the facts and the refreshed inventory group
      ansible.builtin.debug:
        msg: >-
          COLAB_FACTS={{{{ {{'facts': {{'instance_id': ec2_gpu_host_instance_id, 'instance_type': ec2_gpu_host_instance_type,
               'region_used': ec2_gpu_host_region_used, 'cost_per_hour': ec2_gpu_host_cost_per_hour,
               'cost_source': ec2_gpu_host_cost_source, 'market': ec2_gpu_host_market,
               'ssh_user': ec2_gpu_host_ssh_user_used, 'summary': ec2_gpu_host_summary}},
              'group': groups['colab_gpu_hosts'] | default([]),
              'hostvars': dict(groups['colab_gpu_hosts'] | default([])
                               | zip(groups['colab_gpu_hosts'] | default([])
                                     | map('extract', hostvars) | map(attribute='ansible_host'))) }}
             | to_json | b64encode }}}}
"""


def provision(server, tmp: Path, *args: str, env: dict | None = None, **overrides):
    """Run playbooks/provision.yml; returns (process, published facts or None)."""
    wrapper = tmp / f"provision-{os.urandom(4).hex()}.yml"
    wrapper.write_text(FACTS_PLAY.format(provision=ROOT / "playbooks" / "provision.yml"))
    proc = run_playbook(wrapper, env or ansible_env(server), base_vars(tmp, **overrides), *args)
    found = re.search(r"COLAB_FACTS=([A-Za-z0-9+/=]+)", proc.stdout)
    facts = json.loads(base64.b64decode(found.group(1))) if found else None
    return proc, facts


def teardown(server, env: dict | None = None, **variables):
    """Run playbooks/teardown.yml with the given settings (e.g. ec2_gpu_host_terminate=...)."""
    variables = {"ec2_gpu_host_region": REGION, **variables}
    return run_playbook(ROOT / "playbooks" / "teardown.yml", env or ansible_env(server), variables)


def output(proc) -> str:
    return proc.stdout


def ok(proc) -> None:
    assert proc.returncode == 0, output(proc)[-8000:]


def instances(client, include_terminated: bool = False) -> list[dict]:
    found = [i for r in client.describe_instances()["Reservations"] for i in r["Instances"]]
    return [i for i in found if include_terminated or i["State"]["Name"] != "terminated"]


def leftovers(client) -> dict:
    """Everything a provisioning run could have created."""
    return {
        "instances": [i["InstanceId"] for i in instances(client)],
        "security_groups": [
            g["GroupName"] for g in client.describe_security_groups()["SecurityGroups"] if g["GroupName"] != "default"
        ],
        "key_pairs": [k["KeyName"] for k in client.describe_key_pairs()["KeyPairs"]],
        "launch_templates": [t["LaunchTemplateName"] for t in client.describe_launch_templates()["LaunchTemplates"]],
    }


NOTHING = {"instances": [], "security_groups": [], "key_pairs": [], "launch_templates": []}


def foreign_instance(client, name: str, extra_tags: dict | None = None) -> str:
    """An instance someone else launched: same Name, but not (or not our owner's) project tags."""
    image = client.describe_images(Owners=["099720109477"])["Images"][0]["ImageId"]
    tag_list = [{"Key": "Name", "Value": name}] + [{"Key": k, "Value": v} for k, v in (extra_tags or {}).items()]
    res = client.run_instances(
        ImageId=image,
        MinCount=1,
        MaxCount=1,
        InstanceType="t3.micro",
        TagSpecifications=[{"ResourceType": "instance", "Tags": tag_list}],
    )
    return res["Instances"][0]["InstanceId"]


def read_calls(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
