"""Unit tests for the POP3 core beyond transcripts: SCRAM, STLS timing, API contracts."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from poczta.pop3 import (
    CheckPassword,
    Close,
    CommitDeletions,
    Continue,
    LoginResult,
    MaildropSnapshot,
    MultiLine,
    NeedScram,
    OpenMailbox,
    Pop3Limits,
    Pop3Server,
    Pop3State,
    Pop3UsageError,
    Reply,
    StartTls,
    valid_uid,
)
from tests.pop3.harness import CANONICAL, PASSWORD, SCRAM, FakeSession


def server(**kwargs: object) -> Pop3Server:
    options: dict[str, object] = {
        "hostname": "mail.example.test",
        "tls_available": True,
        "tls_active": True,
    }
    options.update(kwargs)
    return Pop3Server(**options)  # type: ignore[arg-type]


def logged_in() -> tuple[Pop3Server, FakeSession]:
    core = server()
    session = FakeSession(core)
    session.drive(core.receive(b"USER alice\r\nPASS secret\r\n"))
    assert core.state is Pop3State.TRANSACTION
    return core, session


def _hmac(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha256).digest()


def scram_client_final(client_first_bare: str, server_first: bytes, password: str) -> bytes:
    """The client-final-message of RFC 5802 for a given server-first-message."""
    attrs = dict(item.split("=", 1) for item in server_first.decode().split(","))
    salted = hashlib.pbkdf2_hmac(
        "sha256", password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"])
    )
    client_key = _hmac(salted, b"Client Key")
    without_proof = f"c=biws,r={attrs['r']}"
    auth_message = f"{client_first_bare},{server_first.decode()},{without_proof}".encode()
    signature = _hmac(hashlib.sha256(client_key).digest(), auth_message)
    proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
    return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def scram_login(password: str) -> tuple[Pop3Server, list[object]]:
    core = server()
    bare = "n=alice,r=clientnonce123"
    events = core.receive(b"AUTH SCRAM-SHA-256 " + b64(f"n,,{bare}".encode()) + b"\r\n")
    assert events == [NeedScram("alice")]
    events = list(core.scram_result(SCRAM, CANONICAL))
    assert len(events) == 1 and isinstance(events[0], Continue)
    final = scram_client_final(bare, events[0].data, password)
    return core, list(core.receive(b64(final) + b"\r\n"))


def test_scram_login_sends_server_signature_then_waits_for_empty_line() -> None:
    core, events = scram_login(PASSWORD)
    assert len(events) == 1 and isinstance(events[0], Continue)
    assert events[0].data.startswith(b"v=")
    assert events[0].encode().startswith(b"+ dj")
    assert core.receive(b"\r\n") == [OpenMailbox(CANONICAL)]
    reply = core.mailbox_opened(MaildropSnapshot([("a", 10)]))
    assert reply == [Reply(True, f"Logged in, {CANONICAL} has 1 message (10 octets)")]


def test_scram_wrong_password_fails_with_auth_code() -> None:
    core, events = scram_login("not the password")
    assert events == [Reply(False, "Authentication failed", "AUTH")]
    assert core.state is Pop3State.AUTHORIZATION


def test_scram_non_empty_answer_to_final_data_is_refused() -> None:
    core, _ = scram_login(PASSWORD)
    events = core.receive(b"Zm9v\r\n")
    assert len(events) == 1 and isinstance(events[0], Reply) and not events[0].ok
    assert core.state is Pop3State.AUTHORIZATION


def test_scram_unknown_user_fails_like_a_wrong_password() -> None:
    core = server()
    bare = "n=nobody,r=abc"
    core.receive(b"AUTH SCRAM-SHA-256 " + b64(f"n,,{bare}".encode()) + b"\r\n")
    (challenge,) = core.scram_result(None, None)
    assert isinstance(challenge, Continue)
    final = scram_client_final(bare, challenge.data, PASSWORD)
    assert core.receive(b64(final) + b"\r\n") == [Reply(False, "Authentication failed", "AUTH")]


def test_input_between_stls_and_handshake_is_dropped() -> None:
    core = server(tls_active=False)
    assert core.receive(b"STLS\r\nCAPA\r\n") == [Reply(True, "Begin TLS negotiation"), StartTls()]
    assert core.receive(b"USER alice\r\n") == []
    assert core.tls_started() == []
    assert core.tls_active and core.auth_permitted
    assert core.receive(b"USER alice\r\n") == [Reply(True, "Send PASS")]


def test_answer_out_of_turn_is_a_usage_error() -> None:
    core = server()
    with pytest.raises(Pop3UsageError):
        core.login_result(LoginResult.success("alice"))
    core.receive(b"USER alice\r\nPASS secret\r\n")
    with pytest.raises(Pop3UsageError):
        core.message_data(b"x")


def test_input_is_held_while_waiting_for_an_answer() -> None:
    core = server()
    assert core.receive(b"USER alice\r\nPASS secret\r\n")[-1] == CheckPassword("alice", "secret")
    assert core.receive(b"STAT\r\n") == []
    assert core.login_result(LoginResult.success(CANONICAL)) == [OpenMailbox(CANONICAL)]
    events = core.mailbox_opened(MaildropSnapshot([("a", 5), ("b", 7)]))
    assert events[-1] == Reply(True, "2 12")


def test_eof_in_transaction_commits_nothing_and_is_idempotent() -> None:
    core, session = logged_in()
    core.receive(b"DELE 1\r\n")
    assert core.eof() == [Close()]
    assert core.eof() == []
    assert core.receive(b"QUIT\r\n") == []
    assert session.committed == []


def test_quit_commits_deleted_uids_in_message_order() -> None:
    core, _ = logged_in()
    core.receive(b"DELE 3\r\nDELE 1\r\n")
    assert core.receive(b"QUIT\r\n") == [CommitDeletions(("u1", "u3"))]
    assert core.state is Pop3State.UPDATE
    events = core.update_done(True)
    assert events[-1] == Close()
    assert core.receive(b"NOOP\r\n") == []


def test_answers_after_close_are_ignored() -> None:
    core = server()
    core.receive(b"USER alice\r\nPASS secret\r\n")
    core.eof()
    assert core.login_result(LoginResult.success(CANONICAL)) == []


def test_password_is_not_in_event_repr() -> None:
    assert "hunter2" not in repr(CheckPassword("alice", "hunter2"))


def test_mechanisms_can_be_narrowed_and_are_validated() -> None:
    core = server(mechanisms=("SCRAM-SHA-256",))
    (capa,) = core.receive(b"CAPA\r\n")
    assert isinstance(capa, MultiLine) and b"SASL SCRAM-SHA-256\r\n" in capa.body
    assert core.receive(b"AUTH PLAIN\r\n")[0] == Reply(
        False, "Unsupported authentication mechanism"
    )
    with pytest.raises(ValueError):
        server(mechanisms=("CRAM-MD5",))


def test_reply_and_continue_encoding() -> None:
    assert Reply(False, "Locked", "IN-USE").encode() == b"-ERR [IN-USE] Locked\r\n"
    assert Reply(True).encode() == b"+OK\r\n"
    assert Continue(b"").encode() == b"+ \r\n"


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError):
        Pop3Limits(max_line=4)
    with pytest.raises(ValueError):
        Pop3Limits(max_line=300, max_auth_line=200)
    with pytest.raises(ValueError):
        Pop3Limits(max_errors=0)


@pytest.mark.parametrize("uid", ["", "a b", "x" * 71, "ą", "tab\t"])
def test_snapshot_rejects_invalid_uids(uid: str) -> None:
    assert not valid_uid(uid)
    with pytest.raises(ValueError):
        MaildropSnapshot([(uid, 1)])


def test_snapshot_rejects_duplicates_and_negative_sizes() -> None:
    assert valid_uid("~" * 70)
    with pytest.raises(ValueError):
        MaildropSnapshot([("a", 1), ("a", 2)])
    with pytest.raises(ValueError):
        MaildropSnapshot([("a", -1)])


def test_partial_line_until_its_line_end() -> None:
    core = server()
    core.start()
    # A line over the limit is discarded as it comes, and still unfinished until its LF.
    chunks = [b"CA", b"PA\r\nNO", b"OP\r\n", b"x" * 10_000, b"\r\n"]
    seen = []
    for chunk in chunks:
        core.receive(chunk)
        seen.append(core.partial_line)
    assert seen == [True, True, False, True, False]
