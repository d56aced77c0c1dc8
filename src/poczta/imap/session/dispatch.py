"""Which handler runs each IMAP command, and in which session states it may run."""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING, Any

from poczta.imap import commands as cmd
from poczta.imap.session import (
    append,
    auth,
    compress,
    mailboxes,
    messages,
    quota,
    search,
    selected,
    store_flags,
)

if TYPE_CHECKING:
    from poczta.imap.session.core import Handler, ImapSession

__all__ = ["handler_for"]


class State(Enum):
    ANY = "any"
    NOT_AUTHENTICATED = "not authenticated"
    AUTHENTICATED = "authenticated"  # selected too
    SELECTED = "selected"


_S = State
_TABLE: dict[type[cmd.Command], tuple[Any, State]] = {
    cmd.Capability: (auth.capability, _S.ANY),
    cmd.Noop: (selected.noop, _S.ANY),
    cmd.Logout: (auth.logout, _S.ANY),
    cmd.Id: (auth.identify, _S.ANY),
    cmd.StartTls: (auth.starttls, _S.NOT_AUTHENTICATED),
    cmd.Login: (auth.login, _S.NOT_AUTHENTICATED),
    cmd.Authenticate: (auth.authenticate, _S.NOT_AUTHENTICATED),
    cmd.Enable: (auth.enable, _S.AUTHENTICATED),
    cmd.Namespace: (mailboxes.namespace, _S.AUTHENTICATED),
    cmd.Select: (selected.select, _S.AUTHENTICATED),
    cmd.Create: (mailboxes.create, _S.AUTHENTICATED),
    cmd.Delete: (mailboxes.delete, _S.AUTHENTICATED),
    cmd.Rename: (mailboxes.rename, _S.AUTHENTICATED),
    cmd.Subscribe: (mailboxes.subscribe, _S.AUTHENTICATED),
    cmd.Unsubscribe: (mailboxes.unsubscribe, _S.AUTHENTICATED),
    cmd.List: (mailboxes.list_mailboxes, _S.AUTHENTICATED),
    cmd.Lsub: (mailboxes.lsub, _S.AUTHENTICATED),
    cmd.Status: (mailboxes.status, _S.AUTHENTICATED),
    cmd.Append: (append.append, _S.AUTHENTICATED),
    cmd.Idle: (selected.idle, _S.AUTHENTICATED),
    cmd.Compress: (compress.compress, _S.AUTHENTICATED),
    cmd.Check: (selected.check, _S.SELECTED),
    cmd.Close: (selected.close, _S.SELECTED),
    cmd.Unselect: (selected.unselect, _S.SELECTED),
    cmd.Expunge: (selected.expunge, _S.SELECTED),
    cmd.Fetch: (messages.fetch, _S.SELECTED),
    cmd.Store: (store_flags.store_flags, _S.SELECTED),
    cmd.Copy: (messages.copy, _S.SELECTED),
    cmd.Move: (messages.move, _S.SELECTED),
    cmd.Search: (messages.search, _S.SELECTED),
    cmd.Sort: (search.run_sort, _S.SELECTED),
    cmd.Thread: (search.run_thread, _S.SELECTED),
    cmd.GetQuotaRoot: (quota.get_quota_root, _S.AUTHENTICATED),
    cmd.GetQuota: (quota.get_quota, _S.AUTHENTICATED),
    cmd.SetQuota: (quota.set_quota, _S.AUTHENTICATED),
}


def handler_for(session: ImapSession, command: cmd.Command) -> tuple[Handler | None, str]:
    """The handler of `command`, or None and why it cannot run now."""
    entry = _TABLE.get(type(command))
    if entry is None:
        return None, "Command not supported"
    handler, state = entry
    if state is _S.NOT_AUTHENTICATED and session.user is not None:
        return None, "Already logged in"
    if state in (_S.AUTHENTICATED, _S.SELECTED) and session.user is None:
        return None, "Log in first"
    if state is _S.SELECTED and session.view is None:
        return None, "Select a mailbox first"
    return handler, ""
