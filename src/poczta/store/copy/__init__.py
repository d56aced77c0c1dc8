"""Copying a whole store from one backend to another (`poczta store copy`): the neutral
rows (`tables`), the copy (`run`), its verification (`verify`), where stores are opened
(`targets`)."""

from poczta.store.copy.progress import CopyProgress, NoProgress
from poczta.store.copy.run import CopyLimits, CopyReport, copy_store
from poczta.store.copy.tables import TABLES, CopyError, StoreTables
from poczta.store.copy.verify import Verification, verify_copy

__all__ = [
    "TABLES",
    "CopyError",
    "CopyLimits",
    "CopyProgress",
    "CopyReport",
    "NoProgress",
    "StoreTables",
    "Verification",
    "copy_store",
    "verify_copy",
]
