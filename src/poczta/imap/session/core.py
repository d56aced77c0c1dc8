"""IMAP sessions: the connection loop that runs the command reader and the command handlers.

The sans-I/O parts (`poczta.imap.reader`, `parser`, `encoder`, `view`) decide the
protocol; this module reads from the connection with its deadlines, feeds the reader,
runs each command in order through its handler (one module per command area in this
package), writes the responses, upgrades to TLS, and waits in IDLE for whatever comes
first: the client's DONE or a change to the selected mailbox (`MailStore.changes`).
Two kinds of pipelined commands are taken together rather than one at a time: STOREs,
handed to the store at once and answered, in order, once committed, while the session
reads on (`store_flags.StoreRun`; any other command first waits for those answers), and
FETCHes that change nothing, answered with one look at the mailbox and one store read
(`fetch_run`).

Before login a client may stay silent a minute; after login 30 minutes (RFC 9051 §5.4),
which an IDLE client refreshes by its own DONE/IDLE cycle. Several bad commands in a
row end the session with BYE.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from poczta.imap import commands as cmd
from poczta.imap.encoder import (
    Code,
    Continuation,
    Data,
    FetchData,
    Tagged,
    ThreadData,
    Untagged,
    bye,
)
from poczta.imap.events import (
    AppendData,
    AppendStart,
    CommandError,
    Event,
    IdleDone,
    LiteralPending,
    SaslResponse,
)
from poczta.imap.limits import Dialect, ImapLimits
from poczta.imap.parser import PAUSING
from poczta.imap.reader import CommandReader
from poczta.imap.session.dispatch import handler_for
from poczta.imap.session.fetch_run import fetch_run, joins_run, reads_with_news
from poczta.imap.view import SelectedView
from poczta.login import LoginService
from poczta.logs import log
from poczta.net.connection import Connection, ConnectionClosed
from poczta.net.deadlines import Deadline, DeadlineExpired, ReadDeadlines, ReadTimeouts
from poczta.net.deflate import DeflateError
from poczta.net.listener import ServiceReplies
from poczta.net.tls import ReloadableContext
from poczta.quota import Quotas
from poczta.store.base import (
    LimitExceeded,
    MailboxChange,
    MailboxId,
    MailStore,
    NotFound,
    StoreError,
    UserId,
)

if TYPE_CHECKING:
    from poczta.imap.session.search_facts import SearchFacts
    from poczta.imap.session.store_flags import StoreRun

__all__ = ["IMAP_REPLIES", "ImapContext", "ImapSession", "run_imap_session"]

IMAP_REPLIES = ServiceReplies(
    too_many=b"* BYE [UNAVAILABLE] Too many connections, try again later\r\n",
    timeout=b"* BYE Session time limit reached\r\n",
)
LOGIN_IDLE = 60.0  # seconds a client may stay silent before it logs in
AUTHENTICATED_IDLE = 30 * 60.0  # RFC 9051 §5.4: at least 30 minutes
SESSION_LIMIT = 7 * 24 * 3600.0
MAX_BAD_COMMANDS = 10  # in a row; then BYE
SHUTDOWN = b"* BYE [UNAVAILABLE] Server shutting down, try again later\r\n"

Response = Tagged | Untagged | Continuation | Data | FetchData | ThreadData


@dataclass
class ImapContext:
    """What every IMAP session of one listener shares."""

    hostname: str
    service: str  # "imap" (STARTTLS) or "imaps" (implicit TLS)
    timeouts: ReadTimeouts
    tls: ReloadableContext | None
    dev_mode: bool
    logins: LoginService
    store: MailStore
    limits: ImapLimits = field(default_factory=ImapLimits)
    quotas: Quotas | None = None  # the users' quota limits (None: none, usage only)


class SessionEnd(Exception):
    """The session is over (LOGOUT, a fatal error): close after writing what is queued."""


class ImapSession:
    """One connection's dialogue."""

    def __init__(self, ctx: ImapContext, conn: Connection) -> None:
        self.ctx = ctx
        self.conn = conn
        self.store = ctx.store
        self.reader = CommandReader(ctx.limits, Dialect())
        self.plaintext_auth = ctx.dev_mode and conn.is_loopback
        self.user: str | None = None
        self.user_id: UserId | None = None
        self.view: SelectedView | None = None
        self.enabled: set[str] = set()
        self.saved_search: list[int] = []  # SEARCHRES `$`, as UIDs
        self.search_cache: SearchFacts | None = None  # what SEARCH last read
        self.bad_in_a_row = 0
        self.pending: list[Event] = []
        self.auth: object | None = None  # an AUTHENTICATE in progress (see `auth`)
        self.idle_tag: str | None = None
        self.appending: list[bytearray] = []
        self.append_error: Tagged | None = None
        self._changes: AsyncIterator[MailboxChange] | None = None
        self._change_task: asyncio.Task[MailboxChange] | None = None
        self._runs: deque[StoreRun] = deque()  # STOREs handed to the store, not yet answered
        self._deadlines = ReadDeadlines(self._timeouts(LOGIN_IDLE))

    # --- plumbing ------------------------------------------------------------

    @property
    def tls_active(self) -> bool:
        return self.conn.tls is not None

    @property
    def utf8(self) -> bool:
        return self.reader.dialect.utf8

    def _timeouts(self, idle: float) -> ReadTimeouts:
        base = self.ctx.timeouts
        return ReadTimeouts(
            min(idle, SESSION_LIMIT), base.command, base.min_data_rate, SESSION_LIMIT
        )

    def send(self, *responses: Response) -> None:
        utf8 = self.utf8
        self.conn.write(b"".join(r.encode(utf8) for r in responses))

    def ok(self, tag: str, text: str, code: Code | str | None = None) -> None:
        self.send(*self.updates(), Tagged(tag, "OK", text, code))

    def no(self, tag: str, text: str, code: Code | str | None = None) -> None:
        self.send(Tagged(tag, "NO", text, code))

    def bad(self, tag: str, text: str, code: Code | str | None = None) -> None:
        self.send(Tagged(tag, "BAD", text, code))

    def updates(self, *, allow_expunge: bool = True) -> list[Data | FetchData | Untagged]:
        """Untagged news of the selected mailbox that may be sent now."""
        if self.view is None:
            return []
        return self.view.announce(allow_expunge=allow_expunge)

    def logged_in(self, user: str, user_id: UserId) -> None:
        self.user, self.user_id = user, user_id
        self._deadlines.timeouts = self._timeouts(AUTHENTICATED_IDLE)
        log("imap.login", service=self.ctx.service, ip=self.conn.peer_ip, user=user)

    # --- the loop --------------------------------------------------------------

    async def run(self) -> None:
        log("imap.connect", service=self.ctx.service, ip=self.conn.peer_ip, tls=self.tls_active)
        from poczta.imap.session.auth import greeting

        self.send(greeting(self))
        try:
            await self._dialogue()
        except (SessionEnd, ConnectionClosed):
            pass
        finally:
            for run in self._runs:  # committed all the same; nobody to answer
                await run.committed
            await self.watch(None)
            with contextlib.suppress(ConnectionClosed):
                await self.conn.drain()

    async def _dialogue(self) -> None:
        while True:
            if self.conn.interrupted:
                await self.answer_runs()
                self.conn.write(SHUTDOWN)
                return
            try:
                data = await self._next_input()
            except DeadlineExpired as expired:
                self._timed_out(expired.deadline)
                return
            except DeflateError as error:
                self.conn.write(b"* BYE Bad compressed input\r\n")
                log("imap.bad_compression", ip=self.conn.peer_ip, user=self.user or "", error=error)
                return
            if data is None:
                return
            if not data:
                continue
            events = self.reader.feed(data)
            await self.handle(events)
            self._deadlines.received(
                len(data),
                completed=bool(events),
                partial_line=self.reader.buffered > 0 and not self.reader.waiting,
                in_data=bool(self.appending),
            )
            await self.conn.drain()

    async def _next_input(self) -> bytes | None:
        """The client's next octets; meanwhile answer the STORE runs whose changes are
        committed, and while IDLE tell the client of mailbox changes."""
        while self._runs:
            oldest = self._runs[0]
            if not oldest.committed.done():
                read = asyncio.ensure_future(self._deadlines.read(self.conn))
                either: set[asyncio.Future[Any]] = {read, oldest.committed}
                await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
                if read.done():
                    return read.result()
                read.cancel()
                with contextlib.suppress(asyncio.CancelledError, DeadlineExpired):
                    await read
            self._runs.popleft()
            await oldest.answer(self, last=not self._runs)
            await self.conn.drain()
        while self.idle_tag is not None and self._change_task is not None:
            read = asyncio.ensure_future(self._deadlines.read(self.conn))
            done, _ = await asyncio.wait(
                {read, self._change_task}, return_when=asyncio.FIRST_COMPLETED
            )
            if self._change_task in done:
                await self._changed_while_idle()
            if read in done:
                return read.result()
            read.cancel()
            with contextlib.suppress(asyncio.CancelledError, DeadlineExpired):
                await read
        return await self._deadlines.read(self.conn)

    async def _changed_while_idle(self) -> None:
        task, self._change_task = self._change_task, None
        assert task is not None
        try:
            task.result()
        except (StopAsyncIteration, StoreError):
            self._changes = None
        else:
            self._change_task = asyncio.ensure_future(self._next_change())
        from poczta.imap.session.selected import refresh

        await refresh(self)
        self.send(*self.updates())
        await self.conn.drain()

    async def _next_change(self) -> MailboxChange:
        assert self._changes is not None
        return await anext(self._changes)

    async def watch(self, view: SelectedView | None) -> None:
        """Follow changes of the newly selected mailbox (none when `view` is None)."""
        self.search_cache = None
        if self._change_task is not None:
            self._change_task.cancel()
            with contextlib.suppress(BaseException):
                await self._change_task
            self._change_task = None
        if self._changes is not None:
            with contextlib.suppress(Exception):
                await self._changes.aclose()  # type: ignore[attr-defined]
            self._changes = None
        if view is not None:
            box = MailboxId(view.mailbox_id)
            since = MailboxChange(box, view.highestmodseq, view.uidnext, view.exists)
            self._changes = self.store.changes(box, since)
            self._change_task = asyncio.ensure_future(self._next_change())

    def _timed_out(self, deadline: Deadline) -> None:
        self.conn.write(b"* BYE Autologout; idle for too long\r\n")
        log("imap.timeout", deadline=deadline.value, ip=self.conn.peer_ip, user=self.user or "")

    # --- events --------------------------------------------------------------

    async def handle(self, events: list[Event]) -> None:
        self.pending = list(events)
        while self.pending:
            event = self.pending.pop(0)
            if isinstance(event, cmd.Store):
                await self._store_run(event)
            elif joins_run(event, self) and (
                (self.pending and joins_run(self.pending[0], self)) or reads_with_news(event)
            ):
                await self.answer_runs()
                await fetch_run(self, event)  # several in a row, or one of a few UIDs
            else:
                await self.answer_runs()  # what is in flight is answered first
                await self._event(event)

    async def _store_run(self, first: cmd.Store) -> None:
        """A STORE and those pipelined right behind it, handed to the store together and
        answered once committed, maybe after the next input (see `store_flags`)."""
        run = [first]
        while self.pending and isinstance(following := self.pending[0], cmd.Store):
            run.append(following)
            del self.pending[0]
        handler, _ = handler_for(self, first)
        if handler is None or self.view is None:  # refused one by one, as ever
            await self.answer_runs()
            for command in run:
                await self._command(command)
            return
        from poczta.imap.session.selected import refresh
        from poczta.imap.session.store_flags import StoreRun

        self.bad_in_a_row = 0
        if not self._runs:  # with runs in flight the view waits for their answers
            try:
                await refresh(self)
            except StoreError as exc:
                for command in run:
                    self.send(self.store_failure(command, exc))
                return
        self._runs.append(StoreRun(self, run, announce=not self._runs))

    async def answer_runs(self) -> None:
        """Answer the STORE runs in flight, in order, once each is committed."""
        while self._runs:
            run = self._runs.popleft()
            await run.answer(self, last=not self._runs)

    def more(self, events: list[Event]) -> None:
        """Events the reader produced in answer to a session call: handled next."""
        self.pending[:0] = events

    async def _event(self, event: Event) -> None:
        if isinstance(event, CommandError):
            await self._error(event)
        elif isinstance(event, LiteralPending):
            from poczta.imap.session.append import literal_pending

            await literal_pending(self, event)
        elif isinstance(event, AppendStart):
            self.appending.append(bytearray())
        elif isinstance(event, AppendData):
            if self.appending:
                self.appending[-1] += event.data
        elif isinstance(event, SaslResponse):
            from poczta.imap.session.auth import sasl_response

            await sasl_response(self, event)
        elif isinstance(event, IdleDone):
            tag, self.idle_tag = self.idle_tag, None
            self.ok(tag or "*", "IDLE terminated")
        else:
            await self._command(event)

    async def _error(self, error: CommandError) -> None:
        self.appending.clear()
        self.send(error.response())
        if error.fatal:
            self.send(bye("Too much invalid input"))
            raise SessionEnd()
        if error.status == "BAD":
            self.bad_in_a_row += 1
            if self.bad_in_a_row >= MAX_BAD_COMMANDS:
                self.send(bye("Too many invalid commands"))
                raise SessionEnd()

    async def _command(self, command: cmd.Command) -> None:
        handler, state_error = handler_for(self, command)
        if handler is None:
            self.bad_in_a_row += 1
            self.bad(command.tag, state_error)
            if isinstance(command, PAUSING):  # refused: its pause is over too
                self.more(self.reader.resume())
            if self.bad_in_a_row >= MAX_BAD_COMMANDS:
                self.send(bye("Too many invalid commands"))
                raise SessionEnd()
            return
        self.bad_in_a_row = 0
        try:
            # what other sessions changed, told with this answer (not to a client leaving)
            if self.view is not None and not isinstance(command, cmd.Logout):
                from poczta.imap.session.selected import refresh

                await refresh(self)
            await handler(self, command)
        except StoreError as exc:
            self.send(self.store_failure(command, exc))

    def store_failure(self, command: cmd.Command, exc: Exception) -> Tagged:
        """The NO for a command the store failed (logged when the store is unavailable)."""
        if isinstance(exc, NotFound):
            return Tagged(command.tag, "NO", f"{exc}", "NONEXISTENT")
        if isinstance(exc, LimitExceeded):
            return Tagged(command.tag, "NO", "Too large for the mail store", "LIMIT")
        if not isinstance(exc, StoreError):
            raise exc
        log("imap.store_failed", user=self.user or "", command=type(command).__name__, error=exc)
        text = "The mail store is not available now, try again later"
        return Tagged(command.tag, "NO", text, "UNAVAILABLE")


Handler = Callable[[ImapSession, cmd.Command], Awaitable[None]]


async def run_imap_session(ctx: ImapContext, conn: Connection) -> None:
    await ImapSession(ctx, conn).run()
