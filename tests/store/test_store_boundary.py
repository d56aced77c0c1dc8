"""The store boundary: outside the embedded backend, only the two places that pick a
backend name it (`poczta.store`'s `open_store`, and `poczta.store.copy.targets` for a
copy's source and target), so everything else speaks the interfaces a second backend
implements too. Dependencies point inward: the store sees no protocol, and the message
facts and mail checks it keeps state for see neither a protocol nor the store."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "poczta"
BACKEND = "poczta.store.sqlite"
PROTOCOLS = ("poczta.imap", "poczta.smtp", "poczta.pop3", "poczta.http")


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


def _importing(package: str, forbidden: tuple[str, ...]) -> dict[str, set[str]]:
    """The modules under `package` that import one of `forbidden` (or a module inside
    one), with what they import of them."""
    found: dict[str, set[str]] = {}
    for path in (PACKAGE / package).rglob("*.py"):
        names = {
            name
            for name in _imports(path)
            if any(name == f or name.startswith(f + ".") for f in forbidden)
        }
        if names:
            found[path.relative_to(PACKAGE).as_posix()] = names
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


def test_the_store_imports_no_protocol() -> None:
    assert _importing("store", PROTOCOLS) == {}


def test_the_message_facts_import_no_protocol_and_no_store() -> None:
    assert _importing("message", (*PROTOCOLS, "poczta.store")) == {}


def test_the_mail_checks_import_no_protocol_and_no_store() -> None:
    assert _importing("mailauth", (*PROTOCOLS, "poczta.store")) == {}
