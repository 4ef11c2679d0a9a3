#!/usr/bin/env python3
"""Keep one OpenSSH port forward alive on the controller (Linux or macOS).

    colab_tunnel_supervisor.py --pidfile P --logfile L [--mkdir DIR] -- ssh ARGS...

Daemonizes, runs ssh, and starts it again whenever it exits — whatever the reason, including
SIGKILL (autossh gives up in that case). A short back-off avoids a tight loop while the host is
unreachable. --mkdir re-creates ssh's control socket directory (mode 0700) before each start: it
lives in /tmp, which a cleaner may empty while the tunnel runs. SIGTERM to the supervisor stops ssh and removes the pid file.
Used where neither a systemd user manager nor launchd is available to do the same job.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time

BACKOFF_MIN, BACKOFF_MAX = 1.0, 10.0
STABLE_AFTER = 30.0  # a run this long resets the back-off


def log(fh, msg: str) -> None:
    fh.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} supervisor[{os.getpid()}]: {msg}\n")
    fh.flush()


def daemonize() -> None:
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    os.chdir("/")
    os.umask(0o077)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pidfile", required=True)
    parser.add_argument("--logfile", required=True)
    parser.add_argument("--foreground", action="store_true")
    parser.add_argument("--mkdir", help="directory to create (mode 0700) before each start")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given")

    if not args.foreground:
        daemonize()
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    logfh = open(args.logfile, "a", buffering=1)  # lives as long as the process
    os.dup2(logfh.fileno(), 1)
    os.dup2(logfh.fileno(), 2)
    with open(args.pidfile, "w") as fh:
        fh.write(f"{os.getpid()}\n")

    child: subprocess.Popen | None = None
    stopping = False

    def stop(signum, _frame):
        nonlocal stopping
        stopping = True
        if child and child.poll() is None:
            child.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)

    backoff = BACKOFF_MIN
    try:
        while not stopping:
            started = time.monotonic()
            if args.mkdir:
                os.makedirs(args.mkdir, mode=0o700, exist_ok=True)
            child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=logfh, stderr=logfh)
            with open(args.pidfile + ".child", "w") as fh:
                fh.write(f"{child.pid}\n")
            log(logfh, f"started ssh pid {child.pid}")
            rc = child.wait()
            if stopping:
                break
            ran = time.monotonic() - started
            backoff = BACKOFF_MIN if ran >= STABLE_AFTER else min(backoff * 2, BACKOFF_MAX)
            log(logfh, f"ssh exited with {rc} after {ran:.1f}s; restarting in {backoff:.0f}s")
            deadline = time.monotonic() + backoff
            while not stopping and time.monotonic() < deadline:
                time.sleep(0.2)
    finally:
        if child and child.poll() is None:
            child.terminate()
            try:
                child.wait(timeout=5)
            except subprocess.TimeoutExpired:
                child.kill()
        for path in (args.pidfile, args.pidfile + ".child"):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        log(logfh, "stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
