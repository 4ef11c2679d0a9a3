"""An emulated network path: a TCP relay on 127.0.0.1 that delays each direction.

This machine's kernel has no netem qdisc, so latency is emulated in user space. The relay accepts
connections on a free loopback port and forwards each one to a target (an sshd, a moto server),
delivering every chunk ``one_way_ms`` after it was read, in order and without loss. The delay is
applied per chunk by its timestamp: a writer waits until the head chunk's own delivery time, not
a fixed sleep per chunk, so a stream keeps its throughput and only gains latency.

It also counts what the network would see, per connection: bytes each way and request/response
*turns* (the client sending again after the server answered: what costs one round trip each over
a real network). Counters can be read and reset between the steps of a benchmark; given a
``label`` function (the client's address -> a name, e.g. which program opened the connection),
they are also kept per label, and the wall-clock time of every turn is kept (``turn_times()``) so
that a benchmark can attribute turns to the steps that caused them (e.g. Ansible's tasks).

The relay runs its own event loop in a daemon thread and always stops by itself after
``max_seconds``; use it as a context manager::

    with DelayRelay("127.0.0.1", sshd_port, one_way_ms=20) as relay:
        ...  # point ssh at 127.0.0.1:relay.port
        print(relay.counts())

or from a shell: ``python -m colab_testkit.relay --target 127.0.0.1:22 --one-way-ms 20``.

What it does not emulate: TCP's own acknowledgements still travel on loopback between each end
and the relay, so a stall caused by a delayed ACK costs the receiver's ACK timer (about 40 ms on
Linux), not the emulated round trip.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

CHUNK = 65536
# A relay that is forgotten (a crashed benchmark) must not outlive its run by much.
DEFAULT_MAX_SECONDS = 3600.0


@dataclass
class Counts:
    """What crossed the relay since the last reset."""

    connections: int = 0
    turns: int = 0
    bytes_up: int = 0  # client -> target
    bytes_down: int = 0  # target -> client

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class _Connection:
    """One relayed connection: its two directions and its turn state."""

    def __init__(self, relay: DelayRelay, label: str) -> None:
        self.relay = relay
        self.label = label
        self.last_direction: str | None = None

    def saw(self, direction: str, size: int) -> None:
        for counts in (self.relay._counts, self.relay._labelled(self.label)):
            if direction == "up":
                counts.bytes_up += size
                if self.last_direction != "up":
                    # The client speaks first, or again after the server answered: a new turn.
                    counts.turns += 1
                    if counts is self.relay._counts:
                        self.relay._turn_times.append((time.time(), self.label))
            else:
                counts.bytes_down += size
        self.last_direction = direction


class DelayRelay:
    """Forward 127.0.0.1:port to target_host:target_port with a one-way delay per direction."""

    def __init__(
        self,
        target_host: str,
        target_port: int,
        one_way_ms: float = 0.0,
        max_seconds: float = DEFAULT_MAX_SECONDS,
        listen_host: str = "127.0.0.1",
        label: Callable[[tuple[str, int]], str] | None = None,
    ) -> None:
        self.target = (target_host, target_port)
        self.one_way_ms = one_way_ms
        self.max_seconds = max_seconds
        self.listen_host = listen_host
        self.port = 0
        self.label = label
        self._counts = Counts()
        self._by_label: dict[str, Counts] = {}
        # (wall-clock time, label) of each turn since the last reset; bounded like the run.
        self._turn_times: collections.deque[tuple[float, str]] = collections.deque(maxlen=1_000_000)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stopped = threading.Event()
        self._stop: asyncio.Event | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task] = set()
        self._error: BaseException | None = None

    # ------------------------------------------------------------------ control
    @property
    def one_way_s(self) -> float:
        return max(self.one_way_ms, 0.0) / 1000.0

    def set_delay(self, one_way_ms: float) -> None:
        """Change the delay for chunks read from now on (chunks in flight keep theirs)."""
        self.one_way_ms = one_way_ms

    def counts(self) -> Counts:
        with self._lock:
            return Counts(**self._counts.as_dict())

    def counts_by_label(self) -> dict[str, Counts]:
        with self._lock:
            return {name: Counts(**c.as_dict()) for name, c in self._by_label.items()}

    def reset_counts(self) -> Counts:
        """The counts so far, and start counting from zero (per label too, and the turn times)."""
        with self._lock:
            seen, self._counts, self._by_label = self._counts, Counts(), {}
            self._turn_times.clear()
        return seen

    def turn_times(self) -> list[tuple[float, str]]:
        """(time.time(), label) of every turn since the last reset, oldest first."""
        with self._lock:
            return list(self._turn_times)

    def _labelled(self, name: str) -> Counts:
        return self._by_label.setdefault(name, Counts())

    def start(self) -> DelayRelay:
        self._thread = threading.Thread(target=self._run, name=f"delay-relay->{self.target[1]}", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error
        if not self.port:
            raise RuntimeError("the relay did not start listening within 10 s")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self._loop is not None and self._stop is not None and not self._stopped.is_set():
            with contextlib.suppress(RuntimeError):  # loop already closed
                self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> DelayRelay:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ event loop
    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as err:  # reported by start() when it happens before listening
            self._error = err
        finally:
            self._stopped.set()
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._accept, self.listen_host, 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            await asyncio.wait_for(self._stop.wait(), timeout=self.max_seconds)
        except asyncio.TimeoutError:
            pass  # bounded: the relay stops by itself
        server.close()
        for writer in list(self._writers):
            writer.close()
        # End every connection's task here, quietly, rather than leaving them to asyncio.run.
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await server.wait_closed()

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        try:
            await self._relay(client_r, client_w)
        except asyncio.CancelledError:
            pass  # the relay is stopping
        finally:
            self._tasks.discard(task)

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            target_r, target_w = await asyncio.open_connection(*self.target)
        except OSError:
            client_w.close()
            return
        for w in (client_w, target_w):
            # The relay itself must not hold back small writes: the ends' own behaviour is measured.
            sock = w.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._writers.add(w)
        name = ""
        if self.label is not None:
            # Off the event loop: a label may ask the system who owns the client's socket.
            peer = client_w.get_extra_info("peername")
            with contextlib.suppress(Exception):
                name = await asyncio.get_running_loop().run_in_executor(None, self.label, peer)
        with self._lock:
            self._counts.connections += 1
            self._labelled(name).connections += 1
        conn = _Connection(self, name)
        try:
            await asyncio.gather(
                self._pump(client_r, target_w, conn, "up"),
                self._pump(target_r, client_w, conn, "down"),
            )
        finally:
            for w in (client_w, target_w):
                self._writers.discard(w)
                w.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: _Connection, direction: str) -> None:
        """Read chunks as they come, deliver each at its own time: read time + the delay."""
        queue: collections.deque[tuple[float, bytes]] = collections.deque()
        arrived = asyncio.Event()
        loop = asyncio.get_running_loop()

        async def deliver() -> None:
            while True:
                while not queue:
                    arrived.clear()
                    await arrived.wait()
                due, data = queue.popleft()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:  # end of stream from this side: half-close the other side
                    with contextlib.suppress(OSError):
                        if writer.can_write_eof():
                            writer.write_eof()
                    return
                writer.write(data)
                with contextlib.suppress(ConnectionError):
                    await writer.drain()

        delivery = asyncio.ensure_future(deliver())
        try:
            while True:
                try:
                    data = await reader.read(CHUNK)
                except ConnectionError:
                    data = b""
                if data:
                    with self._lock:
                        conn.saw(direction, len(data))
                queue.append((loop.time() + self.one_way_s, data))
                arrived.set()
                if not data:
                    break
            await delivery
        finally:
            if not delivery.done():
                delivery.cancel()


class EchoServer:
    """A loopback TCP echo server, one thread per connection: the far end of a measured path.

    ``port`` is where it listens; ``closed`` gets one entry per connection its client closed.
    """

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port: int = self._listener.getsockname()[1]
        self.closed: list[bool] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with contextlib.suppress(OSError):
                while data := conn.recv(CHUNK):
                    conn.sendall(data)
        self.closed.append(True)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def __enter__(self) -> EchoServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(2)
        self._listener.close()


def network_round_trips(one_way_ms: float, n: int, size: int = 256) -> list[float]:
    """Seconds per echo of a ``size``-byte message through a relay at ``one_way_ms`` each way.

    What the emulated network alone costs per round trip, its timers' lateness and the machine's
    scheduling included: the baseline a benchmark compares its own round trips with (on this
    machine a 40 ms emulated round trip measures about 41 ms).
    """
    payload = b"x" * size
    with EchoServer() as echo, DelayRelay("127.0.0.1", echo.port, one_way_ms, max_seconds=60 + n) as relay:
        with socket.create_connection(("127.0.0.1", relay.port), timeout=10) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            timings = []
            for i in range(n + 1):  # the first one also sets up the relay's connection: not counted
                started = time.perf_counter()
                sock.sendall(payload)
                got = 0
                while got < size:
                    chunk = sock.recv(CHUNK)
                    if not chunk:
                        raise ConnectionError("the relay closed the connection during a round trip")
                    got += len(chunk)
                if i:
                    timings.append(time.perf_counter() - started)
    return timings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="TCP relay on 127.0.0.1 with an emulated one-way delay")
    parser.add_argument("--target", required=True, help="HOST:PORT to forward to")
    parser.add_argument("--one-way-ms", type=float, default=20.0)
    parser.add_argument("--seconds", type=float, default=600.0, help="stop after this long")
    args = parser.parse_args(argv)
    host, _, port = args.target.rpartition(":")
    with DelayRelay(host or "127.0.0.1", int(port), args.one_way_ms, max_seconds=args.seconds) as relay:
        print(f"127.0.0.1:{relay.port} -> {args.target}, {args.one_way_ms} ms each way, for {args.seconds} s", flush=True)
        started = time.monotonic()
        while relay.running and time.monotonic() - started < args.seconds + 5:
            time.sleep(0.5)
        print(relay.counts().as_dict())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
