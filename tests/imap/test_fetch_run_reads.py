"""Which FETCHes have their messages' facts read with the mailbox's news: those naming
at most `READ_WITH_NEWS` messages by UID, without `*` or `$`."""

from __future__ import annotations

import pytest

from poczta.imap import commands as cmd
from poczta.imap.parser import parse_command
from poczta.imap.session.fetch_run import READ_WITH_NEWS, reads_with_news


def _fetch(line: str) -> cmd.Fetch:
    command = parse_command([line.encode()], [])
    assert isinstance(command, cmd.Fetch)
    return command


@pytest.mark.parametrize(
    ("line", "read"),
    [
        ("a UID FETCH 7 BODY.PEEK[]", True),
        (f"a UID FETCH 1:{READ_WITH_NEWS} (FLAGS)", True),
        (f"a UID FETCH 1:{READ_WITH_NEWS + 1} (FLAGS)", False),
        (f"a UID FETCH {READ_WITH_NEWS}:1 (FLAGS)", True),  # either order
        ("a UID FETCH " + ",".join(str(n * 100) for n in range(1, 18)) + " (FLAGS)", False),
        ("a UID FETCH 3,5,5,3 (FLAGS)", True),  # the same UIDs count once
        ("a UID FETCH 9:* (FLAGS)", False),
        ("a UID FETCH $ (FLAGS)", False),
        ("a FETCH 3 BODY.PEEK[]", False),  # by sequence number
    ],
)
def test_a_fetch_is_read_with_the_news_when_it_names_few_uids(line: str, read: bool) -> None:
    assert reads_with_news(_fetch(line)) is read
