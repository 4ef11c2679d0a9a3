"""The colab_tunnel role's proof action loads its Colab client under ansible-playbook.

The client lives in the role's module_utils folder; the action finds it through Ansible's own
module_utils loader (which knows the folder once the role is loaded), not through a file path.
Nothing listens on the port, so the proof must fail with the client's own verdict for each flow:
that verdict exists only if the client was found and imported.
"""

from __future__ import annotations

import json

from colab_testkit.substrate import ansible_playbook, free_port

PLAY = """\
- name: Prove a cell through a tunnel that is not there
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Run the role's proof task
      ansible.builtin.include_role:
        name: colab_tunnel
        tasks_from: prove.yml
"""


def test_proof_action_imports_the_client_from_module_utils(tmp_path):
    playbook = tmp_path / "prove.yml"
    playbook.write_text(PLAY)
    variables = {
        "colab_tunnel_local_port": free_port(),
        "__colab_tunnel_kept_token": "not-a-token",
        "colab_tunnel_prove_flows": ["direct", "http_over_ws"],
    }
    res = ansible_playbook(
        "-i", "localhost,", "-c", "local", "-e", json.dumps(variables), str(playbook),
        env={"ANSIBLE_ROLES_PATH": "roles"}, timeout=120,
    )  # fmt: skip
    assert res.returncode != 0, res.stdout[-3000:]
    assert "colab_client.py is missing" not in res.stdout, res.stdout[-3000:]
    assert "No module named" not in res.stdout, res.stdout[-3000:]
    # One verdict line per flow, from colab_client.check_flows.
    assert "direct: FAILED" in res.stdout and "http_over_ws: FAILED" in res.stdout, res.stdout[-3000:]


def test_local_runtime_is_proved_on_localhost_without_a_tunnel(tmp_path):
    """inventory/examples/local.yml: no SSH configuration, no supervisor; the proof goes to localhost:<port>."""
    import http.server
    import threading

    from colab_testkit.substrate import ROOT

    port = free_port()
    # Stands in for the Jupyter on this machine: it answers, but starts no kernel (HTTP 501 to POST).
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    token_file = tmp_path / "token"
    token_file.write_text("0123456789abcdef0123456789abcdef\n")
    state = tmp_path / "state"
    variables = {
        "colab_runtime_port": port,
        "colab_tunnel_prove_flows": ["direct"],
        "colab_tunnel_state_dir": str(state),
        "colab_tunnel_token_file": str(token_file),
        "ansible_become": False,  # the example uses sudo for the token; this test runs as the token's owner
    }
    try:
        res = ansible_playbook(
            "-i", str(ROOT / "inventory" / "examples" / "local.yml"), "playbooks/connect.yml", "-e", json.dumps(variables),
            timeout=180,
        )  # fmt: skip
    finally:
        server.shutdown()
    assert res.returncode != 0, res.stdout[-3000:]
    # The cell was tried on the server at localhost:<port> itself.
    assert "direct: FAILED: starting a kernel failed: HTTP 501" in res.stdout, res.stdout[-3000:]
    assert "TASK [colab_tunnel : Run the tunnel under the chosen supervisor]" not in res.stdout
    assert not (state / "ssh_config").exists()
    assert not list(state.glob("*-tunnel.pid"))
