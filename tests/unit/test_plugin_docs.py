"""The roles' modules and actions are documented the way ansible-core and amazon.aws document theirs.

- Every module and action documentation stub under roles/*/library renders with ansible-doc, and
  has attributes (check mode, diff mode), EXAMPLES, and `returned:` on every RETURN value.
- The options it documents are exactly the argument spec the code validates: an action plugin's
  ARGUMENT_SPEC (roles/*/action_plugins/*.py) or a module's AnsibleModule(argument_spec=...).
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml


def _project_root() -> Path:
    here = Path(__file__).resolve()
    return next(p for p in here.parents if (p / "ansible.cfg").is_file() and (p / "roles").is_dir())


ROOT = _project_root()
MODULES = sorted((ROOT / "roles").glob("*/library/*.py"))
ACTIONS = sorted((ROOT / "roles").glob("*/action_plugins/*.py"))
ANSIBLE_DOC = Path(sys.executable).with_name("ansible-doc")


def module_id(path: Path) -> str:
    return f"{path.parts[-3]}/{path.stem}"


def doc_blocks(path: Path) -> dict[str, str]:
    tree = ast.parse(path.read_text())
    return {
        node.targets[0].id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and isinstance(node.targets[0], ast.Name)
        and node.targets[0].id in ("DOCUMENTATION", "EXAMPLES", "RETURN")
        and isinstance(node.value, ast.Constant)
    }


def _literal(node: ast.expr, path: Path):
    """Evaluate an argument spec written with dict(...) / {...} / [...] literals, without importing the file."""
    return eval(compile(ast.Expression(node), str(path), "eval"), {"__builtins__": {}, "dict": dict}, {})


def action_argument_spec(path: Path) -> dict:
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "ARGUMENT_SPEC" for t in node.targets):
            return _literal(node.value, path)
    raise AssertionError(f"{path} has no module-level ARGUMENT_SPEC")


def module_argument_spec(path: Path) -> dict | None:
    """The argument_spec given to AnsibleModule / AnsibleAWSModule in a module; None for a doc stub."""
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call):
            continue
        called = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
        if called in ("AnsibleModule", "AnsibleAWSModule"):
            for keyword in node.keywords:
                if keyword.arg == "argument_spec":
                    return _literal(keyword.value, path)
    return None


def normalized(options: dict) -> dict:
    """What documentation and code must agree on, per option, with Ansible's implicit defaults filled in."""
    return {
        name: {
            "type": spec.get("type", "str"),
            "elements": spec.get("elements"),
            "required": bool(spec.get("required", False)),
            "default": spec.get("default"),
            "choices": spec.get("choices"),
            "aliases": sorted(spec.get("aliases", [])),
        }
        for name, spec in options.items()
    }


def test_every_role_module_and_action_is_found():
    assert {p.stem for p in MODULES} >= {"colab_tunnel", "colab_tunnel_prove", "converge_state", "nvidia_gpu_cuda_check"}
    assert {p.stem for p in ACTIONS} >= {"colab_tunnel", "colab_tunnel_prove"}


@pytest.mark.parametrize("path", MODULES, ids=module_id)
def test_module_documentation_parses(path):
    blocks = doc_blocks(path)
    assert "DOCUMENTATION" in blocks, f"{path} has no DOCUMENTATION"
    doc = yaml.safe_load(blocks["DOCUMENTATION"])
    assert doc["module"] == path.stem
    for name, text in blocks.items():
        assert isinstance(yaml.safe_load(text), (dict, list)), f"{path}: {name} is not a YAML mapping or list"


def _returned_missing(values: dict, prefix: str = "") -> list[str]:
    missing = []
    for key, spec in values.items():
        if "returned" not in spec:
            missing.append(prefix + key)
        missing += _returned_missing(spec.get("contains") or {}, f"{prefix}{key}.")
    return missing


@pytest.fixture(scope="module")
def ansible_doc() -> dict:
    """ansible-doc's text and JSON for every module, from one run each (a run costs seconds of CPU)."""
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    args = [str(ANSIBLE_DOC), "-M", ":".join(sorted({str(p.parent) for p in MODULES}))]
    names = [p.stem for p in MODULES]
    text = subprocess.run([*args, *names], capture_output=True, text=True, env=env, timeout=300)
    dumped = subprocess.run([*args, "--json", *names], capture_output=True, text=True, env=env, timeout=300)
    return {"text": text, "json": json.loads(dumped.stdout) if dumped.returncode == 0 else {}, "json_run": dumped}


@pytest.mark.parametrize("path", MODULES, ids=module_id)
def test_ansible_doc_renders_module(path, ansible_doc):
    """What `ansible-doc -M roles/<role>/library <name>` shows, complete as in ansible-core's own modules."""
    text = ansible_doc["text"]
    shown = text.stdout + text.stderr
    assert text.returncode == 0, shown
    assert f"> MODULE {path.stem} (" in text.stdout, shown
    complaints = [line for line in shown.splitlines() if ("[ERROR]" in line or "[WARNING]" in line)]
    assert not complaints, complaints
    assert path.stem in ansible_doc["json"], ansible_doc["json_run"].stderr
    info = ansible_doc["json"][path.stem]
    attributes = info["doc"].get("attributes") or {}
    for attribute in ("check_mode", "diff_mode", "platform"):
        assert attribute in attributes, f"{module_id(path)}: no attributes.{attribute}"
    for attribute in ("check_mode", "diff_mode"):
        assert attributes[attribute].get("support") in ("full", "partial", "none"), f"{module_id(path)}: {attribute}"
        if attributes[attribute]["support"] == "partial":
            assert attributes[attribute].get("details"), f"{module_id(path)}: partial {attribute} without details"
    assert (info.get("examples") or "").strip(), f"{module_id(path)}: no EXAMPLES"
    assert yaml.safe_load(info["examples"]), f"{module_id(path)}: EXAMPLES is not YAML"
    assert info.get("return"), f"{module_id(path)}: no RETURN"
    assert not _returned_missing(info["return"]), f"{module_id(path)}: RETURN values without returned: {_returned_missing(info['return'])}"


def documented_options(path: Path) -> dict:
    return yaml.safe_load(doc_blocks(path)["DOCUMENTATION"]).get("options") or {}


@pytest.mark.parametrize("action", ACTIONS, ids=module_id)
def test_action_argument_spec_equals_its_documentation(action):
    stub = action.parent.parent / "library" / action.name
    assert stub.is_file(), f"{module_id(action)} has no documentation stub {stub.relative_to(ROOT)}"
    assert normalized(action_argument_spec(action)) == normalized(documented_options(stub))


@pytest.mark.parametrize("path", [p for p in MODULES if module_argument_spec(p) is not None], ids=module_id)
def test_module_argument_spec_equals_its_documentation(path):
    """Modules too (their own options only; documentation fragments add the shared AWS ones)."""
    assert normalized(module_argument_spec(path)) == normalized(documented_options(path))
