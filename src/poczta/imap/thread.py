"""THREAD: the ORDEREDSUBJECT and REFERENCES algorithms of RFC 5256 section 3.

`thread_numbers(algorithm, numbers, messages)` threads the messages a search matched
and returns the threads as `encoder.ThreadData` takes them: each thread a list of
sequence numbers (a chain, parent first) followed by lists for its branches; a thread
whose root is a missing message starts with branches.

REFERENCES follows the RFC's steps (derived from Jamie Zawinski's algorithm): message
ids from Message-ID, References (else the first id of In-Reply-To); containers for
every id seen, linked parent to child unless that would make a loop; a message
without references loses any parent it was given; dummy containers pruned; roots with
the same base subject gathered; siblings ordered by sent date. The sent date is the
Date: field's, or the internal date when there is none (as for SORT DATE); ties, at
every level, fall to the sequence number. Every walk over the containers uses an
explicit stack, so a deep reply chain costs no recursion.

A message whose Message-ID another message already has gets a unique id of its own.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from poczta.imap.basesubject import BaseSubject, base_subject, casemap_key
from poczta.imap.encoder import Thread
from poczta.imap.search_eval import SearchableMessage
from poczta.imap.sort import sent_instant

__all__ = ["THREAD_ALGORITHMS", "message_ids", "thread_numbers"]

THREAD_ALGORITHMS = ("ORDEREDSUBJECT", "REFERENCES")

_MESSAGE_ID = re.compile(r"<([^<>\s]+)>")


def message_ids(value: str | None) -> list[str]:
    """The message ids (`<...>`) in a header value, in order, without the brackets."""
    return _MESSAGE_ID.findall(value) if value else []


@dataclass(eq=False, slots=True)
class _Container:
    number: int = 0  # sequence number; 0 for a dummy (a message not in the set)
    parent: _Container | None = None
    children: list[_Container] = field(default_factory=list)
    key: tuple[float, int] = (0.0, 0)


def thread_numbers(
    algorithm: str, numbers: Sequence[int], messages: Sequence[SearchableMessage]
) -> list[Thread]:
    """The threads of the messages `numbers` (sequence numbers into `messages`)."""
    ordered = sorted(numbers)
    if algorithm == "ORDEREDSUBJECT":
        roots = _ordered_subject(ordered, messages)
    elif algorithm == "REFERENCES":
        roots = _references(ordered, messages)
    else:
        raise ValueError(f"unknown threading algorithm {algorithm}")
    return [_thread_value(root) for root in roots]


# --------------------------------------------------------------------------- ORDEREDSUBJECT


def _ordered_subject(numbers: list[int], messages: Sequence[SearchableMessage]) -> list[_Container]:
    keys = {
        number: (
            casemap_key(base_subject(messages[number - 1].subject).text),
            sent_instant(messages[number - 1]),
            number,
        )
        for number in numbers
    }
    roots: list[_Container] = []
    previous_subject: str | None = None
    for number in sorted(numbers, key=keys.__getitem__):
        subject, sent, _ = keys[number]
        container = _Container(number, key=(sent, number))
        if roots and subject == previous_subject:
            _link(roots[-1], container)
        else:
            roots.append(container)
        previous_subject = subject
    roots.sort(key=lambda root: root.key)
    return roots


# --------------------------------------------------------------------------- REFERENCES


def _link(parent: _Container, child: _Container) -> None:
    if child.parent is not None:
        child.parent.children.remove(child)
    child.parent = parent
    parent.children.append(child)


def _would_loop(parent: _Container, child: _Container) -> bool:
    """Whether `child` is `parent` or one of its ancestors."""
    node: _Container | None = parent
    while node is not None:
        if node is child:
            return True
        node = node.parent
    return False


def _references(numbers: list[int], messages: Sequence[SearchableMessage]) -> list[_Container]:
    table: dict[str, _Container] = {}
    for number in numbers:
        _add_message(table, number, messages[number - 1])
    roots = [container for container in table.values() if container.parent is None]
    roots = _prune(roots)
    roots = _group_by_subject(roots, messages)
    _sort_siblings(roots, messages)
    return roots


def _header(message: SearchableMessage, name: str) -> str | None:
    return next((value for key, value in message.search_headers if key == name), None)


def _add_message(table: dict[str, _Container], number: int, message: SearchableMessage) -> None:
    """Step 1: the message's container, and links along its references."""
    own = message_ids(message.envelope.message_id)
    message_id = own[0] if own else None
    container = table.get(message_id) if message_id is not None else None
    if container is None or container.number:
        container = _Container(number)
        # A message without an id, or with one already taken, gets one no id can equal.
        table[
            message_id if message_id is not None and message_id not in table else f"\0{number}"
        ] = container
    else:
        container.number = number
    references = message_ids(_header(message, "references"))
    if not references:
        references = message_ids(message.envelope.in_reply_to or _header(message, "in-reply-to"))
        references = references[:1]
    previous: _Container | None = None
    for reference in references:
        referenced = table.get(reference)
        if referenced is None:
            referenced = table[reference] = _Container()
        if (
            previous is not None
            and referenced.parent is None
            and not _would_loop(previous, referenced)
        ):
            _link(previous, referenced)
        previous = referenced
    if container.parent is not None and container.parent is not previous:
        container.parent.children.remove(container)
        container.parent = None
    if previous is not None and container.parent is None and not _would_loop(previous, container):
        _link(previous, container)


def _preorder(roots: Sequence[_Container]) -> Iterator[_Container]:
    stack = list(reversed(roots))
    while stack:
        container = stack.pop()
        yield container
        stack.extend(reversed(container.children))


def _prune(roots: list[_Container]) -> list[_Container]:
    """Step 4: dummies without children go, others give their children to their parent
    (at the top only when they have a single child)."""
    for container in reversed(list(_preorder(roots))):
        kept: list[_Container] = []
        for child in container.children:
            if child.number:
                kept.append(child)
                continue
            for grandchild in child.children:
                grandchild.parent = container
            kept.extend(child.children)
        container.children = kept
    top: list[_Container] = []
    for root in roots:
        if root.number or len(root.children) > 1:
            top.append(root)
        elif root.children:
            only = root.children[0]
            only.parent = None
            top.append(only)
    return top


def _subject_of(container: _Container, messages: Sequence[SearchableMessage]) -> BaseSubject:
    number = container.number or container.children[0].number
    return base_subject(messages[number - 1].subject)


def _group_by_subject(
    roots: list[_Container], messages: Sequence[SearchableMessage]
) -> list[_Container]:
    """Step 5: roots sharing a base subject are gathered under one."""
    subjects = [_subject_of(root, messages) for root in roots]
    table: dict[str, int] = {}  # casemapped base subject → index into roots
    for index, (root, subject) in enumerate(zip(roots, subjects, strict=True)):
        if not subject.text:
            continue
        name = casemap_key(subject.text)
        held_at = table.get(name)
        if (
            held_at is None
            or (not root.number and roots[held_at].number)
            or (
                subjects[held_at].reply_or_forward
                and not subject.reply_or_forward
                and roots[held_at].number
                and root.number
            )
        ):
            table[name] = index
    result: list[_Container | None] = list(roots)
    for index, subject in enumerate(subjects):
        current = result[index]
        if not subject.text or current is None:
            continue
        held_index = table[casemap_key(subject.text)]
        held = result[held_index]
        if held is None or held is current:
            continue
        result[index] = None
        result[held_index] = _merge(
            held, current, subject.reply_or_forward, subjects[held_index].reply_or_forward
        )
    return [root for root in result if root is not None]


def _merge(
    held: _Container, root: _Container, root_is_reply: bool, held_is_reply: bool
) -> _Container:
    """One root joins the root `held` of the same subject; the root that stays."""
    if not held.number and not root.number:
        for child in list(root.children):
            _link(held, child)
        return held
    if not held.number:
        _link(held, root)
        return held
    if not root.number:
        _link(root, held)
        return root
    if root_is_reply and not held_is_reply:
        _link(held, root)
        return held
    dummy = _Container()
    _link(dummy, held)
    _link(dummy, root)
    return dummy


def _sort_siblings(roots: list[_Container], messages: Sequence[SearchableMessage]) -> None:
    """Step 6: siblings by sent date, deepest first; a dummy sorts as its first child."""
    for container in reversed(list(_preorder(roots))):
        container.children.sort(key=lambda child: child.key)
        if container.number:
            message = messages[container.number - 1]
            container.key = (sent_instant(message), container.number)
        else:
            container.key = container.children[0].key if container.children else (0.0, 0)
    roots.sort(key=lambda root: root.key)


# --------------------------------------------------------------------------- output


def _thread_value(root: _Container) -> Thread:
    """The encoder's form: numbers of the chain, then one list per branch."""
    top: list[int | Thread] = []
    stack: list[tuple[_Container, list[int | Thread]]] = [(root, top)]
    while stack:
        container, out = stack.pop()
        while container.number and len(container.children) == 1:
            out.append(container.number)
            container = container.children[0]
        if container.number:
            out.append(container.number)
        if not container.number or len(container.children) > 1:
            for child in container.children:
                branch: list[int | Thread] = []
                out.append(branch)
                stack.append((child, branch))
    return top
