"""The runner's IMAP client over a socket pair, its mbox fixture reader, APPEND forms."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conformance.imaptest.args import Kind
from tests.conformance.imaptest.client import (
    ConnectionClosed,
    ImapConnection,
    ImapTimeout,
    Response,
    split_literals,
)
from tests.conformance.imaptest.mbox import MessageSource, read_mbox, separator_date
from tests.conformance.imaptest.runner import _append_has_body


@pytest.fixture
def pair() -> Iterator[tuple[ImapConnection, socket.socket]]:
    ours, theirs = socket.socketpair()
    theirs.settimeout(2)
    connection = ImapConnection(ours, timeout=2)
    yield connection, theirs
    connection.close()
    theirs.close()


def received(peer: socket.socket, expected: bytes) -> bytes:
    """What the peer got, read until it is as long as ``expected`` or the sender stops."""
    data = b""
    while len(data) < len(expected):
        try:
            chunk = peer.recv(65536)
        except TimeoutError:
            break
        if not chunk:
            break
        data += chunk
    return data


def test_reads_a_response_with_literals(pair: tuple[ImapConnection, socket.socket]) -> None:
    connection, peer = pair
    peer.sendall(b"* 1 FETCH (BODY[] {7}\r\nab\r\ncd\r UID 3 BINARY[1] ~{2}\r\n\x00\x01)\r\n"
                 b"1.1 OK done\r\n")
    fetch = connection.read_response()
    assert fetch.is_untagged
    items = fetch.args[2].items
    assert (items[1].kind, items[1].text) == (Kind.LITERAL, "ab\r\ncd\r")
    assert (items[2].text, items[3].text) == ("UID", "3")
    assert (items[5].text, items[5].binary) == ("\x00\x01", True)
    tagged = connection.read_response()
    assert (tagged.tag, tagged.args[0].text) == ("1.1", "OK")


def test_free_text_that_is_not_imap_still_reads(
        pair: tuple[ImapConnection, socket.socket]) -> None:
    connection, peer = pair
    peer.sendall(b'1.2 NO [ALERT] unbalanced ( "quote\r\n')
    response = connection.read_response()
    assert [a.text for a in response.args[:2]] == ["NO", "[ALERT]"]


def test_sync_literal_waits_for_continuation(pair: tuple[ImapConnection, socket.socket]) -> None:
    connection, peer = pair
    seen: list[Response] = []
    peer.sendall(b"* 3 EXISTS\r\n+ go ahead\r\n")
    sent = connection.send_command("1.1", "APPEND box {5}\r\nhello", literal_plus=False,
                                   on_response=seen.append)
    assert sent
    expected = b"1.1 APPEND box {5}\r\nhello\r\n"
    assert received(peer, expected) == expected
    assert [r.line for r in seen] == ["* 3 EXISTS"]


def test_refused_literal_stops_the_command(pair: tuple[ImapConnection, socket.socket]) -> None:
    connection, peer = pair
    seen: list[Response] = []
    peer.sendall(b"1.1 NO [TOOBIG] too big\r\n")
    assert not connection.send_command("1.1", "APPEND box {5}\r\nhello", literal_plus=False,
                                       on_response=seen.append)
    peer.settimeout(0.2)
    assert received(peer, b"1.1 APPEND box {5}\r\nhello") == b"1.1 APPEND box {5}\r\n"
    assert seen[0].tag == "1.1"


def test_literal_plus_sends_everything_at_once(
        pair: tuple[ImapConnection, socket.socket]) -> None:
    connection, peer = pair
    connection.send_command("1.1", "APPEND box {1}\r\nx {2}\r\nyz", literal_plus=True,
                            on_response=lambda _: None)
    expected = b"1.1 APPEND box {1+}\r\nx {2+}\r\nyz\r\n"
    assert received(peer, expected) == expected


def test_closed_and_silent_servers(pair: tuple[ImapConnection, socket.socket]) -> None:
    connection, peer = pair
    connection.timeout = 0.05
    connection.sock.settimeout(0.05)
    with pytest.raises(ImapTimeout):
        connection.read_response()
    peer.close()
    with pytest.raises(ConnectionClosed):
        connection.read_response()


def test_split_literals_skips_literal_contents() -> None:
    assert split_literals("a {3}\r\nx\ny b ~{2}\nzz c") == [
        ("a {3}", "x\ny"), (" b ~{2}", "zz"), (" c", None)]
    assert split_literals("no{3}\r\nabc") == [("no{3}\r\nabc", None)]


def test_mbox_messages_dates_and_wrapping(tmp_path: Path) -> None:
    mbox = tmp_path / "t.mbox"
    mbox.write_bytes(b"From user@domain  Fri Feb 22 17:06:23 2008\nSubject: a\n\nFrom me\n\n"
                     b"From user@domain  Sat Mar 24 23:00:00 2007 +0200\r\nSubject: b\r\n")
    first, second = read_mbox(mbox)
    assert first.internaldate == "22-Feb-2008 17:06:23 +0000"
    assert first.text == "Subject: a\r\n\r\nFrom me\r\n\r\n"
    assert (second.internaldate, second.text) == ("24-Mar-2007 23:00:00 +0200", "Subject: b\r\n")
    source = MessageSource([first, second])
    assert [source.next().text[9] for _ in range(3)] == ["a", "b", "a"]
    assert separator_date("From someone who wrote") is None


@pytest.mark.parametrize(("args", "replace", "has_body"), [
    ("box (\\seen)", False, False),
    ("box (\\seen) \"1-Jan-2020 00:00:00 +0000\" {2}\r\nhi", False, True),
    ("box catenate (text {1}\r\nx)", False, True),
    ("box", False, False),
    ("1 box {2}\r\nhi", True, True),
    ("1 box", True, False),
])
def test_append_forms(args: str, replace: bool, has_body: bool) -> None:
    assert _append_has_body(args, replace) is has_body
