#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Read-only probe of a host's NVIDIA GPUs, driver state and Secure Boot state."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: nvidia_gpu_probe
short_description: Detect NVIDIA GPUs, the driver's state and Secure Boot (read-only)
description:
  - Lists NVIDIA display/3D controllers (PCI vendor 0x10de, class 0x0300 or 0x0302) from sysfs, so
    detection works without C(lspci) (containers, minimal images); C(lspci -mm) only adds names.
  - Runs C(nvidia-smi) when present and reports whether the driver works, its version, the CUDA
    version it supports and one row per GPU.
  - Reports the Secure Boot state (C(mokutil --sb-state), else the EFI variable) and which GPU
    kernel modules are loaded.
  - Changes nothing on the host.
options:
  nvidia_smi:
    description: Run nvidia-smi (false skips the driver probe).
    type: bool
    default: true
extends_documentation_fragment:
  - action_common_attributes
attributes:
  check_mode:
    support: full
    details: Only reads; the probe runs in check mode too.
  diff_mode:
    support: none
  platform:
    platforms: posix
author: colab-gpu-runtime
"""

EXAMPLES = r"""
- name: Probe PCI devices, nvidia-smi, loaded modules and Secure Boot
  nvidia_gpu_probe:
  register: probe

- name: Show what was found
  ansible.builtin.debug:
    msg: "{{ probe.summary }} (Secure Boot {{ probe.secure_boot.state }})"

- name: Detect the GPUs only, without running nvidia-smi
  nvidia_gpu_probe:
    nvidia_smi: false
  register: pci_only
"""

RETURN = r"""
pci_devices:
  description: NVIDIA GPUs on the PCI bus (address, vendor_id, device_id, class_id, name, turing_or_newer), sorted by address.
  type: list
  elements: dict
  returned: always
  sample:
    - address: "0000:00:1e.0"
      vendor_id: "10de"
      device_id: "1eb8"
      class_id: "0302"
      name: Tesla T4
      turing_or_newer: true
driver:
  description: nvidia-smi outcome (present, working, state, error, driver_version, cuda_version, gpus).
  type: dict
  returned: always
  sample:
    present: true
    working: true
    state: working
    error: ""
    driver_version: 550.54.15
    cuda_version: "12.4"
    gpus: []
secure_boot:
  description: Secure Boot state (enabled / disabled / unknown) and where it was read.
  type: dict
  returned: always
  sample: {state: disabled, source: mokutil}
kernel_modules:
  description: Which of nouveau / nvidia are loaded, and whether the loaded nvidia module is the open one.
  type: dict
  returned: always
  sample: {nouveau: false, nvidia: true, nvidia_type: open}
open_kernel_modules_supported:
  description: True when every GPU found is Turing or newer (or none was found), so the open kernel modules fit.
  type: bool
  returned: always
summary:
  description: One line for the run's report.
  type: str
  returned: always
  sample: 1x NVIDIA H100 80GB HBM3, 81559 MiB, driver 550.54.15, CUDA 12.4
"""

import csv
import glob
import os
import re
import shlex

NVIDIA_VENDOR_ID = 0x10DE
# PCI base class 0x03 (display), subclasses 0x00 (VGA compatible) and 0x02 (3D controller):
# data-center GPUs show up as 3D controllers, workstation ones as VGA.
GPU_CLASSES = (0x0300, 0x0302)
# Open kernel modules need a GSP, i.e. Turing or newer. NVIDIA assigns device ids by chip
# generation: every Turing-or-newer chip has an id >= 0x1e00 (TU102 starts at 0x1e02) and every
# older one (Maxwell, Pascal, Volta: GV100 ends at 0x1dfx) is below it.
FIRST_TURING_DEVICE_ID = 0x1E00
SECURE_BOOT_EFIVAR = "SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"

QUERY_FIELDS = ("index", "name", "pci.bus_id", "memory.total", "driver_version", "persistence_mode")

# nvidia-smi messages and what they mean for the role (checked in order).
NVIDIA_SMI_ERRORS = (
    ("version_mismatch", re.compile(r"Driver/library version mismatch", re.I)),
    ("driver_not_loaded", re.compile(r"couldn't communicate with the NVIDIA driver|Driver Not Loaded", re.I)),
    ("no_devices", re.compile(r"No devices were found", re.I)),
)


def _read(path):
    try:
        with open(path, "r", encoding="ascii", errors="replace") as handle:
            return handle.read().strip()
    except OSError:
        return None


def _hex(text):
    try:
        return int(text, 16)
    except (TypeError, ValueError):
        return None


def read_pci_devices(sysfs="/sys"):
    """NVIDIA GPUs from <sysfs>/bus/pci/devices/*/{vendor,class,device}, sorted by address."""
    devices = []
    for path in sorted(glob.glob(os.path.join(sysfs, "bus", "pci", "devices", "*"))):
        vendor = _hex(_read(os.path.join(path, "vendor")))
        pci_class = _hex(_read(os.path.join(path, "class")))
        device = _hex(_read(os.path.join(path, "device")))
        if vendor != NVIDIA_VENDOR_ID or pci_class is None or device is None:
            continue
        # sysfs class is 24 bits: base class, subclass, programming interface.
        if (pci_class >> 8) not in GPU_CLASSES:
            continue
        devices.append(
            {
                "address": os.path.basename(path),
                "vendor_id": "%04x" % vendor,
                "device_id": "%04x" % device,
                "class_id": "%04x" % (pci_class >> 8),
                "name": "NVIDIA device 10de:%04x" % device,
                "turing_or_newer": device >= FIRST_TURING_DEVICE_ID,
            }
        )
    return devices


def parse_lspci_mm(text):
    """Map PCI address -> device name from `lspci -D -mm` output (unknown ids are left out)."""
    names = {}
    for line in (text or "").splitlines():
        try:
            fields = shlex.split(line)
        except ValueError:
            continue
        if len(fields) < 4:
            continue
        address, name = fields[0], fields[3]
        # Old pci.ids databases print "Device 2330" for ids they do not know: not a name.
        if not name or re.match(r"^Device [0-9a-f]{4}$", name, re.I):
            continue
        names[address] = name
    return names


def parse_query_gpu(text):
    """Rows of `nvidia-smi --query-gpu=<QUERY_FIELDS> --format=csv,noheader,nounits`."""
    gpus = []
    for row in csv.reader((text or "").splitlines(), skipinitialspace=True):
        if len(row) != len(QUERY_FIELDS):
            continue
        values = dict(zip(QUERY_FIELDS, (cell.strip() for cell in row)))
        try:
            index = int(values["index"])
            memory = int(float(values["memory.total"]))
        except ValueError:
            continue
        gpus.append(
            {
                "index": index,
                "name": values["name"],
                "pci_bus_id": values["pci.bus_id"],
                "memory_total_mib": memory,
                "driver_version": values["driver_version"],
                "persistence_mode": values["persistence_mode"],
            }
        )
    return gpus


def parse_cuda_version(text):
    """CUDA version from the nvidia-smi table header ("CUDA Version: 12.4") or `nvidia-smi -q`."""
    match = re.search(r"CUDA Version\s*:\s*([0-9]+\.[0-9]+)", text or "")
    return match.group(1) if match else None


def classify_nvidia_smi_error(text):
    for state, pattern in NVIDIA_SMI_ERRORS:
        if pattern.search(text or ""):
            return state
    return "failed"


def parse_secure_boot(mokutil_output=None, efivar_bytes=None, efi_present=None):
    """Secure Boot state from mokutil's answer, else the SecureBoot EFI variable, else boot mode."""
    if mokutil_output:
        if re.search(r"SecureBoot enabled", mokutil_output, re.I):
            return {"state": "enabled", "source": "mokutil"}
        if re.search(r"SecureBoot disabled", mokutil_output, re.I):
            return {"state": "disabled", "source": "mokutil"}
        if re.search(r"EFI variables are not supported", mokutil_output, re.I):
            return {"state": "disabled", "source": "mokutil (legacy BIOS boot)"}
    # efivarfs: 4 bytes of attributes, then the value (1 = enabled).
    if efivar_bytes is not None and len(efivar_bytes) >= 5:
        return {"state": "enabled" if efivar_bytes[4] == 1 else "disabled", "source": "efivars"}
    if efi_present is False:
        return {"state": "disabled", "source": "no EFI firmware (legacy BIOS boot)"}
    return {"state": "unknown", "source": "none"}


def parse_loaded_modules(proc_modules, nvidia_version_text=None):
    loaded = {line.split(" ", 1)[0] for line in (proc_modules or "").splitlines() if line}
    nvidia = "nvidia" in loaded
    kind = None
    if nvidia and nvidia_version_text:
        kind = "open" if "Open Kernel Module" in nvidia_version_text else "proprietary"
    return {"nouveau": "nouveau" in loaded, "nvidia": nvidia, "nvidia_type": kind}


def open_kernel_modules_supported(pci_devices):
    """Open modules drive Turing and newer only; with no GPU found (e.g. an image build) they are the default."""
    return all(device["turing_or_newer"] for device in pci_devices)


def _group(items):
    """[(key, ...)] -> [(count, key)] keeping first-seen order."""
    counts = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return [(count, item) for item, count in counts.items()]


def summarize(pci_devices, driver):
    """The one line the final report prints."""
    gpus = driver.get("gpus") or []
    if driver.get("working") and gpus:
        parts = ["%dx %s, %d MiB" % (count, name, memory) for count, (name, memory) in
                 _group((gpu["name"], gpu["memory_total_mib"]) for gpu in gpus)]
        return "%s, driver %s, CUDA %s" % (
            " + ".join(parts), driver.get("driver_version") or "unknown", driver.get("cuda_version") or "unknown"
        )
    if not pci_devices:
        return "no GPU"
    parts = ["%dx %s" % (count, name) for count, name in _group(device["name"] for device in pci_devices)]
    reason = {
        "not_installed": "no NVIDIA driver installed",
        "driver_not_loaded": "NVIDIA driver not loaded",
        "version_mismatch": "NVIDIA driver updated, reboot pending",
        "no_devices": "NVIDIA driver sees no GPU",
    }.get(driver.get("state"), "NVIDIA driver not working")
    return "%s, %s" % (" + ".join(parts), reason)


def probe_driver(run):
    """Run nvidia-smi through run(argv) -> (rc, stdout, stderr)."""
    result = {"present": False, "working": False, "state": "not_installed", "error": "",
              "driver_version": None, "cuda_version": None, "gpus": []}
    try:
        rc, out, err = run(["nvidia-smi", "--query-gpu=" + ",".join(QUERY_FIELDS), "--format=csv,noheader,nounits"])
    except OSError:
        return result
    result["present"] = True
    gpus = parse_query_gpu(out) if rc == 0 else []
    if not gpus:
        message = (out + "\n" + err).strip()
        result["state"] = classify_nvidia_smi_error(message) if rc != 0 else "no_devices"
        result["error"] = message.splitlines()[0] if message else "nvidia-smi exited %d" % rc
        return result
    result.update(working=True, state="working", gpus=gpus, driver_version=gpus[0]["driver_version"])
    rc, out, err = run(["nvidia-smi"])
    if rc == 0:
        result["cuda_version"] = parse_cuda_version(out)
    return result


def main():
    from ansible.module_utils.basic import AnsibleModule

    module = AnsibleModule(argument_spec={"nvidia_smi": {"type": "bool", "default": True}}, supports_check_mode=True)

    def run(argv):
        binary = module.get_bin_path(argv[0])
        if binary is None:
            raise OSError("%s not found" % argv[0])
        return module.run_command([binary] + argv[1:])

    pci_devices = read_pci_devices()
    if pci_devices:
        try:
            rc, out, _ = run(["lspci", "-D", "-mm", "-d", "10de:"])
            names = parse_lspci_mm(out) if rc == 0 else {}
        except OSError:
            names = {}
        for device in pci_devices:
            device["name"] = names.get(device["address"], device["name"])

    driver = probe_driver(run) if module.params["nvidia_smi"] else {"present": False, "working": False,
                                                                    "state": "not_probed", "gpus": []}

    mokutil = None
    try:
        _, out, err = run(["mokutil", "--sb-state"])
        mokutil = (out + "\n" + err).strip()
    except OSError:
        pass
    efivar = None
    try:
        with open(os.path.join("/sys/firmware/efi/efivars", SECURE_BOOT_EFIVAR), "rb") as handle:
            efivar = handle.read()
    except OSError:
        pass
    secure_boot = parse_secure_boot(mokutil, efivar, os.path.isdir("/sys/firmware/efi"))

    kernel_modules = parse_loaded_modules(_read("/proc/modules"), _read("/proc/driver/nvidia/version"))

    module.exit_json(changed=False, pci_devices=pci_devices, driver=driver, secure_boot=secure_boot,
                     kernel_modules=kernel_modules, summary=summarize(pci_devices, driver),
                     open_kernel_modules_supported=open_kernel_modules_supported(pci_devices))


if __name__ == "__main__":
    main()
