"""Matching server responses against a script's expected lines, with `$variables`.

The rules are the reference runner's, where ``scripted_test.md`` leaves them open:

- strings compare case-insensitively, except a value taken from a bound variable and
  ``${case:text}``, which compare exactly;
- an unbound ``$name`` binds to the input up to the next literal character of the
  pattern (``$`` alone matches any string, or skips a whole list; ``$]`` skips atoms up to
  one holding ``]``); ``$N`` is the current sequence of the group's N-th message, kept up
  to date across EXPUNGEs; ``$modseqN`` must grow by at least the gap in N;
- a list without directives is ordered and exact; ``$!unordered[=n]`` finds each chain
  of n elements anywhere and allows extras unless ``$!noextra`` (then only the
  ``$!ignore=`` ones), while ``$!ban=`` forbids named extras;
- the last element of a tagged reply, or of an untagged OK/NO/BAD/BYE, is a prefix and
  the text after it is free;
- strings end at their first NUL, as the reference's C strings do (a binary literal
  is compared only up to it);
- one response may satisfy several expected lines; each expected line is satisfied once;
  variables bound while trying a line that then fails are unbound again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

from .args import Arg, Kind, ascii_upper, render, same_text
from .script import CommandGroup, Existence

MATCHED = 1 << 62  # a match count meaning "everything matched"
PREFIX_REPLIES = ("OK", "NO", "BAD", "BYE")
_VAR_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


class UninitializedVariable(ValueError):
    """A command used a `$variable` that no earlier response had bound."""


def _var_name(text: str, pos: int) -> tuple[str | None, int]:
    """The variable name at ``pos`` (just after ``$``) and the position after it."""
    if text.startswith("{", pos):
        close = text.find("}", pos + 1)
        if close < 0:
            return None, pos
        return text[pos + 1 : close], close + 1
    end = pos
    while end < len(text) and text[end] in _VAR_CHARS:
        end += 1
    return text[pos:end], end


@dataclass
class Matcher:
    """Variables and the sequence map one script's run shares across its matches."""

    variables: dict[str, str] = field(default_factory=dict)
    seqmap: list[int] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    modseq_index: int = 0
    modseq_value: int = 0

    def start_group(self, message_count: int) -> None:
        self.seqmap = list(range(1, message_count + 1))

    def expunged(self, seq: int) -> None:
        if seq > len(self.seqmap):
            return  # beyond what the group started with: came after an EXISTS
        for index in range(seq - 1, len(self.seqmap)):
            if self.seqmap[index] == seq:
                self.seqmap[index] = 0
            elif self.seqmap[index] > seq:
                self.seqmap[index] -= 1

    def relative_seq(self, number: int) -> str:
        if number == 0:
            return "<zero seq>"
        if number > len(self.seqmap):
            return "<out of range>"
        current = self.seqmap[number - 1]
        return str(current) if current else "<expunged>"

    def expand(self, text: str, *, skip_uninitialized: bool = False) -> str:
        """A command line with its variables put in (``$$`` is ``$``, directives dropped)."""
        out: list[str] = []
        pos = 0
        while pos < len(text):
            char = text[pos]
            if char != "$" or pos == len(text) - 1:
                out.append(char)
                pos += 1
                continue
            pos += 1
            if text[pos] == "$":
                out.append("$")
                pos += 1
            elif text[pos] == "!":
                while pos + 1 < len(text) and text[pos + 1] != " ":
                    pos += 1
                pos += 1
            else:
                name, pos = _var_name(text, pos)
                if name is None:
                    raise UninitializedVariable("Missing '}'")
                out.append(self._command_value(name, skip_uninitialized))
        return "".join(out)

    def _command_value(self, name: str, skip_uninitialized: bool) -> str:
        if name.isdigit():
            return self.relative_seq(int(name))
        value = self.variables.get(name)
        if value is not None:
            return value
        if skip_uninitialized:
            return "$"
        raise UninitializedVariable(f"Uninitialized variable: {name}")

    def expand_input(self, pattern: str, text: str) -> tuple[str | None, bool]:
        """The pattern as the input would have to read, binding unbound variables.

        Returns None when a fixed part already differs; the flag says whether the
        caller compares case-insensitively.
        """
        icase = True
        out: list[str] = []
        pos = cur = 0
        while pos < len(pattern):
            if pattern[pos] != "$" or pattern.startswith("$$", pos):
                pos += pattern[pos] == "$"
                if cur >= len(text) or ascii_upper(pattern[pos]) != ascii_upper(text[cur]):
                    return None, icase
                out.append(pattern[pos])
                pos, cur = pos + 1, cur + 1
                continue
            name, pos = _var_name(pattern, pos + 1)
            if name is None:
                return "", icase
            if name.isdigit():
                value = self.relative_seq(int(name))
            elif name.startswith("case:"):
                icase, value = False, name[5:]
            else:
                bound = self.variables.get(name) if name else None
                value = bound if bound is not None else self._bind(name, pattern, pos, text, cur)
            out.append(value)
            if not text.startswith(value, cur):
                return None, icase
            cur += len(value)
        return "".join(out), icase

    def _bind(self, name: str, pattern: str, pos: int, text: str, cur: int) -> str:
        stop, icase = self._stop_char(pattern, pos, text, cur)
        end = cur
        while end < len(text) and not (
            stop and (same_text(text[end], stop) if icase else text[end] == stop)
        ):
            end += 1
        value = text[cur:end]
        if not name:
            return value
        if name.startswith("modseq") and name[6:].isdigit():
            value = self._modseq(int(name[6:]), value)
            self.variables[name] = value  # kept on mismatch, so the failure shows it
            return value
        self.variables[name] = value
        self.added.append(name)
        return value

    def _stop_char(self, pattern: str, pos: int, text: str, cur: int) -> tuple[str, bool]:
        """Where an unbound variable's value ends: the pattern's next literal character."""
        if not pattern.startswith("$", pos) or pattern.startswith("$$", pos):
            return pattern[pos : pos + 1], True
        name, _ = _var_name(pattern, pos + 1)
        if name is None:
            return "", True
        if name.startswith("case:"):
            return name[5:6], False
        if name.isdigit():
            return self.relative_seq(int(name))[:1], True
        bound = self.variables.get(name) if name else None
        # an unbound variable next: this one takes nothing and that one the rest
        return (bound[:1] if bound is not None else text[cur : cur + 1]), True

    def _modseq(self, index: int, value: str) -> str:
        if not value.isdigit():
            return "$modseq-not-number"
        if self.modseq_index > index:
            return "$modseq-order-mismatch"
        number = int(value)
        at_least = self.modseq_value + (index - self.modseq_index)
        if number < at_least:
            value, number = f"$modseq-at-least-{at_least}", at_least
        self.modseq_index, self.modseq_value = index, number
        return value

    def match_args(self, match: Sequence[Arg], args: Sequence[Arg],
                   limit: int = MATCHED, prefix: bool = False) -> int:
        """How many leading elements matched, or MATCHED when all did."""
        count = index = 0
        for position, expected in enumerate(match):
            if limit == 0:
                break
            got = args[index] if index < len(args) else None
            if expected.kind is Kind.NIL:
                if got is None or got.kind is not Kind.NIL:
                    return count
            elif expected.kind is Kind.LIST:
                if got is None or got.kind is not Kind.LIST:
                    return count
                inner = self.match_list(expected.items, got.items)
                if inner != MATCHED:
                    return count + inner
            elif expected.text == "$" and got is not None and got.kind is Kind.LIST:
                pass
            elif expected.text == "$]":
                while index < len(args) and "]" not in (args[index].atom or "]"):
                    index += 1
            elif not self._match_string(expected.text, got,
                                        prefix and position == len(match) - 1):
                return count
            count, index, limit = count + 1, index + 1, limit - 1
        if prefix or index >= len(args) or limit == 0:
            return MATCHED
        return count

    def _match_string(self, pattern: str, got: Arg | None, prefix: bool) -> bool:
        text = None if got is None else got.astring
        if text is None:
            return False
        # the reference compares C strings: both sides end at their first NUL
        pattern, text = pattern.split("\0", 1)[0], text.split("\0", 1)[0]
        expanded, icase = self.expand_input(pattern, text)
        if expanded is None:
            return False
        if prefix:
            text = text[: len(expanded)]
        return same_text(text, expanded) if icase else text == expanded

    def match_list(self, match: Sequence[Arg], args: Sequence[Arg]) -> int:
        rules = _ListRules.read(match)
        match = match[rules.skip :]
        if not rules.unordered:
            return self.match_args(match, args)
        chain = rules.chain
        if len(args) % chain:
            return 0
        matched = [False] * len(args)
        found = 0
        for start in range(0, len(match), chain):
            for at in range(0, len(args), chain):
                if self.match_args(match[start:], args[at:], chain) == MATCHED:
                    matched[at] = True
                    break
            else:
                return found
            found += 1
        for at in range(0, len(args), chain):
            name = args[at].astring
            if matched[at] or name is None:
                continue
            if rules.noextra and not any(same_text(name, e) for e in rules.ignores):
                return found
            if not rules.noextra and any(same_text(name, e) for e in rules.bans):
                return found
        return MATCHED


@dataclass
class _ListRules:
    skip: int = 0  # leading directive atoms
    unordered: bool = False
    chain: int = 1
    noextra: bool = True
    ignores: list[str] = field(default_factory=list)
    bans: list[str] = field(default_factory=list)

    @classmethod
    def read(cls, match: Sequence[Arg]) -> _ListRules:
        rules = cls()
        noextra: bool | None = None
        for arg in match:
            text = arg.atom
            if text is None or not text.startswith("$!"):
                break
            body = text[2:]
            rules.skip += 1
            if body.startswith("unordered"):
                rules.unordered = True
                noextra = False if noextra is None else noextra
                if body.startswith("unordered="):
                    rules.chain = max(1, int(body[10:] or 1))
            elif body == "ordered":
                rules.unordered = False
            elif body in ("extra", "noextra"):
                noextra = body == "noextra"
            elif body.startswith("ignore="):
                rules.ignores.append(body[7:])
            elif body.startswith("ban="):
                rules.bans.append(body[4:])
        rules.noextra = True if noextra is None else noextra
        return rules


@dataclass
class GroupCheck:
    """One command group's responses checked as they arrive; `failures` says what failed."""

    matcher: Matcher
    group: CommandGroup
    ignore_extra: bool
    logging_out: bool = False
    tag: str | None = None  # the group's first command's tag, for $tag
    found: list[bool] = field(init=False)
    best: list[tuple[int, str]] = field(init=False)
    mismatches: int = 0
    first_extra: str | None = None
    failures: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.found = [False] * len(self.group.untagged)
        self.best = [(0, "")] * len(self.group.untagged)

    def untagged(self, args: Sequence[Arg]) -> None:
        if not self.group.untagged and (self.ignore_extra or self.logging_out):
            return
        first = args[0].atom if args else None
        prefix = first is not None and ascii_upper(first) in PREFIX_REPLIES
        matcher = self.matcher
        found_some = False
        matcher.added.clear()
        for index, expected in enumerate(self.group.untagged):
            if self.found[index]:
                continue
            count = self._with_tag(self.tag, partial(matcher.match_args, expected.args, args,
                                                     MATCHED, prefix))
            if count == MATCHED:
                if expected.existence is Existence.MUST_NOT:
                    self.failures.append(f"Unexpected untagged match:\nMatch: "
                                         f"{render(expected.args)}\nReply: {render(args)}")
                    return
                self.found[index] = found_some = True
                matcher.added.clear()
                continue
            if self.best[index][0] < count:
                self.best[index] = (count, render(args))
            for name in matcher.added:
                matcher.variables.pop(name, None)
            matcher.added.clear()
        if not found_some:
            self.mismatches += 1
            if not self.ignore_extra and self.first_extra is None:
                self.first_extra = render(args)

    def tagged(self, reply: Sequence[Arg], args: Sequence[Arg], tag: str) -> None:
        count = self._with_tag(tag, partial(self.matcher.match_args, reply, args, MATCHED, True))
        if count != MATCHED:
            self.failures.append(f"Expected tagged reply '{render(reply)}', got '{render(args)}'")

    def _with_tag(self, tag: str | None, match: Callable[[], int]) -> int:
        variables = self.matcher.variables
        if tag is not None:
            variables["tag"] = tag
        try:
            return match()
        finally:
            if tag is not None:
                variables.pop("tag", None)

    def finish(self) -> list[str]:
        """The group's failures, including expected replies that never came."""
        missing = [index for index, expected in enumerate(self.group.untagged)
                   if expected.existence is Existence.MUST and not self.found[index]]
        if missing:
            first = self.group.untagged[missing[0]]
            unexpanded = render(first.args)
            expanded = self.matcher.expand(unexpanded, skip_uninitialized=True)
            self.failures.append(
                f"Missing {len(missing)} untagged replies ({self.mismatches} mismatches)\n"
                f" - first unexpanded: {unexpanded}\n - first expanded: {expanded}\n"
                f" - best match: {self.best[missing[0]][1]}")
        if self.first_extra is not None:
            self.failures.append(f"{self.mismatches} unexpected untagged replies received, "
                                 f"first: {self.first_extra}")
        return self.failures
