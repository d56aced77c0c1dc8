"""Tests for the SASL server mechanisms: PLAIN, LOGIN, SCRAM-SHA-256 and the framing."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from poczta.sasl import (
    CANCELLED,
    MALFORMED,
    MECHANISMS,
    Challenge,
    Failed,
    NeedScramCredentials,
    SaslEvent,
    SaslExchange,
    SaslStateError,
    ScramCredentials,
    Succeeded,
    VerifyPassword,
    decode_client_response,
    derive_scram_credentials,
    encode_challenge,
)

# RFC 7677 section 3 example.
RFC_SALT = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
RFC_CLIENT_FIRST = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
RFC_SERVER_NONCE = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
RFC_SERVER_FIRST = (
    b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
)
RFC_CLIENT_FINAL = (
    b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
)
RFC_SERVER_FINAL = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


def rfc_creds() -> ScramCredentials:
    return derive_scram_credentials("pencil", iterations=4096, salt=RFC_SALT)


def scram(initial: bytes | None = None) -> SaslExchange:
    return SaslExchange("SCRAM-SHA-256", initial, nonce_factory=lambda: RFC_SERVER_NONCE)


def test_mechanisms() -> None:
    assert MECHANISMS == ("PLAIN", "LOGIN", "SCRAM-SHA-256")
    with pytest.raises(ValueError):
        SaslExchange("CRAM-MD5", None)


def test_scram_rfc7677_example() -> None:
    ex = scram()
    assert ex.start() == Challenge(b"")
    assert ex.respond(RFC_CLIENT_FIRST) == NeedScramCredentials("user")
    assert ex.scram_credentials(rfc_creds(), "user") == Challenge(RFC_SERVER_FIRST)
    assert ex.respond(RFC_CLIENT_FINAL) == Succeeded("user", RFC_SERVER_FINAL)
    assert ex.done


def test_scram_initial_response_and_y_flag_rejected_binding_mismatch() -> None:
    ex = scram(RFC_CLIENT_FIRST)
    assert ex.start() == NeedScramCredentials("user")
    ex.scram_credentials(rfc_creds(), "user")
    assert ex.respond(RFC_CLIENT_FINAL) == Succeeded("user", RFC_SERVER_FINAL)
    # the 'y' flag is accepted, but the c= value must then echo "y,,".
    ex = scram(b"y,,n=user,r=rOprNGfwEbeRWgbNEkqO")
    assert ex.start() == NeedScramCredentials("user")
    ex.scram_credentials(rfc_creds(), "user")
    event = ex.respond(RFC_CLIENT_FINAL)
    assert isinstance(event, Failed) and not event.malformed


def test_scram_wrong_password() -> None:
    ex = scram(RFC_CLIENT_FIRST)
    ex.start()
    ex.scram_credentials(derive_scram_credentials("other", salt=RFC_SALT), "user")
    assert ex.respond(RFC_CLIENT_FINAL) == Failed("invalid credentials", malformed=False)


def test_scram_unknown_user_is_not_revealed() -> None:
    ex = scram(RFC_CLIENT_FIRST)
    ex.start()
    first = ex.scram_credentials(None, None)
    assert isinstance(first, Challenge)
    assert first.data.startswith(b"r=rOprNGfwEbeRWgbNEkqO%hvYD")
    assert b",s=" in first.data and first.data.endswith(b",i=4096")
    # the fake salt is stable for the same name, so probing twice shows nothing
    again = scram(RFC_CLIENT_FIRST)
    again.start()
    assert again.scram_credentials(None, None) == first
    assert ex.respond(RFC_CLIENT_FINAL) == Failed("invalid credentials", malformed=False)


def test_scram_channel_binding_and_authzid_rules() -> None:
    ev = scram(b"p=tls-unique,,n=user,r=abc").start()
    assert isinstance(ev, Failed) and not ev.malformed
    ev = scram(b"n,a=admin,n=user,r=abc").start()
    assert isinstance(ev, Failed) and not ev.malformed
    assert scram(b"n,a=user,n=user,r=abc").start() == NeedScramCredentials("user")
    assert scram(b"n,,n=a=2Cb=3Dc,r=abc").start() == NeedScramCredentials("a,b=c")


@pytest.mark.parametrize(
    "first",
    [
        b"",
        b"x,,n=user,r=abc",
        b"n,,r=abc,n=user",
        b"n,,m=ext,n=user,r=abc",
        b"n,,n=,r=abc",
        b"n,,n=user,r=",
        b"n,,n=us=41er,r=abc",
        b"n,b=x,n=user,r=abc",
        b"n,,n=\xff,r=abc",
        b"n",
    ],
)
def test_scram_malformed_first(first: bytes) -> None:
    ev = scram(first).start()
    assert isinstance(ev, Failed) and ev.malformed


@pytest.mark.parametrize(
    "final",
    [
        b"",
        b"c=biws,r=x",
        b"c=!!!!,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=AAAA",
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=AAAA",
    ],
)
def test_scram_malformed_final(final: bytes) -> None:
    ex = scram(RFC_CLIENT_FIRST)
    ex.start()
    ex.scram_credentials(rfc_creds(), "user")
    ev = ex.respond(final)
    assert isinstance(ev, Failed) and ev.malformed


def test_scram_nonce_mismatch() -> None:
    ex = scram(RFC_CLIENT_FIRST)
    ex.start()
    ex.scram_credentials(rfc_creds(), "user")
    ev = ex.respond(RFC_CLIENT_FINAL.replace(b"k0,p", b"k1,p"))
    assert isinstance(ev, Failed) and not ev.malformed


def test_credentials_string_round_trip() -> None:
    creds = rfc_creds()
    text = creds.to_string()
    assert text.startswith("SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$")
    assert ScramCredentials.from_string(text) == creds
    for bad in [
        "",
        "SCRAM-SHA-1$1:AA==$AA==:AA==",
        "SCRAM-SHA-256$x:AA==$AA==:AA==",
        "SCRAM-SHA-256$4096:AA==$AA==:AA==",
    ]:
        with pytest.raises(ValueError):
            ScramCredentials.from_string(bad)


def test_plain_without_and_with_authzid() -> None:
    ex = SaslExchange("PLAIN", b"\0alice\0secret")
    assert ex.start() == VerifyPassword("alice", "secret")
    assert ex.password_checked("alice@example.test") == Succeeded("alice@example.test", None)
    ex = SaslExchange("PLAIN", None)
    assert ex.start() == Challenge(b"")
    assert ex.respond(b"alice\0alice\0secret") == VerifyPassword("alice", "secret")
    assert ex.password_checked(None) == Failed("invalid credentials", malformed=False)
    ev = SaslExchange("PLAIN", b"root\0alice\0secret").start()
    assert isinstance(ev, Failed) and not ev.malformed


@pytest.mark.parametrize(
    "message", [b"", b"alice", b"\0alice", b"\0\0pw", b"\0alice\0", b"\0a\0b\0c", b"\0\xff\0pw"]
)
def test_plain_malformed(message: bytes) -> None:
    ev = SaslExchange("PLAIN", message).start()
    assert isinstance(ev, Failed) and ev.malformed


def test_login() -> None:
    ex = SaslExchange("login", None)
    assert ex.start() == Challenge(b"Username:")
    assert ex.respond(b"alice") == Challenge(b"Password:")
    assert ex.respond(b"secret") == VerifyPassword("alice", "secret")
    assert ex.password_checked("alice") == Succeeded("alice")
    ex = SaslExchange("LOGIN", b"alice")
    assert ex.start() == Challenge(b"Password:")
    ev = ex.respond(b"")
    assert isinstance(ev, Failed) and ev.malformed


def test_out_of_order_calls_raise_state_error() -> None:
    ex = SaslExchange("PLAIN", None)
    with pytest.raises(SaslStateError):
        ex.password_checked("x")
    ex.start()
    with pytest.raises(SaslStateError):
        ex.start()


def test_cancel() -> None:
    ex = SaslExchange("LOGIN", None)
    ex.start()
    ev = ex.cancel()
    assert ev.malformed and ex.done


def test_decode_client_response() -> None:
    assert decode_client_response(b"*") is CANCELLED
    assert decode_client_response(b"=") == b""
    assert decode_client_response(b"") == b""
    assert decode_client_response(b"AGFsaWNlAHNlY3JldA==\r\n") == b"\0alice\0secret"
    for bad in [b"AGFsaWNl$", b"abc", b"a===", b"****"]:
        assert decode_client_response(bad) is MALFORMED
    assert encode_challenge(b"") == ""
    assert encode_challenge(b"Username:") == "VXNlcm5hbWU6"


def drive(ex: SaslExchange, first: SaslEvent, responses: list[bytes]) -> None:
    event = first
    for data in responses:
        if isinstance(event, VerifyPassword):
            event = ex.password_checked(event.authcid)
        elif isinstance(event, NeedScramCredentials):
            event = ex.scram_credentials(rfc_creds(), event.authcid)
        if isinstance(event, Succeeded | Failed):
            return
        event = ex.respond(data)


@given(
    mech=st.sampled_from(MECHANISMS),
    initial=st.none() | st.binary(max_size=200),
    responses=st.lists(st.binary(max_size=200), max_size=4),
)
def test_arbitrary_bytes_never_raise(
    mech: str, initial: bytes | None, responses: list[bytes]
) -> None:
    ex = SaslExchange(mech, initial)
    drive(ex, ex.start(), responses)


@given(st.binary(max_size=100))
def test_decode_never_raises(line: bytes) -> None:
    decode_client_response(line)


@pytest.mark.parametrize(
    ("mechanism", "message"),
    [
        ("PLAIN", b"\0alice\r\nX-Forged: yes\0secret"),
        ("PLAIN", b"alice\x1b\0alice\0secret"),
        ("PLAIN", b"\0alice\xc2\x85\0secret"),
        ("PLAIN", b"\0al\xe2\x80\xa8ice\0secret"),
        ("LOGIN", b"ali\rce"),
        ("LOGIN", b"ali\x7fce"),
        ("SCRAM-SHA-256", b"n,,n=ali\rce,r=abc"),
        ("SCRAM-SHA-256", b"n,a=ali\nce,n=alice,r=abc"),
    ],
)
def test_identity_with_control_characters_is_malformed(mechanism: str, message: bytes) -> None:
    ex = SaslExchange(mechanism, None)
    ex.start()
    ev = ex.respond(message)
    assert isinstance(ev, Failed) and ev.malformed
    assert ex.authcid is None  # nothing the client named is kept for logs
