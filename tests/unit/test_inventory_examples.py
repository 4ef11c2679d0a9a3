"""Example inventories for other clouds and on-prem hosts put their hosts in colab_gpu_hosts.

GCE and Azure cannot be reached here: their files are checked against the inventory plugins' own
documented options (ansible-doc), the file-name rules the plugins enforce, and for the group rule.
"""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml
from colab_testkit.substrate import ROOT, ansible_env, tool

EXAMPLES = ROOT / "inventory" / "examples"


def plugin_options(plugin: str) -> set[str]:
    out = subprocess.run(
        [tool("ansible-doc"), "-t", "inventory", "--json", plugin],
        capture_output=True, text=True, check=True, env=ansible_env(), cwd=ROOT,
    ).stdout  # fmt: skip
    return set(json.loads(out)[plugin]["doc"]["options"])


@pytest.mark.parametrize(
    ("name", "plugin", "suffixes"),
    [
        ("gcp_compute.yml", "google.cloud.gcp_compute", ("gcp.yml", "gcp.yaml", "gcp_compute.yml", "gcp_compute.yaml")),
        ("azure_rm.yml", "azure.azcollection.azure_rm", ("azure_rm.yml", "azure_rm.yaml")),
    ],
)
def test_cloud_example_uses_only_documented_options(name, plugin, suffixes):
    config = yaml.safe_load((EXAMPLES / name).read_text())
    assert config["plugin"] == plugin
    assert name.endswith(suffixes), f"{plugin} only reads files named *{suffixes}"
    unknown = set(config) - plugin_options(plugin) - {"plugin"}
    assert not unknown, f"{name}: options {sorted(unknown)} are not options of {plugin}"
    groups = config.get("groups") or config.get("conditional_groups")
    assert "colab_gpu_hosts" in groups


def test_onprem_example_puts_host_in_group_with_project_settings():
    env = ansible_env()
    graph = subprocess.run(
        [tool("ansible-inventory"), "-i", str(EXAMPLES / "onprem.yml"), "--graph"],
        capture_output=True, text=True, check=True, env=env, cwd=ROOT,
    ).stdout  # fmt: skip
    assert "@colab_gpu_hosts:" in graph and "gpu-workstation" in graph
    hostvars = json.loads(
        subprocess.run(
            [tool("ansible-inventory"), "-i", str(EXAMPLES / "onprem.yml"), "--host", "gpu-workstation"],
            capture_output=True, text=True, check=True, env=env, cwd=ROOT,
        ).stdout  # fmt: skip
    )
    # The project's one settings file reaches hosts of this inventory too.
    assert hostvars["colab_runtime_port"] == 8888
    assert hostvars["ansible_user"] == "ubuntu"


def test_local_example_makes_this_machine_the_runtime_without_a_tunnel():
    env = ansible_env()
    example = str(EXAMPLES / "local.yml")
    graph = subprocess.run(
        [tool("ansible-inventory"), "-i", example, "--graph"], capture_output=True, text=True, check=True, env=env, cwd=ROOT
    ).stdout
    assert "@colab_gpu_hosts:" in graph and "this-workstation" in graph
    hostvars = json.loads(
        subprocess.run(
            [tool("ansible-inventory"), "-i", example, "--host", "this-workstation"],
            capture_output=True, text=True, check=True, env=env, cwd=ROOT,
        ).stdout  # fmt: skip
    )
    assert hostvars["ansible_connection"] == "local"
    assert hostvars["idle_stop_enabled"] is False  # a workstation is never powered off when idle
    assert hostvars["colab_runtime_port"] == 8888  # the project's settings reach it too
    # The tunnel role decides "no tunnel" from that connection (its default, rendered here).
    defaults = yaml.safe_load((ROOT / "roles" / "colab_tunnel" / "defaults" / "main.yml").read_text())
    # (From the inventory's hostvars: the role's tasks are delegated to localhost, whose connection is local too.)
    assert defaults["colab_tunnel_direct"] == "{{ hostvars[inventory_hostname]['ansible_connection'] | default('ssh') == 'local' }}"
