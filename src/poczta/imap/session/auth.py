"""IMAP greeting, capabilities, STARTTLS, LOGIN, AUTHENTICATE, ENABLE, ID and LOGOUT.

Passwords go only over TLS (LOGINDISABLED and no AUTH= mechanisms before it), except
on loopback in dev mode. LOGIN and AUTHENTICATE PLAIN/LOGIN check the password through
the shared, throttled `LoginService`; SCRAM-SHA-256 runs in `poczta.sasl` with the
stored keys. A SASL exchange reads the client's lines raw (`CommandReader`'s SASL
mode); "*" cancels it.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from poczta import __version__
from poczta.imap import commands as cmd
from poczta.imap.encoder import Code, Continuation, Untagged, bye, enabled, id_data
from poczta.imap.encoder import capability as cap_data
from poczta.imap.events import SaslResponse
from poczta.logs import log
from poczta.sasl import (
    Challenge,
    Failed,
    NeedScramCredentials,
    SaslEvent,
    SaslExchange,
    Succeeded,
    VerifyPassword,
    decode_client_response,
)

if TYPE_CHECKING:
    from poczta.imap.session.core import ImapSession

AUTH_MECHANISMS = ("PLAIN", "LOGIN", "SCRAM-SHA-256")
BASE = ("IMAP4rev1", "IMAP4rev2", "SASL-IR", "LITERAL+", "ID", "ENABLE")
AFTER_LOGIN = (
    "IDLE", "NAMESPACE", "UIDPLUS", "MOVE", "CHILDREN", "UNSELECT", "SPECIAL-USE",
    "COMPRESS=DEFLATE",
    "CREATE-SPECIAL-USE", "LIST-EXTENDED", "LIST-STATUS", "CONDSTORE", "QRESYNC", "ESEARCH",
    "SEARCHRES", "UTF8=ACCEPT", "MULTIAPPEND", "STATUS=SIZE", "BINARY", "SORT", "SORT=DISPLAY",
    "ESORT", "THREAD=REFERENCES", "THREAD=ORDEREDSUBJECT",
    "QUOTA", "QUOTA=RES-STORAGE", "QUOTA=RES-MESSAGE",
)  # fmt: skip
ENABLEABLE = ("IMAP4REV2", "CONDSTORE", "QRESYNC", "UTF8=ACCEPT")


def capabilities(session: ImapSession) -> list[str]:
    names = list(BASE)
    if session.user is not None:
        return names + list(AFTER_LOGIN)
    if session.ctx.tls is not None and not session.tls_active:
        names.append("STARTTLS")
    if session.tls_active or session.plaintext_auth:
        names += [f"AUTH={m}" for m in AUTH_MECHANISMS]
    else:
        names.append("LOGINDISABLED")
    return names


def greeting(session: ImapSession) -> Untagged:
    note = " (dev mode: plaintext login allowed on loopback)" if session.plaintext_auth else ""
    text = f"{session.ctx.hostname} IMAP4rev2 server ready{note}"
    return Untagged("OK", text, Code.capability(capabilities(session)))


async def capability(session: ImapSession, command: cmd.Command) -> None:
    session.send(cap_data(capabilities(session)))
    session.ok(command.tag, "CAPABILITY completed")


async def logout(session: ImapSession, command: cmd.Command) -> None:
    from poczta.imap.session.core import SessionEnd

    session.view = None  # after the BYE only the tagged OK: no news of the mailbox
    session.send(bye(f"{session.ctx.hostname} logging out"))
    session.ok(command.tag, "LOGOUT completed")
    raise SessionEnd()


async def identify(session: ImapSession, command: cmd.Command) -> None:
    assert isinstance(command, cmd.Id)
    session.send(id_data([("name", "poczta"), ("version", __version__)]))
    session.ok(command.tag, "ID completed")


async def starttls(session: ImapSession, command: cmd.Command) -> None:
    if session.ctx.tls is None or session.tls_active:
        session.bad(command.tag, "STARTTLS is not available here")
        session.more(session.reader.resume())
        return
    session.ok(command.tag, "Begin TLS negotiation now")
    session.reader.drop_buffered()  # anything pipelined before the handshake is dropped
    await session.conn.drain()
    info = await session.conn.start_tls(session.ctx.tls.context)
    if info is None:
        from poczta.imap.session.core import SessionEnd

        raise SessionEnd()
    session.more(session.reader.resume())


def _password_allowed(session: ImapSession) -> bool:
    return session.tls_active or session.plaintext_auth


async def login(session: ImapSession, command: cmd.Command) -> None:
    assert isinstance(command, cmd.Login)
    if not _password_allowed(session):
        session.no(command.tag, "Log in only after STARTTLS", "PRIVACYREQUIRED")
        return
    user = await session.ctx.logins.check_password(
        session.conn.peer_ip, command.username, command.password, session.ctx.service
    )
    await _finish_login(session, command.tag, user)


async def _finish_login(session: ImapSession, tag: str, user: str | None) -> None:
    if user is None:
        session.no(tag, "Authentication failed", "AUTHENTICATIONFAILED")
        return
    record = await session.store.get_user(user)
    if record is None:
        session.no(tag, "Authentication failed", "AUTHENTICATIONFAILED")
        return
    session.logged_in(user, record.id)
    session.ok(tag, "Logged in", Code.capability(capabilities(session)))


class _Exchange:
    """An AUTHENTICATE in progress."""

    def __init__(self, tag: str, exchange: SaslExchange, scram: bool) -> None:
        self.tag = tag
        self.exchange = exchange
        self.scram = scram
        self.authcid: str | None = None
        self.user: str | None = None


async def authenticate(session: ImapSession, command: cmd.Command) -> None:
    assert isinstance(command, cmd.Authenticate)
    mechanism = command.mechanism.upper()
    if not _password_allowed(session):
        session.no(command.tag, "Authenticate only after STARTTLS", "PRIVACYREQUIRED")
        session.more(session.reader.resume())
        return
    if mechanism not in AUTH_MECHANISMS:
        session.no(command.tag, "Unsupported authentication mechanism", "CANNOT")
        session.more(session.reader.resume())
        return
    initial: bytes | None = None
    if command.initial_response is not None:
        decoded = decode_client_response(command.initial_response)
        if not isinstance(decoded, bytes):
            session.bad(command.tag, "Invalid base64 in the initial response")
            session.more(session.reader.resume())
            return
        initial = decoded
    exchange = _Exchange(
        command.tag, SaslExchange(mechanism, initial), mechanism.startswith("SCRAM")
    )
    session.auth = exchange
    await _step(session, exchange, exchange.exchange.start())


async def sasl_response(session: ImapSession, event: SaslResponse) -> None:
    exchange = session.auth
    if not isinstance(exchange, _Exchange):
        return
    decoded = decode_client_response(event.line)
    if not isinstance(decoded, bytes):
        session.auth = None
        cancelled = event.line.strip() == b"*"
        session.bad(exchange.tag, "Authentication cancelled" if cancelled else "Invalid base64")
        session.more(session.reader.resume())
        return
    if exchange.exchange.done and exchange.user is not None:  # the SCRAM final ack
        await _done(session, exchange, exchange.user)
        return
    await _step(session, exchange, exchange.exchange.respond(decoded))


async def _step(session: ImapSession, exchange: _Exchange, event: SaslEvent) -> None:
    logins, ip, service = session.ctx.logins, session.conn.peer_ip, session.ctx.service
    while True:
        if isinstance(event, VerifyPassword):
            exchange.authcid = event.authcid
            user = await logins.check_password(ip, event.authcid, event.password, service)
            event = exchange.exchange.password_checked(user)
        elif isinstance(event, NeedScramCredentials):
            exchange.authcid = event.authcid
            creds, user = await logins.scram_credentials(ip, event.authcid)
            event = exchange.exchange.scram_credentials(creds, user)
        elif isinstance(event, Challenge):
            session.send(Continuation.challenge(event.data))
            session.more(session.reader.expect_sasl_response())
            return
        elif isinstance(event, Succeeded):
            if exchange.scram:
                logins.succeeded(ip, event.user, service)
            if event.final_data is not None:  # SCRAM's server-final, then the client's ack
                exchange.user = event.user
                session.send(Continuation.challenge(event.final_data))
                session.more(session.reader.expect_sasl_response())
                return
            await _done(session, exchange, event.user)
            return
        else:
            assert isinstance(event, Failed)
            session.auth = None
            if event.malformed:
                session.bad(exchange.tag, event.reason)
            else:
                if exchange.scram and exchange.authcid is not None:
                    await logins.failed(ip, exchange.authcid, service, "scram")
                session.no(exchange.tag, "Authentication failed", "AUTHENTICATIONFAILED")
            session.more(session.reader.resume())
            return


async def _done(session: ImapSession, exchange: _Exchange, user: str) -> None:
    session.auth = None
    await _finish_login(session, exchange.tag, user)
    session.more(session.reader.resume())


async def enable(session: ImapSession, command: cmd.Command) -> None:
    assert isinstance(command, cmd.Enable)
    newly: list[str] = []
    for name in command.capabilities:
        if name in ENABLEABLE and name not in session.enabled:
            session.enabled.add(name)
            newly.append("IMAP4rev2" if name == "IMAP4REV2" else name)
    if "QRESYNC" in session.enabled:
        session.enabled.add("CONDSTORE")
    if {"UTF8=ACCEPT", "IMAP4REV2"} & session.enabled:
        session.reader.dialect = replace(session.reader.dialect, utf8=True)
    if session.view is not None:
        session.view.condstore = "CONDSTORE" in session.enabled or session.view.condstore
        session.view.qresync = "QRESYNC" in session.enabled
    log("imap.enable", user=session.user or "", enabled=" ".join(newly))
    session.send(enabled(newly))
    session.ok(command.tag, "ENABLE completed")
