"""jupyter_http_over_ws's own test suite against the extension as the colab_runtime role ships it.

The suite (handlers_test.py, 35 tests run over HTTP and HTTPS = 70) comes inside the installed
0.0.8 wheel. It runs in a venv built here the way the role builds a host's venv: the role's
pinned uv wheel (checked against the role's SHA-256), its requirements template, lock file and
excludes, same uv flags (same versions as on a host: Python 3.11 is what Debian 12 hosts have),
with the role's colab_runtime_compat module installed into it the way the role installs it.
Both variants run: the default stack (no Notebook package at all: the compat module provides the
two Notebook 6 modules the extension imports) and the web UI stack (Notebook 7 installed).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import jinja2
import pytest
import yaml

from colab_testkit.substrate import ROOT
from colab_testkit.tls import self_signed_cert

ROLE = ROOT / "roles" / "colab_runtime"
COMPAT = ROLE / "files" / "colab_runtime_compat.py"
CONSTRAINTS = ROLE / "files" / "constraints.txt"
REQUIREMENTS_TEMPLATE = ROLE / "templates" / "requirements.txt.j2"
RUNNER = ROOT / "tests" / "fixtures" / "http_over_ws_upstream_runner.py"
NODELAY_PROBE = ROOT / "tests" / "fixtures" / "websocket_nodelay_probe.py"
CACHE = ROOT / ".cache" / "colab-runtime-upstream"

# tornado >= 6.5 merges consecutive chunks of a chunked HTTP body that are already buffered
# ("chunk boundaries are not meaningful", http1connection._read_chunked_body). These two tests
# assert that a 2-chunk response arrives as 2 frames; on loopback both chunks are read at once,
# so the extension forwards the complete body in one frame. Not an extension defect.
CHUNK_COALESCING = {
    "handlers_test.HttpOverWebSocketHandlerHttpTest.test_streamed_response",
    "handlers_test.HttpOverWebSocketHandlerHttpsTest.test_streamed_response",
}
# The 6 tests that fail with tornado >= 6.5 when the forwarded Cookie header keeps its
# leading space (the bug the compat module fixes).
COOKIE_FORWARDING = {
    f"handlers_test.{cls}.{name}"
    for cls in ("HttpOverWebSocketHandlerHttpTest", "HttpOverWebSocketHandlerHttpsTest")
    for name in ("test_auth_url_provided_forwards_cookies", "test_auth_url_provided_forwards_cookies_and_propagates_xsrf")
} | {
    f"handlers_test.{cls}.test_auth_url_provided_forwards_cookies"
    for cls in ("ProxiedSocketHandlerTestBaseHttpTest", "ProxiedSocketHandlerTestBaseHttpsTest")
}

# The 4 tests that expect an auth URL on another origin to pass the websocket handshake and then
# fail each request with 500 "Uncaught server-side exception". The compat module refuses such a
# handshake at once with a 400 that says why (it also pins the proxy to the runtime's own address;
# tests/test_colab_runtime.py shows both on a host), so the suite's client gets "HTTP 400".
CROSS_ORIGIN_AUTH_URL = {
    f"handlers_test.{cls}.test_auth_url_cross_domain_fails"
    for cls in ("HttpOverWebSocketHandlerHttpTest", "HttpOverWebSocketHandlerHttpsTest",
                "ProxiedSocketHandlerTestBaseHttpTest", "ProxiedSocketHandlerTestBaseHttpsTest")
}  # fmt: skip


def role_vars() -> dict:
    return {
        **yaml.safe_load((ROLE / "defaults" / "main.yml").read_text()),
        **yaml.safe_load((ROLE / "vars" / "main.yml").read_text()),
    }


def role_requirements(web_ui: bool) -> str:
    """The role's requirements file as a host gets it (no extra packages)."""
    env = jinja2.Environment(trim_blocks=True)
    env.filters["bool"] = bool
    return env.from_string(REQUIREMENTS_TEMPLATE.read_text()).render(
        ansible_managed="Ansible managed", colab_runtime_web_ui=web_ui, colab_runtime_extra_packages=[]
    )


def role_excludes(web_ui: bool) -> list[str]:
    """What the role's uv install leaves out (vars/main.yml: __colab_runtime_excluded)."""
    variables = role_vars()
    web_ui_only = [] if web_ui else variables["__colab_runtime_web_ui_only_packages"]
    return web_ui_only + variables["__colab_runtime_start_time_packages"]


def role_uv() -> Path:
    """The uv binary the role installs: fetched by pip with the role's SHA-256 pins (--require-hashes)."""
    variables = role_vars()
    version = variables["colab_runtime_uv_version"]
    pins = variables["__colab_runtime_uv_wheel_pins"][version].values()
    uv = CACHE / f"uv-{version}" / "uv"
    if not uv.exists():
        uv.parent.mkdir(parents=True, exist_ok=True)
        requirement = uv.parent / "uv.txt"
        requirement.write_text(" ".join([f"uv=={version}", *(f"--hash=sha256:{h}" for h in pins)]) + "\n")
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--require-hashes",
             "--dest", str(uv.parent), "--requirement", str(requirement)],
            check=True, timeout=300,
        )  # fmt: skip
        wheel = next(uv.parent.glob(f"uv-{version}-*.whl"))
        with zipfile.ZipFile(wheel) as archive:
            member = next(n for n in archive.namelist() if n.endswith(".data/scripts/uv"))
            (uv.parent / "uv.tmp").write_bytes(archive.read(member))
        (uv.parent / "uv.tmp").chmod(0o755)
        (uv.parent / "uv.tmp").replace(uv)
    return uv


def locked_versions() -> dict[str, str]:
    pins = {}
    for line in CONSTRAINTS.read_text().splitlines():
        if "==" in line and not line.startswith("#") and ";" not in line:
            name, _, version = line.partition("==")
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    return pins


@pytest.fixture(scope="module", params=["default", "web_ui"])
def stack(request) -> str:
    """The role's default stack (colab_runtime_web_ui false) or the one with the web UI."""
    return request.param


@pytest.fixture(scope="module")
def upstream_venv(stack) -> Path:
    """A venv with the role's locked stack (cached by its inputs) and the compat module."""
    if sys.version_info[:2] != (3, 11):
        pytest.skip("the lock is checked here against Python 3.11, as on Debian 12 hosts")
    web_ui = stack == "web_ui"
    uv = role_uv()
    requirements, excludes = role_requirements(web_ui), "\n".join(role_excludes(web_ui)) + "\n"
    key = hashlib.sha256(
        (requirements + excludes + str(uv) + sys.version).encode() + CONSTRAINTS.read_bytes()
    ).hexdigest()[:16]
    venv = CACHE / key
    python = venv / "bin" / "python"
    if not (venv / ".complete").exists():
        shutil.rmtree(venv, ignore_errors=True)
        venv.mkdir(parents=True)
        (venv.parent / f"{key}.requirements.txt").write_text(requirements)
        (venv.parent / f"{key}.excludes.txt").write_text(excludes)
        subprocess.run([str(uv), "venv", "-q", "--clear", "--python", sys.executable, str(venv)], check=True)
        # The role's flags (tasks/install-uv.yml), minus --compile-bytecode: nothing here is read-only.
        subprocess.run(
            [str(uv), "pip", "install", "-q", "--python", str(python), "--exact",
             "--requirements", str(venv.parent / f"{key}.requirements.txt"), "--constraints", str(CONSTRAINTS),
             "--excludes", str(venv.parent / f"{key}.excludes.txt")],
            check=True, timeout=900,
        )  # fmt: skip
        (venv / ".complete").touch()
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    # Installed like the role installs it: a plain module in the venv's site-packages.
    shutil.copy(COMPAT, Path(purelib) / "colab_runtime_compat.py")
    return venv


@pytest.fixture(scope="module")
def suite_dir(upstream_venv, tmp_path_factory) -> Path:
    """A copy of the installed handlers_test.py with a fresh HTTPS key pair beside it."""
    found = list(upstream_venv.glob("lib/python*/site-packages/jupyter_http_over_ws/handlers_test.py"))
    assert found, "handlers_test.py is not in the installed jupyter_http_over_ws wheel"
    directory = tmp_path_factory.mktemp("http_over_ws_suite")
    shutil.copy(found[0], directory / "handlers_test.py")
    # Run from the same folder, so that the runner imports this copy of the suite.
    shutil.copy(RUNNER, directory / RUNNER.name)
    # test/test.crt + test/test.key for localhost, where the suite looks for them.
    self_signed_cert(directory / "test" / "test.crt", directory / "test" / "test.key", ["localhost"], days=1)
    return directory


def run_suite(venv: Path, directory: Path, *args: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    res = subprocess.run(
        [str(venv / "bin" / "python"), str(directory / RUNNER.name), *args],
        cwd=directory, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-4000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_upstream_suite_passes_on_shipped_stack(stack, upstream_venv, suite_dir):
    result = run_suite(upstream_venv, suite_dir)
    print(
        f"\njupyter_http_over_ws upstream suite, {stack} stack: {len(result['passed'])}/{result['total']} passed "
        f"(Python {result['python']}, {result['versions']})"
    )
    pins = locked_versions()
    versions = dict(result["versions"])
    if stack == "default":
        # Left out although the extension declares it: the compat module alone makes it import.
        assert versions.pop("notebook") is None
    for name, version in versions.items():
        assert pins[name.lower().replace("_", "-")] == version, name
    assert tuple(int(p) for p in result["versions"]["tornado"].split(".")[:2]) >= (6, 5)

    assert result["total"] == 70
    assert set(result["errors"]) == CROSS_ORIGIN_AUTH_URL, {t: tb[-600:] for t, tb in result["errors"].items()}
    for test_id, trace in result["errors"].items():
        assert re.search(r"HTTPClientError: HTTP 400: Bad Request", trace), trace[-600:]
    unexpected = set(result["failures"]) - CHUNK_COALESCING
    assert not unexpected, {t: result["failures"][t][-600:] for t in unexpected}
    for test_id, trace in result["failures"].items():
        # Complete data, merged into the first frame; nothing lost or reordered.
        assert re.search(r"'first' != 'firstlast'", trace), trace[-600:]
    assert len(result["passed"]) >= 64
    assert COOKIE_FORWARDING <= set(result["passed"])


def test_suite_detects_the_cookie_bug_without_the_fix(upstream_venv, suite_dir):
    """Control: the same suite without the cookie fix fails exactly the cookie-forwarding tests.

    Without the proxy pin as well: the cross-origin tests then pass the way upstream expects.
    """
    result = run_suite(upstream_venv, suite_dir, "--without-cookie-fix")
    assert result["total"] == 70
    not_passed = set(result["failures"]) | set(result["errors"])
    assert COOKIE_FORWARDING <= not_passed
    assert not_passed - COOKIE_FORWARDING <= CHUNK_COALESCING


@pytest.mark.parametrize("fixed", [True, False], ids=["with the fix", "without it (control)"])
def test_websocket_streams_send_at_once_with_the_nodelay_fix(upstream_venv, fixed):
    """TCP_NODELAY read off both ends of a real tornado websocket of the locked stack.

    tornado turns TCP_NODELAY off once the upgrade's response is written; the role's fix turns
    it on again where a connection becomes a websocket (server and client side). The control
    shows the option is really off without it. tests/e2e/test_colab_runtime.py measures what it
    is worth on a host (the ~40 ms stall per message).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    res = subprocess.run(
        [str(upstream_venv / "bin" / "python"), str(NODELAY_PROBE), *(["--fixed"] if fixed else [])],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-4000:]
    sockets = json.loads(res.stdout.strip().splitlines()[-1])
    assert sockets == {"server": fixed, "client": fixed}, sockets
