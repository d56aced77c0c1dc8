"""Hypothesis strategies for IMAP command values, as any well-formed client could send them."""

from __future__ import annotations

import base64
import string
from datetime import date, datetime, timedelta, timezone

from hypothesis import strategies as st

from poczta.imap import commands as c
from poczta.imap import search as s
from poczta.imap.fetch import SIMPLE_ITEMS, BinarySize, BodySection, FetchAttribute, FetchItem
from poczta.imap.parser import STATUS_ITEMS
from poczta.imap.sequence import MAX_NUMBER, STAR, SequenceSet

ATOM_CHARS = "".join(ch for ch in string.printable[:94] if ch not in '(){%*"\\]')
TAG_CHARS = ATOM_CHARS.replace("+", "") + "]"
SYSTEM_FLAGS = ["\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft"]

tags = st.text(TAG_CHARS, min_size=1, max_size=8)
atoms = st.text(ATOM_CHARS, min_size=1, max_size=10)
texts = st.text(max_size=20)
mailboxes = texts.map(lambda name: "INBOX" if name.upper() == "INBOX" else name)
flags = st.lists(st.one_of(st.sampled_from(SYSTEM_FLAGS), atoms), max_size=4).map(tuple)
numbers = st.integers(1, MAX_NUMBER)
modseqs = st.integers(0, (1 << 63) - 1)

_ends = st.one_of(st.just(STAR), st.integers(1, 100), numbers)
sequence_sets = st.one_of(
    st.lists(st.tuples(_ends, _ends), min_size=1, max_size=4).map(
        lambda pairs: SequenceSet(tuple(pairs))
    ),
    st.just(SequenceSet(saved=True)),
)
plain_sets = sequence_sets.filter(lambda numbers: not numbers.saved)


def _unique(options: list[str]) -> st.SearchStrategy[tuple[str, ...]]:
    return st.lists(st.sampled_from(options), unique=True).map(tuple)


_leaf_keys: st.SearchStrategy[s.SearchKey] = st.one_of(
    st.sampled_from(sorted(s.FLAG_KEYS)).map(s.FlagKey),
    st.builds(s.KeywordKey, atoms, st.booleans()),
    st.builds(s.TextKey, st.sampled_from(sorted(s.TEXT_KEYS)), texts),
    st.builds(s.HeaderKey, texts, texts),
    st.builds(
        s.DateKey,
        st.sampled_from(sorted(s.DATE_KEYS)),
        st.dates(date(1900, 1, 1), date(2100, 12, 31)),
    ),
    st.builds(s.SizeKey, st.booleans(), modseqs),
    st.builds(s.AgeKey, st.booleans(), numbers),
    st.builds(s.SetKey, sequence_sets, st.booleans()),
    st.builds(s.ModSeqKey, modseqs),
    st.builds(
        s.ModSeqKey,
        modseqs,
        st.text(string.ascii_letters + "/\\", min_size=1),
        st.sampled_from(["priv", "shared", "all"]),
    ),
)
search_keys = st.recursive(
    _leaf_keys,
    lambda inner: st.one_of(
        st.builds(s.NotKey, inner),
        st.builds(s.OrKey, inner, inner),
        st.lists(inner, min_size=1, max_size=3).map(lambda keys: s.AndKey(tuple(keys))),
    ),
    max_leaves=8,
)
programs = st.lists(search_keys, min_size=1, max_size=4).map(lambda keys: s.AndKey(tuple(keys)))
charsets = st.sampled_from([None, "UTF-8"])
return_options = st.one_of(st.none(), _unique(sorted(s.SEARCH_RETURN_OPTIONS)))

_parts = st.lists(st.integers(1, 30), max_size=3).map(tuple)
_field_names = st.lists(
    st.text(string.printable[:94].replace(":", ""), min_size=1, max_size=8), min_size=1, max_size=3
).map(tuple)
_partials = st.one_of(st.none(), st.tuples(modseqs, st.integers(1, (1 << 63) - 1)))


@st.composite
def body_sections(draw: st.DrawFn) -> BodySection:
    binary, peek, part, partial = (
        draw(st.booleans()),
        draw(st.booleans()),
        draw(_parts),
        draw(_partials),
    )
    if binary:
        return BodySection(True, peek, part, partial=partial)
    texts_allowed = [
        "HEADER",
        "HEADER.FIELDS",
        "HEADER.FIELDS.NOT",
        "TEXT",
        *(["MIME"] if part else []),
    ]
    text = draw(st.one_of(st.none(), st.sampled_from(texts_allowed)))
    fields = draw(_field_names) if text and text.startswith("HEADER.FIELDS") else ()
    return BodySection(False, peek, part, text, fields, partial)


fetch_attributes: st.SearchStrategy[FetchAttribute] = st.one_of(
    st.sampled_from(sorted(SIMPLE_ITEMS)).map(FetchItem),
    body_sections(),
    _parts.map(BinarySize),
)
_moments = st.builds(
    lambda moment, minutes: moment.replace(tzinfo=timezone(timedelta(minutes=minutes))),
    st.datetimes(datetime(1000, 1, 1), datetime(9999, 12, 31)).map(
        lambda d: d.replace(microsecond=0)
    ),
    st.integers(-23 * 60 - 59, 23 * 60 + 59),
)
_messages = st.builds(
    c.AppendMessage, flags, st.one_of(st.none(), _moments), st.integers(0, 40), st.booleans()
)
_base64 = st.binary(max_size=30).map(base64.b64encode)


@st.composite
def _fetches(draw: st.DrawFn) -> c.Fetch:
    uid = draw(st.booleans())
    changed = draw(st.one_of(st.none(), modseqs))
    vanished = uid and changed is not None and draw(st.booleans())
    attributes = tuple(draw(st.lists(fetch_attributes, min_size=1, max_size=4)))
    return c.Fetch(draw(tags), uid, draw(sequence_sets), attributes, changed, vanished)


_qresync = st.builds(
    c.Qresync,
    numbers,
    modseqs,
    st.one_of(st.none(), plain_sets),
    st.one_of(st.none(), st.tuples(plain_sets, plain_sets)),
)
_id_pairs = st.lists(
    st.tuples(st.text(max_size=10), st.one_of(st.none(), st.text(max_size=30))), max_size=5
).map(tuple)
_list_status = _unique(sorted(STATUS_ITEMS))

commands = st.one_of(
    st.builds(c.Capability, tags),
    st.builds(c.Noop, tags),
    st.builds(c.Logout, tags),
    st.builds(c.StartTls, tags),
    st.builds(c.Authenticate, tags, atoms.map(str.upper), st.one_of(st.none(), _base64)),
    st.builds(c.Login, tags, texts, texts),
    st.builds(c.Enable, tags, st.lists(atoms.map(str.upper), min_size=1, max_size=3).map(tuple)),
    st.builds(c.Id, tags, st.one_of(st.none(), _id_pairs)),
    st.builds(c.Namespace, tags),
    st.builds(
        c.Select, tags, mailboxes, st.booleans(), st.booleans(), st.one_of(st.none(), _qresync)
    ),
    st.builds(
        c.Create, tags, mailboxes, st.lists(st.sampled_from(SYSTEM_FLAGS), max_size=2).map(tuple)
    ),
    st.builds(c.Delete, tags, mailboxes),
    st.builds(c.Rename, tags, mailboxes, mailboxes),
    st.builds(c.Subscribe, tags, mailboxes),
    st.builds(c.Unsubscribe, tags, mailboxes),
    st.builds(
        c.List,
        tags,
        texts,
        st.lists(texts, min_size=1, max_size=3).map(tuple),
        _unique(["SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"]),
        _unique(["SUBSCRIBED", "CHILDREN", "SPECIAL-USE"]),
        st.one_of(st.none(), _list_status),
    ),
    st.builds(c.Lsub, tags, texts, texts),
    st.builds(c.Status, tags, mailboxes, _list_status.filter(bool)),
    st.builds(c.Append, tags, mailboxes, st.lists(_messages, min_size=1, max_size=3).map(tuple)),
    st.builds(c.Idle, tags),
    st.builds(c.Check, tags),
    st.builds(c.Close, tags),
    st.builds(c.Unselect, tags),
    st.builds(c.Expunge, tags, st.one_of(st.none(), sequence_sets)),
    st.builds(c.Search, tags, st.booleans(), programs, charsets, return_options),
    st.builds(
        c.Store,
        tags,
        st.booleans(),
        sequence_sets,
        st.sampled_from(list(c.StoreMode)),
        flags,
        st.booleans(),
        st.one_of(st.none(), modseqs),
    ),
    _fetches(),
    st.builds(c.Copy, tags, st.booleans(), sequence_sets, mailboxes),
    st.builds(c.Move, tags, st.booleans(), sequence_sets, mailboxes),
    st.builds(
        c.Sort,
        tags,
        st.booleans(),
        st.lists(
            st.builds(c.SortKey, st.sampled_from(["ARRIVAL", "DATE", "SIZE", "TO"]), st.booleans()),
            min_size=1,
            max_size=3,
        ).map(tuple),
        st.just("UTF-8"),
        programs,
        return_options,
    ),
    st.builds(
        c.Thread,
        tags,
        st.booleans(),
        st.sampled_from(["REFERENCES", "ORDEREDSUBJECT"]),
        st.just("UTF-8"),
        programs,
    ),
    st.builds(c.GetQuota, tags, texts),
    st.builds(c.GetQuotaRoot, tags, mailboxes),
    st.builds(
        c.SetQuota,
        tags,
        texts,
        st.lists(
            st.tuples(st.sampled_from(["STORAGE", "MESSAGE"]), st.integers(0, 2**63 - 1)),
            max_size=2,
        ).map(tuple),
    ),
    st.builds(c.Compress, tags, st.just("DEFLATE")),
)
