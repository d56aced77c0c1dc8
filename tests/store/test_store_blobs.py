"""Blob files: content addressing, dedup, sharding, durability steps, temporary leftovers."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from poczta.store import NotFound, StoreUnavailable
from poczta.store.blobs import BlobStore


def test_put_read_dedup(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    digest, directory = blobs.put(b"hello\r\n")
    assert digest == hashlib.sha256(b"hello\r\n").hexdigest()
    assert blobs.path(digest) == tmp_path / digest[:2] / digest
    assert directory == blobs.path(digest).parent
    assert blobs.read(digest) == b"hello\r\n"
    again, _ = blobs.put(b"hello\r\n", sync_dir=False)
    assert again == digest and list(blobs.digests()) == [digest]
    assert list((tmp_path / "tmp").iterdir()) == []
    blobs.delete(digest)
    blobs.delete(digest)  # missing is fine
    with pytest.raises(NotFound):
        blobs.read(digest)


def test_bad_digest_is_not_found(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    with pytest.raises(NotFound):
        blobs.read("../../etc/passwd")


def test_leftover_temporary_files_are_cleared(tmp_path: Path) -> None:
    (tmp_path / "tmp").mkdir()
    (tmp_path / "tmp" / "partial.123").write_bytes(b"half a message")
    BlobStore(tmp_path)
    assert list((tmp_path / "tmp").iterdir()) == []


def test_write_failure_is_unavailable(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    (tmp_path / "tmp").rmdir()
    (tmp_path / "tmp").write_bytes(b"")
    with pytest.raises(StoreUnavailable):
        blobs.put(b"data")
    with pytest.raises(StoreUnavailable):
        blobs.sync_dirs([tmp_path / "missing"])
