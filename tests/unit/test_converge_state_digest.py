"""converge_state's digest lookup: which settings make an unchanged host look changed.

The digest covers the variables the roles declare (meta/argument_specs.yml); a fact a role
publishes under its own prefix is an output, so a different value of it leaves the digest as is.
"""

from __future__ import annotations

import json

import pytest
import yaml

from colab_testkit.substrate import ROOT, ansible_playbook

# name -> settings handed to the lookup for role idle_stop
CASES = {
    "base": {"idle_stop_limit_minutes": 60},
    "setting_changed": {"idle_stop_limit_minutes": 50},
    "published_fact_added": {"idle_stop_limit_minutes": 60, "idle_stop_summary": "idle auto-stop after 60 min"},
    "published_fact_changed": {"idle_stop_limit_minutes": 60, "idle_stop_summary": "something else"},
    "other_role_setting": {"idle_stop_limit_minutes": 60, "colab_runtime_port": 8889},
}


@pytest.fixture(scope="module")
def digests(tmp_path_factory) -> dict[str, str]:
    work = tmp_path_factory.mktemp("digest")
    tasks = [
        {
            "name": f"Digest {name}",
            "ansible.builtin.set_fact": {name: "{{ lookup('converge_state_digest', 'idle_stop', settings=%s) }}" % json.dumps(settings)},
        }
        for name, settings in CASES.items()
    ]
    tasks.append(
        {
            "name": "Write",
            "ansible.builtin.copy": {
                "content": "{{ {%s} | to_json }}" % ", ".join(f"'{name}': {name}" for name in CASES),
                "dest": str(work / "digests.json"),
                "mode": "0600",
            },
        }
    )
    (work / "digest.yml").write_text(
        yaml.safe_dump(
            [
                {
                    "name": "Digests",
                    "hosts": "localhost",
                    "connection": "local",
                    "gather_facts": False,
                    "vars": {"ansible_python_interpreter": "{{ ansible_playbook_python }}"},
                    "tasks": tasks,
                }
            ]
        )
    )
    res = ansible_playbook(
        "-i", "localhost,", str(work / "digest.yml"),
        env={"ANSIBLE_LOOKUP_PLUGINS": str(ROOT / "roles/converge_state/lookup_plugins")},
    )  # fmt: skip
    assert res.returncode == 0, res.stdout[-3000:]
    return json.loads((work / "digests.json").read_text())


def test_a_declared_setting_changes_the_digest(digests):
    assert digests["setting_changed"] != digests["base"]


def test_published_facts_do_not_count(digests):
    assert digests["published_fact_added"] == digests["base"]
    assert digests["published_fact_changed"] == digests["base"]


def test_another_roles_setting_does_not_count(digests):
    """Only the named roles' settings shape their converge (colab_runtime is not one here)."""
    assert digests["other_role_setting"] == digests["base"]
