"""Bench phase `kernelset`: Colab's package set installed into a kernel environment on a fresh test host.

    bench/run.py --only kernelset

Converges colab_runtime alone with colab_runtime_kernel_package_set=colab on a fresh Debian 12
test host, as the role does on the default Deep Learning AMI (driver 580 or newer: PyPI's CUDA 13
torch build; the test host has no GPU, so the driver is stated, not found). Then, in the kernel
environment, as the notebook user: every top-level package of the set is imported, and its
installed version is compared with Colab's (roles/colab_runtime/files/kernel-colab.txt, generated
from Colab's own pip freeze). Reports the converge time, the environment's size on disk and
package count, the imports that fail, and the parity: how many of Colab's top-level packages the
environment carries at Colab's version, and which differ or are missing.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SET_FILE = ROOT / "roles/colab_runtime/files/kernel-colab.txt"
# The driver the default image (Deep Learning AMI, Ubuntu 24.04) ships: the role then takes
# torch's CUDA 13 build from the configured package index.
STATED_DRIVER = "580.95.05"
# Distributions whose module is not their name with "-" as "_".
MODULES = {
    "ipython": "IPython",
    "scikit-learn": "sklearn",
    "pillow": "PIL",
    "opencv-python-headless": "cv2",
    "huggingface-hub": "huggingface_hub",
    "sentence-transformers": "sentence_transformers",
    "pyyaml": "yaml",
}

# Run by the kernel environment's Python as the notebook user: imports each module, reports its
# distribution's version or the error. argv[1]: JSON {distribution: module}.
PROBE = r"""
import importlib, importlib.metadata as md, json, sys
out = {}
for dist, module in json.loads(sys.argv[1]).items():
    try:
        importlib.import_module(module)
        out[dist] = {"version": md.version(dist)}
    except Exception as err:
        try:
            version = md.version(dist)
        except md.PackageNotFoundError:
            version = None
        out[dist] = {"version": version, "error": f"{type(err).__name__}: {err}"[:300]}
cell = {}
try:  # what `import torch; torch.cuda.is_available()` says in a notebook cell of this environment
    import torch
    cell = {"torch_cuda_build": torch.version.cuda, "cuda_available": torch.cuda.is_available()}
except Exception as err:
    cell = {"error": f"{type(err).__name__}: {err}"[:300]}
print(json.dumps({"packages": out, "python": sys.version.split()[0], "torch_cell": cell,
                  "distributions": len(list(md.distributions()))}))
"""


def normalize(name: str) -> str:
    """A distribution name as package indexes compare it (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def colab_pins(text: str, python: str) -> dict[str, str]:
    """Colab's top-level packages and versions from kernel-colab.txt, for this Python ("3.11.2").

    A line with an environment marker counts when the marker is a python_version comparison that
    holds; an unpinned line (a package Colab has only for another Python) maps to "".
    """
    major_minor = tuple(int(p) for p in python.split(".")[:2])
    pins: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        requirement, _, marker = (part.strip() for part in line.partition(";"))
        if marker and not _python_marker_holds(marker, major_minor):
            continue
        name, _, version = requirement.partition("==")
        pins[normalize(name)] = version.strip()
    return pins


def _python_marker_holds(marker: str, python: tuple[int, int]) -> bool:
    match = re.fullmatch(r"""python_version\s*(>=|<=|==|!=|<|>)\s*["'](\d+)\.(\d+)["']""", marker)
    if not match:
        raise ValueError(f"kernel-colab.txt: unsupported environment marker {marker!r}")
    op, wanted = match.group(1), (int(match.group(2)), int(match.group(3)))
    return {
        ">=": python >= wanted, "<=": python <= wanted, "==": python == wanted,
        "!=": python != wanted, "<": python < wanted, ">": python > wanted,
    }[op]  # fmt: skip


def module_of(distribution: str) -> str:
    return MODULES.get(distribution, distribution.replace("-", "_"))


def parity(pins: dict[str, str], probed: dict[str, dict]) -> dict:
    """Compare the environment (probe output) with Colab's pins.

    same: at Colab's version (a local label such as +cu130 is the build, not the version);
    differs: installed at another version; unpinned: Colab's freeze pins none for this Python;
    missing: not installed; broken: installed but its import fails.
    """
    result: dict = {"same": [], "differs": {}, "unpinned": [], "missing": [], "broken": {}}
    for name, wanted in sorted(pins.items()):
        got = probed.get(name, {})
        version = got.get("version")
        if version is None:
            result["missing"].append(name)
            continue
        if got.get("error"):
            result["broken"][name] = got["error"]
        if not wanted:
            result["unpinned"].append(name)
        elif version.split("+", 1)[0] == wanted:
            result["same"].append(name)
        else:
            result["differs"][name] = {"colab": wanted, "here": version}
    result["total"] = len(pins)
    return result


def kernelset(b, playbook, log) -> dict:
    """The phase: a fresh host, the role with the Colab set, then imports and parity (see the module doc).

    b, playbook and log are run.py's Bench, timed ansible-playbook runner and logger.
    """
    out: dict = {}
    host = b.start_host("kernelset")
    inv = b.work / "kernelset-inventory.json"
    inv.write_text(json.dumps(host.inventory(hostname="kernelset")))
    extra = {
        "colab_host_roles": ["colab_runtime"],
        "colab_runtime_kernel_package_set": "colab",
        "nvidia_gpu_driver_version": STATED_DRIVER,
        "nvidia_gpu_driver_working": True,
    }
    log("kernelset: converge colab_runtime with colab_runtime_kernel_package_set=colab (several GB)")
    seconds, _ = playbook(["-i", str(inv), "playbooks/configure.yml", "-e", json.dumps(extra)], {}, timeout=3600)
    out["converge_seconds"] = round(seconds, 1)
    kernel = "/var/lib/colab-runtime/kernel/current"
    size = host.exec("du", "-sb", "--dereference-args", kernel, timeout=600).stdout.split()[0]
    out["env_bytes"] = int(size)
    pins_text = SET_FILE.read_text()
    python = host.exec(f"{kernel}/bin/python", "-c", "import sys; print(sys.version.split()[0])").stdout.strip()
    pins = colab_pins(pins_text, python)
    start = time.perf_counter()
    probe = host.exec(
        "runuser", "-u", "colab", "--", f"{kernel}/bin/python", "-c", PROBE,
        json.dumps({name: module_of(name) for name in pins}), timeout=900,
    )  # fmt: skip
    out["import_seconds"] = round(time.perf_counter() - start, 1)
    probed = json.loads(probe.stdout.strip().splitlines()[-1])
    out["python"] = probed["python"]
    out["distributions"] = probed["distributions"]
    out["parity"] = parity(pins, {normalize(k): v for k, v in probed["packages"].items()})
    out["torch"] = probed["packages"].get("torch", {}).get("version")
    out["torch_cell"] = probed["torch_cell"]
    host.remove()
    return out


def lines(p: dict) -> list[str]:
    """The phase's part of the printed table."""
    if not p:
        return []
    rows = ["kernelset: Colab's package set in a kernel environment on a fresh test host"]
    par = p["parity"]
    rows += [
        f"  converge (colab_runtime alone): {p['converge_seconds']} s; environment {p['env_bytes'] / 2**30:.2f} GiB, "
        f"{p['distributions']} distributions, Python {p['python']}, torch {p['torch']}",
        f"  in a cell: torch built for CUDA {p['torch_cell'].get('torch_cuda_build')}, "
        f"torch.cuda.is_available() = {p['torch_cell'].get('cuda_available')} {p['torch_cell'].get('error', '')}".rstrip(),
        f"  imports of Colab's {par['total']} top-level packages: {par['total'] - len(par['missing']) - len(par['broken'])} ok "
        f"in {p['import_seconds']} s; broken: {', '.join(par['broken']) or 'none'}; missing: {', '.join(par['missing']) or 'none'}",
        f"  at Colab's version: {len(par['same'])} of {par['total']}"
        + (f"; unpinned for this Python: {', '.join(par['unpinned'])}" if par["unpinned"] else ""),
    ]
    rows += [f"    differs: {name} {v['here']} (Colab {v['colab']})" for name, v in par["differs"].items()]
    rows += [f"    broken: {name}: {err}" for name, err in par["broken"].items()]
    return rows
