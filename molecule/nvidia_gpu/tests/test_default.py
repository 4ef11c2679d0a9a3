"""nvidia_gpu on the Debian 12/13 test hosts after the converge: no GPU, the release's userspace
driver installed, the kernel module left out but resolvable by apt."""

from __future__ import annotations

import re
import shlex

import pytest

# The driver branch each Debian release ships (libcuda1's upstream version starts with it).
DRIVER_BRANCH = {"12": "535", "13": "550"}
BLACKLIST = "/etc/modprobe.d/nvidia-gpu-blacklist-nouveau.conf"
NON_FREE_COMPONENTS = ("contrib", "non-free", "non-free-firmware")


@pytest.fixture(scope="module")
def os_release(host) -> dict[str, str]:
    """The host's /etc/os-release as a dict (quotes removed)."""
    fields = {}
    for line in host.file("/etc/os-release").content_string.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = " ".join(shlex.split(value))
    assert fields.get("ID") == "debian", fields
    assert fields.get("VERSION_ID") in DRIVER_BRANCH, fields
    assert fields.get("VERSION_CODENAME"), fields
    return fields


def test_nouveau_is_blacklisted(host):
    lines = host.file(BLACKLIST).content_string.splitlines()
    assert "blacklist nouveau" in lines
    assert "options nouveau modeset=0" in lines


def test_contrib_non_free_and_firmware_are_enabled(host, os_release):
    codename = os_release["VERSION_CODENAME"]
    sources = host.file("/etc/apt/sources.list").content_string
    assert re.search(rf"{codename} main contrib non-free non-free-firmware$", sources, re.MULTILINE), sources
    # apt itself must see the components, not just the file naming them.
    policy = host.check_output("apt-cache policy")
    for component in NON_FREE_COMPONENTS:
        assert f"n={codename},l=Debian,c={component}," in policy, component


def test_userspace_driver_of_the_release_is_installed(host, os_release):
    assert host.package("nvidia-smi").is_installed
    assert host.package("nvidia-persistenced").is_installed
    branch = DRIVER_BRANCH[os_release["VERSION_ID"]]
    version = host.package("libcuda1").version
    assert version.startswith(f"{branch}."), version


def test_kernel_module_is_not_installed(host):
    assert not host.package("nvidia-open-kernel-dkms").is_installed


def test_apt_resolves_the_kernel_module_with_its_gsp_firmware(host):
    # What a Debian VM gets, with a Debian kernel's headers; --simulate installs nothing.
    out = host.check_output(
        "DEBIAN_FRONTEND=noninteractive apt-get --simulate install --no-install-recommends "
        "nvidia-open-kernel-dkms linux-headers-amd64"
    )
    assert re.search(r"^Inst nvidia-open-kernel-dkms ", out, re.MULTILINE), out
    assert re.search(r"^Inst firmware-nvidia-gsp ", out, re.MULTILINE), out


def test_installed_nvidia_smi_finds_no_driver(host):
    result = host.run("nvidia-smi")
    assert result.rc != 0
    assert "couldn't communicate with the NVIDIA driver" in result.stdout + result.stderr, result
