"""Shared pytest fixtures: a moto EC2 API and podman test hosts reachable over SSH."""

from __future__ import annotations

from pathlib import Path

import pytest

from colab_testkit.substrate import (
    MotoServer,
    RemoteHost,
    make_ssh_key,
    remove_test_containers,
    testhost_image,
)


@pytest.fixture(scope="session")
def moto_server():
    """One moto_server for the session on a free 127.0.0.1 port, stopped at the end."""
    server = MotoServer()
    yield server
    server.stop()


@pytest.fixture
def moto(moto_server):
    """The moto server with its state reset before (and after) the test."""
    moto_server.reset()
    yield moto_server
    moto_server.reset()


@pytest.fixture(scope="session")
def ssh_key(tmp_path_factory) -> Path:
    """An ed25519 key pair owned by this test session."""
    return make_ssh_key(tmp_path_factory.mktemp("ssh"))


@pytest.fixture(scope="session")
def bookworm_image() -> str:
    return testhost_image("bookworm")


@pytest.fixture(scope="session")
def _cleanup_leftover_hosts():
    remove_test_containers()
    yield
    remove_test_containers(include_own=True)


@pytest.fixture
def remote_host_factory(bookworm_image, ssh_key, _cleanup_leftover_hosts):
    """Start podman "remote hosts" (systemd + sshd on 127.0.0.1); removed even if the test fails."""
    started: list[RemoteHost] = []

    def start(**kwargs) -> RemoteHost:
        kwargs.setdefault("image", bookworm_image)
        host = RemoteHost.start(key_path=ssh_key, **kwargs)
        started.append(host)
        return host

    yield start
    for host in started:
        host.remove()


@pytest.fixture
def remote_host(remote_host_factory) -> RemoteHost:
    return remote_host_factory()
