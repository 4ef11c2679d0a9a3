"""An HTTPS server on 127.0.0.1 that serves the Colab test page under any host name.

Chromium is told to resolve https://colab.research.google.com (and a foreign origin used by the
refusal tests) to this server, so the page runs with Colab's real origin. The certificate is
self-signed and generated per run; the browser is started with --ignore-certificate-errors.
"""

from __future__ import annotations

import http.server
import ssl
import tempfile
import threading
from pathlib import Path

from ..tls import self_signed_cert

PAGE = Path(__file__).resolve().parent / "page.html"


class _PageHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 -- http.server's method name
        body = PAGE.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 -- signature of the base class
        pass


class PageServer:
    """Serves page.html over HTTPS on a free 127.0.0.1 port, in a background thread."""

    def __init__(self, names: list[str]) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="colab-page-")
        cert, key = self_signed_cert(Path(self._tmp.name) / "page-cert.pem", Path(self._tmp.name) / "page-key.pem", names)
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _PageHandler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._tmp.cleanup()

    def __enter__(self) -> PageServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
