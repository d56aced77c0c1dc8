"""Whatever the client sends, no accepted EHLO name, path or parameter holds a line break."""

from __future__ import annotations

import unicodedata
from dataclasses import astuple

from hypothesis import given
from hypothesis import strategies as st

from poczta.smtp.replies import Reply
from poczta.smtp.syntax import parse_helo, parse_mail_from, parse_rcpt_to

# arbitrary text, with control characters, separators and xtext escapes made likely
PIECES = st.sampled_from(
    ["\r", "\n", "\x00", "\x1b", "\x7f", "\x85", "\u2028", "\t", " ", ".", "+0D", "+0A", "+20"]
)
HOSTILE = st.lists(st.one_of(st.characters(), PIECES, st.sampled_from(["a", "b.test"]))).map(
    "".join
)


def unbroken(value: object) -> bool:
    """No control character (C0, DEL, C1) and no line or paragraph separator."""
    if isinstance(value, tuple):
        return all(unbroken(v) for v in value)
    text = value if isinstance(value, str) else ""
    return all(unicodedata.category(c) not in ("Cc", "Zl", "Zp") for c in text)


@given(HOSTILE)
def test_an_accepted_helo_name_is_one_printable_word(name: str) -> None:
    parsed = parse_helo(name)
    if parsed is not None:
        assert parsed.isprintable() and " " not in parsed


@given(HOSTILE, HOSTILE, st.sampled_from(["ENVID", "AUTH", "X-FOO", "SIZE"]))
def test_accepted_mail_parameters_are_printable(local: str, value: str, keyword: str) -> None:
    parsed = parse_mail_from(
        f"FROM:<{local}@client.test> SMTPUTF8 {keyword}={value}", esmtp=True, max_size=1000
    )
    if not isinstance(parsed, Reply):
        address, params = parsed
        assert unbroken(address) and unbroken(astuple(params))


@given(HOSTILE, HOSTILE)
def test_accepted_rcpt_parameters_are_printable(local: str, orcpt: str) -> None:
    parsed = parse_rcpt_to(
        f"TO:<{local}@example.test> ORCPT=rfc822;{orcpt}", esmtp=True, smtputf8=True
    )
    if not isinstance(parsed, Reply):
        address, params = parsed
        assert unbroken(address) and unbroken(astuple(params))
