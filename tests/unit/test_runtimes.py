"""Several runtimes per person: the runtime name check and the choice of each tunnel's local port.

The name check (roles/ec2_gpu_host/tasks/preflight_identity.yml) runs on the controller, one play
per name in a single ansible-playbook run; the port decision is the pure function of the
colab_tunnel_port action, and its records are read and written in a temporary state directory.
"""

from __future__ import annotations

import json
import sys

import pytest
import yaml

from colab_testkit.substrate import ROOT, ansible_playbook, free_port, load_role_file

port_action = load_role_file("colab_tunnel", "action_plugins/colab_tunnel_port.py", "colab_tunnel_port_under_test")

# name -> None when accepted, else the fix the message proposes
NAMES = {
    "": None,
    "big": None,
    "a": None,
    "gpu-2": None,
    "x" * 32: None,
    "Big": "big",
    "big one": "big-one",
    "-big": "big",
    "big-": "big",
    "x" * 33: "x" * 32,
    "a_b": "a-b",
    "ä!": "big",
}


@pytest.fixture(scope="module")
def name_outcomes(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("names")
    plays = []
    for index, name in enumerate(NAMES):
        result = str(tmp / f"{index}.json")
        plays.append({
            "name": f"Case {index}",
            "hosts": "localhost",
            "gather_facts": False,
            "vars": {"ec2_gpu_host_runtime_name": name, "ec2_gpu_host_owner": "alice", "ec2_gpu_host_region": "us-east-2"},
            "tasks": [{
                "name": "Check",
                "block": [
                    {"name": "Run the check", "ansible.builtin.include_role": {"name": "ec2_gpu_host", "tasks_from": "preflight_identity"}},
                    {"name": "Passed", "ansible.builtin.copy": {"content": "null", "dest": result, "mode": "0600"}},
                ],
                "rescue": [
                    {"name": "Failed", "ansible.builtin.copy": {"content": "{{ ansible_failed_result.msg | to_json }}", "dest": result, "mode": "0600"}},
                ],
            }],
        })  # fmt: skip
    playbook = tmp / "names.yml"
    playbook.write_text(yaml.safe_dump(plays, sort_keys=False))
    res = ansible_playbook(
        "-i", "localhost,", "-c", "local", "-e", f"ansible_python_interpreter={sys.executable}", str(playbook), env={"ANSIBLE_ROLES_PATH": str(ROOT / "roles")}, timeout=300,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout[-4000:]
    return {name: json.loads((tmp / f"{index}.json").read_text()) for index, name in enumerate(NAMES)}


@pytest.mark.parametrize("name", list(NAMES), ids=lambda n: repr(n))
def test_runtime_name_check(name_outcomes, name):
    message, fix = name_outcomes[name], NAMES[name]
    if fix is None:
        assert message is None
        return
    text = " ".join(message.split())
    assert text.startswith(f"ec2_gpu_host_runtime_name is '{name}': a runtime name must be 1-32 lowercase letters"), text
    assert "Nothing was changed." in text
    assert f"Fix: -e ec2_gpu_host_runtime_name={fix}, or leave it empty for the unnamed runtime." in text


def choose(requested=0, name="", own=0, others=None, listening=()):
    return port_action.choose_port(requested, name, 8888, own, others or {}, set(listening).__contains__)


def test_unnamed_runtime_keeps_its_port():
    assert choose() == (8888, True, "")
    # Named ones never take it. Listening there is its own tunnel on a re-run.
    assert choose(listening={8888}, others={"colab-gpu-runtime-alice-big": 8889}) == (8888, True, "")
    # A changed colab_runtime_port moves it (the record follows).
    assert choose(own=8000) == (8888, True, "")


def test_a_teammates_unnamed_runtime_gets_the_next_free_port():
    """Two unnamed runtimes (two owners of a team) on one machine: the second is assigned one."""
    assert choose(others={"colab-gpu-runtime-alice": 8888}) == (8889, True, "")
    assert choose(own=8890, others={"colab-gpu-runtime-alice": 8888}) == (8890, True, "")
    port, _, error = choose(others={"colab-gpu-runtime-alice": 8888}, listening=set(range(8889, 9100)))
    assert port == 0 and error.startswith("No free local port from 8889 to 9088 for runtime (unnamed)")


def test_named_runtime_gets_the_first_free_port_above_the_unnamed_ones():
    assert choose(name="big") == (8889, True, "")
    others = {"colab-gpu-runtime-alice": 8888, "colab-gpu-runtime-alice-small": 8889}
    assert choose(name="big", others=others, listening={8890}) == (8891, True, "")


def test_named_runtime_keeps_its_recorded_port():
    assert choose(name="big", own=8895, listening={8895}) == (8895, True, "")


def test_recorded_port_another_runtime_took_is_given_up():
    assert choose(name="big", own=8889, others={"colab-gpu-runtime-alice-x": 8889}) == (8890, True, "")


def test_requested_port_is_used_unless_another_runtime_records_it():
    assert choose(requested=9000, name="big") == (9000, False, "")
    port, assigned, error = choose(requested=8888, name="big", others={"colab-gpu-runtime-alice": 8888})
    assert (port, assigned) == (0, False)
    assert error == (
        "colab_tunnel_local_port 8888 is the port of runtime colab-gpu-runtime-alice (recorded in its state files): two "
        "tunnels cannot share it. Fix: choose another port, or leave colab_tunnel_local_port unset (0) to get a free one "
        "assigned."
    )


def test_no_free_port_is_an_error():
    port, _, error = choose(name="big", listening=set(range(8889, 9100)))
    assert port == 0 and error.startswith("No free local port from 8889 to 9088 for runtime big")


def test_records_are_read_from_port_and_url_files(tmp_path):
    (tmp_path / "colab-gpu-runtime-alice.url").write_text("http://localhost:8888/?token=abc\n")
    (tmp_path / "colab-gpu-runtime-alice-big.port").write_text("8889\n")
    (tmp_path / "colab-gpu-runtime-alice-big.url").write_text("http://localhost:8889/?token=def\n")
    (tmp_path / "colab-gpu-runtime-alice-gpu.port").write_text("8890\n")
    (tmp_path / "junk.url").write_text("not a url\n")
    others, own = port_action.read_records(str(tmp_path), "colab-gpu-runtime-alice-gpu")
    assert others == {"colab-gpu-runtime-alice": 8888, "colab-gpu-runtime-alice-big": 8889}
    assert own == 8890


def test_listening_port_is_seen():
    import socket

    port = free_port()
    assert not port_action.listens("127.0.0.1", port)
    with socket.socket() as server:
        server.bind(("127.0.0.1", port))
        server.listen()
        assert port_action.listens("127.0.0.1", port)
