"""Make a current Jupyter server usable as a Google Colab local runtime.

Installed next to the Jupyter stack by the colab_runtime role and used in two ways:

* ``patch_http_over_ws()`` is called from jupyter_server_config.py, before jupyter_server
  imports its extensions. jupyter_http_over_ws 0.0.8 (Colab's classic transport, last released
  in 2020) imports two Notebook 6 modules that Notebook 7 / jupyter_server 2 no longer have
  (the role installs it without the Notebook package unless the web UI is wanted: those two
  modules are all it uses), and forwards cookies in a header that tornado >= 6.5 rejects. Both
  are fixed here instead of pinning old, vulnerable releases. It also forwards to whatever
  address the client's Host header names: here it forwards to the runtime itself only.
* As a jupyter_server extension (``ServerApp.jpserver_extensions``) it applies the runtime
  tweaks configured under ``c.ColabRuntime``: TCP_NODELAY on websocket streams and the
  Private Network Access answer on CORS preflights.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import re
import sys
import types
import urllib.parse

from traitlets import Bool
from traitlets.config import Configurable

__version__ = "1.2.0"

# Paths of the Notebook 6 modules jupyter_http_over_ws imports -> jupyter_server replacements.
_NOTEBOOK_ALIASES = {
    "notebook.base.handlers": "jupyter_server.base.handlers",
    "notebook.utils": "jupyter_server.utils",
}


def _alias_module(name: str, target_name: str) -> types.ModuleType:
    """A stand-in module ``name`` that resolves every attribute on ``target_name``."""
    target = __import__(target_name, fromlist=["_"])
    alias = types.ModuleType(name, f"Alias of {target_name} for pre-Notebook-7 extensions.")

    def __getattr__(attr: str):  # noqa: N807 -- module-level __getattr__ (PEP 562)
        return getattr(target, attr)

    alias.__getattr__ = __getattr__  # type: ignore[method-assign]
    return alias


def _package(name: str) -> types.ModuleType:
    """The package ``name``: imported when it exists, else an empty stand-in (parents included).

    The role leaves the Notebook distribution out unless the web UI is wanted, so even the
    top-level ``notebook`` package may be missing; with Notebook 7, only ``notebook.base`` is.
    """
    if name in sys.modules:
        return sys.modules[name]
    try:
        return __import__(name, fromlist=["_"])
    except ImportError:
        pass
    parent_name, _, leaf = name.rpartition(".")
    package = types.ModuleType(name, "Stand-in package for pre-Notebook-7 extensions.")
    package.__path__ = []  # a package, so that submodule imports resolve
    sys.modules[name] = package
    if parent_name:
        setattr(_package(parent_name), leaf, package)
    return package


def install_notebook_aliases() -> None:
    """Let ``notebook.base.handlers`` and ``notebook.utils`` import on Notebook 7 or without Notebook.

    Only modules that do not exist are provided, so a real Notebook 6 keeps its own.
    """
    for name, target_name in _NOTEBOOK_ALIASES.items():
        if name in sys.modules:
            continue
        try:
            __import__(name)
            continue
        except ImportError:
            pass
        module = _alias_module(name, target_name)
        if name == "notebook.base.handlers":
            # The extension subclasses IPythonHandler, Notebook 6's name for JupyterHandler.
            module.IPythonHandler = module.JupyterHandler
        parent_name, _, child = name.rpartition(".")
        sys.modules[name] = module
        setattr(_package(parent_name), child, module)


def _strip_cookie_header(coroutine):
    """Wrap the extension's cookie fetcher so the Cookie header has no leading space.

    jupyter_http_over_ws joins ``SimpleCookie.output(header='')`` fragments, each of which starts
    with a space; tornado >= 6.5 refuses header values with surrounding whitespace.
    """

    @functools.wraps(coroutine)
    async def wrapper(*args, **kwargs):
        headers = await coroutine(*args, **kwargs)
        if "Cookie" in headers:
            fragments = (part.strip() for part in headers["Cookie"].split(";"))
            headers["Cookie"] = "; ".join(part for part in fragments if part)
        return headers

    wrapper.__colab_runtime_patched__ = True
    return wrapper


def _public_handshake(handler_class) -> None:
    """Let the websocket handshake through jupyter_server's authentication layer.

    The extension authenticates each proxied request itself (it fetches the auth URL, which
    carries the token, and forwards the login cookie), and Colab opens the socket without
    credentials. Marking only these handshakes public keeps
    ``ServerApp.allow_unauthenticated_access = False`` possible for everything else.
    """
    from jupyter_server.auth.decorator import allow_unauthenticated

    get = handler_class.get
    if getattr(get, "__colab_runtime_patched__", False):
        return
    public_get = allow_unauthenticated(get)
    public_get.__colab_runtime_patched__ = True
    handler_class.get = public_get


AUTH_URL_ARGUMENT = "jupyter_http_over_ws_auth_url"


def _local_address(request) -> tuple[str, int] | None:
    """The IP address and port this request's connection reached (the server's own socket)."""
    stream = getattr(getattr(request, "connection", None), "stream", None)
    sock = getattr(stream, "socket", None)
    if sock is None:
        return None
    address = sock.getsockname()
    if not isinstance(address, tuple) or len(address) < 2:
        return None  # e.g. a Unix socket: no host and port a Host header could name
    ip = ipaddress.ip_address(address[0].split("%")[0])
    # A dual-stack socket reports IPv4 clients as ::ffff:a.b.c.d; their Host names a.b.c.d.
    mapped = getattr(ip, "ipv4_mapped", None)
    return str(mapped or ip), address[1]


def proxy_target_refusal(request, auth_url: str) -> tuple[int, str] | None:
    """Why jupyter_http_over_ws must not open this websocket, as (HTTP status, message), or None.

    The extension sends every proxied request (and the websocket it proxies) to the Host header
    of the handshake, and fetches the auth URL, which it only compares with that Host. A client
    that names another port (``Host: localhost:6006``) would make the server its proxy to any
    loopback service on the machine: TensorBoard, Ray, vLLM, ... So the Host must name the
    address and port this connection reached, and the auth URL must be on that same origin.
    """
    from tornado.httputil import split_host_and_port

    local = _local_address(request)
    if local is None:
        return 403, "Refused: this connection's local address is unknown, so the proxy target cannot be checked."
    local_ip, local_port = local
    own = f"{request.protocol}://{'[%s]' % local_ip if ':' in local_ip else local_ip}:{local_port}"
    host, port = split_host_and_port(request.host.lower())
    if port is None:
        port = 443 if request.protocol == "https" else 80
    names = {local_ip}
    if ipaddress.ip_address(local_ip).is_loopback:
        names.add("localhost")
    if host.strip("[]") not in names or port != local_port:
        return 403, (
            f"Refused: the Host header {request.host!r} does not name this runtime ({own}); "
            "jupyter_http_over_ws forwards requests only to the runtime itself. "
            f"Connect to the runtime's own address and port, e.g. {request.protocol}://localhost:{local_port}/."
        )
    if auth_url:
        target = urllib.parse.urlsplit(auth_url)
        if (target.scheme, target.netloc.lower()) != (request.protocol, request.host.lower()):
            # Only the origin is shown: the rest of the auth URL carries the token.
            shown = f"{target.scheme}://{target.netloc}" if target.scheme else "a URL without a scheme"
            return 400, (
                f"Refused: {AUTH_URL_ARGUMENT} must be on this runtime's origin "
                f"({request.protocol}://{request.host}), not {shown}. "
                "Use the connection URL the runtime printed, with the same host and port."
            )
    return None


def _pin_proxy_target(handler_class) -> None:
    """Refuse, in the websocket handshake, what proxy_target_refusal refuses (a 4xx answer).

    Without this, a foreign auth URL surfaces as "500 Uncaught server-side exception" on the
    first proxied request, and a foreign Host is proxied to.
    """
    get = handler_class.get
    if getattr(get, "__colab_runtime_pinned__", False):
        return

    @functools.wraps(get)
    async def pinned_get(self, *args, **kwargs):
        refusal = proxy_target_refusal(self.request, self.get_argument(AUTH_URL_ARGUMENT, default=""))
        if refusal is not None:
            status, message = refusal
            self.log.warning("jupyter_http_over_ws handshake: %s", message)
            self.set_status(status)
            self.set_header("Content-Type", "text/plain; charset=UTF-8")
            self.finish(message + "\n")
            return None
        return await get(self, *args, **kwargs)

    pinned_get.__colab_runtime_pinned__ = True
    handler_class.get = pinned_get


def patch_http_over_ws() -> None:
    """Make jupyter_http_over_ws 0.0.8 import and proxy correctly and safely on the current stack."""
    install_notebook_aliases()
    from jupyter_http_over_ws import handlers

    fetch = handlers._perform_request_and_extract_cookies
    if not getattr(fetch, "__colab_runtime_patched__", False):
        handlers._perform_request_and_extract_cookies = _strip_cookie_header(fetch)
    _pin_proxy_target(handlers._WebSocketHandlerBase)
    _public_handshake(handlers._WebSocketHandlerBase)


def set_websocket_nodelay() -> None:
    """Send every websocket frame at once (TCP_NODELAY) instead of waiting for the peer's ACK.

    tornado enables TCP_NODELAY only while it writes an HTTP response and turns it off again
    afterwards, including after the 101 answer of a websocket upgrade. Small reply frames then
    wait for the peer's delayed ACK (~40 ms per message). HTTP1Connection.detach() is where a
    connection becomes a websocket, on the server side (kernel channels, the extension's
    browser-facing socket) and on the client side (the extension's hop to the kernel handler).
    """
    from tornado.http1connection import HTTP1Connection

    detach = HTTP1Connection.detach
    if getattr(detach, "__colab_runtime_patched__", False):
        return

    @functools.wraps(detach)
    def detach_with_nodelay(self):
        stream = detach(self)
        if stream is not None and not stream.closed():
            stream.set_nodelay(True)
        return stream

    detach_with_nodelay.__colab_runtime_patched__ = True
    HTTP1Connection.detach = detach_with_nodelay


PRIVATE_NETWORK_HEADER = "Access-Control-Allow-Private-Network"


def allow_private_network_preflight() -> None:
    """Answer CORS preflights with ``Access-Control-Allow-Private-Network: true``.

    Chrome's Private Network Access asks a page on a public origin (colab.research.google.com)
    for this before it may call a server on localhost.
    """
    # APIHandler is where jupyter_server answers CORS preflights (the REST API Colab calls).
    from jupyter_server.base.handlers import APIHandler

    options = APIHandler.options
    if getattr(options, "__colab_runtime_patched__", False):
        return

    @functools.wraps(options)
    def options_with_pna(self, *args, **kwargs):
        result = options(self, *args, **kwargs)
        self.set_header(PRIVATE_NETWORK_HEADER, "true")
        return result

    options_with_pna.__colab_runtime_patched__ = True
    APIHandler.options = options_with_pna


class SecretScrubber(logging.Filter):
    """Mask token values in log messages.

    jupyter_http_over_ws logs every proxied websocket URL, whose auth URL parameter carries
    the token (URL-encoded). jupyter_server scrubs its own access log, not extension messages.
    """

    _TOKEN = re.compile(r"(token(?:=|%3D|%253D))[^&\s%'\"]+", re.IGNORECASE)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        scrubbed = self._TOKEN.sub(r"\1[secret]", message)
        if scrubbed != message:
            record.msg, record.args = scrubbed, None
        return True


class ColabRuntime(Configurable):
    """Settings of the colab_runtime_compat server extension (``c.ColabRuntime.*``)."""

    tcp_nodelay = Bool(
        True,
        help="Set TCP_NODELAY on every websocket stream (removes a ~40 ms stall per message).",
    ).tag(config=True)

    private_network_access = Bool(
        True,
        help="Add Access-Control-Allow-Private-Network: true to CORS preflight answers.",
    ).tag(config=True)


def _jupyter_server_extension_points():
    return [{"module": "colab_runtime_compat"}]


def _load_jupyter_server_extension(serverapp) -> None:
    settings = ColabRuntime(parent=serverapp)
    if not any(isinstance(f, SecretScrubber) for f in serverapp.log.filters):
        serverapp.log.addFilter(SecretScrubber())
    if settings.tcp_nodelay:
        set_websocket_nodelay()
    if settings.private_network_access:
        allow_private_network_preflight()
    serverapp.log.info(
        "colab_runtime_compat %s: tcp_nodelay=%s private_network_access=%s",
        __version__,
        settings.tcp_nodelay,
        settings.private_network_access,
    )
