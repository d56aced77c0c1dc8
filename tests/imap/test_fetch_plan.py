"""A FETCH plan writes what the general path writes, for any attributes it takes, any
message and either dialect; the kept FETCH text is what FETCH would build."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from poczta.imap.encoder import FetchData
from poczta.imap.fetch import BodySection, FetchAttribute, FetchItem
from poczta.imap.fetch_cache import cached_item
from poczta.imap.fetch_plan import FetchPlan
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
             with_uid: bool, utf8: bool) -> bytes:
    root = meta.structure if needs_structure(attributes, meta, utf8) else None
    items = fetch_items(attributes, meta, root, None, flag_items, with_uid=with_uid, utf8=utf8)
    assert isinstance(items, list)
    return FetchData(7, items).encode(utf8)


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


def test_a_fetch_of_anything_else_has_no_plan() -> None:
    for attributes in ([FetchItem("UID"), BodySection(peek=True)], [FetchItem("BODY")],
                       [FetchItem("RFC822")], [FetchItem("FLAGS"), FetchItem("RFC822.HEADER")]):
        assert FetchPlan.make(attributes, with_uid=True, utf8=False) is None


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
