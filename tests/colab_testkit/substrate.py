"""Test substrate: a moto EC2 API and podman "remote hosts" running systemd and sshd.

Used by the pytest fixtures in tests/conftest.py and by the demo/bench scripts. Everything here
creates resources with the ``colab-test-`` name prefix and removes only what it created.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.server
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import types
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = ROOT / ".venv" / "bin"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
NAME_PREFIX = "colab-test-"
# Both are required on these VMs: crun cannot run in hybrid cgroup mode, and podman's default
# RLIMIT_NOFILE raise is not permitted.
PODMAN_RUN_FIXES = [
    "--runtime",
    "runc",
    "--ulimit",
    "nofile=20000:20000",
    "--ulimit",
    "nproc=32768:32768",
]


def tool(name: str) -> str:
    """Path of a command from the project's virtualenv, else from PATH."""
    candidate = VENV_BIN / name
    return str(candidate) if candidate.exists() else (shutil.which(name) or name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_tcp(host: str, port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")
        time.sleep(0.1)


def testhost_image(suite: str = "bookworm") -> str:
    """Image reference for a Debian test host (built or loaded from cache when missing)."""
    out = subprocess.run(
        [str(ROOT / "scripts" / "testhost-image.sh"), suite],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip().splitlines()[-1]


# --------------------------------------------------------------------------- moto
class MotoServer:
    """A moto_server process on a free loopback port."""

    def __init__(self, port: int | None = None, env: dict[str, str] | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        run_env = dict(os.environ)
        run_env.update(env or {})
        self.proc = subprocess.Popen(
            [tool("moto_server"), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=run_env,
        )
        wait_tcp("127.0.0.1", self.port, timeout=30)

    def reset(self) -> None:
        req = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST", data=b"")
        with urllib.request.urlopen(req, timeout=10):
            pass

    def stop(self) -> None:
        stop_process(self.proc)

    def client(self, service: str, region: str = "us-east-2"):
        """A boto3 client of this server (any service moto emulates: ec2, ssm, ...)."""
        return aws_client(service, self.url, region)

    def aws_env(self, region: str = "us-east-2") -> dict[str, str]:
        """Environment that points botocore (modules, inventory plugin, boto3) at this server."""
        return emulated_aws_env(self.url, region)


# --------------------------------------------------------------------------- hosts
class PodmanError(subprocess.CalledProcessError):
    """A failed podman command whose message carries podman's own reason (its stderr)."""

    def __str__(self) -> str:
        return f"{super().__str__()}: {(self.stderr or '').strip()}"


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    res = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise PodmanError(res.returncode, res.args, res.stdout, res.stderr)
    return res


@dataclass
class RemoteHost:
    """A podman container booted with systemd as PID 1 and sshd published on 127.0.0.1."""

    name: str
    image: str
    ssh_port: int
    key_path: Path
    user: str = "admin"
    published: dict[int, int] = field(default_factory=dict)

    # -- lifecycle
    @classmethod
    def start(
        cls,
        image: str,
        key_path: Path,
        name: str | None = None,
        ssh_port: int | None = None,
        extra_args: list[str] | None = None,
        user: str = "admin",
    ) -> RemoteHost:
        host = cls(
            name=name or f"{NAME_PREFIX}{uuid.uuid4().hex[:8]}",
            image=image,
            ssh_port=ssh_port or free_port(),
            key_path=key_path,
            user=user,
        )
        host.run_container(extra_args or [])
        host.provision_login()
        host.wait_ssh()
        return host

    def run_container(self, extra_args: list[str]) -> None:
        podman(
            "run", "-d", "--name", self.name, "--hostname", self.name,
            *PODMAN_RUN_FIXES,
            "--systemd=always",
            "--label", "colab-gpu-runtime.test=1",
            "--label", f"colab-gpu-runtime.test.pid={os.getpid()}",
            "-p", f"127.0.0.1:{self.ssh_port}:22",
            *extra_args,
            self.image, "/sbin/init",
        )  # fmt: skip
        self.wait_systemd()

    def wait_systemd(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            res = podman("exec", self.name, "systemctl", "is-system-running", check=False)
            state = res.stdout.strip()
            if state in ("running", "degraded"):
                return
            time.sleep(0.3)
        raise TimeoutError(f"{self.name}: systemd not running after {timeout}s (state {state!r})")

    def provision_login(self) -> None:
        """Create the cloud-image style login: a sudo user holding the test's public key."""
        pub = Path(str(self.key_path) + ".pub").read_text()
        script = f"""
set -e
id {self.user} >/dev/null 2>&1 || useradd -m -s /bin/bash {self.user}
install -d -m 700 -o {self.user} -g {self.user} /home/{self.user}/.ssh
printf '%s\\n' '{pub.strip()}' > /home/{self.user}/.ssh/authorized_keys
chown {self.user}:{self.user} /home/{self.user}/.ssh/authorized_keys
chmod 600 /home/{self.user}/.ssh/authorized_keys
echo '{self.user} ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/90-{self.user}
chmod 440 /etc/sudoers.d/90-{self.user}
"""
        self.exec("sh", "-c", script)
        # The test network intercepts TLS: give the host the controller's CA bundle, as a
        # company image would carry its proxy CA.
        if CA_BUNDLE.exists():
            podman("cp", str(CA_BUNDLE), f"{self.name}:/etc/ssl/certs/ca-certificates.crt")

    def wait_ssh(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = self.ssh("true", check=False)
            if last.returncode == 0:
                return
            time.sleep(0.3)
        raise TimeoutError(f"{self.name}: no SSH after {timeout}s: {last.stderr if last else ''}")

    def remove(self) -> None:
        podman("rm", "-f", "-t", "0", self.name, check=False)

    def state(self) -> str:
        return podman("inspect", "-f", "{{.State.Status}}", self.name).stdout.strip()

    def restart(self, attempts: int = 3, settle: float = 60) -> None:
        """Boot the host again (also one that is off). `podman restart` can fail half-way, e.g.
        when the host powers itself off meanwhile (its idle auto-stop): then wait until the
        container has settled in a state and restart it from there."""
        for attempt in range(1, attempts + 1):
            res = podman("restart", "-t", "5", self.name, check=False)
            if res.returncode == 0:
                break
            if attempt == attempts:
                raise PodmanError(res.returncode, res.args, res.stdout, res.stderr)
            deadline = time.monotonic() + settle
            while self.state() not in ("exited", "stopped", "running", "created"):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.name}: {self.state()!r} {settle}s after: {res.stderr.strip()}")
                time.sleep(0.3)
        self.wait_systemd()
        self.wait_ssh()

    # -- access
    def exec(self, *cmd: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        return podman("exec", self.name, *cmd, check=check, timeout=timeout)

    def ssh_options(self) -> list[str]:
        return [
            "-i", str(self.key_path),
            "-p", str(self.ssh_port),
            "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null",
            "-o", "LogLevel=ERROR",
            "-o", "BatchMode=yes",
            "-o", "ConnectTimeout=5",
        ]  # fmt: skip

    def ssh(self, *cmd: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["ssh", *self.ssh_options(), f"{self.user}@127.0.0.1", *cmd],
            check=check,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def inventory(self, hostname: str | None = None, group: str = "colab_gpu_hosts") -> dict:
        """A static inventory (as a dict) that reaches this host over SSH."""
        return {
            group: {
                "hosts": {
                    hostname or self.name: {
                        "ansible_host": "127.0.0.1",
                        "ansible_port": self.ssh_port,
                        "ansible_user": self.user,
                        "ansible_ssh_private_key_file": str(self.key_path),
                        "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
                    }
                }
            }
        }


def make_ssh_key(directory: Path) -> Path:
    key = directory / "id_ed25519"
    if not key.exists():
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "colab-gpu-runtime-test", "-f", str(key)],
            check=True,
        )
    return key


def remove_test_containers(include_own: bool = False) -> None:
    """Remove containers left behind by test runs that no longer exist (e.g. after a crash), and
    with include_own this run's own. Containers of another live test run are never touched.
    """
    res = podman("ps", "-a", "--filter", "label=colab-gpu-runtime.test=1", "--format", "json", check=False)
    for c in json.loads(res.stdout or "[]"):
        owner = (c.get("Labels") or {}).get("colab-gpu-runtime.test.pid", "")
        if owner.isdigit() and int(owner) == os.getpid():
            if not include_own:
                continue
        elif owner.isdigit() and pid_alive(int(owner)):
            continue
        for name in c.get("Names", []):
            if name.startswith(NAME_PREFIX):
                podman("rm", "-f", "-t", "0", name, check=False)


def ansible_env(extra: dict[str, str] | None = None, *, isolate_aws: bool = False) -> dict[str, str]:
    """This process's environment for an Ansible run from the project, plus ``extra``.

    With isolate_aws, none of the caller's AWS settings pass (credentials, profile, region,
    config files): only what ``extra`` gives is AWS.
    """
    env = dict(os.environ)
    if isolate_aws:
        env = {k: v for k, v in env.items() if not k.startswith("AWS_")}
        env["AWS_CONFIG_FILE"] = "/nonexistent/aws-config"
        env["AWS_SHARED_CREDENTIALS_FILE"] = "/nonexistent/aws-credentials"
    env["PATH"] = f"{VENV_BIN}:{env.get('PATH', '')}"
    env["ANSIBLE_CONFIG"] = str(ROOT / "ansible.cfg")
    env["ANSIBLE_FORCE_COLOR"] = "0"
    env["ANSIBLE_NOCOLOR"] = "1"
    # Tests never run on EC2: botocore must not probe instance metadata (169.254.169.254).
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    env.update(extra or {})
    return env


def ansible_playbook(
    *args: str,
    env: dict[str, str] | None = None,
    check: bool = False,
    timeout: float = 900,
    extra_vars: dict | None = None,
    isolate_aws: bool = False,
    capture: bool = True,
    root: Path | None = None,
) -> subprocess.CompletedProcess:
    """Run ansible-playbook from the project root, or from another checkout's root with that
    checkout's ansible.cfg: the one way the tests, the bench and the demo do.

    stdout and stderr are captured together, in order (``res.stdout``), unless capture is False
    (then they go to this process's terminal). ``extra_vars`` are passed as one JSON ``-e``;
    ``env`` and ``isolate_aws`` as in ansible_env().
    """
    vars_args = ("-e", json.dumps(extra_vars)) if extra_vars else ()
    res = subprocess.run(
        [tool("ansible-playbook"), *vars_args, *args],
        cwd=root or ROOT,
        env={**ansible_env(env, isolate_aws=isolate_aws), **({"ANSIBLE_CONFIG": str(root / "ansible.cfg")} if root else {})},
        stdout=subprocess.PIPE if capture else None,
        stderr=subprocess.STDOUT if capture else None,
        text=True,
        timeout=timeout,
    )
    if check and res.returncode != 0:
        raise AssertionError(f"ansible-playbook {' '.join(args)} failed:\n{(res.stdout or '')[-8000:]}")
    return res


def copy_checkout(dest: Path) -> Path:
    """The project's files (tracked and not ignored, as a fresh clone plus this work tree's
    changes) copied to dest: a checkout somewhere else, e.g. under a long path with a space."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT, check=True, capture_output=True
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


def flat(res: subprocess.CompletedProcess) -> str:
    """A run's output with Ansible's line wrapping undone (what message assertions search)."""
    return " ".join(res.stdout.split())


def tags(resource: dict) -> dict:
    """An AWS resource's tags as a dict."""
    return {t["Key"]: t["Value"] for t in resource.get("Tags", [])}


def cell(url: str, code: str = "print(6*7)", flow: str = "http_over_ws") -> str:
    """What a cell prints when executed through a runtime URL with the Colab protocol client."""
    from colab_client import ColabClient  # the role's module_utils: on the path of the test kit's users

    with ColabClient(url, None, flow=flow) as client:
        return client.execute(code).strip()


@dataclass
class TunnelState:
    """A tunnel state directory (colab_tunnel_state_dir): each runtime's URL and supervisor pid by alias."""

    path: Path

    def url(self, alias: str) -> str:
        return (self.path / f"{alias}.url").read_text().strip()

    def pid(self, alias: str) -> int:
        return int((self.path / f"{alias}-tunnel.pid").read_text())

    def port(self, alias: str) -> int:
        return int((self.path / f"{alias}.port").read_text())


def play_recap(output: str) -> dict[str, dict[str, int]]:
    """Parse PLAY RECAP lines into {host: {ok, changed, failed, ...}}."""
    recap: dict[str, dict[str, int]] = {}
    in_recap = False
    for line in output.splitlines():
        if line.startswith("PLAY RECAP"):
            in_recap = True
            continue
        if in_recap and ":" in line and "=" in line:
            host, _, stats = line.partition(":")
            recap[host.strip()] = {k: int(v) for k, v in (kv.split("=") for kv in stats.split())}
    return recap


def http_get(url: str, timeout: float = 5.0, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    except OSError:  # refused, reset, timed out: no HTTP answer at all
        return 0, b""


@contextlib.contextmanager
def text_server(answer: str, host: str = "127.0.0.1"):
    """An HTTP server on ``host`` that answers every GET with ``answer`` (text/plain); yields its URL.

    The stand-in for a "what is my IP" service, or for a proxy that answers with its own address.
    """

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - name fixed by BaseHTTPRequestHandler
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(answer.encode())

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer((host, 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://{host}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# --------------------------------------------------------------------------- EC2 emulation overlay
def emulated_aws_env(endpoint_url: str, region: str = "us-east-2") -> dict[str, str]:
    """AWS settings that point botocore (modules, inventory plugin, boto3) at an emulated account."""
    return {
        "AWS_ENDPOINT_URL": endpoint_url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
    }


def ec2_env(moto_url: str, owner: str, region: str = "us-east-2") -> dict[str, str]:
    """Environment for site.yml against the emulated EC2 API: the endpoint is the only difference."""
    return ansible_env({**emulated_aws_env(moto_url, region), "COLAB_OWNER": owner})


# AWS reserves /aws/... parameter names, so the emulated account publishes its Deep Learning AMI
# under a name of its own and the overlay points ec2_gpu_host_ami_ssm_parameter at it.
EMULATED_DLAMI_PARAMETER = "/colab-emulated/deeplearning/ubuntu/ami-id"


def seed_emulated_account(moto_url: str, region: str = "us-east-2", parameter: str = EMULATED_DLAMI_PARAMETER) -> str:
    """Publish the emulated Deep Learning AMI (Ubuntu) under ``parameter``, the way AWS publishes the real one."""
    images = aws_client("ec2", moto_url, region).describe_images(
        Filters=[{"Name": "name", "Values": ["Deep Learning AMI Ubuntu*"]}]
    )
    image_id = images["Images"][0]["ImageId"]
    aws_client("ssm", moto_url, region).put_parameter(Name=parameter, Value=image_id, Type="String", Overwrite=True)
    return image_id


def write_ec2_overlay(
    directory: Path,
    host_name: str,
    ssh_port: int,
    key: Path,
    owner: str,
    region: str = "us-east-2",
    extra_vars: dict | None = None,
) -> Path:
    """A second inventory source: maps the emulated instance onto a local container's SSH address.

    The playbooks run unchanged; this only supplies what a real account and a real GPU would:
    the instance's reachable address, the key pair's public key, the caller's CIDR and a host
    without a GPU. ``extra_vars`` are further settings of the caller (a port, a state dir).
    """
    (directory / "group_vars").mkdir(parents=True, exist_ok=True)
    (directory / "hosts.yml").write_text(
        f"""# The emulated instance {host_name} is reached at this container's SSH port.
all:
  hosts:
    {host_name}:
      ansible_host: 127.0.0.1
      ansible_port: {ssh_port}
      ansible_ssh_private_key_file: {key}
      ansible_ssh_common_args: -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
"""
    )
    (directory / "group_vars" / "all.yml").write_text(
        f"""---
# Emulated account: the caller's CIDR cannot be detected offline, the key pair imports the local
# key, and the stand-in host has no GPU.
ec2_gpu_host_region: {region}
ec2_gpu_host_owner: {owner}
ec2_gpu_host_ssh_private_key_file: {key}
ec2_gpu_host_ssh_cidr: 127.0.0.1/32
ec2_gpu_host_ami_ssm_parameter: {EMULATED_DLAMI_PARAMETER}
nvidia_gpu_required: false
# Kernels get ipykernel and pip only: Colab's full package set is several GB.
colab_runtime_kernel_package_set: minimal
"""
        + (yaml.safe_dump(extra_vars, default_flow_style=False) if extra_vars else "")
    )
    return directory


# tests/aws_hooks/sitecustomize.py, loaded by every Python process of a run given it on
# PYTHONPATH: injected EC2 faults and a log of every AWS API call.
AWS_HOOKS = ROOT / "tests" / "aws_hooks"


class AwsCallLog:
    """The AWS API calls of the runs given env(), counted per operation (e.g. ``ec2:DescribeInstances``)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def env(self) -> dict[str, str]:
        pythonpath = os.pathsep.join(p for p in (str(AWS_HOOKS), os.environ.get("PYTHONPATH", "")) if p)
        return {"PYTHONPATH": pythonpath, "COLAB_TEST_AWS_CALL_LOG": str(self.path)}

    def take(self) -> dict[str, int]:
        """The calls logged since the last take, per operation; the log starts over."""
        calls: dict[str, int] = {}
        with contextlib.suppress(FileNotFoundError):
            for line in self.path.read_text().splitlines():
                op = json.loads(line)
                key = f"{op['service']}:{op['operation']}"
                calls[key] = calls.get(key, 0) + 1
            self.path.unlink()
        return dict(sorted(calls.items()))


class EmulatedSite:
    """site.yml against the emulated EC2 API, with test hosts playing the instances.

    Each host gets an inventory overlay (write_ec2_overlay) that maps the instance of that name
    onto its container's SSH port; every run reads the project's inventory/ plus the overlays,
    from root (this checkout, or a copy of it given with copy_checkout), as the owner whose
    settings the overlays hold. The harness of the several-runtime tests and the bench's team phase.
    """

    def __init__(
        self, moto_url: str, hosts: dict[str, RemoteHost], workdir: Path, owner: str,
        region: str = "us-east-2", settings: dict | None = None, root: Path | None = None,
    ) -> None:  # fmt: skip
        self.moto_url, self.hosts, self.owner, self.region, self.root = moto_url, hosts, owner, region, root
        self.overlays = [
            write_ec2_overlay(workdir / name, name, host.ssh_port, host.key_path, owner, region, settings)
            for name, host in hosts.items()
        ]
        self.env = {**emulated_aws_env(moto_url, region), "COLAB_OWNER": owner}

    def run(self, playbook: str, *extra: str, timeout: float = 1500, env: dict | None = None) -> subprocess.CompletedProcess:
        args = ["-i", "inventory/"] + [a for overlay in self.overlays for a in ("-i", str(overlay))]
        return ansible_playbook(*args, playbook, *extra, env={**self.env, **(env or {})}, root=self.root, timeout=timeout)

    def ec2(self):
        return aws_client("ec2", self.moto_url, self.region)

    def instances(self, owner: str | None = None) -> dict[str, dict]:
        """The instances that are not terminated, by Name: every owner's, or owner's only."""
        filters = [{"Name": "tag:colab-gpu-runtime:owner", "Values": [owner]}] if owner else []
        res = self.ec2().describe_instances(Filters=filters)
        found = [i for r in res["Reservations"] for i in r["Instances"] if i["State"]["Name"] != "terminated"]
        return {tags(i)["Name"]: i for i in found}


# --------------------------------------------------------------------------- role code under test
def load_role_file(role: str, relative: str, name: str | None = None) -> types.ModuleType:
    """Import a role's Python file (a module in library/, a script in files/) for a unit test.

    Role code is not an importable package: Ansible ships library/ modules to hosts one by one
    and files/ scripts are copied as they are, so each is loaded from its own path.
    """
    path = ROOT / "roles" / role / relative
    return load_file(path, name or f"{role}_{path.stem}")


def load_file(path: Path, name: str) -> types.ModuleType:
    """Import the Python file at path as module name (role files, the bench's own modules)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses (e.g. in module_utils/colab_client.py) look their module up
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------- processes and AWS clients
# The controller's process helpers (alive, command line, parent, start time) have one home, the
# colab_tunnel role's module_utils, which its action plugins load too.
colab_process = load_role_file("colab_tunnel", "module_utils/colab_process.py", "colab_process")
pid_alive = colab_process.pid_alive


def stop_process(proc: subprocess.Popen, timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` s: a process blocked on exit (an ssh whose host went
    away flushes into a dead connection) still goes, and the caller gets to report its own result."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


def aws_client(service: str, endpoint_url: str, region: str = "us-east-2"):
    """A boto3 client of the emulated account (moto accepts any credentials; these are fixed)."""
    import boto3  # only the AWS tests pay for importing it

    return boto3.client(
        service,
        endpoint_url=endpoint_url,
        region_name=region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


# --------------------------------------------------------------------------- a converged runtime
RUNTIME_IMAGE = "localhost/colab-test-runtime"
RUNTIME_TOKEN_FILE = "/etc/colab-runtime/token"


def role_digest(role: Path) -> str:
    """The role's files as the hosts get them, by converge_state's own tree digest: bytecode
    caches are left out (Python writes them beside role files as tests import those, with the
    checkout's mtimes inside, so every fresh clone would otherwise rebuild the image)."""
    return load_role_file("converge_state", "lookup_plugins/converge_state_digest.py").tree_digest(str(role))


def runtime_image(base_image: str, key_path: Path, workdir: Path) -> str:
    """A test-host image with the project's Jupyter runtime (roles/colab_runtime, its defaults)
    converged on it: the starting point of every test that needs a runtime but does not test
    its installation (Molecule's colab_runtime scenario and the end-to-end site.yml run do).

    Built once per version of the role and kept: installing the stack takes minutes here. The
    build's verbose output must not hold the token the role generated, checked once per version
    of the role like everything else the image stands for.
    """
    tag = hashlib.sha256((base_image + role_digest(ROOT / "roles" / "colab_runtime")).encode()).hexdigest()[:12]
    ref = f"{RUNTIME_IMAGE}:{tag}"
    # Test runs in parallel (pytest-xdist workers, other checkouts) wait for one build instead of
    # each converging its own copy on the same cores.
    lock = Path(os.environ.get("XDG_RUNTIME_DIR") or "/tmp") / f"colab-gpu-runtime-image-{os.getuid()}.lock"
    with open(lock, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        if podman("image", "exists", ref, check=False).returncode == 0:
            return ref
        return _build_runtime_image(ref, base_image, key_path, workdir)


def _build_runtime_image(ref: str, base_image: str, key_path: Path, workdir: Path) -> str:
    host = RemoteHost.start(image=base_image, key_path=key_path, name=f"colab-runtime-build-{uuid.uuid4().hex[:6]}")
    try:
        inventory = workdir / "runtime-hosts.yml"
        inventory.write_text(yaml.safe_dump({"all": {"children": host.inventory("runtime")}}))
        playbook = workdir / "runtime.yml"
        # The minimal kernel package set: Colab's full set is several GB and not what tests are about.
        play = {
            "name": "Jupyter runtime", "hosts": "colab_gpu_hosts", "become": True, "roles": ["colab_runtime"],
            "vars": {"colab_runtime_kernel_package_set": "minimal"},
        }  # fmt: skip
        playbook.write_text(yaml.safe_dump([play]))
        res = ansible_playbook("-v", "-i", str(inventory), str(playbook), check=True, timeout=1200)
        token = host.exec("cat", RUNTIME_TOKEN_FILE).stdout.strip()
        if not token or token in res.stdout:
            raise AssertionError(f"the runtime's token is missing or was logged by its converge:\n{res.stdout[-4000:]}")
        podman("commit", "-q", host.name, ref, timeout=300)
    finally:
        host.remove()
    # Only the newest build is worth its disk space.
    listed = podman("images", "--format", "{{.Repository}}:{{.Tag}}", "--filter", f"reference={RUNTIME_IMAGE}")
    for old in set(listed.stdout.split()) - {ref}:
        podman("rmi", old, check=False)
    return ref
