"""Fixtures that run poczta as a real subprocess and talk to it over loopback sockets."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import PocztaServer, make_server


@pytest.fixture(scope="module")
def poczta(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PocztaServer]:
    """One running poczta per test module, with alice, bob and a few aliases."""
    server = make_server(tmp_path_factory.mktemp("poczta"))
    server.start()
    yield server
    if server.proc is not None:
        server.stop()


@pytest.fixture
def fresh_poczta(tmp_path: Path) -> Iterator[PocztaServer]:
    """A poczta of its own for tests that stop, kill or reconfigure it."""
    server = make_server(tmp_path)
    server.start()
    yield server
    if server.proc is not None:
        server.kill()
