"""Helpers of the Molecule scenarios' testinfra verifiers (run by `molecule verify`)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from .substrate import ansible_playbook


def reconverge(host, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run the scenario's converge playbook again, on this host only (output in ``.stdout``).

    Molecule hands the verifier its own inventory and ansible.cfg (roles path, connection
    settings) through the environment: the run uses those, so it reaches the host over SSH as
    the converge did (molecule/resources/prepare.yml points the inventory at the host's sshd).
    """
    name = host.backend.get_hostname()
    inventory = Path(os.environ["MOLECULE_INVENTORY_FILE"]).parent
    converge = Path(os.environ["MOLECULE_SCENARIO_DIRECTORY"]) / "converge.yml"
    return ansible_playbook(
        "-i", str(inventory), "--limit", name, str(converge), *extra,
        env={"ANSIBLE_CONFIG": os.environ["ANSIBLE_CONFIG"], **(env or {})}, timeout=300,
    )  # fmt: skip


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
