#!/usr/bin/env python3
"""A client that talks to a Jupyter server the way Google Colab's "local runtime" does.

Two flows, both used by Colab:

* ``http_over_ws`` (classic): every REST call travels as a JSON frame over the
  jupyter_http_over_ws websocket (``/http_over_websocket``); the server fetches the auth URL
  (``http://H:P/?token=T``) itself and forwards the cookies it gets. The kernel channel is
  proxied through ``/http_over_websocket/proxied_ws/api/kernels/<id>/channels``.
* ``direct`` (newer): plain REST calls with ``?token=`` and the kernel websocket, every
  request carrying the ``Origin: https://colab.research.google.com`` header a browser adds.

Only the standard library and websocket-client are needed, so the file also works as a
standalone check::

    python3 colab_client.py --url 'http://localhost:8888/?token=T' --flow both \\
        --code 'print(6*7)' --expect 42

It exits non-zero when a flow fails or prints something else than expected.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import json
import os
import re
import statistics
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field

import websocket

COLAB_ORIGIN = "https://colab.research.google.com"
FLOWS = ("http_over_ws", "direct")
# The extension rejects clients asking for a newer protocol than it speaks (0.0.7).
HTTP_OVER_WS_MIN_VERSION = "0.0.7"


class ColabProtocolError(Exception):
    """A request or channel was refused; ``status`` is the HTTP status or websocket close code."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Response:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def json(self):
        return json.loads(self.body.decode("utf-8"))


def parse_runtime_url(url: str) -> tuple[str, str]:
    """Split Colab's connection URL ``http://host:port/?token=T`` into (base URL, token)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"not an http(s) URL: {url!r}")
    token = urllib.parse.parse_qs(parts.query).get("token", [""])[0]
    base = urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))
    return base, token


class ColabClient:
    """One kernel on a Jupyter server, reached through one of Colab's two flows.

    Use as a context manager: the kernel is started on entry and deleted on exit. Given the id
    of a kernel another client started (``kernel_id``), it looks that kernel up through its own
    flow instead, and leaves it running.
    """

    def __init__(
        self,
        base_url: str,
        token: str | None,
        flow: str = "http_over_ws",
        origin: str | None = COLAB_ORIGIN,
        timeout: float = 30.0,
        kernel_id: str | None = None,
    ) -> None:
        if flow not in FLOWS:
            raise ValueError(f"unknown flow {flow!r}; use one of {', '.join(FLOWS)}")
        if "?" in base_url:
            base_url, url_token = parse_runtime_url(base_url)
            token = token if token is not None else url_token
        self.base_url = base_url.rstrip("/")
        self.token = token or ""
        self.flow = flow
        self.origin = origin
        self.timeout = timeout
        self.kernel_id: str | None = kernel_id
        self._owns_kernel = False
        self.session_id = uuid.uuid4().hex
        self._http_ws: websocket.WebSocket | None = None
        self._channel: websocket.WebSocket | None = None
        parts = urllib.parse.urlsplit(self.base_url)
        self._ws_base = urllib.parse.urlunsplit(
            ("wss" if parts.scheme == "https" else "ws", parts.netloc, parts.path, "", "")
        )

    # ------------------------------------------------------------------ context management
    def __enter__(self) -> ColabClient:
        try:
            if self.kernel_id is None:
                self.start_kernel()
            else:
                self.get_kernel()
            self.open_channel()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel, delete the kernel (best effort) and close the transport."""
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        if self.kernel_id is not None and self._owns_kernel:
            try:
                self.request("DELETE", f"/api/kernels/{self.kernel_id}")
            except (OSError, ColabProtocolError, websocket.WebSocketException):
                pass
            self.kernel_id = None
        if self._http_ws is not None:
            self._http_ws.close()
            self._http_ws = None

    # ------------------------------------------------------------------ transport helpers
    @property
    def auth_url(self) -> str:
        """The page the extension fetches to obtain the login and _xsrf cookies."""
        return f"{self.base_url}/?{urllib.parse.urlencode({'token': self.token})}"

    def _ws_options(self) -> dict:
        if self.origin is None:
            return {"suppress_origin": True, "timeout": self.timeout}
        return {"origin": self.origin, "timeout": self.timeout}

    def _connect(self, url: str) -> websocket.WebSocket:
        try:
            return websocket.create_connection(url, **self._ws_options())
        except websocket.WebSocketBadStatusException as err:
            raise ColabProtocolError(f"websocket handshake refused: {err}", err.status_code) from err

    def _http_over_ws(self) -> websocket.WebSocket:
        if self._http_ws is None:
            query = urllib.parse.urlencode(
                {"min_version": HTTP_OVER_WS_MIN_VERSION, "jupyter_http_over_ws_auth_url": self.auth_url}
            )
            self._http_ws = self._connect(f"{self._ws_base}/http_over_websocket?{query}")
        return self._http_ws

    @staticmethod
    def _recv_text(ws: websocket.WebSocket) -> str:
        """Next text frame; a close frame becomes ColabProtocolError with its close code."""
        while True:
            try:
                opcode, frame = ws.recv_data_frame(control_frame=True)
            except websocket.WebSocketProtocolException as err:
                # jupyter_http_over_ws closes with the HTTP status as close code (e.g. 403),
                # which is outside the codes RFC 6455 allows, so websocket-client rejects it.
                match = re.search(r"Invalid close opcode (\d+)", str(err))
                if match:
                    code = int(match.group(1))
                    raise ColabProtocolError(f"websocket closed by the server: {code}", code) from err
                raise
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                data = frame.data or b""
                code = int.from_bytes(data[:2], "big") if len(data) >= 2 else None
                reason = data[2:].decode("utf-8", "replace")
                raise ColabProtocolError(f"websocket closed by the server: {code} {reason}".strip(), code)
            if opcode in (websocket.ABNF.OPCODE_TEXT, websocket.ABNF.OPCODE_BINARY):
                return frame.data.decode("utf-8")

    # ------------------------------------------------------------------ REST
    def request(self, method: str, path: str, body: object | None = None) -> Response:
        """One REST call through the selected flow; HTTP errors come back as a Response."""
        payload = None if body is None else json.dumps(body)
        if self.flow == "direct":
            return self._request_direct(method, path, payload)
        return self._request_http_over_ws(method, path, payload)

    def _request_direct(self, method: str, path: str, payload: str | None) -> Response:
        sep = "&" if "?" in path else "?"
        url = f"{self.base_url}{path}"
        if self.token:
            url += f"{sep}{urllib.parse.urlencode({'token': self.token})}"
        headers = {"Content-Type": "application/json"}
        if self.origin is not None:
            headers["Origin"] = self.origin
        data = payload.encode("utf-8") if payload is not None else None
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return Response(resp.status, dict(resp.headers.items()), resp.read())
        except urllib.error.HTTPError as err:
            return Response(err.code, dict(err.headers.items()), err.read())

    def _request_http_over_ws(self, method: str, path: str, payload: str | None) -> Response:
        ws = self._http_over_ws()
        message_id = uuid.uuid4().hex
        frame = {"message_id": message_id, "method": method, "path": path}
        if payload is not None:
            frame["body_base64"] = base64.b64encode(payload.encode("utf-8")).decode("ascii")
        ws.send(json.dumps(frame))
        response: Response | None = None
        chunks: list[bytes] = []
        while True:
            reply = json.loads(self._recv_text(ws))
            if reply.get("message_id") not in (message_id, None):
                continue  # an answer to an earlier, abandoned request
            if response is None:
                if "status" not in reply:
                    raise ColabProtocolError(f"malformed first frame: {reply}")
                response = Response(int(reply["status"]), dict(reply.get("headers") or {}))
                if "data" not in reply and reply.get("done") and reply["status"] >= 400:
                    # Extension-level error frame: {done, status, statusText}.
                    response.body = str(reply.get("statusText", "")).encode("utf-8")
            if reply.get("data"):
                chunks.append(base64.b64decode(reply["data"]))
            if reply.get("done"):
                break
        response.body = response.body or b"".join(chunks)
        return response

    # ------------------------------------------------------------------ kernel
    def start_kernel(self) -> str:
        resp = self.request("POST", "/api/kernels", {})
        if resp.status != 201:
            raise ColabProtocolError(
                f"starting a kernel failed: HTTP {resp.status} {resp.body[:200]!r}", resp.status
            )
        self.kernel_id = resp.json()["id"]
        self._owns_kernel = True
        return self.kernel_id

    def get_kernel(self) -> dict:
        """The kernel's model, through this client's flow (its REST auth and origin check)."""
        resp = self.request("GET", f"/api/kernels/{self.kernel_id}")
        if resp.status != 200:
            raise ColabProtocolError(
                f"looking up kernel {self.kernel_id} failed: HTTP {resp.status} {resp.body[:200]!r}", resp.status
            )
        return resp.json()

    def channel_url(self) -> str:
        path = f"/api/kernels/{self.kernel_id}/channels"
        query = {"session_id": self.session_id}
        if self.flow == "direct":
            if self.token:
                query["token"] = self.token
            return f"{self._ws_base}{path}?{urllib.parse.urlencode(query)}"
        query["jupyter_http_over_ws_auth_url"] = self.auth_url
        return f"{self._ws_base}/http_over_websocket/proxied_ws{path}?{urllib.parse.urlencode(query)}"

    def open_channel(self) -> None:
        """Open the kernel channel and wait until the kernel answers kernel_info."""
        if self.kernel_id is None:
            raise ColabProtocolError("no kernel started")
        self._channel = self._connect(self.channel_url())
        msg_id = self._send("kernel_info_request", {})
        self._wait_reply(msg_id, "kernel_info_reply")

    def _send(self, msg_type: str, content: dict, channel: str = "shell") -> str:
        msg_id = uuid.uuid4().hex
        message = {
            "header": {
                "msg_id": msg_id,
                "msg_type": msg_type,
                "username": "colab",
                "session": self.session_id,
                "date": time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime()),
                "version": "5.3",
            },
            "parent_header": {},
            "metadata": {},
            "content": content,
            "channel": channel,
            "buffers": [],
        }
        assert self._channel is not None
        self._channel.send(json.dumps(message))
        return msg_id

    def _wait_reply(self, msg_id: str, reply_type: str) -> dict:
        deadline = time.monotonic() + self.timeout
        assert self._channel is not None
        while time.monotonic() < deadline:
            msg = json.loads(self._recv_text(self._channel))
            if msg.get("parent_header", {}).get("msg_id") == msg_id and msg["header"]["msg_type"] == reply_type:
                return msg
        raise ColabProtocolError(f"no {reply_type} within {self.timeout}s")

    def submit(self, code: str) -> str:
        """Send code to the kernel without waiting for it (a long cell); returns the request's id."""
        if self._channel is None:
            raise ColabProtocolError("no kernel channel open")
        return self._send(
            "execute_request",
            {"code": code, "silent": False, "store_history": False, "user_expressions": {},
             "allow_stdin": False, "stop_on_error": True},
        )  # fmt: skip

    def execute(self, code: str) -> str:
        """Run code in the kernel and return what it printed on stdout."""
        msg_id = self.submit(code)
        stdout: list[str] = []
        reply: dict | None = None
        idle = False
        deadline = time.monotonic() + self.timeout
        while not (reply is not None and idle):
            if time.monotonic() > deadline:
                raise ColabProtocolError(f"execution did not finish within {self.timeout}s")
            msg = json.loads(self._recv_text(self._channel))
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = msg["header"]["msg_type"]
            content = msg.get("content", {})
            if kind == "stream" and content.get("name") == "stdout":
                stdout.append(content.get("text", ""))
            elif kind == "execute_reply":
                reply = content
            elif kind == "status" and content.get("execution_state") == "idle":
                idle = True
        if reply.get("status") != "ok":
            raise ColabProtocolError(f"execution failed: {reply.get('ename')}: {reply.get('evalue')}")
        return "".join(stdout)

    def roundtrip_times(self, n: int = 50, code: str = "pass", pause: float = 0.0) -> list[float]:
        """Seconds per execute of a trivial cell, n times (what a user feels per cell run).

        ``pause``: seconds to wait before each execute, untimed, as a user does between cells
        (processes that have gone idle take longer to wake than ones run back to back).
        """
        times = []
        for _ in range(n):
            if pause > 0:
                time.sleep(pause)
            start = time.perf_counter()
            self.execute(code)
            times.append(time.perf_counter() - start)
        return times


ERRORS = (OSError, ColabProtocolError, websocket.WebSocketException)


def _run_cell(client: ColabClient, code: str, expect: str | None, roundtrips: int = 0) -> tuple[bool, str]:
    out = client.execute(code).strip()
    ok = expect is None or out == expect
    line = f"{client.flow}: {'OK' if ok else 'FAILED'}: printed {out!r}"
    if expect is not None and not ok:
        line += f", expected {expect!r}"
    if roundtrips:
        median = statistics.median(client.roundtrip_times(roundtrips)) * 1000
        line += f"; median round trip {median:.1f} ms over {roundtrips} executes"
    return ok, line


def check_flow(
    url: str, flow: str, code: str, expect: str | None, origin: str = COLAB_ORIGIN, roundtrips: int = 0, kernel_id: str | None = None
) -> tuple[bool, str]:
    """(ok, report line) for one flow: start a kernel (or reach kernel_id), run code, compare its stdout."""
    try:
        with ColabClient(url, None, flow=flow, origin=origin, kernel_id=kernel_id) as client:
            return _run_cell(client, code, expect, roundtrips)
    except ERRORS as err:
        return False, f"{flow}: FAILED: {err}"


def check_flows(url: str, flows: tuple[str, ...], code: str, expect: str | None, origin: str = COLAB_ORIGIN) -> list[tuple[bool, str]]:
    """(ok, report line) per flow, with one kernel for all of them (see prove_flows)."""
    return prove_flows(url, flows, code, expect, origin)[0]


def prove_flows(
    url: str, flows: tuple[str, ...], code: str, expect: str | None, origin: str = COLAB_ORIGIN,
    followup: str | None = None, followup_timeout: float = 300.0,
) -> tuple[list[tuple[bool, str]], str | None]:
    """((ok, report line) per flow, what followup printed), with one kernel for all of them.

    Starting a kernel is most of what a check costs, so the first flow starts one and every flow
    then reaches it through its own channel (the others after their own REST call) and runs the
    cell there, all at the same time: over a real network each flow's round trips would otherwise
    add up one after another. When every flow passed, followup (a further cell, e.g. the GPU proof)
    runs once more on that kernel; its output is None when it did not run. When the kernel cannot
    be started, each other flow is checked on its own kernel, so that every flow still gets its own
    verdict.
    """  # fmt: skip
    first = ColabClient(url, None, flow=flows[0], origin=origin)
    try:
        first.start_kernel()
    except ERRORS as err:
        first.close()
        failed = (False, f"{flows[0]}: FAILED: {err}")
        return [failed] + [check_flow(url, flow, code, expect, origin) for flow in flows[1:]], None

    def first_flow() -> tuple[bool, str]:
        try:
            first.open_channel()
            return _run_cell(first, code, expect)
        except ERRORS as err:
            return False, f"{flows[0]}: FAILED: {err}"

    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(flows)) as pool:
            running = [pool.submit(first_flow)]
            running += [pool.submit(check_flow, url, flow, code, expect, origin, 0, first.kernel_id) for flow in flows[1:]]
            results = [job.result() for job in running]
        followed = None
        if followup is not None and all(ok for ok, _ in results):
            first.timeout = followup_timeout
            try:
                followed = first.execute(followup)
            except ERRORS as err:
                followed = f"{type(err).__name__}: {err}"
        return results, followed
    finally:
        first.close()  # deletes the kernel once every flow is done with it


# ---------------------------------------------------------------------- GPU and pip proof
# One cell, run as the notebook user in the kernel the 42 proof used (one more round trip, not
# one per check): which GPUs the kernel sees (torch when importable, else libcuda through
# ctypes), a small computation on the device when torch sees one, then a %pip install of a tiny
# package into the kernel environment and its removal. pip prints into the cell, so the verdict
# is the last line that starts with GPU_PROOF_MARKER (one JSON object).
GPU_PROOF_MARKER = "COLAB_GPU_PROOF "
GPU_PROOF_CODE = r'''
def __colab_gpu_proof(pip_package):
    import ctypes, importlib, importlib.metadata as metadata, json, sys
    out = {"python": sys.version.split()[0], "gpus": [], "cuda": "", "framework": "", "compute": "", "reason": "", "pip": ""}

    def libcuda():
        try:
            cuda = ctypes.CDLL("libcuda.so.1")
        except OSError as err:
            return f"libcuda.so.1 cannot be loaded ({err}): no NVIDIA driver is visible to the kernel"
        version = ctypes.c_int(0)
        if cuda.cuDriverGetVersion(ctypes.byref(version)) == 0 and version.value:
            out["cuda"] = f"{version.value // 1000}.{version.value % 1000 // 10}"
        rc = cuda.cuInit(0)
        if rc:
            name = ctypes.c_char_p()
            cuda.cuGetErrorName(rc, ctypes.byref(name))
            return f"cuInit failed with {(name.value or b'CUDA error').decode()} ({rc})"
        count = ctypes.c_int(0)
        cuda.cuDeviceGetCount(ctypes.byref(count))
        for index in range(count.value):
            device, memory, name = ctypes.c_int(0), ctypes.c_size_t(0), ctypes.create_string_buffer(256)
            cuda.cuDeviceGet(ctypes.byref(device), index)
            cuda.cuDeviceGetName(name, 256, device)
            cuda.cuDeviceTotalMem_v2(ctypes.byref(memory), device)
            out["gpus"].append({"name": name.value.decode(), "memory": memory.value})
        return "" if count.value else "libcuda found no CUDA device"

    try:
        import torch
    except Exception:
        torch = None
    if torch is not None:
        out["framework"] = "torch " + torch.__version__.split("+")[0]
        if torch.cuda.is_available():
            out["cuda"] = torch.version.cuda or out["cuda"]
            for index in range(torch.cuda.device_count()):
                props = torch.cuda.get_device_properties(index)
                out["gpus"].append({"name": props.name, "memory": props.total_memory})
            try:
                x = torch.arange(1024, device="cuda", dtype=torch.float32)
                total = float((x * 2).sum().item())
                out["compute"] = "ok" if total == 1023 * 1024 else f"wrong result {total}"
            except Exception as err:
                out["compute"] = f"failed: {type(err).__name__}: {err}"
        else:
            built = torch.version.cuda
            why = libcuda()
            out["gpus"] = []
            out["reason"] = "torch.cuda.is_available() is False" + (
                f" (torch built for CUDA {built}; the driver offers CUDA {out['cuda']})" if built and out["cuda"] else
                " (a CPU-only torch build)" if not built else "") + (f"; {why}" if why else "")
    else:
        out["reason"] = libcuda()

    if pip_package:
        ip = get_ipython()
        try:
            before = metadata.version(pip_package)
        except metadata.PackageNotFoundError:
            before = None
        spec = f"--force-reinstall --no-deps {pip_package}=={before}" if before else pip_package
        ip.run_line_magic("pip", f"install -q --disable-pip-version-check {spec}")
        importlib.invalidate_caches()
        try:
            installed = metadata.version(pip_package)
        except metadata.PackageNotFoundError:
            installed = None
        if installed is None or ip.user_ns.get("_exit_code", 0):
            out["pip"] = f"%pip install {pip_package} failed (exit code {ip.user_ns.get('_exit_code')})"
        elif before:
            out["pip"] = f"%pip install {pip_package}=={installed} ok (already installed by you: kept)"
        else:
            ip.run_line_magic("pip", f"uninstall -q -y {pip_package}")
            importlib.invalidate_caches()
            try:
                metadata.version(pip_package)
                out["pip"] = f"%pip install {pip_package}=={installed} ok, but %pip uninstall did not remove it"
            except metadata.PackageNotFoundError:
                out["pip"] = f"%pip install {pip_package}=={installed} ok (removed again)"
    print("\n" + MARKER + json.dumps(out))

__colab_gpu_proof(PIP_PACKAGE)
del __colab_gpu_proof
'''


def gpu_proof_code(pip_package: str = "") -> str:
    """The proof cell for pip_package (empty: no pip check)."""
    return GPU_PROOF_CODE.replace("MARKER", repr(GPU_PROOF_MARKER)).replace("PIP_PACKAGE", repr(pip_package))


def parse_gpu_proof(output: str) -> dict:
    """The proof cell's verdict from what it printed (pip's own lines come before it)."""
    for line in reversed(output.splitlines()):
        if line.startswith(GPU_PROOF_MARKER):
            return json.loads(line[len(GPU_PROOF_MARKER):])
    raise ValueError(f"the GPU proof cell printed no verdict line: {output[-300:]!r}")


def _gib(size: int) -> str:
    return f"{size / 2**30:.0f} GiB"


def gpu_summary(proof: dict) -> str:
    """One line: ``GPU in notebooks: 1x NVIDIA T4 15 GiB, CUDA 13.0, torch 2.11.0`` or the reason there is none."""
    gpus = proof.get("gpus") or []
    if not gpus:
        return f"no GPU visible to notebooks: {proof.get('reason') or 'the kernel found no CUDA device'}"
    kinds: dict[tuple[str, str], int] = {}
    for gpu in gpus:
        key = (gpu["name"], _gib(gpu["memory"]))
        kinds[key] = kinds.get(key, 0) + 1
    parts = [", ".join(f"{n}x {name} {mem}" for (name, mem), n in kinds.items())]
    if proof.get("cuda"):
        parts.append(f"CUDA {proof['cuda']}")
    parts.append(proof.get("framework") or "no framework in the kernel (libcuda only)")
    line = "GPU in notebooks: " + ", ".join(parts)
    if proof.get("compute") and proof["compute"] != "ok":
        line += f"; device computation {proof['compute']}"
    return line


def gpu_verdict(proof: dict, root_gpus: int | None, required: bool, service: str = "colab-runtime") -> str:
    """Empty when the run may go on, else the failure message (reason and fix).

    It fails only when a GPU is required, root sees one (root_gpus > 0; None when the run did not
    check the host) and the kernel sees none, or its device computation failed.
    """
    if not required or not root_gpus:
        return ""
    seen = len(proof.get("gpus") or [])
    compute = proof.get("compute") or "ok"
    if seen and compute == "ok":
        return ""
    reason = proof.get("reason") or "the kernel found no CUDA device"
    if seen:
        problem = f"the notebook kernel sees {seen} GPU(s) but a computation on it {compute}"
    else:
        problem = f"the notebook kernel (not root) sees none: {reason}"
    if "torch built for CUDA" in reason or "CPU-only torch" in reason:
        fix = ("run site.yml again so the kernel gets the torch build the driver supports"
               " (the colab_runtime role picks it from the driver version)")
    elif "libcuda.so.1 cannot be loaded" in reason:
        fix = ("the driver's user-space library is not visible to the service: check that"
               " 'ldconfig -p | grep libcuda' on the host lists it, then run site.yml again")
    else:
        fix = (f"the GPU device nodes are missing or not readable by the service: run 'sudo systemctl restart {service}'"
               " on the host (its start creates /dev/nvidia-uvm*), then check 'ls -l /dev/nvidia*'")
    return (f"The host has {root_gpus} NVIDIA GPU(s) that root sees, but {problem}. Fix: {fix};"
            " or set nvidia_gpu_required: false to go on without a GPU in notebooks.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check a Colab local runtime the way Colab connects.")
    parser.add_argument(
        "--url", required=True,
        help="Colab connection URL, http://localhost:PORT/?token=T (or without the token, given in $COLAB_RUNTIME_TOKEN)",
    )  # fmt: skip
    parser.add_argument("--flow", default="both", help="http_over_ws, direct, both, or a comma-separated list")
    parser.add_argument("--code", default="print(6*7)")
    parser.add_argument("--expect", default=None, help="expected stdout (stripped)")
    parser.add_argument("--origin", default=COLAB_ORIGIN)
    parser.add_argument("--roundtrips", type=int, default=0, help="also measure N trivial executes")
    args = parser.parse_args(argv)
    flows = FLOWS if args.flow == "both" else tuple(f.strip() for f in args.flow.split(",") if f.strip())
    unknown = [f for f in flows if f not in FLOWS]
    if unknown or not flows:
        parser.error(f"unknown flow(s) {unknown}; use {', '.join(FLOWS)} or both")
    url = args.url
    token = os.environ.get("COLAB_RUNTIME_TOKEN", "")
    if token and "token=" not in url:
        # Keeps the token off command lines (visible to every user in ps) and out of Ansible's output.
        url = f"{url}{'&' if '?' in url else '?'}token={urllib.parse.quote(token)}"
    if args.roundtrips:
        # Timed round trips: one flow and one kernel at a time, so that they do not disturb each other.
        results = [check_flow(url, f, args.code, args.expect, args.origin, args.roundtrips) for f in flows]
    else:
        results = check_flows(url, flows, args.code, args.expect, args.origin)
    for _, line in results:
        print(line)
    return 0 if all(ok for ok, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
