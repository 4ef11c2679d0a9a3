"""colab_tunnel's action: how often it asks the forward whether it carries HTTP (each ask is a new
connection through the tunnel, two network round trips)."""

from __future__ import annotations

import pytest

from colab_testkit.substrate import load_role_file


@pytest.fixture
def action(monkeypatch):
    module = load_role_file("colab_tunnel", "action_plugins/colab_tunnel.py", "colab_tunnel_action_under_test")
    probes = []

    def http_answers(address, port, timeout=2.0):
        probes.append((address, port))
        return module.answers

    module.answers = True
    module.probes = probes
    monkeypatch.setattr(module, "http_answers", http_answers)
    return module


def params(tmp_path, **extra):
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    p = {
        "state": "started", "host_alias": "colab-h-tunnel", "ssh_config": str(state / "ssh_config"),
        "ssh_config_content": "Host colab-h-tunnel\n", "local_port": 8888, "bind_address": "127.0.0.1",
        "state_dir": str(state), "control_dir": None, "supervisor_script": str(state / "supervisor.py"),
        "supervisor_source": None, "remote_command": "exec sleep infinity", "timeout": 5, "python": None,
        "url": "http://localhost:8888/?token=t", "url_file": str(state / "h.url"),
        "ssh_config_index": None, "ssh_config_index_content": None,
    }  # fmt: skip
    p.update(extra)
    return p


def test_a_running_tunnel_is_asked_once_per_task(action, tmp_path, monkeypatch):
    monkeypatch.setattr(action.Tunnel, "pid", lambda self: 4242)
    monkeypatch.setattr(action.Tunnel, "ssh_pid", lambda self: 4243)
    monkeypatch.setattr(action.Tunnel, "current_config", lambda self: True)
    result = action.manage(params(tmp_path), check_mode=False, want_diff=False)
    assert result["healthy"] is True and result["running"] is True
    # Kept, URL file written, result reported: one probe, not one per question.
    assert len(action.probes) == 1
    assert (tmp_path / "state" / "h.url").read_text() == "http://localhost:8888/?token=t\n"


def test_a_tunnel_that_does_not_answer_is_asked_again(action, tmp_path):
    action.answers = False
    tunnel = action.Tunnel(params(tmp_path), check_mode=False)
    assert not tunnel.healthy()
    assert not tunnel.healthy()
    action.answers = True
    assert tunnel.healthy()
    assert tunnel.healthy()
    assert len(action.probes) == 3


def test_the_index_of_every_runtimes_ssh_config_is_written_beside_the_runtimes_own(action, tmp_path):
    index = tmp_path / "state" / "ssh_config"
    p = params(tmp_path, ssh_config=str(tmp_path / "state" / "colab-h.ssh_config"), ssh_config_index=str(index),
               ssh_config_index_content='Include "/x/*.ssh_config"\n')  # fmt: skip
    changed, _ = action.ensure_files(p, check_mode=False)
    assert sorted(changed) == sorted([str(index), p["ssh_config"]])
    assert index.read_text() == 'Include "/x/*.ssh_config"\n' and index.stat().st_mode & 0o777 == 0o600
    # Unchanged on the next run; nothing written in check mode.
    assert action.ensure_files(p, check_mode=False)[0] == []
    (tmp_path / "b").mkdir()
    other = params(tmp_path / "b", ssh_config_index=str(tmp_path / "b-index"), ssh_config_index_content="x\n")
    assert str(tmp_path / "b-index") in action.ensure_files(other, check_mode=True)[0]
    assert not (tmp_path / "b-index").exists()
