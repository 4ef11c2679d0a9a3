"""Checks of a host converged with the colab_runtime role (role defaults), one concern per test.

testinfra's host modules (service, socket, file, user, process) read the host; each check is one
`podman exec` (see .config/molecule/config.yml), so there is no need to batch them.
"""

import json
from pathlib import Path

import pytest
import yaml

ROLE = Path(__file__).resolve().parents[3] / "roles" / "colab_runtime"
ROLE_VARS = {
    **yaml.safe_load((ROLE / "defaults" / "main.yml").read_text()),
    **yaml.safe_load((ROLE / "vars" / "main.yml").read_text()),
}
UV_VERSION = ROLE_VARS["colab_runtime_uv_version"]
PREFIX = "/opt/colab-runtime"
VENV_PYTHON = f"{PREFIX}/venv/bin/python"
# What only the browser UI needs (Notebook 7 and what it brings): absent without colab_runtime_web_ui.
WEB_UI_STACK = ["notebook", "jupyterlab", "jupyterlab-server", "jupyter-lsp", "notebook-shim", "babel", "json5",
                "async-lru", "jupyter-builder", "httpx"]  # fmt: skip
PORT = 8888
SERVICE = "colab-runtime"
TOKEN_FILE = "/etc/colab-runtime/token"
CONFIG_FILE = "/etc/colab-runtime/jupyter_server_config.py"
# HTTP status of a GET on the runtime, from the host itself (it listens on its loopback only).
HTTP_STATUS = (
    "import sys, urllib.error, urllib.request\n"
    "req = urllib.request.Request(sys.argv[1], headers=dict([sys.argv[2].split(': ', 1)] if sys.argv[2] else []))\n"
    "try:\n    print(urllib.request.urlopen(req, timeout=10).status)\n"
    "except urllib.error.HTTPError as err:\n    print(err.code)\n"
)
DISTRIBUTIONS = (
    "import importlib.metadata as m, json; print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))"
)


def http_status(host, path: str, header: str = "") -> int:
    return int(host.check_output("python3 -c %s %s %s", HTTP_STATUS, f"http://127.0.0.1:{PORT}{path}", header))


@pytest.fixture(scope="module")
def token(host) -> str:
    return host.file(TOKEN_FILE).content_string.strip()


@pytest.fixture(scope="module")
def installed(host) -> dict[str, str]:
    found = json.loads(host.check_output("%s -c %s", VENV_PYTHON, DISTRIBUTIONS))
    return {name.lower().replace("_", "-"): version for name, version in found.items()}


def test_service_active_and_enabled(host):
    service = host.service(SERVICE)
    assert service.is_running
    assert service.is_enabled
    assert service.systemd_properties["Restart"] == "always"


def test_listens_on_loopback_only(host):
    assert host.socket(f"tcp://127.0.0.1:{PORT}").is_listening
    listening = [s for s in host.socket.get_listening_sockets() if s.startswith("tcp://") and s.endswith(f":{PORT}")]
    assert listening == [f"tcp://127.0.0.1:{PORT}"]


def test_server_runs_as_unprivileged_user(host):
    user = host.user("colab")
    assert user.uid != 0
    assert user.shell == "/usr/sbin/nologin"
    properties = host.service(SERVICE).systemd_properties
    assert properties["User"] == "colab"
    # real, effective, saved and filesystem uid of the running server
    status = host.file(f"/proc/{properties['MainPID']}/status").content_string
    uids = next(line.split()[1:] for line in status.splitlines() if line.startswith("Uid:"))
    assert uids == [str(user.uid)] * 4


def test_token_file_is_private(host, token):
    token_file = host.file(TOKEN_FILE)
    assert token_file.user == "colab"
    assert token_file.mode == 0o600
    assert len(token) >= 32
    int(token, 16)  # hexadecimal


def test_config_content(host, token):
    config = host.file(CONFIG_FILE)
    assert config.user == "root"
    assert config.group == "colab"  # so that the service can read it
    assert config.mode == 0o640
    for line in (
        'c.ServerApp.ip = "127.0.0.1"',
        f"c.ServerApp.port = {PORT}",
        "c.ServerApp.port_retries = 0",
        "c.ServerApp.open_browser = False",
        'c.ServerApp.allow_origin = "https://colab.research.google.com"',
        "c.ServerApp.allow_credentials = True",
        "c.ServerApp.allow_unauthenticated_access = False",
        '"jupyter_http_over_ws": True',
        '"jupyterlab": False',
        "c.ColabRuntime.tcp_nodelay = True",
        'c.KernelManager.transport = "ipc"',
        "c.ColabRuntime.private_network_access = True",
        'c.ServerApp.root_dir = "/var/lib/colab-runtime/notebooks"',
    ):
        assert config.contains(line), line
    # The token lives only in the 0600 file, not in the group-readable config.
    assert token not in config.content_string


def test_api_answers_with_token_only(host, token):
    assert http_status(host, "/api/status", f"Authorization: token {token}") == 200
    assert http_status(host, "/api/status") == 403


def test_http_over_ws_extension_loaded(host):
    # A plain GET on the websocket route: 400 (upgrade required) when the extension is loaded;
    # 404 would mean jupyter_http_over_ws failed to import (e.g. distutils on Python >= 3.12).
    assert http_status(host, "/http_over_websocket") == 400


def test_hardening_keeps_gpu_devices_visible(host):
    properties = host.service(SERVICE).systemd_properties
    for prop in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "RestrictSUIDSGID", "ProtectKernelTunables",
                 "ProtectKernelModules"):  # fmt: skip
        assert properties[prop] == "yes", prop
    assert properties["ProtectSystem"] == "strict"
    assert properties["PrivateDevices"] == "no"
    assert properties["DevicePolicy"] == "auto"
    assert "/var/lib/colab-runtime" in properties["ReadWritePaths"]


def test_stack_matches_lock(host, installed):
    locked = {}
    for line in host.file(f"{PREFIX}/constraints.txt").content_string.splitlines():
        if "==" in line and not line.startswith("#"):
            name, _, rest = line.partition("==")
            locked.setdefault(name.strip().lower().replace("_", "-"), set()).add(rest.split(";")[0].strip())
    for name, version in installed.items():
        if name in locked:
            assert version in locked[name], (name, version)
    assert installed["jupyter-http-over-ws"] == "0.0.8"
    assert installed["jupyter-server"].startswith("2.")
    assert tuple(int(p) for p in installed["tornado"].split(".")[:2]) >= (6, 5)


def test_uv_is_the_pinned_binary(host):
    arch = host.system_info.arch
    pinned = ROLE_VARS["__colab_runtime_uv_wheel_pins"][UV_VERSION][arch]
    binary = host.file(f"{PREFIX}/uv-{UV_VERSION}/uv")
    assert host.check_output("%s --version", binary.path).startswith(f"uv {UV_VERSION} ")
    assert binary.mode == 0o755
    # The wheel the host's pip fetched, kept next to it, is the pinned one, and the binary is
    # exactly the one inside it.
    wheels = [f for f in host.file(PREFIX).listdir() if f.startswith(f"uv-{UV_VERSION}-") and f.endswith(".whl")]
    assert len(wheels) == 1, wheels
    wheel = host.file(f"{PREFIX}/{wheels[0]}")
    assert wheel.sha256sum == pinned
    inside = host.check_output(
        "python3 -c %s %s %s",
        "import hashlib, sys, zipfile; print(hashlib.sha256(zipfile.ZipFile(sys.argv[1]).read(sys.argv[2])).hexdigest())",
        wheel.path,
        f"uv-{UV_VERSION}.data/scripts/uv",
    )
    assert binary.sha256sum == inside


def apt_requested(host) -> list[str]:
    """The packages apt was asked to install on this host (its history's command lines)."""
    history = host.file("/var/log/apt/history.log")
    if not history.exists:
        return []
    return sorted(
        word.split("=")[0]
        for line in history.content_string.splitlines()
        if line.startswith("Commandline: ") and " install " in line
        for word in line.split(" install ", 1)[1].split()
        # Options and their values (-o Dpkg::Options::=--force-confdef) are not packages.
        if not word.startswith("-") and "::" not in word
    )


def test_no_installer_venv_and_only_pips_wheel_from_apt(host):
    # uv comes as a bare binary: no bootstrap venv with pip, no python3-venv; apt added only the
    # distribution's pip wheel that fetched uv (the image has no pip).
    assert "installer" not in host.file(PREFIX).listdir()
    assert not host.package("python3-venv").is_installed
    # python3-apt (and what it needs) is what Ansible's apt module installs for itself.
    requested = apt_requested(host)
    assert [p for p in requested if p != "python3-apt"] == ["python3-pip-whl"], requested


def test_web_ui_stack_not_installed(installed):
    assert [p for p in WEB_UI_STACK if p in installed] == []
    # jsonschema's optional IRI check (~1 s of every server start) is left out as well.
    assert "rfc3987-syntax" not in installed
    assert "lark" not in installed
    # What Colab needs is there.
    assert {"jupyter-server", "ipykernel", "jupyter-http-over-ws", "tornado", "setuptools"} <= set(installed)


KERNEL_DIR = "/var/lib/colab-runtime/kernel"


def unit_property(host, name: str) -> str:
    return host.check_output("systemctl show %s -p %s --value", SERVICE, name)


def test_kernel_env_owned_by_the_service_user_with_pip(host):
    current = f"{KERNEL_DIR}/current"
    env = host.check_output("readlink %s", current)
    assert env == host.check_output("realpath %s", current), "the link names the environment itself"
    assert env.startswith(f"{KERNEL_DIR}/envs/python3."), env
    for path in (env, f"{env}/bin", f"{env}/lib", f"{env}/bin/pip"):
        assert host.file(path).user == "colab", path
    out = host.check_output(
        "runuser -u colab -- %s -c %s", f"{current}/bin/python", "import ipykernel, pip, sys; print(sys.prefix, pip.__version__)"
    )
    assert out.split()[0] in (current, env)
    # The server's venv stays root's.
    assert host.file(f"{PREFIX}/venv/bin").user == "root"
    # Cell installs trust the same CA bundle as the role's own installs; no GPU here: no extra index.
    pip_conf = host.file(f"{env}/pip.conf").content_string
    assert "cert = /etc/ssl/certs/ca-certificates.crt" in pip_conf
    assert "index-url" not in pip_conf


def test_kernelspec_python3_is_the_kernel_env(host):
    spec_file = host.file(f"{PREFIX}/share/jupyter/kernels/python3/kernel.json")
    spec = json.loads(spec_file.content_string)
    assert spec["argv"] == [f"{KERNEL_DIR}/current/bin/python", "-m", "ipykernel_launcher", "-f", "{connection_file}",
                            "--Kernel._execute_sleep=0"]  # fmt: skip
    assert spec_file.user == "root"
    assert "c.KernelSpecManager.ensure_native_kernel = False" in host.file(CONFIG_FILE).content_string
    assert f"JUPYTER_PATH={PREFIX}/share/jupyter" in unit_property(host, "Environment").split()


def test_unit_path_leads_to_the_kernel_env(host):
    environment = unit_property(host, "Environment").split()
    path = next(e for e in environment if e.startswith("PATH="))[len("PATH="):].split(":")
    assert path[0] == f"{KERNEL_DIR}/current/bin"
    assert "/usr/bin" in path
    assert f"VIRTUAL_ENV={KERNEL_DIR}/current" in environment


def test_device_node_step_runs_as_root_before_the_server(host):
    # ExecStartPre=+ (flags=privileged): root, outside the sandbox, before ExecStart.
    pre = unit_property(host, "ExecStartPreEx")
    assert f"path={PREFIX}/gpu-device-nodes.sh" in pre and "flags=privileged" in pre
    assert "nvidia-persistenced.service" in unit_property(host, "After").split()
    assert unit_property(host, "MemoryDenyWriteExecute") == "no"
    # No GPU in the test host: the step skipped cleanly and the server started after it.
    journal = host.check_output("journalctl -u %s --no-pager -o cat", SERVICE)
    assert "gpu-device-nodes: no NVIDIA driver loaded, nothing to do" in journal
    assert host.service(SERVICE).is_running
