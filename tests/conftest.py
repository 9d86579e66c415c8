"""Shared fixtures. Live-server helpers live in ``tests/utils/server.py``."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.utils.server import LiveServer, start_server


@pytest.fixture
def server_factory(tmp_path_factory) -> Iterator[Callable[..., LiveServer]]:
    """Start real ``workbench serve`` subprocesses; every one is stopped after the test.
    ``server_factory(home=None, **kw)``: a fresh home unless one is given (to restart)."""
    started: list[LiveServer] = []

    def make(home=None, **kwargs) -> LiveServer:
        home = home or tmp_path_factory.mktemp("wbhome")
        server = start_server(home, **kwargs)
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def live_server(tmp_path_factory) -> Iterator[LiveServer]:
    """One server shared by a test module (fresh store, WORKBENCH_OFFLINE=1)."""
    server = start_server(tmp_path_factory.mktemp("wbhome"))
    try:
        yield server
    finally:
        server.stop()
