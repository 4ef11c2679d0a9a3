"""The runtime's SSH alias has one rule (colab_tunnel's filter colab_tunnel_alias_of): the
connect play, the status view and the bench name a runtime's tunnel with it."""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from colab_testkit.substrate import ROOT, load_role_file

alias_of = load_role_file("colab_tunnel", "filter_plugins/colab_tunnel.py", "colab_tunnel_filters").colab_tunnel_alias_of


@pytest.mark.parametrize(
    "name,alias",
    [("alice", "colab-alice"), ("colab-alice", "colab-alice"), ("colabalice", "colab-colabalice"), ("my-colab-x", "colab-my-colab-x")],
)
def test_alias_of_a_runtime_name(name, alias):
    assert alias_of(name) == alias


def test_every_user_of_the_rule_calls_the_filter():
    default = yaml.safe_load((ROOT / "roles" / "colab_tunnel" / "defaults" / "main.yml").read_text())["colab_tunnel_host_alias"]
    assert default == "{{ inventory_hostname | colab_tunnel_alias_of }}"
    [status] = yaml.safe_load((ROOT / "roles" / "ec2_gpu_host" / "tasks" / "status_tunnel.yml").read_text())[:1]
    assert status["vars"] == {"colab_tunnel_host_alias": "{{ __ec2_gpu_host_status_name | colab_tunnel_alias_of }}"}
    # No other spelling of the rule: a second copy would name another tunnel when one changes.
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.yml", "*.py", "*.j2"],
                           cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    copies = [
        name for name in sorted(set(files))
        if (ROOT / name).is_file()
        and re.search(r"""match\(['"]colab-['"]\)|startswith\(['"]colab-['"]\)""", (ROOT / name).read_text(errors="replace"))
    ]
    assert copies == ["roles/colab_tunnel/filter_plugins/colab_tunnel.py"]
