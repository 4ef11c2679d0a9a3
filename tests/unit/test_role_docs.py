"""meta/argument_specs.yml is the one description of every role variable.

The README variable tables are generated from it (scripts/role-docs.py, `make docs`), defaults/main.yml
holds the values of exactly the variables it declares, and a variable shared by several entry points
is described the same way in each.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml


def _project_root() -> Path:
    here = Path(__file__).resolve()
    return next(p for p in here.parents if (p / "ansible.cfg").is_file() and (p / "roles").is_dir())


ROOT = _project_root()
SCRIPT = ROOT / "scripts" / "role-docs.py"
ROLES = sorted(p.parent.parent for p in ROOT.glob("roles/*/meta/argument_specs.yml"))


def role_docs():
    spec = importlib.util.spec_from_file_location("role_docs", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(*args: str, root: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--root", str(root), *args], capture_output=True, text=True, timeout=60)


def entry_points(role: Path) -> dict:
    return yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())["argument_specs"]


def test_every_role_readme_is_generated_from_its_argument_specs():
    result = run("--check")
    assert result.returncode == 0, result.stderr
    for role in ROLES:
        readme = (role / "README.md").read_text()
        assert readme.count("<!-- BEGIN argument_specs -->") == 1, f"{role.name}/README.md has no generated section"
        for options in (e.get("options") or {} for e in entry_points(role).values()):
            for name in options:
                assert f"| `{name}` |" in readme, f"{role.name}/README.md does not list {name}"


@pytest.fixture
def project_copy(tmp_path: Path) -> Path:
    for role in ROLES:
        (tmp_path / "roles" / role.name / "meta").mkdir(parents=True)
        shutil.copy(role / "meta" / "argument_specs.yml", tmp_path / "roles" / role.name / "meta")
        shutil.copy(role / "README.md", tmp_path / "roles" / role.name)
    return tmp_path


def test_check_names_a_stale_readme_and_make_docs_fixes_it(project_copy):
    spec = project_copy / "roles" / "idle_stop" / "meta" / "argument_specs.yml"
    spec.write_text(spec.read_text().replace("Count GPU utilisation", "Count the utilisation of every GPU", 1))

    stale = run("--check", root=project_copy)
    assert stale.returncode == 1
    assert "roles/idle_stop/README.md" in stale.stderr and "make docs" in stale.stderr
    assert "roles/nvidia_gpu" not in stale.stderr

    assert run(root=project_copy).returncode == 0
    assert "Count the utilisation of every GPU" in (project_copy / "roles" / "idle_stop" / "README.md").read_text()
    assert run("--check", root=project_copy).returncode == 0


def test_text_outside_the_markers_is_kept_and_a_readme_without_them_gets_a_section(project_copy):
    readme = project_copy / "roles" / "converge_state" / "README.md"
    before = readme.read_text()
    readme.write_text(before.replace("| `converge_state_file` |", "| `converge_state_file_typo` |"))
    assert run(root=project_copy).returncode == 0
    assert readme.read_text() == before

    readme.write_text("# converge_state\n\nProse only.\n")
    assert run(root=project_copy).returncode == 0
    text = readme.read_text()
    assert text.startswith("# converge_state\n\nProse only.\n\n## Variables\n\n<!-- BEGIN argument_specs -->")
    assert "| `converge_state_roles` | list of str | " in text and "| `converge_state_file` | path | " in text


def test_an_option_without_description_is_refused(project_copy):
    spec = project_copy / "roles" / "nvidia_gpu" / "meta" / "argument_specs.yml"
    data = yaml.safe_load(spec.read_text())
    del data["argument_specs"]["main"]["options"]["nvidia_gpu_reboot"]["description"]
    spec.write_text(yaml.safe_dump(data))
    result = run("--check", root=project_copy)
    assert result.returncode == 2
    assert "nvidia_gpu_reboot has no description" in result.stderr


def test_rows_show_type_choices_default_and_description(tmp_path):
    spec = tmp_path / "argument_specs.yml"
    spec.write_text(
        yaml.safe_dump(
            {
                "argument_specs": {
                    "main": {
                        "options": {
                            "r_branch": {"type": "str", "default": "580", "description": "Driver branch."},
                            "r_mode": {
                                "type": "str",
                                "choices": ["auto", "open"],
                                "default": "auto",
                                "description": ["First C(auto) | I(open).", "See <role>_x."],
                            },
                            "r_flows": {"type": "list", "elements": "str", "default": ["a", "b"], "description": "Flows."},
                            "r_token": {"type": "str", "no_log": True, "default": "", "description": "Secret."},
                            "r_limit": {"type": "int", "description": "No default."},
                            "r_id": {"type": "str", "required": True, "description": "L(Docs,https://example.org)."},
                        }
                    },
                    "other": {"short_description": "Another entry.", "options": {"r_stop": {"type": "bool", "default": False, "description": "B(Stop)."}}},
                }
            },
            sort_keys=False,
        )
    )
    section = role_docs().render(spec)
    assert "| `r_branch` | str | `\"580\"` | Driver branch. |" in section
    assert "| `r_mode` | str (`auto`, `open`) | `auto` | First `auto` \\| *open*. See &lt;role>_x. |" in section
    assert "| `r_flows` | list of str | `[a, b]` | Flows. |" in section
    assert "| `r_token` | str, secret | `\"\"` | Secret. |" in section
    assert "| `r_limit` | int | `null` | No default. |" in section
    assert "| `r_id` | str | required | [Docs](https://example.org). |" in section
    assert "### Entry point `other`\n\nAnother entry.\n" in section
    assert "| `r_stop` | bool | `false` | **Stop**. |" in section


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.name)
def test_defaults_hold_values_of_exactly_the_declared_variables(role):
    declared: dict = {}
    for entry in entry_points(role).values():
        declared.update(entry.get("options") or {})
    defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text()) or {}
    assert sorted(set(defaults) - set(declared)) == [], "in defaults/main.yml but not in meta/argument_specs.yml"
    assert sorted(set(declared) - set(defaults)) == [], "in meta/argument_specs.yml but without a value in defaults/main.yml"
    for name, value in defaults.items():
        if not (isinstance(value, str) and "{{" in value):  # computed values are described in words
            assert declared[name].get("default") == value, f"{name}: defaults/main.yml {value!r}, spec {declared[name].get('default')!r}"


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.name)
def test_a_variable_of_several_entry_points_is_described_once(role):
    seen: dict = {}
    for entry_name, entry in entry_points(role).items():
        for name, spec in (entry.get("options") or {}).items():
            first = seen.setdefault(name, (entry_name, spec))
            assert first[1] == spec, f"{name} differs between entry points {first[0]} and {entry_name}"


def test_defaults_files_point_to_the_spec():
    for role in ROLES:
        lines = (role / "defaults" / "main.yml").read_text().splitlines()
        comments = [line for line in lines[1:] if line.lstrip().startswith("#")]
        assert comments[:1] and "meta/argument_specs.yml" in comments[0], f"{role.name}: no pointer to the spec at the top"
