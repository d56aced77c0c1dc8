"""The body as the SMTP client sends it: CRLF-normalised, dot-stuffed for DATA, counted for BDAT.

The body is read in slices and each slice is turned into wire bytes on its own, so a
large message is never copied whole. Bare LF and bare CR become CRLF, exactly as the
server core's "normalize" policy does (`poczta.smtp.body.finish_body`), so what
poczta relays has the line endings it would have stored and no `\\n.\\n` a receiver
could take for the end of DATA. A body that does not end in CRLF gets one. A CR at
the end of one slice is held back until the next shows whether LF follows.

DATA lines that start with a period get one more (RFC 5321 4.5.2) and the body ends
with `.<CRLF>`; BDAT chunks (RFC 3030) carry the normalised bytes as they are, each
after its `BDAT <size>` command, the last with `LAST`.
"""

from __future__ import annotations

from collections.abc import Iterator

DATA_SLICE = 64 * 1024
BDAT_CHUNK = 1024 * 1024


def _normalize(data: bytes) -> bytes:
    crlf = data.count(b"\r\n")
    if data.count(b"\n") == crlf and data.count(b"\r") == crlf:
        return data
    return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")


def wire_size(body: bytes) -> int:
    """The size of the body once normalised (what SIZE= announces), without the DATA end."""
    crlf = body.count(b"\r\n")
    size = len(body) + (body.count(b"\n") - crlf) + (body.count(b"\r") - crlf)
    return size if not body or body.endswith((b"\n", b"\r")) else size + 2


def is_8bit(body: bytes) -> bool:
    """True when some octet of the body has its high bit set."""
    return not body.isascii()


def normalized_slices(body: bytes, size: int) -> Iterator[bytes]:
    """The body in CRLF-normalised pieces of about `size` octets, ending in CRLF."""
    carry = b""
    for start in range(0, len(body), size):
        data = carry + body[start : start + size]
        last = start + size >= len(body)
        carry = b""
        if not last and data.endswith(b"\r"):
            data, carry = data[:-1], b"\r"
        if last and not data.endswith((b"\n", b"\r")):
            data += b"\r\n"
        if data:
            yield _normalize(data)


def data_pieces(body: bytes, size: int = DATA_SLICE) -> Iterator[bytes]:
    """The body as DATA content: normalised, dot-stuffed, then `.<CRLF>`, which goes
    with the last piece (a message of one slice is then one write, not two)."""
    line_start = True
    last = b""
    for piece in normalized_slices(body, size):
        stuffed = piece.replace(b"\r\n.", b"\r\n..")
        if line_start and stuffed.startswith(b"."):
            stuffed = b"." + stuffed
        line_start = stuffed.endswith(b"\r\n")
        if last:
            yield last
        last = stuffed
    yield last + b".\r\n"


def bdat_chunks(body: bytes, size: int = BDAT_CHUNK) -> Iterator[tuple[bytes, bool]]:
    """The body as BDAT commands with their data, each with whether it is the LAST."""
    pending: bytes | None = None
    for piece in normalized_slices(body, size):
        if pending is not None:
            yield b"BDAT %d\r\n" % len(pending) + pending, False
        pending = piece
    if pending is None:
        yield b"BDAT 0 LAST\r\n", True
    else:
        yield b"BDAT %d LAST\r\n" % len(pending) + pending, True


def encode_xtext(text: str) -> str:
    """RFC 3461 xtext: `+`, `=`, and everything outside printable ASCII as `+HH`."""
    out = []
    for byte in text.encode("utf-8"):
        if 33 <= byte <= 126 and byte not in (0x2B, 0x3D):
            out.append(chr(byte))
        else:
            out.append(f"+{byte:02X}")
    return "".join(out)


def encode_utf8_addr(text: str) -> str:
    """RFC 6533 utf-8-addr-unitext: UTF-8 kept, `+`, `=`, controls and space as `\\x{HH}`."""
    return "".join(
        f"\\x{{{ord(c):X}}}" if c in "+=\\" or ord(c) <= 32 or ord(c) == 127 else c for c in text
    )
