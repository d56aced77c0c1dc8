"""IMAP APPEND (with MULTIAPPEND, RFC 3502, and APPENDUID, RFC 4315), and literal questions.

A synchronising APPEND literal is accepted (`+ Ready`) only once the mailbox is known to
exist and the client is logged in: otherwise NO [TRYCREATE] before a byte of it is read
(the reader refuses literals over the size limit itself with NO [TOOBIG]). The octets
are collected as they arrive and stored when the command is complete; a client that
disconnects in the middle leaves nothing stored. Bare LF line ends are stored as CRLF,
as IMAP requires of messages (RFC 9051 §2.3.1), so sizes and sections agree; a binary
literal (literal8, RFC 3516) keeps its line ends, and its binary parts are stored
base64-encoded (`poczta.message.textual`), so that no FETCH but BINARY ever has to send
a NUL octet. An OK means the message is durable: the store answers only after its
group commit is on disk.
MULTIAPPEND stores its messages one after the other; should one fail, those before it
are expunged again so that the command as a whole did nothing. Messages that would take
the user past a quota limit are refused with NO [OVERQUOTA] (`poczta.imap.session.quota`),
a synchronising literal before it is sent; flags longer than the store keeps
(`MAX_FLAGS_OCTETS`) with NO [LIMIT].
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from poczta.imap import commands as cmd
from poczta.imap.encoder import Code, Continuation, Tagged
from poczta.imap.events import LiteralPending
from poczta.imap.names import canonical
from poczta.imap.sequence import compact
from poczta.imap.session.quota import OVERQUOTA, lacks_room
from poczta.logs import log
from poczta.message import parse_message
from poczta.message.textual import needs_textual_form, textual_form
from poczta.store.base import (
    MAX_FLAGS_OCTETS,
    DeliveryTarget,
    MailboxId,
    NotFound,
    StoreError,
    flags_fit,
    normalize_flags,
)

if TYPE_CHECKING:
    from poczta.imap.session.core import ImapSession

_BARE_LF = re.compile(rb"(?<!\r)\n")
FLAGS_TOO_LONG = f"A message's flags may take at most {MAX_FLAGS_OCTETS} octets"


async def literal_pending(session: ImapSession, event: LiteralPending) -> None:
    if event.append is not None:
        refusal = await _append_refusal(session, event.append.mailbox, event.size)
        if refusal is not None:
            session.send(Tagged(event.tag, "NO", *refusal))
            session.more(session.reader.refuse_literal())
            return
    session.send(Continuation("Ready for literal data"))
    session.more(session.reader.accept_literal())


async def _append_refusal(session: ImapSession, mailbox: str, size: int) -> tuple[str, str] | None:
    if session.user_id is None:
        return "Log in first", "AUTHENTICATIONFAILED"
    try:
        await session.store.get_mailbox(session.user_id, canonical(mailbox))
        if await lacks_room(session, size):
            return OVERQUOTA
    except (NotFound, StoreError):
        return "No such mailbox", "TRYCREATE"
    return None


def _stored_form(data: bytes, binary_literal: bool) -> bytes:
    if not binary_literal:
        data = _BARE_LF.sub(b"\r\n", data)
    return textual_form(data) if needs_textual_form(data, binary_literal) else data


async def append(session: ImapSession, command: cmd.Command) -> None:
    assert isinstance(command, cmd.Append) and session.user_id is not None
    bodies, session.appending = session.appending, []
    if len(bodies) != len(command.messages):
        session.bad(command.tag, "APPEND message data missing")
        return
    name = canonical(command.mailbox)
    try:
        box = await session.store.get_mailbox(session.user_id, name)
    except (NotFound, StoreError):
        session.no(command.tag, "No such mailbox", "TRYCREATE")
        return
    if any(not body for body in bodies):
        session.no(command.tag, "An empty message cannot be appended", "CANNOT")
        return
    if not all(flags_fit(message.flags) for message in command.messages):
        session.no(command.tag, FLAGS_TOO_LONG, "LIMIT")
        return
    datas = [
        _stored_form(bytes(body), message.binary)
        for message, body in zip(command.messages, bodies, strict=True)
    ]
    if await lacks_room(session, sum(len(data) for data in datas), len(datas)):
        session.no(command.tag, *OVERQUOTA)
        return
    uids: list[int] = []
    try:
        for message, data in zip(command.messages, datas, strict=True):
            target = DeliveryTarget(session.user_id, name, normalize_flags(message.flags))
            when = message.internal_date or datetime.now(UTC)
            accepted = await session.store.accept(data, parse_message(data), when, [target])
            uids.extend(d.uid for d in accepted.delivered)
    except StoreError:
        if uids:
            await session.store.expunge(MailboxId(box.id), uids)
        raise
    log("imap.append", user=session.user or "", mailbox=name, messages=len(uids))
    if session.view is not None and session.view.mailbox_id == box.id:
        from poczta.imap.session.selected import refresh

        await refresh(session)
    session.ok(command.tag, "APPEND completed", Code.append_uid(box.uidvalidity, compact(uids)))
