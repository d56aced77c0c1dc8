"""The SMTP client core's API: waits and their timeouts, out-of-turn calls, outcome values."""

from __future__ import annotations

import pytest

from poczta.smtp import Reply
from poczta.smtp.client import SmtpClient, SmtpClientError
from poczta.smtp.client_events import (
    DeliveryStatus,
    OutboundMessage,
    SendBody,
    Wait,
    permanent,
    reply_outcome,
)

MESSAGE = OutboundMessage.to("a@client.test", ["b@example.test"], b"hi\r\n" * 100_000)


def ready_client() -> SmtpClient:
    client = SmtpClient(hostname="client.example.test", peer="mx.example.test")
    client.receive(b"220 mx ESMTP\r\n")
    client.receive(b"250-mx\r\n250 PIPELINING\r\n")
    assert client.idle
    return client


def test_each_wait_has_the_rfc_5321_timeout() -> None:
    assert Wait.GREETING.timeout == 300
    assert Wait.MAIL.timeout == 300
    assert Wait.RCPT.timeout == 300
    assert Wait.DATA_INIT.timeout == 120
    assert Wait.DATA_BLOCK.timeout == 180
    assert Wait.DATA_END.timeout == 600
    assert Wait.IDLE.timeout is None


def test_the_data_block_wait_lasts_while_the_body_is_taken() -> None:
    client = ready_client()
    client.send(MESSAGE)
    assert client.waiting_for is Wait.MAIL
    client.receive(b"250 OK\r\n")
    assert client.waiting_for is Wait.RCPT
    client.receive(b"250 OK\r\n")
    assert client.waiting_for is Wait.DATA_INIT
    [body] = client.receive(b"354 go\r\n")
    assert isinstance(body, SendBody)
    pieces = iter(body.chunks)
    first = next(pieces)
    assert client.waiting_for is Wait.DATA_BLOCK
    rest = list(pieces)
    assert (first + b"".join(rest)).endswith(b"\r\n.\r\n")
    assert client.waiting_for is Wait.DATA_END


def test_a_body_stops_when_the_connection_is_lost() -> None:
    client = ready_client()
    client.send(MESSAGE)
    client.receive(b"250 OK\r\n250 OK\r\n")
    [body] = client.receive(b"354 go\r\n")
    assert isinstance(body, SendBody)
    pieces = iter(body.chunks)
    next(pieces)
    client.eof()
    assert list(pieces) == []
    assert client.closed


def test_out_of_turn_calls_are_refused() -> None:
    client = ready_client()
    client.send(MESSAGE)
    with pytest.raises(SmtpClientError):
        client.send(MESSAGE)
    with pytest.raises(SmtpClientError):
        client.quit()
    with pytest.raises(SmtpClientError):
        client.tls_started()


def test_a_message_given_early_waits_for_the_session() -> None:
    client = SmtpClient(hostname="client.example.test")
    assert client.send(MESSAGE) == []
    assert client.waiting_for is Wait.GREETING


def test_diagnostic_code_only_for_what_a_server_said() -> None:
    said = reply_outcome(Reply(550, "5.1.1", "no such", ("user",)), "RCPT TO", "mx")
    assert said.status is DeliveryStatus.PERMANENT
    assert said.diagnostic_code == "smtp; 550 5.1.1 no such user"
    plain = reply_outcome(Reply(451, None, "later"), "MAIL FROM")
    assert plain.enhanced == "4.0.0"
    assert plain.diagnostic_code == "smtp; 451 later"
    assert permanent("5.3.4", "too big").diagnostic_code is None
