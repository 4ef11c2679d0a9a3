"""The kernel alone: trivial executes through jupyter_client, no Jupyter server, no websocket.

Run ON the runtime host with the runtime's own Python (bench/run.py pipes this file to
`<venv>/bin/python - N [PAUSE_MS]`); prints {"timings": [ms, ...]} as JSON. Each execute is timed
from the request to both its shell reply and the kernel's idle status, as the other probes are,
after an untimed pause of PAUSE_MS (default 0: back to back). The kernel
is the runtime's python3 kernelspec (bench/run.py passes the service's JUPYTER_PATH) on the
runtime's transport (Unix sockets, as its jupyter_server_config.py sets), so that the only
difference from the server's rows is the server.
"""

import json
import sys
import time

from jupyter_client.manager import KernelManager


def execute(client, code: str) -> None:
    msg_id = client.execute(code, store_history=False)
    reply = idle = False
    while not (reply and idle):
        if not reply:
            msg = client.get_shell_msg(timeout=30)
            reply = msg["parent_header"].get("msg_id") == msg_id
        if not idle:
            msg = client.get_iopub_msg(timeout=30)
            idle = (
                msg["parent_header"].get("msg_id") == msg_id
                and msg["header"]["msg_type"] == "status"
                and msg["content"]["execution_state"] == "idle"
            )


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    pause = float(sys.argv[2]) / 1000 if len(sys.argv) > 2 else 0.0  # ms, untimed, before each execute
    manager = KernelManager(kernel_name="python3", transport="ipc")
    manager.start_kernel()
    client = manager.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=60)
        for _ in range(3):
            execute(client, "pass")
        timings = []
        for _ in range(n):
            if pause > 0:
                time.sleep(pause)
            start = time.perf_counter()
            execute(client, "pass")
            timings.append((time.perf_counter() - start) * 1000)
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    print(json.dumps({"timings": timings}))


if __name__ == "__main__":
    main()
