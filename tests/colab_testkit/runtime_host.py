"""A test host converged with the colab_runtime role alone, over SSH, and an ``ssh -L`` forward to it.

The end-to-end runtime tests (test_colab_runtime, test_kernel_env) converge the role again on a
host of the shared runtime image (substrate.runtime_image) with a port of their own, then talk
to Jupyter through the forward, which keeps the port number: Colab's classic flow fetches its
auth URL from inside the server at the browser's port.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

from colab_testkit.substrate import ROOT, RemoteHost, ansible_playbook, stop_process, wait_tcp

SERVICE = "colab-runtime"
TOKEN_FILE = "/etc/colab-runtime/token"
# The role's default kernel package set (Colab's, several GB) is not what these tests are about.
KERNEL_SETTINGS = {"colab_runtime_kernel_package_set": "minimal"}


def start_host(image: str, key: Path) -> RemoteHost:
    # Not the shared colab-test- prefix: a parallel test session's leftover cleanup removes
    # those, and this host lives for minutes. The test's fixture removes it.
    return RemoteHost.start(image=image, key_path=key, name=f"colab-runtime-test-{uuid.uuid4().hex[:8]}")


PLAYBOOK = """\
- name: Colab runtime
  hosts: colab_gpu_hosts
  become: true
  roles:
    - role: colab_runtime
  post_tasks:
    - name: Hand the published facts to the test (0600, never printed)
      ansible.builtin.copy:
        content: "{{ {'token': colab_runtime_token, 'port': colab_runtime_port} | to_json }}"
        dest: "%(facts)s"
        mode: "0600"
      delegate_to: localhost
      become: false
      no_log: true
"""


class Runtime:
    """The converged host, its SSH forward and how to re-run the role on it."""

    def __init__(self, host: RemoteHost, workdir: Path, port: int) -> None:
        self.host = host
        self.workdir = workdir
        self.port = port
        self.inventory = workdir / "inventory.json"
        self.inventory.write_text(json.dumps(host.inventory()))
        self.facts_file = workdir / "facts.json"
        self.playbook = workdir / "site.yml"
        self.playbook.write_text(PLAYBOOK % {"facts": self.facts_file})
        self.tunnel: subprocess.Popen | None = None

    def converge(self, **extra_vars) -> subprocess.CompletedProcess:
        variables = {"colab_runtime_port": self.port, **KERNEL_SETTINGS, **extra_vars}
        return ansible_playbook(
            "-v", "-i", str(self.inventory), str(self.playbook), "-e", json.dumps(variables),
            env={"ANSIBLE_ROLES_PATH": str(ROOT / "roles")},
        )  # fmt: skip

    @property
    def token(self) -> str:
        return self.host.exec("cat", TOKEN_FILE).stdout.strip()

    @property
    def url(self) -> str:
        return f"http://localhost:{self.port}/?token={self.token}"

    @property
    def base(self) -> str:
        return f"http://localhost:{self.port}"

    def main_pid(self) -> str:
        return self.host.exec("systemctl", "show", "-p", "MainPID", "--value", SERVICE).stdout.strip()

    def open_tunnel(self) -> None:
        self.tunnel = subprocess.Popen(
            ["ssh", *self.host.ssh_options(), "-N", "-o", "ExitOnForwardFailure=yes",
             "-L", f"{self.port}:127.0.0.1:{self.port}", f"{self.host.user}@127.0.0.1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_tcp("127.0.0.1", self.port, timeout=30)

    def close_tunnel(self) -> None:
        if self.tunnel is not None:
            stop_process(self.tunnel)

    def state(self) -> dict[str, str]:
        """What a failed run must leave alone."""
        script = (
            f"sha256sum /etc/colab-runtime/* /etc/systemd/system/{SERVICE}.service /opt/colab-runtime/*.txt; "
            f"systemctl show -p MainPID -p ActiveState {SERVICE}"
        )
        return {"files": self.host.exec("sh", "-c", script).stdout}
