"""Unit tests for the nvidia_gpu role's detection and CUDA-check code (roles/nvidia_gpu/library).

Parsing is exercised with canned, real-format outputs from tests/doubles/nvidia_gpu (test doubles:
nothing on a host ever reads them). The last tests run both modules for real through Ansible on
this machine, which has no GPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from colab_testkit.substrate import ROOT, VENV_BIN, load_role_file

LIBRARY = ROOT / "roles" / "nvidia_gpu" / "library"
DOUBLES = ROOT / "tests" / "doubles" / "nvidia_gpu"


probe = load_role_file("nvidia_gpu", "library/nvidia_gpu_probe.py", "nvidia_gpu_probe")
cuda = load_role_file("nvidia_gpu", "library/nvidia_gpu_cuda_check.py", "nvidia_gpu_cuda_check")


def double(*parts):
    return (DOUBLES.joinpath(*parts)).read_text()


# Per model: parsed rows, the CUDA version in the table header and the summary line.
MODELS = {
    "h100": (
        [
            {"index": 0, "name": "NVIDIA H100 80GB HBM3", "pci_bus_id": "00000000:53:00.0",
             "memory_total_mib": 81559, "driver_version": "550.54.15", "persistence_mode": "Enabled"},
            {"index": 1, "name": "NVIDIA H100 80GB HBM3", "pci_bus_id": "00000000:64:00.0",
             "memory_total_mib": 81559, "driver_version": "550.54.15", "persistence_mode": "Enabled"},
        ],
        "12.4",
        "2x NVIDIA H100 80GB HBM3, 81559 MiB, driver 550.54.15, CUDA 12.4",
    ),
    "h200": (
        [{"index": 0, "name": "NVIDIA H200", "pci_bus_id": "00000000:18:00.0", "memory_total_mib": 143771,
          "driver_version": "570.133.20", "persistence_mode": "Disabled"}],
        "12.8",
        "1x NVIDIA H200, 143771 MiB, driver 570.133.20, CUDA 12.8",
    ),
    "t4": (
        [{"index": 0, "name": "Tesla T4", "pci_bus_id": "00000000:00:1E.0", "memory_total_mib": 15360,
          "driver_version": "535.104.05", "persistence_mode": "Enabled"}],
        "12.2",
        "1x Tesla T4, 15360 MiB, driver 535.104.05, CUDA 12.2",
    ),
    "a10g": (
        [{"index": 0, "name": "NVIDIA A10G", "pci_bus_id": "00000000:00:1E.0", "memory_total_mib": 22731,
          "driver_version": "470.82.01", "persistence_mode": "Disabled"}],
        "11.4",
        "1x NVIDIA A10G, 22731 MiB, driver 470.82.01, CUDA 11.4",
    ),
}


class Runner:
    """Stands in for module.run_command: answers from the doubles, records what was run."""

    def __init__(self, answers):
        self.answers = answers
        self.calls = []

    def __call__(self, argv):
        self.calls.append(argv)
        key = "query" if any(arg.startswith("--query-gpu=") for arg in argv) else "table"
        answer = self.answers.get(key)
        if answer is None:
            raise OSError("nvidia-smi not found")
        return answer


@pytest.mark.parametrize("model", sorted(MODELS))
def test_query_rows_parse(model):
    rows, _, _ = MODELS[model]
    assert probe.parse_query_gpu(double("nvidia_smi", model, "query.csv")) == rows


@pytest.mark.parametrize("model", sorted(MODELS))
def test_cuda_version_from_table_header(model):
    _, cuda_version, _ = MODELS[model]
    assert probe.parse_cuda_version(double("nvidia_smi", model, "table.txt")) == cuda_version


def test_cuda_version_from_query_output():
    text = "Driver Version                            : 550.54.15\nCUDA Version                              : 12.4\n"
    assert probe.parse_cuda_version(text) == "12.4"
    assert probe.parse_cuda_version("no version here") is None


@pytest.mark.parametrize("model", sorted(MODELS))
def test_working_driver_summary(model):
    rows, cuda_version, summary = MODELS[model]
    runner = Runner({"query": (0, double("nvidia_smi", model, "query.csv"), ""),
                     "table": (0, double("nvidia_smi", model, "table.txt"), "")})
    driver = probe.probe_driver(runner)
    assert driver["working"] is True and driver["state"] == "working"
    assert driver["gpus"] == rows
    assert driver["driver_version"] == rows[0]["driver_version"]
    assert driver["cuda_version"] == cuda_version
    assert probe.summarize([], driver) == summary
    assert runner.calls[0][1] == "--query-gpu=index,name,pci.bus_id,memory.total,driver_version,persistence_mode"


def test_mixed_gpus_are_grouped_in_the_summary():
    text = double("nvidia_smi", "a10g", "query.csv") + double("nvidia_smi", "t4", "query.csv").replace("0, Tesla", "1, Tesla")
    driver = {"working": True, "gpus": probe.parse_query_gpu(text), "driver_version": "470.82.01", "cuda_version": "11.4"}
    assert probe.summarize([], driver) == "1x NVIDIA A10G, 22731 MiB + 1x Tesla T4, 15360 MiB, driver 470.82.01, CUDA 11.4"


@pytest.mark.parametrize(
    ("name", "rc", "state"),
    [("driver_not_loaded", 9, "driver_not_loaded"), ("version_mismatch", 18, "version_mismatch"),
     ("no_devices", 6, "no_devices")],
)
def test_failing_nvidia_smi_is_not_a_working_driver(name, rc, state):
    message = double("nvidia_smi", "errors", f"{name}.txt")
    driver = probe.probe_driver(Runner({"query": (rc, message, ""), "table": (rc, message, "")}))
    assert driver["present"] is True
    assert driver["working"] is False
    assert driver["state"] == state
    assert driver["error"] == message.splitlines()[0]
    assert driver["gpus"] == []


def test_missing_nvidia_smi():
    driver = probe.probe_driver(Runner({}))
    assert driver == {"present": False, "working": False, "state": "not_installed", "error": "",
                      "driver_version": None, "cuda_version": None, "gpus": []}


def _pci(sysfs, address, vendor, pci_class, device):
    path = sysfs / "bus" / "pci" / "devices" / address
    path.mkdir(parents=True)
    for name, value in (("vendor", vendor), ("class", pci_class), ("device", device)):
        (path / name).write_text(value + "\n")


def test_pci_detection_reads_sysfs_without_lspci(tmp_path):
    _pci(tmp_path, "0000:00:00.0", "0x8086", "0x060000", "0x0d57")  # host bridge
    _pci(tmp_path, "0000:00:03.0", "0x1af4", "0x020000", "0x1041")  # virtio-net
    _pci(tmp_path, "0000:53:00.0", "0x10de", "0x030200", "0x2330")  # H100 SXM5: 3D controller
    _pci(tmp_path, "0000:07:00.0", "0x10de", "0x030000", "0x1b80")  # GTX 1080 (Pascal): VGA
    _pci(tmp_path, "0000:07:00.1", "0x10de", "0x040300", "0x10f0")  # its HDMI audio function
    _pci(tmp_path, "0000:05:00.0", "0x10de", "0x068000", "0x22a3")  # NVSwitch: a bridge, not a GPU
    devices = probe.read_pci_devices(str(tmp_path))
    assert devices == [
        {"address": "0000:07:00.0", "vendor_id": "10de", "device_id": "1b80", "class_id": "0300",
         "name": "NVIDIA device 10de:1b80", "turing_or_newer": False},
        {"address": "0000:53:00.0", "vendor_id": "10de", "device_id": "2330", "class_id": "0302",
         "name": "NVIDIA device 10de:2330", "turing_or_newer": True},
    ]
    assert probe.open_kernel_modules_supported(devices) is False
    assert probe.open_kernel_modules_supported(devices[1:]) is True
    assert probe.open_kernel_modules_supported([]) is True


@pytest.mark.parametrize(
    ("device_id", "turing"),
    [("0x1db1", False),  # V100 SXM2 (p3)
     ("0x13f2", False),  # M60 (g3)
     ("0x1eb8", True),   # T4 (g4dn)
     ("0x2237", True),   # A10G (g5)
     ("0x20b0", True),   # A100 SXM4 (p4d)
     ("0x27b8", True),   # L4 (g6)
     ("0x2335", True)],  # H200 (p5e)
)
def test_open_module_generation_boundary(tmp_path, device_id, turing):
    _pci(tmp_path, "0000:00:1e.0", "0x10de", "0x030200", device_id)
    assert probe.read_pci_devices(str(tmp_path))[0]["turing_or_newer"] is turing


def test_empty_or_missing_sysfs(tmp_path):
    assert probe.read_pci_devices(str(tmp_path)) == []
    assert probe.summarize([], probe.probe_driver(Runner({}))) == "no GPU"


def test_lspci_names():
    names = probe.parse_lspci_mm(double("lspci", "p5_h100.txt"))
    assert names == {"0000:53:00.0": "GH100 [H100 SXM5 80GB]", "0000:64:00.0": "GH100 [H100 SXM5 80GB]"}
    assert probe.parse_lspci_mm(double("lspci", "g4dn_t4.txt")) == {"0000:00:1e.0": "TU104GL [Tesla T4]"}
    # An old pci.ids knows no name: the device id stays the name.
    assert probe.parse_lspci_mm(double("lspci", "old_pciids.txt")) == {}
    assert probe.parse_lspci_mm("") == {}


def test_summary_without_a_working_driver():
    devices = [{"name": "GH100 [H100 SXM5 80GB]"}, {"name": "GH100 [H100 SXM5 80GB]"}]
    not_installed = probe.probe_driver(Runner({}))
    assert probe.summarize(devices, not_installed) == "2x GH100 [H100 SXM5 80GB], no NVIDIA driver installed"
    mismatch = double("nvidia_smi", "errors", "version_mismatch.txt")
    driver = probe.probe_driver(Runner({"query": (18, mismatch, "")}))
    assert probe.summarize(devices[:1], driver) == "1x GH100 [H100 SXM5 80GB], NVIDIA driver updated, reboot pending"


@pytest.mark.parametrize(
    ("mokutil", "efivar", "efi", "expected"),
    [
        ("SecureBoot enabled\n", None, True, {"state": "enabled", "source": "mokutil"}),
        ("SecureBoot disabled\nPlatform is in Setup Mode\n", None, True, {"state": "disabled", "source": "mokutil"}),
        ("EFI variables are not supported on this system\n", None, False,
         {"state": "disabled", "source": "mokutil (legacy BIOS boot)"}),
        (None, b"\x06\x00\x00\x00\x01", True, {"state": "enabled", "source": "efivars"}),
        (None, b"\x06\x00\x00\x00\x00", True, {"state": "disabled", "source": "efivars"}),
        (None, None, False, {"state": "disabled", "source": "no EFI firmware (legacy BIOS boot)"}),
        (None, None, True, {"state": "unknown", "source": "none"}),
    ],
)
def test_secure_boot_state(mokutil, efivar, efi, expected):
    assert probe.parse_secure_boot(mokutil, efivar, efi) == expected


def test_loaded_kernel_modules():
    modules = ("nvidia_uvm 4882432 0 - Live 0x0000000000000000\n"
               "nvidia 8646656 1 nvidia_uvm, Live 0x0000000000000000 (POE)\n"
               "ena 151552 0 - Live 0x0000000000000000\n")
    open_version = ("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  550.54.15  Release Build  "
                    "(dvs-builder@U16-I3-B03-4-3)  Tue Mar  5 22:00:55 UTC 2024\n")
    closed_version = "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19 01:15:15 UTC 2023\n"
    assert probe.parse_loaded_modules(modules, open_version) == {"nouveau": False, "nvidia": True, "nvidia_type": "open"}
    assert probe.parse_loaded_modules(modules, closed_version)["nvidia_type"] == "proprietary"
    assert probe.parse_loaded_modules("nouveau 2793472 0 - Live 0x0\n") == {
        "nouveau": True, "nvidia": False, "nvidia_type": None}


@pytest.mark.parametrize(("value", "text"), [(12040, "12.4"), (12020, "12.2"), (11040, "11.4"), (13000, "13.0"), (0, None)])
def test_cuda_driver_version_format(value, text):
    assert cuda.format_driver_version(value) == text


def test_cuda_check_without_the_driver_library():
    report = cuda.cuda_check("libcuda-not-installed.so.1")
    assert report["ok"] is False
    assert report["error"].startswith("cannot load libcuda-not-installed.so.1:")
    assert report["device_count"] == 0 and report["devices"] == []


def _run_module(name, tmp_path):
    env = dict(os.environ, ANSIBLE_LIBRARY=str(LIBRARY), ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
               ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json",
               ANSIBLE_LOCAL_TEMP=str(tmp_path))
    ansible = VENV_BIN / "ansible"
    result = subprocess.run([str(ansible), "localhost", "-c", "local", "-i", "localhost,", "-m", name,
                             "-e", f"ansible_python_interpreter={sys.executable}"],
                            capture_output=True, text=True, env=env, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]


def test_probe_module_runs_for_real(tmp_path):
    """The module as Ansible runs it, on this machine: its answers must agree with each other."""
    facts = _run_module("nvidia_gpu_probe", tmp_path)
    assert facts["changed"] is False
    assert {"pci_devices", "driver", "secure_boot", "kernel_modules", "summary"} <= set(facts)
    assert facts["secure_boot"]["state"] in ("enabled", "disabled", "unknown")
    if not facts["pci_devices"] and not facts["driver"]["working"]:
        assert facts["summary"] == "no GPU"
    else:
        assert facts["summary"] != "no GPU"


def test_cuda_check_module_runs_for_real(tmp_path):
    report = _run_module("nvidia_gpu_cuda_check", tmp_path)
    assert report["changed"] is False
    # Without a GPU the check must say why; with one it must have touched every GPU's memory.
    if report["ok"]:
        assert report["devices"] and all(device["memory_roundtrip"] for device in report["devices"])
    else:
        assert report["error"]
