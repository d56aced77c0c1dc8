"""Authentication-Results: building, parsing back, and stripping forged fields."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from poczta.mailauth.dkim import DkimResult, DkimStatus
from poczta.mailauth.dmarc import DmarcRecord, DmarcResult
from poczta.mailauth.results import (
    AuthResultsSyntaxError,
    ResInfo,
    authentication_results_header,
    dkim_resinfos,
    dmarc_resinfo,
    format_authentication_results,
    format_value,
    parse_authentication_results,
    spf_resinfo,
    strip_forged_results,
)

SIG_A = DkimResult(
    DkimStatus.PASS, "example.com", "s1", "rsa-sha256", "abcdefgh12+/xyz==", key_bits=2048
)
SIG_B = DkimResult(DkimStatus.FAIL, "example.net", "s2", "ed25519-sha256", "abcdefgh99/zz==",
                   reason="body hash mismatch", body_length_limited=True)  # fmt: skip
DMARC = DmarcResult("pass", policy="reject", from_domain="example.com",
                    record=DmarcRecord(policy="reject"))  # fmt: skip


def full_results() -> list[ResInfo]:
    return [
        spf_resinfo("Pass", mailfrom="bounce+x=y@example.com", helo="mx.example.com"),
        *dkim_resinfos([SIG_A, SIG_B]),
        dmarc_resinfo(DMARC),
        ResInfo("dnsbl", "pass", properties=(("policy.zone", "zen.example"),)),
    ]


def test_build_and_read_back() -> None:
    value = format_authentication_results("mx.poczta.test", full_results())
    assert value.startswith("mx.poczta.test;\r\n\tspf=pass smtp.mailfrom=bounce+x=y@example.com")
    assert "header.b=abcdefgh1;" in value and "header.b=abcdefgh9;" in value
    assert "dmarc=pass (p=reject dis=none) header.from=example.com" in value
    assert 'reason="body hash mismatch"' in value and "(2048-bit key)" in value
    parsed = parse_authentication_results(value)
    assert parsed.authserv_id == "mx.poczta.test"
    assert [(r.method, r.result) for r in parsed.results] == [
        ("spf", "pass"), ("dkim", "pass"), ("dkim", "fail"), ("dmarc", "pass"), ("dnsbl", "pass"),
    ]  # fmt: skip
    assert parsed.results[0].get("smtp.mailfrom") == "bounce+x=y@example.com"
    assert parsed.results[0].get("smtp.helo") == "mx.example.com"
    assert parsed.results[1].get("header.d") == "example.com"
    assert parsed.results[2].reason == "body hash mismatch"
    assert parsed.results[4].get("policy.zone") == "zen.example"
    assert [(r.method, r.result, r.reason, r.properties) for r in parsed.results] == [
        (r.method, r.result, r.reason, r.properties) for r in full_results()
    ]


def test_unsigned_and_empty() -> None:
    assert dkim_resinfos([]) == [ResInfo("dkim", "none")]
    header = authentication_results_header("mx.test", [])
    assert header == b"Authentication-Results: mx.test;\r\n\tnone\r\n"
    assert parse_authentication_results("mx.test; none").results == []


def test_quoting() -> None:
    assert format_value("example.com") == "example.com"
    assert format_value("user@example.com") == "user@example.com"
    assert format_value("a b@example.com") == '"a b@example.com"'
    assert format_value('say "hi"') == '"say \\"hi\\""'
    assert format_value("x\r\ny") == '"x y"'


def test_parses_foreign_fields() -> None:
    value = (
        "example.org 1 (comment; with ; semicolons); spf=pass (sender ok)\r\n"
        ' smtp.mailfrom=a@example.org; dkim/1=fail reason="bad \\"sig\\""\r\n'
        "\theader.d=example.org header.b=AbCd/+=; arc=none"
    )
    parsed = parse_authentication_results(value)
    assert (parsed.authserv_id, parsed.version) == ("example.org", "1")
    assert [r.method for r in parsed.results] == ["spf", "dkim", "arc"]
    assert parsed.results[1].reason == 'bad "sig"'
    assert parsed.results[1].get("header.b") == "AbCd/+="


@pytest.mark.parametrize("bad", ["", "; spf=pass", "x; spf", "x; spf=pass junk", 'x; a=b reason="x',
                                 "x (unclosed; spf=pass"])  # fmt: skip
def test_parse_errors(bad: str) -> None:
    with pytest.raises(AuthResultsSyntaxError):
        parse_authentication_results(bad)


MESSAGE = (
    b"Received: from a by b\r\n"
    b"Authentication-Results: MX.Poczta.Test; spf=pass\r\n smtp.mailfrom=x@evil.test\r\n"
    b"authentication-results:(forged) mx.poczta.test;\r\n\tdkim=pass\r\n"
    b'Authentication-Results: "mx.poczta.test"; dmarc=pass\r\n'
    b"Authentication-Results: mx.upstream.test; spf=fail\r\n"
    b"Authentication-Results: mx.poczta.test.evil; spf=pass\r\n"
    b"Subject: hi\r\n\r\n"
    b"Authentication-Results: mx.poczta.test; body text stays\r\n"
)


def test_strip_forged_results() -> None:
    stripped = strip_forged_results(MESSAGE, "mx.poczta.test")
    assert stripped == (
        b"Received: from a by b\r\n"
        b"Authentication-Results: mx.upstream.test; spf=fail\r\n"
        b"Authentication-Results: mx.poczta.test.evil; spf=pass\r\n"
        b"Subject: hi\r\n\r\n"
        b"Authentication-Results: mx.poczta.test; body text stays\r\n"
    )
    lf = MESSAGE.replace(b"\r\n", b"\n")
    assert strip_forged_results(lf, "mx.poczta.test") == stripped.replace(b"\r\n", b"\n")
    assert strip_forged_results(b"", "x") == b""
    assert strip_forged_results(b"Subject: x\r\n", "x") == b"Subject: x\r\n"


def test_strip_then_add_our_own() -> None:
    ours = authentication_results_header("mx.poczta.test", full_results())
    message = ours + MESSAGE
    assert b"mx.poczta.test" not in strip_forged_results(message, "mx.poczta.test").split(
        b"\r\n\r\n"
    )[0].replace(b"mx.poczta.test.evil", b"")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_parser_garbage(value: str) -> None:
    with contextlib.suppress(AuthResultsSyntaxError):
        parse_authentication_results(value)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_strip_garbage(data: bytes) -> None:
    out = strip_forged_results(data, "mx.test")
    assert len(out) <= len(data)
    assert strip_forged_results(data + b"\r\n\r\nbody", "mx.test").endswith(b"body")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.from_regex(r"[a-z]{1,8}", fullmatch=True), st.text(max_size=30),
                          st.text(max_size=30)), max_size=4))  # fmt: skip
def test_round_trip_any_values(items: list[tuple[str, str, str]]) -> None:
    infos = [ResInfo(m, "pass", reason, (("header.x", value),)) for m, reason, value in items]
    clean = [
        ResInfo(i.method, i.result, i.reason.replace("\r", "").replace("\n", " "),
                tuple((k, v.replace("\r", "").replace("\n", " ")) for k, v in i.properties))
        for i in infos
    ]  # fmt: skip
    parsed = parse_authentication_results(format_authentication_results("mx.test", infos))
    assert [(r.method, r.reason, r.properties) for r in parsed.results] == [
        (r.method, r.reason, r.properties) for r in clean
    ]
