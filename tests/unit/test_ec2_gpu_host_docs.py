"""roles/ec2_gpu_host documents every variable it has, in its argument specs and its README."""

from __future__ import annotations

import yaml

from colab_testkit.substrate import ROOT


def test_role_readme_documents_every_variable():
    """argument_specs and the README must not drift apart from defaults/main.yml."""
    role = ROOT / "roles" / "ec2_gpu_host"
    defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text())
    specs = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())["argument_specs"]
    documented = set().union(*(set(entry["options"]) for entry in specs.values()))
    assert set(defaults) == documented
    readme = (role / "README.md").read_text()
    assert [v for v in defaults if f"`{v}`" not in readme] == []
