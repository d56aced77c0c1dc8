"""The flag-change rule both backends apply: modes, UNCHANGEDSINCE, no write without a
change, and how many octets of flags a message may carry."""

from __future__ import annotations

from poczta.store.flag_changes import flag_changes
from poczta.store.records import MAX_FLAGS_OCTETS, FlagMode, flags_fit

ROWS = [(1, frozenset({"\\Seen"}), 5), (2, frozenset(), 9), (3, frozenset({"a"}), 3)]


def test_only_real_changes_are_written_and_newer_messages_are_refused() -> None:
    modified, updates = flag_changes(ROWS, frozenset({"\\Seen"}), FlagMode.ADD, 6)
    assert modified == [2]
    assert updates == [(3, frozenset({"a", "\\Seen"}))]  # message 1 had it already


def test_remove_and_replace_without_unchangedsince() -> None:
    assert flag_changes(ROWS, frozenset({"a"}), FlagMode.REMOVE, None) == ([], [(3, frozenset())])
    modified, updates = flag_changes(ROWS, frozenset({"b"}), FlagMode.REPLACE, None)
    assert modified == [] and [uid for uid, _ in updates] == [1, 2, 3]


def test_flags_fit_up_to_max_flags_octets_counted_as_imap_lists_them() -> None:
    assert flags_fit([])
    at_limit = ["k" * 1999, "x" * 2000]  # 1,999 + a space + 2,000
    assert flags_fit(at_limit)
    assert not flags_fit(["k" * 2000, "x" * 2000])
    assert flags_fit(["é" * 2000])  # 4,000 octets in UTF-8
    assert not flags_fit(["é" * 2000, "a"])
    assert sum(len(f) for f in at_limit) + 1 == MAX_FLAGS_OCTETS
