"""bench/kernel_set.py's decisions: which of Colab's pins apply, and how an environment compares."""

from __future__ import annotations

import runpy

import pytest

from colab_testkit.substrate import ROOT

KS = runpy.run_path(str(ROOT / "bench/kernel_set.py"))


def test_pins_follow_the_python_markers_of_the_set():
    text = (ROOT / "roles/colab_runtime/files/kernel-colab.txt").read_text()
    on_311 = KS["colab_pins"](text, "3.11.2")
    on_313 = KS["colab_pins"](text, "3.13.5")
    # Colab pins xgboost only for its own Python (3.12+); older ones get whatever resolves.
    assert on_311["xgboost"] == ""
    assert on_313["xgboost"] and on_313["xgboost"] != ""
    assert on_311["torch"] == on_313["torch"] != ""
    assert "huggingface-hub" in on_311 and "scikit-learn" in on_311


def test_unknown_marker_is_refused():
    with pytest.raises(ValueError, match="unsupported environment marker"):
        KS["colab_pins"]('foo==1 ; sys_platform == "linux"\n', "3.11.2")


def test_parity_sorts_each_package():
    pins = {"torch": "2.11.0", "numpy": "2.1.3", "pandas": "2.2.3", "xgboost": "", "cv": "5.0", "gone": "1.0"}
    probed = {
        "torch": {"version": "2.11.0+cu130"},  # the build label is not the version
        "numpy": {"version": "2.2.0"},
        "pandas": {"version": "2.2.3"},
        "xgboost": {"version": "3.0.0"},
        "cv": {"version": "5.0", "error": "ImportError: libGL.so.1"},
    }
    result = KS["parity"](pins, probed)
    assert result["same"] == ["cv", "pandas", "torch"]
    assert result["differs"] == {"numpy": {"colab": "2.1.3", "here": "2.2.0"}}
    assert result["unpinned"] == ["xgboost"]
    assert result["missing"] == ["gone"]
    assert result["broken"] == {"cv": "ImportError: libGL.so.1"}
    assert result["total"] == 6


def test_module_names_of_distributions():
    assert KS["module_of"]("scikit-learn") == "sklearn"
    assert KS["module_of"]("opencv-python-headless") == "cv2"
    assert KS["module_of"]("sentence-transformers") == "sentence_transformers"
    assert KS["module_of"]("torch") == "torch"
    assert KS["module_of"]("ipython") == "IPython"


def test_lines_report_parity_and_size():
    par = KS["parity"]({"torch": "2.11.0", "numpy": "2.1.3"}, {"torch": {"version": "2.11.0"}, "numpy": {"version": "2.2.0"}})
    text = "\n".join(KS["lines"]({"converge_seconds": 300.0, "env_bytes": 3 * 2**30, "distributions": 200,
                                  "python": "3.11.2", "torch": "2.11.0", "import_seconds": 20.0, "parity": par,
                                  "torch_cell": {"torch_cuda_build": "13.0", "cuda_available": False}}))
    assert "torch built for CUDA 13.0, torch.cuda.is_available() = False" in text
    assert "3.00 GiB" in text and "at Colab's version: 1 of 2" in text and "numpy 2.2.0 (Colab 2.1.3)" in text
