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


DLAMI = "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-{}/latest/ami-id"


def test_default_image_is_the_ubuntu_24_04_base_dlami_and_the_others_stay_documented():
    """Ubuntu 24.04 by default (Python 3.12, longer support); 22.04 and Amazon Linux 2023 are one line away."""
    role = ROOT / "roles" / "ec2_gpu_host"
    defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text())
    assert defaults["ec2_gpu_host_ami_ssm_parameter"] == DLAMI.format("ubuntu-24.04")
    assert "noble-24.04" in defaults["ec2_gpu_host_ami_name_filter"]
    settings = (ROOT / "inventory" / "group_vars" / "all.yml").read_text()
    spec = (role / "meta" / "argument_specs.yml").read_text()
    for other in ("ubuntu-22.04", "amazon-linux-2023"):
        assert f"#   ec2_gpu_host_ami_ssm_parameter: {DLAMI.format(other)}\n" in settings
        assert DLAMI.format(other) in spec
