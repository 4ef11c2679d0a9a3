"""The emulated-latency relay of the test kit: delay, order, turn counting, clean and bounded stop."""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest

from colab_testkit.relay import DelayRelay, EchoServer, network_round_trips


@pytest.fixture
def echo_server():
    """A loopback echo server; yields its port and the list its closed connections go to."""
    with EchoServer() as echo:
        yield echo.port, echo.closed


def connect(relay: DelayRelay) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", relay.port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    chunks, got = [], 0
    while got < size:
        chunk = sock.recv(min(65536, size - got))
        assert chunk, "the relay closed the connection early"
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def echo_round_trip(sock: socket.socket, payload: bytes = b"ping") -> float:
    started = time.perf_counter()
    sock.sendall(payload)
    assert recv_exactly(sock, len(payload)) == payload
    return time.perf_counter() - started


def test_an_echo_round_trip_costs_twice_the_one_way_delay(echo_server):
    port, _ = echo_server
    with DelayRelay("127.0.0.1", port, one_way_ms=30) as relay, connect(relay) as sock:
        echo_round_trip(sock)  # connection set-up out of the way
        rtts = sorted(echo_round_trip(sock) for _ in range(5))
    # Never faster than the emulated path (how much slower a loaded machine makes it is the
    # bench's business, not a test's).
    assert rtts[0] >= 0.060


def test_the_delay_can_change_while_running(echo_server):
    port, _ = echo_server
    with DelayRelay("127.0.0.1", port, one_way_ms=0) as relay, connect(relay) as sock:
        echo_round_trip(sock)
        relay.set_delay(25)
        slow = min(echo_round_trip(sock) for _ in range(3))
        relay.set_delay(0)
        echo_round_trip(sock)
    assert slow >= 0.050


def test_bytes_arrive_in_order_and_complete(echo_server):
    """4 MiB, dozens of chunks each way: every byte back, in order."""
    port, _ = echo_server
    payload = os.urandom(4 * 1024 * 1024)
    with DelayRelay("127.0.0.1", port, one_way_ms=20) as relay, connect(relay) as sock:
        sender = threading.Thread(target=sock.sendall, args=(payload,))
        sender.start()
        echoed = recv_exactly(sock, len(payload))
        sender.join()
        counts = relay.counts()
    assert echoed == payload
    assert counts.bytes_up == counts.bytes_down == len(payload)


def test_turns_count_request_response_exchanges(echo_server):
    port, _ = echo_server
    with DelayRelay("127.0.0.1", port, one_way_ms=5) as relay:
        with connect(relay) as sock:
            for _ in range(3):
                echo_round_trip(sock)
        with connect(relay) as sock:
            echo_round_trip(sock)
        seen = relay.reset_counts()
        assert (seen.connections, seen.turns) == (2, 4)
        assert relay.counts().turns == 0


def test_a_closed_client_closes_the_target_side(echo_server):
    port, closed = echo_server
    with DelayRelay("127.0.0.1", port, one_way_ms=10) as relay:
        with connect(relay) as sock:
            echo_round_trip(sock)
            sock.shutdown(socket.SHUT_WR)
            # The target sees end of stream after the delay and closes; so does the client side.
            assert sock.recv(1) == b""
        deadline = time.monotonic() + 5
        while not closed and time.monotonic() < deadline:
            time.sleep(0.02)
    assert closed == [True]
    assert not relay.running


def test_the_relay_stops_by_itself_after_max_seconds(echo_server, caplog):
    port, _ = echo_server
    relay = DelayRelay("127.0.0.1", port, max_seconds=0.5).start()
    sock = connect(relay)
    echo_round_trip(sock)
    deadline = time.monotonic() + 5
    while relay.running and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not relay.running
    # Its connections went with it.
    sock.settimeout(5)
    assert sock.recv(1) == b""
    sock.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", relay.port), timeout=1).close()
    # Quietly: the open connection's task ended with the relay, not as an error asyncio reports.
    assert [r.getMessage() for r in caplog.records if r.name == "asyncio"] == []


def test_counts_are_kept_per_label_of_the_client(echo_server):
    port, _ = echo_server
    with DelayRelay("127.0.0.1", port, label=lambda peer: "even" if peer[1] % 2 == 0 else "odd") as relay:
        ports = []
        for _ in range(4):
            with connect(relay) as sock:
                ports.append(sock.getsockname()[1])
                echo_round_trip(sock)
                echo_round_trip(sock)
        by_label = relay.counts_by_label()
    even = sum(1 for p in ports if p % 2 == 0)
    assert {name: (c.connections, c.turns) for name, c in by_label.items() if c.connections} == {
        **({"even": (even, 2 * even)} if even else {}),
        **({"odd": (4 - even, 2 * (4 - even))} if even < 4 else {}),
    }


def test_turn_times_say_when_each_turn_happened(echo_server):
    port, _ = echo_server
    with DelayRelay("127.0.0.1", port, one_way_ms=5, label=lambda peer: "client") as relay:
        before = time.time()
        with connect(relay) as sock:
            for _ in range(3):
                echo_round_trip(sock)
        after = time.time()
        times = relay.turn_times()
        assert [label for _, label in times] == ["client"] * 3
        assert all(before <= t <= after for t, _ in times) and times == sorted(times)
        relay.reset_counts()
        assert relay.turn_times() == []


def test_network_round_trips_measure_the_emulated_path():
    fast = network_round_trips(0, 20)
    slow = network_round_trips(15, 5)
    assert len(fast) == 20 and len(slow) == 5
    # Never faster than the emulated path; a loopback echo without delay is far below it.
    assert min(slow) >= 0.030
    assert sorted(fast)[10] < 0.030
