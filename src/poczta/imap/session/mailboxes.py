"""IMAP mailbox commands: NAMESPACE, CREATE, DELETE, RENAME, (UN)SUBSCRIBE, LIST, LSUB, STATUS.

LIST answers with the children attributes (\\HasChildren / \\HasNoChildren) and the
special uses always, \\Subscribed when asked (RETURN (SUBSCRIBED) or the SUBSCRIBED
selection), and a mailbox implied by a deeper one but not existing as \\NonExistent
(\\Noselect for LSUB). RETURN (STATUS (...)) adds a STATUS response after each
selectable mailbox (RFC 5819). Deleting a mailbox that has children is refused: delete
those first (poczta has no \\Noselect mailboxes). RENAME of INBOX moves its messages
into the new mailbox and leaves INBOX empty (RFC 9051 §6.3.6).
"""

from __future__ import annotations

import contextlib
import re
from typing import TYPE_CHECKING

from poczta.imap import commands as cmd
from poczta.imap.encoder import Data, list_data, namespace_data, status_data
from poczta.imap.names import DELIMITER, canonical, name_problem, pattern_matcher
from poczta.quota import storage_units
from poczta.store.base import (
    SPECIAL_USES,
    AlreadyExists,
    MailboxState,
    NotFound,
    StoreError,
    UserId,
)

if TYPE_CHECKING:
    from poczta.imap.session.core import ImapSession

STATUS_ITEMS = (
    "MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "DELETED", "SIZE", "HIGHESTMODSEQ", "RECENT",
    "DELETED-STORAGE",
)  # fmt: skip


def _user(session: ImapSession) -> UserId:
    assert session.user_id is not None
    return session.user_id


def _checked_name(session: ImapSession, tag: str, name: str) -> str | None:
    name = canonical(name.rstrip(DELIMITER) if name != DELIMITER else name)
    problem = name_problem(name)
    if problem is not None:
        session.no(tag, problem, "CANNOT")
        return None
    return name


async def namespace(session: ImapSession, command: cmd.Command) -> None:
    session.send(namespace_data([("", DELIMITER)], [], []))
    session.ok(command.tag, "NAMESPACE completed")


async def create(session: ImapSession, command: cmd.Command) -> None:
    assert isinstance(command, cmd.Create)
    name = _checked_name(session, command.tag, command.mailbox)
    if name is None:
        return
    uses = [use for use in command.special_use]
    if len(uses) > 1 or (uses and uses[0] not in SPECIAL_USES):
        session.no(command.tag, "Unsupported special use", "USEATTR")
        return
    try:
        await session.store.create_mailbox(_user(session), name, uses[0] if uses else None)
    except AlreadyExists:
        session.no(command.tag, "Mailbox exists already", "ALREADYEXISTS")
        return
    session.ok(command.tag, "CREATE completed")


async def delete(session: ImapSession, command: cmd.Command) -> None:
    assert isinstance(command, cmd.Delete)
    name = canonical(command.mailbox)
    if name == "INBOX":
        session.no(command.tag, "INBOX cannot be deleted", "CANNOT")
        return
    boxes = await session.store.list_mailboxes(_user(session))
    if not any(box.name == name for box in boxes):
        session.no(command.tag, "No such mailbox", "NONEXISTENT")
        return
    if any(box.name.startswith(name + DELIMITER) for box in boxes):
        session.no(command.tag, "The mailbox has child mailboxes: delete those first", "INUSE")
        return
    if session.view is not None and any(
        box.name == name and box.id == session.view.mailbox_id for box in boxes
    ):
        await _leave(session)
    await session.store.delete_mailbox(_user(session), name)
    session.ok(command.tag, "DELETE completed")


async def _leave(session: ImapSession) -> None:
    session.view = None
    await session.watch(None)


async def rename(session: ImapSession, command: cmd.Command) -> None:
    assert isinstance(command, cmd.Rename)
    old = canonical(command.mailbox)
    new = _checked_name(session, command.tag, command.new_name)
    if new is None:
        return
    user = _user(session)
    try:
        if new == "INBOX":
            session.no(command.tag, "Cannot rename to INBOX", "CANNOT")
            return
        if old == "INBOX":
            await _rename_inbox(session, new)
        else:
            await session.store.rename_mailbox(user, old, new)
    except AlreadyExists:
        session.no(command.tag, "The new name exists already", "ALREADYEXISTS")
        return
    except NotFound:
        session.no(command.tag, "No such mailbox", "NONEXISTENT")
        return
    session.ok(command.tag, "RENAME completed")


async def _rename_inbox(session: ImapSession, new: str) -> None:
    user = _user(session)
    await session.store.create_mailbox(user, new)
    inbox = await session.store.get_mailbox(user, "INBOX")
    uids = [uid for uid, _, _ in await session.store.changed_since(inbox.id, 0)]
    if uids:
        await session.store.copy_messages(user, inbox.id, uids, new, move=True)


async def subscribe(session: ImapSession, command: cmd.Command) -> None:
    assert isinstance(command, cmd.Subscribe)
    name = _checked_name(session, command.tag, command.mailbox)
    if name is not None:
        await session.store.subscribe(_user(session), name)
        session.ok(command.tag, "SUBSCRIBE completed")


async def unsubscribe(session: ImapSession, command: cmd.Command) -> None:
    assert isinstance(command, cmd.Unsubscribe)
    with contextlib.suppress(StoreError):  # an invalid name was never subscribed
        await session.store.unsubscribe(_user(session), canonical(command.mailbox))
    session.ok(command.tag, "UNSUBSCRIBE completed")


def _full_pattern(reference: str, pattern: str) -> str:
    if not reference or pattern.startswith(DELIMITER):
        return pattern
    return reference + pattern if reference.endswith(DELIMITER) else reference + DELIMITER + pattern


def _attributes(
    name: str, names: set[str], boxes: dict[str, MailboxState], subscribed: bool | None
) -> list[str]:
    prefix = name + DELIMITER
    children = any(other.startswith(prefix) for other in names)
    attributes = ["\\HasChildren" if children else "\\HasNoChildren"]
    box = boxes.get(name)
    if box is None:
        attributes.insert(0, "\\NonExistent")
    elif box.special_use:
        attributes.append(box.special_use)
    if subscribed:
        attributes.append("\\Subscribed")
    return attributes


def _childinfo(names: set[str], matchers: list[re.Pattern[str]]) -> set[str]:
    """RECURSIVEMATCH (RFC 5258): mailboxes matching a pattern that have a descendant
    meeting the selection criteria but matching no pattern itself."""
    found: set[str] = set()
    for name in names:
        if any(m.fullmatch(name) for m in matchers):
            continue
        levels = name.split(DELIMITER)
        for depth in range(1, len(levels)):
            parent = DELIMITER.join(levels[:depth])
            if any(m.fullmatch(parent) for m in matchers):
                found.add(parent)
    return found


async def list_mailboxes(session: ImapSession, command: cmd.Command) -> None:
    assert isinstance(command, cmd.List)
    if "RECURSIVEMATCH" in command.selection and not set(command.selection) - {
        "RECURSIVEMATCH",
        "REMOTE",
    }:
        session.bad(command.tag, "RECURSIVEMATCH needs another selection option")
        return
    if command.patterns == ("",):  # the delimiter and root
        session.send(list_data(["\\Noselect"], DELIMITER, ""))
        session.ok(command.tag, "LIST completed")
        return
    user = _user(session)
    boxes = {box.name: box for box in await session.store.list_mailboxes(user)}
    subscribed = set(await session.store.subscriptions(user))
    only_subscribed = "SUBSCRIBED" in command.selection
    names = set(subscribed) if only_subscribed else set(boxes)
    if "SPECIAL-USE" in command.selection:
        names = {n for n in names if n in boxes and boxes[n].special_use}
    show_subscribed = only_subscribed or "SUBSCRIBED" in command.return_options
    matchers = [pattern_matcher(_full_pattern(command.reference, p)) for p in command.patterns]
    responses: list[Data] = []
    childinfo = _childinfo(names, matchers) if "RECURSIVEMATCH" in command.selection else set()
    for name in sorted(names | childinfo, key=lambda n: (n != "INBOX", n)):
        if not any(m.fullmatch(name) for m in matchers):
            continue
        marked = name in subscribed if show_subscribed else None
        attributes = _attributes(name, set(boxes), boxes, marked)
        if name not in names:  # listed for a matching child only: no own attributes
            attributes = [a for a in attributes if a.startswith("\\Has")]
        info = ["SUBSCRIBED"] if name in childinfo and only_subscribed else []
        responses.append(list_data(attributes, DELIMITER, name, childinfo=info))
        if command.return_status is not None and name in boxes:
            responses.append(await _status_data(session, boxes[name], command.return_status))
    session.send(*responses)
    session.ok(command.tag, "LIST completed")


async def lsub(session: ImapSession, command: cmd.Command) -> None:
    assert isinstance(command, cmd.Lsub)
    user = _user(session)
    boxes = {box.name for box in await session.store.list_mailboxes(user)}
    subscribed = set(await session.store.subscriptions(user))
    matcher = pattern_matcher(_full_pattern(command.reference, command.pattern))
    shown: dict[str, bool] = {}  # name → listed only as the parent of a subscribed one
    for name in subscribed:
        if matcher.fullmatch(name):
            shown[name] = False
        elif "%" in command.pattern:  # RFC 3501 §6.3.9: a level above shows as \Noselect
            levels = name.split(DELIMITER)
            for depth in range(1, len(levels)):
                parent = DELIMITER.join(levels[:depth])
                if parent not in subscribed and matcher.fullmatch(parent):
                    shown.setdefault(parent, True)
    responses = [
        list_data(
            ["\\Noselect"] if only_parent or name not in boxes else [], DELIMITER, name, lsub=True
        )
        for name, only_parent in sorted(shown.items())
    ]
    session.send(*responses)
    session.ok(command.tag, "LSUB completed")


async def _status_data(session: ImapSession, box: MailboxState, items: tuple[str, ...]) -> Data:
    wanted = [item for item in items if item in STATUS_ITEMS]
    counts = (0, 0, 0, 0)
    if {"UNSEEN", "DELETED", "SIZE", "MESSAGES"} & set(wanted):
        counts = await session.store.mailbox_counts(box.id)
    recent = 0
    if "RECENT" in wanted:
        first = await session.store.recent_mark(box.id)
        recent = len([u for u, _, _ in await session.store.changed_since(box.id, 0) if u >= first])
    deleted_storage = 0
    if "DELETED-STORAGE" in wanted:
        # in the units of the STORAGE quota resource, which it tells the room of
        deleted_storage = storage_units(await session.store.deleted_storage(box.id))
    values = {
        "MESSAGES": counts[0],
        "UNSEEN": counts[1],
        "DELETED": counts[2],
        "SIZE": counts[3],
        "UIDNEXT": box.uidnext,
        "UIDVALIDITY": box.uidvalidity,
        "HIGHESTMODSEQ": box.highestmodseq,
        "RECENT": recent,
        "DELETED-STORAGE": deleted_storage,
    }
    return status_data(box.name, [(item, values[item]) for item in wanted])


async def status(session: ImapSession, command: cmd.Command) -> None:
    assert isinstance(command, cmd.Status)
    unknown = [item for item in command.items if item not in STATUS_ITEMS]
    if unknown:
        session.bad(command.tag, f"Unknown STATUS item {unknown[0]}")
        return
    try:
        box = await session.store.get_mailbox(_user(session), canonical(command.mailbox))
    except (NotFound, StoreError):
        session.no(command.tag, "No such mailbox", "NONEXISTENT")
        return
    if "HIGHESTMODSEQ" in command.items and session.view is not None:
        session.view.condstore = True
    session.send(await _status_data(session, box, command.items))
    session.ok(command.tag, "STATUS completed")
