#!/usr/bin/env python3
"""`make bench`: measure, side by side in one run, what this project costs and what it buys.

    bench/run.py [--only p1,p2,p3,latency,kernelset,team] [--n 200] [--keep]

P1  converge the runtime roles on a fresh test host vs the seed article's shell recipe on an
    identical fresh host (and the recipe as written, unpinned, which no longer works)
P2  a no-op re-run of site.yml on a converged host (emulated EC2 API + a podman host)
P3  Colab cell round trips: through the SSH tunnel, on the host's own loopback, and the kernel
    alone; Python protocol client and a real headless Chromium page at Colab's origin; before
    (stock server, `ssh -N` forward) and after (the runtime's TCP_NODELAY fix, the tunnel's
    session)
latency  the same product across an emulated network (a delaying relay in front of the host's
    sshd and of the EC2 API) at each --delays round trip, side by side: cell round trips (ours
    vs stock + `ssh -N`), the connect step and a no-op site.yml in time, SSH request/response
    turns and AWS API calls
kernelset  Colab's package set installed into the kernel environment of a fresh host: time,
    size, imports and parity with Colab's versions (bench/kernel_set.py; not in the default run)
team  one site.yml run for a team of 1 vs 3 runtimes, fresh and re-run (bench/team.py; not in
    the default run)

Test hosts are podman containers named colab-bench-* (removed at the end unless --keep).
Prints a table and writes bench/results/latest.json.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import datetime
import json
import math
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from pathlib import Path

BENCH = Path(__file__).resolve().parent

import colab_client
from colab_testkit.relay import DelayRelay, network_round_trips
from colab_testkit.substrate import (
    ROOT,
    AwsCallLog,
    MotoServer,
    RemoteHost,
    ansible_playbook,
    emulated_aws_env,
    free_port,
    load_file,
    load_role_file,
    make_ssh_key,
    play_recap,
    podman,
    seed_emulated_account,
    stop_process,
    testhost_image,
    wait_tcp,
    write_ec2_overlay,
)

# The kernelset phase (bench/kernel_set.py), loaded from its path: bench/ is not a package.
kernel_set = load_file(BENCH / "kernel_set.py", "bench_kernel_set")
team = load_file(BENCH / "team.py", "bench_team")
RESULTS = BENCH / "results"
# The latency phase's relays stop by themselves after this long (a full bench takes well under it).
RELAY_MAX_S = 3 * 3600
# Fixes the bench had to apply to a converged host to measure it (reported in the results).
WORKAROUNDS: list[str] = []
# Not colab-test-*: test sessions remove those containers when they start.
HOST_PREFIX = "colab-bench-"
PYTHON = sys.executable
# The seed recipe's package lines: as written, and the pinned variant that still works.
SEED_AS_WRITTEN = "jupyter jupyter_http_over_ws"
SEED_PINNED = "jupyter notebook==6.5.7 tornado==6.4.2 jupyter_http_over_ws==0.0.8"
RUNTIME_VENV = "/opt/colab-runtime/venv"
RUNTIME_CONFIG = "/etc/colab-runtime/jupyter_server_config.py"
RUNTIME_SERVICE = "colab-runtime"
OWNER = "bench"
REGION = "us-east-2"
SITE_HOST = f"colab-gpu-runtime-{OWNER}"
# Targets from the project's goals; reported, not asserted.
TARGETS = {
    "p1_ratio": 0.8,
    "p2_noop_s": 5.0,
    "p3_browser_tunnel_median_ms": 10.0,
    "p3_tunnel_overhead_ms": 1.0,
    # A cell through the tunnel: at most one network round trip (measured alone) + this.
    "latency_cell_over_network_ms": 5.0,
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def stats(timings: list[float]) -> dict:
    if not timings:
        return {"n": 0}
    ordered = sorted(timings)
    return {
        "n": len(ordered),
        "median_ms": round(statistics.median(ordered), 2),
        "p90_ms": round(ordered[math.ceil(0.9 * len(ordered)) - 1], 2),
        "min_ms": round(ordered[0], 2),
        "max_ms": round(ordered[-1], 2),
    }


def machine() -> dict:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError):
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split(":", 1)[1].strip()
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu,
        "memory": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "ssh": subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr.strip(),
    }


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


class Bench:
    """Shared state of one run: work dir, SSH key, started hosts and processes, results."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = Path(tempfile.mkdtemp(prefix="colab-bench-"))
        self.key = make_ssh_key(self.work)
        self.image = testhost_image("bookworm")
        self.hosts: list[RemoteHost] = []
        self.procs: list[subprocess.Popen] = []
        self.motos: list[MotoServer] = []
        self.relays: list[DelayRelay] = []
        self.results: dict = {}
        self.run_id = uuid.uuid4().hex[:6]

    # -- resources
    def start_host(self, role: str, user: str = "admin") -> RemoteHost:
        host = RemoteHost.start(
            image=self.image, key_path=self.key, name=f"{HOST_PREFIX}{role}-{self.run_id}", user=user
        )
        self.hosts.append(host)
        return host

    def cleanup(self) -> None:
        for proc in self.procs:
            stop_process(proc)
        for moto in self.motos:
            moto.stop()
        for relay in self.relays:
            relay.stop()
        if self.args.keep:
            log(f"kept: hosts {[h.name for h in self.hosts]}, work dir {self.work}")
            return
        for host in self.hosts:
            host.remove()
        shutil.rmtree(self.work, ignore_errors=True)


def playbook(
    args: list[str], env: dict[str, str] | None = None, timeout: float = 1800
) -> tuple[float, subprocess.CompletedProcess]:
    """One timed ansible-playbook run; a failed run stops the bench (with its output)."""
    started = time.monotonic()
    res = ansible_playbook(*args, env=env, timeout=timeout)
    elapsed = time.monotonic() - started
    if res.returncode != 0:
        raise RuntimeError(f"ansible-playbook {' '.join(args)} failed (rc={res.returncode}):\n{res.stdout[-7000:]}")
    return elapsed, res


def total_changed(recap: dict[str, dict[str, int]]) -> int:
    return sum(v.get("changed", 0) for v in recap.values())


def netns_prefix(host: RemoteHost) -> list[str]:
    """Run a controller program inside the host's network namespace: its loopback, no forward."""
    pid = podman("inspect", "-f", "{{.State.Pid}}", host.name).stdout.strip()
    return ["nsenter", "-t", pid, "-n"]


def http_status_in_host(host: RemoteHost, url: str) -> int:
    code = (
        "import sys, urllib.request, urllib.error\n"
        "try:\n    print(urllib.request.urlopen(sys.argv[1], timeout=10).status)\n"
        "except urllib.error.HTTPError as e:\n    print(e.code)\n"
    )
    res = subprocess.run([*netns_prefix(host), PYTHON, "-c", code, url], capture_output=True, text=True, timeout=30)
    return int(res.stdout.strip() or 0)


def client_check(host: RemoteHost | None, url: str, flow: str) -> tuple[bool, str]:
    """One cell through colab_client.py (inside the host's namespace when host is given)."""
    prefix = netns_prefix(host) if host else []
    res = subprocess.run(
        [*prefix, PYTHON, colab_client.__file__, "--url", url, "--flow", flow,
         "--code", "print(40 + 2)", "--expect", "42"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    # The client prints one "<flow>: OK|FAILED: ..." line (a failure may add a server page after it).
    lines = [line for line in (res.stdout + res.stderr).splitlines() if line.startswith(f"{flow}:")]
    return res.returncode == 0, (lines[0][:300] if lines else (res.stdout + res.stderr).strip()[:300])


# =============================================================================== P1
def seed_url(stdout: str) -> str:
    """The runtime URL from the recipe's output (Notebook 7 prints /tree?token=...)."""
    m = re.search(r"token=([0-9a-f]+)", stdout)
    return f"http://localhost:8888/?token={m.group(1)}" if m else ""


def run_seed(host: RemoteHost, packages: str, venv: str) -> tuple[float, subprocess.CompletedProcess]:
    script = (BENCH / "seed_recipe.sh").read_text()
    started = time.monotonic()
    res = subprocess.run(
        ["ssh", *host.ssh_options(), f"{host.user}@127.0.0.1",
         f"SEED_PACKAGES={shlex.quote(packages)} SEED_VENV={shlex.quote(venv)} bash -s"],
        input=script, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    return time.monotonic() - started, res


def p1(b: Bench) -> dict:
    out: dict = {"load_before": loadavg()}
    # -- ours: the runtime roles through the configure play, on a fresh host
    log("P1: fresh host for the roles")
    host = b.start_host("p1-roles")
    inv = b.work / "p1-inventory.json"
    inv.write_text(json.dumps(host.inventory(hostname="p1-roles")))
    log("P1: converge nvidia_gpu + colab_runtime + idle_stop (playbooks/configure.yml)")
    # profile_tasks only prints a summary at the end (negligible cost): where the time goes.
    seconds, res = playbook(
        ["-i", str(inv), "playbooks/configure.yml", "-e", "nvidia_gpu_required=false"],
        {"ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks,ansible.posix.profile_roles"},
    )
    recap = play_recap(res.stdout)
    slowest, role_totals = profile_summary(res.stdout)
    token = host.exec("cat", "/etc/colab-runtime/token").stdout.strip()
    url = f"http://localhost:8888/?token={token}"
    flows = {f: client_check(host, url, f) for f in ("http_over_ws", "direct")}
    out["roles"] = {
        "seconds": round(seconds, 1),
        "changed": total_changed(recap),
        "playbook": "playbooks/configure.yml -e nvidia_gpu_required=false",
        "slowest_tasks": slowest[:12],
        "roles": role_totals,
        "works": {f: ok for f, (ok, _) in flows.items()},
        "detail": {f: line for f, (_, line) in flows.items()},
    }
    log(f"P1: roles {seconds:.1f}s, cells: {flows}")
    host.remove()

    # -- the seed recipe, pinned so that it still works, on an identical fresh host
    log("P1: fresh host for the seed recipe")
    seed = b.start_host("p1-seed")
    seconds, res = run_seed(seed, SEED_PINNED, "colab-venv")
    if res.returncode != 0:
        raise RuntimeError(f"seed recipe (pinned) failed:\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}")
    ok, line = client_check(seed, seed_url(res.stdout), "http_over_ws")
    out["seed_pinned"] = {
        "seconds": round(seconds, 1),
        "packages": SEED_PINNED,
        "http_over_websocket_status": http_status_in_host(seed, "http://127.0.0.1:8888/http_over_websocket"),
        "works": {"http_over_ws": ok},
        "detail": {"http_over_ws": line},
    }
    log(f"P1: seed recipe (pinned) {seconds:.1f}s, classic flow: {line}")

    # -- the recipe as written: stop the pinned server, run it again into a second venv
    seed.ssh("kill $(cat $HOME/colab-venv/jupyter.pid)")
    seconds, res = run_seed(seed, SEED_AS_WRITTEN, "colab-venv-as-written")
    versions = seed.ssh(
        "$HOME/colab-venv-as-written/bin/python", "-c",
        shlex.quote("import importlib.metadata as m; print(' '.join(f'{p}=={m.version(p)}' for p in "
                    "('notebook', 'jupyter_server', 'tornado', 'jupyter_http_over_ws')))"),
        check=False,
    ).stdout.strip()  # fmt: skip
    url = seed_url(res.stdout)
    ok, line = client_check(seed, url, "http_over_ws") if url else (False, "no URL printed")
    out["seed_as_written"] = {
        "seconds": round(seconds, 1),
        "packages": SEED_AS_WRITTEN,
        "resolved": versions,
        "rc": res.returncode,
        "stderr": res.stderr.strip().splitlines()[-3:],
        "http_over_websocket_status": http_status_in_host(seed, "http://127.0.0.1:8888/http_over_websocket"),
        "works": {"http_over_ws": ok},
        "detail": {"http_over_ws": line},
    }
    log(f"P1: seed recipe as written: {versions}; /http_over_websocket -> "
        f"{out['seed_as_written']['http_over_websocket_status']}; classic flow: {line}")  # fmt: skip
    seed.remove()
    out["ratio_roles_vs_seed"] = round(out["roles"]["seconds"] / out["seed_pinned"]["seconds"], 2)
    out["load_after"] = loadavg()
    return out


# =============================================================================== P2
class Site:
    """site.yml against moto + a podman host, as scripts/demo.py does, in the bench's work dir.

    With ``network``, the host's SSH address and the EC2 endpoint in the overlay are delaying
    relays (``ssh_relay``, ``aws_relay``; no delay until set_round_trip), and every AWS API call
    of a run is logged (aws_calls()).
    """

    def __init__(self, b: Bench, name: str = "site", network: bool = False) -> None:
        self.b = b
        self.moto = MotoServer()
        b.motos.append(self.moto)
        self.host = b.start_host(name, user="ubuntu")
        self.port = free_port()
        self.work = b.work / name
        self.state_dir = self.work / "colab"
        self.aws_call_log = AwsCallLog(self.work / "aws-calls.jsonl")
        self.ssh_relay = self.aws_relay = None
        ssh_port, aws_url, extra_env = self.host.ssh_port, self.moto.url, {}
        if network:
            self.ssh_relay = DelayRelay("127.0.0.1", self.host.ssh_port, max_seconds=RELAY_MAX_S, label=ssh_client_label(self.ssh_config))
            self.aws_relay = DelayRelay("127.0.0.1", self.moto.port, max_seconds=RELAY_MAX_S)
            b.relays += [self.ssh_relay.start(), self.aws_relay.start()]
            ssh_port, aws_url = self.ssh_relay.port, f"http://127.0.0.1:{self.aws_relay.port}"
            extra_env = self.aws_call_log.env()
        # The emulated account and the overlay inventory of `make demo` and the end-to-end tests,
        # with a free port and a private state dir: nothing shared with the demo or a user's tunnel.
        seed_emulated_account(self.moto.url, REGION)
        self.inventory = write_ec2_overlay(
            self.work / "inventory", SITE_HOST, ssh_port, b.key, OWNER, REGION,
            extra_vars={"colab_runtime_port": self.port, "colab_tunnel_state_dir": str(self.state_dir), "idle_stop_enabled": True},
        )  # fmt: skip
        self.env = {**emulated_aws_env(aws_url, REGION), "COLAB_OWNER": OWNER, **extra_env}

    def set_round_trip(self, rtt_ms: float) -> None:
        for relay in (self.ssh_relay, self.aws_relay):
            relay.set_delay(rtt_ms / 2)

    def aws_calls(self) -> dict[str, int]:
        """AWS API calls logged since the last call, per operation (and the reset of the log)."""
        return self.aws_call_log.take()

    def playbook(self, *args: str, env: dict[str, str] | None = None) -> tuple[float, subprocess.CompletedProcess]:
        return playbook(["-i", "inventory/", "-i", str(self.inventory), *args], {**self.env, **(env or {})})

    @property
    def alias(self) -> str:
        # colab_tunnel_host_alias, by the role's own rule.
        return load_role_file("colab_tunnel", "filter_plugins/colab_tunnel.py").colab_tunnel_alias_of(SITE_HOST)

    @property
    def ssh_config(self) -> Path:
        return self.state_dir / f"{self.alias}.ssh_config"

    def url(self) -> str:
        return (self.state_dir / f"{self.alias}.url").read_text().strip()


def profile_summary(output: str) -> tuple[list[str], list[str]]:
    """(slowest tasks, per-role totals) from the profile_tasks / profile_roles summaries."""
    roles = {p.name for p in (ROOT / "roles").iterdir()} | {"total"}
    tasks, role_totals = [], []
    for line in output.splitlines():
        m = re.match(r"^(.*?)\s-+\s+(\d+\.\d+)s\s*$", line)
        if m:
            name, sec = m.group(1).strip(), float(m.group(2))
            (role_totals if name in roles else tasks).append((sec, name))
    fmt = [f"{sec:6.2f}s  {name}" for sec, name in sorted(tasks, reverse=True)]
    return fmt, [f"{sec:6.2f}s  {name}" for sec, name in sorted(role_totals, reverse=True)]


def converge_site(site: Site) -> dict:
    log("P2: site.yml from scratch (emulated EC2 + podman host)")
    seconds, res = site.playbook("site.yml")
    log(f"P2: first site.yml {seconds:.1f}s")
    return {"seconds": round(seconds, 1), "changed": total_changed(play_recap(res.stdout))}


def p2(b: Bench, site: Site, first_run: dict) -> dict:
    out: dict = {"load_before": loadavg(), "first_run": first_run}
    # Three no-op runs as a user runs them (defaults: short paths on, cells proved in both flows).
    runs = []
    for _ in range(3):
        seconds, res = site.playbook("site.yml")
        runs.append({"seconds": round(seconds, 2), "changed": total_changed(play_recap(res.stdout)),
                     "roles_skipped": "Converging:" not in res.stdout})  # fmt: skip
    recap = play_recap(res.stdout)
    out["noop"] = {
        "seconds": round(statistics.median(r["seconds"] for r in runs), 1),
        "changed": max(r["changed"] for r in runs),
        "runs": runs,
        "recap": recap,
    }
    log(f"P2: no-op site.yml {[r['seconds'] for r in runs]} s, changed={out['noop']['changed']}")
    # The same no-op with every role task run (what an idempotent play costs without converge_state).
    seconds, res = site.playbook("site.yml", "-e", "converge_state_enabled=false")
    out["noop_full"] = {"seconds": round(seconds, 1), "changed": total_changed(play_recap(res.stdout))}
    log(f"P2: no-op site.yml with converge_state_enabled=false {seconds:.1f}s")
    out["ratio_short_vs_full"] = round(out["noop"]["seconds"] / out["noop_full"]["seconds"], 2)
    # Where the time goes: the same no-op run again with per-task and per-role timing.
    seconds, res = site.playbook(
        "site.yml",
        env={
            "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks,ansible.posix.profile_roles,ansible.posix.timer"
        },
    )
    tasks, role_totals = profile_summary(res.stdout)
    out["profile"] = {"seconds": round(seconds, 1), "top_tasks": tasks[:25], "roles": role_totals}
    out["tasks_run"] = {h: v.get("ok", 0) + v.get("skipped", 0) for h, v in recap.items()}
    # Fixed cost before the first task: interpreter start, inventory sources (aws_ec2 against the
    # emulated API), parsing site.yml and its roles.
    seconds, _ = site.playbook("site.yml", "--list-tasks")
    out["ansible_startup_s"] = round(seconds, 2)
    out["load_after"] = loadavg()
    return out


# =============================================================================== P3
def probe(client: str, base: str, token: str, n: int, prefix: list[str] | None = None, pause_ms: float = 0.0) -> dict:
    res = subprocess.run(
        [*(prefix or []), PYTHON, str(BENCH / "probe.py"), "--client", client, "--base", base, "--token", token, "--n", str(n),
         *(["--pause-ms", f"{pause_ms:g}"] if pause_ms else [])],
        capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    if res.returncode != 0:
        return {"error": res.stderr.strip()[-2000:]}
    data = json.loads(res.stdout.strip().splitlines()[-1])
    flows = {}
    for flow, r in data["flows"].items():
        flows[flow] = {"ok": r.get("ok", False), **stats(r.get("timings", []))}
        if r.get("error"):
            flows[flow]["error"] = r["error"]
    return {"version": data["version"], "flows": flows}


def kernel_alone(host: RemoteHost, n: int, pause_ms: float = 0.0) -> dict:
    # The service's own environment (JUPYTER_PATH: the role's python3 kernelspec, the kernel
    # environment's PATH), so that the probe starts the very kernel the server starts.
    unit_env = host.exec("systemctl", "show", "-P", "Environment", RUNTIME_SERVICE).stdout.split()
    env = [opt for var in unit_env if var.split("=", 1)[0] in ("JUPYTER_PATH", "PATH", "VIRTUAL_ENV") for opt in ("-e", var)]
    res = subprocess.run(
        ["podman", "exec", "-i", "-w", "/tmp", "-e", "JUPYTER_RUNTIME_DIR=/tmp/bench-kernel", *env, host.name,
         f"{RUNTIME_VENV}/bin/python", "-", str(n), f"{pause_ms:g}"],
        input=(BENCH / "kernel_probe.py").read_text(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if res.returncode != 0:
        return {"error": res.stderr.strip()[-2000:]}
    return stats(json.loads(res.stdout.strip().splitlines()[-1])["timings"])


def set_server_nodelay(host: RemoteHost, port: int, on: bool) -> None:
    """Switch the runtime's websocket TCP_NODELAY fix (what colab_runtime_tcp_nodelay renders)."""
    value = "True" if on else "False"
    # jupyter_core migrates ~/.ipython (created by the first kernel) into the read-only config dir
    # at every later start unless a "migrated" marker exists there: without it the service
    # crash-loops after any restart. Work around it here until the role writes the marker.
    marker = f"{Path(RUNTIME_CONFIG).parent}/migrated"
    if host.exec("test", "-e", marker, check=False).returncode != 0:
        log(f"P3: WARNING: {marker} is missing (the runtime cannot restart without it); creating it")
        host.exec("install", "-m", "0644", "/dev/null", marker)
        WORKAROUNDS.append(f"created {marker}: without it the runtime crash-loops on restart (jupyter_core migration)")
    host.exec("sed", "-i", f"s/^c.ColabRuntime.tcp_nodelay = .*/c.ColabRuntime.tcp_nodelay = {value}/", RUNTIME_CONFIG)
    host.exec("systemctl", "restart", RUNTIME_SERVICE)
    deadline = time.monotonic() + 180
    while http_status_in_host(host, f"http://127.0.0.1:{port}/api/status") == 0:
        if time.monotonic() > deadline:
            journal = host.exec("journalctl", "-u", RUNTIME_SERVICE, "-n", "30", "--no-pager", check=False).stdout
            raise TimeoutError(f"the runtime did not answer within 180 s of a restart:\n{journal}")
        time.sleep(0.3)
    line = host.exec("grep", "^c.ColabRuntime.tcp_nodelay", RUNTIME_CONFIG).stdout.strip()
    if line != f"c.ColabRuntime.tcp_nodelay = {value}":
        raise RuntimeError(f"could not switch the server setting: {line!r}")


def start_forward(b: Bench, site: Site, session: bool) -> subprocess.Popen:
    """The tunnel's exact ssh command (session) or the classic `ssh -N` forward, same ssh_config."""
    cmd = ["ssh", "-F", str(site.ssh_config)]
    cmd += [f"{site.alias}-tunnel", "exec sleep infinity"] if session else ["-N", f"{site.alias}-tunnel"]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    b.procs.append(proc)
    deadline = time.monotonic() + 30
    while True:
        with contextlib.suppress(OSError, TimeoutError):
            wait_tcp("127.0.0.1", site.port, timeout=0.5)
            return proc
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(
                f"{' '.join(cmd)} did not open the forward: {proc.stderr.read().decode()[-1000:] if proc.stderr else ''}"
            )


def p3(b: Bench, site: Site) -> dict:
    n = b.args.n
    host = site.host
    base = f"http://localhost:{site.port}"
    token = urllib.parse.parse_qs(urllib.parse.urlsplit(site.url()).query)["token"][0]
    inside = netns_prefix(host)
    out: dict = {"n": n, "load_before": loadavg(), "cells": []}

    def measure(server: str, path: str, prefix: list[str] | None = None) -> None:
        for client in ("python", "browser"):
            log(f"P3: {client:7s} server={server:5s} path={path}")
            r = probe(client, base, token, n, prefix)
            out["cells"].append({"server": server, "path": path, "client": client, **r})
            if "error" in r:
                log(f"P3:   FAILED: {r['error'][-500:]}")
            for flow, s in r.get("flows", {}).items():
                log(f"P3:   {flow:12s} median {s.get('median_ms')} ms  p90 {s.get('p90_ms')} ms  ok={s['ok']}")

    # After: the converged runtime (fix on) through the tunnel that connect.yml started.
    measure("fixed", "tunnel (connect.yml)")
    measure("fixed", "loopback (no forward)", inside)
    log("P3: kernel alone (jupyter_client on the host)")
    out["kernel_alone"] = kernel_alone(host, n)
    log(f"P3:   {out['kernel_alone']}")
    # Swap the supervised tunnel for hand-started forwards with the same ssh_config.
    site.playbook("playbooks/connect.yml", "-e", "colab_tunnel_state=stopped")
    fwd = start_forward(b, site, session=False)
    measure("fixed", "ssh -N forward")
    # Before: the stock server (no NODELAY on websocket streams).
    set_server_nodelay(host, site.port, on=False)
    measure("stock", "ssh -N forward")
    measure("stock", "loopback (no forward)", inside)
    stop_process(fwd)
    fwd = start_forward(b, site, session=True)
    measure("stock", "tunnel (session)")
    stop_process(fwd)
    set_server_nodelay(host, site.port, on=True)
    out["load_after"] = loadavg()
    return out


# =============================================================================== latency
def ssh_client_label(ssh_config: Path):
    """Name the program behind a relayed SSH connection: 'tunnel' for an ssh started with the
    tunnel's ssh_config (the supervised tunnel, the bench's own forwards), else 'ansible'."""

    def label(peer: tuple[str, int]) -> str:
        res = subprocess.run(["ss", "-Htnp", "state", "established", "src", f"{peer[0]}:{peer[1]}"],
                             capture_output=True, text=True, timeout=10)  # fmt: skip
        m = re.search(r"pid=(\d+)", res.stdout)
        if not m:
            return "unknown"
        with contextlib.suppress(OSError):
            cmdline = Path(f"/proc/{m.group(1)}/cmdline").read_bytes().split(b"\0")
            return "tunnel" if str(ssh_config).encode() in cmdline else "ansible"
        return "unknown"

    return label


def turns(site: Site) -> dict[str, int]:
    """SSH request/response turns (per program) and AWS calls since the last reading."""
    by_label = site.ssh_relay.counts_by_label()
    site.ssh_relay.reset_counts()
    site.aws_relay.reset_counts()
    return {name: c.turns for name, c in sorted(by_label.items())}


def turns_by_role(turn_times: list[tuple[float, str]], task_log: Path) -> dict[str, int]:
    """Ansible's SSH turns per role: each turn belongs to the last task started before it
    (bench/callback_plugins/bench_task_log.py); tasks outside a role count under their play."""
    starts = []
    with contextlib.suppress(FileNotFoundError):
        starts = [json.loads(line) for line in task_log.read_text().splitlines()]
    starts.sort(key=lambda e: e["time"])
    times = [e["time"] for e in starts]
    by_role: dict[str, int] = {}
    for when, label in turn_times:
        if label != "ansible":
            continue
        i = bisect.bisect_right(times, when) - 1
        owner = "(before the first task)" if i < 0 else (starts[i]["role"] or f"play: {starts[i]['play']}")
        by_role[owner] = by_role.get(owner, 0) + 1
    return dict(sorted(by_role.items(), key=lambda kv: -kv[1]))


def timed_step(site: Site, *args: str, by_role: bool = False) -> dict:
    """One timed run with its SSH turns and AWS calls; with by_role also Ansible's turns per role."""
    turns(site)
    site.aws_calls()
    env, task_log = {}, site.work / "task-log.jsonl"
    if by_role:
        task_log.unlink(missing_ok=True)
        env = {"ANSIBLE_CALLBACK_PLUGINS": str(BENCH / "callback_plugins"), "ANSIBLE_CALLBACKS_ENABLED": "bench_task_log",
               "COLAB_BENCH_TASK_LOG": str(task_log)}  # fmt: skip
    seconds, res = site.playbook(*args, env=env)
    aws = site.aws_calls()
    step = {
        "seconds": round(seconds, 2),
        "changed": total_changed(play_recap(res.stdout)),
    }
    if by_role:
        step["ansible_turns_by_role"] = turns_by_role(site.ssh_relay.turn_times(), task_log)
    step.update({"ssh_turns": turns(site), "aws_calls": aws, "aws_calls_total": sum(aws.values())})
    return step


def latency(b: Bench) -> dict:
    delays = [float(d) for d in b.args.delays.split(",")]
    clients = b.args.latency_clients.split(",")
    out: dict = {"load_before": loadavg(), "round_trips_ms": delays, "n": b.args.n, "steps": {}, "cells": []}
    site = Site(b, "latency", network=True)
    try:
        return measure_latency(b, site, delays, clients, out)
    finally:
        with contextlib.suppress(Exception):
            site.set_round_trip(0)
            site.playbook("playbooks/connect.yml", "-e", "colab_tunnel_state=stopped")


def measure_latency(b: Bench, site: Site, delays: list[float], clients: list[str], out: dict) -> dict:
    n = b.args.n
    base = f"http://localhost:{site.port}"
    # The first converge (provision, configure, connect) on a fresh host at the first delay.
    site.set_round_trip(delays[0])
    log(f"latency: first site.yml at {delays[0]:g} ms round trip")
    out["first_converge"] = {f"{delays[0]:g}": timed_step(site, "site.yml", by_role=True)}
    log(f"latency:   {out['first_converge']}")
    # The same first converge at every further delay, each on a fresh instance and host of its own.
    for rtt in delays[1:]:
        fresh = Site(b, f"latency-first-{rtt:g}", network=True)
        fresh.set_round_trip(rtt)
        log(f"latency: first site.yml at {rtt:g} ms round trip (fresh host)")
        try:
            out["first_converge"][f"{rtt:g}"] = timed_step(fresh, "site.yml", by_role=True)
        finally:
            with contextlib.suppress(Exception):
                fresh.set_round_trip(0)
                fresh.playbook("playbooks/connect.yml", "-e", "colab_tunnel_state=stopped")
        log(f"latency:   {out['first_converge'][f'{rtt:g}']}")
    token = urllib.parse.parse_qs(urllib.parse.urlsplit(site.url()).query)["token"][0]

    def cells(server: str, path: str, rtt: float) -> None:
        for client in clients:
            log(f"latency: cells {client:7s} {server:5s} {path} at {rtt:g} ms")
            r = probe(client, base, token, n)
            out["cells"].append({"rtt_ms": rtt, "server": server, "path": path, "client": client, **r})
            for flow, st in r.get("flows", {}).items():
                log(f"latency:   {flow:12s} median {st.get('median_ms')} ms  p90 {st.get('p90_ms')} ms  ok={st['ok']}")
            if "error" in r:
                log(f"latency:   FAILED: {r['error'][-500:]}")

    for rtt in delays:
        site.set_round_trip(rtt)
        key = f"{rtt:g}"
        # The network alone: a small echo through a relay at this delay (what a cell's one round
        # trip costs before any of the product's own work).
        out.setdefault("network", {})[key] = stats([t * 1000 for t in network_round_trips(rtt / 2, n)])
        log(f"latency: network alone at {key} ms: {out['network'][key]}")
        steps = out["steps"][key] = {}
        log(f"latency: no-op site.yml at {key} ms round trip")
        site.playbook("site.yml")  # settles the host's control connection at this delay
        steps["noop"] = timed_step(site, "site.yml", by_role=True)
        log(f"latency:   {steps['noop']}")
        site.playbook("playbooks/connect.yml", "-e", "colab_tunnel_state=stopped")
        steps["connect"] = timed_step(site, "playbooks/connect.yml", by_role=True)
        log(f"latency:   connect step: {steps['connect']}")
        cells("ours", "tunnel (connect.yml)", rtt)
        if rtt == delays[0] and len(delays) > 1:
            idle_gap(b, site, base, token, max(delays), out)
    # Before: the stock server (no TCP_NODELAY on websocket streams) and a plain `ssh -N` forward.
    site.playbook("playbooks/connect.yml", "-e", "colab_tunnel_state=stopped")
    site.set_round_trip(0)
    set_server_nodelay(site.host, site.port, on=False)
    try:
        for rtt in delays:
            site.set_round_trip(rtt)
            fwd = start_forward(b, site, session=False)
            try:
                cells("stock", "ssh -N forward", rtt)
            finally:
                stop_process(fwd)
    finally:
        site.set_round_trip(0)
        set_server_nodelay(site.host, site.port, on=True)
    out["load_after"] = loadavg()
    return out


def idle_gap(b: Bench, site: Site, base: str, token: str, pause_ms: float, out: dict) -> None:
    """The control for the delayed rows: the same cells on the undelayed path, each after a pause.

    Over a delayed path every process in a cell's path waits idle between the request and the
    answer, and processes woken from idle answer later than ones run back to back (on this VM a
    bare zmq ping-pong takes ~0.25 ms more after a 40 ms pause). Pausing as long as the largest
    delay, with no delay, measures that share apart from the path; the kernel alone, with and
    without the pause, shows how much of it is the kernel's.
    """
    n = b.args.n
    gap: dict = {"pause_ms": pause_ms, "n": n}
    log(f"latency: idle-gap control, cells and the kernel alone after {pause_ms:g} ms pauses")
    gap["ours"] = probe("python", base, token, n, pause_ms=pause_ms).get("flows", {})
    gap["kernel_alone"] = kernel_alone(site.host, n)
    gap["kernel_alone_paused"] = kernel_alone(site.host, n, pause_ms=pause_ms)
    log(f"latency:   {gap}")
    out["idle_gap"] = gap


def cell_over_network(p: dict) -> dict[tuple[str, str, str], float]:
    """(client, flow, round trip) -> our cell's median minus the network alone's, in ms."""
    network = p.get("network", {})
    excess = {}
    for c in p["cells"]:
        key = f"{c['rtt_ms']:g}"
        if c["server"] != "ours" or key not in network:
            continue
        for flow, st in c.get("flows", {}).items():
            if st.get("ok"):
                excess[(c["client"], flow, key)] = round(st["median_ms"] - network[key]["median_ms"], 2)
    return excess


def latency_lines(p: dict) -> list[str]:
    keys = [f"{d:g}" for d in p["round_trips_ms"]]
    head = "".join(f"{k + ' ms':>22s}" for k in keys)
    lines = [f"LATENCY emulated network (relay before sshd and the EC2 API), round trip: {' / '.join(keys)} ms",
             f"  {'cell round trip, median / p90 ms':44s}{head}"]  # fmt: skip
    rows: dict[tuple, dict] = {}
    for c in p["cells"]:
        for flow, st in c.get("flows", {}).items():
            rows.setdefault((c["server"], c["path"], c["client"], flow), {})[f"{c['rtt_ms']:g}"] = st
    for (server, path, client, flow), by_rtt in rows.items():
        cols = "".join(
            f"{(str(by_rtt[k].get('median_ms')) + ' / ' + str(by_rtt[k].get('p90_ms'))) if by_rtt.get(k, {}).get('ok') else 'FAILED':>22s}"
            for k in keys
        )
        lines.append(f"  {server:5s} {path:21s} {client:7s} {flow:12s}{cols}")
    network = p.get("network", {})
    if network:
        cols = "".join(f"{str(network[k].get('median_ms')) + ' / ' + str(network[k].get('p90_ms')):>22s}" for k in keys if k in network)
        lines.append(f"  {'network alone (echo through the relay)':44s}{cols}")
        lines.append(f"  ours minus the network alone, median ms (target <= {TARGETS['latency_cell_over_network_ms']:g} ms):")
        excess = cell_over_network(p)
        for client, flow in dict.fromkeys((c, f) for c, f, _ in excess):
            cols = "".join(f"{excess.get((client, flow, k), '-')!s:>22s}" for k in keys)
            lines.append(f"    {client:7s} {flow:33s}{cols}")
    gap = p.get("idle_gap")
    if gap:
        pause, first = f"{gap['pause_ms']:g}", keys[0]
        ka, kp = gap.get("kernel_alone", {}), gap.get("kernel_alone_paused", {})
        lines.append(f"  idle-gap control at {first} ms, a {pause} ms pause before each cell (median / p90 ms):")
        lines.append(f"    kernel alone, back to back / after the pause  {ka.get('median_ms')} / {ka.get('p90_ms')}"
                     f"  ->  {kp.get('median_ms')} / {kp.get('p90_ms')}")  # fmt: skip
        for flow, st in gap.get("ours", {}).items():
            lines.append(f"    ours, python {flow:12s} after the pause     {st.get('median_ms')} / {st.get('p90_ms')}")
            over = excess.get(("python", flow, pause)) if network else None
            if st.get("ok") and over is not None:
                lines.append(f"      at {pause} ms, ours minus the network alone minus this: {round(over - st['median_ms'], 2)} ms"
                             " (what the delayed path adds beyond one round trip and waking from idle)")  # fmt: skip
    for step, title in (("noop", "no-op site.yml"), ("connect", "connect step (connect.yml)")):
        lines.append(f"  {title}:")
        for what, fmt in (
            ("seconds", lambda s: f"{s['seconds']:.2f} s"),
            ("ssh turns (ansible / tunnel)", lambda s: f"{s['ssh_turns'].get('ansible', 0)} / {s['ssh_turns'].get('tunnel', 0)}"),
            ("AWS API calls", lambda s: str(s["aws_calls_total"])),
        ):
            cols = "".join(f"{fmt(p['steps'][k][step]):>22s}" for k in keys if k in p["steps"])
            lines.append(f"    {what:42s}{cols}")
        first = p["steps"].get(keys[0], {}).get(step)
        if first and first["aws_calls"]:
            lines.append("    AWS calls by operation: " + ", ".join(f"{op} {c}" for op, c in first["aws_calls"].items()))
        for k in keys:
            by_role = p["steps"].get(k, {}).get(step, {}).get("ansible_turns_by_role")
            if by_role:
                lines.append(f"    Ansible SSH turns by role at {k} ms: " + ", ".join(f"{o} {c}" for o, c in by_role.items()))
    firsts = p.get("first_converge", {})
    for key, first in firsts.items():
        lines.append(f"  first site.yml at {key} ms: {first['seconds']:.1f} s, ssh turns {first['ssh_turns']}, "
                     f"AWS calls {first['aws_calls_total']}")  # fmt: skip
    if any("ansible_turns_by_role" in f for f in firsts.values()):
        head = "".join(f"{k + ' ms':>12s}" for k in firsts)
        lines.append(f"  {'first site.yml, Ansible SSH turns per role':42s}{head}")
        owners = {o for f in firsts.values() for o in f.get("ansible_turns_by_role", {})}
        for owner in sorted(owners, key=lambda o: -max(f.get("ansible_turns_by_role", {}).get(o, 0) for f in firsts.values())):
            cols = "".join(f"{f.get('ansible_turns_by_role', {}).get(owner, 0):>12d}" for f in firsts.values())
            lines.append(f"    {owner[:40]:40s}{cols}")
    return lines


# =============================================================================== report
def find(cells: list[dict], server: str, path: str, client: str, flow: str) -> dict:
    for c in cells:
        if (c["server"], c["path"], c["client"]) == (server, path, client):
            return c.get("flows", {}).get(flow, {})
    return {}


def summarize(results: dict) -> list[str]:
    lines = ["", "=" * 100, f"colab-gpu-runtime bench  {results['date']}  "
             f"{results['machine']['nproc']} x {results['machine']['cpu_model']}", "=" * 100]  # fmt: skip
    targets = results.setdefault("targets", {})
    if "p1" in results:
        p = results["p1"]
        lines += [
            "P1 converge from a fresh host (wall clock)",
            f"  roles (nvidia_gpu, colab_runtime, idle_stop)  {p['roles']['seconds']:7.1f} s   cells: {p['roles']['works']}",
            f"  seed recipe, pinned ({SEED_PINNED})  {p['seed_pinned']['seconds']:7.1f} s   cells: {p['seed_pinned']['works']}",
            f"  seed recipe as written ({p['seed_as_written']['resolved']})  {p['seed_as_written']['seconds']:7.1f} s   "
            f"/http_over_websocket -> {p['seed_as_written']['http_over_websocket_status']}, cells: {p['seed_as_written']['works']}",
            f"  ratio roles / pinned recipe  {p['ratio_roles_vs_seed']:.2f}x   (target <= {TARGETS['p1_ratio']}x)",
            "  roles converge by role: "
            + ", ".join(r.split(None, 1)[1] + " " + r.split()[0] for r in p["roles"].get("roles", [])),
            "  slowest tasks of the roles converge:",
            *(f"    {t}" for t in p["roles"].get("slowest_tasks", [])[:6]),
        ]
        targets["p1_ratio"] = p["ratio_roles_vs_seed"] <= TARGETS["p1_ratio"]
    if "p2" in results:
        p = results["p2"]
        lines += [
            "P2 site.yml (emulated EC2 + podman host)",
            f"  first run {p['first_run']['seconds']:.1f} s; no-op re-run {p['noop']['seconds']:.1f} s (median of "
            f"{[r['seconds'] for r in p['noop']['runs']]}), changed={p['noop']['changed']}   (target <= {TARGETS['p2_noop_s']} s, changed=0)",
            f"  same no-op with every role task (converge_state_enabled=false) {p['noop_full']['seconds']:.1f} s, "
            f"changed={p['noop_full']['changed']}: short paths {p['ratio_short_vs_full']:.2f}x",
            f"  ansible-playbook start-up (inventories + parsing site.yml, no task) {p['ansible_startup_s']} s",
            f"  tasks run (ok + skipped) per host: {p['tasks_run']}",
            "  no-op run by role: "
            + ", ".join(r.split(None, 1)[1] + " " + r.split()[0] for r in p["profile"]["roles"]),
            "  slowest tasks of a no-op run:",
            *(f"    {t}" for t in p["profile"]["top_tasks"][:8]),
        ]
        targets["p2_noop"] = p["noop"]["seconds"] <= TARGETS["p2_noop_s"] and p["noop"]["changed"] == 0
    if "p3" in results:
        p = results["p3"]
        cells = p["cells"]
        lines += [f"P3 trivial cell round trip, {p['n']} executes: median / p90 ms",
                  f"  {'server':6s} {'path':24s} {'client':8s} {'http_over_ws':>16s} {'direct':>16s}"]  # fmt: skip
        for c in cells:
            fl = c.get("flows", {})
            cols = []
            for flow in ("http_over_ws", "direct"):
                s = fl.get(flow, {})
                cols.append(
                    f"{s.get('median_ms', 'ERR')!s:>7} / {s.get('p90_ms', '-')!s:<7}"
                    if s.get("ok")
                    else f"{'FAILED':>16s}"
                )
            lines.append(f"  {c['server']:6s} {c['path']:24s} {c['client']:8s} {cols[0]:>16s} {cols[1]:>16s}")
        k = p.get("kernel_alone", {})
        lines.append(f"  kernel alone (jupyter_client on the host): {k.get('median_ms')} / {k.get('p90_ms')}")
        derived = {}
        for client in ("browser", "python"):
            for flow in ("http_over_ws", "direct"):
                after_s = find(cells, "fixed", "tunnel (connect.yml)", client, flow)
                direct_s = find(cells, "fixed", "loopback (no forward)", client, flow)
                after, direct = after_s.get("median_ms"), direct_s.get("median_ms")
                before = find(cells, "stock", "ssh -N forward", client, flow).get("median_ms")
                if None not in (after, direct, before):
                    derived[f"{client}/{flow}"] = {
                        "after_ms": after,
                        "before_ms": before,
                        "speedup": round(before / after, 1),
                        "tunnel_overhead_ms": round(after - direct, 2),
                        # Minimums are less sensitive to a busy machine than medians.
                        "tunnel_overhead_min_ms": round(after_s["min_ms"] - direct_s["min_ms"], 2),
                    }
        p["derived"] = derived
        lines.append("  before (stock server, ssh -N) -> after (fix + session tunnel); tunnel overhead vs loopback:")
        for key, d in derived.items():
            lines.append(
                f"    {key:22s} {d['before_ms']:7.1f} -> {d['after_ms']:5.1f} ms  ({d['speedup']}x)   "
                f"overhead {d['tunnel_overhead_ms']:+.2f} ms (medians), {d['tunnel_overhead_min_ms']:+.2f} ms (minimums)"
            )
        browser = [d for k2, d in derived.items() if k2.startswith("browser/")]
        if browser:
            targets["p3_browser_tunnel_median"] = all(
                d["after_ms"] <= TARGETS["p3_browser_tunnel_median_ms"] for d in browser
            )
            targets["p3_tunnel_overhead"] = all(
                d["tunnel_overhead_ms"] <= TARGETS["p3_tunnel_overhead_ms"] for d in browser
            )
    if "latency" in results:
        lines += latency_lines(results["latency"])
        excess = cell_over_network(results["latency"])
        if excess:
            targets["latency_cell_over_network"] = max(excess.values()) <= TARGETS["latency_cell_over_network_ms"]
    if "kernelset" in results:
        lines += kernel_set.lines(results["kernelset"])
    if "team" in results:
        lines += team.lines(results["team"])
        if "ratio_noop" in results["team"]:
            targets["team_noop_ratio"] = results["team"]["ratio_noop"] <= team.NOOP_TARGET
    lines.append("targets met: " + ", ".join(f"{k}={'yes' if v else 'NO'}" for k, v in targets.items()))
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description="colab-gpu-runtime benchmarks (see bench/README.md)")
    parser.add_argument("--only", default="p1,p2,p3,latency", help="comma-separated phases: p1,p2,p3,latency, and kernelset (Colab's package set, several GB) and team (1 vs 3 runtimes), not by default")
    parser.add_argument("--n", type=int, default=200, help="timed executes per P3 cell")
    parser.add_argument("--delays", default="0,40", help="latency phase: emulated round trips in ms, comma-separated")
    parser.add_argument("--latency-clients", default="python,browser", help="latency phase: python, browser or both")
    parser.add_argument("--keep", action="store_true", help="keep hosts and the work dir for inspection")
    parser.add_argument("--out", type=Path, default=RESULTS / "latest.json")
    parser.add_argument("--report", type=Path, help="only print the table of an earlier results file")
    args = parser.parse_args()
    if args.report:
        print("\n".join(summarize(json.loads(args.report.read_text()))))
        return 0
    phases = set(args.only.split(","))
    needs_chromium = "p3" in phases or ("latency" in phases and "browser" in args.latency_clients)
    if shutil.which("nsenter") is None or (needs_chromium and not shutil.which("chromium")):
        print("bench needs nsenter (util-linux) and chromium (apt-get install chromium)", file=sys.stderr)
        return 2
    results: dict = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "args": vars(args) | {"out": str(args.out)},
    }
    b = Bench(args)
    site: Site | None = None
    rc = 0
    try:
        if "p1" in phases:
            results["p1"] = p1(b)
        if phases & {"p2", "p3"}:
            site = Site(b)
            first_run = converge_site(site)
            if "p2" in phases:
                results["p2"] = p2(b, site, first_run)
            if "p3" in phases:
                results["p3"] = p3(b, site)
        if "latency" in phases:
            results["latency"] = latency(b)
        if "kernelset" in phases:
            results["kernelset"] = kernel_set.kernelset(b, playbook, log)
        if "team" in phases:
            results["team"] = team.team(b, log, loadavg)
    except Exception as err:  # still write what was measured
        results["error"] = f"{type(err).__name__}: {err}"
        print(results["error"], file=sys.stderr)
        rc = 1
    finally:
        if site is not None:
            with contextlib.suppress(Exception):
                site.playbook("playbooks/connect.yml", "-e", "colab_tunnel_state=stopped")
        b.cleanup()
    results["workarounds"] = WORKAROUNDS
    with contextlib.suppress(Exception):
        results["machine"]["chromium"] = subprocess.run(
            ["chromium", "--version"], capture_output=True, text=True
        ).stdout.strip()
    for line in summarize(results):
        print(line)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written: {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
