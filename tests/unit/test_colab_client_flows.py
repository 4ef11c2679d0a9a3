"""colab_client.check_flows: one kernel for every flow, the flows at the same time, the kernel deleted
after the last of them (over a network, flows one after another would add up their round trips)."""

from __future__ import annotations

import threading

import pytest

from colab_client import FLOWS, ColabClient, ColabProtocolError, check_flows

URL = "http://localhost:9/?token=t"


@pytest.fixture
def fake_server(monkeypatch):
    """ColabClient with its network calls replaced: records what each flow asks for."""
    events: list[tuple[str, str]] = []
    # Every flow must be executing at once for any of them to get past this.
    together = threading.Barrier(len(FLOWS), timeout=5)

    def start_kernel(self):
        events.append((self.flow, "start"))
        self.kernel_id, self._owns_kernel = "k1", True
        return self.kernel_id

    def get_kernel(self):
        events.append((self.flow, f"get {self.kernel_id}"))
        return {"id": self.kernel_id}

    def open_channel(self):
        events.append((self.flow, "channel"))

    def execute(self, code):
        together.wait()
        events.append((self.flow, "execute"))
        return "42\n"

    def request(self, method, path, body=None):
        events.append((self.flow, f"{method} {path}"))

    for name, fake in (("start_kernel", start_kernel), ("get_kernel", get_kernel), ("open_channel", open_channel),
                       ("execute", execute), ("request", request)):  # fmt: skip
        monkeypatch.setattr(ColabClient, name, fake)
    return events


def test_every_flow_runs_at_once_on_one_kernel(fake_server):
    results = check_flows(URL, FLOWS, "print(6*7)", "42")
    assert results == [(True, "http_over_ws: OK: printed '42'"), (True, "direct: OK: printed '42'")]
    assert [e for e in fake_server if e[1] == "start"] == [("http_over_ws", "start")]
    assert ("direct", "get k1") in fake_server
    # Deleted once, by the flow that started it, after every flow executed.
    assert fake_server[-1] == ("http_over_ws", "DELETE /api/kernels/k1")
    assert [e for e in fake_server if e[1].startswith("DELETE")] == [fake_server[-1]]


def test_a_kernel_that_cannot_start_leaves_each_other_flow_its_own(fake_server, monkeypatch):
    real_start = ColabClient.start_kernel

    def refuse_first(self):
        if self.flow == "http_over_ws":
            raise ColabProtocolError("refused for the test", 403)
        return real_start(self)

    monkeypatch.setattr(ColabClient, "start_kernel", refuse_first)
    # Alone, the direct flow cannot meet a partner at the barrier: give it a lone execute.
    monkeypatch.setattr(ColabClient, "execute", lambda self, code: "42\n")
    results = check_flows(URL, FLOWS, "print(6*7)", "42")
    assert results == [(False, "http_over_ws: FAILED: refused for the test"), (True, "direct: OK: printed '42'")]
    assert ("direct", "start") in fake_server
    assert ("direct", "DELETE /api/kernels/k1") in fake_server


def test_roundtrip_times_pause_before_each_execute_untimed(monkeypatch):
    import colab_client

    events = []
    clock = iter(range(0, 1000, 10))  # perf_counter: 0, 10, 20, ... (each execute "takes" 10 s)
    monkeypatch.setattr(colab_client.time, "perf_counter", lambda: next(clock))
    monkeypatch.setattr(colab_client.time, "sleep", lambda s: events.append(("sleep", s)))
    monkeypatch.setattr(ColabClient, "execute", lambda self, code: events.append(("execute", code)))
    client = ColabClient("http://localhost:1", "t" * 48, flow="direct")
    assert client.roundtrip_times(2, "pass", pause=0.04) == [10, 10]
    assert events == [("sleep", 0.04), ("execute", "pass"), ("sleep", 0.04), ("execute", "pass")]
    events.clear()
    client.roundtrip_times(1)
    assert events == [("execute", "pass")]  # back to back by default
