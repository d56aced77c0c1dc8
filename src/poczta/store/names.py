"""Mailbox names as every backend stores them: INBOX in its canonical case, "/" between levels."""

from __future__ import annotations

from poczta.store.records import StoreError

__all__ = ["mailbox_name"]


def mailbox_name(name: str) -> str:
    """A valid mailbox name with INBOX in its canonical case."""
    name = name.strip()
    if name.upper() == "INBOX":
        return "INBOX"
    if name.upper().startswith("INBOX/"):
        name = "INBOX" + name[5:]
    if not name or name.startswith("/") or name.endswith("/") or "//" in name:
        raise StoreError(f"invalid mailbox name {name!r}")
    return name
