"""The Received header we prepend: no client value can end it, fold it or smuggle bytes into it."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from poczta.smtp.events import Envelope, Recipient, TlsInfo
from poczta.smtp.session import received_header
from poczta.smtp.syntax import MailParams, RcptParams

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
# every kind of character, with the ones that break or hide lines made likely
HOSTILE = st.text(
    st.one_of(
        st.characters(),
        st.sampled_from("\r\n\x00\x1b\x7f\x85\u2028\u2029\x0b\x0c\t "),
    ),
    max_size=40,
)


def envelope(helo: str, ip: str, rcpts: list[str], tls: TlsInfo | None, protocol: str) -> Envelope:
    return Envelope(
        helo=helo,
        esmtp=True,
        mail_from="a@client.test",
        mail_params=MailParams(),
        recipients=tuple(Recipient(r, RcptParams()) for r in rcpts),
        user=None,
        tls=tls,
        client_ip=ip,
        protocol=protocol,
    )


@given(
    helo=HOSTILE,
    ip=HOSTILE,
    rcpts=st.lists(HOSTILE, min_size=1, max_size=2),
    tls=st.none() | st.builds(TlsInfo, HOSTILE, HOSTILE, st.integers(-1, 1 << 20)),
    protocol=HOSTILE,
)
def test_client_values_never_break_the_header(
    helo: str, ip: str, rcpts: list[str], tls: TlsInfo | None, protocol: str
) -> None:
    out = received_header(envelope(helo, ip, rcpts, tls, protocol), "mx.example.test", "Q1", NOW)
    assert out.startswith(b"Received: from ") and out.endswith(b"\r\n")
    lines = out[:-2].split(b"\r\n")
    assert all(b"\r" not in line and b"\n" not in line for line in lines)  # no bare CR or LF
    assert all(line[:1] in (b" ", b"\t") for line in lines[1:])  # one field, folded
    text = out.decode("utf-8")  # raises on bytes that are no UTF-8
    assert len(text.splitlines()) == len(lines)  # nor NEL, U+2028 or another line break
    assert all(line.lstrip("\t").isprintable() for line in text[:-2].split("\r\n"))


def test_printable_values_are_kept_as_they_are() -> None:
    tls = TlsInfo("TLSv1.3", "TLS_AES_256_GCM_SHA384", 256)
    env = envelope("bücher.example", "2001:db8::1", ["zoë@example.test"], tls, "UTF8SMTPS")
    assert (
        received_header(env, "mx.example.test", "Q1", NOW)
        == (
            "Received: from bücher.example ([IPv6:2001:db8::1])\r\n"
            "\tby mx.example.test (poczta) with UTF8SMTPS id Q1\r\n"
            "\tfor <zoë@example.test>\r\n"
            "\ttls TLS_AES_256_GCM_SHA384 (TLSv1.3, 256 bits);\r\n"
            "\tFri, 02 Jan 2026 03:04:05 +0000\r\n"
        ).encode()
    )


def test_control_characters_are_replaced() -> None:
    env = envelope(
        "evil\rAuthentication-Results: x; dmarc=pass", "192.0.2.1", ["b@x"], None, "ESMTP"
    )
    out = received_header(env, "mx.example.test", "Q1", NOW)
    assert out.startswith(
        b"Received: from evil?Authentication-Results: x; dmarc=pass ([192.0.2.1])\r\n"
    )
