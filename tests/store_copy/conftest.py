"""Fixtures of the whole-store copy tests: a filled SQLite store, made once per session."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from tests.store_copy.copy_helpers import fill_sqlite


@pytest.fixture(scope="session")
def filled_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("filled") / "store"
    asyncio.run(fill_sqlite(root))
    return root


@pytest.fixture
def original(filled_template: Path, tmp_path: Path) -> Path:
    """A data directory of this test's own holding the filled SQLite store."""
    root = tmp_path / "original"
    shutil.copytree(filled_template, root)
    return root
