"""Checks of a host converged with the colab_runtime role (role defaults).

Everything is read from the host in one round trip (each command through the Ansible
connection costs seconds), then asserted per concern.
"""

import base64
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
# What only the browser UI needs (Notebook 7 and what it brings): absent without colab_runtime_web_ui.
WEB_UI_STACK = ["notebook", "jupyterlab", "jupyterlab-server", "jupyter-lsp", "notebook-shim", "babel", "json5",
                "async-lru", "jupyter-builder", "httpx"]  # fmt: skip
PORT = 8888
SERVICE = "colab-runtime"
TOKEN_FILE = "/etc/colab-runtime/token"
CONFIG_FILE = "/etc/colab-runtime/jupyter_server_config.py"

PROBE = r"""
import hashlib, json, os, pwd, stat, subprocess, urllib.error, urllib.request, zipfile

def run(*cmd):
    return subprocess.run(cmd, capture_output=True, text=True).stdout.strip()

def status(headers, path="/api/status"):
    req = urllib.request.Request("http://127.0.0.1:%(port)d" + path, headers=headers)
    try:
        return urllib.request.urlopen(req, timeout=10).status
    except urllib.error.HTTPError as err:
        return err.code
    except OSError as err:
        return str(err)

props = ["ActiveState", "UnitFileState", "Restart", "MainPID", "User", "NoNewPrivileges",
         "ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices", "DevicePolicy",
         "RestrictSUIDSGID", "ProtectKernelTunables", "ProtectKernelModules", "ReadWritePaths",
         "ExecStartPreEx", "After", "Environment", "MemoryDenyWriteExecute"]
show = dict(line.split("=", 1) for line in run("systemctl", "show", "%(service)s",
            *("-p" + p for p in props)).splitlines())
pid = show["MainPID"]
uids = []
if pid != "0":
    with open("/proc/%%s/status" %% pid) as fh:
        uids = next(l.split()[1:] for l in fh if l.startswith("Uid:"))
def sha256(data):
    return hashlib.sha256(data).hexdigest()

def uv():
    binary = "%(prefix)s/uv-%(uv_version)s/uv"
    wheels = [f for f in os.listdir("%(prefix)s") if f.startswith("uv-%(uv_version)s-") and f.endswith(".whl")]
    out = {"version": run(binary, "--version"), "wheels": wheels,
           "binary_sha256": sha256(open(binary, "rb").read()), "mode": stat.S_IMODE(os.stat(binary).st_mode)}
    if len(wheels) == 1:
        wheel = "%(prefix)s/" + wheels[0]
        out["wheel_sha256"] = sha256(open(wheel, "rb").read())
        with zipfile.ZipFile(wheel) as archive:
            out["wheel_uv_sha256"] = sha256(archive.read("uv-%(uv_version)s.data/scripts/uv"))
    out["arch"] = os.uname().machine
    return out

def kernel_env():
    current = "/var/lib/colab-runtime/kernel/current"
    env = os.path.realpath(current)
    def owner(path):
        return pwd.getpwuid(os.stat(path).st_uid).pw_name
    as_user = subprocess.run(["runuser", "-u", "colab", "--", current + "/bin/python", "-c",
                              "import ipykernel, pip, sys; print(sys.prefix, pip.__version__)"],
                             capture_output=True, text=True)
    return {"link": os.readlink(current), "env": env, "owners": [owner(p) for p in (env, env + "/bin", env + "/lib")],
            "pip_owner": owner(env + "/bin/pip"), "as_user": [as_user.returncode, as_user.stdout.strip(), as_user.stderr[-500:]],
            "pip_conf": open(env + "/pip.conf").read(),
            "kernelspec": json.load(open("%(prefix)s/share/jupyter/kernels/python3/kernel.json")),
            "kernelspec_owner": owner("%(prefix)s/share/jupyter/kernels/python3/kernel.json"),
            "server_venv_owner": owner("/opt/colab-runtime/venv/bin")}

tok = os.stat("%(token)s")
token = open("%(token)s").read().strip()
cfg = os.stat("%(config)s")
user = pwd.getpwnam("colab")
print(json.dumps({
    "show": show,
    "uids": uids,
    "listeners": run("ss", "-Htln", "sport = :%(port)d"),
    "token": {"owner": pwd.getpwuid(tok.st_uid).pw_name, "mode": stat.S_IMODE(tok.st_mode), "value": token},
    "config": {"owner": pwd.getpwuid(cfg.st_uid).pw_name, "group": cfg.st_gid == user.pw_gid,
               "mode": stat.S_IMODE(cfg.st_mode), "text": open("%(config)s").read()},
    "user": {"uid": user.pw_uid, "shell": user.pw_shell, "home": user.pw_dir},
    "api": {"with_token": status({"Authorization": "token " + token}), "without": status({})},
    # A plain GET on a websocket route: 400 (upgrade required) when the extension is loaded.
    "http_over_ws": status({}, "/http_over_websocket"),
    "installed": json.loads(run("/opt/colab-runtime/venv/bin/python", "-c",
                  "import importlib.metadata as m, json; "
                  "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))")),
    "lock": open("/opt/colab-runtime/constraints.txt").read(),
    "prefix": sorted(os.listdir("%(prefix)s")),
    "uv": uv(),
    # The image has python3 and ca-certificates: apt must not have run (no package lists fetched).
    "apt_lists": sorted(f for f in os.listdir("/var/lib/apt/lists") if f not in ("lock", "partial")),
    "dpkg_python3_venv": run("dpkg-query", "--show", "--showformat=${db:Status-Status}", "python3-venv"),
    "kernel": kernel_env(),
    "journal": run("journalctl", "-u", "%(service)s", "--no-pager", "-o", "cat"),
}))
""" % {"port": PORT, "service": SERVICE, "token": TOKEN_FILE, "config": CONFIG_FILE, "prefix": PREFIX,
       "uv_version": UV_VERSION}  # fmt: skip


@pytest.fixture(scope="module")
def facts(host):
    encoded = base64.b64encode(PROBE.encode()).decode()
    out = host.check_output(f"echo {encoded} | base64 -d | python3 -")
    return json.loads(out)


def test_service_active_and_enabled(facts):
    assert facts["show"]["ActiveState"] == "active"
    assert facts["show"]["UnitFileState"] == "enabled"
    assert facts["show"]["Restart"] == "always"


def test_listens_on_loopback_only(facts):
    # ss -H: State Recv-Q Send-Q Local-Address:Port Peer-Address:Port
    local_addresses = [line.split()[3] for line in facts["listeners"].splitlines()]
    assert local_addresses == [f"127.0.0.1:{PORT}"], facts["listeners"]


def test_server_runs_as_unprivileged_user(facts):
    assert facts["show"]["User"] == "colab"
    assert facts["user"]["uid"] != 0
    assert facts["uids"] == [str(facts["user"]["uid"])] * 4  # real, effective, saved, fs
    assert facts["user"]["shell"] == "/usr/sbin/nologin"


def test_token_file_is_private(facts):
    token = facts["token"]
    assert token["owner"] == "colab"
    assert token["mode"] == 0o600
    assert len(token["value"]) >= 32
    int(token["value"], 16)  # hexadecimal


def test_config_content(facts):
    config = facts["config"]
    assert config["owner"] == "root"
    assert config["group"]  # group colab, so the service can read it
    assert config["mode"] == 0o640
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
        "c.ColabRuntime.private_network_access = True",
        'c.ServerApp.root_dir = "/var/lib/colab-runtime/notebooks"',
    ):
        assert line in config["text"], line
    # The token lives only in the 0600 file, not in the group-readable config.
    assert facts["token"]["value"] not in config["text"]


def test_api_answers_with_token_only(facts):
    assert facts["api"] == {"with_token": 200, "without": 403}


def test_http_over_ws_extension_loaded(facts):
    # 404 would mean jupyter_http_over_ws failed to import (e.g. distutils on Python >= 3.12).
    assert facts["http_over_ws"] == 400


def test_hardening_keeps_gpu_devices_visible(facts):
    show = facts["show"]
    for prop in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "RestrictSUIDSGID", "ProtectKernelTunables",
                 "ProtectKernelModules"):  # fmt: skip
        assert show[prop] == "yes", prop
    assert show["ProtectSystem"] == "strict"
    assert show["PrivateDevices"] == "no"
    assert show["DevicePolicy"] == "auto"
    assert "/var/lib/colab-runtime" in show["ReadWritePaths"]


def test_stack_matches_lock(facts):
    installed = {name.lower().replace("_", "-"): version for name, version in facts["installed"].items()}
    locked = {}
    for line in facts["lock"].splitlines():
        if "==" in line and not line.startswith("#"):
            name, _, rest = line.partition("==")
            locked.setdefault(name.strip().lower().replace("_", "-"), set()).add(rest.split(";")[0].strip())
    for name, version in installed.items():
        if name in locked:
            assert version in locked[name], (name, version)
    assert installed["jupyter-http-over-ws"] == "0.0.8"
    assert installed["jupyter-server"].startswith("2.")
    assert tuple(int(p) for p in installed["tornado"].split(".")[:2]) >= (6, 5)


def test_uv_is_the_pinned_binary(facts):
    uv = facts["uv"]
    pinned = ROLE_VARS["__colab_runtime_uv_wheels"][UV_VERSION][uv["arch"]]
    assert uv["version"].startswith(f"uv {UV_VERSION} "), uv["version"]
    # The wheel kept next to it is the pinned one, and the binary is exactly the one inside it.
    assert uv["wheels"] == [pinned["url"].rsplit("/", 1)[1]]
    assert uv["wheel_sha256"] == pinned["sha256"]
    assert uv["binary_sha256"] == uv["wheel_uv_sha256"]
    assert uv["mode"] == 0o755


def test_no_installer_venv_and_no_apt_run(facts):
    # uv comes as a bare binary: no bootstrap venv with pip, no python3-venv, no apt update.
    assert "installer" not in facts["prefix"]
    assert facts["dpkg_python3_venv"] != "installed"
    assert facts["apt_lists"] == []


def test_web_ui_stack_not_installed(facts):
    installed = {name.lower().replace("_", "-") for name in facts["installed"]}
    assert [p for p in WEB_UI_STACK if p in installed] == []
    # jsonschema's optional IRI check (~1 s of every server start) is left out as well.
    assert "rfc3987-syntax" not in installed
    assert "lark" not in installed
    # What Colab needs is there.
    assert {"jupyter-server", "ipykernel", "jupyter-http-over-ws", "tornado", "setuptools"} <= installed


KERNEL_DIR = "/var/lib/colab-runtime/kernel"


def test_kernel_env_owned_by_the_service_user_with_pip(facts):
    kernel = facts["kernel"]
    assert kernel["link"] == kernel["env"]
    assert kernel["env"].startswith(f"{KERNEL_DIR}/envs/python3."), kernel
    assert kernel["owners"] == ["colab"] * 3
    assert kernel["pip_owner"] == "colab"
    rc, out, err = kernel["as_user"]
    assert rc == 0, err
    assert out.split()[0] in (f"{KERNEL_DIR}/current", kernel["env"])
    # The server's venv stays root's.
    assert kernel["server_venv_owner"] == "root"
    # Cell installs trust the same CA bundle as the role's own installs; no GPU here: no PyTorch index.
    assert "cert = /etc/ssl/certs/ca-certificates.crt" in kernel["pip_conf"]
    assert "download.pytorch.org" not in kernel["pip_conf"]


def test_kernelspec_python3_is_the_kernel_env(facts):
    spec = facts["kernel"]["kernelspec"]
    assert spec["argv"][:3] == [f"{KERNEL_DIR}/current/bin/python", "-m", "ipykernel_launcher"]
    assert facts["kernel"]["kernelspec_owner"] == "root"
    assert "c.KernelSpecManager.ensure_native_kernel = False" in facts["config"]["text"]
    environment = facts["show"]["Environment"].split()
    assert f"JUPYTER_PATH={PREFIX}/share/jupyter" in environment


def test_unit_path_leads_to_the_kernel_env(facts):
    environment = facts["show"]["Environment"].split()
    path = next(e for e in environment if e.startswith("PATH="))[len("PATH="):].split(":")
    assert path[0] == f"{KERNEL_DIR}/current/bin"
    assert "/usr/bin" in path
    assert f"VIRTUAL_ENV={KERNEL_DIR}/current" in environment


def test_device_node_step_runs_as_root_before_the_server(facts):
    show = facts["show"]
    # ExecStartPre=+ (flags=privileged): root, outside the sandbox, before ExecStart.
    assert f"path={PREFIX}/gpu-device-nodes.sh" in show["ExecStartPreEx"]
    assert "flags=privileged" in show["ExecStartPreEx"]
    assert "nvidia-persistenced.service" in show["After"].split()
    assert show["MemoryDenyWriteExecute"] == "no"
    # No GPU in the test host: the step skipped cleanly and the server started after it.
    assert "gpu-device-nodes: no NVIDIA driver loaded, nothing to do" in facts["journal"]
    assert show["ActiveState"] == "active"
