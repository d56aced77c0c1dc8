"""POP3 sessions: run the sans-I/O core over a connection and answer it from the store.

The core decides protocol rules; this module answers its questions (passwords via
the shared login service, the INBOX snapshot, message octets, the expunge at QUIT),
holds the one-session-per-maildrop lock, and turns the core's events into writes,
TLS upgrades and closes. Deletions reach the store only through `CommitDeletions`,
which the core emits for QUIT in the TRANSACTION state: a dropped connection, an
idle timeout or a shutdown deletes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from poczta.leases import LeaseKeeper
from poczta.login import LoginService
from poczta.logs import log
from poczta.net.connection import Connection
from poczta.net.deadlines import Deadline, DeadlineExpired, ReadDeadlines, ReadTimeouts
from poczta.net.listener import ServiceReplies
from poczta.net.tls import ReloadableContext
from poczta.pop3.events import (
    CheckPassword,
    Close,
    CommitDeletions,
    Continue,
    Event,
    LoginResult,
    MailboxError,
    MaildropSnapshot,
    MultiLine,
    NeedMessage,
    NeedScram,
    NeedTop,
    OpenMailbox,
    Pop3Limits,
    Reply,
    StartTls,
)
from poczta.pop3.server import Pop3Server
from poczta.store.base import MailboxId, MailStore, NotFound, StoreError, StoreUnavailable

POP3_REPLIES = ServiceReplies(
    too_many=b"-ERR [SYS/TEMP] Too many connections, try again later\r\n",
    timeout=b"-ERR Session time limit reached, closing connection\r\n",
)
_TIMEOUT_REPLIES = {
    Deadline.IDLE: b"-ERR idle timeout\r\n",
    Deadline.COMMAND: b"-ERR Command line not completed in time, closing connection\r\n",
    Deadline.DATA_RATE: b"-ERR Data arriving too slowly, closing connection\r\n",
    Deadline.SESSION: POP3_REPLIES.timeout,
}
SHUTDOWN_REPLY = b"-ERR [SYS/TEMP] Server shutting down, try again later\r\n"


class MaildropLocks:
    """Which maildrops have a POP3 session open: in this process, and with a
    `LeaseKeeper` in every process and node sharing the store.

    RFC 1939 gives a maildrop to one session at a time. The sessions of this process
    are told apart here; the store's lock (one per process, renewed by the keeper)
    keeps the other processes out. It is released before this process's hold, so a
    new session here never sees it half released.
    """

    def __init__(self, keeper: LeaseKeeper | None = None) -> None:
        self._held: set[str] = set()
        self._keeper = keeper

    async def acquire(self, user: str) -> bool:
        """Take the lock for `user`; False when another session holds it (StoreError
        when the shared lock cannot be taken or refused)."""
        if user in self._held:
            return False
        self._held.add(user)
        if self._keeper is None:
            return True
        try:
            taken = await self._keeper.take_maildrop(user)
        except BaseException:
            self._held.discard(user)
            raise
        if not taken:
            self._held.discard(user)
        return taken

    async def release(self, user: str) -> None:
        try:
            if self._keeper is not None and user in self._held:
                await self._keeper.release_maildrop(user)
        except StoreError as exc:  # the lease runs out by itself
            log("pop3.unlock_failed", user=user, error=exc)
        finally:
            self._held.discard(user)

    def held(self, user: str) -> bool:
        return user in self._held


@dataclass
class Pop3Context:
    """What every POP3 session of one listener shares."""

    hostname: str
    service: str  # "pop3" (STLS) or "pop3s" (implicit TLS)
    limits: Pop3Limits
    timeouts: ReadTimeouts
    tls: ReloadableContext | None
    dev_mode: bool
    logins: LoginService
    store: MailStore
    locks: MaildropLocks = field(default_factory=MaildropLocks)


@dataclass
class OpenDrop:
    """The maildrop this session locked: its mailbox and, per UIDL string, (UID, blob digest)."""

    user: str
    mailbox_id: MailboxId
    messages: dict[str, tuple[int, str, int]]  # UIDL → (store UID, digest, size)


def uidl_string(uidvalidity: int, uid: int) -> str:
    """The POP3 unique-id of a message: stable while the mailbox keeps its UIDVALIDITY."""
    return f"{uidvalidity}.{uid}"


class Pop3Session:
    """One connection's dialogue: the core plus the answers it needs."""

    def __init__(self, ctx: Pop3Context, conn: Connection) -> None:
        self.ctx = ctx
        self.conn = conn
        self.plaintext_auth = ctx.dev_mode and conn.is_loopback
        self.core = Pop3Server(
            hostname=ctx.hostname,
            tls_available=ctx.tls is not None,
            tls_active=conn.tls is not None,
            plaintext_auth_allowed=self.plaintext_auth,
            limits=ctx.limits,
        )
        self.drop: OpenDrop | None = None
        self._locked: str | None = None  # the maildrop lock this session holds
        self._scram_authcid: str | None = None

    async def run(self) -> None:
        log(
            "pop3.connect",
            service=self.ctx.service,
            ip=self.conn.peer_ip,
            tls=self.conn.tls is not None,
        )
        try:
            await self._dialogue()
        finally:  # however the session ended, even cancelled in the middle of a store call
            if self._locked is not None:
                locked, self._locked = self._locked, None
                await self.ctx.locks.release(locked)

    async def _dialogue(self) -> None:
        if not await self.handle(self._greeting()):
            return
        deadlines = ReadDeadlines(self.ctx.timeouts)
        while True:
            if self.conn.interrupted:
                self.conn.write(SHUTDOWN_REPLY)
                return
            try:
                data = await deadlines.read(self.conn)
            except DeadlineExpired as expired:
                self._timed_out(expired.deadline)
                return
            if data is None:
                await self.handle(self.core.eof())
                return
            if not data:
                continue
            events = self.core.receive(data)
            if not await self.handle(events):
                return
            deadlines.received(
                len(data), completed=bool(events), partial_line=self.core.partial_line
            )

    def _timed_out(self, deadline: Deadline) -> None:
        self.conn.write(_TIMEOUT_REPLIES[deadline])
        ip, user = self.conn.peer_ip, self.core.user or ""
        log("pop3.timeout", deadline=deadline.value, ip=ip, service=self.ctx.service, user=user)

    def _greeting(self) -> list[Event]:
        events = self.core.start()
        if self.plaintext_auth and events and isinstance(events[0], Reply):
            first = events[0]
            note = "(dev mode: plaintext login allowed on loopback)"
            events[0] = Reply(first.ok, f"{first.text} {note}", first.code)
        return events

    async def handle(self, events: Sequence[Event]) -> bool:
        """Carry out the core's events; False once the connection should close."""
        pending = list(events)
        while pending:
            event = pending.pop(0)
            if isinstance(event, Reply):
                if self._scram_authcid is not None:
                    await self._scram_outcome(event)
                self.conn.write(event.encode())
            elif isinstance(event, Continue):
                self.conn.write(event.encode())
            elif isinstance(event, MultiLine):
                self.conn.write(event.encode())
                await self.conn.drain()  # a pipelined RETR run must not pile up in memory
            elif isinstance(event, Close):
                await self.conn.drain()
                return False
            elif isinstance(event, StartTls):
                # No await between writing "+OK" and the upgrade: the ClientHello must not
                # reach the plaintext buffer, which start_tls clears.
                assert self.ctx.tls is not None
                info = await self.conn.start_tls(self.ctx.tls.context)
                pending = self.core.tls_started() if info else []
            else:
                pending = await self.answer(event) + pending
        await self.conn.drain()
        return True

    async def _scram_outcome(self, reply: Reply) -> None:
        """A SCRAM exchange ended in `reply`: count a rejection with the throttle (and wait).

        Password checks go through `LoginService.check_password`, which does this itself;
        SCRAM proofs are verified inside the core, so the session learns of a failure
        only from the "-ERR [AUTH]" reply.
        """
        authcid, self._scram_authcid = self._scram_authcid, None
        if authcid is not None and not reply.ok and reply.code == "AUTH":
            await self.ctx.logins.failed(self.conn.peer_ip, authcid, self.ctx.service, "scram")

    async def answer(self, event: Event) -> list[Event]:
        """The core's question answered; returns the events that follow."""
        if isinstance(event, CheckPassword | NeedScram):
            return await self.answer_login(event)
        if isinstance(event, OpenMailbox):
            if self._scram_authcid is not None:
                self.ctx.logins.succeeded(self.conn.peer_ip, event.user, self.ctx.service)
                self._scram_authcid = None
            return self.core.mailbox_opened(await self.open_mailbox(event.user))
        if isinstance(event, NeedMessage | NeedTop):
            return self.core.message_data(await self.read_message(event.uid))
        if isinstance(event, CommitDeletions):
            return self.core.update_done(await self.commit(event.uids))
        raise AssertionError(f"unexpected POP3 core event {event!r}")

    async def answer_login(self, event: CheckPassword | NeedScram) -> list[Event]:
        """A password or SCRAM keys checked against the store; a temporary failure when
        the store cannot be read."""
        ip = self.conn.peer_ip
        try:
            if isinstance(event, CheckPassword):
                user = await self.ctx.logins.check_password(
                    ip, event.user, event.password, self.ctx.service
                )
                return self.core.login_result(LoginResult(user) if user else LoginResult.failure())
            creds, user = await self.ctx.logins.scram_credentials(ip, event.authcid)
        except StoreUnavailable as exc:
            name = event.user if isinstance(event, CheckPassword) else event.authcid
            log("auth.unavailable", ip=ip, user=name, error=str(exc))
            if isinstance(event, CheckPassword):
                return self.core.login_result(LoginResult.unavailable())
            return self.core.scram_unavailable()
        self._scram_authcid = event.authcid
        return self.core.scram_result(creds, user)

    async def open_mailbox(self, user: str) -> MaildropSnapshot | MailboxError:
        """Lock `user`'s maildrop and snapshot its INBOX (numbers and sizes fixed from now on)."""
        try:
            if not await self.ctx.locks.acquire(user):
                log("pop3.in_use", ip=self.conn.peer_ip, user=user)
                return MailboxError("IN-USE", "Maildrop is already in use by another session")
            self._locked = user
            record = await self.ctx.store.get_user(user)
            if record is None:
                raise NotFound(f"no user {user}")
            mailbox = await self.ctx.store.get_mailbox(record.id, "INBOX")
            summaries = await self.ctx.store.fetch_summaries(mailbox.id)
        except StoreError as exc:
            if self._locked is not None:
                self._locked = None
                await self.ctx.locks.release(user)
            log("pop3.open_failed", ip=self.conn.peer_ip, user=user, error=exc)
            return MailboxError("SYS/TEMP", "Maildrop is not available now, try again later")
        messages = {
            uidl_string(mailbox.uidvalidity, item.uid): (item.uid, item.digest, item.size)
            for item in summaries
        }
        self.drop = OpenDrop(user, mailbox.id, messages)
        log(
            "pop3.login",
            service=self.ctx.service,
            ip=self.conn.peer_ip,
            user=user,
            messages=len(messages),
        )
        return MaildropSnapshot(
            [(uid, item.size) for uid, item in zip(messages, summaries, strict=True)]
        )

    async def read_message(self, uid: str) -> bytes | None:
        """The stored octets of the message with POP3 unique-id `uid` (None: unreadable).

        Read by the digest noted at login: one file read, no database query per RETR.
        """
        assert self.drop is not None
        try:
            _, digest, size = self.drop.messages[uid]
            return await self.ctx.store.blobs.read(digest, size_hint=size)
        except StoreError as exc:  # expunged elsewhere meanwhile, or the disk failed
            log("pop3.read_failed", user=self.drop.user, uid=uid, error=exc)
            return None

    async def commit(self, uids: Sequence[str]) -> bool:
        """UPDATE state: expunge the messages marked deleted, all in one store transaction."""
        assert self.drop is not None
        store_uids = [self.drop.messages[uid][0] for uid in uids]
        try:
            gone = await self.ctx.store.expunge(self.drop.mailbox_id, store_uids)
        except StoreError as exc:
            log("pop3.update_failed", user=self.drop.user, error=exc)
            return False
        # Messages another client expunged meanwhile are gone too: that is success.
        log("pop3.update", user=self.drop.user, deleted=len(gone), marked=len(store_uids))
        return True


async def run_pop3_session(ctx: Pop3Context, conn: Connection) -> None:
    await Pop3Session(ctx, conn).run()
