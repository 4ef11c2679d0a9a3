"""colab_runtime's settings preflight (tasks/preflight.yml) run on the controller, without a host.

The settings preflight runs the role's value checks before anything is launched, on localhost
with no facts gathered. One ansible-playbook run holds one play per case (each with the case's
settings as play vars); a failing check is caught and its result written to a file, so every
case is asserted on its own from a single run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]

# name: (settings, None when the preflight passes, else a regex the error message must match)
CASES = {
    "defaults": ({}, None),
    "data_dir_var": ({"colab_runtime_data_dir": "/var"},
                     r"colab_runtime_data_dir=/var would be handed to the service account \(colab\) as its own directory, "
                     r"but it is a system or shared directory\. Use a directory of its own, such as /var/lib/colab-runtime"),
    "data_dir_root": ({"colab_runtime_data_dir": "/", "colab_runtime_notebook_dir": "/srv/notebooks"},
                      r"colab_runtime_data_dir=/ would be handed to the service account"),
    "data_dir_home": ({"colab_runtime_data_dir": "/home"}, r"colab_runtime_data_dir=/home would be handed"),
    "data_dir_a_home": ({"colab_runtime_data_dir": "/home/alice"}, r"colab_runtime_data_dir=/home/alice would be handed"),
    "data_dir_usr": ({"colab_runtime_data_dir": "/usr"}, r"colab_runtime_data_dir=/usr would be handed"),
    "data_dir_in_etc": ({"colab_runtime_data_dir": "/etc/colab"}, r"colab_runtime_data_dir=/etc/colab would be handed"),
    "data_dir_var_lib": ({"colab_runtime_data_dir": "/var/lib"}, r"colab_runtime_data_dir=/var/lib would be handed"),
    "data_dir_is_prefix": ({"colab_runtime_data_dir": "/opt/colab-runtime"},
                           r"but it is the install prefix, the venv or the configuration directory or one of their parents"),
    "data_dir_dotdot": ({"colab_runtime_data_dir": "/srv/../var"}, r"without spaces, \"\.\" or \"\.\.\" parts"),
    "notebook_dir_tmp": ({"colab_runtime_notebook_dir": "/tmp/notebooks"},
                         r"colab_runtime_notebook_dir=/tmp/notebooks would be handed"),
    "data_dir_srv": ({"colab_runtime_data_dir": "/srv/colab"}, None),
    "data_dir_in_a_home": ({"colab_runtime_data_dir": "/home/alice/colab"}, None),
    "http_index": ({"colab_runtime_index_url": "http://mirror.example.com/simple/"},
                   r"The package index http://mirror\.example\.com/simple/ uses plain http: anyone on the network path "
                   r"could swap the packages the host installs and runs\. Use the index's https:// URL, or set "
                   r"colab_runtime_allow_insecure_index=true"),
    "http_extra_index": ({"colab_runtime_extra_index_urls": ["https://a.example.com/simple", "HTTP://b.example.com/simple"]},
                         r"The package index HTTP://b\.example\.com/simple uses plain http"),
    "http_index_allowed": ({"colab_runtime_index_url": "http://mirror.example.com:3141/root/pypi/+simple/",
                            "colab_runtime_allow_insecure_index": True}, None),
    "https_index": ({"colab_runtime_index_url": "https://mirror.example.com/simple/"}, None),
    "index_not_a_url": ({"colab_runtime_index_url": "ftp://mirror.example.com/simple/"},
                        r"colab_runtime_index_url must be empty \(the host's own pip/uv configuration\) or an http\(s\) URL"),
    "uv_unpinned": ({"colab_runtime_uv_version": "0.1.0"},
                    r"The role pins no uv 0\.1\.0 wheel \(pinned: 0\.13\.9\)\. Set colab_runtime_uv_wheel_sha256"),
    "uv_unpinned_with_hash": ({"colab_runtime_uv_version": "0.1.0", "colab_runtime_uv_wheel_sha256": "ab" * 32}, None),
    "uv_bad_hash": ({"colab_runtime_uv_wheel_sha256": "abc"}, r"colab_runtime_uv_wheel_sha256=abc is not a SHA-256"),
    "uv_unpinned_pip": ({"colab_runtime_uv_version": "0.1.0", "colab_runtime_installer": "pip"}, None),
    "service_name_second": ({"colab_runtime_service_name": "colab-runtime-2"}, None),
    "service_name_suffix": ({"colab_runtime_service_name": "colab-runtime.service"},
                            r"colab_runtime_service_name=colab-runtime\.service is not a usable unit name"),
    "service_name_path": ({"colab_runtime_service_name": "../colab"},
                          r"colab_runtime_service_name=\.\./colab is not a usable unit name: use 1 to 50 letters"),
    "service_name_space": ({"colab_runtime_service_name": "colab runtime"}, r"colab_runtime_service_name=colab runtime is not"),
    "service_name_long": ({"colab_runtime_service_name": "c" * 51}, r"is not a usable unit name: use 1 to 50 letters"),
    "service_name_50": ({"colab_runtime_service_name": "c" * 50}, None),
}  # fmt: skip

# Computed by the role's vars from the settings; recorded for the cases named here.
RECORDED = ["__colab_runtime_pip_index_args", "__colab_runtime_uv_index_args", "__colab_runtime_uv_fetch_index_args",
            "__colab_runtime_uv_wheel_hashes"]  # fmt: skip


def playbook(results: Path) -> list[dict]:
    """One play per case; outcomes collect in a host fact (no module runs) and are written once."""
    plays = []
    for name, (settings, _) in CASES.items():
        recorded = ", ".join(f"{var!r}: {var}" for var in RECORDED)
        plays.append({
            "name": f"Preflight case {name}",
            "hosts": "localhost",
            "gather_facts": False,
            "vars": settings,
            "tasks": [{
                "name": "Run the settings preflight",
                "block": [
                    {"name": "Check the settings", "ansible.builtin.include_role": {
                        "name": "colab_runtime", "tasks_from": "preflight", "public": True}},
                    {"name": "Record the pass", "ansible.builtin.set_fact": {
                        "preflight_outcomes": "{{ preflight_outcomes | default({}) | combine({%r: {'passed': True, %s}}) }}" % (name, recorded)}},
                ],
                "rescue": [{"name": "Record the failure", "ansible.builtin.set_fact": {
                    "preflight_outcomes": "{{ preflight_outcomes | default({}) | combine({%r: {'passed': False, "
                                          "'task': ansible_failed_task.name, 'result': ansible_failed_result}}) }}" % name}}],
            }],
        })  # fmt: skip
    plays.append({
        "name": "Write the outcomes",
        "hosts": "localhost",
        "gather_facts": False,
        "tasks": [{"name": "Write them", "ansible.builtin.copy": {
            "content": "{{ preflight_outcomes | to_json }}", "dest": str(results / "outcomes.json"), "mode": "0600"}}],
    })  # fmt: skip
    return plays


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, dict]:
    work = tmp_path_factory.mktemp("preflight")
    (work / "site.yml").write_text(yaml.safe_dump(playbook(work), sort_keys=False))
    env = {**os.environ, "ANSIBLE_ROLES_PATH": str(ROOT / "roles"), "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
           "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"}  # fmt: skip
    res = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", "-c", "local",
         "-e", f"ansible_python_interpreter={sys.executable}", str(work / "site.yml")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    found = json.loads((work / "outcomes.json").read_text())
    assert sorted(found) == sorted(CASES), res.stdout[-3000:]
    return found


def messages(outcome: dict) -> str:
    """The failed check's message(s), whitespace folded (a looped assert fails per item)."""
    result = outcome["result"]
    items = [r for r in result.get("results", []) if r.get("failed")] or [result]
    return " | ".join(re.sub(r"\s+", " ", str(r.get("msg", ""))) for r in items)


@pytest.mark.parametrize("case", list(CASES))
def test_settings_preflight(outcomes, case):
    expected = CASES[case][1]
    outcome = outcomes[case]
    if expected is None:
        assert outcome["passed"], messages(outcome)
    else:
        assert not outcome["passed"], f"{case}: the preflight accepted {CASES[case][0]}"
        assert re.search(expected, messages(outcome)), messages(outcome)


def test_one_message_names_the_value(outcomes):
    """A refused directory is reported once, for the setting that holds it."""
    result = outcomes["notebook_dir_tmp"]["result"]
    failed = [r["item"]["key"] for r in result["results"] if r.get("failed")]
    assert failed == ["colab_runtime_notebook_dir"]


def test_index_options_follow_the_settings(outcomes):
    allowed = outcomes["http_index_allowed"]
    url = "http://mirror.example.com:3141/root/pypi/+simple/"
    assert allowed["__colab_runtime_pip_index_args"] == [f"--index-url={url}", "--trusted-host=mirror.example.com"]
    assert allowed["__colab_runtime_uv_index_args"] == [f"--index-url={url}", "--allow-insecure-host=mirror.example.com"]
    assert allowed["__colab_runtime_uv_fetch_index_args"] == [f"--index-url={url}", "--trusted-host=mirror.example.com"]
    # Nothing set: every installer keeps the host's own index configuration.
    defaults = outcomes["defaults"]
    assert defaults["__colab_runtime_pip_index_args"] == []
    assert defaults["__colab_runtime_uv_index_args"] == []
    assert defaults["__colab_runtime_uv_fetch_index_args"] == []
    # Both CPU architectures' pins: pip takes the one that fits the host.
    assert len(defaults["__colab_runtime_uv_wheel_hashes"]) == 2
    assert outcomes["uv_unpinned_with_hash"]["__colab_runtime_uv_wheel_hashes"] == ["ab" * 32]
