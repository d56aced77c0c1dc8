"""Matching recorded server responses (Dovecot's, from real runs) against script lines."""

from __future__ import annotations

import pytest
from tests.conformance.imaptest.client import parse_response
from tests.conformance.imaptest.matcher import (
    MATCHED,
    GroupCheck,
    Matcher,
    UninitializedVariable,
)
from tests.conformance.imaptest.script import CommandGroup, parse_script


def group_of(body: str, header: str = "") -> CommandGroup:
    return parse_script(f"{header}\n{body}").groups[0]


def check(body: str, responses: list[str], *, matcher: Matcher | None = None,
          header: str = "", tag: str = "1.1") -> list[str]:
    """The failures of the script's first group given these server lines (last: tagged)."""
    group = group_of(body, header)
    script_ignores = "ignore_extra_untagged: no" not in header
    group_check = GroupCheck(matcher or Matcher(), group, script_ignores, tag=tag)
    for line in responses:
        response = parse_response(line + "\r\n")
        if response.is_untagged:
            group_check.untagged(response.args)
        else:
            reply = group.commands[0].reply
            assert reply is not None
            group_check.tagged(reply, response.args, response.tag)
    return group_check.finish()


DONE = "1.1 OK Fetch completed (0.001 + 0.000 secs)."


def test_variables_bind_then_must_agree() -> None:
    matcher = Matcher()
    assert check("ok fetch 1:2 uid\n* 1 fetch (uid $uid1)\n* 2 fetch (uid $uid2)\n",
                 ["* 1 FETCH (UID 7)", "* 2 FETCH (UID 9)", DONE], matcher=matcher) == []
    assert matcher.variables["uid1"] == "7" and matcher.variables["uid2"] == "9"
    failures = check("ok fetch 1 uid\n* 1 fetch (uid $uid2)\n", ["* 1 FETCH (UID 7)", DONE],
                     matcher=matcher)
    assert failures and failures[0].startswith("Missing 1 untagged replies")
    assert "first expanded: 1 fetch ( uid 9)" in failures[0]  # directives dropped


def test_fetch_items_in_any_order_and_flags_ignore_recent() -> None:
    body = "ok fetch 1 (uid flags)\n* 1 fetch (uid $u flags (\\seen))\n"
    assert check(body, ["* 1 FETCH (FLAGS (\\Seen \\Recent) UID 4)", DONE]) == []
    assert check(body, ["* 1 FETCH (FLAGS (\\Seen \\Flagged) UID 4)", DONE]) != []
    assert check(body, ["* 1 FETCH (FLAGS () UID 4)", DONE]) != []


def test_explicit_extra_allows_other_flags() -> None:
    body = "ok fetch 1 flags\n* 1 fetch (flags ($!unordered $!extra \\seen))\n"
    assert check(body, ["* 1 FETCH (FLAGS (\\Flagged \\Seen))", DONE]) == []


def test_ban_forbids_a_named_extra() -> None:
    body = "ok list \"\" *\n* list ($!unordered $!ban=\\noselect) $sep $mailbox\n"
    matcher = Matcher(variables={"mailbox": "imaptest"})
    assert check(body, ['* LIST (\\HasNoChildren) "/" imaptest', DONE], matcher=matcher) == []
    failures = check(body, ['* LIST (\\Noselect \\HasChildren) "/" imaptest', DONE],
                     matcher=Matcher(variables={"mailbox": "imaptest"}))
    assert failures and "Missing 1" in failures[0]


def test_tagged_reply_is_a_prefix() -> None:
    body = "select $mailbox\nok [read-write]\n"
    matcher = Matcher(variables={"mailbox": "imaptest"})
    assert check(body, ["1.1 OK [READ-WRITE] Select completed (0.002 + 0.000 secs)."],
                 matcher=matcher) == []
    failures = check(body, ["1.1 OK [READ-ONLY] Examine completed."], matcher=matcher)
    assert failures == ["Expected tagged reply 'ok [read-write]', got "
                        "'OK [READ-ONLY] Examine completed.'"]
    assert check("ok noop\n", ["1.1 NO [TRYCREATE] Mailbox doesn't exist"]) != []
    assert check('"" noop\n', ["1.1 BAD Error in IMAP command"]) == []


def test_untagged_ok_with_code_binds_inside_brackets() -> None:
    matcher = Matcher()
    body = "ok select x\n* ok [uidvalidity $uidvalidity]\n* ok [uidnext $uidnext]\n"
    responses = ["* OK [UIDVALIDITY 1796128512] UIDs valid",
                 "* OK [UIDNEXT 3] Predicted next UID", DONE]
    assert check(body, responses, matcher=matcher) == []
    assert (matcher.variables["uidvalidity"], matcher.variables["uidnext"]) == ("1796128512", "3")


def test_dollar_bracket_skips_a_response_code() -> None:
    body = "ok noop\n* ok [capability $] done\n"
    banner = "* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE] done"
    assert check(body, [banner, DONE]) == []


def test_dollar_matches_any_string_or_list_but_not_nil() -> None:
    body = "ok fetch 1 envelope\n* 1 fetch (envelope ($ $ $))\n"
    assert check(body, ['* 1 FETCH (ENVELOPE ("d" ("x") "s"))', DONE]) == []
    assert check(body, ['* 1 FETCH (ENVELOPE ("d" NIL "s"))', DONE]) != []


def test_case_variable_compares_exactly() -> None:
    body = 'ok list "" *\n* list () $sep ${case:INBOX}\n'
    assert check(body, ['* LIST (\\HasNoChildren) "/" INBOX', DONE]) == []
    assert check(body, ['* LIST (\\HasNoChildren) "/" Inbox', DONE]) != []
    assert check('ok list "" *\n* list () $sep inbox\n',
                 ['* LIST (\\HasNoChildren) "/" INBOX', DONE]) == []


def test_bound_values_compare_exactly() -> None:
    matcher = Matcher(variables={"name": "Box"})
    assert check('ok list "" *\n* list () $s $name\n', ['* LIST () "/" box', DONE],
                 matcher=matcher) != []


@pytest.mark.parametrize(("first", "second", "ok"), [
    (2, 5, True), (2, 6, True), (10, 13, True), (10, 100, True),
    (1, 5, False), (2, 4, False), (10, 12, False),
])
def test_modseq_variables_grow_by_the_gap(first: int, second: int, ok: bool) -> None:
    body = ("ok fetch 1:2 modseq\n* 1 fetch (modseq ($modseq2))\n"
            "* 2 fetch (modseq ($modseq5))\n")
    responses = [f"* 1 FETCH (MODSEQ ({first}))", f"* 2 FETCH (MODSEQ ({second}))", DONE]
    assert (check(body, responses) == []) is ok


def test_relative_sequences_follow_expunges() -> None:
    matcher = Matcher()
    matcher.start_group(4)
    body = "ok check\n* $1 expunge\n* $3 expunge\n"
    group = group_of(body)
    group_check = GroupCheck(matcher, group, True, tag="2.5")
    for line in ("* 1 EXPUNGE", "* 2 EXPUNGE"):
        group_check.untagged(parse_response(line + "\r\n").args)
        matcher.expunged(int(line.split()[1]))
    assert group_check.finish() == []
    assert [matcher.relative_seq(n) for n in (1, 2, 3, 4, 5)] == [
        "<expunged>", "1", "<expunged>", "2", "<out of range>"]


def test_must_not_lines_fail_when_they_match() -> None:
    failures = check("ok noop\n! bye\n", ["* BYE Server shutting down.", "1.1 OK NOOP completed."])
    assert failures and failures[0].startswith("Unexpected untagged match")


def test_may_lines_need_not_come() -> None:
    assert check("ok noop\n? 1 recent\n", ["1.1 OK NOOP completed."]) == []


def test_extra_untagged_fail_only_when_asked() -> None:
    body = "ok fetch 1 uid\n* 1 fetch (uid $u)\n"
    responses = ["* 1 FETCH (UID 4)", "* 3 EXISTS", DONE]
    assert check(body, responses) == []
    failures = check(body, responses, header="ignore_extra_untagged: no\n")
    assert failures == ["1 unexpected untagged replies received, first: 3 EXISTS"]


def test_failed_line_unbinds_what_it_bound() -> None:
    matcher = Matcher()
    body = "ok fetch 1 (uid flags)\n* 1 fetch (uid $u flags (\\deleted))\n"
    check(body, ["* 1 FETCH (UID 4 FLAGS (\\Seen))", DONE], matcher=matcher)
    assert "u" not in matcher.variables


def test_one_response_satisfies_several_lines() -> None:
    body = 'ok list "" ""\n* list () $sep $root\n* list (\\noselect) $sep $root\n'
    matcher = Matcher()
    assert check(body, ['* LIST (\\Noselect) "/" ""', DONE], matcher=matcher) == []
    assert (matcher.variables["sep"], matcher.variables["root"]) == ("/", "")


def test_tag_variable_is_the_commands_tag() -> None:
    body = "ok search return (all) 1:*\n* esearch (tag $tag) all 1:3\n"
    assert check(body, ['* ESEARCH (TAG "4.7") ALL 1:3', DONE], tag="4.7") == []
    assert check(body, ['* ESEARCH (TAG "4.6") ALL 1:3', DONE], tag="4.7") != []


def test_literal_response_matches_quoted_expectation() -> None:
    body = 'ok fetch 1 body[]\n* 1 fetch (body[] "hi")\n'
    assert check(body, ["* 1 FETCH (BODY[] {2}\r\nhi)", DONE]) == []


def test_strings_end_at_the_first_nul() -> None:
    matcher = Matcher()
    assert matcher.match_args(parse_response("* x\0abc\r\n").args,
                              parse_response("* x\0zz\r\n").args) == MATCHED


def test_expand_commands() -> None:
    matcher = Matcher(variables={"mailbox": "imaptest", "uid1": "3"})
    assert matcher.expand("copy $uid1 ${mailbox}2 $$x") == "copy 3 imaptest2 $x"
    assert matcher.expand("list ($!unordered a)") == "list ( a)"
    matcher.start_group(2)
    assert matcher.expand("fetch $2 uid") == "fetch 2 uid"
    with pytest.raises(UninitializedVariable, match="nosuch"):
        matcher.expand("fetch $nosuch")
    assert matcher.expand("fetch $nosuch", skip_uninitialized=True) == "fetch $"


def test_unordered_chains_count_what_matched() -> None:
    matcher = Matcher()
    expected = parse_script("\nok noop\n* status x (messages 1 unseen 0)\n") \
        .groups[0].untagged[0].args
    got = parse_response("* STATUS x (UNSEEN 0 MESSAGES 2)\r\n").args
    assert matcher.match_args(expected, got) == 2  # name and mailbox, then the list failed
    got = parse_response("* STATUS x (UNSEEN 0 MESSAGES 1 RECENT 0)\r\n").args
    assert matcher.match_args(expected, got) == MATCHED
