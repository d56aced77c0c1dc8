"""What one session's client knows of its selected mailbox: sequence numbers, flags, news.

RFC 9051 §7.5.2 gives each session its own message sequence numbers: they change only
when the server tells that client of an expunge, never behind its back. `SelectedView`
keeps the UIDs in sequence-number order and the flags the client was last told, takes
in what the store says changed (`absorb`: new messages, flag changes, expunges, from
this session or any other) and turns it into untagged responses when the session may
send them (`announce`). Expunges wait while the client runs FETCH, STORE or SEARCH by
sequence number (the numbers it used must stay valid); new messages and flag changes
may be told at once. With QRESYNC enabled expunges are told as VANISHED, and flag
changes carry UID and MODSEQ. A keyword another session created is told in a new
`* FLAGS` response before the first FETCH that shows it (RFC 9051 §7.3.5). A FETCH
(CHANGEDSINCE) whose own responses carry a changed message's FLAGS and MODSEQ takes
that change as told by them (`announce(answering=...)`), so it is told once. The view
knows every message's MODSEQ, and which messages' MODSEQs moved since it opened
(`changed_since`), so CHANGEDSINCE needs no store read of what it took in already.

Pure: no I/O, no store; the session feeds it (uid, flags, modseq) triples.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Container, Iterable, Sequence
from dataclasses import dataclass, field

from poczta.imap.encoder import Code, Data, FetchData, Untagged, exists, expunge, recent, vanished
from poczta.imap.encoder import flags as flags_response
from poczta.imap.sequence import SequenceSet, compact
from poczta.imap.values import flag_atoms
from poczta.message.imap_wire import Encoded, Value, write_value

__all__ = ["OutOfRange", "SelectedView"]

Change = tuple[int, frozenset[str], int]  # (uid, flags, modseq)
CHANGE_LOG = 4096  # MODSEQ moves kept to answer CHANGEDSINCE; past that the oldest half goes
SHOWN_SETS = 1024  # distinct flag sets remembered as shown (a mailbox has few)


class OutOfRange(ValueError):
    """A message sequence number beyond the mailbox's (a client error: BAD)."""


@dataclass
class SelectedView:
    """The selected mailbox as this session's client sees it."""

    mailbox_id: int
    uidvalidity: int
    read_only: bool
    uids: list[int] = field(default_factory=list)  # in sequence-number order
    flags: dict[int, frozenset[str]] = field(default_factory=dict)
    modseqs: dict[int, int] = field(default_factory=dict)
    highestmodseq: int = 0
    uidnext: int = 1
    condstore: bool = False  # MODSEQ in flag updates (CONDSTORE enabled or used)
    qresync: bool = False  # expunges as VANISHED
    recent: set[int] = field(default_factory=set)  # \\Recent in this session (IMAP4rev1)
    tell_recent: bool = True  # `* n RECENT` with EXISTS (IMAP4rev1 sessions)
    system_flags: tuple[str, ...] = ()  # listed first in FLAGS
    keywords: set[str] = field(default_factory=set)  # told in the last FLAGS response
    _keywords_due: set[str] = field(default_factory=set)  # about to be shown, not yet told
    _expunged: set[int] = field(default_factory=set)  # gone in the store, not yet told
    _changed: dict[int, frozenset[str]] = field(default_factory=dict)  # flags not yet told
    _new: list[int] = field(default_factory=list)  # arrived, EXISTS not yet told
    _flag_texts: dict[tuple[frozenset[str], bool], Encoded] = field(default_factory=dict)
    _shown: set[frozenset[str]] = field(default_factory=set)  # flag sets shown the client
    _log: dict[int, int] = field(default_factory=dict)  # uid: modseq, last moved last
    _log_floor: int = 0  # every message whose MODSEQ the view took above it is in _log

    @classmethod
    def open(
        cls,
        mailbox_id: int,
        uidvalidity: int,
        messages: Iterable[Change],
        highestmodseq: int,
        uidnext: int,
        *,
        read_only: bool,
        system_flags: Sequence[str] = (),
    ) -> SelectedView:
        view = cls(mailbox_id, uidvalidity, read_only, highestmodseq=highestmodseq)
        view._log_floor = highestmodseq
        view.uidnext = uidnext
        view.system_flags = tuple(system_flags)
        ordered = sorted(messages)
        view.uids = [uid for uid, _, _ in ordered]
        view.flags = {uid: message_flags for uid, message_flags, _ in ordered}
        view.modseqs = {uid: modseq for uid, _, modseq in ordered}
        view._log = {uid: modseq for uid, _, modseq in ordered if modseq > highestmodseq}
        for message_flags in set(view.flags.values()):
            view.keywords.update(_keywords_of(message_flags))
        return view

    def uids_from(self, first: int) -> list[int]:
        """The known UIDs from `first` on."""
        return self.uids[bisect.bisect_left(self.uids, first) :]

    def flag_list(self) -> list[str]:
        """The flags of the mailbox's FLAGS response: the system flags, then the keywords."""
        return [*self.system_flags, *sorted(self.keywords)]

    def permanent_flags(self) -> Untagged:
        """`* OK [PERMANENTFLAGS (...)]`: none when read-only, else the flags of FLAGS and
        ``\\*``, since any keyword may be created."""
        if self.read_only:
            return Untagged("OK", "No permanent flags", Code.permanent_flags([]))
        return Untagged("OK", "Flags permitted", Code.permanent_flags([*self.flag_list(), "\\*"]))

    def keyword_news(self) -> list[Data | Untagged]:
        """A new `* FLAGS` (and, read-write, PERMANENTFLAGS to match) when flags just
        given to the client name keywords it was not told of; due before the FETCH
        responses that show them."""
        if not self._keywords_due:
            return []
        self.keywords |= self._keywords_due
        self._keywords_due.clear()
        news: list[Data | Untagged] = [flags_response(self.flag_list())]
        if not self.read_only:
            news.append(self.permanent_flags())
        return news

    def _showing(self, message_flags: frozenset[str]) -> None:
        if message_flags in self._shown:  # its keywords are told or due already
            return
        self._keywords_due.update(k for k in _keywords_of(message_flags) if k not in self.keywords)
        if len(self._shown) >= SHOWN_SETS:
            self._shown.clear()
        self._shown.add(message_flags)

    # --- numbers -------------------------------------------------------------

    @property
    def arriving(self) -> list[int]:
        """UIDs absorbed but not yet told (EXISTS pending)."""
        return list(self._new)

    @property
    def exists(self) -> int:
        return len(self.uids)

    def msn(self, uid: int) -> int | None:
        """The sequence number of `uid`, or None when the client does not know it."""
        index = bisect.bisect_left(self.uids, uid)
        return index + 1 if index < len(self.uids) and self.uids[index] == uid else None

    def by_sequence(self, numbers: SequenceSet) -> list[int]:
        """The UIDs of message sequence numbers; OutOfRange for a number beyond them."""
        if not self.uids:
            if numbers.uses_star or numbers.ranges:
                raise OutOfRange("the mailbox is empty")
            return []
        largest = len(self.uids)
        ranges = numbers.resolve(largest)
        if ranges and (ranges[-1][1] > largest or ranges[0][0] < 1):
            raise OutOfRange(f"message sequence number out of range (1:{largest})")
        return [self.uids[n - 1] for low, high in ranges for n in range(low, high + 1)]

    def by_uid(self, numbers: SequenceSet) -> list[int]:
        """The known UIDs in a UID set (`*` is the highest UID; unknown ones are skipped)."""
        if not self.uids:
            return []
        found: list[int] = []
        for low, high in numbers.resolve(self.uids[-1]):
            start = bisect.bisect_left(self.uids, low)
            end = bisect.bisect_right(self.uids, high)
            found.extend(self.uids[start:end])
        return found

    def resolve(self, numbers: SequenceSet, uid: bool) -> list[int]:
        return self.by_uid(numbers) if uid else self.by_sequence(numbers)

    # --- news ------------------------------------------------------------------

    def absorb(self, changes: Sequence[Change], gone: Iterable[int], highestmodseq: int) -> None:
        """What the store reports changed since `self.highestmodseq`: messages changed or
        added (uid, flags, modseq), and UIDs expunged."""
        for uid in gone:
            if uid in self.flags:
                self._expunged.add(uid)
            elif uid in self._new:
                self._new.remove(uid)
        known_top = self.uids[-1] if self.uids else 0
        for uid, flags, modseq in changes:
            if uid in self.flags:
                self._moved(uid, modseq)
                if flags != self.flags[uid] and uid not in self._expunged:
                    self._changed[uid] = flags
                else:  # back to what the client was told: nothing to tell
                    self._changed.pop(uid, None)
            elif uid > known_top and uid not in self._new:
                self._new.append(uid)
                self._new.sort()
                self._changed[uid] = flags
                self._moved(uid, modseq)
        self.highestmodseq = max(self.highestmodseq, highestmodseq)

    def caught_up(self, own: Iterable[tuple[int, bool]]) -> bool:
        """Whether the session's own flag changes, in the order committed, are all that
        happened to the mailbox since the view's HIGHESTMODSEQ: each (the HIGHESTMODSEQ
        after it, whether it took a MODSEQ) came right after the one before. Every change
        to a mailbox takes its next MODSEQ, so then nothing else can have changed
        meanwhile, and the view moves to the last without asking the store."""
        known = self.highestmodseq
        for after, took in own:
            if after - took != known:
                return False
            known = after
        self.highestmodseq = known
        return True

    def _moved(self, uid: int, modseq: int) -> None:
        """A message's MODSEQ is now `modseq` (kept in the log for `changed_since`)."""
        self.modseqs[uid] = modseq
        if modseq <= self._log_floor:
            return
        log = self._log
        log.pop(uid, None)
        log[uid] = modseq
        if len(log) > CHANGE_LOG:  # the oldest half goes, and the floor up to its MODSEQs
            dropped = list(itertools.islice(log.items(), len(log) // 2))
            self._log_floor = max(self._log_floor, *(moved for _, moved in dropped))
            for old, _ in dropped:
                del log[old]

    def knows_changes_since(self, modseq: int) -> bool:
        """Whether `changed_since(modseq)` can answer from the view's log alone."""
        return modseq >= self._log_floor

    def changed_since(self, modseq: int) -> list[int]:
        """The known UIDs whose MODSEQ is above `modseq`, in UID order: from the log when
        it reaches back that far (`knows_changes_since`), else by looking at each."""
        modseqs = self.modseqs
        if not self.knows_changes_since(modseq):
            return [uid for uid in self.uids if modseqs.get(uid, 0) > modseq]
        flags = self.flags
        return sorted(u for u, moved in self._log.items() if moved > modseq and u in flags)

    def may_miss_expunges(self, changes: Sequence[Change], messages: int) -> bool:
        """Whether, with `changes` taken in, a mailbox now holding `messages` may have lost
        some the view still counts (else the store need not be asked which). A count read
        before the changes errs towards asking, or leaves the rest to the next look: the
        view's MODSEQ then stays below the expunge's."""
        known_top = self.uids[-1] if self.uids else 0
        arrived = sum(1 for uid, _, _ in changes if uid > known_top and uid not in self._new)
        present = len(self.uids) - len(self._expunged) + len(self._new) + arrived
        return present != messages

    @property
    def expunges_held(self) -> bool:
        """Whether expunges are waiting to be told (held back while commands number by
        sequence)."""
        return bool(self._expunged)

    def expunge_pending(self, uid: int) -> bool:
        """Whether the store has expunged `uid` and the client is yet to be told."""
        return uid in self._expunged

    def told(self, uid: int, flags: frozenset[str], modseq: int | None = None) -> None:
        """The session itself has just told the client these flags (a FETCH or STORE),
        as of `modseq`: a later change the view took in already is still to be told."""
        if uid not in self.flags:
            return
        latest = self._changed.pop(uid, self.flags[uid])
        self.flags[uid] = flags
        self._showing(flags)
        if modseq is None:
            return
        if modseq >= self.modseqs.get(uid, 0):
            self._moved(uid, modseq)
        elif latest != flags:
            self._changed[uid] = latest

    def announce(
        self,
        *,
        allow_expunge: bool,
        answering: Callable[[], Container[int]] | None = None,
    ) -> list[Data | FetchData | Untagged]:
        """The untagged responses due now, and the view updated as if the client read them.

        `answering`, called once the sequence numbers are brought up to date, names the
        messages the caller's own FETCH responses are about to tell with FLAGS and MODSEQ
        (RFC 7162 §3.2: such a response is the flag update): their changes are taken in
        as told here, and only their new keywords announced."""
        out: list[Data | FetchData] = []
        if allow_expunge and self._expunged:
            out += self._tell_expunges()
        arrived = self._tell_arrivals()
        answered = answering() if answering is not None else ()
        for uid in sorted(self._changed):
            msn = self.msn(uid)
            flags = self._changed.pop(uid)
            if msn is None:
                continue
            self.flags[uid] = flags
            self._showing(flags)
            if uid not in answered:
                out.append(FetchData(msn, self.flag_items(uid)))
        return [*self.keyword_news(), *out, *arrived]

    def _tell_arrivals(self) -> list[Data]:
        """EXISTS (and RECENT) for the messages that arrived, now numbered."""
        if not self._new:
            return []
        for uid in self._new:
            self.uids.append(uid)
            self.flags[uid] = self._changed.pop(uid, frozenset())
            self._showing(self.flags[uid])
        self._new.clear()
        out = [exists(len(self.uids))]
        if self.tell_recent:
            out.append(recent(len(self.recent)))
        return out

    def flag_items(self, uid: int) -> list[tuple[str, Value]]:
        """FLAGS (and UID, MODSEQ as CONDSTORE/QRESYNC want) of a message, for FETCH."""
        items: list[tuple[str, Value]] = [("UID", uid)] if self.qresync else []
        items.append(("FLAGS", self._told_flags(uid)))
        modseq = self._told_modseq(uid)
        if modseq is not None:
            items.append(("MODSEQ", Encoded(f"({modseq})")))
        return items

    def view_items(self, uid: int) -> tuple[bytes, int | None]:
        """What `flag_items` gives, as `FetchPlan.encode_view` takes it: the FLAGS list's
        wire text and the MODSEQ (None when CONDSTORE and QRESYNC are off)."""
        return self._told_flags(uid).encode("utf-8"), self._told_modseq(uid)

    def _told_flags(self, uid: int) -> Encoded:
        recent = self.tell_recent and uid in self.recent  # IMAP4rev2 has no \Recent
        return self._flags_value(self.flags[uid], recent)

    def _told_modseq(self, uid: int) -> int | None:
        if self.condstore or self.qresync:
            return self.modseqs.get(uid, self.highestmodseq)
        return None

    def _flags_value(self, message_flags: frozenset[str], recent: bool) -> Encoded:
        """The wire form of a FLAGS list, made once per distinct set: a mailbox has few,
        and a resync or a STORE run tells hundreds of messages' flags."""
        key = (message_flags, recent)
        text = self._flag_texts.get(key)
        if text is None:
            names = sorted(message_flags)
            if recent:
                names.append("\\Recent")
            out: list[bytes] = []
            write_value(flag_atoms(names), out)
            text = self._flag_texts[key] = Encoded(b"".join(out).decode("utf-8"))
        return text

    def _tell_expunges(self) -> list[Data | FetchData]:
        gone = sorted(self._expunged)
        self._expunged.clear()
        out: list[Data | FetchData] = []
        if self.qresync:
            out.append(vanished(compact(gone)))
        else:  # highest first: the lower numbers stay valid
            numbers = [msn for uid in gone if (msn := self.msn(uid)) is not None]
            out += [expunge(msn) for msn in reversed(numbers)]
        if len(gone) <= 8:  # a few: deleted in place, highest first
            for uid in reversed(gone):
                if (msn := self.msn(uid)) is not None:
                    del self.uids[msn - 1]
        else:  # many (a MOVE of a thousand): one pass, not a deletion each
            dropped = set(gone)
            self.uids = [u for u in self.uids if u not in dropped]
        for uid in gone:
            self.flags.pop(uid, None)
            self.recent.discard(uid)
            self.modseqs.pop(uid, None)
            self._changed.pop(uid, None)
        return out

    def expunged_now(self, uids: Iterable[int]) -> list[Data | FetchData]:
        """This session's own EXPUNGE: tell those (and any pending) at once."""
        self._expunged.update(u for u in uids if u in self.flags)
        return self._tell_expunges()


def _keywords_of(message_flags: Iterable[str]) -> Iterable[str]:
    return (flag for flag in message_flags if not flag.startswith("\\"))
