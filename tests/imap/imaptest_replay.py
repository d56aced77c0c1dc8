"""Dovecot's scripted SEARCH, SORT and THREAD tests replayed against poczta's pure modules.

No server is involved: the script's mbox fixture is parsed with `parse_message` into
`MessageMeta`s (internal dates from the ``From `` lines), each command is parsed by
poczta's own IMAP parser, and a small in-memory mailbox answers it: SEARCH, SORT and
THREAD through `search_eval`, `sort`, `thread` and `esearch`, and STORE, EXPUNGE,
APPEND and FETCH (UID, RFC822.SIZE) as simply as the scripts need. The responses are
encoded by poczta's encoder and checked with the scripted-test runner's own matcher.

Messages appended before the script's first command count as \\Recent for the replay,
as they would for the first session selecting the mailbox under RFC 3501; poczta's
session itself passes no recent set (see `search_eval`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from poczta.imap.commands import Expunge, Fetch, Search, Sort, Store, StoreMode, Thread
from poczta.imap.encoder import FetchData, ThreadData, search_data, sort_data
from poczta.imap.esearch import esearch_response, search_return
from poczta.imap.fetch import FetchItem
from poczta.imap.lexer import ParseError
from poczta.imap.parser import parse_command
from poczta.imap.search_eval import (
    SearchContext,
    evaluate,
    highest_modseq,
    needs_body,
    uids_of,
    uses_modseq,
)
from poczta.imap.search_text import body_text
from poczta.imap.sort import sort_numbers
from poczta.imap.thread import thread_numbers
from poczta.message import parse_message
from poczta.store.base import MessageMeta
from tests.conformance.imaptest.args import parse_args
from tests.conformance.imaptest.matcher import GroupCheck, Matcher
from tests.conformance.imaptest.mbox import MessageSource, read_mbox
from tests.conformance.imaptest.script import CommandGroup, Script, StartState, load_script

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPTS_DIR = REPO_ROOT.parent / "shared" / "conformance" / "imap" / "imaptest" / "tests"
ABSENT = f"imaptest scripts not found at {SCRIPTS_DIR} (kept outside the repository)"

# The scripts about SEARCH, SORT and THREAD, and why some cannot be replayed here.
REPLAYED_PREFIXES = ("search-", "sort-", "thread", "esearch", "esort")
NOT_REPLAYED = {
    "CONTEXT=SEARCH": "CONTEXT=SEARCH (PARTIAL, UPDATE) is not parsed by poczta yet",
    "CONTEXT=SORT": "CONTEXT=SORT (PARTIAL) is not parsed by poczta yet",
    "CONDSTORE": "CONDSTORE responses to STORE are the session's, not replayed here",
}
NOW = datetime.fromisoformat("2030-01-01T00:00:00+00:00")


def replayed_scripts() -> list[Path]:
    if not SCRIPTS_DIR.is_dir():
        return []
    return sorted(
        path for path in SCRIPTS_DIR.iterdir()
        if path.name.startswith(REPLAYED_PREFIXES) and path.suffix != ".mbox"
    )


def skip_reason(script: Script) -> str | None:
    for capability, reason in NOT_REPLAYED.items():
        if capability in script.capabilities:
            return reason
    return None


@dataclass
class StoredMessage:
    meta: MessageMeta
    raw: bytes


def make_meta(raw: bytes, uid: int, internal_date: datetime,
              flags: frozenset[str] = frozenset(), modseq: int = 1) -> MessageMeta:
    parsed = parse_message(raw)
    return MessageMeta(
        uid=uid, modseq=modseq, flags=flags, internal_date=internal_date, size=parsed.size,
        digest=hashlib.sha256(raw).hexdigest(), header_size=parsed.header_size,
        sent_date=parsed.date, subject=parsed.subject, envelope=parsed.envelope,
        search_headers=parsed.search_headers,
    )


@dataclass
class Mailbox:
    source: MessageSource
    messages: list[StoredMessage] = field(default_factory=list)
    next_uid: int = 1
    modseq: int = 1
    recent: set[int] = field(default_factory=set)

    def append(self, flags: frozenset[str] = frozenset()) -> None:
        item = self.source.next()
        raw = item.text.encode("latin-1")
        date = datetime.strptime(item.internaldate, "%d-%b-%Y %H:%M:%S %z")
        self.modseq += 1
        meta = make_meta(raw, self.next_uid, date, flags, self.modseq)
        self.messages.append(StoredMessage(meta, raw))
        self.next_uid += 1

    @property
    def metas(self) -> list[MessageMeta]:
        return [message.meta for message in self.messages]

    def numbers(self, sequence: object, uid: bool) -> list[int]:
        from poczta.imap.sequence import SequenceSet

        assert isinstance(sequence, SequenceSet)
        if uid:
            largest = self.messages[-1].meta.uid if self.messages else 0
            return [n for n, m in enumerate(self.metas, 1) if sequence.contains(m.uid, largest)]
        return list(sequence.numbers(len(self.messages)))


class Replay:
    """One script's mailbox and matcher; `run_group` answers one command group."""

    def __init__(self, script: Script) -> None:
        assert script.mbox is not None
        self.script = script
        self.mailbox = Mailbox(MessageSource(read_mbox(script.mbox)))
        self.matcher = Matcher()
        self.matcher.variables["mailbox"] = "imaptest"
        self.saved: frozenset[int] = frozenset()
        self.tag_number = 0
        if script.state >= StartState.APPENDED:
            count = len(self.mailbox.source.messages) if script.messages is None \
                else script.messages
            for _ in range(count):
                self.mailbox.append()
        self.mailbox.recent = {m.meta.uid for m in self.mailbox.messages}

    def run_group(self, group: CommandGroup) -> list[str]:
        check = GroupCheck(self.matcher, group, self.script.ignore_extra_untagged)
        for index, command in enumerate(group.commands):
            text = self.matcher.expand(command.text)
            self.tag_number += 1
            tag = f"t{self.tag_number}"
            if index == 0:
                check.tag = tag
            status, lines = self.answer(tag, text)
            for line in lines:
                check.untagged(parse_args(line.decode("latin-1").removeprefix("* ").rstrip()))
            if command.reply is not None:
                check.tagged(command.reply, parse_args(status), tag)
        return check.finish()

    def answer(self, tag: str, text: str) -> tuple[str, list[bytes]]:
        lower = text.lower()
        if lower.startswith(("select", "logout", "noop", "cancelupdate")):
            return "OK done", []
        if lower == "append" or lower.startswith("append "):
            flags = frozenset({"\\Seen"}) if "\\seen" in lower else frozenset()
            self.mailbox.append(flags)
            return "OK appended", [b"* %d EXISTS\r\n" % len(self.mailbox.messages)]
        try:
            command = parse_command([f"{tag} {text}".encode()], [])
        except ParseError as error:
            return f"BAD {error}", []
        return "OK done", self.respond(tag, command)

    def respond(self, tag: str, command: object) -> list[bytes]:
        if isinstance(command, Store):
            self.store(command)
            return []
        if isinstance(command, Expunge):
            return self.expunge()
        if isinstance(command, Fetch):
            return self.fetch(command)
        if isinstance(command, Search | Sort | Thread):
            return self.search(tag, command)
        raise AssertionError(f"the replay does not handle {command!r}")

    def store(self, command: Store) -> None:
        flags = frozenset(command.flags)
        for number in self.mailbox.numbers(command.sequence, command.uid):
            stored = self.mailbox.messages[number - 1]
            old = stored.meta.flags
            new = {StoreMode.REPLACE: flags, StoreMode.ADD: old | flags,
                   StoreMode.REMOVE: old - flags}[command.mode]
            self.mailbox.modseq += 1
            stored.meta = make_meta(stored.raw, stored.meta.uid, stored.meta.internal_date,
                                    new, self.mailbox.modseq)

    def expunge(self) -> list[bytes]:
        lines = []
        for number in range(len(self.mailbox.messages), 0, -1):
            if "\\Deleted" in self.mailbox.messages[number - 1].meta.flags:
                del self.mailbox.messages[number - 1]
                lines.append(b"* %d EXPUNGE\r\n" % number)
                self.matcher.expunged(number)
        return lines

    def fetch(self, command: Fetch) -> list[bytes]:
        lines = []
        wanted = {a.name for a in command.attributes if isinstance(a, FetchItem)}
        for number in self.mailbox.numbers(command.sequence, command.uid):
            meta = self.mailbox.messages[number - 1].meta
            items: list[tuple[str, int]] = [("UID", meta.uid)]
            if "RFC822.SIZE" in wanted:
                items.append(("RFC822.SIZE", meta.size))
            lines.append(FetchData(number, items).encode())
        return lines

    def search(self, tag: str, command: Search | Sort | Thread) -> list[bytes]:
        metas = self.mailbox.metas
        context = SearchContext(NOW, self.saved, frozenset(self.mailbox.recent))
        messages = self.mailbox.messages
        body = (lambda n: body_text(messages[n - 1].raw)) if needs_body(command.criteria) \
            else None
        numbers = evaluate(command.criteria, metas, context, body)
        if isinstance(command, Thread):
            threads = thread_numbers(command.algorithm, numbers, metas)
            if command.uid:
                raise AssertionError("UID THREAD is not replayed")
            return [ThreadData(threads).encode()]
        ordered = False
        if isinstance(command, Sort):
            numbers = sort_numbers(command.keys, numbers, metas)
            ordered = True
        shown = uids_of(numbers, metas) if command.uid else numbers
        if command.return_options is None:
            data = sort_data(shown) if isinstance(command, Sort) else search_data(shown)
            return [data.encode()]
        result = search_return(shown, command.return_options, ordered=ordered)
        if result.saved is not None:
            saved = result.saved if command.uid else uids_of(list(result.saved), metas)
            self.saved = frozenset(saved)
        modseq = highest_modseq(numbers, metas) if uses_modseq(command.criteria) else None
        response = esearch_response(tag, result, uid=command.uid, modseq=modseq)
        return [] if response is None else [response.encode()]


def replay(path: Path) -> tuple[Script, list[tuple[CommandGroup, list[str]]]]:
    """Every command group of the script at `path`, with its failures (none: it matched)."""
    script = load_script(path)
    runner = Replay(script)
    results = []
    for group in script.groups:
        if group.commands and group.commands[0].line == 0:
            continue  # the logout the script parser adds
        results.append((group, runner.run_group(group)))
    return script, results


def script_params(*prefixes: str) -> list[Any]:
    """pytest parameters: the replayed scripts starting with `prefixes`, or one skip."""
    paths = [path for path in replayed_scripts() if path.name.startswith(prefixes)]
    if not paths:
        return [pytest.param(None, marks=pytest.mark.skip(reason=ABSENT), id="absent")]
    return [pytest.param(path, id=path.name) for path in paths]


def check_script(path: Path) -> None:
    """Replay the script at `path`; fail with every mismatching group, skip if unsupported."""
    reason = skip_reason(load_script(path))
    if reason is not None:
        pytest.skip(reason)
    _, results = replay(path)
    failures = [f"{group.commands[0].text}: {' | '.join(problems)}"
                for group, problems in results if problems]
    assert not failures, "\n".join(failures)
