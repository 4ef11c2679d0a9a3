"""Helpers of the Molecule scenarios' testinfra verifiers (run by `molecule verify`)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from .substrate import ansible_playbook


def reconverge(host, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run the scenario's converge playbook again, on this host only (output in ``.stdout``).

    Molecule hands the verifier its own inventory and ansible.cfg (roles path, connection
    settings) through the environment: the run uses those, not the project's.
    """
    inventory = Path(os.environ["MOLECULE_INVENTORY_FILE"]).parent
    converge = Path(os.environ["MOLECULE_SCENARIO_DIRECTORY"]) / "converge.yml"
    return ansible_playbook(
        "-i", str(inventory), "--limit", host.backend.get_hostname(), str(converge), *extra,
        env={"ANSIBLE_CONFIG": os.environ["ANSIBLE_CONFIG"], **(env or {})}, timeout=300,
    )  # fmt: skip
