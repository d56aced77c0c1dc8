"""Which mailbox a delivery target names, the one rule every delivery statement uses.

A target names its user's mailbox by special use (`\\Junk`, say) or by name; a special use
the user no longer has falls back to INBOX. `target_key` gives the statement's
parameters for a target, `mailbox_of` the subquery that finds the mailbox from them:
the one with that special use first, else the one of that name.
"""

from __future__ import annotations

from poczta.store.base import DeliveryTarget, UserId
from poczta.store.names import mailbox_name

__all__ = ["mailbox_of", "target_key"]


def target_key(target: DeliveryTarget) -> tuple[UserId, str, str | None]:
    """(user, mailbox name, special use) to look `target`'s mailbox up by."""
    if target.mailbox.startswith("\\"):
        return target.user_id, "INBOX", target.mailbox
    return target.user_id, mailbox_name(target.mailbox), None


def mailbox_of(user: str, name: str, special: str) -> str:
    """SQL: the id of the mailbox of `user` with the special use `special`, else named
    `name` (NULL: none); the arguments are SQL expressions of the key's three parts."""
    return (
        f"(SELECT b.id FROM mailboxes b WHERE b.user_id = {user}"
        f" AND (b.special_use = {special} OR b.name = {name})"
        f" ORDER BY coalesce(b.special_use = {special}, false) DESC, b.id LIMIT 1)"
    )
