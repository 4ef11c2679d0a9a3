#!/usr/bin/python3
"""idle-stop: power the host off once nothing has used it for the configured time.

Run by idle-stop.timer. Python 3 standard library only, so it works on any host with python3.

"Used" means any of (each gives a reason in the log line):
  * a Jupyter kernel is busy (a cell runs, even with no browser attached), or has an open
    websocket connection (a notebook open in a browser tab) when count_kernel_connections;
  * a kernel's, or the Jupyter server's own (REST API, terminals), last activity is recent;
  * an interactive login with a terminal (TTY) whose terminal saw input recently; every login
    with a TTY when count_idle_tty_sessions is true. Logins WITHOUT a terminal never count: the
    Colab SSH tunnel keeps one open on purpose (it runs a session command so that sshd disables
    Nagle's algorithm), and a forgotten tunnel with no notebook must not keep a GPU host running;
  * GPU utilisation above the threshold (nvidia-smi; skipped when it is absent);
  * the host booted recently, was last seen in use recently (state file), or idle-stop was
    (re)configured recently (so lowering the limit never powers a host off in mid-deployment).

The host is idle for (now - the latest of those times). Once that reaches the limit it powers
off (systemctl poweroff; on EC2 the instance's shutdown behaviour "stop" keeps the disk). A
configurable time before that, every idle terminal gets a warning. Every run logs one line.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import pwd
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request

DEFAULT_CONFIG = "/etc/idle-stop.json"
POWEROFF_DELAY_SECONDS = 2
TAG = "idle_stop:"
# Only "busy" means a cell is running. A kernel stays "starting" until a client first connects,
# possibly forever: that state counts through its last_activity like any other.
BUSY_KERNEL_STATES = ("busy",)


class CannotTell(Exception):
    """A check failed in a way that leaves the host's use unknown: keep the host up."""


# --------------------------------------------------------------------------- small helpers
def fmt_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    return f"{seconds // 60} min"


def parse_iso(value: str) -> float:
    """Jupyter's ISO 8601 UTC timestamps ("2025-01-01T10:00:00.123456Z") as epoch seconds."""
    value = value.strip()
    if value.endswith("Z"):
        value = value[:-1] + "+00:00"
    stamp = dt.datetime.fromisoformat(value)
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.timezone.utc)
    return stamp.timestamp()


def boot_time() -> float:
    """When the system started: PID 1's start time (right for VMs and for containers alike)."""
    with open("/proc/uptime", encoding="ascii") as fh:
        uptime = float(fh.read().split()[0])
    with open("/proc/1/stat", encoding="ascii", errors="replace") as fh:
        stat = fh.read()
    # Field 22 (starttime, in clock ticks since boot); the command name may contain spaces.
    start_ticks = int(stat[stat.rfind(")") + 2 :].split()[19])
    return time.time() - uptime + start_ticks / os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- Jupyter
def jupyter_get(base_url: str, path: str, token: str, timeout: float) -> object:
    # no_track_activity: our own polling must not count as use of the server.
    url = f"{base_url.rstrip('/')}/{path.lstrip('/')}?no_track_activity=1"
    req = urllib.request.Request(url, headers={"Authorization": f"token {token}"} if token else {})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read().decode("utf-8"))


def check_jupyter(cfg: dict, busy: list, activity: list, notes: list) -> None:
    base_url = cfg.get("jupyter_url") or ""
    if not base_url:
        return
    token = ""
    token_file = cfg.get("jupyter_token_file") or ""
    if token_file:
        try:
            with open(token_file, encoding="utf-8") as fh:
                token = fh.read().strip()
        except FileNotFoundError:
            # No token file: the runtime is not installed (yet); nothing of it can be in use.
            notes.append(f"jupyter: no token file {token_file}")
            return
        except OSError as err:
            raise CannotTell(f"jupyter token file {token_file}: {err.strerror}") from err
    timeout = float(cfg.get("jupyter_timeout_seconds", 10))
    try:
        status = jupyter_get(base_url, "api/status", token, timeout)
        kernels = jupyter_get(base_url, "api/kernels", token, timeout)
        sessions = jupyter_get(base_url, "api/sessions", token, timeout)
    except urllib.error.HTTPError as err:
        raise CannotTell(f"jupyter answered HTTP {err.code} (token or URL wrong?)") from err
    except urllib.error.URLError as err:
        reason = getattr(err, "reason", err)
        if isinstance(reason, ConnectionRefusedError):
            # Server down: no kernel of it can be in use.
            notes.append("jupyter: not running")
            return
        raise CannotTell(f"jupyter unreachable: {reason}") from err
    except (OSError, ValueError) as err:
        raise CannotTell(f"jupyter unreadable: {err}") from err

    try:
        read_jupyter_state(cfg, status, kernels, sessions, busy, activity, notes)
    except (AttributeError, KeyError, TypeError, ValueError) as err:
        raise CannotTell(f"jupyter answered something unexpected: {err!r}") from err


def read_jupyter_state(cfg: dict, status, kernels, sessions, busy: list, activity: list, notes: list) -> None:
    """Reasons and activity times from /api/status, /api/kernels and /api/sessions."""
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
        connections += int(kernel.get("connections") or 0)
    if connections:
        text = f"{connections} open kernel connection{'s' if connections != 1 else ''}"
        if cfg.get("count_kernel_connections", True):
            busy.append(text)
        else:
            notes.append(f"{text} (not counted)")
    notes.append(f"jupyter: {len(kernels)} kernel(s)")


# --------------------------------------------------------------------------- terminals
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


def tty_sessions() -> list[dict]:
    """Interactive logins WITH a terminal, as `w` lists them, read from /proc.

    A login's first process leads its session and has the terminal as controlling tty; its
    parent is sshd or login. /proc works everywhere: utmp is gone on Debian 13, and logind
    records no terminal for sshd sessions (their PAM_TTY is "ssh"), so neither can tell a
    terminal login from the tunnel's session without one.
    """
    names = None
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as fh:
                stat = fh.read()
            fields = stat[stat.rfind(")") + 2 :].split()
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
        if tty_nr not in names:
            continue
        try:
            user = pwd.getpwuid(uid).pw_name
        except KeyError:
            user = str(uid)
        out.append({"user": user, "tty": names[tty_nr]})
    return out


def check_terminals(cfg: dict, now: float, busy: list, activity: list, notes: list) -> list[dict]:
    """Counts terminal logins; returns the idle ones (they get the warning)."""
    sessions = tty_sessions()
    idle_sessions = []
    seen = set()
    for sess in sessions:
        if sess["tty"] in seen:
            continue
        seen.add(sess["tty"])
        try:
            # The terminal's atime is its last input, as `w` shows it.
            last_input = os.stat(f"/dev/{sess['tty']}").st_atime
        except OSError:
            continue
        sess["idle"] = now - last_input
        label = f"tty session {sess['user']}@{sess['tty']} (idle {fmt_duration(sess['idle'])})"
        if cfg.get("count_idle_tty_sessions", False):
            busy.append(label)
        else:
            activity.append((last_input, f"input on {sess['user']}@{sess['tty']}"))
            idle_sessions.append(sess)
    if idle_sessions:
        notes.append(
            "tty: " + ", ".join(f"{s['user']}@{s['tty']} idle {fmt_duration(s['idle'])}" for s in idle_sessions)
        )
    elif not sessions:
        notes.append("no tty sessions")
    return idle_sessions


# --------------------------------------------------------------------------- GPU
def check_gpu(cfg: dict, busy: list, notes: list) -> None:
    threshold = cfg.get("gpu_utilization_threshold")
    if threshold is None:
        return
    smi = shutil.which("nvidia-smi")
    if not smi:
        notes.append("gpu: no nvidia-smi")
        return
    try:
        res = subprocess.run(
            [smi, "--query-gpu=index,utilization.gpu", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=20, check=True,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError) as err:
        # A broken driver says nothing about use; the other checks still decide.
        notes.append(f"gpu: nvidia-smi failed ({err.__class__.__name__})")
        return
    utils = []
    for line in res.stdout.splitlines():
        index, _, util = line.partition(",")
        try:
            value = float(util.strip())
        except ValueError:
            continue  # "[N/A]"
        utils.append(f"{index.strip()}:{value:g}%")
        if value > float(threshold):
            busy.append(f"gpu {index.strip()} at {value:g}% > {threshold}%")
    notes.append("gpu " + (" ".join(utils) if utils else "utilisation n/a"))


# --------------------------------------------------------------------------- state, actions
def load_state(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            state = json.load(fh)
        return state if isinstance(state, dict) else {}
    except (OSError, ValueError):
        return {}


def save_state(path: str, state: dict) -> None:
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(state, fh)
    os.replace(tmp, path)


def warn_terminals(sessions: list[dict], message: str) -> list[str]:
    """Write the warning on each idle terminal, as wall(1) does (which needs utmp or logind)."""
    reached = []
    text = f"\r\n\a*** idle-stop: {message} ***\r\n".encode()
    for sess in sessions:
        try:
            fd = os.open(f"/dev/{sess['tty']}", os.O_WRONLY | os.O_NOCTTY | os.O_NONBLOCK)
            try:
                os.write(fd, text)
            finally:
                os.close(fd)
            reached.append(f"{sess['user']}@{sess['tty']}")
        except OSError:
            continue
    return reached


def log(line: str) -> None:
    print(f"{TAG} {line}", flush=True)


# --------------------------------------------------------------------------- decision
def run(cfg: dict, dry_run: bool, config_path: str = DEFAULT_CONFIG) -> int:
    now = time.time()
    limit = float(cfg["limit_seconds"])
    warn = float(cfg.get("warning_seconds", 0))
    if limit <= 0:
        log("disabled (limit 0)")
        return 0
    state_file = cfg.get("state_file", "/var/lib/idle-stop/state.json")
    state = load_state(state_file)

    busy: list[str] = []  # in use now
    hold: list[str] = []  # unknown: keeps the host up, but is no use
    notes: list[str] = []
    activity: list[tuple[float, str]] = [(boot_time(), "boot")]
    with contextlib.suppress(OSError):
        activity.append((os.stat(config_path).st_mtime, "idle-stop configured"))
    if state.get("last_busy"):
        activity.append((float(state["last_busy"]), "last seen in use"))
    try:
        check_jupyter(cfg, busy, activity, notes)
        state.pop("unknown_since", None)
    except CannotTell as err:
        # A Jupyter that cannot be asked keeps the host up, for one limit at most: one that stays
        # unreadable (hung, misconfigured) must not keep a GPU running for ever.
        unknown_since = float(state.setdefault("unknown_since", now))
        if now - unknown_since < limit:
            hold.append(f"cannot tell ({err})")
        else:
            notes.append(f"ignored, unknown for {fmt_duration(now - unknown_since)}: {err}")
    idle_terms = check_terminals(cfg, now, busy, activity, notes)
    check_gpu(cfg, busy, notes)
    tail = " | " + "; ".join(notes) if notes else ""

    if busy:
        state["last_busy"] = now
        state.pop("warned_for", None)
    if busy or hold:
        save_state(state_file, state)
        log("busy: " + "; ".join(busy + hold) + tail)
        return 0

    since, what = max(activity)
    idle_for = max(0.0, now - since)
    detail = f"(last: {what}, {fmt_duration(idle_for)} ago)"
    if idle_for >= limit:
        save_state(state_file, state)
        if dry_run:
            log(f"idle for {fmt_duration(idle_for)} >= {fmt_duration(limit)} {detail}: would power off (dry run){tail}")
            return 0
        log(f"idle for {fmt_duration(idle_for)} >= {fmt_duration(limit)} {detail}: powering off{tail}")
        # A moment for the line to reach the journal's readers (`journalctl -f` over SSH) before
        # the shutdown cuts their connections.
        time.sleep(POWEROFF_DELAY_SECONDS)
        subprocess.run(["systemctl", "poweroff"], check=True, timeout=60)
        return 0

    extra = ""
    if warn > 0 and idle_for >= limit - warn and state.get("warned_for") != since:
        left = fmt_duration(limit - idle_for)
        msg = (
            f"this host has been idle for {fmt_duration(idle_for)} and will power off in {left} "
            "unless it is used (a notebook cell, an open notebook, or input on a terminal)"
        )
        if dry_run:
            extra = f"; would warn {len(idle_terms)} terminal(s) (dry run)"
        else:
            reached = warn_terminals(idle_terms, msg)
            extra = (
                f"; warned {len(reached)} terminal(s){' ' + ', '.join(reached) if reached else ''}: power off in {left}"
            )
            state["warned_for"] = since
    save_state(state_file, state)
    log(f"idle for {fmt_duration(idle_for)} < {fmt_duration(limit)} {detail}{extra}{tail}")
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
