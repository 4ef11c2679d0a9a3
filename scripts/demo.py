#!/usr/bin/env python3
"""`make demo` / `make demo-down`: site.yml against an emulated EC2 API and a local "GPU host".

    scripts/demo.py up     start moto + a podman host with sshd, run site.yml, check the URL
    scripts/demo.py down   stop the tunnel, terminate the emulated instance, remove everything

The playbooks run unchanged: the emulated API is reached through AWS_ENDPOINT_URL, and a second
inventory source (.demo/inventory) maps the instance's inventory name onto the container's SSH
address. The container has no GPU, so the overlay sets nvidia_gpu_required: false.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

from colab_testkit.substrate import (
    ROOT,
    RemoteHost,
    ansible_playbook,
    ec2_env,
    free_port,
    http_get,
    make_ssh_key,
    pid_alive,
    podman,
    seed_emulated_account,
    testhost_image,
    tool,
    wait_tcp,
    write_ec2_overlay,
)

DEMO = ROOT / ".demo"
STATE = DEMO / "state.json"
CONTAINER = "colab-demo-gpu-host"
OWNER = "demo"
REGION = "us-east-2"
HOST_NAME = f"colab-gpu-runtime-{OWNER}"


def load_state() -> dict:
    return json.loads(STATE.read_text()) if STATE.exists() else {}


def save_state(state: dict) -> None:
    DEMO.mkdir(exist_ok=True)
    STATE.write_text(json.dumps(state, indent=2))


def ensure_moto(state: dict) -> str:
    if pid_alive(state.get("moto_pid")):
        return f"http://127.0.0.1:{state['moto_port']}"
    port = free_port()
    with open(DEMO / "moto.log", "ab") as log:
        proc = subprocess.Popen(
            [tool("moto_server"), "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    wait_tcp("127.0.0.1", port, timeout=30)
    state.update(moto_pid=proc.pid, moto_port=port)
    save_state(state)
    return f"http://127.0.0.1:{port}"


def ensure_host(state: dict, key: Path) -> int:
    inspect = podman("inspect", CONTAINER, "--format", "{{.State.Running}}", check=False)
    if inspect.returncode == 0 and state.get("ssh_port"):
        host = RemoteHost(CONTAINER, "", state["ssh_port"], key, user="ubuntu")
        if inspect.stdout.strip() != "true":
            podman("start", CONTAINER)
            host.wait_systemd()
        host.wait_ssh()
        return state["ssh_port"]
    podman("rm", "-f", "-t", "0", CONTAINER, check=False)
    # The login user a Deep Learning AMI (Ubuntu) has, as the inventory expects from the AMI family.
    host = RemoteHost.start(image=testhost_image("bookworm"), key_path=key, name=CONTAINER, user="ubuntu")
    state.update(ssh_port=host.ssh_port)
    save_state(state)
    return host.ssh_port


def run_playbook(args: list[str], env: dict[str, str]) -> int:
    """ansible-playbook with the project's and the demo's inventories, its output on the terminal."""
    args = ["-i", "inventory/", "-i", str(DEMO / "inventory"), *args]
    print("+ ansible-playbook", " ".join(args), flush=True)
    return ansible_playbook(*args, env=env, capture=False, timeout=3600).returncode


def up() -> int:
    started = time.monotonic()
    DEMO.mkdir(exist_ok=True)
    state = load_state()
    key = make_ssh_key(DEMO)
    moto_url = ensure_moto(state)
    seed_emulated_account(moto_url, REGION)
    ssh_port = ensure_host(state, key)
    write_ec2_overlay(DEMO / "inventory", HOST_NAME, ssh_port, key, OWNER, REGION)
    rc = run_playbook(["site.yml"], ec2_env(moto_url, OWNER, REGION))
    if rc != 0:
        print(f"demo: site.yml failed (rc={rc}); `make demo-down` removes everything", file=sys.stderr)
        return rc
    # The URL the play printed must answer from this machine, with its token, through the tunnel.
    url = (ROOT / ".colab" / f"{HOST_NAME}.url").read_text().strip()
    parsed = urllib.parse.urlparse(url)
    status, _ = http_get(f"{parsed.scheme}://{parsed.netloc}/api/status?{parsed.query}")
    print(f"demo: {parsed.scheme}://{parsed.netloc}/api/status?token=... -> HTTP {status}")
    if status != 200:
        return 1
    print(f"demo: ready in {time.monotonic() - started:.0f}s. Stop everything with: make demo-down")
    return 0


def down() -> int:
    state = load_state()
    if pid_alive(state.get("moto_pid")) and (DEMO / "inventory").exists():
        env = ec2_env(f"http://127.0.0.1:{state['moto_port']}", OWNER, REGION)
        run_playbook(["playbooks/connect.yml", "-e", "colab_tunnel_state=stopped"], env)
        run_playbook(["playbooks/teardown.yml", "-e", "ec2_gpu_host_terminate=yes"], env)
    podman("rm", "-f", "-t", "0", CONTAINER, check=False)
    if pid_alive(state.get("moto_pid")):
        os.killpg(state["moto_pid"], signal.SIGTERM)
    for path in sorted(DEMO.rglob("*"), reverse=True):
        path.unlink() if path.is_file() or path.is_symlink() else path.rmdir()
    if DEMO.exists():
        DEMO.rmdir()
    print("demo: removed the tunnel, the emulated instance, the container and the emulated API")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in ("up", "down"):
        sys.exit("usage: scripts/demo.py up|down")
    sys.exit(up() if sys.argv[1] == "up" else down())
