"""Messages with the BODYSTRUCTURE Dovecot answers for them.

Each message was appended to Dovecot 2.3.19 and the BODYSTRUCTURE it answered is the
expected text here, unchanged.
"""

# ruff: noqa: E501

from __future__ import annotations

import pytest

DOVECOT = [
    pytest.param(
        b'From: a@b.c\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n--XX\r\nContent-Type: text/html\r\nContent-Transfer-Encoding: QUOTED-Printable\r\nContent-ID: <id1@x>\r\nContent-Description: =?utf-8?q?caf=C3=A9?= desc\r\nContent-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==\r\nContent-Language: en, (comment) de-DE\r\nContent-Location: http://x.test/a\r\n  b\r\nContent-Disposition: INLINE\r\n\r\n<p>x=3D</p>\r\n\r\n--XX\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\nAAEC\r\n--XX\r\nContent-Type: message/rfc822\r\n\r\nFrom: Inner <in@x.test>\r\nSubject: inner\r\nContent-Type: multipart/alternative; boundary=YY\r\n\r\n--YY\r\nContent-Type: text/plain; format=flowed; charset="iso-8859-1"\r\n\r\nhi\r\n--YY--\r\n--XX\r\nContent-Type: multipart/digest; boundary=ZZ\r\n\r\n--ZZ\r\n\r\nSubject: d1\r\n\r\nd1 body\r\n--ZZ\r\nContent-Type: text/plain\r\n\r\nnot message\r\n--ZZ--\r\n--XX--\r\nepilogue\r\n',
        '(("text" "html" ("charset" "us-ascii") "<id1@x>" "=?utf-8?q?caf=C3=A9?= desc" "QUOTED-Printable" 13 1 "Q2hlY2sgSW50ZWdyaXR5IQ==" ("INLINE" NIL) ("en" "de-DE") "http://x.test/a  b")("application" "octet-stream" NIL NIL NIL "base64" 4 NIL NIL NIL NIL)("message" "rfc822" NIL NIL NIL "7bit" 176 (NIL "inner" (("Inner" NIL "in" "x.test")) (("Inner" NIL "in" "x.test")) (("Inner" NIL "in" "x.test")) NIL NIL NIL NIL NIL) (("text" "plain" ("format" "flowed" "charset" "iso-8859-1") NIL NIL "7bit" 2 0 NIL NIL NIL NIL) "alternative" ("boundary" "YY") NIL NIL NIL) 9 NIL NIL NIL NIL)(("message" "rfc822" NIL NIL NIL "7bit" 22 (NIL "d1" NIL NIL NIL NIL NIL NIL NIL NIL) ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 7 0 NIL NIL NIL NIL) 2 NIL NIL NIL NIL)("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 11 0 NIL NIL NIL NIL) "digest" ("boundary" "ZZ") NIL NIL NIL) "mixed" ("boundary" "XX") NIL NIL NIL)',
        id="fields",
    ),
    pytest.param(
        b'From: a@b.c\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="abc"\r\n\r\npreamble\r\n--abc\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Disposition: attachment; filename*0*=utf-8\'en\'caf%C3%A9; filename*1=".txt"\r\n\r\nbody1\r\n--abc\r\nContent-Type: multipart/alternative; boundary="abcdef"\r\n\r\n--abcdef\r\n\r\ninner\r\n--abcdef--\r\n--abcdef\r\nepi\r\n--abc--\r\n',
        '(("text" "plain" ("charset" "utf-8") NIL NIL "7bit" 5 0 NIL ("attachment" ("filename*" "utf-8\'en\'caf%C3%A9.txt")) NIL NIL)(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 5 0 NIL NIL NIL NIL) "alternative" ("boundary" "abcdef") NIL NIL NIL)("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0 NIL NIL NIL NIL) "mixed" ("boundary" "abc") NIL NIL NIL)',
        id="nested",
    ),
    pytest.param(
        b'From: a@b.c\r\nContent-Type: multipart/mixed; boundary="never"\r\n\r\nno parts here\r\n',
        '(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0 NIL NIL NIL NIL) "mixed" ("boundary" "never") NIL NIL NIL)',
        id="never",
    ),
    pytest.param(
        b"From: a@b.c\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\n--B\r\nContent-Type: text/plain\r\n--B\r\n\r\n\r\n--B--",
        '(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0 NIL NIL NIL NIL)("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0 NIL NIL NIL NIL)("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0 NIL NIL NIL NIL) "mixed" ("boundary" "B") NIL NIL NIL)',
        id="emptybody",
    ),
    pytest.param(
        b"From: a@b.c\nContent-Type: multipart/mixed; boundary=B\n\n--B\n\nline1\nline2\n--B--\n",
        '(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 12 1 NIL NIL NIL NIL) "mixed" ("boundary" "B") NIL NIL NIL)',
        id="lf",
    ),
    pytest.param(
        b"From: a@b.c\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\n\r\nopen\r\nend",
        '(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 9 1 NIL NIL NIL NIL) "mixed" ("boundary" "B") NIL NIL NIL)',
        id="noclose",
    ),
    pytest.param(
        b'From: a@b.c\r\nContent-Type: text/plain; format=flowed\r\nContent-Language: en\r\nContent-Disposition: attachment; FileName="a b.txt"; size=3\r\n\r\nx\r\n',
        '("text" "plain" ("format" "flowed" "charset" "us-ascii") NIL NIL "7bit" 3 1 NIL ("attachment" ("FileName" "a b.txt" "size" "3")) ("en") NIL)',
        id="p1",
    ),
    pytest.param(
        b'From: a@b.c\r\nContent-Type: multipart/mixed; boundary="a b"\r\n\r\n--a b  \r\nContent-Type: text/plain; charset=utf-8\r\n\r\nx\r\n--a b-- trailing\r\n',
        '(("text" "plain" ("charset" "utf-8") NIL NIL "7bit" 1 0 NIL NIL NIL NIL) "mixed" ("boundary" "a b") NIL NIL NIL)',
        id="p7",
    ),
    pytest.param(
        b"From: a@b.c\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n--bx\r\nstill\r\n--b--\r\n",
        '(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0 NIL NIL NIL NIL)("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0 NIL NIL NIL NIL) "mixed" ("boundary" "b") NIL NIL NIL)',
        id="p10",
    ),
    pytest.param(
        b'From: a@b.c\r\nContent-Type: text/plain; charset=us-ascii (Plain text); title*=us-ascii\'en-us\'This%20is%20%2A%2A%2Afun%2A%2A%2A; name*0="long"; name*1="er"; Foo = "a \\"q\\" b"\r\n\r\nx\r\n',
        '("text" "plain" ("charset" "us-ascii" "Foo" "a \\"q\\" b" "name" "longer" "title*" "us-ascii\'en-us\'This%20is%20%2A%2A%2Afun%2A%2A%2A") NIL NIL "7bit" 3 1 NIL NIL NIL NIL)',
        id="params",
    ),
    pytest.param(
        b"From: a@b.c\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\ninner body\r\n",
        '("message" "rfc822" NIL NIL NIL "7bit" 30 (NIL "inner" NIL NIL NIL NIL NIL NIL NIL NIL) ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 12 1 NIL NIL NIL NIL) 3 NIL NIL NIL NIL)',
        id="rfc822top",
    ),
    pytest.param(
        b"From: a@b.c\r\nSubject: x\r\n\r\nhello\r\nworld",
        '("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 12 1 NIL NIL NIL NIL)',
        id="plain",
    ),
    pytest.param(
        b"From: a@b.c\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\nU3ViamVjdDogeA0KDQpoaQ0K\r\n",
        '("message" "rfc822" NIL NIL NIL "base64" 26 (NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL) ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0 NIL NIL NIL NIL) 1 NIL NIL NIL NIL)',
        id="p5",
    ),
    pytest.param(
        b"From: a@b.c\r\nContent-Type: multipart/mixed\r\n\r\n--x\r\n\r\nbody\r\n",
        '(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0 NIL NIL NIL NIL) "mixed" NIL NIL NIL NIL)',
        id="p8",
    ),
    pytest.param(
        b'From: a@b.c\r\nContent-Type: text/plain; charset="UTF-8"; charset=latin1\r\n\r\nx\r\n',
        '("text" "plain" ("charset" "UTF-8" "charset" "latin1") NIL NIL "7bit" 3 1 NIL NIL NIL NIL)',
        id="p9",
    ),
    pytest.param(
        b"From: a@b.c\r\nContent-Type: image/png\r\nContent-Type: text/html\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\nx\r\n",
        '("image" "png" NIL NIL NIL "x-uuencode" 3 NIL NIL NIL NIL)',
        id="p4",
    ),
]


def dovecot_message(index: int) -> bytes:
    """The message of `DOVECOT[index]`."""
    data = DOVECOT[index].values[0]
    assert isinstance(data, bytes)
    return data
