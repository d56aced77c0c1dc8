"""Fixtures for the store contract suite: one `backend` per MailStore implementation."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.store.store_helpers import Backend


def _backends() -> list[str]:
    names = ["sqlite"]
    if os.environ.get("POCZTA_TEST_POSTGRES"):
        names.append("postgres")
    return names


@pytest.fixture(params=_backends())
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    yield Backend(request.param, tmp_path)
