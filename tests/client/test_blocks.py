"""Block transfers, the pieces: cutting local files, the chunk index, records, reuse planning."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import pytest
from quantum_file_sync import chunks
from quantum_file_sync.chunks import ChunkRef, Manifest, ManifestError
from quantum_file_sync.client import blocks, local
from quantum_file_sync.client.blocks import (
    RecordDecoder,
    batches,
    copy_local_chunk,
    distinct,
    encode_records,
    plan_reuse,
    read_for_upload,
)
from quantum_file_sync.client.chunk_index import ChunkIndex, ChunkLocation
from quantum_file_sync.client.local import FileUnstable, StatKey, TempDownload, chunk_file
from quantum_file_sync.client.state import StateDB

MiB = 1024 * 1024


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pseudo_random(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


def key_of(path: Path) -> StatKey:
    return StatKey.of(os.lstat(path))


def manifest_of(data: bytes) -> Manifest:
    """The manifest of ``data``, cut in memory by the shared chunker."""
    refs = [
        ChunkRef(sha(chunk.data), chunk.offset, chunk.length)
        for chunk in chunks.CHUNKER.cut_buf(data)
    ]
    return Manifest(sha(data), len(data), tuple(refs))


# --- cutting local files ---------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1000, 5 * MiB + 1])
def test_cutting_a_file_gives_its_manifest_and_identity(tmp_path: Path, size: int) -> None:
    path = tmp_path / "f"
    data = pseudo_random(size, size)
    path.write_bytes(data)
    manifest, key = chunk_file(str(path))
    assert manifest == manifest_of(data)
    assert key == key_of(path)
    assert manifest.hash == sha(data)


def test_cutting_a_file_that_is_not_the_expected_version_fails(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"one")
    key = key_of(path)
    path.write_bytes(b"three")
    with pytest.raises(FileUnstable):
        chunk_file(str(path), key)


async def test_probing_a_large_file_records_its_manifest(tmp_path: Path) -> None:
    from quantum_file_sync.client.ignore import IgnoreRules

    seen: list[tuple[str, StatKey, Manifest]] = []
    tree = local.LocalTree(
        tmp_path, tmp_path, IgnoreRules.load(tmp_path, ()), on_chunked=lambda *a: seen.append(a)
    )
    (tmp_path / "big").write_bytes(pseudo_random(2 * MiB))
    (tmp_path / "small").write_bytes(b"small")
    (tmp_path / "medium").write_bytes(pseudo_random(local.CHUNKED_HASH_MIN - 1))
    big = await tree.probe("big", None)
    await tree.probe("small", None)
    await tree.probe("medium", None)  # hashed only: it moves by one plain request
    assert big is not None and not isinstance(big, local.Unsupported)
    assert [(path, manifest.hash) for path, _, manifest in seen] == [("big", big.hash)]


# --- the chunk index -------------------------------------------------------------------------


@pytest.fixture
def state(tmp_path: Path) -> StateDB:
    return StateDB(tmp_path / "state.sqlite3")


def test_the_index_answers_only_for_the_recorded_identity(state: StateDB, tmp_path: Path) -> None:
    index = ChunkIndex(state)
    data = pseudo_random(6 * MiB)
    manifest = manifest_of(data)
    key = StatKey(False, len(data), 123, 456)
    index.record("a/big.bin", key, manifest)
    assert index.manifest("a/big.bin", key) == manifest
    assert index.manifest("a/big.bin", StatKey(False, len(data), 124, 456)) is None
    assert index.manifest("other", key) is None
    first = manifest.chunks[0]
    assert index.locations(first.hash) == [
        ChunkLocation("a/big.bin", first.offset, first.size, key)
    ]

    state.commit()
    state.close()
    reopened = ChunkIndex(StateDB(tmp_path / "state.sqlite3"))
    assert reopened.manifest("a/big.bin", key) == manifest


def test_recording_again_replaces_and_forget_and_move_follow_the_file(state: StateDB) -> None:
    index = ChunkIndex(state)
    old, new = manifest_of(pseudo_random(3 * MiB, 1)), manifest_of(pseudo_random(3 * MiB, 2))
    key = StatKey(False, 3 * MiB, 1, 1)
    index.record("f", key, old)
    index.record("f", key, new)
    assert index.locations(old.chunks[0].hash) == []
    assert index.manifest("f", key) == new

    index.record("g", key, old)
    index.move("f", "g")  # the rename replaces what was at the target
    assert index.manifest("g", key) == new
    assert index.locations(old.chunks[0].hash) == []
    assert [loc.path for loc in index.locations(new.chunks[1].hash)] == ["g"]

    index.forget("g")
    assert index.manifest("g", key) is None
    assert index.locations(new.chunks[1].hash) == []


def test_the_same_chunk_in_several_files_has_several_locations(state: StateDB) -> None:
    index = ChunkIndex(state)
    data = pseudo_random(3 * MiB)
    manifest = manifest_of(data)
    for name in ("x", "y", "z"):
        index.record(name, StatKey(False, len(data), 1, ord(name)), manifest)
    found = index.locations(manifest.chunks[0].hash, limit=2)
    assert len(found) == 2 and {loc.path for loc in found} <= {"x", "y", "z"}


# --- chunk records ---------------------------------------------------------------------------


def test_records_round_trip_whatever_the_pieces() -> None:
    records = [(sha(d), d) for d in (b"a", pseudo_random(300_000), b"\n" * 70)]
    body = encode_records(records)
    for step in (1, 7, 4096, len(body)):
        decoder = RecordDecoder()
        received = []
        for start in range(0, len(body), step):
            received += decoder.feed(body[start : start + step])
        decoder.finish()
        assert received == records


def test_malformed_records_are_refused() -> None:
    with pytest.raises(ManifestError):
        RecordDecoder().feed(b"not a hash 12\n")
    with pytest.raises(ManifestError):
        RecordDecoder().feed(b"x" * 200)  # no header line at all
    decoder = RecordDecoder()
    decoder.feed(encode_records([(sha(b"abc"), b"abc")])[:-1])
    with pytest.raises(ManifestError):
        decoder.finish()  # cut short


# --- planning --------------------------------------------------------------------------------


def ref(name: str, offset: int, size: int) -> ChunkRef:
    return ChunkRef(sha(name.encode()), offset, size)


def test_batches_respect_bytes_and_count() -> None:
    refs = [ref(str(n), n * 10, 10) for n in range(10)]
    assert [len(b) for b in batches(refs, 35)] == [3, 3, 3, 1]
    assert [len(b) for b in batches([ref("big", 0, 100), *refs[:2]], 35)] == [1, 2]
    assert [len(b) for b in batches(refs, 10**9)] == [10]


def test_batches_hold_at_most_the_servers_hashes_per_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(blocks, "HASHES_PER_REQUEST", 4)
    assert [len(b) for b in batches([ref(str(n), n, 1) for n in range(10)], 10**9)] == [4, 4, 2]


def test_distinct_keeps_first_occurrences_in_order() -> None:
    a, b = ref("a", 0, 5), ref("b", 5, 5)
    again = ChunkRef(a.hash, 10, 5)
    assert distinct([a, b, again]) == [a, b]


def test_reuse_plan_takes_local_chunks_and_fetches_the_rest() -> None:
    a, b, c = ref("a", 0, 5), ref("b", 5, 5), ref("c", 10, 5)
    again = ChunkRef(a.hash, 15, 5)
    manifest = Manifest("0" * 64, 20, (a, b, c, again))
    key = StatKey(False, 99, 1, 1)
    known = {
        a.hash: [ChunkLocation("old", 40, 5, key)],
        c.hash: [ChunkLocation("bad", 0, 6, key)],  # same hash, another size: not trusted
    }
    plan = plan_reuse(manifest, lambda digest: known.get(digest, []))
    assert plan.local == {a.hash: known[a.hash]}
    assert plan.fetch == [b, c]


# --- reading chunks back ---------------------------------------------------------------------


def test_a_reused_chunk_is_read_from_the_first_file_still_holding_it(tmp_path: Path) -> None:
    data = pseudo_random(2 * MiB)
    manifest = manifest_of(data)
    first = manifest.chunks[0]
    (tmp_path / "changed").write_bytes(data)
    changed_key = key_of(tmp_path / "changed")
    (tmp_path / "changed").write_bytes(b"x" + data[1:])
    os.utime(tmp_path / "changed", ns=(changed_key.mtime_ns, changed_key.mtime_ns))
    assert key_of(tmp_path / "changed") == changed_key  # same identity, other bytes
    (tmp_path / "good").write_bytes(data)
    where = [
        ChunkLocation("gone", 0, first.size, changed_key),
        ChunkLocation("changed", 0, first.size, changed_key),
        ChunkLocation("good", 0, first.size, key_of(tmp_path / "good")),
    ]
    with TempDownload(tmp_path) as temp:
        copied, stale = copy_local_chunk(str(tmp_path), first, where, temp)
        temp.finish()
        assert stale == ["gone", "changed"]
        assert copied == data[: first.size]
        assert Path(temp.path).read_bytes() == copied

    with TempDownload(tmp_path) as temp:
        copied, stale = copy_local_chunk(str(tmp_path), first, where[:2], temp)
        assert copied is None and stale == ["gone", "changed"]
        assert temp.size == 0


def test_chunks_read_for_an_upload_are_verified(tmp_path: Path) -> None:
    path = tmp_path / "f"
    data = pseudo_random(3 * MiB)
    path.write_bytes(data)
    manifest, key = chunk_file(str(path))
    body = read_for_upload(str(path), key, manifest.chunks[1:])
    decoder = RecordDecoder()
    assert [digest for digest, _ in decoder.feed(body)] == [r.hash for r in manifest.chunks[1:]]
    with path.open("r+b") as f:  # rewritten in place, identity kept
        f.seek(manifest.chunks[1].offset)
        f.write(b"!")
    os.utime(path, ns=(key.mtime_ns, key.mtime_ns))
    with pytest.raises(FileUnstable):
        read_for_upload(str(path), key, manifest.chunks[1:])


def test_a_fifo_where_an_indexed_file_was_is_stale_not_a_hang(tmp_path: Path) -> None:
    data = pseudo_random(MiB)
    first = manifest_of(data).chunks[0]
    (tmp_path / "was-a-file").write_bytes(data)
    key = key_of(tmp_path / "was-a-file")
    (tmp_path / "was-a-file").unlink()
    os.mkfifo(tmp_path / "was-a-file")
    where = [ChunkLocation("was-a-file", 0, first.size, key)]
    with TempDownload(tmp_path) as temp:
        assert copy_local_chunk(str(tmp_path), first, where, temp) == (None, ["was-a-file"])
