"""A real headless Chromium page at https://colab.research.google.com that talks to a runtime.

``ColabBrowser`` starts an HTTPS server for page.html and a Chromium whose host resolver sends
Colab's host name (and a foreign one, for refusal tests) to it, so the page's origin is the real
one. Chromium is also told that this server is on the public internet, as Colab is: the page
then needs the local-network permission to reach http://localhost, which the browser grants the
way a user clicking "Allow" on its prompt would.
"""

from __future__ import annotations

from .cdp import CDPError, Chromium, Page, find_chromium
from .https_server import PageServer

COLAB_HOST = "colab.research.google.com"
FOREIGN_HOST = "colab.example.net"
# Chromium >= 142 asks before a public page reaches localhost ("local network access"); from
# ~145 on, loopback has its own permission. Grant whichever names this build knows.
LOCAL_NETWORK_PERMISSIONS = (["loopbackNetwork", "localNetworkAccess"], ["localNetworkAccess"])

__all__ = ["CDPError", "ColabBrowser", "Chromium", "Page", "PageServer", "find_chromium", "COLAB_HOST", "FOREIGN_HOST"]


class ColabBrowser:
    """Chromium + page server; ``page(host)`` opens the probe page at https://<host>/."""

    def __init__(self, hosts: tuple[str, ...] = (COLAB_HOST, FOREIGN_HOST), flags: list[str] | None = None) -> None:
        self.hosts = hosts
        self.server = PageServer(list(hosts))
        try:
            rules = ",".join(f"MAP {h}:443 127.0.0.1:{self.server.port}" for h in hosts)
            self.chromium = Chromium(
                [
                    f"--host-resolver-rules={rules}",
                    # Treat the page server as a public site (it is Colab), not as localhost.
                    f"--ip-address-space-overrides=127.0.0.1:{self.server.port}=public",
                    *(flags or []),
                ]
            )
        except BaseException:
            self.server.close()
            raise
        self.pages: dict[str, Page] = {}

    @property
    def version(self) -> str:
        return self.chromium.version()

    def allow_local_network(self, host: str) -> None:
        last: Exception | None = None
        for permissions in LOCAL_NETWORK_PERMISSIONS:
            try:
                self.chromium.grant(f"https://{host}", permissions)
                return
            except CDPError as err:  # an older build without the loopback permission
                last = err
        raise CDPError(f"cannot grant local network access to https://{host}: {last}")

    def page(self, host: str = COLAB_HOST) -> Page:
        if host not in self.pages:
            self.allow_local_network(host)
            self.pages[host] = self.chromium.open(f"https://{host}/")
        return self.pages[host]

    def run(
        self,
        flow: str,
        base: str,
        token: str,
        code: str = "40 + 2",
        n: int = 0,
        warmup: int = 3,
        host: str = COLAB_HOST,
        timeout: float = 300,
    ) -> dict:
        """Start a kernel through ``flow``, execute ``code`` (warm-up, then n timed times), delete it.

        Returns the page's report: ok, result (text/plain of the first execute), status,
        timings (ms), or error; see colabRun() in page.html.
        """
        return self.page(host).call(
            "colabRun",
            {"flow": flow, "base": base, "token": token, "code": code, "n": n, "warmup": warmup},
            timeout=timeout,
        )

    def close(self) -> None:
        try:
            self.chromium.close()
        finally:
            self.server.close()

    def __enter__(self) -> ColabBrowser:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
