"""colab_tunnel's generated files, rendered from the role's templates and defaults on this machine:
the launchd agent (macOS), the systemd user unit and the ssh_config that OpenSSH reads (`ssh -G`).

The tunnel's life cycle against a host is tests/e2e/test_tunnel.py.
"""

from __future__ import annotations

import configparser
import plistlib
import subprocess
from pathlib import Path

import pytest
import yaml

from colab_testkit.substrate import ROOT, ansible_playbook


COMMON = {
    "_colab_tunnel_hostname": "203.0.113.10",
    "_colab_tunnel_port": 22,
    "_colab_tunnel_user": "ubuntu",
    "_colab_tunnel_key": "/home/u/.ssh/colab",
    "_colab_tunnel_launchd_label": "com.colab-gpu-runtime.colab-gpu1",
    "colab_tunnel_state_dir": "/Users/u/colab-gpu-runtime/.colab",
}


SSM = {
    "colab_tunnel_ssm": True,
    "_colab_tunnel_hostname": "i-0123456789abcdef0",
    "colab_tunnel_ssm_region": "us-east-2",
    "colab_tunnel_ssm_profile": "work",
}
# name -> (template, variables on top of the role's defaults)
RENDERINGS = {
    "launchd": ("colab-tunnel.plist.j2", COMMON),
    "systemd": ("colab-tunnel.service.j2", COMMON),
    "ssh_config": ("ssh_config.j2", COMMON),
    "ssh_config_ssm": ("ssh_config.j2", {**COMMON, **SSM}),
}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, Path]:
    """Every rendering above, in one ansible-playbook run, as the role renders them: the role's
    defaults below (play vars_files), the case's values above them (task vars)."""
    out = tmp_path_factory.mktemp("rendered")
    tasks = [
        {
            "name": f"Render {name}",
            "vars": variables,
            "ansible.builtin.copy": {
                "content": "{{ lookup('ansible.builtin.template', '%s/roles/colab_tunnel/templates/%s') }}" % (ROOT, template),
                "dest": str(out / name),
                "mode": "0600",
            },
        }
        for name, (template, variables) in RENDERINGS.items()
    ]
    play = [
        {
            "name": "Render",
            "hosts": "gpu1",
            "connection": "local",
            "gather_facts": False,
            "vars": {"ansible_python_interpreter": "{{ ansible_playbook_python }}"},
            "vars_files": [str(ROOT / "roles/colab_tunnel/defaults/main.yml")],
            "tasks": tasks,
        }
    ]
    playbook = out / "render.yml"
    playbook.write_text(yaml.safe_dump(play))
    res = ansible_playbook("-i", "gpu1,", str(playbook))
    assert res.returncode == 0, res.stdout[-3000:]
    return {name: out / name for name in RENDERINGS}


def test_launchd_agent_keeps_the_tunnel_alive(rendered):
    plist = plistlib.loads(rendered["launchd"].read_bytes())
    assert plist["Label"] == "com.colab-gpu-runtime.colab-gpu1"
    assert plist["KeepAlive"] is True and plist["RunAtLoad"] is True
    assert plist["ProgramArguments"] == [
        "/usr/bin/ssh", "-F", "/Users/u/colab-gpu-runtime/.colab/ssh_config", "colab-gpu1-tunnel", "exec sleep infinity",
    ]  # fmt: skip


def test_systemd_user_unit_restarts_forever(rendered):
    unit = configparser.ConfigParser(interpolation=None)
    unit.read_string(rendered["systemd"].read_text())
    assert unit["Service"]["Restart"] == "always"
    assert unit["Unit"]["StartLimitIntervalSec"] == "0"
    assert unit["Service"]["ExecStart"].endswith("colab-gpu1-tunnel exec sleep infinity")
    assert unit["Install"]["WantedBy"] == "default.target"


def ssh_g(config: Path, alias: str) -> dict[str, str]:
    """What OpenSSH itself makes of the generated file (`ssh -G`)."""
    out = subprocess.run(["ssh", "-F", str(config), "-G", alias], capture_output=True, text=True, check=True).stdout
    values: dict[str, str] = {}
    for line in out.splitlines():
        key, _, value = line.partition(" ")
        values.setdefault(key, value)
    return values


def test_ssh_config_tunnel_entry(rendered):
    cfg = ssh_g(rendered["ssh_config"], "colab-gpu1-tunnel")
    assert cfg["hostname"] == "203.0.113.10"
    assert cfg["user"] == "ubuntu"
    assert cfg["localforward"] == "[127.0.0.1]:8888 [127.0.0.1]:8888"
    assert cfg["exitonforwardfailure"] == "yes"
    assert cfg["serveraliveinterval"] == "5" and cfg["serveralivecountmax"] == "3"
    assert cfg["stricthostkeychecking"] == "accept-new"
    assert cfg["hostkeyalias"] == "gpu1"
    shell = ssh_g(rendered["ssh_config"], "colab-gpu1")
    assert "localforward" not in shell
    assert shell["controlmaster"] == "auto"
    assert shell["controlpath"] == cfg["controlpath"]


def test_ssh_config_ssm_proxy(rendered):
    cfg = ssh_g(rendered["ssh_config_ssm"], "colab-gpu1-tunnel")
    assert cfg["hostname"] == "i-0123456789abcdef0"
    assert cfg["proxycommand"] == (
        "aws ssm start-session --target %h --document-name AWS-StartSSHSession "
        "--parameters portNumber=%p --region us-east-2 --profile work"
    )
