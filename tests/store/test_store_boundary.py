"""The store boundary: outside the embedded backend, only the two places that pick a
backend name it (`poczta.store`'s `open_store`, and `poczta.store.copy.targets` for a
copy's source and target), so everything else speaks the interfaces a second backend
implements too."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "poczta"
BACKEND = "poczta.store.sqlite"


def _imports(path: Path) -> set[str]:
    """Every module `path` imports, at the top or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_only_the_store_package_opens_the_embedded_backend() -> None:
    inside = PACKAGE / "store" / "sqlite"
    naming = {
        path.relative_to(PACKAGE).as_posix()
        for path in PACKAGE.rglob("*.py")
        if inside not in path.parents
        and any(name == BACKEND or name.startswith(BACKEND + ".") for name in _imports(path))
    }
    assert naming == {"store/__init__.py", "store/copy/targets.py"}
