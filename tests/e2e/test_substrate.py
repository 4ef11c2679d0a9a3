"""The test substrate itself works: systemd test hosts reached over SSH, and moto via endpoint_url."""

from __future__ import annotations

import hashlib
import json
import os

import yaml
from colab_testkit.substrate import ansible_playbook, play_recap


def test_host_boots_systemd_as_pid1_and_answers_ssh(remote_host):
    comm = remote_host.exec("cat", "/proc/1/comm").stdout.strip()
    assert comm == "systemd"
    state = remote_host.exec("systemctl", "is-system-running", check=False).stdout.strip()
    assert state in ("running", "degraded")
    assert remote_host.ssh("id", "-un").stdout.strip() == remote_host.user


def host_play(remote_host, tmp_path, name: str, tasks: list[dict], gather_facts: bool) -> tuple:
    """An inventory that reaches remote_host over SSH and a one-play playbook running tasks as root."""
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {"children": remote_host.inventory()}}))
    playbook = tmp_path / "play.yml"
    play = {"name": name, "hosts": "colab_gpu_hosts", "gather_facts": gather_facts, "become": True, "tasks": tasks}
    playbook.write_text(yaml.safe_dump([play]))
    return inventory, playbook


def test_ansible_reaches_host_over_ssh(remote_host, tmp_path):
    inventory, playbook = host_play(remote_host, tmp_path, "Reach the test host", [
        {"name": "Ping", "ansible.builtin.ping": {}},
        {"name": "Report the init system", "ansible.builtin.debug": {"msg": "init={{ ansible_service_mgr }} user={{ ansible_user_id }}"}},
    ], gather_facts=True)  # fmt: skip
    res = ansible_playbook("-i", str(inventory), str(playbook))
    assert res.returncode == 0, res.stdout
    assert "init=systemd user=root" in res.stdout
    assert play_recap(res.stdout)[remote_host.name]["failed"] == 0


def test_amazon_aws_module_reaches_moto_through_endpoint_url(moto, tmp_path):
    playbook = tmp_path / "kp.yml"
    playbook.write_text(
        yaml.safe_dump(
            [
                {
                    "name": "Talk to the emulated EC2 API",
                    "hosts": "localhost",
                    "connection": "local",
                    "gather_facts": False,
                    "vars": {"ansible_python_interpreter": "{{ ansible_playbook_python }}"},
                    "tasks": [
                        {
                            "name": "Create a key pair",
                            "amazon.aws.ec2_key": {
                                "name": "substrate-check",
                                "key_type": "ed25519",
                                "region": "us-east-2",
                                "endpoint_url": moto.url,
                                "access_key": "testing",
                                "secret_key": "testing",
                            },
                            "register": "kp",
                        },
                        {"name": "Show it", "ansible.builtin.debug": {"msg": "{{ kp.key.name | to_json }}"}},
                    ],
                }
            ]
        )
    )
    res = ansible_playbook("-i", "localhost,", str(playbook))
    assert res.returncode == 0, res.stdout
    ec2 = moto.client("ec2", "us-east-2")
    names = [k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]]
    assert names == ["substrate-check"], json.dumps(names)


def test_files_reach_the_host_through_one_dd_session(remote_host, tmp_path):
    """ansible.cfg's transfer_method: a copied file travels through `dd` (no SFTP round trips), intact."""
    payload = tmp_path / "payload.bin"
    payload.write_bytes(os.urandom(200_000))  # several of dd's 64 KiB blocks
    inventory, playbook = host_play(remote_host, tmp_path, "Copy a file to the test host", [
        {"name": "Copy", "ansible.builtin.copy": {"src": str(payload), "dest": "/root/payload.bin", "mode": "0600"}},
        {"name": "Checksum", "ansible.builtin.stat": {"path": "/root/payload.bin", "checksum_algorithm": "sha256"},
         "register": "copied"},
        {"name": "Report", "ansible.builtin.debug": {"msg": "sha256={{ copied.stat.checksum }}"}},
    ], gather_facts=False)  # fmt: skip
    res = ansible_playbook("-vvv", "-i", str(inventory), str(playbook))
    assert res.returncode == 0, res.stdout[-4000:]
    assert f"sha256={hashlib.sha256(payload.read_bytes()).hexdigest()}" in res.stdout
    assert "dd of=" in res.stdout and "sftp" not in res.stdout.lower(), res.stdout[-4000:]
