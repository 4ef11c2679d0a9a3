"""A headless Chromium driven over the DevTools protocol (CDP) with websocket-client.

Only what the Colab page tests need: start Chromium with a fresh profile, grant a permission the
way a user clicking "Allow" would, open a page, evaluate a promise in it, and collect the
browser's console/network log lines (where Chromium reports refused handshakes and CORS errors).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import websocket

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome")
# Headless, as root in a container/VM, and quiet: no GPU, no background fetches to Google.
BASE_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--no-proxy-server",
    "--ignore-certificate-errors",
    "--remote-debugging-port=0",
    "about:blank",
]


def find_chromium() -> str | None:
    for name in CHROMIUM_CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


class CDPError(RuntimeError):
    pass


class Chromium:
    """One headless Chromium process and one CDP connection (flattened target sessions)."""

    def __init__(self, flags: list[str] | None = None, binary: str | None = None, timeout: float = 30) -> None:
        self.binary = binary or find_chromium()
        if not self.binary:
            raise FileNotFoundError("no Chromium found (apt-get install chromium)")
        self.profile = tempfile.TemporaryDirectory(prefix="colab-chromium-")
        self.log_path = Path(self.profile.name) / "chromium.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 -- closed in close()
        self.proc = subprocess.Popen(
            [
                self.binary,
                f"--user-data-dir={self.profile.name}/profile",
                *BASE_FLAGS[:-1],
                *(flags or []),
                BASE_FLAGS[-1],
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._ids = itertools.count(1)
        self.events: list[dict] = []
        self.ws = self._connect(timeout)

    # -- connection
    def _connect(self, timeout: float) -> websocket.WebSocket:
        port_file = Path(self.profile.name) / "profile" / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while not (port_file.exists() and len(port_file.read_text().splitlines()) >= 2):
            if self.proc.poll() is not None:
                raise CDPError(f"chromium exited ({self.proc.returncode}): {self.log_path.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise CDPError(f"chromium opened no DevTools port in {timeout}s")
            time.sleep(0.05)
        port, path = port_file.read_text().splitlines()[:2]
        # No Origin header: Chromium refuses DevTools websockets from origins it was not told about.
        return websocket.create_connection(f"ws://127.0.0.1:{port}{path}", timeout=timeout, suppress_origin=True)

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 60) -> dict:
        """Send one command and wait for its answer; events that arrive meanwhile are kept."""
        msg_id = next(self._ids)
        msg: dict = {"id": msg_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self.ws.send(json.dumps(msg))
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CDPError(f"{method}: no answer in {timeout}s")
            self.ws.settimeout(remaining)
            incoming = json.loads(self.ws.recv())
            if incoming.get("id") == msg_id:
                if "error" in incoming:
                    raise CDPError(f"{method}: {incoming['error']}")
                return incoming.get("result", {})
            if "method" in incoming:
                self.events.append(incoming)

    def wait_event(self, method: str, session: str | None = None, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for i, ev in enumerate(self.events):
                if ev["method"] == method and (session is None or ev.get("sessionId") == session):
                    return self.events.pop(i)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CDPError(f"no {method} event in {timeout}s")
            self.ws.settimeout(remaining)
            with contextlib.suppress(websocket.WebSocketTimeoutException):
                self.events.append(json.loads(self.ws.recv()))

    def drain(self, quiet: float = 0.2) -> None:
        """Read the events that are already on their way (until `quiet` seconds pass without any)."""
        while True:
            self.ws.settimeout(quiet)
            try:
                self.events.append(json.loads(self.ws.recv()))
            except websocket.WebSocketTimeoutException:
                return

    # -- browser-level
    def version(self) -> str:
        return self.send("Browser.getVersion")["product"]

    def grant(self, origin: str, permissions: list[str]) -> None:
        """Grant permissions to an origin, as a user answering the browser's prompt would."""
        self.send("Browser.grantPermissions", {"origin": origin, "permissions": permissions})

    def open(self, url: str, timeout: float = 30) -> Page:
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self, target, session)
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable", session=session)
        page.navigate(url, timeout)
        return page

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.send("Browser.close", timeout=5)
        with contextlib.suppress(Exception):
            self.ws.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._log.close()
        self.profile.cleanup()

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Page:
    """A tab attached through a flattened CDP session."""

    def __init__(self, browser: Chromium, target: str, session: str) -> None:
        self.browser, self.target, self.session = browser, target, session

    def navigate(self, url: str, timeout: float = 30) -> None:
        result = self.browser.send("Page.navigate", {"url": url}, session=self.session, timeout=timeout)
        if result.get("errorText"):
            raise CDPError(f"navigating to {url}: {result['errorText']}")
        self.browser.wait_event("Page.loadEventFired", session=self.session, timeout=timeout)

    def evaluate(self, expression: str, timeout: float = 120):
        """Evaluate an expression (awaiting a promise) and return its JSON value."""
        result = self.browser.send(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True, "timeout": timeout * 1000},
            session=self.session,
            timeout=timeout + 5,
        )
        if "exceptionDetails" in result:
            raise CDPError(f"{expression[:80]}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def call(self, function: str, arg: dict, timeout: float = 120):
        return self.evaluate(f"{function}({json.dumps(arg)})", timeout=timeout)

    def log_lines(self) -> list[str]:
        """Console and network log lines of this page seen so far (e.g. refused handshakes)."""
        self.browser.drain()
        lines = []
        for ev in self.browser.events:
            if ev.get("sessionId") != self.session:
                continue
            if ev["method"] == "Log.entryAdded":
                lines.append(ev["params"]["entry"]["text"])
            elif ev["method"] == "Runtime.consoleAPICalled":
                lines.append(" ".join(str(a.get("value", a.get("description", ""))) for a in ev["params"]["args"]))
            elif ev["method"] == "Runtime.exceptionThrown":
                lines.append(ev["params"]["exceptionDetails"].get("text", ""))
        return lines
