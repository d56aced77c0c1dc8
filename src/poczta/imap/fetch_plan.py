"""FETCH responses of cached facts, written straight to octets by a plan made per command.

`fetch_items` and `FetchData.encode` look at every attribute of every message and build
a value tree to encode; for a FETCH of cached facts alone (a client's first look at a
mailbox: UID FLAGS RFC822.SIZE INTERNALDATE ENVELOPE BODYSTRUCTURE, over thousands of
messages) that walk is most of the cost. A `FetchPlan` settles once which items are
sent and in what order, and then writes each message's response directly, with the
kept wire text of ENVELOPE and BODYSTRUCTURE (`poczta.message.fetch_text`).

The octets are exactly those of the general path (a property test compares them). A
FETCH asking for anything else has no plan, and a message whose kept text does not
suit the client (none kept, or non-ASCII for a UTF-8 client) gets None from `encode`,
for the caller to answer through the general path. A plan of UID, FLAGS and MODSEQ
alone needs nothing from the store (`needs_facts`): the session's view has them.
"""

from __future__ import annotations

from collections.abc import Sequence

from poczta.imap.fetch import FetchAttribute, FetchItem
from poczta.imap.fetch_cache import cached_item
from poczta.imap.fetch_response import MessageFacts
from poczta.imap.values import date_time
from poczta.message.imap_wire import Value, write_value

__all__ = ["FetchPlan"]

_FROM_VIEW = frozenset({"UID", "FLAGS", "MODSEQ"})
_PLANNED = _FROM_VIEW | {"RFC822.SIZE", "INTERNALDATE", "ENVELOPE", "BODYSTRUCTURE"}


class FetchPlan:
    """The items of one FETCH command whose attributes are all cached facts."""

    __slots__ = ("_names", "_utf8", "needs_facts")

    def __init__(self, names: Sequence[str], utf8: bool) -> None:
        self._names = tuple(names)
        self._utf8 = utf8
        self.needs_facts = not _FROM_VIEW.issuperset(names)

    @classmethod
    def make(
        cls, attributes: Sequence[FetchAttribute], *, with_uid: bool, utf8: bool
    ) -> FetchPlan | None:
        """The plan for these attributes, or None when some item is not a cached fact."""
        names = ["UID"] if with_uid else []
        for attribute in attributes:
            if not isinstance(attribute, FetchItem) or attribute.name not in _PLANNED:
                return None
            if attribute.name not in names:  # as `fetch_items`: each item once
                names.append(attribute.name)
        return cls(names, utf8)

    def encode(
        self,
        number: int,
        uid: int,
        facts: MessageFacts | None,
        flag_items: Sequence[tuple[str, Value]],
    ) -> bytes | None:
        """`* number FETCH (...)` for one message, or None when its kept text cannot be
        used; `flag_items` are the FLAGS (and MODSEQ) as the session's view has them.
        `facts` may be None when the plan does not `needs_facts`."""
        out = [b"* %d FETCH (" % number]
        first = True
        for name in self._names:
            if name == "UID":
                value = b"UID %d" % uid
            elif name in ("FLAGS", "MODSEQ"):  # the view's, when it has them
                found = [v for n, v in flag_items if n == name]
                if not found:
                    continue
                parts = [name.encode("ascii"), b" "]
                write_value(found[0], parts, self._utf8)
                value = b"".join(parts)
            elif facts is None:
                raise ValueError(f"{name} needs the message's facts")
            elif name == "ENVELOPE" or name == "BODYSTRUCTURE":
                kept = facts.imap_envelope if name == "ENVELOPE" else facts.imap_bodystructure
                text = cached_item(kept, self._utf8)
                if text is None:
                    return None
                value = b"%s %s" % (name.encode("ascii"), text.encode("utf-8"))
            elif name == "RFC822.SIZE":
                value = b"RFC822.SIZE %d" % facts.size
            else:  # INTERNALDATE
                value = b'INTERNALDATE "%s"' % date_time(facts.internal_date).encode("ascii")
            out.append(value if first else b" " + value)
            first = False
        out.append(b")\r\n")
        return b"".join(out)
