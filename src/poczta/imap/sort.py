"""SORT: matched messages in the order of the client's sort criteria (RFC 5256, RFC 5957).

`sort_numbers(keys, numbers, messages)` orders the sequence numbers a search matched.
Each criterion's value is computed once per message, then the list is sorted once per
criterion, last criterion first: Python's sort is stable (also with `reverse=True`), so
earlier criteria decide and ties fall to later ones, and finally to the sequence
number, ascending, which REVERSE never turns around (RFC 5256 section 3).

- ARRIVAL: the internal date; DATE: the Date: field's instant, else the internal date.
- FROM, TO, CC: the mailbox (local part) of the first address; none sorts as "".
- DISPLAYFROM, DISPLAYTO: the first address's display name (decoded), or, when it has
  none, its `mailbox@host` (RFC 5957).
- When the list starts with a group, the group's name stands for the first address
  in both (as in Dovecot: `To: undisclosed:;` sorts as "undisclosed").
- SUBJECT: the base subject (`basesubject.base_subject`).
- Strings compare by i;unicode-casemap (`basesubject.casemap_key`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from poczta.imap.basesubject import base_subject, casemap_key
from poczta.imap.commands import SortKey
from poczta.imap.search_eval import SearchableMessage
from poczta.message import Address, decode_words

__all__ = ["SORT_VALUES", "display_name", "first_mailbox", "sent_instant", "sort_numbers"]

SortValue = float | int | str


def instant(when: datetime) -> float:
    """Seconds since the epoch; a date without a zone is taken as UTC."""
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def sent_instant(message: SearchableMessage) -> float:
    """The sent date (Date: field), or the internal date when there is no valid one."""
    return instant(message.sent_date or message.internal_date)


def first_mailbox(addresses: Sequence[Address]) -> str:
    """The addr-mailbox of the first address (a group's name for a group; "" for none)."""
    return addresses[0].mailbox or "" if addresses else ""


def display_name(addresses: Sequence[Address]) -> str:
    """The display name of the first address, or its address when it has no name (a
    group's name for a group)."""
    if not addresses:
        return ""
    first = addresses[0]
    name = decode_words(first.name).strip() if first.name else ""
    return name or first.address or first.mailbox or ""


SORT_VALUES: dict[str, Callable[[SearchableMessage], SortValue]] = {
    "ARRIVAL": lambda message: instant(message.internal_date),
    "DATE": sent_instant,
    "SIZE": lambda message: message.size,
    "SUBJECT": lambda message: casemap_key(base_subject(message.subject).text),
    "FROM": lambda message: casemap_key(first_mailbox(message.envelope.from_)),
    "TO": lambda message: casemap_key(first_mailbox(message.envelope.to)),
    "CC": lambda message: casemap_key(first_mailbox(message.envelope.cc)),
    "DISPLAYFROM": lambda message: casemap_key(display_name(message.envelope.from_)),
    "DISPLAYTO": lambda message: casemap_key(display_name(message.envelope.to)),
}


def sort_numbers(
    keys: Sequence[SortKey], numbers: Sequence[int], messages: Sequence[SearchableMessage]
) -> list[int]:
    """`numbers` (sequence numbers into `messages`) in the order `keys` ask for."""
    order = sorted(numbers)
    for key in reversed(keys):
        value_of = SORT_VALUES[key.name]
        values = {number: value_of(messages[number - 1]) for number in order}
        order.sort(key=values.__getitem__, reverse=key.reverse)
    return order
