"""The scripted-test parser: headers, the three command forms, literals, directives."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.conformance.imaptest.args import Arg, Kind, arg_list, atom, parse_args, quote, render
from tests.conformance.imaptest.runner import SCRIPTS_DIR
from tests.conformance.imaptest.script import (
    Existence,
    ScriptError,
    StartState,
    load_script,
    parse_script,
    script_paths,
)


def words(args: tuple[Arg, ...]) -> str:
    return render(args)


def test_header_defaults_and_values() -> None:
    plain = parse_script("\nok noop\n")
    assert (plain.state, plain.connections, plain.messages) == (StartState.SELECTED, 1, 0)
    assert plain.ignore_extra_untagged
    script = parse_script(
        "capabilities: ESEARCH CONDSTORE\nconnections: 2\nmessages: all\nstate: auth\n"
        "ignore_extra_untagged: no\nuser 2: $user2\n\n1 ok noop\n")
    assert script.capabilities == ("ESEARCH", "CONDSTORE")
    assert script.connections == 2
    assert script.messages is None
    assert script.state is StartState.AUTH
    assert not script.ignore_extra_untagged
    assert script.needs_user2 and script.users == {2: "$user2"}
    assert parse_script("messages: 4\n\nok noop\n").messages == 4


def test_unknown_header_names_the_line() -> None:
    with pytest.raises(ScriptError, match="t line 2: Unknown setting"):
        parse_script("state: auth\ncolour: blue\n\nok noop\n", name="t")


def test_method_one_reply_before_command() -> None:
    script = parse_script("\nok select $mailbox\n* 0 exists\n")
    group = script.groups[0]
    assert [c.text for c in group.commands] == ["select $mailbox"]
    assert words(group.commands[0].reply or ()) == "ok"
    assert [(u.existence, words(u.args)) for u in group.untagged] == [
        (Existence.MUST, "0 exists")]


def test_method_two_reply_with_prefix_after_untagged() -> None:
    script = parse_script("\nselect $mailbox\n* 2 exists\n! 3 exists\n? 1 recent\n"
                          "ok [read-write]\n")
    group = script.groups[0]
    assert words(group.commands[0].reply or ()) == "ok [read-write]"
    assert [u.existence for u in group.untagged] == [
        Existence.MUST, Existence.MUST_NOT, Existence.MAY]


def test_method_three_pipelines_one_group() -> None:
    script = parse_script("connections: 2\n\n2 tag1 status a (messages)\n"
                          "2 tag2 status b (messages)\n* status a (messages 0)\n"
                          "2 tag2 no\n2 tag1 ok\n1 ok noop\n")
    first, second = script.groups[0], script.groups[1]
    assert first.connection == 1
    assert [(c.tag, c.text, words(c.reply or ())) for c in first.commands] == [
        (1, "status a (messages)", "ok"), (2, "status b (messages)", "no")]
    assert second.connection == 0 and second.commands[0].text == "noop"


@pytest.mark.parametrize(("body", "error"), [
    ("1 tag1 noop\n2 tag1 ok\n", "Reply for wrong connection"),
    ("1 tag1 noop\n2 tag2 noop\n1 tag1 ok\n", "same connection"),
    ("noop\n", "Missing client index"),
    ("1 tag1 noop\n1 tag1 noop\n", "Tag reused"),
    ("1 tag1 noop\n1 tag3 ok\n", "Reply for unknown tag"),
])
def test_malformed_multi_connection_scripts(body: str, error: str) -> None:
    with pytest.raises(ScriptError, match=error):
        parse_script("connections: 2\n\n" + body)


def test_pending_reply_at_end_is_an_error() -> None:
    with pytest.raises(ScriptError, match="Missing reply"):
        parse_script("\nselect inbox\n* 1 exists\n")


def test_logout_added_unless_the_script_says_goodbye() -> None:
    added = parse_script("\nok noop\n").groups[-1]
    assert (added.connection, added.commands[0].text, added.commands[0].line) == (0, "logout", 0)
    bye = parse_script("\nok noop\n* bye\n")
    assert bye.groups[-1].expects_bye and len(bye.groups) == 1
    assert len(parse_script("\nok logout\n").groups) == 1
    with pytest.raises(ScriptError, match=r"\? BYE"):
        parse_script("\nok noop\n? bye\n")


def test_multiline_literal_becomes_crlf_literal() -> None:
    script = parse_script("\nok append $mailbox {{{\nSubject: a\n\nbody\n}}}\n")
    text = script.groups[0].commands[0].text
    assert text == "append $mailbox {18}\r\nSubject: a\r\n\r\nbody"


def test_two_literals_on_one_line() -> None:
    script = parse_script("\nok append box {{{\nx\n}}} {{{\nyz\n}}}\n")
    assert script.groups[0].commands[0].text == "append box {1}\r\nx {2}\r\nyz"


def test_binary_literal_keeps_the_file_line_ends() -> None:
    script = parse_script("\nok append box ~{{{\na\r\nb\n\n}}}\n")
    assert script.groups[0].commands[0].text == "append box ~{5}\r\na\r\nb\n"


def test_literal_inside_an_expected_reply() -> None:
    script = parse_script("\nok fetch 1 body[]\n* 1 fetch (body[] {{{\nhi\n}}})\n")
    fetch_list = script.groups[0].untagged[0].args[2]
    literal = fetch_list.items[-1]
    assert (literal.kind, literal.text) == (Kind.LITERAL, "hi")


def test_default_directives_for_fetch_and_its_flags() -> None:
    args = parse_script("\nok fetch 1 (uid flags)\n* 1 fetch (uid 5 flags (\\seen))\n") \
        .groups[0].untagged[0].args
    fetch_items = args[2].items
    assert fetch_items[0] == atom("$!unordered=2")
    flags = fetch_items[-1].items
    assert [a.text for a in flags[:3]] == ["$!unordered", "$!noextra", "$!ignore=\\recent"]
    assert flags[-1] == atom("\\seen")


@pytest.mark.parametrize(("line", "first"), [
    ("* list (\\noselect) \"/\" x", "$!unordered"),
    ("* lsub () \"/\" x", "$!unordered"),
    ("* status x (messages 1)", "$!unordered=2"),
])
def test_default_directives_for_list_lsub_status(line: str, first: str) -> None:
    args = parse_script(f"\nok noop\n{line}\n").groups[0].untagged[0].args
    lists = [a for a in args if a.kind is Kind.LIST]
    assert lists[0].items[0] == atom(first)


def test_explicit_directives_replace_the_defaults() -> None:
    args = parse_script("\nok fetch 1 flags\n* 1 fetch (flags ($!extra))\n") \
        .groups[0].untagged[0].args
    fetch_items = args[2].items
    assert fetch_items[0] == atom("$!unordered=2")
    assert fetch_items[-1].items == (atom("$!extra"),)


@pytest.mark.parametrize(("line", "error"), [
    ("* list ($!sideways) \"/\" x", "Unknown directive"),
    ("* 1 fetch ($!unordered=2 uid)", "chain size=2"),
    ("* list ($!unordered=x) \"/\" x", "Broken"),
])
def test_bad_directives(line: str, error: str) -> None:
    with pytest.raises(ScriptError, match=error):
        parse_script(f"\nok noop\n{line}\n")


def test_ifenv_blocks() -> None:
    text = "\n!ifenv HAVE_X\nok one\n!else\nok two\n!endif\n!ifnenv HAVE_X\nok three\n!endif\n"
    with_x = parse_script(text, env={"HAVE_X": "1"})
    without = parse_script(text, env={})
    assert [g.commands[0].text for g in with_x.groups] == ["one", "logout"]
    assert [g.commands[0].text for g in without.groups] == ["two", "three", "logout"]
    with pytest.raises(ScriptError, match="not closed"):
        parse_script("\n!ifenv X\nok noop\n", env={"X": "1"})


def test_comments_sleep_and_output() -> None:
    script = parse_script("# about\nstate: auth\n\n# a comment\nok noop\n!sleep 2s\n"
                          "!output hello $user\n")
    group = script.groups[0]
    assert (group.sleep_ms, group.output) == (2000, ["hello $user"])


def test_banner_check_group() -> None:
    script = parse_script("state: nonauth\n\n* ok [capability $]\nok noop\n")
    assert script.groups[0].is_banner_check
    assert words(script.groups[0].untagged[0].args) == "ok [capability $]"


def test_args_tokenizer_matches_the_reference_reading() -> None:
    assert parse_args("body[header.fields (subject)] {3}\r\nabc NIL nil \"a\\\"b\"") == (
        atom("body[header.fields"), arg_list(atom("subject")), atom("]"),
        Arg(Kind.LITERAL, "abc"), Arg(Kind.NIL), Arg(Kind.NIL), Arg(Kind.STRING, 'a"b'))
    assert parse_args("~foo ~{2}\r\nxy") == (atom("~foo"), Arg(Kind.LITERAL, "xy", binary=True))
    assert parse_args("a) b") == (atom("a)"), atom("b"))  # a top-level ')' is atom text


_atoms = st.text(alphabet="abcxyzABC0129.[]\\$!*%-_", min_size=1, max_size=8).filter(
    lambda text: text.upper() != "NIL")
_leaves = st.one_of(st.builds(atom, _atoms),
                    st.builds(lambda t: Arg(Kind.STRING, t), st.text("ab ()\"\\{}x", max_size=6)),
                    st.just(Arg(Kind.NIL)))
_args = st.recursive(_leaves, lambda inner: st.lists(inner, max_size=4).map(
    lambda items: arg_list(*items)), max_leaves=12)


@given(st.lists(_args, max_size=5))
def test_render_then_parse_gives_the_same_arguments(args: list[Arg]) -> None:
    assert parse_args(render(args)) == tuple(args)


def test_quote_escapes() -> None:
    assert quote('a"b\\c') == '"a\\"b\\\\c"'


@pytest.mark.skipif(not SCRIPTS_DIR.is_dir(),
                    reason=f"imaptest scripts not found at {SCRIPTS_DIR} (kept outside the repo)")
def test_every_shipped_script_parses() -> None:
    paths = script_paths(SCRIPTS_DIR)
    assert len(paths) > 50
    for path in paths:
        script = load_script(path, env={})
        assert script.groups, path.name
        assert script.mbox is not None and script.mbox.exists(), path.name
