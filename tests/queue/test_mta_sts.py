"""The MTA-STS core: the TXT record, the policy text, MX matching, what a host is asked.

Tables of inputs as domains publish them (RFC 8461's examples among them) and what
poczta makes of each; hypothesis feeds arbitrary bytes to both parsers.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from poczta.queue.mta_sts import (
    MAX_AGE_LIMIT,
    MAX_MX_PATTERNS,
    MAX_POLICY_LINES,
    MAX_POLICY_SIZE,
    StsDecision,
    StsError,
    StsMode,
    StsPolicy,
    StsRecord,
    decide,
    mx_matches,
    parse_policy,
    parse_record,
    select_record,
)

# --------------------------------------------------------------------------- TXT records


@pytest.mark.parametrize(
    ("texts", "expected"),
    [
        ([b"v=STSv1; id=20160831085700Z;"], StsRecord("20160831085700Z")),
        ([b"v=STSv1;id=abc"], StsRecord("abc")),
        ([b"v=STSv1 ;\tid=abc ; "], StsRecord("abc")),
        ([b"v=spf1 -all", b"v=STSv1; id=abc"], StsRecord("abc")),
        ([b"v=STSv1; id=a1; ext_1=x:y"], StsRecord("a1", (("ext_1", "x:y"),))),
        ([b"v=STSv1; id=first; id=second"], StsRecord("first")),
    ],
)
def test_a_record_is_read(texts: list[bytes], expected: StsRecord) -> None:
    assert select_record(texts) == expected


@pytest.mark.parametrize(
    ("texts", "why"),
    [
        ([], "no v=STSv1 TXT record"),
        ([b"v=spf1 -all"], "no v=STSv1 TXT record"),
        ([b"v=STSv10; id=abc"], "no v=STSv1 TXT record"),
        ([b"V=STSv1; id=abc"], "no v=STSv1 TXT record"),  # case matters (%s in the ABNF)
        ([b"v=STSv1; id=a", b"v=STSv1; id=b"], "2 v=STSv1 TXT records"),
        ([b"v=STSv1;"], "no id="),
        ([b"v=STSv1; id="], "1 to 32 letters and digits"),
        ([b"v=STSv1; id=" + b"a" * 33], "1 to 32 letters and digits"),
        ([b"v=STSv1; id=2016-08-31"], "1 to 32 letters and digits"),
        ([b"v=STSv1; id=abc; junk"], "malformed field"),
        ([b"v=STSv1; id=abc; x=a b"], "malformed value"),
        ([b"v=STSv1; id=abc; x=\xff"], "not ASCII"),
    ],
)
def test_a_record_that_announces_no_policy(texts: list[bytes], why: str) -> None:
    result = select_record(texts)
    assert isinstance(result, StsError) and why in result.text


# --------------------------------------------------------------------------- policies

RFC_EXAMPLE = (
    b"version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\n"
    b"mx: backupmx.example.com\r\nmax_age: 604800\r\n"
)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            RFC_EXAMPLE,
            StsPolicy(
                StsMode.ENFORCE,
                604800,
                ("mail.example.com", "*.example.net", "backupmx.example.com"),
            ),
        ),
        (  # LF line ends, any order, trailing blanks, no final line end, upper case MX
            b"mx: MX.Example.ORG.\nmax_age:86400  \nmode: testing\nversion: STSv1",
            StsPolicy(StsMode.TESTING, 86400, ("mx.example.org",)),
        ),
        (b"version: STSv1\nmode: none\nmax_age: 0\n", StsPolicy(StsMode.NONE, 0)),
        (  # the first of a field counts, mx adds up, unknown fields are kept aside
            b"version: STSv1\nmode: enforce\nmode: none\nmax_age: 60\nmax_age: 1\n"
            b"mx: a.example\nmx: b.example\nextra_1: some value here\n",
            StsPolicy(
                StsMode.ENFORCE, 60, ("a.example", "b.example"), (("extra_1", "some value here"),)
            ),
        ),
        (  # max_age is bounded to a year
            b"version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 9999999999\n",
            StsPolicy(StsMode.ENFORCE, MAX_AGE_LIMIT, ("a.example",)),
        ),
        (  # blank lines are skipped
            b"version: STSv1\n\nmode: enforce\r\n\r\nmx: a.example\nmax_age: 5\n\n\n",
            StsPolicy(StsMode.ENFORCE, 5, ("a.example",)),
        ),
    ],
)
def test_a_policy_is_read(body: bytes, expected: StsPolicy) -> None:
    assert parse_policy(body) == expected


GOOD = b"version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 86400\n"


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"", "no version, mode, max_age field"),
        (GOOD.replace(b"version: STSv1\n", b""), "no version field"),
        (GOOD.replace(b"STSv1", b"STSv2"), "unknown version 'STSv2'"),
        (GOOD.replace(b"enforce", b"Enforce"), "unknown mode 'Enforce'"),
        (GOOD.replace(b"enforce", b"report"), "unknown mode"),
        (GOOD.replace(b"max_age: 86400\n", b""), "no max_age field"),
        (GOOD.replace(b"86400", b"-1"), "not 1 to 10 digits"),
        (GOOD.replace(b"86400", b"12345678901"), "not 1 to 10 digits"),
        (GOOD.replace(b"86400", b"1e5"), "not 1 to 10 digits"),
        (GOOD.replace(b"mx: a.example\n", b""), "mode enforce without any mx"),
        (GOOD.replace(b"enforce", b"testing").replace(b"mx: a.example\n", b""), "mode testing"),
        (GOOD.replace(b"a.example", b"*.*.example"), "is not a host name"),
        (GOOD.replace(b"a.example", b"mx.*.example"), "is not a host name"),
        (GOOD.replace(b"a.example", b"a_b.example"), "is not a host name"),
        (GOOD.replace(b"a.example", b"-a.example"), "is not a host name"),
        (GOOD.replace(b"a.example", "bücher.example".encode()), "is not a host name"),
        (GOOD.replace(b"a.example", b"a" * 64 + b".example"), "is not a host name"),
        (GOOD + b"mx:\n", "not a 'name: value' field"),
        (GOOD + b" mx: b.example\n", "not a 'name: value' field"),
        (GOOD + b"no colon here\n", "not a 'name: value' field"),
        (GOOD + b"x\x00: y\n", "not a 'name: value' field"),
        (GOOD + b"x: a\x07b\n", "not a 'name: value' field"),
        (GOOD + b"\xff\xfe", "not UTF-8"),
    ],
)
def test_a_policy_that_cannot_be_used(body: bytes, why: str) -> None:
    result = parse_policy(body)
    assert isinstance(result, StsError) and why in result.text, result


def test_the_limits_of_a_policy() -> None:
    padded = GOOD + b"x: " + b"y" * (MAX_POLICY_SIZE - len(GOOD) - 4) + b"\n"
    assert len(padded) == MAX_POLICY_SIZE and isinstance(parse_policy(padded), StsPolicy)
    over = parse_policy(padded + b"\n")
    assert isinstance(over, StsError) and "over 65536 octets" in over.text

    lines = GOOD + b"x: y\n" * (MAX_POLICY_LINES - 4)
    assert isinstance(parse_policy(lines), StsPolicy)
    too_many = parse_policy(lines + b"x: y\n")
    assert isinstance(too_many, StsError) and "over 1000 lines" in too_many.text

    patterns = b"".join(b"mx: m%d.example\n" % n for n in range(MAX_MX_PATTERNS - 1))
    policy = parse_policy(GOOD + patterns)
    assert isinstance(policy, StsPolicy) and len(policy.mx) == MAX_MX_PATTERNS
    excess = parse_policy(GOOD + patterns + b"mx: one.more.example\n")
    assert isinstance(excess, StsError) and "over 100 mx patterns" in excess.text


# --------------------------------------------------------------------------- matching


@pytest.mark.parametrize(
    ("pattern", "host", "matches"),
    [
        ("mail.example.com", "mail.example.com", True),
        ("mail.example.com", "MAIL.Example.COM.", True),
        ("mail.example.com", "mail2.example.com", False),
        ("mail.example.com", "example.com", False),
        ("*.example.net", "mx1.example.net", True),
        ("*.example.net", "MX1.EXAMPLE.NET.", True),
        ("*.example.net", "example.net", False),  # the wildcard is exactly one label
        ("*.example.net", "a.b.example.net", False),
        ("*.example.net", ".example.net", False),
        ("*.example.net", "mx1.example.network", False),
        ("*.example.net", "mx1.sub-example.net", False),
        ("mail.example.com", "", False),
    ],
)
def test_mx_matching(pattern: str, host: str, matches: bool) -> None:
    assert mx_matches(pattern, host) is matches


ENFORCE = StsPolicy(StsMode.ENFORCE, 86400, ("mx.example.org", "*.backup.example.org"))


@pytest.mark.parametrize(
    ("policy", "host", "decision"),
    [
        (None, "mx.example.org", StsDecision.OPPORTUNISTIC),
        (StsPolicy(StsMode.NONE, 86400, ("mx.example.org",)), "other", StsDecision.OPPORTUNISTIC),
        (ENFORCE, "mx.example.org", StsDecision.VERIFIED),
        (ENFORCE, "b1.backup.example.org", StsDecision.VERIFIED),
        (ENFORCE, "evil.example.net", StsDecision.SKIP),
        (StsPolicy(StsMode.TESTING, 1, ENFORCE.mx), "mx.example.org", StsDecision.TEST_VERIFIED),
        (StsPolicy(StsMode.TESTING, 1, ENFORCE.mx), "evil.test", StsDecision.TEST_UNLISTED),
    ],
)
def test_what_a_policy_asks_of_a_host(
    policy: StsPolicy | None, host: str, decision: StsDecision
) -> None:
    assert decide(policy, host) is decision


# --------------------------------------------------------------------------- any bytes


@given(st.lists(st.binary(max_size=200), max_size=4))
def test_any_txt_records_give_a_record_or_an_error(texts: list[bytes]) -> None:
    result = select_record(texts)
    assert isinstance(result, StsRecord | StsError)


@given(st.binary(max_size=2000))
def test_any_bytes_give_a_policy_or_an_error(body: bytes) -> None:
    result = parse_policy(body)
    assert isinstance(result, StsPolicy | StsError)
    if isinstance(result, StsPolicy):
        assert 0 <= result.max_age <= MAX_AGE_LIMIT
        assert result.mode is StsMode.NONE or result.mx


fields = st.sampled_from(
    [b"version: STSv1", b"mode: enforce", b"mode: testing", b"max_age: 86400", b"mx: a.example"]
)


@given(st.lists(fields | st.binary(max_size=30), max_size=12), st.sampled_from([b"\n", b"\r\n"]))
def test_policy_shaped_input_gives_a_policy_or_an_error(lines: list[bytes], end: bytes) -> None:
    result = parse_policy(end.join(lines))
    assert isinstance(result, StsPolicy | StsError)


def test_parse_record_names_what_is_wrong() -> None:
    result = parse_record(b"v=STSv1 junk; id=abc")
    assert isinstance(result, StsError) and "before the first ';'" in result.text
