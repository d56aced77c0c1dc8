"""A scripted IMAP test file read into a typed `Script`: header, command groups, replies.

The format is imaptest's (``scripted_test.md`` beside the scripts). Where that page is
silent this follows what the reference runner does, in particular:

- ``messages:`` absent means no messages are appended (``all`` appends the whole mbox);
- ``state: auth`` means logged in with every test mailbox deleted;
- a line ending in ``{{{`` opens a literal that runs to a line starting ``}}}``
  (``~{{{`` a binary one, whose line ends are kept as they are in the file);
- a tag is ``tagN``; a reply is ``ok``, ``no``, ``bad`` or ``""`` (any);
- each command group's untagged lines are ``*`` (must come), ``!`` (must not) or ``?``
  (may), and the group's lists get the documented default directives here, once;
- a script that never logs out gets a final ``logout`` on connection 1.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from pathlib import Path

from .args import Arg, ArgsError, Kind, arg_list, atom, parse_args

DEFAULT_MBOX = "default.mbox"
MAX_CONNECTIONS = 100
REPLY_WORDS = ("ok", "no", "bad", '""')
DIRECTIVE_NAMES = ("ordered", "noextra", "extra")
DIRECTIVE_PREFIXES = ("ignore=", "ban=")
FLAGS_DEFAULTS = ("$!unordered", "$!noextra", "$!ignore=\\recent",
                  "$!ignore=$HasAttachment", "$!ignore=$HasNoAttachment")


class ScriptError(ValueError):
    """A script the format does not allow; the message names the file and line."""


class StartState(IntEnum):
    """Where the runner leaves each connection before the first command."""

    NONAUTH = 0
    AUTH = 1  # logged in, every test mailbox deleted
    CREATED = 2
    APPENDED = 3
    SELECTED = 4


STATE_NAMES = {state.name.lower(): state for state in StartState}


class Existence(Enum):
    MUST = "*"
    MUST_NOT = "!"
    MAY = "?"


@dataclass
class Untagged:
    args: tuple[Arg, ...]
    existence: Existence
    line: int


@dataclass
class Command:
    line: int  # 0 for the logout the parser adds
    tag: int  # the script's tagN, 0 when untagged in the script
    text: str
    reply: tuple[Arg, ...] | None = None  # the expected tagged reply (prefix match)


@dataclass
class CommandGroup:
    """Commands sent together on one connection, with the untagged replies they expect."""

    connection: int  # 0-based
    commands: list[Command] = field(default_factory=list)
    untagged: list[Untagged] = field(default_factory=list)
    output: list[str] = field(default_factory=list)
    sleep_ms: int = 0
    expects_bye: bool = False

    @property
    def is_banner_check(self) -> bool:
        return not self.commands

    @property
    def pending(self) -> int:
        return sum(1 for command in self.commands if command.reply is None)


@dataclass
class Script:
    name: str
    mbox: Path | None
    capabilities: tuple[str, ...] = ()
    connections: int = 1
    users: dict[int, str] = field(default_factory=dict)  # 1-based connection → login
    messages: int | None = 0  # None: the whole mbox
    state: StartState = StartState.SELECTED
    ignore_extra_untagged: bool = True
    groups: list[CommandGroup] = field(default_factory=list)
    needs_user2: bool = False


def script_paths(directory: Path) -> list[Path]:
    """The test scripts in a directory, sorted, without their mbox fixtures."""
    return sorted(
        path for path in directory.iterdir()
        if path.is_file() and not path.name.startswith(".") and path.suffix != ".mbox"
    )


def load_script(path: Path, env: Mapping[str, str] | None = None) -> Script:
    mbox = path.with_name(path.name + ".mbox")
    if not mbox.exists():
        mbox = path.with_name(DEFAULT_MBOX)
    text = path.read_bytes().decode("latin-1")
    return parse_script(text, name=path.name, mbox=mbox, env=env)


def parse_script(text: str, *, name: str = "script", mbox: Path | None = None,
                 env: Mapping[str, str] | None = None) -> Script:
    script = Script(name=name, mbox=mbox)
    parser = _CommandParser(script, os.environ if env is None else env)
    header = True
    for number, line in _logical_lines(text, name):
        try:
            if header and line == "":
                header = False
            elif header:
                _parse_header_line(script, line)
            elif line != "":
                parser.feed(number, line)
        except (ScriptError, ArgsError) as error:
            raise ScriptError(f"{name} line {number}: {error}") from None
    parser.finish()
    _add_logout(script)
    return script


def _logical_lines(text: str, name: str) -> Iterator[tuple[int, str]]:
    """(first line number, line) with ``{{{`` ... ``}}}`` turned into literals; no comments."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    in_literal = False
    buffer = ""
    start = last_end = 0
    binary = False
    start_number = 0
    for number, line in enumerate(lines, 1):
        if not in_literal:
            start_number = number
            if line.startswith("#"):
                continue
            if not line.endswith("{{{"):
                yield number, line
                continue
            in_literal, binary = True, line.endswith("~{{{")
            buffer = line[: -4 if binary else -3]
        else:
            if not line.startswith("}}}"):
                buffer += line
                last_end = len(buffer)
                buffer += "\n" if binary else "\r\n"
                continue
            buffer = buffer[:last_end]
            size = len(buffer) - start
            buffer = buffer[:start] + ("~" if binary else "") + f"{{{size}}}\r\n" + buffer[start:]
            line = line[3:]
            if line.endswith("{{{"):
                binary = line.endswith("~{{{")
                buffer += line[: -4 if binary else -3]
                start = last_end = len(buffer)
                continue
            in_literal = False
            yield start_number, buffer + line
            continue
        start = last_end = len(buffer)
    if in_literal:
        raise ScriptError(f"{name}: multiline literal at line {start_number} not ended")


def _parse_header_line(script: Script, line: str) -> None:
    key, colon, value = line.partition(":")
    if not colon:
        raise ScriptError("Missing ':'")
    key, value = key.rstrip(" ").lower(), value.lstrip(" ")
    if key == "capabilities":
        script.capabilities = tuple(value.split())
    elif key == "connections":
        count = 2 if value == "n" else _leading_int(value)
        if not 0 < count <= MAX_CONNECTIONS:
            raise ScriptError("Too many connections")
        script.connections = count
    elif key == "ignore_extra_untagged":
        script.ignore_extra_untagged = value.startswith("y")
    elif key.startswith("user ") and key[5:].isdigit() and 0 < int(key[5:]) <= MAX_CONNECTIONS:
        if value in ("$user2", "${user2}"):
            script.needs_user2 = True
        script.users[int(key[5:])] = value
    elif key == "messages":
        script.messages = None if value == "all" else _leading_int(value)
    elif key == "state":
        if value.lower() not in STATE_NAMES:
            raise ScriptError("Unknown state value")
        script.state = STATE_NAMES[value.lower()]
    else:
        raise ScriptError("Unknown setting")


def _leading_int(text: str) -> int:
    digits = ""
    for char in text:
        if not char.isdigit():
            break
        digits += char
    return int(digits or 0)


def _existence(line: str) -> Existence | None:
    for existence in Existence:
        if line.startswith(existence.value + " "):
            return existence
    return None


def _split_reply(line: str) -> tuple[int, str | None, str]:
    """(tag, reply word or None, rest) from ``[tagN] [ok|no|bad|""] rest``."""
    tag = 0
    word, space, rest = line.partition(" ")
    if word[:3].lower() == "tag" and space and word[3:].isdigit() and int(word[3:]) > 0:
        tag, line = int(word[3:]), rest
        word, space, rest = line.partition(" ")
    if word.lower() in REPLY_WORDS:
        return tag, word, rest
    return tag, None, line


class _CommandParser:
    """Turns the body's lines into command groups, as the reference runner groups them."""

    def __init__(self, script: Script, env: Mapping[str, str]) -> None:
        self.script = script
        self.env = env
        self.group: CommandGroup | None = None
        self.skip = False
        self.ifenv: list[tuple[int, bool, bool]] = []  # (line, skip before, else seen)

    def feed(self, number: int, line: str) -> None:
        if self._preprocess(number, line) or self.skip:
            return
        group = self.group
        if group is not None:
            if line.startswith("!sleep "):
                group.sleep_ms = _interval_ms(line[7:])
                return
            if line.startswith("!output "):
                group.output.append(line[8:])
                return
            existence = _existence(line)
            if existence is not None:
                self._add_untagged(group, number, line[2:], existence)
                return
            if group.pending and self._try_reply(group, line):
                return
        self._start_command(number, line)

    def _preprocess(self, number: int, line: str) -> bool:
        for prefix, wanted in (("!ifenv ", True), ("!ifnenv ", False)):
            if line.startswith(prefix):
                present = line[len(prefix):] in self.env
                self.ifenv.append((number, self.skip, False))
                if present != wanted:
                    self.skip = True
                return True
        if line == "!else":
            if not self.ifenv:
                raise ScriptError("!else without !ifenv")
            opened, skip_before, else_seen = self.ifenv[-1]
            if else_seen:
                raise ScriptError("!else already seen")
            self.ifenv[-1] = (opened, skip_before, True)
            if not skip_before:
                self.skip = not self.skip
            return True
        if line == "!endif":
            if not self.ifenv:
                raise ScriptError("!endif without !ifenv")
            self.skip = self.ifenv.pop()[1]
            return True
        return False

    def _connection_prefix(self, line: str) -> tuple[int, str]:
        """(1-based connection or 0, the line without it) for multi-connection scripts."""
        if self.script.connections <= 1:
            return 0, line
        word, _, rest = line.partition(" ")
        if word.isdigit() and int(word) > 0:
            return int(word), rest
        return 0, line

    def _try_reply(self, group: CommandGroup, line: str) -> bool:
        connection, rest = self._connection_prefix(line)
        tag, word, _ = _split_reply(rest)
        if word is None:
            return False
        if self.script.connections > 1:
            if connection == 0:
                raise ScriptError("Missing client index")
            if connection - 1 != group.connection:
                raise ScriptError("Reply for wrong connection")
        command = next((c for c in group.commands if c.tag == tag), None)
        if command is None:
            raise ScriptError("Reply for unknown tag")
        if command.reply is not None:
            raise ScriptError("Command already has a reply")
        args = parse_args(rest)
        command.reply = args[1:] if tag else args
        return True

    def _start_command(self, number: int, line: str) -> None:
        script = self.script
        group = self.group
        if group is None or group.pending == 0:
            group = CommandGroup(connection=0)
            self.group = group
            script.groups.append(group)
        if script.connections > 1:
            connection, line = self._connection_prefix(line)
            if connection == 0:
                raise ScriptError("Missing client index")
            if connection > MAX_CONNECTIONS:
                raise ScriptError("Too many connections")
            if group.commands and group.connection != connection - 1:
                raise ScriptError("All pipelined commands must use the same connection")
            group.connection = connection - 1
            script.connections = max(script.connections, connection)
        tag, word, line = _split_reply(line)
        if tag == 0:
            if group.pending:
                raise ScriptError("Missing reply from previous command group")
        elif any(command.tag == tag for command in group.commands):
            raise ScriptError("Tag reused within command group")
        existence = _existence(line)
        if not group.commands and existence is not None:
            self._add_untagged(group, number, line[2:], existence)
            return
        reply = None if word is None else (atom("" if word == '""' else word.lower()),)
        group.commands.append(Command(line=number, tag=tag, text=line, reply=reply))

    def _add_untagged(self, group: CommandGroup, number: int, text: str,
                      existence: Existence) -> None:
        args = parse_args(text)
        name = reply_name(args)
        args = with_default_directives(args, name)
        if name[:3].lower() == "bye":
            if existence is Existence.MAY:
                raise ScriptError("? BYE not currently supported")
            if existence is Existence.MUST:
                group.expects_bye = True
        group.untagged.append(Untagged(args=args, existence=existence, line=number))

    def finish(self) -> None:
        if self.group is None:
            raise ScriptError(f"{self.script.name}: No commands in file")
        missing = next((c for c in self.group.commands if c.reply is None), None)
        if missing is not None:
            raise ScriptError(f"{self.script.name}: Missing reply for the command "
                              f"at line {missing.line}")
        if self.ifenv:
            raise ScriptError(f"{self.script.name}: !ifenv at line {self.ifenv[0][0]} "
                              "not closed with !endif")


def _interval_ms(text: str) -> int:
    text = text.strip()
    for suffix, scale in (("msecs", 1), ("ms", 1), ("secs", 1000), ("s", 1000)):
        if text.endswith(suffix) and text[: -len(suffix)].strip().isdigit():
            return int(text[: -len(suffix)]) * scale
    if text.isdigit():
        return int(text) * 1000
    raise ScriptError(f"Invalid !sleep value {text}")


def _add_logout(script: Script) -> None:
    for group in script.groups:
        if group.expects_bye or any(c.text.lower() == "logout" for c in group.commands):
            return
    script.groups.append(CommandGroup(
        connection=0, commands=[Command(line=0, tag=0, text="logout", reply=(atom("ok"),))]
    ))


def reply_name(args: tuple[Arg, ...]) -> str:
    """The response's name: its first atom, or the second after a number or ``$var``."""
    first = _atom_text(args, 0)
    if first is None:
        return ""
    if first.startswith("$") or first[:1].isdigit():
        return _atom_text(args, 1) or ""
    return first


def _atom_text(args: tuple[Arg, ...], index: int) -> str | None:
    if index >= len(args):
        return None
    arg = args[index]
    return "NIL" if arg.kind is Kind.NIL else arg.atom


@dataclass
class _ListPlace:
    """Where a list sits in an untagged line, for choosing its default directives."""

    parent: _ListPlace | None
    index: int  # position in the parent list (within the chain, for chained parents)
    prev_atom: str | None = None
    chain: int = 1


def with_default_directives(args: tuple[Arg, ...], name: str) -> tuple[Arg, ...]:
    """The line with each list's directives checked and the documented defaults added."""
    return _directives(args, _ListPlace(parent=None, index=0), name.lower())


def _directives(items: tuple[Arg, ...], place: _ListPlace, name: str) -> tuple[Arg, ...]:
    explicit = 0
    for item in items:
        text = item.atom
        if text is None or not text.startswith("$!"):
            break
        place.chain = _check_directive(text[2:], place.chain)
        explicit += 1
    if not explicit:
        items = tuple(atom(d) for d in _defaults(place, name)) + items
    leading = 0
    while leading < len(items) and (items[leading].atom or "").startswith("$!"):
        leading += 1
    if (len(items) - leading) % place.chain:
        raise ScriptError(f"Invalid list argument count, chain size={place.chain}")
    out: list[Arg] = []
    prev_atom: str | None = None
    for index, item in enumerate(items):
        text = "NIL" if item.kind is Kind.NIL else item.atom
        if text is not None:
            prev_atom = text.lower()
        if item.kind is Kind.LIST:
            child = _ListPlace(parent=place, prev_atom=prev_atom,
                               index=index if place.chain == 1 else index % place.chain)
            item = arg_list(*_directives(item.items, child, name))
        out.append(item)
    return tuple(out)


def _check_directive(body: str, chain: int) -> int:
    if body.startswith("unordered"):
        if body == "unordered":
            return chain
        if body.startswith("unordered=") and body[10:].isdigit():
            return int(body[10:])
        raise ScriptError("Broken $!unordered directive")
    if body in DIRECTIVE_NAMES or body.startswith(DIRECTIVE_PREFIXES):
        return chain
    raise ScriptError(f"Unknown directive: {body}")


def _defaults(place: _ListPlace, name: str) -> tuple[str, ...]:
    parent = place.parent
    if parent is None:
        return ()
    top_child = parent.parent is None and parent.index == 0
    if name in ("list", "lsub") and top_child and place.index == 1:
        return ("$!unordered",)
    if name in ("status", "fetch") and top_child and place.index == 2:
        return ("$!unordered=2",)
    grandparent = parent.parent
    if (name == "fetch" and grandparent is not None and grandparent.parent is None
            and grandparent.index == 0 and parent.index == 2 and place.prev_atom == "flags"):
        return FLAGS_DEFAULTS
    return ()
