"""The DEFLATE layer: what a peer's zlib sees of our output, and what we make of its input."""

from __future__ import annotations

import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from poczta.net.deflate import RAW_DEFLATE, DeflateError, DeflateLayer


def peer_deflate(data: bytes) -> bytes:
    """`data` as a client sends it: raw deflate, sync-flushed."""
    deflater = zlib.compressobj(6, zlib.DEFLATED, RAW_DEFLATE)
    return deflater.compress(data) + deflater.flush(zlib.Z_SYNC_FLUSH)


def inflate_all(layer: DeflateLayer, pieces: list[bytes]) -> list[bytes]:
    """Feed the pieces as reads deliver them, inflating what is pending before each next one."""
    out: list[bytes] = []
    for piece in pieces:
        out.append(layer.inflate(piece))
        while layer.pending:
            out.append(layer.inflate())
    return out


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@settings(max_examples=200)
@given(
    st.binary(max_size=20_000) | st.text(alphabet="ab\r\n ", max_size=50_000).map(str.encode),
    st.lists(st.integers(min_value=0), max_size=8),
    st.integers(min_value=1, max_value=5000),
)
def test_any_chunking_inflates_to_the_same_octets_in_bounded_pieces(
    data: bytes, cuts: list[int], max_chunk: int
) -> None:
    layer = DeflateLayer(max_chunk=max_chunk)
    pieces = inflate_all(layer, split(peer_deflate(data), cuts))
    assert b"".join(pieces) == data
    assert all(len(piece) <= max_chunk for piece in pieces)


@settings(max_examples=100)
@given(st.lists(st.binary(max_size=3000), max_size=6))
def test_each_flush_lets_the_peer_read_everything_written(writes: list[bytes]) -> None:
    layer = DeflateLayer()
    peer = zlib.decompressobj(RAW_DEFLATE)
    for data in writes:
        wire = layer.deflate(data) + layer.flush()
        assert peer.decompress(wire) == data


def test_a_bomb_is_refused_once_past_the_floor() -> None:
    layer = DeflateLayer(max_chunk=64 * 1024, max_ratio=100, bomb_floor=1 << 20)
    bomb = peer_deflate(b"a" * (16 << 20))
    with pytest.raises(DeflateError, match="inflates too far"):
        inflate_all(layer, [bomb])
    assert layer.inflated <= (1 << 20) + 64 * 1024


def test_compressible_text_below_the_floor_is_not_a_bomb() -> None:
    layer = DeflateLayer(max_ratio=100, bomb_floor=1 << 20)
    data = b"a" * (1 << 20)  # about 1000:1, but no more than the floor
    assert b"".join(inflate_all(layer, [peer_deflate(data)])) == data


def test_input_that_is_not_deflate_is_an_error() -> None:
    with pytest.raises(DeflateError, match="corrupt"):
        DeflateLayer().inflate(b"\xff" * 16 + b"a NOOP\r\n")


def test_data_after_the_final_block_is_an_error() -> None:
    deflater = zlib.compressobj(6, zlib.DEFLATED, RAW_DEFLATE)
    finished = deflater.compress(b"a LOGOUT\r\n") + deflater.flush(zlib.Z_FINISH)
    layer = DeflateLayer()
    assert layer.inflate(finished) == b"a LOGOUT\r\n"
    with pytest.raises(DeflateError, match="after the end"):
        layer.inflate(peer_deflate(b"b NOOP\r\n"))


def test_new_input_while_some_is_pending_is_a_usage_error() -> None:
    layer = DeflateLayer(max_chunk=10)
    layer.inflate(peer_deflate(b"x" * 100))
    assert layer.pending
    with pytest.raises(ValueError):
        layer.inflate(b"more")


def test_data_after_the_final_block_in_the_same_read_is_an_error() -> None:
    deflater = zlib.compressobj(6, zlib.DEFLATED, RAW_DEFLATE)
    finished = deflater.compress(b"a LOGOUT\r\n") + deflater.flush(zlib.Z_FINISH)
    with pytest.raises(DeflateError, match="after the end"):
        DeflateLayer().inflate(finished + b"b NOOP\r\n")
