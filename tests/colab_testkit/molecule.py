"""Helpers of the Molecule scenarios' testinfra verifiers (run by `molecule verify`)."""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from .substrate import ansible_playbook, make_ssh_key, podman


def reconverge(host, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run the scenario's converge playbook again, on this host only (output in ``.stdout``).

    Molecule hands the verifier its own inventory and ansible.cfg (roles path, connection
    settings) through the environment: the run uses those, not the project's, except for the
    connection (see ssh_overlay).
    """
    name = host.backend.get_hostname()
    inventory = Path(os.environ["MOLECULE_INVENTORY_FILE"]).parent
    converge = Path(os.environ["MOLECULE_SCENARIO_DIRECTORY"]) / "converge.yml"
    return ansible_playbook(
        "-i", str(inventory), "-i", str(ssh_overlay(name)), "--limit", name, str(converge), *extra,
        env={"ANSIBLE_CONFIG": os.environ["ANSIBLE_CONFIG"], **(env or {})}, timeout=300,
    )  # fmt: skip


@functools.cache
def _key() -> Path:
    directory = tempfile.mkdtemp(prefix="colab-molecule-verify-")
    atexit.register(shutil.rmtree, directory, True)
    return make_ssh_key(Path(directory))


@functools.cache
def ssh_overlay(name: str, timeout: float = 60) -> Path:
    """An inventory that reaches Molecule's host `name` through its own sshd, as a real host is
    reached, instead of Molecule's podman connection.

    podman's connection plugin cannot pipeline: each task is several `podman exec` calls. Over
    SSH with pipelining the role's full run takes about 6 s here instead of 15 s, and the
    verifiers re-converge a dozen times per host. The test image runs sshd; rootful podman's
    bridge network reaches the container's address from this machine. A later inventory source
    wins for the same host's variables, so only the connection changes.
    """
    key = _key()
    ip = podman("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", name).stdout.strip()
    assert ip, f"{name} has no address on a podman network: {podman('inspect', name, check=False).stdout[-2000:]}"
    subprocess.run(
        ["podman", "exec", "-i", name, "sh", "-c",
         "install -d -m 700 /root/.ssh && cat >> /root/.ssh/authorized_keys && chmod 600 /root/.ssh/authorized_keys"],
        input=Path(f"{key}.pub").read_text(), text=True, check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    options = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"]
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        last = subprocess.run(
            ["ssh", "-i", str(key), *options, "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", f"root@{ip}", "true"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        if last.returncode == 0:
            break
        time.sleep(0.5)
    else:
        raise TimeoutError(f"{name}: no SSH at {ip} after {timeout}s: {last.stderr if last else ''}")
    overlay = key.parent / f"{name}.yml"
    host_vars = {
        "ansible_connection": "ansible.builtin.ssh",
        "ansible_host": ip,
        "ansible_user": "root",
        "ansible_ssh_private_key_file": str(key),
        "ansible_ssh_common_args": " ".join(options),
        "ansible_ssh_pipelining": True,
    }
    overlay.write_text(yaml.safe_dump({"all": {"hosts": {name: host_vars}}}))
    return overlay


# Loaded into `molecule verify` through PYTEST_PLUGINS (.config/molecule/config.yml), which runs
# the checks on two pytest-xdist workers. Each scenario has two hosts, and a host's checks change
# its state in order (a converge, an edit, its repair): they go to one worker, in order, while the
# other host's run on the other. (xdist's own `loadgroup` marks do not reach pytest 9's node ids.)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    from xdist.scheduler import LoadScopeScheduling

    hosts = [h for h in (config.option.hosts or "").split(",") if h]

    class OneWorkerPerHost(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return next((h for h in hosts if f"[{h}" in nodeid), nodeid)

    return OneWorkerPerHost(config, log)
