"""The torch build decision table of the colab_runtime role (filter colab_runtime_torch_build)."""

import pytest
from ansible.errors import AnsibleFilterError

from colab_testkit.substrate import load_role_file

kernel = load_role_file("colab_runtime", "filter_plugins/kernel.py", "colab_runtime_kernel_filters")
FILTERS = kernel.FilterModule().filters()
torch_build = FILTERS["colab_runtime_torch_build"]

# Lowest driver each CUDA major version runs on (minor-version compatibility).
CUDA_MIN_DRIVER = {"cu130": 580, "cu128": 525}


@pytest.mark.parametrize(
    "driver,build,index",
    [
        ("470.256.02", "cpu", "https://download.pytorch.org/whl/cpu"),
        ("525.60.13", "cu128", "https://download.pytorch.org/whl/cu128"),
        ("535.261.03", "cu128", "https://download.pytorch.org/whl/cu128"),
        ("550.163.01", "cu128", "https://download.pytorch.org/whl/cu128"),
        ("570.195.03", "cu128", "https://download.pytorch.org/whl/cu128"),
        ("580.95.05", "cu130", ""),
    ],
)
def test_decision_table(driver, build, index):
    decision = torch_build(driver)
    assert (decision["build"], decision["index_url"]) == (build, index)
    assert decision["driver"] == driver
    if build == "cpu":
        assert decision["gpu"] is False
        assert f"NVIDIA driver {driver} is older than 525" in decision["warning"]
    else:
        assert decision["gpu"] is True
        assert decision["warning"] == ""


@pytest.mark.parametrize("driver", ["470", "524.99", "525", "535.104.05", "550.54.15", "569.9", "570.86.10", "579.1", "580", "590.44.01"])
def test_never_a_cuda_build_the_driver_cannot_run(driver):
    decision = torch_build(driver)
    major = int(driver.split(".")[0])
    if decision["gpu"]:
        assert major >= CUDA_MIN_DRIVER[decision["build"]]
    else:
        # CPU only where no CUDA build runs at all.
        assert major < min(CUDA_MIN_DRIVER.values())


@pytest.mark.parametrize("driver,working", [("", False), (None, False), ("550.54.15", False), ("", True)])
def test_no_working_driver_gets_cpu_with_a_warning(driver, working):
    decision = torch_build(driver, working)
    assert decision["build"] == "cpu"
    assert decision["gpu"] is False
    assert "No working NVIDIA driver" in decision["warning"]


def test_unparsable_driver_version_is_an_error():
    with pytest.raises(AnsibleFilterError, match="driver version 'n/a' is not a version"):
        torch_build("n/a")


def test_warn_returns_its_message(capsys):
    assert FILTERS["colab_runtime_warn"]("something to know") == "something to know"
    assert FILTERS["colab_runtime_warn"]("") == ""
