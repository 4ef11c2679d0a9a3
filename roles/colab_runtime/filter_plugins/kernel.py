"""Filters of the colab_runtime role for the notebook kernel environment.

colab_runtime_torch_build: which torch build the kernel environment gets for the NVIDIA driver
the nvidia_gpu role found. CUDA binaries run on a driver at least as new as their CUDA major
version needs (minor-version compatibility): CUDA 12.x on >= 525, CUDA 13.x on >= 580. PyPI's
torch wheels are CUDA 12.8 builds up to 2.10 and CUDA 13.0 builds from 2.11 on, so PyPI alone is
right only from driver 580 on; older drivers get PyTorch's CUDA 12.8 index (the build Colab
itself runs). Below 525 no current torch has a CUDA build that runs (the last CUDA 11.8 builds
are torch 2.7, older than any lock of this role), so the CPU build is installed, with a warning:
a build whose torch.cuda.is_available() would be False on the driver is never chosen silently.

colab_runtime_warn: shows a warning (once per run: Ansible deduplicates identical warnings) and
returns the message, for settings that are accepted but deprecated or that degrade the result.
"""

from __future__ import annotations

import re

from ansible.errors import AnsibleFilterError
from ansible.utils.display import Display

PYTORCH_INDEX = "https://download.pytorch.org/whl/"

# (lowest driver major version, build, index URL or "" for PyPI), newest first.
TORCH_BUILDS = (
    (580, "cu130", ""),
    (525, "cu128", PYTORCH_INDEX + "cu128"),
)
CPU_INDEX = PYTORCH_INDEX + "cpu"
# Packages whose build depends on the CUDA version (the index applies to them).
TORCH_PACKAGES = ("torch", "torchvision", "torchaudio")


def torch_build(driver_version, driver_working=True):
    """Decide the torch build for a driver version such as "550.163.01".

    Returns a dict: build ("cu130", "cu128" or "cpu"), index_url (empty: PyPI), gpu (whether
    torch.cuda.is_available() is expected to be True), driver, and warning (empty unless the
    build cannot use the GPU).
    """
    version = "" if driver_version is None else str(driver_version).strip()
    if not driver_working or not version:
        return _cpu_build(
            version,
            "No working NVIDIA driver on this host: the kernel environment gets the CPU build of torch "
            "(torch.cuda.is_available() is False). Install the driver (nvidia_gpu role) and converge again "
            "to get a CUDA build.",
        )
    match = re.match(r"^(\d+)(\.\d+)*$", version)
    if not match:
        raise AnsibleFilterError(
            f"colab_runtime_torch_build: driver version {version!r} is not a version such as 550.163.01"
        )
    major = int(match.group(1))
    for lowest, build, index in TORCH_BUILDS:
        if major >= lowest:
            return {"build": build, "index_url": index, "gpu": True, "driver": version, "warning": ""}
    return _cpu_build(
        version,
        f"NVIDIA driver {version} is older than 525: no current torch CUDA build runs on it (CUDA 12 needs "
        "525+, CUDA 13 needs 580+), so the kernel environment gets the CPU build of torch "
        "(torch.cuda.is_available() is False). Upgrade the driver to 580 or newer (at least 525) and "
        "converge again.",
    )


def _cpu_build(version, warning):
    """torch_build's answer when the GPU cannot be used: the CPU build, with the reason as its warning."""
    return {"build": "cpu", "index_url": CPU_INDEX, "gpu": False, "driver": version, "warning": warning}


def warn(message):
    """Show message as an Ansible warning (once per run) and return it."""
    if message:
        Display().warning(str(message))
    return message


class FilterModule:
    def filters(self):
        return {"colab_runtime_torch_build": torch_build, "colab_runtime_warn": warn}
