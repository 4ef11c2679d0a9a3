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

# Longer than any socket path allows, with a space, as in ~/My Projects/... checkouts.
LONG_DIR = "My Projects/" + "colab-gpu-runtime-checkout-with-a-long-name" * 3


COMMON = {
    "__colab_tunnel_hostname": "203.0.113.10",
    "__colab_tunnel_port": 22,
    "__colab_tunnel_user": "ubuntu",
    "__colab_tunnel_key": "/home/u/.ssh/colab",
    "__colab_tunnel_launchd_label": "com.colab-gpu-runtime.colab-gpu1",
    "colab_tunnel_state_dir": "/Users/u/colab-gpu-runtime/.colab",
    "__colab_tunnel_control_dir": "/tmp/colab-gpu-runtime-501",
    "__colab_tunnel_host_key_alias": "i-0123456789abcdef0",
}


def render_all(work: Path, cases: dict[str, tuple[str, dict]]) -> dict[str, str]:
    """Render each (template, variables) case with the role's defaults and vars, as the role would, in
    one ansible-playbook run (each run costs seconds of CPU): a play per case, its variables as task
    variables so that they win over the defaults file like the role's own facts do."""
    defaults = str(ROOT / "roles/colab_tunnel/defaults/main.yml")
    role_vars = str(ROOT / "roles/colab_tunnel/vars/main.yml")
    plays = [
        {
            "name": f"Render {name}",
            "hosts": "gpu1",
            "connection": "local",
            "gather_facts": False,
            "vars": {"ansible_python_interpreter": "{{ ansible_playbook_python }}"},
            "vars_files": [defaults, role_vars],
            "tasks": [
                {
                    "name": "Render",
                    "ansible.builtin.copy": {
                        "content": "{{ lookup('ansible.builtin.template', '%s/roles/colab_tunnel/templates/%s') }}" % (ROOT, template),
                        "dest": str(work / name),
                        "mode": "0600",
                    },
                    "vars": extra,
                }
            ],
        }
        for name, (template, extra) in cases.items()
    ]
    (work / "render.yml").write_text(yaml.safe_dump(plays))
    # The defaults use the role's filters, which Ansible loads with the role: next to the playbook here.
    (work / "filter_plugins").symlink_to(ROOT / "roles" / "colab_tunnel" / "filter_plugins")
    res = ansible_playbook("-i", "gpu1,", str(work / "render.yml"))
    assert res.returncode == 0, res.stdout[-3000:]
    return {name: (work / name).read_text() for name in cases}


# Longer than any socket path allows, with a space and a %: ~/My Projects/... checkouts.
SPACED_STATE = f"/home/alice/{LONG_DIR}/100%/.colab"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, str]:
    work = tmp_path_factory.mktemp("rendered")
    spaced_control = work / "c d"
    cases = {
        "plist": ("colab-tunnel.plist.j2", COMMON),
        "plist_spaced": (
            "colab-tunnel.plist.j2",
            {**COMMON, "colab_tunnel_state_dir": f"/Users/u/{LONG_DIR}/.colab", "__colab_tunnel_control_dir": str(spaced_control)},
        ),
        "unit": ("colab-tunnel.service.j2", COMMON),
        "ssh_config": ("ssh_config.j2", COMMON),
        "index_spaced": ("ssh_config_index.j2", {**COMMON, "colab_tunnel_state_dir": str(work / "state dir")}),
        "ssh_config_ssm": (
            "ssh_config.j2",
            {
                **COMMON,
                "colab_tunnel_ssm": True,
                "__colab_tunnel_hostname": "i-0123456789abcdef0",
                "colab_tunnel_ssm_region": "us-east-2",
                "colab_tunnel_ssm_profile": "work",
            },
        ),
        "ssh_config_spaced": (
            "ssh_config.j2",
            {**COMMON, "colab_tunnel_state_dir": SPACED_STATE, "__colab_tunnel_key": f"{SPACED_STATE}/id ed25519"},
        ),
    }
    return {**render_all(work, cases), "spaced_control": str(spaced_control)}


def test_launchd_agent_keeps_the_tunnel_alive(rendered):
    plist = plistlib.loads(rendered["plist"].encode())
    assert plist["Label"] == "com.colab-gpu-runtime.colab-gpu1"
    assert plist["KeepAlive"] is True and plist["RunAtLoad"] is True
    # The control socket's directory is re-created before ssh starts (a cleaner may empty /tmp).
    assert plist["ProgramArguments"] == [
        "/bin/sh", "-c", '/bin/mkdir -p -m 0700 "$0" && exec /usr/bin/ssh -F "$1" "$2" "$3"',
        "/tmp/colab-gpu-runtime-501", "/Users/u/colab-gpu-runtime/.colab/colab-gpu1.ssh_config", "colab-gpu1-tunnel",
        "exec sleep infinity",
    ]  # fmt: skip
    # What launchd would run, run by a shell here: the arguments arrive intact, spaces included.
    args = plistlib.loads(rendered["plist_spaced"].encode())["ProgramArguments"]
    shown = subprocess.run(
        [*args[:2], args[2].replace("exec /usr/bin/ssh", "printf '%s|'"), *args[3:]], capture_output=True, text=True, check=True
    ).stdout
    assert shown == f"-F|/Users/u/{LONG_DIR}/.colab/colab-gpu1.ssh_config|colab-gpu1-tunnel|exec sleep infinity|"
    control = Path(rendered["spaced_control"])
    assert control.is_dir() and control.stat().st_mode & 0o777 == 0o700


def test_systemd_user_unit_restarts_forever(rendered):
    unit = configparser.ConfigParser(interpolation=None)
    unit.read_string(rendered["unit"])
    assert unit["Service"]["Restart"] == "always"
    assert unit["Unit"]["StartLimitIntervalSec"] == "0"
    assert unit["Service"]["ExecStart"] == (
        '/usr/bin/env ssh -F "/Users/u/colab-gpu-runtime/.colab/colab-gpu1.ssh_config" colab-gpu1-tunnel exec sleep infinity'
    )
    assert unit["Service"]["ExecStartPre"] == '/bin/mkdir -p -m 0700 "/tmp/colab-gpu-runtime-501"'
    assert unit["Install"]["WantedBy"] == "default.target"


def ssh_config_for(tmp_path: Path, text: str) -> str:
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


def test_ssh_config_tunnel_entry(tmp_path, rendered):
    config = ssh_config_for(tmp_path, rendered["ssh_config"])
    cfg = ssh_g(config, "colab-gpu1-tunnel")
    assert cfg["hostname"] == "203.0.113.10"
    assert cfg["user"] == "ubuntu"
    assert cfg["localforward"] == "[127.0.0.1]:8888 [127.0.0.1]:8888"
    assert cfg["exitonforwardfailure"] == "yes"
    assert cfg["serveraliveinterval"] == "5" and cfg["serveralivecountmax"] == "3"
    assert cfg["stricthostkeychecking"] == "accept-new"
    # Host keys are remembered per instance: a replacement instance under the same name is new.
    assert cfg["hostkeyalias"] == "i-0123456789abcdef0"
    assert cfg["controlpath"].startswith("/tmp/colab-gpu-runtime-501/")
    shell = ssh_g(config, "colab-gpu1")
    assert "localforward" not in shell
    assert shell["controlmaster"] == "auto"
    assert shell["controlpath"] == cfg["controlpath"]


def test_ssh_config_ssm_proxy(tmp_path, rendered):
    cfg = ssh_g(ssh_config_for(tmp_path, rendered["ssh_config_ssm"]), "colab-gpu1-tunnel")
    assert cfg["hostname"] == "i-0123456789abcdef0"
    assert cfg["proxycommand"] == (
        "aws ssm start-session --target %h --document-name AWS-StartSSHSession "
        "--parameters portNumber=%p --region us-east-2 --profile work"
    )


def test_ssh_config_paths_with_spaces_and_percent_signs(tmp_path, rendered):
    """A checkout under a long path with a space (and a %) is written so that ssh reads it back."""
    state = SPACED_STATE
    cfg = ssh_g(ssh_config_for(tmp_path, rendered["ssh_config_spaced"]), "colab-gpu1-tunnel")
    assert cfg["userknownhostsfile"] == f"{state}/known_hosts"
    # ssh -G shows IdentityFile before its % tokens are expanded: %% is the literal %.
    assert cfg["identityfile"] == f"{state}/id ed25519".replace("%", "%%")
    # %C is a 40-character hash: with ssh's 17-character suffix the socket path stays far below
    # the 104 bytes a Unix socket allows, whatever the checkout's path.
    assert len(cfg["controlpath"]) == len("/tmp/colab-gpu-runtime-501/") + 40


def test_the_index_includes_every_runtimes_entries(tmp_path, rendered):
    """`.colab/ssh_config` (what people Include) reaches each runtime's own file, spaces and all."""
    state = Path(rendered["index_spaced"].split('Include "')[-1].split('/*.ssh_config"')[0])
    state.mkdir(exist_ok=True)
    index = state / "ssh_config"
    index.write_text(rendered["index_spaced"])
    (state / "colab-gpu1.ssh_config").write_text(rendered["ssh_config"])
    (state / "colab-gpu2.ssh_config").write_text(rendered["ssh_config"].replace("colab-gpu1", "colab-gpu2").replace("203.0.113.10", "203.0.113.20"))
    assert ssh_g(str(index), "colab-gpu1-tunnel")["hostname"] == "203.0.113.10"
    assert ssh_g(str(index), "colab-gpu2")["hostname"] == "203.0.113.20"

