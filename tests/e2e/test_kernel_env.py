"""The notebook kernel environment of the colab_runtime role, used from Colab-protocol cells.

One Debian 12 host (systemd + sshd in podman) gets the role over SSH with the minimal package
set (Runtime.converge picks it); cells then install packages the way a Colab user does (%pip install, !pip install) and the
tests check that they stay through a service restart, a host restart and later converges, and
that a changed declared package list never restarts the server.
"""

from __future__ import annotations

import json
import re
import time

import pytest
from colab_client import ColabClient
from colab_testkit.runtime_host import SERVICE, Runtime, start_host
from colab_testkit.substrate import free_port, http_get, play_recap, runtime_image

# Each test converges or restarts the host at least once: minutes each on a busy machine.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

KERNEL_DIR = "/var/lib/colab-runtime/kernel"
CURRENT = f"{KERNEL_DIR}/current"
# Tiny pure-Python wheels from PyPI that the project's own test tools use.
CELL_PIP_PACKAGE = "iniconfig"  # %pip install
SHELL_PIP_PACKAGE = "pluggy"  # !pip install
DECLARED_PACKAGE = "mdurl"  # colab_runtime_kernel_packages, added later

WHERE = r"""
import json, os, shutil, subprocess, sys
print(json.dumps({
    "executable": sys.executable,
    "prefix": os.path.realpath(sys.prefix),
    "writable": os.access(sys.prefix, os.W_OK),
    "which": {name: shutil.which(name) for name in ("pip", "python")},
    "script": subprocess.run(["python", "-c", "import sys; print(sys.prefix)"], capture_output=True, text=True).stdout.strip(),
}))
"""


def imports(runtime: Runtime, *modules: str) -> dict[str, str]:
    """What a new kernel (new Colab session) finds: {module: version or the error}."""
    code = (
        "import importlib.metadata as m, json\nout = {}\n"
        f"for name in {list(modules)!r}:\n"
        "    try:\n        __import__(name); out[name] = m.version(name)\n"
        "    except Exception as err:\n        out[name] = repr(err)\n"
        "print(json.dumps(out))"
    )
    with ColabClient(runtime.url, None, flow="direct", timeout=120) as client:
        return json.loads(client.execute(code).strip().splitlines()[-1])


def wait_api(runtime: Runtime, timeout: float = 300) -> None:
    """Until the server answers through the tunnel (after a restart)."""
    auth = {"Authorization": f"token {runtime.token}"}
    deadline = time.monotonic() + timeout
    while http_get(f"{runtime.base}/api/status", headers=auth)[0] != 200:
        if runtime.tunnel is not None and runtime.tunnel.poll() is not None:
            runtime.open_tunnel()  # the forward died with the old sshd connection: open it again
        if time.monotonic() > deadline:
            status = runtime.host.exec("systemctl", "status", "--no-pager", "-n", "40", SERVICE, check=False)
            raise AssertionError(f"no answer from the runtime within {timeout} s:\n{status.stdout}{status.stderr}")
        time.sleep(0.5)


def installed(result: dict[str, str]) -> bool:
    return all(re.fullmatch(r"[0-9][0-9A-Za-z.+]*", version) for version in result.values())


@pytest.fixture(scope="module")
def runtime(bookworm_image, ssh_key, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("kernel_env")
    host = start_host(runtime_image(bookworm_image, ssh_key, workdir), ssh_key)
    rt = Runtime(host, workdir, free_port())
    try:
        first = rt.converge()
        assert first.returncode == 0, first.stdout[-6000:]
        rt.open_tunnel()
        yield rt
    finally:
        rt.close_tunnel()
        host.remove()


def test_kernel_runs_in_the_user_owned_kernel_environment(runtime):
    with ColabClient(runtime.url, None, flow="direct", timeout=120) as client:
        where = json.loads(client.execute(WHERE).strip().splitlines()[-1])
        # !python in a cell: the shell's PATH leads to the same environment.
        shell = client.execute("!python -c 'import sys; print(sys.prefix)'").strip()
    assert where["executable"] == f"{CURRENT}/bin/python"
    assert where["prefix"].startswith(f"{KERNEL_DIR}/envs/python3.11-"), where
    assert where["writable"] is True
    assert where["which"] == {"pip": f"{CURRENT}/bin/pip", "python": f"{CURRENT}/bin/python"}
    assert where["script"] in (CURRENT, where["prefix"])
    assert shell in (CURRENT, where["prefix"])
    owner = runtime.host.exec("stat", "-c", "%U", where["prefix"], f"{where['prefix']}/lib").stdout.split()
    assert owner == ["colab", "colab"]
    # The server's own venv stays root-owned and is not offered as a kernel.
    specs = ColabClient(runtime.url, None, flow="direct").request("GET", "/api/kernelspecs").json()
    assert list(specs["kernelspecs"]) == ["python3"]
    assert specs["kernelspecs"]["python3"]["spec"]["argv"][0] == f"{CURRENT}/bin/python"


def test_cell_installs_survive_restarts_and_converges(runtime):
    with ColabClient(runtime.url, None, flow="direct", timeout=180) as client:
        out = client.execute(f"%pip install {CELL_PIP_PACKAGE}")
        assert f"Successfully installed {CELL_PIP_PACKAGE}" in out, out
        out = client.execute(f"!pip install {SHELL_PIP_PACKAGE}")
        assert f"Successfully installed {SHELL_PIP_PACKAGE}" in out, out
    both = (CELL_PIP_PACKAGE, SHELL_PIP_PACKAGE)
    assert installed(imports(runtime, *both))

    runtime.host.exec("systemctl", "restart", SERVICE)
    wait_api(runtime)
    after_service_restart = imports(runtime, *both)
    assert installed(after_service_restart), after_service_restart

    # A host restart (the container's systemd boots again): the service comes up by itself.
    runtime.close_tunnel()
    runtime.host.restart()
    wait_api(runtime)
    runtime.open_tunnel()
    after_reboot = imports(runtime, *both)
    assert installed(after_reboot), after_reboot

    res = runtime.converge()
    assert res.returncode == 0, res.stdout[-4000:]
    assert play_recap(res.stdout)[runtime.host.name]["changed"] == 0, res.stdout[-4000:]
    after_converge = imports(runtime, *both)
    assert installed(after_converge), after_converge


def test_changed_declared_packages_install_without_a_server_restart(runtime):
    pid = runtime.main_pid()
    res = runtime.converge(colab_runtime_kernel_packages=[DECLARED_PACKAGE])
    assert res.returncode == 0, res.stdout[-4000:]
    assert runtime.main_pid() == pid
    assert installed(imports(runtime, DECLARED_PACKAGE, CELL_PIP_PACKAGE, SHELL_PIP_PACKAGE))

    # Dropped from the list again: still installed, still no restart.
    res = runtime.converge()
    assert res.returncode == 0, res.stdout[-4000:]
    assert runtime.main_pid() == pid
    assert installed(imports(runtime, DECLARED_PACKAGE))


def test_deprecated_extra_packages_go_to_the_kernel_environment(runtime):
    pid = runtime.main_pid()
    res = runtime.converge(colab_runtime_extra_packages=["mdurl==0.1.2"])
    assert res.returncode == 0, res.stdout[-4000:]
    out = re.sub(r"\s+", " ", res.stdout)
    assert out.count("colab_runtime_extra_packages is deprecated") == 1, res.stdout[-4000:]
    assert "Rename the setting to colab_runtime_kernel_packages" in out
    assert runtime.main_pid() == pid
    server = runtime.host.exec("/opt/colab-runtime/venv/bin/python", "-c", "import mdurl", check=False)
    assert server.returncode != 0  # not in the server's venv
    assert imports(runtime, "mdurl") == {"mdurl": "0.1.2"}


def test_broken_python_is_replaced_by_a_new_environment(runtime):
    old = runtime.host.exec("readlink", CURRENT).stdout.strip()
    # The interpreter link of the environment breaks (e.g. the system Python went away).
    runtime.host.exec("ln", "-sfn", "/usr/bin/python3-gone", f"{old}/bin/python")
    pid = runtime.main_pid()
    res = runtime.converge()
    assert res.returncode == 0, res.stdout[-4000:]
    new = runtime.host.exec("readlink", CURRENT).stdout.strip()
    assert new != old and new.startswith(f"{KERNEL_DIR}/envs/python3.11-")
    assert f"was replaced by {new}" in re.sub(r"\s+", " ", res.stdout)
    # The old environment is kept (what the user installed is still on disk), the server kept running.
    assert runtime.host.exec("test", "-d", f"{old}/lib", check=False).returncode == 0
    assert runtime.main_pid() == pid
    assert installed(imports(runtime, "ipykernel"))
    res = runtime.converge()
    assert play_recap(res.stdout)[runtime.host.name]["changed"] == 0, res.stdout[-4000:]
