"""What a flag change (IMAP STORE) does to each message: one rule for every backend.

A message changed since `unchangedsince` (CONDSTORE, RFC 7162) is refused and reported
as modified; the others get their new flags by the mode, and only those whose flags
really change are written (and get a new MODSEQ).
"""

from __future__ import annotations

from collections.abc import Iterable

from poczta.store.records import FlagMode

__all__ = ["flag_changes", "new_flags"]


def new_flags(old: frozenset[str], flags: frozenset[str], mode: FlagMode) -> frozenset[str]:
    """A message's flags after adding, removing or replacing `flags`."""
    if mode is FlagMode.ADD:
        return old | flags
    if mode is FlagMode.REMOVE:
        return old - flags
    return flags


def flag_changes(
    rows: Iterable[tuple[int, frozenset[str], int]],
    flags: frozenset[str],
    mode: FlagMode,
    unchangedsince: int | None,
) -> tuple[list[int], list[tuple[int, frozenset[str]]]]:
    """(uids refused by UNCHANGEDSINCE, (uid, new flags) to write) for rows of
    (uid, current flags, modseq)."""
    modified: list[int] = []
    updates: list[tuple[int, frozenset[str]]] = []
    for uid, old, modseq in rows:
        if unchangedsince is not None and modseq > unchangedsince:
            modified.append(uid)
            continue
        new = new_flags(old, flags, mode)
        if new != old:
            updates.append((uid, new))
    return modified, updates
