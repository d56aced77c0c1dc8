"""IMAP QUOTA (RFC 9208): GETQUOTAROOT, GETQUOTA, SETQUOTA, and the room APPEND and COPY need.

Each user has one quota root, "", over all of the user's mailboxes, with the resources
poczta limits: STORAGE (units of 1024 octets) and MESSAGE. Only a limited resource is
told (RFC 9208 has no way to say "unlimited"), so a user without any limit has no quota
root: GETQUOTAROOT names none and GETQUOTA "" is NO [NONEXISTENT]. SETQUOTA is NO
[NOPERM]: the administrator sets limits with `poczta user quota` (no QUOTASET).

An APPEND or COPY that would pass a limit is NO [OVERQUOTA] with nothing stored; the
same response code serves IMAP4rev1 clients (RFC 5530) and IMAP4rev2 (RFC 9051).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from poczta.imap import commands as cmd
from poczta.imap.encoder import quota_data, quota_root_data
from poczta.imap.names import canonical
from poczta.quota import Quotas, UserQuota
from poczta.store.base import NotFound

if TYPE_CHECKING:
    from poczta.imap.session.core import ImapSession

__all__ = ["OVERQUOTA", "get_quota", "get_quota_root", "lacks_room", "set_quota"]

ROOT = ""
OVERQUOTA = ("Quota exceeded: the mailboxes of this user are full", "OVERQUOTA")


async def _quota(session: ImapSession) -> UserQuota | None:
    assert session.user_id is not None
    quotas = session.ctx.quotas or Quotas(session.store)
    return (await quotas.of([session.user_id])).get(session.user_id)


async def lacks_room(session: ImapSession, octets: int, messages: int = 1) -> bool:
    """True (and the refusal logged) when `messages` more messages of `octets` in all
    would take the user past a limit."""
    quota = await _quota(session)
    if quota is None or quota.room_for(octets, messages):
        return False
    Quotas.refused("imap", session.user or "", quota, size=octets)
    return True


async def get_quota_root(session: ImapSession, command: cmd.Command) -> None:
    assert isinstance(command, cmd.GetQuotaRoot) and session.user_id is not None
    try:
        box = await session.store.get_mailbox(session.user_id, canonical(command.mailbox))
    except NotFound:
        session.no(command.tag, "No such mailbox", "NONEXISTENT")
        return
    quota = await _quota(session)
    resources = quota.imap_resources() if quota is not None else []
    session.send(quota_root_data(box.name, [ROOT] if resources else []))
    if resources:
        session.send(quota_data(ROOT, resources))
    session.ok(command.tag, "GETQUOTAROOT completed")


async def get_quota(session: ImapSession, command: cmd.Command) -> None:
    assert isinstance(command, cmd.GetQuota)
    quota = await _quota(session)
    resources = quota.imap_resources() if quota is not None else []
    if command.root != ROOT or not resources:
        session.no(command.tag, "No such quota root", "NONEXISTENT")
        return
    session.send(quota_data(ROOT, resources))
    session.ok(command.tag, "GETQUOTA completed")


async def set_quota(session: ImapSession, command: cmd.Command) -> None:
    assert isinstance(command, cmd.SetQuota)
    session.no(command.tag, "Quotas are set by the administrator", "NOPERM")
