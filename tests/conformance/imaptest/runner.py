"""Runs scripted IMAP tests against a server and reports PASS, FAIL or SKIP for each.

Before a script's first command the runner brings the server to the script's
``state:``: it connects the script's connections and logs them in, deletes and
unsubscribes every mailbox named like the test mailbox, creates it, appends the
fixture's messages and selects it on every connection, stopping at the state asked
for. A script whose ``capabilities:`` the server lacks is skipped, as is one that
needs a second user when none is given. A failure shows what the script expected
next to the exchange that happened.

    python -m tests.conformance.imaptest.runner --host H --port P --user U --password P \
        [--tls | --starttls] [script ...]
"""

from __future__ import annotations

import argparse
import sys
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from .args import Arg, ArgsError, Kind, parse_args, quote, render
from .client import ConnectionClosed, ImapError, Response, TlsMode
from .matcher import GroupCheck, Matcher, UninitializedVariable
from .mbox import MessageSource, read_mbox
from .script import Command, CommandGroup, Script, ScriptError, StartState, load_script
from .session import Session, SetupError, open_session

REPO_ROOT = Path(__file__).resolve().parents[3]
SCRIPTS_DIR = REPO_ROOT.parent / "shared" / "conformance" / "imap" / "imaptest" / "tests"


@dataclass(frozen=True)
class Server:
    host: str
    port: int
    user: str
    password: str
    tls: TlsMode = TlsMode.PLAIN
    user2: str | None = None
    password2: str | None = None
    mailbox: str = "imaptest"
    timeout: float = 30.0


class Outcome(Enum):
    PASS = "PASS"
    FAIL = "FAIL"
    SKIP = "SKIP"


@dataclass
class Result:
    name: str
    outcome: Outcome
    reason: str = ""
    details: list[str] = field(default_factory=list)
    output: list[str] = field(default_factory=list)  # the script's !output lines

    def summary(self) -> str:
        return f"{self.outcome.value} {self.name}" + (f": {self.reason}" if self.reason else "")


class _Abort(Exception):
    """The script cannot go on (a connection was lost or timed out)."""


def run_script(script: Script, server: Server) -> Result:
    run = ScriptRun(script, server)
    try:
        return run.run()
    finally:
        run.close()


def run_path(path: Path, server: Server) -> Result:
    try:
        script = load_script(path)
    except (OSError, ScriptError) as error:
        return Result(path.name, Outcome.FAIL, f"cannot read the script: {error}")
    return run_script(script, server)


class ScriptRun:
    def __init__(self, script: Script, server: Server) -> None:
        self.script = script
        self.server = server
        self.matcher = Matcher()
        self.sessions: list[Session] = []
        self.source = MessageSource(read_mbox(script.mbox)) if script.mbox else None
        self.result = Result(script.name, Outcome.PASS)

    def close(self) -> None:
        for session in self.sessions:
            session.conn.close()

    def run(self) -> Result:
        groups = list(self.script.groups)
        try:
            skip = self.prepare(groups)
        except (SetupError, ImapError) as error:
            return self._failed(f"initialization failed: {error}")
        if skip:
            return Result(self.script.name, Outcome.SKIP, skip)
        for number, group in enumerate(groups, 1):
            try:
                self.run_group(number, len(groups), group)
            except _Abort:
                break
        if self.result.details:
            self.result.outcome = Outcome.FAIL
        return self.result

    def _failed(self, reason: str) -> Result:
        return Result(self.script.name, Outcome.FAIL, reason)

    # --- preparation -------------------------------------------------------------

    def _login_for(self, number: int) -> tuple[str, str]:
        server = self.server
        wanted = self.script.users.get(number)
        if wanted in ("$user2", "${user2}") and server.user2 is not None:
            return server.user2, server.password2 or server.password
        return (wanted or server.user), server.password

    def prepare(self, groups: list[CommandGroup]) -> str | None:
        """Bring the server to the script's start state; a reason when the script skips."""
        script, server = self.script, self.server
        if script.needs_user2 and server.user2 is None:
            return "needs a second user (--user2)"
        for number in range(1, script.connections + 1):
            session = open_session(number, server.host, server.port, server.tls, server.timeout)
            self.sessions.append(session)
            banner = session.greet(server.host, server.tls)
            if number == 1 and groups and groups[0].is_banner_check:
                self._check_banner(groups.pop(0), banner)
        self._set_variables()
        if script.state is StartState.NONAUTH:
            return self._missing_capabilities(self.sessions[0])
        for number, session in enumerate(self.sessions, 1):
            session.login(*self._login_for(number))
        missing = self._missing_capabilities(self.sessions[0])
        if missing:
            return missing
        self._delete_test_mailboxes(self.sessions[0])
        if script.state >= StartState.CREATED and server.mailbox.upper() != "INBOX":
            self.sessions[0].expect_ok(f"CREATE {quote(server.mailbox)}", "CREATE")
        if script.state >= StartState.APPENDED:
            self._append_fixture(self.sessions[0])
        if script.state >= StartState.SELECTED:
            for session in self.sessions:
                session.expect_ok(f"SELECT {quote(server.mailbox)}", "SELECT")
        return None

    def _check_banner(self, group: CommandGroup, banner: Response) -> None:
        check = GroupCheck(self.matcher, group, self.script.ignore_extra_untagged)
        check.untagged(banner.args)
        self._record(0, 0, group, check.finish(), [f"S: {banner.line}"])

    def _missing_capabilities(self, session: Session) -> str | None:
        missing = [c for c in self.script.capabilities if not session.has(c)]
        if missing:
            return "server lacks " + " ".join(missing)
        return None

    def _set_variables(self) -> None:
        variables = self.matcher.variables
        for number in range(1, len(self.sessions) + 1):
            user, password = self._login_for(number)
            suffix = "" if number == 1 else str(number)
            name, at, domain = user.partition("@")
            variables["user" + suffix] = user
            variables["username" + suffix] = name
            variables["domain" + suffix] = domain if at else self.server.host
            variables["password" + suffix] = password
        variables["mailbox"] = self.server.mailbox
        variables["mailbox_url"] = urllib.parse.quote(self.server.mailbox, safe="/")

    def _delete_test_mailboxes(self, session: Session) -> None:
        pattern = quote(self.server.mailbox + "*")
        listed: dict[str, list[str]] = {"LIST": [], "LSUB": []}

        def collect(response: Response) -> None:
            args = response.args
            kind = (args[0].atom or "").upper() if args else ""
            if kind in listed and len(args) >= 4 and args[3].astring is not None:
                listed[kind].append(args[3].astring)

        for kind in listed:
            reply = session.simple(f'{kind} "" {pattern}', collect)
            if (reply.args[0].atom or "").upper() != "OK":
                raise SetupError(f"{kind} failed: {reply.line}")
        for command, names in (("DELETE", listed["LIST"]), ("UNSUBSCRIBE", listed["LSUB"])):
            for name in sorted(names, key=str.lower, reverse=True):
                reply = session.simple(f"{command} {quote(name)}")
                if (reply.args[0].atom or "").upper() == "BAD":
                    raise SetupError(f"{command} failed: {reply.line}")

    def _append_fixture(self, session: Session) -> None:
        source = self.source
        wanted = self.script.messages
        if source is None or wanted == 0:
            return
        appended = 0
        while (wanted is None and not source.at_end) or (wanted is not None and appended < wanted):
            session.expect_ok(self._append_command(None), "APPEND of the mbox fixture")
            appended += 1

    def _append_command(self, prefix: str | None) -> str:
        """APPEND of the fixture's next message, after the script's own arguments if any."""
        assert self.source is not None, "script has no mbox"
        message = self.source.next()
        if prefix is None:
            prefix = f"APPEND {quote(self.server.mailbox)} {quote(message.internaldate)}"
        return f"{prefix} {{{len(message.text)}}}\r\n{message.text}"

    # --- running ---------------------------------------------------------------

    def payload(self, text: str) -> str:
        """What a script command sends: APPENDs without a body get the fixture's next."""
        lower = text.lower()
        if lower == "append":
            return self._append_command(None)
        for word, replace in (("append ", False), ("replace ", True), ("uid replace ", True)):
            if lower.startswith(word) and not _append_has_body(text[len(word):], replace):
                return self._append_command(word.upper() + text[len(word):])
        return text

    def run_group(self, number: int, total: int, group: CommandGroup) -> None:
        session = self.sessions[group.connection]
        check = GroupCheck(self.matcher, group, self.script.ignore_extra_untagged)
        transcript: list[str] = []
        pending: dict[str, Command] = {}
        self.matcher.start_group(session.exists)

        def handle(response: Response) -> None:
            transcript.append(f"S: {response.line}")
            self._handle(session, check, pending, response)

        aborted = None
        try:
            self._send_commands(session, group, check, pending, transcript, handle)
            while pending:
                handle(session.conn.read_response())
        except ConnectionClosed as error:
            if not (group.expects_bye and session.seen_bye):
                aborted = f"Unexpected disconnection ({error})"
            elif any(c.reply is None or render(c.reply) != "" for c in pending.values()):
                check.failures.append("a command expected a tagged reply, but the server "
                                      "closed the connection after BYE (only \"\" allows it)")
        except ImapError as error:
            aborted = str(error)
        failures = check.finish()
        if aborted:
            failures.insert(0, aborted)
        self._record(number, total, group, failures, transcript)
        self.result.output.extend(self.matcher.expand(line, skip_uninitialized=True)
                                  for line in group.output)
        if group.sleep_ms:
            time.sleep(group.sleep_ms / 1000)
        if aborted:
            raise _Abort

    def _send_commands(self, session: Session, group: CommandGroup, check: GroupCheck,
                       pending: dict[str, Command], transcript: list[str],
                       handle: Callable[[Response], None]) -> None:
        if session.conn.closed:
            raise ConnectionClosed("the connection was already closed")
        for index, command in enumerate(group.commands):
            try:
                text = self.matcher.expand(command.text)
            except UninitializedVariable as error:
                check.failures.append(str(error))
                return
            tag = session.next_tag()
            if index == 0:
                check.tag = tag
            if command.line == 0 or text.lower() == "logout" or group.expects_bye:
                check.logging_out = True
            payload = self.payload(text)
            pending[tag] = command
            transcript.append(f"C: {tag} {_shown(payload)}")
            session.conn.send_command(tag, payload, literal_plus=session.literal_plus,
                                      on_response=handle)

    def _handle(self, session: Session, check: GroupCheck, pending: dict[str, Command],
                response: Response) -> None:
        if response.is_continuation:
            return
        if response.is_untagged:
            session.track(response)
            check.untagged(response.args)
            args = response.args
            if len(args) > 1 and (args[0].atom or "").isdigit() and \
                    (args[1].atom or "").upper() == "EXPUNGE":
                self.matcher.expunged(int(args[0].text))
            return
        command = pending.pop(response.tag, None)
        if command is None or command.reply is None:
            check.failures.append(f"Unexpected tagged reply: {response.line}")
            return
        check.tagged(command.reply, response.args, response.tag)

    def _record(self, number: int, total: int, group: CommandGroup, failures: list[str],
                transcript: list[str]) -> None:
        if not failures:
            return
        if not self.result.reason:
            self.result.reason = failures[0].splitlines()[0]
        first = group.commands[0] if group.commands else None
        where = f"line {first.line}" if first and first.line else "added logout"
        head = (f"command group {number}/{total} ({where}): "
                f"{_shown(first.text) if first else 'banner'}")
        body = [head] + [f" - failed: {failure}" for failure in failures]
        body.append("   expected:")
        body.extend(f"     {line}" for line in _expected_lines(group))
        body.append("   got:")
        body.extend(f"     {line}" for line in transcript)
        self.result.details.append("\n".join(body))


def _expected_lines(group: CommandGroup) -> list[str]:
    lines = [f"C: {f'tag{c.tag} ' if c.tag else ''}{_shown(c.text)}" for c in group.commands]
    lines.extend(f"{u.existence.value} {render(u.args)}" for u in group.untagged)
    lines.extend(f"tagged: {render(c.reply)}" for c in group.commands if c.reply is not None)
    return lines


def _shown(text: str, limit: int = 300) -> str:
    shown = text.replace("\r", "\\r").replace("\n", "\\n")
    return shown if len(shown) <= limit else shown[:limit] + f"... ({len(text)} chars)"


def _append_has_body(text: str, replace: bool) -> bool:
    """Whether APPEND/REPLACE arguments already carry the message (a literal or CATENATE)."""
    try:
        args = list(parse_args(text))
    except ArgsError:
        return False
    position = 1 if replace else 0  # past the mailbox (and REPLACE's message number)
    if len(args) <= position:
        return False
    if _kind_at(args, position + 1) is Kind.LIST:
        position += 1
    if _kind_at(args, position + 1) is Kind.STRING:
        position += 1
    follower = args[position + 1] if position + 1 < len(args) else None
    return follower is not None and (
        follower.kind is Kind.LITERAL or (follower.atom or "").lower() == "catenate")


def _kind_at(args: Sequence[Arg], index: int) -> Kind | None:
    return args[index].kind if index < len(args) else None


def main(argv: Sequence[str] | None = None) -> int:
    options = _arguments().parse_args(argv)
    tls = TlsMode.TLS if options.tls else TlsMode.STARTTLS if options.starttls else TlsMode.PLAIN
    server = Server(options.host, options.port, options.user, options.password, tls,
                    options.user2, options.password2, options.mailbox, options.timeout)
    directory = Path(options.scripts_dir)
    if not directory.is_dir():
        print(f"no scripts at {directory}", file=sys.stderr)
        return 2
    from .script import script_paths

    paths = [_script_path(directory, name) for name in options.scripts] or script_paths(directory)
    counts = dict.fromkeys(Outcome, 0)
    for path in paths:
        result = run_path(path, server)
        counts[result.outcome] += 1
        print(result.summary(), flush=True)
        if result.outcome is Outcome.FAIL and not options.quiet:
            for detail in result.details:
                print("    " + detail.replace("\n", "\n    "))
    print(f"total: {counts[Outcome.PASS]} passed, {counts[Outcome.FAIL]} failed, "
          f"{counts[Outcome.SKIP]} skipped")
    return 1 if counts[Outcome.FAIL] else 0


def _script_path(directory: Path, name: str) -> Path:
    path = Path(name)
    return path if path.exists() and path.is_file() else directory / name


def _arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tests.conformance.imaptest.runner",
                                     description="Run imaptest scripted tests against a server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=143)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--tls", action="store_true", help="TLS from the first byte")
    mode.add_argument("--starttls", action="store_true", help="STARTTLS before logging in")
    parser.add_argument("--user2", help="a second user, for scripts that need one")
    parser.add_argument("--password2")
    parser.add_argument("--mailbox", default="imaptest", help="the test mailbox (deleted!)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per response")
    parser.add_argument("--scripts-dir", default=str(SCRIPTS_DIR))
    parser.add_argument("-q", "--quiet", action="store_true", help="no failure details")
    parser.add_argument("scripts", nargs="*", help="script names or paths (default: all)")
    return parser


if __name__ == "__main__":
    sys.exit(main())
