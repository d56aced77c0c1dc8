"""The MIME structure of a message: Dovecot's BODYSTRUCTURE on tricky messages, sections,
BINARY, parameters, properties on arbitrary and generated messages, and hostile shapes.

The hostile shapes bound the CPU time of a few-megabyte message at seconds where the
linear parser needs well under one and a quadratic one minutes: a bound on the work,
not a benchmark.
"""

from __future__ import annotations

import time
from email.message import EmailMessage, Message
from email.policy import SMTP

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from poczta.message import parse_message
from poczta.message.imap_body import (
    ImapValue,
    MultipartBody,
    UnknownEncoding,
    binary_section,
    binary_size,
    body,
    bodystructure,
    find_part,
    section_range,
)
from poczta.message.mime import MAX_DEPTH, MAX_PARTS, MimePart, parse_structure
from poczta.message.mime_params import param_text, parse_content_type, parse_language
from tests.mime_dovecot_fixtures import DOVECOT, dovecot_message

CPU_BUDGET = 10.0  # seconds for a few MB; the linear parser needs well under one


def render(value: ImapValue) -> str:
    """IMAP text of a FETCH value, written the way Dovecot writes BODYSTRUCTURE."""
    if value is None:
        return "NIL"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, bytes):
        raise AssertionError("no literals in BODYSTRUCTURE")
    if isinstance(value, MultipartBody):
        count = next(i for i, v in enumerate(value) if not isinstance(v, list))
        parts, rest = value[:count], value[count:]
        return "(" + "".join(map(render, parts)) + " " + " ".join(map(render, rest)) + ")"
    return "(" + " ".join(map(render, value)) + ")"


@pytest.mark.parametrize(("data", "expected"), DOVECOT)
def test_bodystructure_matches_dovecot(data: bytes, expected: str) -> None:
    assert render(bodystructure(parse_structure(data))) == expected


def test_body_is_bodystructure_without_extension_data() -> None:
    data = dovecot_message(0)
    # Dovecot's BODY of the same message:
    assert render(body(parse_message(data).structure or parse_structure(data))) == (
        '(("text" "html" ("charset" "us-ascii") "<id1@x>" "=?utf-8?q?caf=C3=A9?= desc"'
        ' "QUOTED-Printable" 13 1)("application" "octet-stream" NIL NIL NIL "base64" 4)'
        '("message" "rfc822" NIL NIL NIL "7bit" 176 (NIL "inner" (("Inner" NIL "in" "x.test"))'
        ' (("Inner" NIL "in" "x.test")) (("Inner" NIL "in" "x.test")) NIL NIL NIL NIL NIL)'
        ' (("text" "plain" ("format" "flowed" "charset" "iso-8859-1") NIL NIL "7bit" 2 0)'
        ' "alternative") 9)(("message" "rfc822" NIL NIL NIL "7bit" 22 (NIL "d1" NIL NIL NIL'
        ' NIL NIL NIL NIL NIL) ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 7 0) 2)'
        '("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 11 0) "digest") "mixed")'
    )


def test_where_poczta_differs_from_dovecot_on_purpose() -> None:
    # Dovecot keeps "TEXT" "HTML" as written, answers ("text" "") and ("" "") for a
    # Content-Type without a subtype or type, and shows message/global as a leaf.
    upper = parse_structure(b"Content-Type: TEXT/HTML\r\n\r\nx\r\n")
    assert (upper.type, upper.subtype) == ("text", "html")
    for value in (b"text", b";;garbage"):
        part = parse_structure(b"Content-Type: " + value + b"\r\n\r\nx\r\n")
        assert (part.type, part.subtype) == ("text", "plain")
    inner = parse_structure(b"Content-Type: message/global\r\n\r\nSubject: g\r\n\r\nhi\r\n")
    assert inner.message is not None and inner.message.envelope.subject == "g"


# --- sections ---------------------------------------------------------------

FIELDS = dovecot_message(0)


def _section(data: bytes, path: tuple[int, ...], text: str = "") -> bytes | None:
    found = section_range(parse_structure(data), path, text)
    return None if found is None else data[found[0] : found[1]]


@pytest.mark.parametrize(
    ("path", "text", "expected"),
    [  # Dovecot's answers; where it answers "" for a part that does not exist, we say None
        (
            (3,),
            "HEADER",
            b"From: Inner <in@x.test>\r\nSubject: inner\r\n"
            b"Content-Type: multipart/alternative; boundary=YY\r\n\r\n",
        ),
        (
            (3,),
            "TEXT",
            b'--YY\r\nContent-Type: text/plain; format=flowed; charset="iso-8859-1"'
            b"\r\n\r\nhi\r\n--YY--\r\n",
        ),
        ((3, 1), "", b"hi"),
        ((3, 1, 1), "", b"hi"),
        ((3, 1), "MIME", b'Content-Type: text/plain; format=flowed; charset="iso-8859-1"\r\n\r\n'),
        ((4, 1, 1), "", b"d1 body"),
        ((4, 1), "HEADER", b"Subject: d1\r\n\r\n"),
        ((4, 1), "HEADER.FIELDS", b"Subject: d1\r\n\r\n"),
        ((4, 1), "MIME", b"\r\n"),
        ((2,), "", b"AAEC"),
        ((1,), "HEADER", None),
        ((3, 2), "", None),
        ((9,), "", None),
        ((3, 1), "TEXT", None),
        ((0,), "", None),
    ],
)
def test_sections_slice_the_stored_bytes(
    path: tuple[int, ...], text: str, expected: bytes | None
) -> None:
    assert _section(FIELDS, path, text) == expected


def test_sections_of_a_single_part_message() -> None:
    data = b"From: a@b.c\r\nSubject: x\r\n\r\nhello\r\nworld"
    assert _section(data, (1,)) == b"hello\r\nworld"
    assert _section(data, (1,), "MIME") == b"From: a@b.c\r\nSubject: x\r\n\r\n"
    assert _section(data, (), "HEADER") == b"From: a@b.c\r\nSubject: x\r\n\r\n"
    assert _section(data, (), "TEXT") == b"hello\r\nworld"
    assert _section(data, ()) == data
    for path, text in (((1,), "HEADER"), ((1,), "TEXT"), ((1, 1), ""), ((2,), "")):
        assert _section(data, path, text) is None
    assert section_range(parse_structure(data), (), "MIME") is None


def test_sections_of_a_top_level_message_rfc822() -> None:
    data = (
        b"From: a@b.c\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\ninner body\r\n"
    )
    assert _section(data, (1,), "HEADER") == b"Subject: inner\r\n\r\n"
    assert _section(data, (1,), "TEXT") == b"inner body\r\n"
    assert _section(data, (1, 1)) == b"inner body\r\n"
    root = parse_structure(data)
    assert find_part(root, (1,)) is root and find_part(root, (1,), descend=True) is not root


def test_binary_decodes_transfer_encodings() -> None:
    root = parse_structure(FIELDS)
    assert binary_section(FIELDS, root, (1,)) == b"<p>x=</p>\r\n"  # as Dovecot
    assert binary_section(FIELDS, root, (2,)) == b"\x00\x01\x02"  # as Dovecot
    assert binary_size(FIELDS, root, (2,)) == 3
    assert binary_section(FIELDS, root, (3, 1)) == b"hi"
    assert binary_section(FIELDS, root, (7,)) is None
    assert binary_section(FIELDS, root, ()) == FIELDS
    odd = b"Content-Type: text/plain\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\nbegin\r\n"
    assert binary_section(odd, parse_structure(odd), (1,)) is UnknownEncoding.UNKNOWN_CTE
    assert binary_size(odd, parse_structure(odd), (1,)) is UnknownEncoding.UNKNOWN_CTE
    sloppy = b"Content-Transfer-Encoding: BASE64\r\n\r\naGVs\r\nbG8g\r\n*d29y bGQ\r\n"
    assert binary_section(sloppy, parse_structure(sloppy), (1,)) == b"hello world"


# --- field values -------------------------------------------------------------


def test_content_type_parameters() -> None:
    parsed = parse_content_type(
        'Text/Plain ; charset = "utf-8" (comment); name*0*=utf-8\'\'caf%C3%A9; name*1=".txt";'
        ' title*=us-ascii\'en\'a%20b; boundary=----=_Part_1; junk; =x; q="a \\"b\\" c"'
    )
    assert parsed is not None
    kind, subtype, params = parsed
    assert (kind, subtype) == ("text", "plain")
    assert params == (
        ("charset", "utf-8"),
        ("boundary", "----=_Part_1"),
        ("q", 'a "b" c'),
        ("name*", "utf-8''caf%C3%A9.txt"),
        ("title*", "us-ascii'en'a%20b"),
    )
    assert param_text(params, "NAME") == "café.txt"
    assert param_text(params, "title") == "a b"
    assert param_text(params, "missing") is None
    assert parse_content_type('text/plain; charset="unterminated') == (
        "text",
        "plain",
        (("charset", "unterminated"),),
    )
    assert parse_content_type('(x) multipart/mixed; boundary="a b"') == (
        "multipart",
        "mixed",
        (("boundary", "a b"),),
    )
    assert parse_content_type('text/plain; x-1="\\\\"; x-2=b') == (
        "text",
        "plain",
        (("x-1", "\\"), ("x-2", "b")),
    )
    assert parse_language("en, (comment) de-DE,,fr") == ("en", "de-DE", "fr")


def test_an_unknown_or_absurd_charset_decodes_as_utf8() -> None:
    params = (("name*", "x-nonsense''%C3%A9"), ("file*", "a\x00b''%C3%A9"))
    assert param_text(params, "name") == "é" and param_text(params, "file") == "é"
    # The same in an encoded-word used to lose the whole parse of the message.
    parsed = parse_message(b"Subject: =?a\x00b?q?=C3=A9?=\r\nTo: x@y.test\r\n\r\nbody\r\n")
    assert parsed.subject == "é" and parsed.header("to") == "x@y.test"


# --- properties -------------------------------------------------------------


def _walk(part: MimePart) -> list[MimePart]:
    found = [part]
    for child in part.parts:
        found += _walk(child)
    if part.message is not None:
        found += _walk(part.message.root)
    return found


def _check_nesting(part: MimePart, start: int, end: int) -> None:
    assert start <= part.header_start <= part.body_start <= part.body_end <= end
    previous = part.body_start
    for child in part.parts:
        _check_nesting(child, part.body_start, part.body_end)
        assert child.header_start >= previous
        previous = child.body_end
    if part.message is not None:
        root = part.message.root
        assert (root.header_start, root.body_end) == (part.body_start, part.body_end)
        _check_nesting(root, part.body_start, part.body_end)


_MIME_BITS = st.sampled_from(
    [
        b"--b\r\n",
        b"--b--\r\n",
        b"--bb\r\n",
        b"--b",
        b"\r\n",
        b"\n",
        b"\r\n\r\n",
        b"Content-Type: multipart/mixed; boundary=b\r\n",
        b"Content-Type: multipart/digest; boundary=bb\r\n",
        b"Content-Type: message/rfc822\r\n",
        b"Content-Type: text/plain\r\n",
        b"Content-Transfer-Encoding: base64\r\n",
        b"x",
        b"--",
        b"-",
        b"Subject: s\r\n",
    ]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=2000), st.lists(_MIME_BITS, max_size=60).map(b"".join)))
def test_any_bytes_give_a_structure_within_the_message(data: bytes) -> None:
    root = parse_structure(data)
    _check_nesting(root, 0, len(data))
    assert (root.header_start, root.body_end) == (0, len(data))
    for part in _walk(root):
        chunk = data[part.body_start : part.body_end]
        assert part.lines == chunk.count(b"\n")
        assert part.size == len(chunk) + chunk.count(b"\n") - chunk.count(b"\r\n")
    rendered = render(bodystructure(root))
    assert rendered.startswith("(") and render(body(root)).startswith("(")
    parsed = parse_message(data)
    assert parsed.structure == root
    assert parsed.size == len(data) + data.count(b"\n") - data.count(b"\r\n")


# A random MIME tree, built as a message by the stdlib `email` package.
_TOKENS = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=8)
_LEAF = st.tuples(
    st.sampled_from(["text/plain", "text/html", "application/octet-stream", "image/png"]),
    st.dictionaries(
        _TOKENS.map(lambda t: "x-" + t),
        # No backslash: the stdlib reference misreads the quoted pair it writes for one
        # (`x="\\"` comes back as the rest of the field), so it cannot judge ours there.
        st.text(
            st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="\\"),
            min_size=1,
            max_size=12,
        ),
        max_size=3,
    ),
    st.binary(max_size=200),
)
_TREE = st.recursive(
    _LEAF,
    lambda children: st.one_of(
        st.tuples(
            st.sampled_from(["mixed", "alternative", "related"]),
            st.lists(children, min_size=1, max_size=4),
        ),
        st.tuples(st.just("rfc822"), children),
    ),
    max_leaves=12,
)


def _build(tree: object) -> Message:
    assert isinstance(tree, tuple)
    if len(tree) == 3:
        content_type, params, payload = tree
        message = EmailMessage(policy=SMTP)
        maintype, subtype = content_type.split("/")
        if maintype == "text":
            message.set_content(payload.decode("latin-1"), subtype=subtype, charset="utf-8")
        else:
            message.set_content(payload, maintype=maintype, subtype=subtype)
        for name, value in params.items():
            message.set_param(name, value)
        return message
    kind, inner = tree
    if kind == "rfc822":
        message = EmailMessage(policy=SMTP)
        message["Subject"] = "inner"
        message.set_content(_build(inner))
        return message
    message = EmailMessage(policy=SMTP)
    message.make_mixed()
    message.set_type(f"multipart/{kind}")
    for child in inner:
        message.attach(_build(child))
    return message


def _same(
    ours: MimePart, theirs: Message, data: bytes, root: MimePart, path: tuple[int, ...]
) -> None:
    """`ours` (part `path` of `root`) is `theirs`: type, parameters, parts, decoded body."""
    assert (ours.type, ours.subtype) == (
        theirs.get_content_maintype(),
        theirs.get_content_subtype(),
    )
    for name, _ in theirs.get_params()[1:]:
        assert ours.param(name) == theirs.get_param(name, unquote=True)
    if ours.parts:
        children = theirs.get_payload()
        assert isinstance(children, list) and len(ours.parts) == len(children)
        for number, child in enumerate(children, 1):
            _same(ours.parts[number - 1], child, data, root, (*path, number))
    elif ours.message is not None:
        [inner] = theirs.get_payload()
        base = path or (1,)  # a message that is a message/rfc822 is its part 1
        inner_path = base if ours.message.root.parts else (*base, 1)
        _same(ours.message.root, inner, data, root, inner_path)
    else:
        ours_body = binary_section(data, root, path or (1,))
        theirs_body = theirs.get_payload(decode=True)
        assert isinstance(ours_body, bytes) and isinstance(theirs_body, bytes)
        # The email package holds lines ending in LF and writes CRLF.
        assert ours_body.replace(b"\r\n", b"\n") == theirs_body.replace(b"\r\n", b"\n")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_TREE)
def test_generated_mime_trees_parse_back(tree: object) -> None:
    message = _build(tree)
    data = message.as_bytes(policy=SMTP)
    root = parse_structure(data)
    _same(root, message, data, root, ())


# --- limits and hostile shapes ------------------------------------------------


def _nested(depth: int) -> bytes:
    opening = b"".join(
        b'Content-Type: multipart/mixed; boundary="n%d"\r\n\r\n--n%d\r\n' % (i, i)
        for i in range(depth)
    )
    closing = b"".join(b"\r\n--n%d--" % i for i in reversed(range(depth)))
    return opening + b"Content-Type: text/plain\r\n\r\ndeep" + closing + b"\r\n"


def test_nesting_deeper_than_the_limit_is_a_leaf() -> None:
    root = parse_structure(_nested(MAX_DEPTH + 20))
    depth, part = 0, root
    while part.parts:
        depth, part = depth + 1, part.parts[0]
    assert depth == MAX_DEPTH and part.type == "multipart" and not part.parts
    assert render(bodystructure(root)).count("(") > MAX_DEPTH


def test_parts_past_the_limit_are_one_leaf() -> None:
    data = (
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
        + b"--b\r\n\r\nx\r\n" * (MAX_PARTS + 500)
        + b"--b--\r\n"
    )
    root = parse_structure(data)
    assert len(root.parts) == MAX_PARTS - 1
    last = root.parts[-1]
    assert last.body_end == len(data) and data[last.body_start :].count(b"--b\r\n") == 501


def _hostile(shape: str) -> bytes:
    head = b"From: a@b.test\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
    if shape == "nested multiparts":
        return _nested(10_000)
    if shape == "tiny parts":
        return head + (b"--b\r\n\r\n" + b"x" * 40 + b"\r\n") * 100_000 + b"--b--\r\n"
    if shape == "repeated boundary":
        return head + b"--b" * 1_000_000 + b"\r\n"
    if shape == "dash lines":
        return head + b"--x\r\n" * 1_000_000
    if shape == "prefix lines":
        return head + b"--bx\r\n" + b"--a\r\n--bb--\r\n" * 300_000
    if shape == "unclosed nesting":
        return (
            b"".join(
                b"Content-Type: multipart/mixed; boundary=u%d\r\n\r\n--u%d\r\n" % (i, i)
                for i in range(20_000)
            )
            + b"x\r\n" * 200_000
        )
    if shape == "encapsulated":
        return b"Content-Type: message/rfc822\r\n\r\n" * 50_000 + b"--b\r\n" * 200_000
    raise AssertionError(shape)


SHAPES = [
    "nested multiparts",
    "tiny parts",
    "repeated boundary",
    "dash lines",
    "prefix lines",
    "unclosed nesting",
    "encapsulated",
]


@pytest.mark.parametrize("shape", SHAPES)
def test_the_parser_is_linear_on_hostile_shapes(shape: str) -> None:
    data = _hostile(shape)
    start = time.process_time()
    root = parse_structure(data)
    render(bodystructure(root))
    spent = time.process_time() - start
    _check_nesting(root, 0, len(data))
    assert spent < CPU_BUDGET, f"{shape}: {spent:.1f}s for {len(data)} bytes"
