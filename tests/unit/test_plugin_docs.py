"""Every module of the roles documents itself in YAML that parses (what ansible-doc reads)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml
from colab_testkit.substrate import ROOT

MODULES = sorted((ROOT / "roles").glob("*/library/*.py"))


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


def test_every_role_module_is_found():
    assert {p.stem for p in MODULES} >= {"colab_tunnel", "colab_tunnel_prove", "converge_state"}


@pytest.mark.parametrize("path", MODULES, ids=lambda p: f"{p.parts[-3]}/{p.stem}")
def test_module_documentation_parses(path):
    blocks = doc_blocks(path)
    assert "DOCUMENTATION" in blocks, f"{path} has no DOCUMENTATION"
    doc = yaml.safe_load(blocks["DOCUMENTATION"])
    assert doc["module"] == path.stem
    for name, text in blocks.items():
        assert isinstance(yaml.safe_load(text), (dict, list)), f"{path}: {name} is not a YAML mapping or list"
