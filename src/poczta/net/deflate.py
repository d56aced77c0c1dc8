"""The DEFLATE layer of a compressed connection (IMAP COMPRESS=DEFLATE, RFC 4978).

Raw deflate (RFC 1951, no zlib header: wbits -15) in both directions, done by the
standard library's zlib; this module adds what a server needs around it:

- inflation is bounded: one call yields at most `max_chunk` octets and keeps the
  rest of the input inside zlib (its `unconsumed_tail`), so the layers above see
  input in pieces of a known size and apply their own limits (line length,
  literal sizes) to the inflated octets;
- a deflate bomb is refused: once more than `bomb_floor` octets have been inflated,
  input that inflates more than `max_ratio` times its size is an error. Deflate
  cannot pass ~1032:1; IMAP commands and messages from real clients stay far below
  the default ratio, while a few megabytes of crafted input would otherwise cost
  gigabytes of inflation (CPU, and every line handed to the reader);
- output is compressed as it is written and flushed with Z_SYNC_FLUSH (`flush`),
  which ends on a byte boundary so the peer can inflate everything sent so far.
"""

from __future__ import annotations

import zlib

__all__ = ["DeflateError", "DeflateLayer"]

RAW_DEFLATE = -15  # wbits: raw deflate with a 32 KiB window, what a peer may use
# Our own output needs no more: a peer's 32 KiB inflater reads a smaller window too. An
# 8 KiB window and memLevel 6 keep the deflater at ~70 KiB a connection instead of
# ~260 KiB, for ~4% less compression of FETCH responses.
OUTPUT_WINDOW = -13
OUTPUT_MEM_LEVEL = 6


class DeflateError(Exception):
    """The peer's compressed input is corrupt or inflates beyond the allowed ratio."""


class DeflateLayer:
    """One connection's inflater and deflater."""

    def __init__(
        self,
        *,
        max_chunk: int = 64 * 1024,
        max_ratio: int = 256,
        bomb_floor: int = 8 << 20,
        level: int = 6,
    ) -> None:
        self.max_chunk = max_chunk
        self.max_ratio = max_ratio
        self.bomb_floor = bomb_floor
        self._inflater = zlib.decompressobj(RAW_DEFLATE)
        self._deflater = zlib.compressobj(level, zlib.DEFLATED, OUTPUT_WINDOW, OUTPUT_MEM_LEVEL)
        self.compressed_in = 0  # consumed by the inflater so far
        self.inflated = 0

    @property
    def pending(self) -> bool:
        """True while input taken earlier has not been inflated yet."""
        return bool(self._inflater.unconsumed_tail)

    def inflate(self, data: bytes = b"") -> bytes:
        """Take `data` (after any input still pending) and return up to `max_chunk` octets.

        While `pending` is true, call again with no data before adding more input.
        """
        if self._inflater.eof:
            raise DeflateError("data after the end of the compressed stream")
        if self._inflater.unconsumed_tail:
            if data:
                raise ValueError("inflate the pending input before adding more")
            data = self._inflater.unconsumed_tail
        try:
            out = self._inflater.decompress(data, self.max_chunk)
        except zlib.error as exc:
            raise DeflateError(f"corrupt compressed input: {exc}") from None
        self.compressed_in += len(data) - len(self._inflater.unconsumed_tail)
        if self._inflater.unused_data:
            raise DeflateError("data after the end of the compressed stream")
        self.inflated += len(out)
        if self.inflated > self.bomb_floor and self.inflated > self.max_ratio * self.compressed_in:
            raise DeflateError("compressed input inflates too far")
        return out

    def deflate(self, data: bytes) -> bytes:
        """Compress `data`; what comes back may be empty until `flush`."""
        return self._deflater.compress(data)

    def flush(self) -> bytes:
        """Everything compressed so far, ending on a byte boundary (Z_SYNC_FLUSH)."""
        return self._deflater.flush(zlib.Z_SYNC_FLUSH)
