#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Talk to the GPUs through the CUDA driver API (libcuda.so.1) with ctypes: no extra packages."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: nvidia_gpu_cuda_check
short_description: Prove CUDA works by initialising the driver API and round-tripping device memory
description:
  - Loads C(libcuda.so.1) (shipped with every NVIDIA driver) with ctypes, calls C(cuInit),
    C(cuDeviceGetCount), C(cuDeviceGetName) and C(cuDeviceTotalMem), then on each GPU creates a
    context, fills device memory with C(cuMemsetD32) and copies it back to check the pattern.
  - Needs no CUDA toolkit, compiler or Python package, so it works on any host with the driver.
  - "Never fails the task itself: it reports RV(ok) and the CUDA error name so the caller decides."
  - Changes nothing on the host.
options:
  library:
    description: The CUDA driver library to load.
    type: str
    default: libcuda.so.1
extends_documentation_fragment:
  - action_common_attributes
attributes:
  check_mode:
    support: full
    details: Only reads; the check runs in check mode too.
  diff_mode:
    support: none
  platform:
    platforms: posix
author: colab-gpu-runtime
"""

EXAMPLES = r"""
- name: Run a CUDA check on every GPU
  nvidia_gpu_cuda_check:
  register: cuda

- name: Stop when CUDA does not work
  ansible.builtin.assert:
    that: cuda.ok
    fail_msg: "CUDA check failed: {{ cuda.error }}"
"""

RETURN = r"""
ok:
  description: Whether every step succeeded on every GPU.
  type: bool
  returned: always
  sample: true
error:
  description: "Empty when ok, else the failing call and the CUDA error name, for example C(cuInit: CUDA_ERROR_NO_DEVICE)."
  type: str
  returned: always
  sample: ""
driver_cuda_version:
  description: Highest CUDA version the driver supports (cuDriverGetVersion); null when the library did not load.
  type: str
  returned: always
  sample: "12.4"
device_count:
  description: GPUs the CUDA driver sees.
  type: int
  returned: always
  sample: 1
devices:
  description: One entry per GPU the CUDA driver sees.
  type: list
  elements: dict
  returned: always
  contains:
    index:
      description: CUDA device ordinal.
      type: int
      returned: always
    name:
      description: Device name as CUDA reports it.
      type: str
      returned: always
      sample: NVIDIA H100 80GB HBM3
    memory_total_mib:
      description: Total device memory in MiB.
      type: int
      returned: always
      sample: 81559
    memory_roundtrip:
      description: Whether the pattern written to device memory read back unchanged.
      type: bool
      returned: always
"""

import ctypes

# Words written to and read back from each GPU (4 MiB): enough to touch real device memory.
PATTERN = 0xC01AB0
WORDS = 1 << 20


class CudaError(Exception):
    pass


def _error_name(lib, code):
    name = ctypes.c_char_p()
    try:
        if lib.cuGetErrorName(code, ctypes.byref(name)) == 0 and name.value:
            return name.value.decode("ascii", "replace")
    except AttributeError:
        pass
    return "CUDA error %d" % code


def _call(lib, func, *args):
    code = getattr(lib, func)(*args)
    if code != 0:
        raise CudaError("%s: %s" % (func, _error_name(lib, code)))


def format_driver_version(value):
    """cuDriverGetVersion's integer (1000 * major + 10 * minor) -> "major.minor"."""
    if not value:
        return None
    return "%d.%d" % (value // 1000, (value % 1000) // 10)


def check_device(lib, ordinal):
    device = ctypes.c_int()
    _call(lib, "cuDeviceGet", ctypes.byref(device), ordinal)
    name = ctypes.create_string_buffer(256)
    _call(lib, "cuDeviceGetName", name, len(name), device)
    total = ctypes.c_size_t()
    _call(lib, "cuDeviceTotalMem_v2", ctypes.byref(total), device)
    result = {"index": ordinal, "name": name.value.decode("utf-8", "replace"),
              "memory_total_mib": total.value // (1024 * 1024), "memory_roundtrip": False}

    context = ctypes.c_void_p()
    _call(lib, "cuCtxCreate_v2", ctypes.byref(context), 0, device)
    pointer = ctypes.c_uint64()
    try:
        _call(lib, "cuMemAlloc_v2", ctypes.byref(pointer), ctypes.c_size_t(WORDS * 4))
        try:
            _call(lib, "cuMemsetD32_v2", pointer, ctypes.c_uint(PATTERN), ctypes.c_size_t(WORDS))
            host = (ctypes.c_uint32 * WORDS)()
            _call(lib, "cuMemcpyDtoH_v2", host, pointer, ctypes.c_size_t(WORDS * 4))
            result["memory_roundtrip"] = all(word == PATTERN for word in host)
        finally:
            lib.cuMemFree_v2(pointer)
    finally:
        lib.cuCtxDestroy_v2(context)
    return result


def cuda_check(library="libcuda.so.1"):
    report = {"ok": False, "error": "", "driver_cuda_version": None, "device_count": 0, "devices": []}
    try:
        lib = ctypes.CDLL(library)
    except OSError as exc:
        report["error"] = "cannot load %s: %s" % (library, exc)
        return report
    lib.cuDeviceGetName.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_int]
    lib.cuMemsetD32_v2.argtypes = [ctypes.c_uint64, ctypes.c_uint, ctypes.c_size_t]
    lib.cuMemcpyDtoH_v2.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_size_t]
    lib.cuMemFree_v2.argtypes = [ctypes.c_uint64]
    try:
        version = ctypes.c_int()
        _call(lib, "cuDriverGetVersion", ctypes.byref(version))
        report["driver_cuda_version"] = format_driver_version(version.value)
        _call(lib, "cuInit", 0)
        count = ctypes.c_int()
        _call(lib, "cuDeviceGetCount", ctypes.byref(count))
        report["device_count"] = count.value
        for ordinal in range(count.value):
            report["devices"].append(check_device(lib, ordinal))
    except CudaError as exc:
        report["error"] = str(exc)
        return report
    bad = [str(device["index"]) for device in report["devices"] if not device["memory_roundtrip"]]
    if not report["devices"]:
        report["error"] = "CUDA sees no GPU"
    elif bad:
        report["error"] = "device memory read back wrong on GPU %s" % ", ".join(bad)
    else:
        report["ok"] = True
    return report


def main():
    from ansible.module_utils.basic import AnsibleModule

    module = AnsibleModule(argument_spec={"library": {"type": "str", "default": "libcuda.so.1"}},
                           supports_check_mode=True)
    module.exit_json(changed=False, **cuda_check(module.params["library"]))


if __name__ == "__main__":
    main()
