"""Fixtures for the store contract suite: one `backend` per MailStore implementation.

Every test that takes `backend` runs on each backend, unless its module (or the test)
names the ones it is for: `pytestmark = pytest.mark.backends("sqlite")`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.store.store_helpers import BACKENDS, Backend


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "backends(*names): run the contract tests on these store backends only"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("backends")
    names = list(marker.args) if marker is not None else list(BACKENDS)
    unknown = set(names) - set(BACKENDS)
    if unknown:
        raise pytest.UsageError(f"unknown store backends {sorted(unknown)}")
    metafunc.parametrize("backend", names, indirect=True)


@pytest.fixture
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "postgres":
        server = request.getfixturevalue("postgres")
        yield Backend("postgres", tmp_path, server, server.dsn(server.new_database()))
    else:
        yield Backend(request.param, tmp_path)
