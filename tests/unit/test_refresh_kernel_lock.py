"""scripts/refresh-kernel-lock.py: Colab's pip freeze -> the role's Colab-like set and its lock."""

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("refresh_kernel_lock", ROOT / "scripts" / "refresh-kernel-lock.py")
refresh = importlib.util.module_from_spec(spec)
spec.loader.exec_module(refresh)
FILES = ROOT / "roles" / "colab_runtime" / "files"


def freeze(**overrides: str) -> str:
    lines = [f"{name}==1.0" for name in refresh.PACKAGES if name not in overrides]
    lines += [f"{name}=={version}" for name, version in overrides.items()]
    lines += [
        "# Do not modify this file directly",
        "google-colab @ file:///colabtools/dist/google_colab-1.0.0.tar.gz",
        "nvidia-cublas-cu12==12.8.4.1",
        "cuda-bindings==12.9.7",
        "Jinja2==3.1.6",
    ]
    return "\n".join(lines) + "\n"


def test_writes_the_set_and_the_lock(tmp_path):
    source = tmp_path / "pip-freeze.gpu.txt"
    source.write_text(freeze(torch="2.11.0+cu128", xgboost="3.4.1"))
    assert refresh.main(["--freeze", str(source), "--output-dir", str(tmp_path), "--label", "test freeze"]) == 0
    top = (tmp_path / "kernel-colab.txt").read_text()
    lock = (tmp_path / "kernel-colab.lock").read_text()
    assert "from test freeze" in top
    # The CUDA build is the role's choice: no local label, no build-specific CUDA libraries.
    assert "torch==2.11.0\n" in top and "torch==2.11.0\n" in lock
    assert "==2.11.0+cu128" not in top + lock
    assert not re.search(r"^(nvidia|cuda)-", lock, re.M)
    assert "google-colab" not in lock  # not on PyPI
    assert "jinja2==3.1.6\n" in lock  # dependencies are locked too
    # Colab's version where the host's Python allows it, free below that.
    assert 'xgboost==3.4.1 ; python_version >= "3.12"\n' in top
    assert 'xgboost ; python_version < "3.12"\n' in top
    assert 'xgboost==3.4.1 ; python_version >= "3.12"\n' in lock
    names = [re.split(r"[=; ]", line)[0] for line in top.splitlines() if not line.startswith("#")]
    assert sorted(set(names)) == sorted(refresh.normalize(p) for p in refresh.PACKAGES)


def test_a_package_colab_no_longer_ships_is_named(tmp_path):
    source = tmp_path / "pip-freeze.gpu.txt"
    source.write_text("\n".join(line for line in freeze().splitlines() if not line.startswith("timm==")))
    with pytest.raises(SystemExit, match="has no == pin for timm"):
        refresh.main(["--freeze", str(source), "--output-dir", str(tmp_path)])


def test_shipped_files_come_from_the_script():
    top = (FILES / "kernel-colab.txt").read_text()
    lock = (FILES / "kernel-colab.lock").read_text()
    names = {re.split(r"[=; ]", line)[0] for line in top.splitlines() if not line.startswith("#")}
    assert names == {refresh.normalize(p) for p in refresh.PACKAGES}
    pinned = dict(re.match(r"^([^=]+)==([^ ]+)", line).groups() for line in lock.splitlines() if "==" in line)
    for line in top.splitlines():
        match = re.match(r"^([^=; ]+)==([^ ]+)", line)
        if match:
            assert pinned[match.group(1)] == match.group(2), line
