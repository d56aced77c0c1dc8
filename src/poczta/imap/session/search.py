"""IMAP SEARCH in a session: the messages' cached facts (and bytes for BODY/TEXT) through
the evaluator, answered as SEARCH or ESEARCH (MIN MAX COUNT ALL SAVE, RFC 4731/5182)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from poczta.imap import commands as cmd
from poczta.imap import search as keys
from poczta.imap.encoder import esearch_data, search_data
from poczta.imap.sequence import compact
from poczta.store.base import MailboxId, MessageMeta

if TYPE_CHECKING:
    from poczta.imap.session.core import ImapSession

_FLAG_OF = {
    "ANSWERED": "\\Answered", "DELETED": "\\Deleted", "DRAFT": "\\Draft",
    "FLAGGED": "\\Flagged", "SEEN": "\\Seen",
}  # fmt: skip
_ADDRESS_FIELDS = {"FROM": "from", "TO": "to", "CC": "cc", "BCC": "bcc", "SUBJECT": "subject"}


class _Context:
    def __init__(self, session: ImapSession, metas: dict[int, MessageMeta]) -> None:
        assert session.view is not None
        self.view = session.view
        self.metas = metas
        self.saved = set(session.saved_search)
        self.store = session.store
        self.bodies: dict[int, str] = {}
        self.now = datetime.now(UTC)


def _needs_body(key: keys.SearchKey) -> bool:
    if isinstance(key, keys.TextKey):
        return key.field in ("BODY", "TEXT")
    if isinstance(key, keys.NotKey):
        return _needs_body(key.key)
    if isinstance(key, keys.OrKey):
        return _needs_body(key.left) or _needs_body(key.right)
    if isinstance(key, keys.AndKey):
        return any(_needs_body(k) for k in key.keys)
    return False


def _matches(key: keys.SearchKey, uid: int, msn: int, ctx: _Context) -> bool:
    view, meta = ctx.view, ctx.metas[uid]
    flags = view.flags.get(uid, frozenset())
    if isinstance(key, keys.AndKey):
        return all(_matches(k, uid, msn, ctx) for k in key.keys)
    if isinstance(key, keys.OrKey):
        return _matches(key.left, uid, msn, ctx) or _matches(key.right, uid, msn, ctx)
    if isinstance(key, keys.NotKey):
        return not _matches(key.key, uid, msn, ctx)
    if isinstance(key, keys.FlagKey):
        return _flag_key(key.name, flags)
    if isinstance(key, keys.KeywordKey):
        present = any(f.lower() == key.keyword.lower() for f in flags)
        return present == key.present
    if isinstance(key, keys.SizeKey):
        return meta.size > key.size if key.larger else meta.size < key.size
    if isinstance(key, keys.SetKey):
        if key.set.saved:
            return uid in ctx.saved
        number, largest = (uid, view.uids[-1]) if key.uid else (msn, len(view.uids))
        return key.set.contains(number, largest)
    if isinstance(key, keys.ModSeqKey):
        return view.modseqs.get(uid, 0) >= key.modseq
    if isinstance(key, keys.AgeKey):
        age = (ctx.now - meta.internal_date).total_seconds()
        return age >= key.seconds if key.older else age <= key.seconds
    if isinstance(key, keys.DateKey):
        return _date_key(key, meta)
    if isinstance(key, keys.HeaderKey):
        return _header_contains(meta, key.field.lower(), key.value)
    if isinstance(key, keys.TextKey):
        if key.field in _ADDRESS_FIELDS:
            return _header_contains(meta, _ADDRESS_FIELDS[key.field], key.value)
        text = ctx.bodies.get(uid, "")
        return key.value.casefold() in text
    return False


def _flag_key(name: str, flags: frozenset[str]) -> bool:
    if name == "ALL":
        return True
    if name in _FLAG_OF:
        return _FLAG_OF[name] in flags
    if name.startswith("UN") and name[2:] in _FLAG_OF:
        return _FLAG_OF[name[2:]] not in flags
    if name in ("NEW", "RECENT"):
        return False  # poczta keeps no \Recent (RFC 9051 dropped it)
    return name == "OLD"


def _date_key(key: keys.DateKey, meta: MessageMeta) -> bool:
    moment = meta.internal_date
    if key.name.startswith("SENT"):
        moment = meta.sent_date or meta.internal_date
    day = moment.date()
    kind = key.name.removeprefix("SENT")
    if kind == "BEFORE":
        return day < key.date
    if kind == "ON":
        return day == key.date
    return day >= key.date


def _header_contains(meta: MessageMeta, field: str, value: str) -> bool:
    needle = value.casefold()
    for name, text in meta.search_headers:
        if name == field and (not needle or needle in text.casefold()):
            return True
    return False


async def _load_bodies(ctx: _Context, uids: list[int]) -> None:
    for uid in uids:
        meta = ctx.metas[uid]
        data = await ctx.store.read_blob(meta.digest, size_hint=meta.size)
        ctx.bodies[uid] = data.decode("utf-8", "replace").casefold()


async def run_search(session: ImapSession, command: cmd.Search) -> None:
    view = session.view
    assert view is not None
    session.send(*view.announce(allow_expunge=command.uid))
    metas = {m.uid: m for m in await session.store.fetch_meta(MailboxId(view.mailbox_id))}
    ctx = _Context(session, metas)
    known = [uid for uid in view.uids if uid in metas]
    if _needs_body(command.criteria):
        await _load_bodies(ctx, known)
    matched = [
        (msn, uid)
        for msn, uid in enumerate(view.uids, 1)
        if uid in metas and _matches(command.criteria, uid, msn, ctx)
    ]
    numbers = [uid if command.uid else msn for msn, uid in matched]
    options = command.return_options
    if options is None:
        session.send(search_data(numbers))
    else:
        wanted = set(options) or {"ALL"}
        if "SAVE" in wanted:
            session.saved_search = [uid for _, uid in matched]
        if wanted - {"SAVE"} or not wanted:
            session.send(
                esearch_data(
                    command.tag,
                    uid=command.uid,
                    minimum=min(numbers) if "MIN" in wanted and numbers else None,
                    maximum=max(numbers) if "MAX" in wanted and numbers else None,
                    count=len(numbers) if "COUNT" in wanted else None,
                    all=compact(numbers) if "ALL" in wanted and numbers else None,
                )
            )
    from poczta.imap.session.messages import _finish

    _finish(session, command.tag, "SEARCH completed", command.uid)


__all__ = ["run_search", "timedelta"]
