"""A FETCH plan writes what the general path writes, for any attributes it takes, any
message and either dialect; the kept FETCH text is what FETCH would build."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from poczta.imap.encoder import FetchData
from poczta.imap.fetch import BodySection, FetchAttribute, FetchItem
from poczta.imap.fetch_cache import cached_item
from poczta.imap.fetch_plan import FetchPlan, plan_for
from poczta.imap.fetch_response import fetch_items, needs_structure
from poczta.imap.values import flag_atoms
from poczta.message import parse_message
from poczta.message.fetch_text import bodystructure_text, envelope_text
from poczta.message.imap_body import bodystructure, envelope_value
from poczta.message.imap_wire import Value, encode_value
from poczta.store.base import MessageMeta
from tests.imap.messages import _raw as raw_messages
from tests.imap.messages import meta_of

PLANNED = ["UID", "FLAGS", "MODSEQ", "RFC822.SIZE", "INTERNALDATE", "ENVELOPE", "BODYSTRUCTURE"]
_eight_bit = st.sampled_from(
    ["Subject: Zażółć gęślą\r\nFrom: Łukasz <l@x.test>\r\n\r\nhi\r\n".encode(), b""]
)


def _kept(raw: bytes, uid: int, *, keep: bool = True) -> MessageMeta:
    meta = meta_of(raw, uid=uid)
    parsed = parse_message(raw)
    return MessageMeta(
        meta.uid, meta.modseq, meta.flags, meta.internal_date, meta.size, meta.digest,
        meta.header_size, meta.sent_date, meta.subject, parsed.envelope,
        parsed.search_headers, parsed.structure,
        envelope_text(parsed.envelope) if keep else None,
        bodystructure_text(parsed.structure) if keep else None,
    )  # fmt: skip


Items = list[tuple[str, Value]]


def _flag_items(flags: list[str], modseq: int | None, with_uid: int | None) -> Items:
    """As a view gives them: UID under QRESYNC, FLAGS, MODSEQ under CONDSTORE."""
    items: Items = [("UID", with_uid)] if with_uid is not None else []
    items.append(("FLAGS", flag_atoms(flags)))
    if modseq is not None:
        items.append(("MODSEQ", [modseq]))
    return items


def _general(attributes: list[FetchAttribute], meta: MessageMeta, flag_items: Items,
             with_uid: bool, utf8: bool, data: bytes | None = None) -> bytes:
    root = meta.structure if needs_structure(attributes, meta, utf8) else None
    items = fetch_items(attributes, meta, root, data, flag_items, with_uid=with_uid, utf8=utf8)
    assert isinstance(items, list)
    return FetchData(7, items).encode(utf8)


_contents = st.sampled_from([
    BodySection(), BodySection(peek=True), BodySection(peek=True, partial=(0, 10)),
    BodySection(partial=(5, 100_000)), BodySection(peek=True, partial=(100_000, 3)),
    FetchItem("RFC822"),
])


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(raw_messages, _eight_bit).filter(bool),
    st.lists(st.sampled_from(PLANNED), max_size=9),
    st.booleans(),
    st.booleans(),
    st.booleans(),
    st.lists(st.sampled_from(["\\Seen", "\\Recent", "$Work", "\\Flagged"]), unique=True),
    st.one_of(st.none(), st.integers(1, 10**12)),
)
def test_a_plan_writes_what_the_general_path_writes(
    raw: bytes, names: list[str], with_uid: bool, utf8: bool, keep: bool, flags: list[str],
    modseq: int | None,
) -> None:
    meta = _kept(raw, uid=42, keep=keep)
    attributes: list[FetchAttribute] = [FetchItem(name) for name in names]
    flag_items = _flag_items(flags, modseq, 42 if modseq is not None and utf8 else None)
    plan = FetchPlan.make(attributes, with_uid=with_uid, utf8=utf8)
    assert plan is not None
    planned = plan.encode(7, meta.uid, meta, flag_items)
    general = _general(attributes, meta, flag_items, with_uid, utf8)
    if planned is None:  # only when the kept text is missing or wrong for this client
        kept = [meta.imap_envelope, meta.imap_bodystructure]
        assert {"ENVELOPE", "BODYSTRUCTURE"} & set(names)
        assert any(cached_item(text, utf8) is None for text in kept)
    else:
        assert planned == general
    if not plan.needs_facts:
        assert plan.encode(7, meta.uid, None, flag_items) == general


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(raw_messages, _eight_bit).filter(bool),
    st.lists(st.one_of(st.sampled_from(PLANNED).map(FetchItem), _contents), max_size=6),
    st.booleans(),
    st.booleans(),
    st.booleans(),
    st.lists(st.sampled_from(["\\Seen", "$Work"]), unique=True),
)
def test_a_plan_writes_the_message_as_the_general_path_does(
    raw: bytes, attributes: list[FetchAttribute], with_uid: bool, utf8: bool, seen_set: bool,
    flags: list[str],
) -> None:
    meta = _kept(raw, uid=42)
    flag_items = _flag_items(flags, None, None)
    plan = FetchPlan.make(attributes, with_uid=with_uid, utf8=utf8, seen_set=seen_set)
    assert plan is not None
    asked = list(attributes)
    if seen_set and FetchItem("FLAGS") not in asked:  # the session adds FLAGS so
        asked.append(FetchItem("FLAGS"))
    planned = plan.encode(7, meta.uid, meta, flag_items, raw)
    if planned is not None:
        assert planned == _general(asked, meta, flag_items, with_uid, utf8, raw)
    assert plan.needs_body == any(not isinstance(a, FetchItem) or a.name == "RFC822"
                                  for a in attributes)


def test_a_body_fetch_is_the_stored_octets_as_one_literal() -> None:
    raw = b"Subject: x\r\n\r\nhello\r\n"
    meta = _kept(raw, uid=9)
    plan = FetchPlan.make([BodySection(peek=True)], with_uid=True, utf8=False)
    assert plan is not None and plan.needs_body and not plan.needs_flags
    assert plan.encode(3, 9, meta, [], raw) == (
        b"* 3 FETCH (UID 9 BODY[] {%d}\r\n%s)\r\n" % (len(raw), raw)
    )
    partial = FetchPlan.make([BodySection(partial=(2, 5))], with_uid=False, utf8=False,
                             seen_set=True)
    assert partial is not None and partial.needs_flags
    flag_items = _flag_items(["\\Seen"], None, None)
    assert partial.encode(3, 9, meta, flag_items, raw) == (
        b"* 3 FETCH (BODY[]<2> {5}\r\nbject FLAGS (\\Seen))\r\n"
    )


def test_a_fetch_of_anything_else_has_no_plan() -> None:
    for attributes in ([FetchItem("UID"), BodySection(peek=True, text="HEADER")],
                       [FetchItem("BODY")], [BodySection(part=(1,))],
                       [BodySection(binary=True)], [FetchItem("RFC822.TEXT")],
                       [FetchItem("FLAGS"), FetchItem("RFC822.HEADER")]):
        assert FetchPlan.make(attributes, with_uid=True, utf8=False) is None


def test_plans_are_kept_by_what_the_command_asks() -> None:
    asked = [FetchItem("UID"), BodySection(peek=True)]
    first = plan_for(asked, with_uid=True, utf8=False, seen_set=False)
    assert plan_for(list(asked), with_uid=True, utf8=False, seen_set=False) is first
    other = plan_for(asked, with_uid=True, utf8=False, seen_set=True)
    assert other is not first and other is not None and other.needs_flags


@settings(max_examples=200, deadline=None)
@given(st.one_of(raw_messages, _eight_bit).filter(bool))
def test_kept_ascii_text_is_also_what_a_utf8_client_gets(raw: bytes) -> None:
    parsed = parse_message(raw)
    assert parsed.structure is not None
    for kept, value in (
        (envelope_text(parsed.envelope), envelope_value(parsed.envelope)),
        (bodystructure_text(parsed.structure), bodystructure(parsed.structure)),
    ):
        assert kept == encode_value(value, utf8=False).decode()
        if kept is not None and kept.isascii():
            assert cached_item(kept, utf8=True) == encode_value(value, utf8=True).decode()
        else:
            assert cached_item(kept, utf8=True) is None


def test_the_whole_message_needs_no_mime_structure() -> None:
    raw = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\none\r\n--b--\r\n"
    meta = _kept(raw, uid=1)
    for whole, expected in ((BodySection(), raw), (BodySection(peek=True, partial=(0, 4)), raw[:4]),
                            (FetchItem("RFC822"), raw)):
        assert not needs_structure([FetchItem("UID"), whole], meta)
        items = fetch_items([whole], meta, None, raw, [], with_uid=False)
        assert isinstance(items, list) and items[0][1] == expected
    for part in (BodySection(part=(1,)), BodySection(text="TEXT"), BodySection(binary=True)):
        assert needs_structure([part], meta)


@settings(max_examples=200, deadline=None)
@given(
    attributes=st.lists(st.sampled_from(["FLAGS", "MODSEQ", "UID"]), min_size=1, max_size=3),
    with_uid=st.booleans(),
    flags=st.lists(st.sampled_from(["\\Seen", "\\Flagged", "$Work", "\\Recent"]), unique=True),
    modseq=st.one_of(st.none(), st.integers(1, 2**63 - 1)),
    number=st.integers(1, 10_000),
    uid=st.integers(1, 2**32 - 1),
)
def test_a_plan_of_view_items_writes_from_their_texts_what_it_writes_from_the_items(
    attributes: list[str],
    with_uid: bool,
    flags: list[str],
    modseq: int | None,
    number: int,
    uid: int,
) -> None:
    plan = plan_for(
        [FetchItem(a) for a in attributes], with_uid=with_uid, utf8=False, seen_set=False
    )
    assert plan is not None and not plan.needs_facts
    items = _flag_items(flags, modseq, None)
    flags_text = encode_value(flag_atoms(flags))
    assert plan.encode_view(number, uid, flags_text, modseq) == plan.encode(
        number, uid, None, items
    )
