#!/usr/bin/env python3
"""One round-trip measurement: trivial cells through Colab's flows, printed as JSON.

    probe.py --client python|browser --base http://localhost:PORT --token T [--n 200]

Runs in whatever network namespace it is started in: bench/run.py starts it on the controller
(through a tunnel) or inside the test host's namespace with `nsenter -n` (the host's own
loopback, no forward), so both paths use the same client code and the same Chromium.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from colab_client import FLOWS, ColabClient

TIMED_CODE = "pass"
CHECK_CODE = "40 + 2"
WARMUP = 3


def python_flow(base: str, token: str, flow: str, n: int, pause_ms: float = 0.0) -> dict:
    try:
        with ColabClient(base, token, flow=flow) as client:
            result = client.execute(f"print({CHECK_CODE})").strip()
            client.roundtrip_times(WARMUP, TIMED_CODE)
            timings = [t * 1000 for t in client.roundtrip_times(n, TIMED_CODE, pause=pause_ms / 1000)]
        return {"ok": result == "42", "result": result, "timings": timings}
    except Exception as err:  # reported, not raised: one failed cell must not hide the others
        return {"ok": False, "error": f"{type(err).__name__}: {err}"}


def browser_flows(base: str, token: str, flows: list[str], n: int) -> tuple[dict, str]:
    from colab_testkit.browser import ColabBrowser

    out = {}
    with ColabBrowser() as browser:
        version = browser.version
        for flow in flows:
            check = browser.run(flow, base, token, code=CHECK_CODE, n=0, warmup=1)
            if not check.get("ok"):
                out[flow] = {"ok": False, "error": check.get("error", "?"), "log": browser.page().log_lines()[-5:]}
                continue
            timed = browser.run(flow, base, token, code=TIMED_CODE, n=n, warmup=WARMUP)
            out[flow] = {
                "ok": bool(timed.get("ok")) and check.get("result") == "42",
                "result": check.get("result"),
                "timings": timed.get("timings", []),
                "error": timed.get("error"),
            }
    return out, version


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--client", choices=("python", "browser"), required=True)
    parser.add_argument("--base", required=True, help="http://localhost:PORT")
    parser.add_argument("--token", required=True)
    parser.add_argument("--flows", default=",".join(FLOWS))
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--pause-ms", type=float, default=0.0, help="python client: untimed pause before each execute")
    args = parser.parse_args()
    flows = args.flows.split(",")
    started = time.monotonic()
    if args.client == "python":
        results = {f: python_flow(args.base, args.token, f, args.n, args.pause_ms) for f in flows}
        version = "colab_client.py"
    elif args.pause_ms:
        parser.error("--pause-ms is for the python client only")
    else:
        results, version = browser_flows(args.base, args.token, flows, args.n)
    print(json.dumps({"client": args.client, "version": version, "flows": results,
                      "seconds": time.monotonic() - started}))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
