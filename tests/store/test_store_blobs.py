"""Blob files: content addressing, dedup, sharding, durability steps, temporary leftovers."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from poczta.store import NotFound, StoreUnavailable
from poczta.store.sqlite.blobs import BlobFiles, blob_digest


def temp_files(root: Path) -> list[Path]:
    """Files under tmp/ other than owners' lock files."""
    return sorted(
        p for p in (root / "tmp").rglob("*") if p.is_file() and not p.name.endswith(".lock")
    )


def test_put_read_dedup(tmp_path: Path) -> None:
    blobs = BlobFiles(tmp_path)
    digest, directory = blobs.put(b"hello\r\n")
    assert digest == hashlib.sha256(b"hello\r\n").hexdigest()
    assert blobs.path(digest) == tmp_path / digest[:2] / digest
    assert directory == blobs.path(digest).parent
    assert blobs.read(digest) == b"hello\r\n"
    again, _ = blobs.put(b"hello\r\n", sync_dir=False)
    assert again == digest and list(blobs.digests()) == [digest]
    assert temp_files(tmp_path) == []
    blobs.delete(digest)
    blobs.delete(digest)  # missing is fine
    with pytest.raises(NotFound):
        blobs.read(digest)


@pytest.mark.parametrize("size", [0, 1, 70_000, 300_000])
def test_a_body_reads_whole_whatever_size_it_is_said_to_have(tmp_path: Path, size: int) -> None:
    blobs = BlobFiles(tmp_path)
    body = os.urandom(size)
    digest, _ = blobs.put(body)
    for hint in (None, size, 0, max(size - 1, 0), size + 1, size * 2 + 10):
        assert blobs.read(digest, hint) == body


def test_bad_digest_is_not_found(tmp_path: Path) -> None:
    blobs = BlobFiles(tmp_path)
    with pytest.raises(NotFound):
        blobs.read("../../etc/passwd")


def test_leftover_temporary_files_are_cleared(tmp_path: Path) -> None:
    (tmp_path / "tmp").mkdir()
    (tmp_path / "tmp" / "partial.123").write_bytes(b"half a message")
    BlobFiles(tmp_path)
    assert list((tmp_path / "tmp").iterdir()) == []


def test_write_failure_is_unavailable(tmp_path: Path) -> None:
    blobs = BlobFiles(tmp_path)
    (tmp_path / "tmp").rmdir()
    (tmp_path / "tmp").write_bytes(b"")
    with pytest.raises(StoreUnavailable):
        blobs.put(b"data")
    with pytest.raises(StoreUnavailable):
        blobs.sync_dirs([tmp_path / "missing"])


def test_staged_bodies_appear_only_when_committed(tmp_path: Path) -> None:
    blobs = BlobFiles(tmp_path, sync="file")
    assert blobs.sync_method == "file"
    first, second = blobs.stage(b"one\r\n"), blobs.stage(b"two\r\n")
    assert not os.path.exists(first.final) and not os.path.exists(second.final)
    blobs.commit_staged([first, second])
    assert blobs.read(first.digest) == b"one\r\n"
    assert blobs.read(second.digest) == b"two\r\n"
    assert temp_files(tmp_path) == []
    again = blobs.stage(b"one\r\n")
    assert again.fd is None  # already stored: nothing written
    blobs.commit_staged([again])
    assert sorted(blobs.digests()) == sorted([first.digest, second.digest])


def test_placing_renames_without_flushing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blobs = BlobFiles(tmp_path, sync="filesystem")
    assert blobs.sync_method == "filesystem"

    def no_flush(*args: object) -> None:
        raise AssertionError("place_staged must leave flushing to the caller")

    monkeypatch.setattr(os, "fsync", no_flush)
    monkeypatch.setattr(blobs, "_syncfs", no_flush)
    staged = [blobs.stage(f"body {n}\r\n".encode()) for n in range(3)]
    blobs.place_staged(staged)
    assert all(blobs.read(item.digest) == f"body {n}\r\n".encode() for n, item in enumerate(staged))
    assert temp_files(tmp_path) == []


def test_a_failed_rename_places_nothing_and_leaves_no_temp_file(tmp_path: Path) -> None:
    blobs = BlobFiles(tmp_path, sync="filesystem")
    staged = [blobs.stage(b"doomed\r\n")]
    assert staged[0].temp is not None
    os.unlink(staged[0].temp)  # the temp file vanished under the store
    with pytest.raises(StoreUnavailable):
        blobs.place_staged(staged)
    assert not os.path.exists(staged[0].final)
    assert temp_files(tmp_path) == []


def test_unknown_sync_method(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="sync method"):
        BlobFiles(tmp_path, sync="never")


def _abandon(root: Path, owner: str, files: dict[str, bytes]) -> None:
    """Leave temp files the way a store killed with -9 leaves them (its lock is free)."""
    (root / "tmp" / owner).mkdir(parents=True)
    (root / "tmp" / f"{owner}.lock").write_bytes(b"")
    for name, data in files.items():
        (root / "tmp" / owner / name).write_bytes(data)


def test_complete_bodies_of_a_dead_store_are_moved_into_place(tmp_path: Path) -> None:
    body, partial = b"complete body\r\n", b"half a bo"
    _abandon(
        tmp_path,
        "4242-deadbeef",
        {
            f"{blob_digest(body)}.0": body,
            f"{blob_digest(b'half a body')}.1": partial,
            "not-a-digest.2": b"junk",
        },
    )
    blobs = BlobFiles(tmp_path)
    assert blobs.read(blob_digest(body)) == body
    assert list(blobs.digests()) == [blob_digest(body)]
    assert list((tmp_path / "tmp").iterdir()) == []


def test_a_directory_without_its_lock_is_recovered_too(tmp_path: Path) -> None:
    body = b"complete body\r\n"
    _abandon(tmp_path, "4242-cafebabe", {f"{blob_digest(body)}.0": body})
    (tmp_path / "tmp" / "4242-cafebabe.lock").unlink()  # a recovery that died half-way
    blobs = BlobFiles(tmp_path)
    assert blobs.read(blob_digest(body)) == body
    assert list((tmp_path / "tmp").iterdir()) == []


def test_opening_a_second_store_leaves_the_first_ones_writes_alone(tmp_path: Path) -> None:
    server = BlobFiles(tmp_path)
    in_flight = server.stage(b"being delivered\r\n")
    admin = BlobFiles(tmp_path)  # e.g. `poczta mail list` while the server runs
    server.commit_staged([in_flight])
    assert admin.read(in_flight.digest) == b"being delivered\r\n"
    server.close()
    admin.close()
    assert list((tmp_path / "tmp").iterdir()) == []
