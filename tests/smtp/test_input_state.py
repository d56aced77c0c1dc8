"""What the SMTP core tells the session about its input: part of a line, message data."""

from __future__ import annotations

from poczta.smtp import Accept, CheckRecipient, CheckSender, Role, SmtpServer


def core() -> SmtpServer:
    server = SmtpServer(hostname="mx.example.test", role=Role.MX)
    server.start()
    return server


def partial_after(server: SmtpServer, chunk: bytes) -> bool:
    server.receive(chunk)
    return server.partial_line


def test_partial_line_until_its_line_end() -> None:
    server = core()
    assert not server.partial_line
    # A line over the limit is discarded as it comes, and still unfinished until its LF.
    chunks = [b"EHLO cli", b"ent.test\r\nNO", b"OP\r\n", b"NOOP " + b"x" * 10_000, b"\r\n"]
    seen = [partial_after(server, chunk) for chunk in chunks]
    assert seen == [True, True, False, True, False]


def test_message_data_is_not_a_partial_line() -> None:
    server = core()
    for line in (b"EHLO client.test\r\n", b"MAIL FROM:<a@elsewhere.test>\r\n"):
        events = server.receive(line)
    assert isinstance(events[0], CheckSender)
    server.answer(Accept())
    assert isinstance(server.receive(b"RCPT TO:<b@example.test>\r\n")[0], CheckRecipient)
    server.answer(Accept())
    server.receive(b"DATA\r\n")
    server.receive(b"Subject: x\r\n\r\nhalf a li")
    assert server.in_data and not server.partial_line
    server.receive(b"ne\r\n.\r\n")
    assert not server.in_data
