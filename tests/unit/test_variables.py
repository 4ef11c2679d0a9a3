"""Every `<role>_*` name the project uses exists.

- Settings (the user's settings file, every inventory and example, the Molecule scenarios, the
  overlay the tests write for the emulated account, the bench's overlay and extra vars) set only
  variables some role declares: in its meta/argument_specs.yml (any entry point) or defaults/vars.
  A misspelt setting is otherwise silently ignored.
- The roles themselves (tasks, templates, defaults, specs, READMEs) name only declared variables,
  facts a role publishes (set_fact, register) or the inventory composes, and plugin names.
- The runtime's token path is one published fact that the tunnel and the idle auto-stop read.
"""

from __future__ import annotations

import ast
import difflib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml


def _project_root() -> Path:
    here = Path(__file__).resolve()
    return next(p for p in here.parents if (p / "ansible.cfg").is_file() and (p / "roles").is_dir())


ROOT = _project_root()
ROLES = sorted(p.name for p in (ROOT / "roles").iterdir() if (p / "meta" / "argument_specs.yml").is_file())
NAME = r"(?:%s)_[A-Za-z0-9_]+" % "|".join(map(re.escape, ROLES))
# Not part of a longer name, an internal (__<role>_...) or a YAML anchor/alias (&name, *name).
ROLE_NAME = re.compile(rf"(?<![\w&*])({NAME})")
ROLE_VARIABLE = re.compile(rf"^{NAME}$")


class AnsibleYamlLoader(yaml.SafeLoader):
    """Safe loading of Ansible YAML: tags such as !unsafe and !vault are read as plain values."""


AnsibleYamlLoader.add_multi_constructor("!", lambda loader, suffix, node: loader.construct_scalar(node) if isinstance(node, yaml.ScalarNode) else None)


def load_all(path: Path) -> list:
    return [doc for doc in yaml.load_all(path.read_text(), Loader=AnsibleYamlLoader) if doc is not None]


def role_files(*patterns: str) -> list[Path]:
    return sorted(f for pattern in patterns for f in (ROOT / "roles").glob(pattern) if f.is_file())


def declared_variables() -> set[str]:
    """The variables a user may set: every option of every entry point, and every defaults/vars name."""
    names: set[str] = set()
    for spec in role_files("*/meta/argument_specs.yml"):
        for entry in (yaml.safe_load(spec.read_text())["argument_specs"] or {}).values():
            names |= set((entry or {}).get("options") or {})
    for values in role_files("*/defaults/*.yml", "*/vars/*.yml"):
        for doc in load_all(values):
            names |= set(doc) if isinstance(doc, dict) else set()
    return names


def _task_names(node, found: set[str]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("ansible.builtin.set_fact", "set_fact") and isinstance(value, dict):
                found |= {k for k in value if k != "cacheable"}
            elif key in ("register",) and isinstance(value, str):
                found.add(value)
            elif key == "vars" and isinstance(value, dict):
                found |= set(value)
            elif key == "loop_control" and isinstance(value, dict) and "loop_var" in value:
                found.add(value["loop_var"])
            _task_names(value, found)
    elif isinstance(node, list):
        for item in node:
            _task_names(item, found)


def published_names() -> set[str]:
    """Facts and registered results of the roles' tasks and handlers, and what the inventory composes."""
    found: set[str] = set()
    for tasks in role_files("*/tasks/**/*.yml", "*/handlers/**/*.yml"):
        for doc in load_all(tasks):
            _task_names(doc, found)
    return found | inventory_composed()


def inventory_composed() -> set[str]:
    """Host variables the project's inventory plugins compose (e.g. ec2_gpu_host_instance_id)."""
    found: set[str] = set()
    for inventory in sorted((ROOT / "inventory").rglob("*.yml")):
        for doc in load_all(inventory):
            if isinstance(doc, dict) and "plugin" in doc:
                found |= set(doc.get("compose") or {})
    return found


def plugin_names() -> set[str]:
    """Modules, actions, lookups, filters and shipped files named after their role (not variables)."""
    names = {f.stem for f in role_files("*/library/*.py", "*/action_plugins/*.py", "*/lookup_plugins/*.py", "*/files/*")}
    for plugin in role_files("*/filter_plugins/*.py", "*/test_plugins/*.py"):
        tree = ast.parse(plugin.read_text())
        names |= {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
        # The names filters() maps to its functions ({"colab_runtime_warn": warn, ...}).
        names |= {k.value for n in ast.walk(tree) if isinstance(n, ast.Dict) for k in n.keys
                  if isinstance(k, ast.Constant) and isinstance(k.value, str)}  # fmt: skip
    return names


DECLARED = declared_variables()
PUBLISHED = published_names()
PLUGINS = plugin_names()


def unknown_message(where: str, names: set[str], allowed: set[str]) -> str:
    lines = [f"{where} sets variables that no role declares (a typo is silently ignored by Ansible):"]
    for name in sorted(names):
        close = difflib.get_close_matches(name, sorted(n for n in allowed if ROLE_VARIABLE.match(n)), n=1, cutoff=0.78)
        lines.append(f"  {name}" + (f" (did you mean {close[0]}?)" if close else ""))
    lines.append("Declare a new variable in the role's meta/argument_specs.yml and defaults/main.yml, or fix the name.")
    return "\n".join(lines)


# --- settings -------------------------------------------------------------------------------------

def yaml_settings(node, found: set[str], composed: set[str], parent: str = "") -> None:
    """Keys named like role variables, anywhere in a settings document; `compose:` keys apart."""
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(key, str) and ROLE_VARIABLE.match(key) and key not in PLUGINS:
                (composed if parent == "compose" else found).add(key)
            yaml_settings(value, found, composed, key if isinstance(key, str) else "")
    elif isinstance(node, list):
        for item in node:
            yaml_settings(item, found, composed, parent)


YAML_SETTINGS = sorted(
    p for p in [*(ROOT / "inventory").rglob("*.yml"), *(ROOT / "inventory").rglob("*.yaml"), *(ROOT / "molecule").rglob("*.yml")]
    if p.is_file()
)


def test_settings_sources_are_found():
    names = {p.relative_to(ROOT).as_posix() for p in YAML_SETTINGS}
    assert "inventory/group_vars/all.yml" in names
    assert any(n.startswith("inventory/examples/") for n in names)
    assert any(n.startswith("molecule/") and n.endswith("/molecule.yml") for n in names)


@pytest.mark.parametrize("path", YAML_SETTINGS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_yaml_settings_use_only_declared_variables(path):
    found: set[str] = set()
    composed: set[str] = set()
    for doc in load_all(path):
        yaml_settings(doc, found, composed)
    where = path.relative_to(ROOT).as_posix()
    # A test scenario may stand in for the aws_ec2 inventory and set what it composes for a host.
    settable = DECLARED | inventory_composed()
    if found - settable:
        pytest.fail(unknown_message(where, found - settable, settable), pytrace=False)
    # An inventory plugin composes host variables that stand for the facts a role publishes.
    allowed = DECLARED | PUBLISHED
    if composed - allowed:
        pytest.fail(unknown_message(f"{where} (compose)", composed - allowed, allowed), pytrace=False)


def test_the_emulated_account_overlay_uses_only_declared_variables(tmp_path):
    from colab_testkit.substrate import write_ec2_overlay

    overlay = write_ec2_overlay(tmp_path, "colab-gpu-runtime-test", 2222, tmp_path / "id_ed25519", "test")
    files = sorted(overlay.rglob("*.yml"))
    found: set[str] = set()
    for file in files:
        for doc in load_all(file):
            yaml_settings(doc, found, set())
    assert found, f"the overlay sets no role variable at all: {files}"
    if found - DECLARED:
        pytest.fail(unknown_message("write_ec2_overlay", found - DECLARED, DECLARED), pytrace=False)


# Settings written by Python: YAML lines ("name: value") in string literals (f-strings included),
# extra vars ("name=value") and dict keys.
YAML_KEY_LINE = re.compile(rf"^\s*({NAME})\s*:", re.M)
EXTRA_VAR = re.compile(rf"(?<![\w.])({NAME})=")
PYTHON_SETTINGS = [ROOT / "bench" / "run.py", ROOT / "scripts" / "demo.py"]


def python_settings(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            found |= set(YAML_KEY_LINE.findall(node.value)) | set(EXTRA_VAR.findall(node.value))
        elif isinstance(node, ast.Dict):
            found |= {k.value for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str) and ROLE_VARIABLE.match(k.value)}
    return {name for name in found if name not in PLUGINS}


@pytest.mark.parametrize("path", PYTHON_SETTINGS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_python_overlays_and_extra_vars_use_only_declared_variables(path):
    found = python_settings(path)
    if found - DECLARED:
        pytest.fail(unknown_message(path.relative_to(ROOT).as_posix(), found - DECLARED, DECLARED), pytrace=False)


def test_the_python_scanner_sees_the_bench_overlay():
    # The overlay itself comes from the test kit's writer (checked above); the bench adds these.
    assert {"colab_runtime_port", "colab_tunnel_state_dir", "idle_stop_enabled", "converge_state_enabled"} <= python_settings(
        ROOT / "bench" / "run.py"
    )


def test_an_unknown_setting_is_reported_with_the_likely_name(tmp_path):
    settings = tmp_path / "all.yml"
    settings.write_text("---\nec2_gpu_host_public_key_file: ~/.ssh/id.pub\nidle_stop_limit_minutes: 30\n")
    found: set[str] = set()
    for doc in load_all(settings):
        yaml_settings(doc, found, set())
    assert found - DECLARED == {"ec2_gpu_host_public_key_file"}
    assert "did you mean ec2_gpu_host_" in unknown_message("all.yml", found - DECLARED, DECLARED)


# --- names inside the roles -----------------------------------------------------------------------

ROLE_TEXT = role_files("*/tasks/**/*.yml", "*/handlers/**/*.yml", "*/templates/**/*.j2", "*/defaults/*.yml", "*/vars/*.yml", "*/meta/*.yml", "*/README.md")


@pytest.mark.parametrize("path", ROLE_TEXT, ids=lambda p: p.relative_to(ROOT / "roles").as_posix())
def test_role_files_name_only_variables_that_exist(path):
    """A role that reads another role's variable or fact by a name nobody defines gets its default forever."""
    allowed = DECLARED | PUBLISHED | PLUGINS
    unknown = set(ROLE_NAME.findall(path.read_text())) - allowed
    if unknown:
        pytest.fail(
            f"roles/{path.relative_to(ROOT / 'roles').as_posix()} names {', '.join(sorted(unknown))}, which no role declares "
            "(meta/argument_specs.yml, defaults, vars) or publishes (set_fact, register)",
            pytrace=False,
        )


# --- the runtime's token path ---------------------------------------------------------------------

def test_the_runtime_publishes_its_token_path_and_converge_state_restores_it():
    tasks = load_all(ROOT / "roles" / "colab_runtime" / "tasks" / "main.yml")[0]
    published = [t["ansible.builtin.set_fact"] for t in tasks if "colab_runtime_managed" in t.get("ansible.builtin.set_fact", {})]
    assert published, "colab_runtime no longer publishes colab_runtime_managed"
    fact = published[0]
    assert fact["colab_runtime_token_file"] == "{{ __colab_runtime_token_file }}"
    assert fact["colab_runtime_managed"]["facts"]["colab_runtime_token_file"] == "{{ __colab_runtime_token_file }}"
    assert fact["colab_runtime_managed"]["files"][0] == "{{ __colab_runtime_token_file }}"


def test_tunnel_and_idle_stop_read_the_token_where_the_runtime_keeps_it(tmp_path):
    """The configure play publishes the path; a connect-only run derives it from the runtime's settings.

    One host per case: the fact published (config dir also set), only the runtime's config dir set
    (the configure play did not run), nothing set.
    """
    cases = {
        "published": ({"colab_runtime_config_dir": "/srv/colab", "publish": True}, "/srv/published/token"),
        "config_dir": ({"colab_runtime_config_dir": "/srv/colab", "publish": False}, "/srv/colab/token"),
        "nothing": ({"publish": False}, "/etc/colab-runtime/token"),
    }
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(
        yaml.safe_dump({"all": {"vars": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable},
                                "hosts": {name: host_vars for name, (host_vars, _) in cases.items()}}})
    )  # fmt: skip
    playbook = tmp_path / "token_paths.yml"
    playbook.write_text(
        f"""---
- name: Stand in for the configure play
  hosts: all
  gather_facts: false
  tasks:
    - name: Publish the token path as colab_runtime does
      ansible.builtin.set_fact:
        colab_runtime_token_file: /srv/published/token
      when: publish | bool
- name: Read the defaults of the tunnel and the idle auto-stop
  hosts: all
  gather_facts: false
  vars_files:
    - {ROOT}/roles/colab_tunnel/defaults/main.yml
    - {ROOT}/roles/idle_stop/defaults/main.yml
  tasks:
    - name: Show both paths
      ansible.builtin.debug:
        msg: "TOKEN_PATHS {{{{ inventory_hostname }}}}={{{{ colab_tunnel_token_file }}}},{{{{ idle_stop_jupyter_token_file }}}}"
"""
    )
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    result = subprocess.run(
        [str(Path(sys.executable).with_name("ansible-playbook")), "-i", str(inventory), str(playbook)],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    shown = dict(re.findall(r"TOKEN_PATHS (\w+)=(\S+?)\"?$", result.stdout, re.M))
    assert shown == {name: f"{path},{path}" for name, (_, path) in cases.items()}, result.stdout


# --- one convention for internals ------------------------------------------------------------------

SINGLE_UNDERSCORE = re.compile(rf"(?<![\w&*])_({NAME})")


def role_outputs(role: str) -> set[str]:
    """What a role's README documents by name (its "Facts it sets" and the like)."""
    readme = ROOT / "roles" / role / "README.md"
    return set(re.findall(rf"`({re.escape(role)}_[A-Za-z0-9_]+)`", readme.read_text())) if readme.is_file() else set()


@pytest.mark.parametrize("role", ROLES)
def test_internal_names_are_double_underscored(role):
    """`__<role>_` for what is internal, `<role>_` for what users set or read: a fact a role sets
    under its public prefix without declaring or documenting it looks like a setting (and is
    hashed by converge_state's digest as one)."""
    found: set[str] = set()
    for tasks in role_files(f"{role}/tasks/**/*.yml", f"{role}/handlers/**/*.yml"):
        for doc in load_all(tasks):
            _task_names(doc, found)
    public = {n for n in found if n.startswith(f"{role}_")}
    undocumented = public - DECLARED - role_outputs(role) - PLUGINS - {f"{role}_managed"}
    assert not undocumented, (
        f"roles/{role} sets {', '.join(sorted(undocumented))} under its public prefix: name internals "
        f"__{role}_..., or document an output in roles/{role}/README.md"
    )
    single = sorted({m for f in role_files(f"{role}/**/*.yml", f"{role}/**/*.j2", f"{role}/**/*.py") for m in SINGLE_UNDERSCORE.findall(f.read_text())})
    assert not single, f"roles/{role} names _{', _'.join(single)}: internals are __{role}_..."
