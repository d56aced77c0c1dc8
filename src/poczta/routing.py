"""Recipient routing: where mail for an address goes, decided over the store's lookups.

The rules, in order, for an address of one of our domains:

1. the user of that exact address;
2. the alias of that exact address;
3. for `local+tag@domain` (plus-addressing; not for an empty `local`), the user, then the
   alias, of `local@domain`;
4. the domain's catch-all, the alias `@domain`.

An alias expands one level: a target that is a user gets the mail, a target in a domain
that is not ours is relayed to, and a target in one of our domains that is no user
(another alias, a removed user, a typo) is dropped, so aliases can neither chain nor
loop. An alias all of whose targets are dropped counts as absent: the next rule is tried.

The store only finds (`AddressBook.find_addresses`); the rules are here, once for every
backend. Cost on the RCPT path (before `poczta.delivery.RecipientCache`): one store
round trip for the address, its base without the tag and the catch-all together, which
is all a user's address, an unknown one or another domain's needs; one more when an
alias is reached, for its targets.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from poczta.store.base import (
    AddressBook,
    AddressEntry,
    Resolution,
    UserId,
    UserRecord,
    normalize_address,
)

__all__ = ["RecipientRouting", "Route", "resolve_recipient", "route_recipient"]


@dataclass(frozen=True, slots=True)
class Route:
    """Where mail for one address goes: whether its domain is ours, and then who takes it
    (`resolution` None: no user or alias does)."""

    local_domain: bool
    resolution: Resolution | None = None


async def route_recipient(book: AddressBook, address: str) -> Route:
    """The route of `address` (any case, blanks around it allowed) by the rules above."""
    addr = normalize_address(address)
    local, at, domain = addr.rpartition("@")
    if not at or not domain:
        return Route(local_domain=False)
    named = [addr] if local else []
    base = local.split("+", 1)[0]
    if "+" in local and base:
        named.append(f"{base}@{domain}")
    entries = await book.find_addresses([*named, f"@{domain}"])
    if not entries[0].local_domain:
        return Route(local_domain=False)
    return Route(local_domain=True, resolution=await _first_taker(book, entries) if named else None)


async def resolve_recipient(book: AddressBook, address: str) -> Resolution | None:
    """Who takes mail for `address`: None when it is not ours or nobody does."""
    return (await route_recipient(book, address)).resolution


class RecipientRouting:
    """`MailStore.resolve_recipient` for a backend: inherit it, implement `find_addresses`."""

    async def resolve_recipient(self: AddressBook, address: str) -> Resolution | None:
        return await resolve_recipient(self, address)


async def _first_taker(book: AddressBook, entries: Sequence[AddressEntry]) -> Resolution | None:
    """The first rule that takes the mail; `entries` are the named addresses, then the
    catch-all (whose user, if the store had one, does not count)."""
    targets: Mapping[str, AddressEntry] | None = None
    last = len(entries) - 1
    for index, entry in enumerate(entries):
        if entry.user is not None and index < last:
            return Resolution((entry.user,), ())
        if entry.alias_targets:
            if targets is None:  # one round trip for the targets of every alias left
                targets = await _target_entries(book, entries[index:])
            expanded = _expand(entry.alias_targets, targets)
            if expanded is not None:
                return expanded
    return None


async def _target_entries(
    book: AddressBook, entries: Sequence[AddressEntry]
) -> dict[str, AddressEntry]:
    wanted = list(dict.fromkeys(t for entry in entries for t in entry.alias_targets))
    return dict(zip(wanted, await book.find_addresses(wanted), strict=True))


def _expand(targets: Sequence[str], found: Mapping[str, AddressEntry]) -> Resolution | None:
    """An alias's targets as local users and remote addresses; None when none is left."""
    users: dict[UserId, UserRecord] = {}
    remote: list[str] = []
    for target in targets:
        entry = found[target]
        if entry.user is not None:
            users.setdefault(entry.user.id, entry.user)
        elif not entry.local_domain:
            remote.append(target)
    if not users and not remote:
        return None
    return Resolution(tuple(users.values()), tuple(remote))
