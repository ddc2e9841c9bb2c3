"""The chunk store on its own: live-file manifests keyed by stat identity, subtree forget and
rename, blobs, sources that stop being trusted when their file changes."""

from __future__ import annotations

import hashlib
import os
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from quantum_file_sync.chunks import manifest_of_file
from quantum_file_sync.chunkstore import ChunkStore, read_source
from quantum_file_sync.operations import Delete, FileMetadata, Move
from quantum_file_sync.paths import SafeRoot

from tests.support.waiting import eventually

MiB = 1024 * 1024


def data(seed: int, size: int = MiB) -> bytes:
    return random.Random(seed).randbytes(size)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[ChunkStore]:
    (tmp_path / "root").mkdir()
    chunk_store = ChunkStore(SafeRoot(tmp_path / "root"))
    await chunk_store.open()
    yield chunk_store
    await chunk_store.close()


def put(store: ChunkStore, rel: str, content: bytes) -> Path:
    path = store.root.join(rel)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


async def test_a_manifest_is_cut_once_per_version(store: ChunkStore) -> None:
    path = put(store, "a.bin", data(1))
    first = await store.manifest("a.bin")
    assert first is not None
    assert first[1] == manifest_of_file(path)[1]
    os.utime(path, ns=(0, 0))  # a new version by its identity: cut again
    again = await store.manifest("a.bin")
    assert again is not None and again[0].st_mtime_ns == 0
    assert await store.manifest("missing.bin") is None
    (store.root.join("dir")).mkdir()
    assert await store.manifest("dir") is None


async def test_sources_are_trusted_only_while_the_file_keeps_its_identity(
    store: ChunkStore,
) -> None:
    content = data(2, 3 * MiB)
    path = put(store, "f.bin", content)
    found = await store.manifest("f.bin")
    assert found is not None
    hashes = [ref.hash for ref in found[1].chunks]
    sources = await store.sources(hashes)
    assert set(sources) == set(hashes)
    for ref in found[1].chunks:
        assert read_source(sources[ref.hash]) == content[ref.offset : ref.end]
    path.write_bytes(data(3, 3 * MiB))  # a new version: its old chunks are nowhere now
    assert await store.missing(hashes) == hashes


async def test_a_source_changed_within_its_identity_is_not_read(store: ChunkStore) -> None:
    path = put(store, "g.bin", data(4))
    found = await store.manifest("g.bin")
    assert found is not None
    st, manifest = found
    sources = await store.sources([manifest.chunks[0].hash])
    path.write_bytes(data(5))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size and mtime
    assert read_source(sources[manifest.chunks[0].hash]) is None


async def test_forget_and_rename_take_exactly_the_subtree(store: ChunkStore) -> None:
    for rel in ("d/x.bin", "d/e/y.bin", "d0.bin", "d.txt"):
        put(store, rel, data(hash(rel) % 1000))
        assert await store.manifest(rel) is not None
    os.rename(store.root.join("d"), store.root.join("moved"))
    store.follow(
        Move("d", FileMetadata("moved", 0, None, "2024-01-01T00:00:00Z", is_directory=True))
    )
    await eventually(
        lambda: (
            store.db.execute("SELECT count(*) FROM files WHERE path LIKE 'moved/%'").fetchone()[0]
            == 2
        )
    )
    paths = {row[0] for row in store.db.execute("SELECT path FROM files")}
    assert paths == {"moved/x.bin", "moved/e/y.bin", "d0.bin", "d.txt"}
    found = await store.manifest("moved/e/y.bin")
    assert found is not None
    assert (await store.sources([found[1].chunks[0].hash])) != {}
    for rel in ("moved/x.bin", "moved/e/y.bin"):
        store.root.join(rel).unlink()
    store.follow(Delete("moved", True))
    await eventually(
        lambda: (
            {row[0] for row in store.db.execute("SELECT path FROM files")} == {"d0.bin", "d.txt"}
        )
    )


async def test_blobs_are_found_dropped_and_reaped(store: ChunkStore) -> None:
    chunk = data(6, 300_000)
    digest = hashlib.sha256(chunk).hexdigest()
    await store.store_blob(digest, chunk)
    sources = await store.sources([digest])
    assert read_source(sources[digest]) == chunk
    assert await store.reap(time.time() - 3600) == 0  # too young
    assert await store.reap(time.time() + 1) == 1
    assert await store.missing([digest]) == [digest]
    await store.store_blob(digest, chunk)
    await store.drop_blobs([digest])
    assert await store.missing([digest]) == [digest]


async def test_a_damaged_index_is_started_again(tmp_path: Path) -> None:
    (tmp_path / "root" / ".quantum" / "chunks").mkdir(parents=True)
    index = tmp_path / "root" / ".quantum" / "chunks" / "index.sqlite3"
    index.write_bytes(b"not a database" * 100)
    store = ChunkStore(SafeRoot(tmp_path / "root"))
    await store.open()
    try:
        put(store, "a.bin", data(7))
        assert await store.manifest("a.bin") is not None
    finally:
        await store.close()
    assert list(index.parent.glob("index.sqlite3.corrupt-*"))
