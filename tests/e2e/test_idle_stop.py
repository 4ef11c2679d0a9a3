"""idle_stop end to end: test hosts really power off when idle, and stay up while they are used.

Each case runs on its own podman host (systemd as PID 1, sshd, roles/colab_runtime) with a
short limit; all cases run at the same time, so the module takes about as long as the slowest
case (two limits), not the sum. A host "powers off" when its container exits: `systemctl
poweroff` inside ends systemd, PID 1.

Cases (one host each):
  idle       nothing but a forgotten Colab tunnel (an SSH session WITHOUT a terminal): stops
             at boot + limit, not before.
  cell       a cell runs with no browser attached: stays up past the limit ("kernel busy");
             interrupted, it stops one limit later.
  notebook   an open kernel websocket (a notebook tab) with an idle kernel: stays up ("open
             kernel connection"); closed, it stops one limit later.
  shell      a terminal login that types: stays up ("input on admin@pts/N"); once the typing
             stops, the terminal gets the warning and the host stops.
  tty        idle_stop_count_idle_tty_sessions=true and an idle `ssh -tt ... sleep`: stays up
             ("tty session"); logged out, it stops.
  disabled   limit 0 after the timer was installed: timer gone, never stops.
  shell13    the shell case on Debian 13 (no utmp there), without Jupyter.
  gpu        a GPU busy above the threshold (an nvidia-smi test double): stays up ("gpu 0 at
             97%"); once it reads 0 %, it stops one limit later.
  cpu        a `!nohup python3 prep.py &` job started from a notebook cell, the tab closed, the
             kernel idle, no GPU: stays up ("cpu NN% of a core"); once the job ends, it stops one
             limit later.
  onprem     no idle_stop_enabled and not an EC2 instance of the project: the platform default
             is off, said in one summary line; no timer, never stops.

The idle case is an EC2 instance of the project as far as the role can tell (the inventory gives
it an instance id), so its auto-stop is on by default; the others turn it on with
idle_stop_enabled. Only the hosts the selected tests need are started (`-k cpu` starts one).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import re
import subprocess
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from colab_testkit import substrate
import websocket
import yaml
from colab_client import COLAB_ORIGIN, ColabClient
from colab_testkit.substrate import RemoteHost, ansible_playbook, free_port, podman, runtime_image, stop_process, wait_tcp

# Above the Jupyter start-up time of eight test hosts booting at once on a loaded 2-core machine.
LIMIT = 45  # idle_stop_limit_seconds
WARNING = 20  # idle_stop_warning_seconds
INTERVAL = 5  # idle_stop_check_interval_seconds
# Allowance beyond a due time: the next timer run, Python start-up and a loaded 2-core machine.
SLACK = INTERVAL + 15
# How long a powering-off host may take to exit (stopping Jupyter and the kernels).
SHUTDOWN = 60
# A terminal's atime (its last input) moves in steps of 8 s (the kernel's tty_update_time).
TTY_ATIME_STEP = 8
JUPYTER_PORT = 8888
# A kernel's first websocket waits for the kernel to answer; ten hosts on 2 loaded cores: minutes.
LOADED_TIMEOUT = 180
TOKEN_FILE = "/etc/colab-runtime/token"
# Not "colab-test-": other test modules remove those at session start, even while this runs.
HOST_PREFIX = "colab-idle-test-"
CASES = ("idle", "cell", "notebook", "shell", "tty", "disabled", "shell13", "gpu", "cpu", "onprem")
# Cases that need no Jupyter run on the plain test-host image of their Debian release.
PLAIN_HOSTS = {"shell13": "trixie", "gpu": "bookworm", "onprem": "bookworm"}
STATUS_FILE = "/var/lib/idle-stop/status"
NOTEBOOK_DIR = "/var/lib/colab-runtime/notebooks"
# The notebook user's background job: 30 ms of CPU time, then 70 ms of sleep, until it is
# killed: gentle on a shared 2-core machine, yet far above the 5% threshold even when that
# machine is so crowded that 30 ms of CPU take 150 ms (a wall-clock duty cycle measured 3% there).
PREP_PY = """import time
while True:
    busy_until = time.process_time() + 0.03
    while time.process_time() < busy_until:
        pass
    time.sleep(0.07)
"""

# Test double for nvidia-smi: answers only the query idle_stop makes, with the utilisation the
# test writes to /var/lib/nvidia-smi-test-double (one "index, percent" line per GPU; not in /run,
# which the reboot empties).
NVIDIA_SMI_TEST_DOUBLE = r"""#!/bin/sh
# nvidia-smi TEST DOUBLE installed by tests/e2e/test_idle_stop.py; not NVIDIA's tool.
[ "$*" = "--query-gpu=index,utilization.gpu --format=csv,noheader,nounits" ] || {
  echo "nvidia-smi test double: unexpected arguments: $*" >&2; exit 2; }
cat /var/lib/nvidia-smi-test-double
"""



# --------------------------------------------------------------------------- host plumbing
def container_state(host: RemoteHost) -> str:
    res = podman("inspect", "-f", "{{.State.Status}}", host.name, check=False)
    return res.stdout.strip()


def container_started_at(host: RemoteHost) -> float:
    res = podman("inspect", "-f", "{{.State.StartedAt.UnixMilli}}", host.name)
    return int(res.stdout.strip()) / 1000


class Watch:
    """Follows a host's idle-stop journal lines and notices when the container exits."""

    def __init__(self, host: RemoteHost) -> None:
        self.host = host
        self.lines: list[tuple[float, str]] = []
        self.stopped_at: float | None = None
        self._journal = subprocess.Popen(
            ["podman", "exec", host.name, "journalctl", "-b", "-f", "-n", "all", "-t", "idle-stop",
             "-o", "short-unix", "--no-pager"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        self._wait = subprocess.Popen(
            ["podman", "wait", host.name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self._threads = [
            threading.Thread(target=self._read, daemon=True),
            threading.Thread(target=self._waiter, daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _read(self) -> None:
        assert self._journal.stdout is not None
        for raw in self._journal.stdout:
            stamp, _, rest = raw.partition(" ")
            _, sep, message = rest.partition("idle_stop: ")
            if sep:
                self.lines.append((float(stamp), message.strip()))

    def _waiter(self) -> None:
        self._wait.wait()
        self.stopped_at = time.time()

    def running(self) -> bool:
        return self.stopped_at is None and container_state(self.host) == "running"

    def wait_stopped(self, until: float) -> float | None:
        while self.stopped_at is None and time.time() < until:
            time.sleep(0.5)
        return self.stopped_at

    def close(self) -> None:
        for proc in (self._journal, self._wait):
            stop_process(proc, timeout=5)


def sleep_until(deadline: float) -> None:
    while (left := deadline - time.time()) > 0:
        time.sleep(min(left, 1.0))


@contextlib.contextmanager
def colab_tunnel(host: RemoteHost):
    """The project's tunnel: a port forward riding on a session that runs a command, no terminal."""
    port = free_port()
    proc = subprocess.Popen(
        ["ssh", *host.ssh_options(), "-o", "ExitOnForwardFailure=yes",
         "-L", f"127.0.0.1:{port}:127.0.0.1:{JUPYTER_PORT}", f"{host.user}@127.0.0.1", "exec sleep infinity"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_tcp("127.0.0.1", port, timeout=30)
        yield f"http://127.0.0.1:{port}"
    finally:
        # ssh flushes its output before exiting on SIGTERM; if the host went away meanwhile (a
        # powered-off container drops packets) that can block: stop_process kills it then.
        stop_process(proc)


def wait_jupyter(url: str, token: str, timeout: float = 60) -> None:
    """Until the server answers /api/status (which, unlike other calls, counts as no activity)."""
    deadline = time.time() + timeout
    while True:
        client = ColabClient(url, token, flow="direct", timeout=5)
        with contextlib.suppress(OSError):
            if client.request("GET", "/api/status").status == 200:
                return
        if time.time() > deadline:
            raise TimeoutError(f"no Jupyter answer at {url} after {timeout}s")
        time.sleep(0.5)


def start_cell_and_leave(url: str, token: str, kernel_id: str, code: str) -> float:
    """Start a cell, wait until the kernel reports busy, then close the websocket (tab closed)."""
    ws_url = url.replace("http://", "ws://", 1)
    query = urllib.parse.urlencode({"session_id": uuid.uuid4().hex, "token": token})
    ws = websocket.create_connection(
        f"{ws_url}/api/kernels/{kernel_id}/channels?{query}", origin=COLAB_ORIGIN, timeout=30
    )
    try:
        msg_id = uuid.uuid4().hex
        header = {"msg_id": msg_id, "msg_type": "execute_request", "username": "test", "session": uuid.uuid4().hex,
                  "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "version": "5.3"}  # fmt: skip
        content = {"code": code, "silent": False, "store_history": False, "user_expressions": {}, "allow_stdin": False}
        ws.send(json.dumps({"header": header, "parent_header": {}, "metadata": {}, "content": content,
                            "channel": "shell", "buffers": []}))  # fmt: skip
        deadline = time.time() + 30
        while time.time() < deadline:
            msg = json.loads(ws.recv())
            if (
                msg.get("parent_header", {}).get("msg_id") == msg_id
                and msg["header"]["msg_type"] == "status"
                and msg["content"]["execution_state"] == "busy"
            ):
                return time.time()
        raise TimeoutError("the kernel never reported busy")
    finally:
        ws.close()


class Terminal:
    """An interactive SSH login with a terminal (ssh -tt); its output is collected."""

    def __init__(self, host: RemoteHost, *command: str) -> None:
        self.proc = subprocess.Popen(
            ["ssh", "-tt", *host.ssh_options(), f"{host.user}@127.0.0.1", *command],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.output = bytearray()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        while chunk := self.proc.stdout.read1(4096):
            self.output += chunk

    def type(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode())
        self.proc.stdin.flush()

    def close(self) -> None:
        stop_process(self.proc)

    @property
    def text(self) -> str:
        return self.output.decode(errors="replace")


# --------------------------------------------------------------------------- the cases
@dataclass
class Outcome:
    """What one case observed; the tests below judge it."""

    boot: float = 0.0
    marks: dict[str, float] = field(default_factory=dict)
    running_at_checkpoint: bool | None = None
    stopped_at: float | None = None
    lines: list[tuple[float, str]] = field(default_factory=list)
    extra: dict[str, object] = field(default_factory=dict)
    error: BaseException | None = None

    def lines_between(self, start: float, end: float = float("inf")) -> list[str]:
        return [text for stamp, text in self.lines if start <= stamp <= end]


def case_idle(host: RemoteHost, watch: Watch, out: Outcome, token: str) -> None:
    with colab_tunnel(host) as url:
        wait_jupyter(url, token)
        # Jupyter's own start counts as activity: the idle time runs from when it answered.
        out.marks["active"] = time.time()
        out.stopped_at = watch.wait_stopped(out.marks["active"] + LIMIT + SLACK + SHUTDOWN)


def case_cell(host: RemoteHost, watch: Watch, out: Outcome, token: str) -> None:
    with colab_tunnel(host) as url:
        wait_jupyter(url, token)
        client = ColabClient(url, token, flow="direct")
        kernel_id = client.start_kernel()
        out.extra["kernel"] = kernel_id
        out.marks["active"] = start_cell_and_leave(url, token, kernel_id, f"import time; time.sleep({4 * LIMIT})")
        sleep_until(out.marks["active"] + LIMIT + 2 * INTERVAL)
        out.running_at_checkpoint = watch.running()
        out.marks["release"] = time.time()
        out.extra["interrupt"] = client.request("POST", f"/api/kernels/{kernel_id}/interrupt").status
    out.stopped_at = watch.wait_stopped(out.marks["release"] + LIMIT + SLACK + SHUTDOWN)


def case_notebook(host: RemoteHost, watch: Watch, out: Outcome, token: str) -> None:
    with colab_tunnel(host) as url:
        wait_jupyter(url, token)
        client = ColabClient(url, token, flow="direct", timeout=LOADED_TIMEOUT)
        with client:
            out.extra["printed"] = client.execute("print(6 * 7)")
            out.extra["kernel"] = client.kernel_id
            out.marks["active"] = time.time()
            sleep_until(out.marks["active"] + LIMIT + 2 * INTERVAL)
            out.running_at_checkpoint = watch.running()
            # What the notebook's user sees with `!cat /var/lib/idle-stop/status` in a cell.
            out.extra["status"] = client.execute(f"print(open({STATUS_FILE!r}).read(), end='')")
            out.marks["release"] = time.time()
    out.stopped_at = watch.wait_stopped(out.marks["release"] + LIMIT + SLACK + SHUTDOWN)


def case_shell(host: RemoteHost, watch: Watch, out: Outcome, token: str) -> None:
    term = Terminal(host)
    try:
        out.marks["active"] = time.time()
        while time.time() < max(out.marks["active"], out.boot) + LIMIT + 2 * INTERVAL:
            term.type("true\n")
            out.marks["release"] = time.time()
            time.sleep(2)
        out.running_at_checkpoint = watch.running()
        out.stopped_at = watch.wait_stopped(out.marks["release"] + LIMIT + SLACK + SHUTDOWN)
    finally:
        out.extra["terminal"] = term.text
        term.close()


def case_tty(host: RemoteHost, watch: Watch, out: Outcome, token: str) -> None:
    term = Terminal(host, "sleep", "600")
    try:
        out.marks["active"] = time.time()
        sleep_until(max(out.marks["active"], out.boot) + LIMIT + 2 * INTERVAL)
        out.running_at_checkpoint = watch.running()
    finally:
        out.marks["release"] = time.time()
        term.close()
    out.stopped_at = watch.wait_stopped(out.marks["release"] + LIMIT + SLACK + SHUTDOWN)


def case_gpu(host: RemoteHost, watch: Watch, out: Outcome, token: str) -> None:
    out.marks["active"] = time.time()
    sleep_until(max(out.marks["active"], out.boot) + LIMIT + 2 * INTERVAL)
    out.running_at_checkpoint = watch.running()
    host.exec("sh", "-c", "printf '0, 0\\n' > /var/lib/nvidia-smi-test-double")
    out.marks["release"] = time.time()
    out.stopped_at = watch.wait_stopped(out.marks["release"] + LIMIT + SLACK + SHUTDOWN)


def case_cpu(host: RemoteHost, watch: Watch, out: Outcome, token: str) -> None:
    with colab_tunnel(host) as url:
        wait_jupyter(url, token)
        kernel_id = ColabClient(url, token, flow="direct", timeout=LOADED_TIMEOUT).start_kernel()
        # A tab on a kernel that stays when the tab closes, as Colab leaves it.
        with ColabClient(url, token, flow="direct", kernel_id=kernel_id, timeout=LOADED_TIMEOUT) as client:
            # `!` runs sh as the leader of a session on a pty: when sh exits at once, the hangup can
            # reach the job before nohup has set SIGHUP aside; the sleep lets nohup get there.
            client.execute(
                f"open('prep.py', 'w').write({PREP_PY!r})\n"
                "!nohup python3 prep.py > prep.log 2>&1 & echo $! > prep.pid; sleep 1"
            )
        out.marks["active"] = time.time()
    sleep_until(max(out.marks["active"], out.boot) + LIMIT + 2 * INTERVAL)
    out.running_at_checkpoint = watch.running()
    out.extra["status"] = host.exec("cat", STATUS_FILE).stdout
    host.exec("sh", "-c", f"kill $(cat {NOTEBOOK_DIR}/prep.pid)")
    out.marks["release"] = time.time()
    out.stopped_at = watch.wait_stopped(out.marks["release"] + LIMIT + SLACK + SHUTDOWN)


def case_disabled(host: RemoteHost, watch: Watch, out: Outcome, token: str) -> None:
    # More than twice the limit: an installed timer would have stopped the host by then.
    sleep_until(out.boot + 2 * LIMIT + 2 * INTERVAL + 10)
    out.running_at_checkpoint = watch.running()
    out.extra["timers"] = host.exec("systemctl", "list-timers", "--all", "--no-legend").stdout
    out.extra["files"] = host.exec("ls", "/etc/systemd/system", "/usr/local/lib", "/etc").stdout


DRIVERS = {
    "idle": case_idle,
    "cell": case_cell,
    "notebook": case_notebook,
    "shell": case_shell,
    "tty": case_tty,
    "disabled": case_disabled,
    "shell13": case_shell,
    "gpu": case_gpu,
    "cpu": case_cpu,
    "onprem": case_disabled,
}
# Every case turns the auto-stop on, except: idle (on by default as an EC2 instance of the
# project) and onprem (the platform default: off).
ON = {"idle_stop_enabled": True}
HOST_VARS = {
    "idle": {"ec2_gpu_host_instance_id": "i-0123456789abcdef0"},
    "onprem": {},
    "tty": {**ON, "idle_stop_count_idle_tty_sessions": True},
    # Installed with a long limit first, so that it cannot stop before its second run sets 0.
    "disabled": {**ON, "idle_stop_limit_seconds": 3600},
}


def converge(hosts: dict[str, RemoteHost], workdir: Path, extra_vars: dict | None = None, *args: str):
    inventory = {"all": {"children": {"colab_gpu_hosts": {"hosts": {}}}}}
    for case, host in hosts.items():
        entry = host.inventory(case)["colab_gpu_hosts"]["hosts"][case]
        entry.update(
            {
                "idle_stop_limit_seconds": LIMIT,
                "idle_stop_warning_seconds": WARNING,
                "idle_stop_check_interval_seconds": INTERVAL,
                **HOST_VARS.get(case, ON),
            }
        )
        inventory["all"]["children"]["colab_gpu_hosts"]["hosts"][case] = entry
    inv = workdir / f"hosts-{uuid.uuid4().hex[:6]}.yml"
    inv.write_text(yaml.safe_dump(inventory))
    playbook = workdir / "idle_stop.yml"
    playbook.write_text(
        yaml.safe_dump(
            [
                {
                    "name": "Idle auto-stop",
                    "hosts": "colab_gpu_hosts",
                    "become": True,
                    "gather_subset": ["min"],
                    "roles": ["idle_stop"],
                    "post_tasks": [
                        {"name": "Summary", "ansible.builtin.debug": {"msg": "SUMMARY {{ idle_stop_summary }}"}}
                    ],
                }
            ]
        )
    )
    cmd = ["-i", str(inv), str(playbook), *args]
    if extra_vars:
        cmd += ["-e", json.dumps(extra_vars)]
    # JSON results: the summary lines come out whole (the YAML format wraps long ones).
    return ansible_playbook(*cmd, env={"ANSIBLE_CALLBACK_RESULT_FORMAT": "json"}, timeout=600)


# --------------------------------------------------------------------------- the fleet
# The hosts each test reads (tests not listed need none).
CASES_OF_TEST = {
    "test_role_converges_and_a_second_run_disables": ("idle", "disabled"),
    "test_platform_default_is_on_for_the_projects_ec2_hosts_and_off_elsewhere": ("idle", "onprem"),
    "test_idle_host_with_a_forgotten_tunnel_powers_off_after_the_limit": ("idle",),
    "test_running_cell_without_a_browser_keeps_the_host_up": ("cell",),
    "test_open_notebook_connection_keeps_the_host_up": ("notebook",),
    "test_typing_in_a_terminal_keeps_the_host_up_and_an_idle_one_is_warned": ("shell", "shell13"),
    "test_counted_idle_tty_session_keeps_the_host_up_until_logout": ("tty",),
    "test_busy_gpu_keeps_the_host_up": ("gpu",),
    "test_notebook_users_cpu_job_keeps_the_host_up": ("cpu",),
    "test_limit_zero_removes_the_timer_and_never_stops": ("disabled",),
}


def selected_cases(session) -> tuple[str, ...]:
    wanted = {case for item in session.items for case in CASES_OF_TEST.get(item.originalname, ())}
    return tuple(case for case in CASES if case in wanted)


@pytest.fixture(scope="module")
def fleet(bookworm_image, ssh_key, tmp_path_factory, request):
    """Builds the hosts, installs idle_stop, reboots them and runs every selected case at once."""
    cases = selected_cases(request.session)
    workdir = tmp_path_factory.mktemp("idle_stop")
    t_start = time.time()
    image = runtime_image(bookworm_image, ssh_key, workdir)
    timings = {"image": time.time() - t_start}
    hosts: dict[str, RemoteHost] = {}
    watches: list[Watch] = []
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=len(cases))
    try:
        images = {case: substrate.testhost_image(PLAIN_HOSTS[case]) if case in PLAIN_HOSTS else image for case in cases}
        futures = {
            case: pool.submit(
                RemoteHost.start,
                image=images[case],
                key_path=ssh_key,
                name=f"{HOST_PREFIX}{case}-{uuid.uuid4().hex[:6]}",
            )
            for case in cases
        }
        for case, fut in futures.items():
            hosts[case] = fut.result()
        # The runtime image holds one token for all its hosts.
        runtime_hosts = [hosts[case] for case in cases if case not in PLAIN_HOSTS]
        token = runtime_hosts[0].exec("cat", TOKEN_FILE).stdout.strip() if runtime_hosts else ""
        if "gpu" in hosts:
            gpu = hosts["gpu"]
            gpu.exec("sh", "-c", f"cat > /usr/local/bin/nvidia-smi <<'EOF'\n{NVIDIA_SMI_TEST_DOUBLE}EOF\n")
            gpu.exec(
                "sh", "-c", "chmod 755 /usr/local/bin/nvidia-smi && printf '0, 97\\n' > /var/lib/nvidia-smi-test-double"
            )
        timings["hosts"] = time.time() - t_start

        first = converge(hosts, workdir)
        timings["converge"] = time.time() - t_start
        setup = {"first": first}
        if first.returncode != 0:
            yield {"setup": setup, "outcomes": {}, "timings": timings}
            return

        outcomes = {case: Outcome() for case in cases}

        def drive(case: str) -> None:
            out, host, watch = outcomes[case], hosts[case], None
            try:
                if case == "disabled":
                    setup["second"] = converge({case: host}, workdir, {"idle_stop_limit_seconds": 0})
                # A (re)boot: every case starts from a fresh boot, its timer started by systemd
                # itself. A host idle since the converge may have powered off already; `podman
                # restart` boots it again. Each case starts as soon as its own host is up.
                host.restart()
                out.boot = container_started_at(host)
                watch = Watch(host)
                watches.append(watch)
                DRIVERS[case](host, watch, out, token)
            except BaseException as err:  # reported by the case's test
                out.error = err
            finally:
                if watch is not None:
                    out.stopped_at = watch.stopped_at
                    out.lines = list(watch.lines)

        list(pool.map(drive, cases))
        timings["cases"] = time.time() - t_start
        print("\nidle_stop fleet timings (s since start):", {k: round(v, 1) for k, v in timings.items()})
        for case, out in outcomes.items():
            print(f"{case}: {show(out)}")
        yield {"setup": setup, "outcomes": outcomes, "timings": timings}
    finally:
        for watch in watches:
            watch.close()
        for host in hosts.values():
            host.remove()
        pool.shutdown(wait=False)


def outcome(fleet, case: str) -> Outcome:
    assert fleet["setup"]["first"].returncode == 0, fleet["setup"]["first"].stdout[-6000:]
    out = fleet["outcomes"][case]
    if out.error is not None:
        raise out.error
    return out


def show(out: Outcome) -> str:
    """The case's timeline in seconds after boot, for failure messages."""
    marks = {k: round(v - out.boot, 1) for k, v in out.marks.items()}
    stop = None if out.stopped_at is None else round(out.stopped_at - out.boot, 1)
    journal = "".join(f"\n  +{t - out.boot:5.1f}s {text}" for t, text in out.lines)
    return f"marks {marks}, stopped at {stop}, journal:{journal}"


def assert_powered_off(out: Outcome, earliest: float, latest: float) -> None:
    """The script decided to power off within [earliest, latest], and the host then went down."""
    decisions = [t for t, text in out.lines if "powering off" in text]
    assert decisions, f"no power-off decision: {show(out)}"
    assert earliest <= decisions[0] <= latest, f"decided at the wrong time: {show(out)}"
    assert out.stopped_at is not None, f"decided, but still running {SHUTDOWN}s later: {show(out)}"
    assert decisions[0] <= out.stopped_at <= decisions[0] + SHUTDOWN, show(out)


def assert_stopped_one_limit_after_release(out: Outcome) -> None:
    """Once the activity ended, the host stops one limit after the last check that saw it busy
    (at most one timer period, plus load, before the release): not earlier, and at most one
    check plus load after the release + limit."""
    release = out.marks["release"]
    busy_seen = [t for t, text in out.lines if text.startswith("busy:") and t <= release + 2]
    assert busy_seen, show(out)
    # The run took its time reading (state "last_busy") just before it logged the line.
    assert_powered_off(out, busy_seen[-1] - 2 + LIMIT, release + LIMIT + SLACK)


# --------------------------------------------------------------------------- tests
def test_role_converges_and_a_second_run_disables(fleet):
    setup = fleet["setup"]
    assert setup["first"].returncode == 0, setup["first"].stdout[-6000:]
    assert f"SUMMARY idle auto-stop after {LIMIT} s" in setup["first"].stdout
    assert "second" in setup, "the first converge failed"
    assert setup["second"].returncode == 0, setup["second"].stdout[-6000:]
    assert "SUMMARY idle auto-stop disabled (limit 0)" in setup["second"].stdout


def test_idle_host_with_a_forgotten_tunnel_powers_off_after_the_limit(fleet):
    out = outcome(fleet, "idle")
    # Not before the limit (counted from boot), and within one check (plus load) after it.
    assert_powered_off(out, out.boot + LIMIT - 1, out.marks["active"] + LIMIT + SLACK)
    assert not any(line.startswith("busy") for line in out.lines_between(0)), show(out)
    assert any("no tty sessions" in line for line in out.lines_between(0)), show(out)
    assert "powering off" in out.lines[-1][1] and f">= {LIMIT}s" in out.lines[-1][1], show(out)


def test_running_cell_without_a_browser_keeps_the_host_up(fleet):
    out = outcome(fleet, "cell")
    kernel = str(out.extra["kernel"])[:8]
    assert out.running_at_checkpoint, f"stopped while a cell ran: {show(out)}"
    late = out.lines_between(out.marks["active"] + LIMIT, out.marks["release"])
    assert any(line.startswith("busy:") and f"kernel {kernel} busy" in line for line in late), show(out)
    assert not any("open kernel connection" in line for line in late), show(out)
    # Interrupted, the kernel is idle: one limit later the host stops.
    assert out.extra["interrupt"] == 204
    assert_stopped_one_limit_after_release(out)


def test_open_notebook_connection_keeps_the_host_up(fleet):
    out = outcome(fleet, "notebook")
    assert out.extra["printed"] == "42\n"
    assert out.running_at_checkpoint, f"stopped with a notebook open: {show(out)}"
    late = out.lines_between(out.marks["active"] + LIMIT, out.marks["release"])
    assert any(line.startswith("busy:") and "1 open kernel connection" in line for line in late), show(out)
    # The notebook itself can read what idle-stop sees, and what it will do.
    status = str(out.extra["status"])
    assert "state:        in use\nin use by:    1 open kernel connection" in status, status
    assert f"planned stop: none while in use; it powers the host off after {LIMIT}s without use" in status, status
    assert_stopped_one_limit_after_release(out)


@pytest.mark.parametrize("case", ["shell", "shell13"])
def test_typing_in_a_terminal_keeps_the_host_up_and_an_idle_one_is_warned(fleet, case):
    out = outcome(fleet, case)
    assert out.running_at_checkpoint, f"stopped while a terminal was in use: {show(out)}"
    late = out.lines_between(max(out.boot, out.marks["active"]) + LIMIT, out.marks["release"])
    assert late and all("last: input on admin@pts/" in line for line in late), show(out)
    # Typing stopped: the terminal is warned WARNING s before the power-off, then the host stops.
    warned = [(t, text) for t, text in out.lines if "warned 1 terminal(s) admin@pts/" in text]
    assert warned, show(out)
    assert out.marks["release"] + LIMIT - WARNING - TTY_ATIME_STEP - 1 <= warned[0][0], show(out)
    assert "idle-stop: this host has been idle" in str(out.extra["terminal"]), out.extra["terminal"]
    release = out.marks["release"]
    assert_powered_off(out, max(warned[0][0], release + LIMIT - TTY_ATIME_STEP - 1), release + LIMIT + SLACK)


def test_counted_idle_tty_session_keeps_the_host_up_until_logout(fleet):
    out = outcome(fleet, "tty")
    assert out.running_at_checkpoint, f"stopped with a logged-in terminal: {show(out)}"
    late = out.lines_between(max(out.boot, out.marks["active"]) + LIMIT, out.marks["release"])
    assert any(line.startswith("busy:") and "tty session admin@pts/" in line for line in late), show(out)
    assert_stopped_one_limit_after_release(out)


def test_busy_gpu_keeps_the_host_up(fleet):
    out = outcome(fleet, "gpu")
    assert out.running_at_checkpoint, f"stopped with a busy GPU: {show(out)}"
    late = out.lines_between(max(out.boot, out.marks["active"]) + LIMIT, out.marks["release"])
    assert any(line.startswith("busy:") and "gpu 0 at 97% > 10%" in line for line in late), show(out)
    assert_stopped_one_limit_after_release(out)
    assert "gpu 0:0%" in out.lines[-2][1], show(out)


def test_notebook_users_cpu_job_keeps_the_host_up(fleet):
    out = outcome(fleet, "cpu")
    assert out.running_at_checkpoint, f"stopped while the notebook's job used the CPU: {show(out)}"
    late = out.lines_between(max(out.boot, out.marks["active"]) + LIMIT, out.marks["release"])
    cpu_busy = [line for line in late if line.startswith("busy: cpu ") and "% of a core > 5% (colab: python3 pid" in line]
    assert cpu_busy, show(out)
    # Nothing else kept it up: no busy kernel, no open tab, no GPU.
    assert all(line.startswith("busy: cpu ") and "kernel" not in line.split("|")[0] for line in late), show(out)
    status = str(out.extra["status"])
    assert "state:        in use\nin use by:    cpu " in status, status
    assert_stopped_one_limit_after_release(out)


def summary_of(stdout: str, case: str) -> str:
    found = re.search(rf'ok: \[{case}\] => \{{\s*"msg": "SUMMARY ([^"]*)"', stdout)
    assert found, stdout[-6000:]
    return found.group(1)


def test_platform_default_is_on_for_the_projects_ec2_hosts_and_off_elsewhere(fleet):
    first = fleet["setup"]["first"]
    assert first.returncode == 0, first.stdout[-6000:]
    assert summary_of(first.stdout, "idle") == (
        f"idle auto-stop after {LIMIT} s without use: EC2 instance of this project: a power-off from inside stops it"
        f" (shutdown behaviour stop, disk kept); terminals warned {WARNING} s before; in a notebook,"
        f" !cat {STATUS_FILE} shows when it will stop"
    )
    assert summary_of(first.stdout, "onprem") == (
        "idle auto-stop off by default here: not a cloud VM known to stop billing when powered off (an on-prem or"
        " shared box would stay off); set idle_stop_enabled: true to turn it on"
    )
    out = outcome(fleet, "onprem")
    assert out.running_at_checkpoint and out.stopped_at is None, show(out)
    assert out.lines == [], show(out)
    assert "idle-stop" not in str(out.extra["timers"])
    assert "idle-stop" not in str(out.extra["files"])


def test_limit_zero_removes_the_timer_and_never_stops(fleet):
    out = outcome(fleet, "disabled")
    assert out.running_at_checkpoint, show(out)
    assert out.stopped_at is None
    assert out.lines == [], show(out)
    assert "idle-stop" not in str(out.extra["timers"])
    assert "idle-stop" not in str(out.extra["files"])
