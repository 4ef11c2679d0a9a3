"""The GPU proof cell of the colab_tunnel role: what it prints, how it is read, and its verdict.

The cell (colab_client.gpu_proof_code) runs here in a plain interpreter, as a kernel would run
it: with no libcuda on this machine, and with small torch modules in front of it that answer
as a CPU-only build and as a build that sees one GPU, so that each branch of the cell and the
summary wording are checked without a GPU.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from colab_testkit.substrate import load_role_file

client = load_role_file("colab_tunnel", "module_utils/colab_client.py")

T4 = 15_655_829_504  # bytes torch reports for a T4 ("15 GiB")
H200 = 150_754_820_096

# torch as a CPU-only build and as a CUDA 13.0 build that sees one T4; only what the cell calls.
FAKE_TORCH = {
    "cpu": """
__version__ = "2.11.0+cpu"
class version: cuda = None
class cuda:
    @staticmethod
    def is_available(): return False
""",
    "gpu": f"""
__version__ = "2.11.0+cu130"
float32 = "float32"
class version: cuda = "13.0"
class _Props: name = "Tesla T4"; total_memory = {T4}
class _Tensor:
    def __init__(self, values): self.values = values
    def __mul__(self, k): return _Tensor([v * k for v in self.values])
    def sum(self): return _Tensor([sum(self.values)])
    def item(self): return self.values[0]
def arange(n, device, dtype): return _Tensor(list(range(n)))
class cuda:
    @staticmethod
    def is_available(): return True
    @staticmethod
    def device_count(): return 1
    @staticmethod
    def get_device_properties(index): return _Props()
""",
}


def run_cell(tmp_path: Path, torch: str | None = None) -> tuple[str, dict]:
    """Run the proof cell (no pip check: that needs IPython's %pip) and return (stdout, verdict)."""
    env_dir = tmp_path / "site"
    env_dir.mkdir()
    if torch:
        (env_dir / "torch.py").write_text(FAKE_TORCH[torch])
    res = subprocess.run(
        [sys.executable, "-c", client.gpu_proof_code("")],
        capture_output=True, text=True, timeout=60, env={"PYTHONPATH": str(env_dir), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    return res.stdout, client.parse_gpu_proof(res.stdout)


def test_without_torch_the_cell_asks_libcuda_and_gives_its_reason(tmp_path):
    _, proof = run_cell(tmp_path)
    # No NVIDIA driver on this machine: libcuda itself cannot be loaded.
    assert proof["gpus"] == [] and proof["framework"] == ""
    assert proof["reason"].startswith("libcuda.so.1 cannot be loaded ("), proof
    assert client.gpu_summary(proof).startswith("no GPU visible to notebooks: libcuda.so.1 cannot be loaded (")


def test_a_cpu_only_torch_is_named_as_the_reason(tmp_path):
    _, proof = run_cell(tmp_path, "cpu")
    assert proof["framework"] == "torch 2.11.0"
    assert proof["reason"].startswith("torch.cuda.is_available() is False (a CPU-only torch build); libcuda.so.1 cannot")
    assert client.gpu_summary(proof).startswith("no GPU visible to notebooks: torch.cuda.is_available() is False")


def test_torch_that_sees_a_gpu_computes_on_it_and_is_summarised(tmp_path):
    _, proof = run_cell(tmp_path, "gpu")
    assert proof["gpus"] == [{"name": "Tesla T4", "memory": T4}]
    assert proof["compute"] == "ok" and proof["reason"] == ""
    assert client.gpu_summary(proof) == "GPU in notebooks: 1x Tesla T4 15 GiB, CUDA 13.0, torch 2.11.0"


def test_the_verdict_is_the_last_marker_line_after_what_pip_printed():
    proof = {"gpus": [], "reason": "x", "pip": "ok"}
    output = "Collecting iniconfig\nCOLAB_GPU_PROOF {\"old\": 1}\nSuccessfully installed iniconfig-2.1.0\n"
    output += client.GPU_PROOF_MARKER + json.dumps(proof) + "\n"
    assert client.parse_gpu_proof(output) == proof
    with pytest.raises(ValueError, match="printed no verdict line"):
        client.parse_gpu_proof("NameError: get_ipython")


@pytest.mark.parametrize(
    "proof,line",
    [
        ({"gpus": [{"name": "NVIDIA H200", "memory": H200}], "cuda": "13.0", "framework": "torch 2.11.0", "compute": "ok"},
         "GPU in notebooks: 1x NVIDIA H200 140 GiB, CUDA 13.0, torch 2.11.0"),
        ({"gpus": [{"name": "NVIDIA A10G", "memory": 23_609_475_072}] * 4, "cuda": "12.8", "framework": "", "compute": ""},
         "GPU in notebooks: 4x NVIDIA A10G 22 GiB, CUDA 12.8, no framework in the kernel (libcuda only)"),
        ({"gpus": [{"name": "Tesla T4", "memory": T4}], "cuda": "13.0", "framework": "torch 2.11.0",
          "compute": "failed: RuntimeError: CUDA error: no kernel image is available"},
         "GPU in notebooks: 1x Tesla T4 15 GiB, CUDA 13.0, torch 2.11.0;"
         " device computation failed: RuntimeError: CUDA error: no kernel image is available"),
        ({"gpus": [], "reason": "cuInit failed with CUDA_ERROR_NO_DEVICE (100)"},
         "no GPU visible to notebooks: cuInit failed with CUDA_ERROR_NO_DEVICE (100)"),
    ],
)  # fmt: skip
def test_summary_wording(proof, line):
    assert client.gpu_summary(proof) == line


NO_UVM = {"gpus": [], "reason": "cuInit failed with CUDA_ERROR_UNKNOWN (999)"}


def test_required_gpu_that_root_sees_and_the_kernel_does_not_fails_with_reason_and_fix():
    message = client.gpu_verdict(NO_UVM, root_gpus=1, required=True, service="colab-runtime")
    assert message == (
        "The host has 1 NVIDIA GPU(s) that root sees, but the notebook kernel (not root) sees none:"
        " cuInit failed with CUDA_ERROR_UNKNOWN (999). Fix: the GPU device nodes are missing or not readable by"
        " the service: run 'sudo systemctl restart colab-runtime' on the host (its start creates /dev/nvidia-uvm*),"
        " then check 'ls -l /dev/nvidia*'; or set nvidia_gpu_required: false to go on without a GPU in notebooks."
    )
    cpu_torch = {"gpus": [], "reason": "torch.cuda.is_available() is False (a CPU-only torch build)"}
    assert "run site.yml again so the kernel gets the torch build" in client.gpu_verdict(cpu_torch, 1, True)
    broken = {"gpus": [{"name": "Tesla T4", "memory": T4}], "compute": "failed: RuntimeError: boom"}
    assert "sees 1 GPU(s) but a computation on it failed: RuntimeError: boom" in client.gpu_verdict(broken, 1, True)


@pytest.mark.parametrize(
    "root_gpus,required",
    [(1, False), (0, True), (None, True)],  # not required; root sees none either; the run did not check the host
)
def test_no_failure_unless_required_and_root_sees_a_gpu(root_gpus, required):
    assert client.gpu_verdict(NO_UVM, root_gpus, required) == ""
    ok = {"gpus": [{"name": "Tesla T4", "memory": T4}], "compute": "ok"}
    assert client.gpu_verdict(ok, 1, True) == ""
