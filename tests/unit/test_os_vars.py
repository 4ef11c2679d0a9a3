"""One way to load OS-specific variables, in every role that has them, and every such file reachable.

A role's vars/ folder holds main.yml (loaded by Ansible itself), data files a task names
(prices.yml) and OS files: <distribution>-<major version>.yml, <distribution>.yml,
<os_family>.yml and default.yml. A role with OS files loads them with the one task below, first
in tasks/main.yml; an OS file that no host's facts can select (a misspelt distribution, a full
version instead of the major one) is never read, and says so here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from ansible.module_utils.facts.system.distribution import Distribution

from colab_testkit.substrate import ROOT

# Vars files a task loads by name, not by OS.
DATA_FILES = {"main.yml", "prices.yml"}
ROLES = sorted({p.parent.parent.name for p in (ROOT / "roles").glob("*/vars/*.yml") if p.name not in DATA_FILES})
# Every distribution and OS family name Ansible's facts can report.
OS_NAMES = set(Distribution.OS_FAMILY_MAP) | {d for names in Distribution.OS_FAMILY_MAP.values() for d in names}
CANDIDATES = [
    "{{ ansible_facts['distribution'] }}-{{ ansible_facts['distribution_major_version'] }}.yml",
    "{{ ansible_facts['distribution'] }}.yml",
    "{{ ansible_facts['os_family'] }}.yml",
    "default.yml",
]


def expected_task(role: str) -> dict:
    return {
        "name": "Load the OS-specific variables",
        "ansible.builtin.include_vars": "{{ lookup('ansible.builtin.first_found', __%s_os_vars) }}" % role,
        "vars": {f"__{role}_os_vars": {"files": CANDIDATES, "paths": ["{{ role_path }}/vars"]}},
    }


def os_files(role: str) -> list[Path]:
    return sorted(p for p in (ROOT / "roles" / role / "vars").glob("*.yml") if p.name not in DATA_FILES)


def first_found(role: str, distribution: str, major: str, family: str) -> str:
    """The file the task's lookup picks for these facts (as ansible.builtin.first_found does)."""
    names = [c.replace("{{ ansible_facts['distribution'] }}", distribution)
             .replace("{{ ansible_facts['distribution_major_version'] }}", major)
             .replace("{{ ansible_facts['os_family'] }}", family) for c in CANDIDATES]  # fmt: skip
    return next(n for n in names if (ROOT / "roles" / role / "vars" / n).is_file())


def test_the_roles_with_os_files_are_found():
    assert {"colab_runtime", "nvidia_gpu"} <= set(ROLES), ROLES


@pytest.mark.parametrize("role", ROLES)
def test_role_loads_its_os_files_with_the_one_idiom(role):
    tasks = yaml.safe_load((ROOT / "roles" / role / "tasks" / "main.yml").read_text())
    loads = [t for t in tasks if "ansible.builtin.include_vars" in t]
    assert loads == [expected_task(role)], (
        f"roles/{role}/tasks/main.yml must load its OS files with exactly this task (no condition):\n"
        + yaml.safe_dump([expected_task(role)], sort_keys=False, width=200)
    )
    # Before anything else reads them: only fact gathering may come first.
    before = tasks[: tasks.index(loads[0])]
    assert all("ansible.builtin.setup" in t for t in before), [t.get("name") for t in before]


def test_no_other_task_file_picks_os_vars_another_way():
    others = [
        str(p.relative_to(ROOT))
        for p in sorted((ROOT / "roles").glob("*/tasks/**/*.yml"))
        if p.name != "main.yml" and re.search(r"include_vars[\s\S]{0,200}first_found", p.read_text())
    ]
    assert others == []


@pytest.mark.parametrize("path", [p for role in ROLES for p in os_files(role)], ids=lambda p: f"{p.parts[-3]}/{p.name}")
def test_each_os_file_is_reachable(path):
    role = path.parts[-3]
    assert (ROOT / "roles" / role / "vars" / "default.yml").is_file(), f"roles/{role}/vars needs a default.yml for other OSes"
    if path.stem == "default":
        assert first_found(role, "NoSuchOS", "0", "NoSuchFamily") == "default.yml"
        return
    found = re.fullmatch(r"(?P<name>[A-Za-z]+)(?:-(?P<major>[0-9]+))?", path.stem)
    assert found, f"{path.name}: name it <distribution>-<major version>.yml, <distribution>.yml or <os_family>.yml"
    name, major = found["name"], found["major"] or "0"
    assert name in OS_NAMES, f"{path.name}: {name} is not a distribution or OS family Ansible reports"
    # As the distribution (and as the family of a distribution that has no file of its own).
    assert path.name in (first_found(role, name, major, "NoSuchFamily"), first_found(role, "NoSuchOS", major, name))
