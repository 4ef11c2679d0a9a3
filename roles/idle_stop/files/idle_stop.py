#!/usr/bin/python3
"""idle-stop: power the host off once nothing has used it for the configured time.

Run by idle-stop.timer. Python 3 standard library only, so it works on any host with python3.

The file has two halves:
  * decide(): a pure function from plain values (the settings, what the host looks like now,
    the state the previous run left) to a small Decision: keep, warn or stop, the reasons the
    host is in use, since when it is idle, and when it will stop;
  * the runner (gather() and act()): reads /proc, Jupyter's REST API and nvidia-smi, then logs,
    writes the status file a notebook can read, warns terminals and powers off.

"Used" means any of (each gives a reason in the log line):
  * a Jupyter kernel is busy (a cell runs, even with no browser attached), or has an open
    websocket connection (a notebook open in a browser tab) when count_kernel_connections;
  * a kernel's, or the Jupyter server's own (REST API, terminals), last activity is recent;
  * an interactive login with a terminal (TTY) whose terminal saw input recently; every login
    with a TTY when count_idle_tty_sessions is true. Logins WITHOUT a terminal never count: the
    Colab SSH tunnel keeps one open on purpose (it runs a session command so that sshd disables
    Nagle's algorithm), and a forgotten tunnel with no notebook must not keep a GPU host running;
  * GPU utilisation above the threshold (nvidia-smi; skipped when it is absent);
  * CPU work of the notebook user's processes (a `!nohup python prep.py &` job): the CPU time
    they used since the previous run, as a share of one core, above the threshold. Measured as
    a delta of /proc/<pid>/stat times between two runs (state file), not the load average, so a
    short burst between two checks does not count and a steady job always does;
  * the host booted recently, was last seen in use recently (state file), or idle-stop was
    (re)configured recently (so lowering the limit never powers a host off in mid-deployment).

The host is idle for (now - the latest of those times). Once that reaches the limit it powers
off (systemctl poweroff; on EC2 the instance's shutdown behaviour "stop" keeps the disk). A
configurable time before that, every idle terminal gets a warning. Every run logs one line and
rewrites the world-readable status file (`!cat /var/lib/idle-stop/status` in a notebook cell).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

DEFAULT_CONFIG = "/etc/idle-stop.json"
DEFAULT_STATE_FILE = "/var/lib/idle-stop/state.json"
POWEROFF_DELAY_SECONDS = 2
TAG = "idle_stop:"
# Only "busy" means a cell is running. A kernel stays "starting" until a client first connects,
# possibly forever: that state counts through its last_activity like any other.
BUSY_KERNEL_STATES = ("busy",)
# Two CPU samples closer than this say nothing (a timer restart right after a run).
MIN_CPU_WINDOW_SECONDS = 1.0
# Boot times computed in two runs differ by rounding; a larger gap means a reboot in between.
BOOT_TOLERANCE_SECONDS = 2.0
WHAT_COUNTS = "run a cell, keep a notebook open, type in a terminal, or keep a job using the CPU or GPU"


# =========================================================================== plain values
@dataclasses.dataclass(frozen=True)
class Settings:
    """The configuration file's decision-relevant values."""

    limit: float
    warning: float = 0.0
    count_kernel_connections: bool = True
    count_idle_tty_sessions: bool = False
    gpu_threshold: float | None = 10.0
    cpu_threshold: float | None = 5.0  # percent of one core

    @classmethod
    def from_config(cls, cfg: dict) -> Settings:
        gpu = cfg.get("gpu_utilization_threshold")
        cpu = cfg.get("cpu_threshold_percent")
        return cls(
            limit=float(cfg["limit_seconds"]),
            warning=float(cfg.get("warning_seconds", 0)),
            count_kernel_connections=bool(cfg.get("count_kernel_connections", True)),
            count_idle_tty_sessions=bool(cfg.get("count_idle_tty_sessions", False)),
            gpu_threshold=None if gpu is None else float(gpu),
            cpu_threshold=None if cpu is None or not cfg.get("cpu_users") else float(cpu),
        )


@dataclasses.dataclass(frozen=True)
class Terminal:
    """An interactive login with a terminal, and when its terminal last saw input."""

    user: str
    tty: str
    last_input: float


@dataclasses.dataclass(frozen=True)
class CpuSample:
    """CPU time of the counted users' processes at one moment.

    ticks: "<pid>:<start time>" -> utime+stime+cutime+cstime in clock ticks (the children's
    times make a short-lived `!pip install` child count once its parent has waited for it).
    labels: the same keys -> "user:command" for the log.
    """

    boot: float
    ticks: dict[str, int]
    labels: dict[str, str] = dataclasses.field(default_factory=dict)
    clock_ticks: int = 100


@dataclasses.dataclass(frozen=True)
class Observation:
    """What the runner saw on the host now; everything decide() needs besides settings and state."""

    now: float
    boot: float
    configured: float | None = None  # mtime of the configuration file
    # Jupyter: the three API answers, or why they could not be read. notes says why it was skipped.
    jupyter: dict | None = None  # {"status": ..., "kernels": [...], "sessions": [...]}
    jupyter_error: str | None = None  # cannot tell (keeps the host up, for one limit at most)
    terminals: tuple[Terminal, ...] = ()
    gpus: tuple[tuple[str, float], ...] | None = None  # (index, utilisation %), None: not read
    cpu: CpuSample | None = None
    notes: tuple[str, ...] = ()  # what the gathering noticed ("jupyter: not running", ...)


@dataclasses.dataclass(frozen=True)
class Decision:
    """What to do now, and why: the small value the runner acts on."""

    verdict: str  # "keep" | "warn" | "stop"
    in_use: tuple[str, ...]  # reasons the host counts as used now (empty when idle)
    idle_since: float | None  # start of the current idle period (None while in use)
    last_activity: str  # what happened at idle_since
    stop_at: float | None  # planned power-off (None while in use)
    notes: tuple[str, ...]
    warn: tuple[Terminal, ...]  # terminals to warn (verdict "warn")
    state: dict  # what the next run needs (save it)


# =========================================================================== the decision
def fmt_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    return f"{seconds // 60} min"


def fmt_time(stamp: float) -> str:
    return dt.datetime.fromtimestamp(stamp, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def parse_iso(value: str) -> float:
    """Jupyter's ISO 8601 UTC timestamps ("2025-01-01T10:00:00.123456Z") as epoch seconds."""
    value = value.strip()
    if value.endswith("Z"):
        value = value[:-1] + "+00:00"
    stamp = dt.datetime.fromisoformat(value)
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.timezone.utc)
    return stamp.timestamp()


def read_jupyter(settings: Settings, answers: dict, busy: list, activity: list, notes: list) -> None:
    """Reasons and activity times from Jupyter's /api/status, /api/kernels and /api/sessions."""
    status, kernels, sessions = answers["status"], answers["kernels"], answers["sessions"]
    if status.get("last_activity"):
        activity.append((parse_iso(status["last_activity"]), "jupyter server activity"))
    names = {}
    for session in sessions:
        kernel = session.get("kernel") or {}
        if kernel.get("id"):
            names[kernel["id"]] = session.get("path") or session.get("name") or ""
    connections = 0
    for kernel in kernels:
        kid = str(kernel.get("id", ""))
        label = f"kernel {kid[:8]}" + (f" ({names[kid]})" if names.get(kid) else "")
        state = kernel.get("execution_state", "")
        if state in BUSY_KERNEL_STATES:
            busy.append(f"{label} {state}")
        if kernel.get("last_activity"):
            activity.append((parse_iso(kernel["last_activity"]), f"{label} activity"))
        # max: jupyter_server has been seen to report -1 after a failed websocket handshake.
        connections += max(0, int(kernel.get("connections") or 0))
    if connections:
        text = f"{connections} open kernel connection{'s' if connections != 1 else ''}"
        if settings.count_kernel_connections:
            busy.append(text)
        else:
            notes.append(f"{text} (not counted)")
    notes.append(f"jupyter: {len(kernels)} kernel(s)")


def cpu_use(settings: Settings, now: float, sample: CpuSample | None, previous: dict | None):
    """(percent of one core since the previous sample or None, the busiest process, a note)."""
    if sample is None:
        return None, "", ""
    if not previous or abs(float(previous.get("boot", 0)) - sample.boot) > BOOT_TOLERANCE_SECONDS:
        return None, "", "cpu: first sample"
    window = now - float(previous.get("at", now))
    if window < MIN_CPU_WINDOW_SECONDS:
        return None, "", "cpu: samples too close"
    before = previous.get("ticks") or {}
    # A process not seen last time started since (its whole time is new); a process that ended
    # since is gone from both sides; a process's own times never go down.
    deltas = {key: ticks - int(before.get(key, 0)) for key, ticks in sample.ticks.items()}
    total = sum(max(0, d) for d in deltas.values())
    percent = 100.0 * total / sample.clock_ticks / window
    top = max(deltas, key=deltas.get) if deltas and total else ""
    return percent, sample.labels.get(top, ""), f"cpu {percent:.1f}%"


def decide(settings: Settings, obs: Observation, state: dict) -> Decision:
    """The whole decision, from plain values only (no I/O): see the module docstring."""
    now, limit = obs.now, settings.limit
    state = dict(state)
    busy: list[str] = []  # in use now
    hold: list[str] = []  # unknown: keeps the host up, but is no use
    notes: list[str] = list(obs.notes)
    activity: list[tuple[float, str]] = [(obs.boot, "boot")]
    if obs.configured is not None:
        activity.append((obs.configured, "idle-stop configured"))
    if state.get("last_busy"):
        activity.append((float(state["last_busy"]), "last seen in use"))

    # Jupyter. One that cannot be asked keeps the host up, for one limit at most: one that stays
    # unreadable (hung, misconfigured) must not keep a GPU running for ever.
    error = obs.jupyter_error
    if obs.jupyter is not None and error is None:
        try:
            read_jupyter(settings, obs.jupyter, busy, activity, notes)
        except (AttributeError, KeyError, TypeError, ValueError) as err:
            error = f"jupyter answered something unexpected: {err!r}"
    if error is None:
        state.pop("unknown_since", None)
    else:
        unknown_since = float(state.setdefault("unknown_since", now))
        if now - unknown_since < limit:
            hold.append(f"cannot tell ({error})")
        else:
            notes.append(f"ignored, unknown for {fmt_duration(now - unknown_since)}: {error}")

    # Terminals.
    idle_terms = []
    for term in obs.terminals:
        idle = now - term.last_input
        if settings.count_idle_tty_sessions:
            busy.append(f"tty session {term.user}@{term.tty} (idle {fmt_duration(idle)})")
        else:
            activity.append((term.last_input, f"input on {term.user}@{term.tty}"))
            idle_terms.append(term)
    if idle_terms:
        notes.append("tty: " + ", ".join(f"{t.user}@{t.tty} idle {fmt_duration(now - t.last_input)}" for t in idle_terms))
    elif not obs.terminals:
        notes.append("no tty sessions")

    # GPU.
    if settings.gpu_threshold is not None and obs.gpus is not None:
        for index, value in obs.gpus:
            if value > settings.gpu_threshold:
                busy.append(f"gpu {index} at {value:g}% > {settings.gpu_threshold:g}%")
        notes.append("gpu " + (" ".join(f"{i}:{v:g}%" for i, v in obs.gpus) if obs.gpus else "utilisation n/a"))

    # CPU of the counted users' processes, since the previous run.
    if settings.cpu_threshold is not None and obs.cpu is not None:
        percent, top, note = cpu_use(settings, now, obs.cpu, state.get("cpu"))
        if percent is not None and percent > settings.cpu_threshold:
            busy.append(f"cpu {percent:.0f}% of a core > {settings.cpu_threshold:g}%" + (f" ({top})" if top else ""))
        elif note:
            notes.append(note)
        if note != "cpu: samples too close":
            state["cpu"] = {"boot": obs.cpu.boot, "at": now, "ticks": dict(obs.cpu.ticks)}

    if busy:
        state["last_busy"] = now
        state.pop("warned_for", None)
    if busy or hold:
        return Decision("keep", tuple(busy + hold), None, "", None, tuple(notes), (), state)

    since, what = max(activity)
    stop_at = since + limit
    if now >= stop_at:
        return Decision("stop", (), since, what, stop_at, tuple(notes), (), state)
    if settings.warning > 0 and now >= stop_at - settings.warning and state.get("warned_for") != since:
        state["warned_for"] = since
        return Decision("warn", (), since, what, stop_at, tuple(notes), tuple(idle_terms), state)
    return Decision("keep", (), since, what, stop_at, tuple(notes), (), state)


def warning_message(decision: Decision, now: float) -> str:
    idle_for = now - (decision.idle_since or now)
    return (
        f"this host has been idle for {fmt_duration(idle_for)} and will power off in "
        f"{fmt_duration((decision.stop_at or now) - now)} unless it is used ({WHAT_COUNTS})"
    )


def log_line(settings: Settings, decision: Decision, now: float, dry_run: bool, reached: list[str] | None) -> str:
    """The one journal line of a run."""
    tail = " | " + "; ".join(decision.notes) if decision.notes else ""
    if decision.in_use:
        return "busy: " + "; ".join(decision.in_use) + tail
    assert decision.idle_since is not None and decision.stop_at is not None
    idle_for = max(0.0, now - decision.idle_since)
    detail = f"(last: {decision.last_activity}, {fmt_duration(idle_for)} ago)"
    head = f"idle for {fmt_duration(idle_for)}"
    if decision.verdict == "stop":
        action = "would power off (dry run)" if dry_run else "powering off"
        return f"{head} >= {fmt_duration(settings.limit)} {detail}: {action}{tail}"
    extra = ""
    if decision.verdict == "warn":
        left = fmt_duration(decision.stop_at - now)
        if dry_run:
            extra = f"; would warn {len(decision.warn)} terminal(s) (dry run)"
        else:
            names = " " + ", ".join(reached) if reached else ""
            extra = f"; warned {len(reached or [])} terminal(s){names}: power off in {left}"
    stop = f", stop at {fmt_time(decision.stop_at)[11:]}"
    return f"{head} < {fmt_duration(settings.limit)} {detail}{stop}{extra}{tail}"


def status_text(settings: Settings, decision: Decision, now: float, dry_run: bool, host: str = "") -> str:
    """What `!cat /var/lib/idle-stop/status` shows in a notebook cell."""
    lines = [f"idle-stop{' on ' + host if host else ''}, checked {fmt_time(now)}"]
    limit = f"powers the host off after {fmt_duration(settings.limit)} without use"
    if settings.warning > 0:
        limit += f"; terminals are warned {fmt_duration(settings.warning)} before"
    if dry_run:
        limit += " (dry run: it only logs)"
    if decision.in_use:
        lines += [
            "state:        in use",
            "in use by:    " + "; ".join(decision.in_use),
            "idle since:   -",
            f"planned stop: none while in use; it {limit}",
        ]
    else:
        assert decision.idle_since is not None and decision.stop_at is not None
        idle_for = fmt_duration(now - decision.idle_since)
        if decision.verdict == "stop":
            planned = f"now ({'dry run: not powering off' if dry_run else 'powering off'})"
        else:
            planned = f"{fmt_time(decision.stop_at)} (in {fmt_duration(decision.stop_at - now)}) unless the host is used"
        lines += [
            f"state:        idle for {idle_for}",
            "in use by:    nothing",
            f"idle since:   {fmt_time(decision.idle_since)} (last: {decision.last_activity})",
            f"planned stop: {planned}",
            f"rule:         it {limit}; to keep it up: {WHAT_COUNTS}",
        ]
    if decision.notes:
        lines.append("checked:      " + "; ".join(decision.notes))
    return "\n".join(lines) + "\n"


# =========================================================================== the runner: gather
def boot_time() -> float:
    """When the system started: PID 1's start time (right for VMs and for containers alike)."""
    with open("/proc/uptime", encoding="ascii") as fh:
        uptime = float(fh.read().split()[0])
    with open("/proc/1/stat", encoding="ascii", errors="replace") as fh:
        stat = fh.read()
    # Field 22 (starttime, in clock ticks since boot); the command name may contain spaces.
    start_ticks = int(stat[stat.rfind(")") + 2 :].split()[19])
    return time.time() - uptime + start_ticks / os.sysconf("SC_CLK_TCK")


def jupyter_get(base_url: str, path: str, token: str, timeout: float) -> object:
    # no_track_activity: our own polling must not count as use of the server.
    url = f"{base_url.rstrip('/')}/{path.lstrip('/')}?no_track_activity=1"
    req = urllib.request.Request(url, headers={"Authorization": f"token {token}"} if token else {})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read().decode("utf-8"))


def gather_jupyter(cfg: dict, notes: list) -> tuple[dict | None, str | None]:
    """(the three answers, None), (None, why it cannot tell), or (None, None) when nothing runs."""
    base_url = cfg.get("jupyter_url") or ""
    if not base_url:
        return None, None
    token = ""
    token_file = cfg.get("jupyter_token_file") or ""
    if token_file:
        try:
            with open(token_file, encoding="utf-8") as fh:
                token = fh.read().strip()
        except FileNotFoundError:
            # No token file: the runtime is not installed (yet); nothing of it can be in use.
            notes.append(f"jupyter: no token file {token_file}")
            return None, None
        except OSError as err:
            return None, f"jupyter token file {token_file}: {err.strerror}"
    timeout = float(cfg.get("jupyter_timeout_seconds", 10))
    try:
        return {path: jupyter_get(base_url, f"api/{path}", token, timeout) for path in ("status", "kernels", "sessions")}, None
    except urllib.error.HTTPError as err:
        return None, f"jupyter answered HTTP {err.code} (token or URL wrong?)"
    except urllib.error.URLError as err:
        reason = getattr(err, "reason", err)
        if isinstance(reason, ConnectionRefusedError):
            # Server down: no kernel of it can be in use.
            notes.append("jupyter: not running")
            return None, None
        return None, f"jupyter unreachable: {reason}"
    except (OSError, ValueError) as err:
        return None, f"jupyter unreadable: {err}"


# Parents of an interactive login's first process: sshd (OpenSSH < 9.8 / >= 9.8) and login(1)
# for consoles, including EC2's serial console. Not tmux or screen: a detached multiplexer is
# not somebody logged in.
LOGIN_PARENTS = ("sshd", "sshd-session", "login", "mosh-server")


def terminal_names() -> dict[int, str]:
    """Device number -> name ("pts/3", "ttyS0") of the terminals in /dev."""
    names = {}
    for directory, prefix in (("/dev/pts", "pts/"), ("/dev", "")):
        try:
            entries = os.listdir(directory)
        except OSError:
            continue
        for entry in entries:
            if directory == "/dev" and not entry.startswith(("tty", "console")):
                continue
            with contextlib.suppress(OSError):
                names.setdefault(os.stat(os.path.join(directory, entry)).st_rdev, prefix + entry)
    return names


def proc_stat_fields(pid: str) -> list[str]:
    """/proc/<pid>/stat after the command name (field 3 onwards; the name may hold spaces)."""
    with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
        stat = fh.read()
    return stat[stat.rfind(")") + 2 :].split()


def gather_terminals() -> tuple[Terminal, ...]:
    """Interactive logins WITH a terminal, as `w` lists them, read from /proc.

    A login's first process leads its session and has the terminal as controlling tty; its
    parent is sshd or login. /proc works everywhere: utmp is gone on Debian 13, and logind
    records no terminal for sshd sessions (their PAM_TTY is "ssh"), so neither can tell a
    terminal login from the tunnel's session without one.
    """
    names = None
    out: dict[str, Terminal] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = proc_stat_fields(entry)
            ppid, sid, tty_nr = int(fields[1]), int(fields[3]), int(fields[4])
            if sid != int(entry) or tty_nr == 0:
                continue
            with open(f"/proc/{ppid}/comm", encoding="ascii", errors="replace") as fh:
                if fh.read().strip() not in LOGIN_PARENTS:
                    continue
            uid = os.stat(f"/proc/{entry}").st_uid
        except (OSError, ValueError, IndexError):
            continue  # the process ended meanwhile
        if names is None:
            names = terminal_names()
        tty = names.get(tty_nr)
        if tty is None or tty in out:
            continue
        try:
            user = pwd.getpwuid(uid).pw_name
        except KeyError:
            user = str(uid)
        try:
            # The terminal's atime is its last input, as `w` shows it.
            out[tty] = Terminal(user, tty, os.stat(f"/dev/{tty}").st_atime)
        except OSError:
            continue
    return tuple(out.values())


def gather_gpus(cfg: dict, notes: list) -> tuple[tuple[str, float], ...] | None:
    if cfg.get("gpu_utilization_threshold") is None:
        return None
    smi = shutil.which("nvidia-smi")
    if not smi:
        notes.append("gpu: no nvidia-smi")
        return None
    try:
        res = subprocess.run(
            [smi, "--query-gpu=index,utilization.gpu", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=20, check=True,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError) as err:
        # A broken driver says nothing about use; the other checks still decide.
        notes.append(f"gpu: nvidia-smi failed ({err.__class__.__name__})")
        return None
    gpus = []
    for line in res.stdout.splitlines():
        index, _, util = line.partition(",")
        with contextlib.suppress(ValueError):  # "[N/A]"
            gpus.append((index.strip(), float(util.strip())))
    return tuple(gpus)


def unit_main_pids(units: list[str]) -> set[int]:
    """Main processes of the given systemd units (0 when a unit is not running)."""
    pids = set()
    for unit in units:
        with contextlib.suppress(OSError, subprocess.SubprocessError, ValueError):
            res = subprocess.run(
                ["systemctl", "show", "--property=MainPID", "--value", unit],
                capture_output=True, text=True, timeout=20, check=True,
            )  # fmt: skip
            pids.add(int(res.stdout.strip() or 0))
    pids.discard(0)
    return pids


def gather_cpu(cfg: dict, boot: float, notes: list) -> CpuSample | None:
    """CPU times of the processes of cfg["cpu_users"], except the main process of each unit in
    cfg["cpu_exclude_units"] (the Jupyter server: its work is answering requests, which its
    last_activity counts already, and its start-up after a boot would look like a job)."""
    if cfg.get("cpu_threshold_percent") is None or not cfg.get("cpu_users"):
        return None
    uids = {}
    for name in cfg["cpu_users"]:
        try:
            uids[pwd.getpwnam(name).pw_uid] = name
        except KeyError:
            notes.append(f"cpu: no user {name}")
    if not uids:
        return None
    excluded = unit_main_pids(cfg.get("cpu_exclude_units") or [])
    ticks, labels = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in excluded:
            continue
        try:
            uid = os.stat(f"/proc/{entry}").st_uid
            if uid not in uids:
                continue
            fields = proc_stat_fields(entry)
            with open(f"/proc/{entry}/comm", encoding="ascii", errors="replace") as fh:
                comm = fh.read().strip()
        except (OSError, ValueError):
            continue  # the process ended meanwhile
        # Fields 14-17 (utime, stime, cutime, cstime) and 22 (starttime), counted from field 3.
        key = f"{entry}:{fields[19]}"
        ticks[key] = sum(int(v) for v in fields[11:15])
        labels[key] = f"{uids[uid]}: {comm} pid {entry}"
    return CpuSample(boot=boot, ticks=ticks, labels=labels, clock_ticks=os.sysconf("SC_CLK_TCK"))


def gather(cfg: dict, config_path: str) -> Observation:
    notes: list[str] = []
    now = time.time()
    boot = boot_time()
    configured = None
    with contextlib.suppress(OSError):
        configured = os.stat(config_path).st_mtime
    answers, error = gather_jupyter(cfg, notes)
    terminals = gather_terminals()
    gpus = gather_gpus(cfg, notes)
    cpu = gather_cpu(cfg, boot, notes)
    return Observation(
        now=now, boot=boot, configured=configured, jupyter=answers, jupyter_error=error,
        terminals=terminals, gpus=gpus, cpu=cpu, notes=tuple(notes),
    )  # fmt: skip


# =========================================================================== the runner: act
def load_state(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            state = json.load(fh)
        return state if isinstance(state, dict) else {}
    except (OSError, ValueError):
        return {}


def write_atomic(path: str, text: str, mode: int) -> None:
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def warn_terminals(terminals: tuple[Terminal, ...], message: str) -> list[str]:
    """Write the warning on each idle terminal, as wall(1) does (which needs utmp or logind)."""
    reached = []
    text = f"\r\n\a*** idle-stop: {message} ***\r\n".encode()
    for term in terminals:
        try:
            fd = os.open(f"/dev/{term.tty}", os.O_WRONLY | os.O_NOCTTY | os.O_NONBLOCK)
            try:
                os.write(fd, text)
            finally:
                os.close(fd)
            reached.append(f"{term.user}@{term.tty}")
        except OSError:
            continue
    return reached


def log(line: str) -> None:
    print(f"{TAG} {line}", flush=True)


def run(cfg: dict, dry_run: bool, config_path: str = DEFAULT_CONFIG) -> int:
    settings = Settings.from_config(cfg)
    if settings.limit <= 0:
        log("disabled (limit 0)")
        return 0
    state_file = cfg.get("state_file", DEFAULT_STATE_FILE)
    status_file = cfg.get("status_file") or os.path.join(os.path.dirname(state_file), "status")
    obs = gather(cfg, config_path)
    decision = decide(settings, obs, load_state(state_file))

    reached = None
    if decision.verdict == "warn" and not dry_run:
        reached = warn_terminals(decision.warn, warning_message(decision, obs.now))
    write_atomic(state_file, json.dumps(decision.state), 0o644)
    # World-readable on purpose: the notebook's user reads it (`!cat` in a cell).
    write_atomic(status_file, status_text(settings, decision, obs.now, dry_run, socket.gethostname()), 0o644)
    log(log_line(settings, decision, obs.now, dry_run, reached))
    if decision.verdict == "stop" and not dry_run:
        # A moment for the line to reach the journal's readers (`journalctl -f` over SSH) before
        # the shutdown cuts their connections.
        time.sleep(POWEROFF_DELAY_SECONDS)
        subprocess.run(["systemctl", "poweroff"], check=True, timeout=60)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Power the host off when it has been idle for the configured time.")
    parser.add_argument("--config", default=DEFAULT_CONFIG, help=f"JSON configuration (default {DEFAULT_CONFIG})")
    parser.add_argument("--dry-run", action="store_true", help="decide and log, never power off or warn")
    args = parser.parse_args(argv)
    try:
        with open(args.config, encoding="utf-8") as fh:
            cfg = json.load(fh)
    except FileNotFoundError:
        # Not configured (yet, or any more): never power off on a guess.
        log(f"no configuration {args.config}: nothing to do")
        return 0
    except (OSError, ValueError) as err:
        log(f"error: cannot read configuration {args.config}: {err}")
        return 2
    return run(cfg, dry_run=args.dry_run or bool(cfg.get("dry_run", False)), config_path=args.config)


if __name__ == "__main__":
    sys.exit(main())
