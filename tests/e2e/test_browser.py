"""End to end in a real browser: a headless Chromium page at https://colab.research.google.com
runs a cell on a converged runtime through the project's SSH tunnel, in both Colab flows, and
the same page served from another origin is refused.

One host per module: configure.yml converges it (no GPU: nvidia_gpu_required=false), connect.yml
opens the tunnel on a free local port. Needs Debian's chromium (`make e2e` installs it).
"""

from __future__ import annotations

import json
import urllib.parse

import pytest
from colab_testkit.browser import COLAB_HOST, FOREIGN_HOST, ColabBrowser, find_chromium
from colab_testkit.substrate import RemoteHost, ansible_playbook, free_port, http_get, runtime_image

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(find_chromium() is None, reason="chromium is not installed (apt-get install chromium)"),
]

FLOWS = ("http_over_ws", "direct")


@pytest.fixture(scope="module")
def runtime(tmp_path_factory, bookworm_image, ssh_key, _cleanup_leftover_hosts):
    """A host of the shared runtime image configured by configure.yml, and the URL of its tunnel."""
    work = tmp_path_factory.mktemp("browser")
    host = RemoteHost.start(image=runtime_image(bookworm_image, ssh_key, work), key_path=ssh_key)
    port = free_port()
    inventory = host.inventory(hostname="browser-e2e")
    inventory["colab_gpu_hosts"]["vars"] = {
        "nvidia_gpu_required": False,
        "colab_runtime_kernel_package_set": "minimal",
        # Classic flow: the local port must equal the runtime's, so both use a free one.
        "colab_runtime_port": port,
        "colab_tunnel_state_dir": str(work / "colab"),
        "colab_tunnel_prove": False,
    }
    inv = work / "inventory.json"
    inv.write_text(json.dumps(inventory))
    try:
        ansible_playbook("-i", str(inv), "playbooks/configure.yml", check=True)
        ansible_playbook("-i", str(inv), "playbooks/connect.yml", check=True)
        url = (work / "colab" / "colab-browser-e2e.url").read_text().strip()
        parts = urllib.parse.urlsplit(url)
        yield {
            "base": f"{parts.scheme}://{parts.netloc}",
            "token": urllib.parse.parse_qs(parts.query)["token"][0],
        }
    finally:
        ansible_playbook("-i", str(inv), "playbooks/connect.yml", "-e", "colab_tunnel_state=stopped")
        host.remove()


@pytest.fixture(scope="module")
def browser():
    with ColabBrowser() as b:
        yield b


def kernel_count(runtime) -> int:
    status, body = http_get(f"{runtime['base']}/api/kernels?token={runtime['token']}")
    assert status == 200, body
    return len(json.loads(body))


def new_log_lines(browser, host, action):
    page = browser.page(host)
    seen = len(page.log_lines())
    result = action()
    return result, page.log_lines()[seen:]


@pytest.mark.parametrize("flow", FLOWS)
def test_colab_page_runs_a_cell(browser, runtime, flow):
    result = browser.run(flow, runtime["base"], runtime["token"], code="40 + 2", n=3)
    assert result["ok"], result
    assert result["origin"] == f"https://{COLAB_HOST}"
    assert result["status"] == "ok"
    assert result["result"] == "42"
    assert len(result["timings"]) == 3


@pytest.mark.parametrize("flow", FLOWS)
def test_colab_page_without_the_token_is_refused(browser, runtime, flow):
    before = kernel_count(runtime)
    result = browser.run(flow, runtime["base"], "not-the-token")
    assert not result["ok"]
    if flow == "http_over_ws":
        # The extension fetches the auth URL with the wrong token: the proxied call is refused.
        assert "POST /api/kernels -> 403" in result["error"], result
    else:
        # Even the CORS preflight needs the token, so the browser gets no readable answer.
        assert result["error"] == "Failed to fetch", result
    assert kernel_count(runtime) == before


def test_foreign_origin_refused_at_the_websocket_handshake(browser, runtime):
    result, lines = new_log_lines(
        browser, FOREIGN_HOST, lambda: browser.run("http_over_ws", runtime["base"], runtime["token"], host=FOREIGN_HOST)
    )
    assert result["origin"] == f"https://{FOREIGN_HOST}"
    assert not result["ok"]
    assert "handshake failed" in result["error"], result
    assert any("Unexpected response code: 403" in line for line in lines), lines


def test_foreign_origin_fails_the_cors_check(browser, runtime):
    before = kernel_count(runtime)
    result, lines = new_log_lines(
        browser, FOREIGN_HOST, lambda: browser.run("direct", runtime["base"], runtime["token"], host=FOREIGN_HOST)
    )
    assert not result["ok"]
    assert result["error"] == "Failed to fetch", result
    assert any("blocked by CORS policy" in line and "Access-Control-Allow-Origin" in line for line in lines), lines
    # The preflight was refused, so the POST never reached the server.
    assert kernel_count(runtime) == before
