"""SMTP sessions: run the sans-I/O core over a connection and answer its questions.

The core decides protocol rules; this module decides policy (who may relay, who may
send as whom, where mail goes) by asking the store, the login service and delivery,
and turns the core's events into writes, TLS upgrades and closes.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import os
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from poczta.delivery import Delivery, DeliveryPlan, RecipientKind, RecipientVerdict
from poczta.dkim_keys import DkimKeyError, Signer
from poczta.login import LoginService
from poczta.logs import log
from poczta.mailauth.verdict import Action
from poczta.message.header import HeaderSection
from poczta.net.connection import Connection
from poczta.net.deadlines import Deadline, DeadlineExpired, ReadDeadlines, ReadTimeouts
from poczta.net.tls import ReloadableContext
from poczta.quota import OverQuota
from poczta.sending_limits import Allowance, Refusal, SendingLimiter
from poczta.smtp import server as core_api
from poczta.smtp.checks import (
    OFFLOAD_SIZE,
    CheckDecision,
    InboundChecks,
    MailChecks,
    without_our_claims,
)
from poczta.smtp.server import (
    Accept,
    AuthPassword,
    AuthScram,
    CheckRecipient,
    CheckSender,
    Close,
    Envelope,
    MessageReceived,
    Reject,
    Reply,
    Role,
    SmtpLimits,
    SmtpServer,
    StartTls,
)
from poczta.smtp.submission import author_address, author_refusal, completed
from poczta.smtp.syntax import RcptParams
from poczta.store.base import RecipientDsn, StoreUnavailable
from poczta.trace import header_text

_SERVICE_NAMES = {Role.MX: "smtp", Role.SUBMISSION: "submission", Role.SUBMISSIONS: "submissions"}
SESSION_TIMEOUT_REPLY = b"421 4.4.2 Session time limit reached, closing connection\r\n"
_TIMEOUT_REPLIES = {
    Deadline.IDLE: b"421 4.4.2 Idle timeout, closing connection\r\n",
    Deadline.COMMAND: b"421 4.4.2 Command line not completed in time, closing connection\r\n",
    Deadline.DATA_RATE: b"421 4.4.2 Message data arriving too slowly, closing connection\r\n",
    Deadline.SESSION: SESSION_TIMEOUT_REPLY,
}


@dataclass
class SmtpContext:
    """What every SMTP session of one listener shares."""

    hostname: str
    role: Role
    limits: SmtpLimits
    timeouts: ReadTimeouts
    tls: ReloadableContext | None
    dev_mode: bool
    logins: LoginService
    delivery: Delivery
    bare_line_endings: str = "normalize"
    shutting_down: bool = False
    checks: MailChecks | None = None  # the MX listener's checks of incoming mail
    signer: Signer | None = None  # DKIM keys for submitted mail
    sending: SendingLimiter | None = None  # what each authenticated user may send


_QUEUE_ID_PREFIX = f"{os.getpid() & 0xFFF:03X}"
_queue_counter = itertools.count(secrets.randbelow(1 << 20))


def new_queue_id() -> str:
    """A short id unique to this process, for logs and Received headers.

    Time in microseconds, the pid and a counter: reading os.urandom for every message
    costs more than the rest of the id's work.
    """
    return f"{time.time_ns() // 1000:X}{_QUEUE_ID_PREFIX}{next(_queue_counter) & 0xFFFF:04X}"


@functools.lru_cache(maxsize=4)
def _rfc5322_date(now: datetime) -> str:
    """The date of trace headers; cached since most headers of a busy second share it."""
    return format_datetime(now)


def received_header(envelope: Envelope, hostname: str, queue_id: str, now: datetime) -> bytes:
    """The trace header we prepend (RFC 5321 §4.4, with the RFC 8314 `tls` clause).

    Every value from the envelope goes through `header_text`: however it got there,
    a control character or line break in it cannot end or fold the header.
    """
    helo = header_text(envelope.helo or "unknown")
    ip = header_text(envelope.client_ip)
    literal = f"[IPv6:{ip}]" if ":" in ip else f"[{ip}]"
    lines = [f"Received: from {helo} ({literal})", f"\tby {hostname} (poczta)"]
    lines[-1] += f" with {header_text(envelope.protocol)} id {queue_id}"
    if len(envelope.recipients) == 1:
        lines.append(f"\tfor <{header_text(envelope.recipients[0].address)}>")
    if envelope.tls is not None:
        tls = envelope.tls
        cipher, version, bits = (header_text(v) for v in (tls.cipher, tls.version, tls.bits))
        lines.append(f"\ttls {cipher} ({version}, {bits} bits)")
    lines[-1] += ";"
    lines.append(f"\t{_rfc5322_date(now.replace(microsecond=0))}")
    return ("\r\n".join(lines) + "\r\n").encode("utf-8", "replace")


class SmtpSession:
    """One connection's dialogue: the core plus the answers it needs."""

    def __init__(self, ctx: SmtpContext, conn: Connection) -> None:
        self.ctx = ctx
        self.conn = conn
        self.service = _SERVICE_NAMES[ctx.role]
        self.plan = DeliveryPlan()
        self.checks: InboundChecks | None = None
        self.allowance: Allowance | None = None  # the sending limits of this transaction
        self.declared_size: int | None = None  # MAIL FROM's SIZE=, for the quota at RCPT
        plaintext_auth = ctx.dev_mode and conn.is_loopback
        note = "(dev mode: plaintext AUTH allowed on loopback)" if plaintext_auth else ""
        self.core = SmtpServer(
            hostname=ctx.hostname,
            role=ctx.role,
            limits=ctx.limits,
            tls_available=ctx.tls is not None,
            tls_active=conn.tls is not None,
            plaintext_auth_allowed=plaintext_auth,
            client_ip=conn.peer_ip,
            greeting_note=note,
            bare_line_endings=ctx.bare_line_endings,  # type: ignore[arg-type]
            tls_info=conn.tls,
        )

    async def run(self) -> None:
        log(
            "smtp.connect",
            service=self.service,
            ip=self.conn.peer_ip,
            tls=self.conn.tls is not None,
        )
        if self.ctx.checks is not None and self.ctx.role is Role.MX:
            self.checks = self.ctx.checks.connect(self.conn.peer_ip)
        try:
            await self.dialogue()
        finally:
            if self.checks is not None:
                self.checks.close()

    async def dialogue(self) -> None:
        if not await self.handle(self.core.start()):
            return
        deadlines = ReadDeadlines(self.ctx.timeouts)
        while True:
            if self.conn.interrupted and not self.core.in_data:
                self.conn.write(b"421 4.3.2 Service shutting down, try again later\r\n")
                return
            try:
                data = await deadlines.read(self.conn)
            except DeadlineExpired as expired:
                self.timed_out(expired.deadline)
                return
            if data is None:
                await self.handle(self.core.eof())
                return
            if not data:
                continue
            events = self.core.receive(data)
            if not await self.handle(events):
                return
            core = self.core
            deadlines.received(
                len(data),
                completed=bool(events),
                partial_line=core.partial_line,
                in_data=core.in_data,
            )

    def timed_out(self, deadline: Deadline) -> None:
        self.conn.write(_TIMEOUT_REPLIES[deadline])
        log("smtp.timeout", deadline=deadline.value, ip=self.conn.peer_ip, service=self.service)

    async def handle(self, events: Sequence[object]) -> bool:
        """Carry out the core's events; False once the connection should close."""
        pending = list(events)
        while pending:
            event = pending.pop(0)
            if isinstance(event, Reply):
                self.conn.write(event.encode())
            elif isinstance(event, Close):
                await self.conn.drain()
                return False
            elif isinstance(event, StartTls):
                # No await between writing "220 Ready" and the upgrade: a ClientHello must not
                # reach the plaintext buffer, which start_tls clears.
                assert self.ctx.tls is not None
                info = await self.conn.start_tls(self.ctx.tls.context)
                pending = list(self.core.tls_started(info)) if info else []
                self.plan = DeliveryPlan()
            else:
                pending = list(await self.answer(event)) + pending
        await self.conn.drain()
        return True

    async def answer(self, event: object) -> list[object]:
        if isinstance(event, CheckSender):
            return list(self.core.answer(await self.check_sender(event)))
        if isinstance(event, CheckRecipient):
            return list(self.core.answer(await self.check_recipient(event)))
        if isinstance(event, AuthPassword | AuthScram):
            return await self.answer_auth(event)
        if isinstance(event, MessageReceived):
            return list(self.core.answer(await self.store_message(event)))
        if isinstance(event, core_api.AuthFailed):
            await self.ctx.logins.failed(self.conn.peer_ip, event.authcid, self.service, "scram")
            return []
        if isinstance(event, core_api.AuthSucceeded):
            self.ctx.logins.succeeded(self.conn.peer_ip, event.user, self.service)
            return []
        raise AssertionError(f"unexpected SMTP core event {event!r}")

    async def answer_auth(self, event: AuthPassword | AuthScram) -> list[object]:
        ip = self.conn.peer_ip
        try:
            if isinstance(event, AuthPassword):
                user = await self.ctx.logins.check_password(
                    ip, event.authcid, event.password, self.service
                )
                return list(self.core.answer_auth_password(user))
            creds, user = await self.ctx.logins.scram_credentials(ip, event.authcid)
            return list(self.core.answer_auth_scram(creds, user))
        except StoreUnavailable as exc:
            log("auth.unavailable", ip=ip, user=event.authcid, error=str(exc))
            return list(self.core.answer_auth_unavailable())

    async def check_sender(self, event: CheckSender) -> Accept | Reject:
        self.plan = DeliveryPlan(envid=event.params.envid, ret=event.params.ret)
        self.allowance = None
        self.declared_size = event.params.size
        user = self.core.authenticated_user
        if self.checks is not None and user is None:
            self.checks.mail_from(event.reverse_path, self.core.helo or "")
        if self.ctx.role is Role.MX or user is None:
            return Accept()
        if event.reverse_path and await self.ctx.delivery.may_send_as(user, event.reverse_path):
            if self.ctx.sending is not None:
                self.allowance = await self.ctx.sending.at_mail(user)
                return _refused(self.allowance.refusal)
            return Accept()
        log("smtp.sender_refused", user=user, sender=event.reverse_path or "<>")
        return Reject(553, "5.7.1", f"Sender address <{event.reverse_path}> is not owned by {user}")

    async def check_recipient(self, event: CheckRecipient) -> Accept | Reject:
        try:
            verdict = await self.ctx.delivery.classify(event.forward_path)
        except StoreUnavailable:
            return Reject(451, "4.3.0", "Temporary lookup failure, try again later")
        if self.checks is not None and verdict.kind is RecipientKind.LOCAL:
            decision = await self.checks.recipient(verdict.address)
            if decision.verdict.enforced is not Action.ACCEPT:
                self.log_verdict(decision, rcpt=verdict.address)
            if decision.refused:
                return self.refusal(decision)
        try:
            full = await self.ctx.delivery.recipient_quota(verdict, self.declared_size)
        except StoreUnavailable:
            return Reject(451, "4.3.0", "Temporary lookup failure, try again later")
        if full is not None:
            return _refused(full)
        if self.allowance is not None and verdict.kind is not RecipientKind.UNKNOWN_USER:
            over = self.allowance.add_recipient()
            if over is not None:
                return _refused(over)
        return self.recipient_decision(verdict, recipient_dsn(event.params))

    def log_verdict(self, decision: CheckDecision, **extra: str) -> None:
        """The one log line of a decision of the checks: where, about what, and why."""
        sender = self.checks.sender if self.checks is not None else ""
        fields: dict[str, Any] = {"stage": decision.stage, "ip": self.conn.peer_ip}
        fields.update(sender=sender or "<>", **extra)
        fields.update(decision.verdict.log_fields())
        log("checks.verdict", **fields)

    @staticmethod
    def refusal(decision: CheckDecision) -> Reject:
        verdict = decision.verdict
        return Reject(verdict.code, verdict.enhanced, verdict.text)

    def recipient_decision(
        self, verdict: RecipientVerdict, dsn: RecipientDsn | None = None
    ) -> Accept | Reject:
        submitting = self.core.authenticated_user is not None
        if verdict.kind is RecipientKind.UNKNOWN_USER:
            return Reject(
                550, "5.1.1", f"<{verdict.address}>: Recipient address rejected: User unknown"
            )
        if verdict.kind is RecipientKind.REMOTE and not submitting:
            return Reject(554, "5.7.1", f"<{verdict.address}>: Relay access denied")
        self.plan.add(verdict, dsn)
        return Accept()

    async def store_message(self, event: MessageReceived) -> Accept | Reject:
        user = self.core.authenticated_user
        data, header = event.data, event.header
        if user is not None:
            refusal = await author_refusal(header, user, self.ctx.delivery.may_send_as)
            if refusal is not None:
                log("smtp.author_refused", user=user, reason=refusal)
                return Reject(550, "5.7.1", refusal)
            data, header = without_our_claims(data, header, self.ctx.hostname)
            signed = await self.signed(data, header)
            if isinstance(signed, Reject):
                return signed
            data, header = signed
        queue_id = new_queue_id()
        added = b""
        plan, self.plan = self.plan, DeliveryPlan()
        if self.checks is not None and user is None:
            decision = await self.checks.message(data, header)
            self.log_verdict(decision, id=queue_id)
            if decision.refused:
                return self.refusal(decision)
            assert decision.header is not None  # an accepting decision carries its message
            data, header = decision.data, decision.header
            added, plan.junk = decision.headers, decision.junk
        now = datetime.now(UTC)
        trace = received_header(event.envelope, self.ctx.hostname, queue_id, now)
        data, header = header.prepended(data, added + trace)
        try:
            sender = event.envelope.mail_from
            await self.ctx.delivery.deliver(data, plan, sender, now, header=header, quota=True)
        except OverQuota as over:
            return _refused(over.refusal)
        except StoreUnavailable as exc:
            log("smtp.store_failed", id=queue_id, error=exc)
            return Reject(451, "4.3.0", "Temporary storage failure, try again later")
        log(
            "smtp.accepted",
            service=self.service,
            id=queue_id,
            ip=self.conn.peer_ip,
            sender=event.envelope.mail_from or "<>",
            local=len(plan.user_ids),
            remote=len(plan.remote),
            size=len(data),
            user=user or "",
        )
        if self.allowance is not None:
            await self.allowance.sent(len(event.envelope.recipients))
        return Accept(f"Ok: queued as {queue_id}")

    async def signed(
        self, data: bytes, header: HeaderSection
    ) -> tuple[bytes, HeaderSection] | Reject:
        """A submitted message completed (Date, Message-ID) and DKIM-signed for the
        domain of its author, when there is a key for it."""
        data, header = completed(data, header, self.ctx.hostname, datetime.now(UTC))
        signer, author = self.ctx.signer, author_address(header)
        if signer is None or author is None:
            return data, header
        domain = author.rpartition("@")[2]
        try:
            if len(data) > OFFLOAD_SIZE:
                fields = await asyncio.to_thread(signer.signatures, data, domain)
            else:
                fields = signer.signatures(data, domain)
        except DkimKeyError as exc:
            log(
                "smtp.dkim_failed",
                logging.ERROR,
                user=self.core.authenticated_user or "",
                error=exc,
            )
            return Reject(451, "4.7.0", "Cannot sign the message now, try again later")
        return header.prepended(data, fields) if fields else (data, header)


def _refused(refusal: Refusal | None) -> Accept | Reject:
    return Accept() if refusal is None else Reject(refusal.code, refusal.enhanced, refusal.text)


def recipient_dsn(params: RcptParams) -> RecipientDsn | None:
    """The DSN parameters of a RCPT to keep with a queued recipient."""
    if params.notify is None and params.orcpt is None:
        return None
    orcpt = f"{params.orcpt[0]};{params.orcpt[1]}" if params.orcpt is not None else None
    return RecipientDsn(params.notify, orcpt)


async def run_smtp_session(ctx: SmtpContext, conn: Connection) -> None:
    await SmtpSession(ctx, conn).run()
