"""BlockTransfers against a scripted server: the answers a real one gives only in races
(chunks vanishing before the commit, a file changing on the server) and older servers."""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from quantum_file_sync.chunks import MANIFEST_MEDIA_TYPE, RECORDS_MEDIA_TYPE, Manifest
from quantum_file_sync.client.blocks import BlockTransfers, RecordDecoder, encode_records
from quantum_file_sync.client.chunk_index import ChunkIndex
from quantum_file_sync.client.ignore import IgnoreRules
from quantum_file_sync.client.local import (
    FileUnstable,
    LocalTree,
    StatKey,
    TempDownload,
    chunk_file,
)
from quantum_file_sync.client.logs import Logger
from quantum_file_sync.client.progress import SyncStats
from quantum_file_sync.client.remote import (
    HashMismatch,
    MissingChunks,
    PreconditionFailed,
    RemoteClient,
)
from quantum_file_sync.client.remote_view import RemoteEntry
from quantum_file_sync.client.state import StateDB

from tests.file_sync.conftest import StartQuantum, file_sync_config

MiB = 1024 * 1024


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Scripted:
    """A file_sync server reduced to the block routes, with knobs for the rare answers."""

    files: dict[str, bytes] = field(default_factory=dict)
    chunks: dict[str, bytes] = field(default_factory=dict)
    manifests: dict[str, Manifest] = field(default_factory=dict)
    lose_before_commit: list[set[str]] = field(default_factory=list)
    """Chunks forgotten just before each commit (one set per commit)."""
    manifest_status: int = 200
    withhold: set[str] = field(default_factory=set)
    """Chunks ``chunks/get`` does not send."""
    uploaded: list[str] = field(default_factory=list)
    commits: list[dict[str, Any]] = field(default_factory=list)
    plain_gets: int = 0

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * MiB)
        app.router.add_post("/api/chunks/missing", self.missing)
        app.router.add_post("/api/chunks/get", self.get_chunks)
        app.router.add_post("/api/chunks", self.upload)
        app.router.add_get("/api/files/{path:.*}", self.get_file)
        app.router.add_put("/api/files/{path:.*}", self.put_file)
        return app

    async def missing(self, request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response({"missing": [h for h in body["chunks"] if h not in self.chunks]})

    async def upload(self, request: web.Request) -> web.Response:
        assert request.content_type == RECORDS_MEDIA_TYPE
        stored = []
        for digest, data in RecordDecoder().feed(await request.read()):
            assert sha(data) == digest
            self.chunks[digest] = data
            stored.append(digest)
        self.uploaded += stored
        return web.json_response({"stored": stored})

    async def get_chunks(self, request: web.Request) -> web.StreamResponse:
        wanted = (await request.json())["chunks"]
        have = [(h, self.chunks[h]) for h in wanted if h in self.chunks and h not in self.withhold]
        return web.Response(body=encode_records(have), content_type=RECORDS_MEDIA_TYPE)

    async def get_file(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info["path"]
        if request.query.get("manifest") == "true":
            if self.manifest_status != 200:
                body = {"error": "no", "code": "x"}
                return web.json_response(body, status=self.manifest_status)
            manifest = self.manifests[path]
            return web.json_response(manifest.to_json(path), content_type=MANIFEST_MEDIA_TYPE)
        self.plain_gets += 1
        return web.Response(body=self.files[path], headers={"ETag": f'"{sha(self.files[path])}"'})

    async def put_file(self, request: web.Request) -> web.Response:
        path = request.match_info["path"]
        assert request.content_type == MANIFEST_MEDIA_TYPE
        body = json.loads(await request.read())
        self.commits.append({"body": body, "if_none_match": request.headers.get("If-None-Match")})
        if self.lose_before_commit:
            for digest in self.lose_before_commit.pop(0):
                self.chunks.pop(digest, None)
        missing = [c["hash"] for c in body["chunks"] if c["hash"] not in self.chunks]
        if missing:
            reply = {"error": "lost", "code": "missing_chunks", "missing": missing}
            return web.json_response(reply, status=409)
        data = b"".join(self.chunks[c["hash"]] for c in body["chunks"])
        assert sha(data) == body["hash"]
        self.files[path] = data
        meta = {
            "path": path,
            "size": len(data),
            "hash": body["hash"],
            "modified": "2026-01-01T00:00:00Z",
            "is_directory": False,
        }
        return web.json_response(meta, status=201)

    def publish(self, path: str, data: bytes, manifest: Manifest) -> None:
        self.files[path] = data
        self.manifests[path] = manifest
        for ref in manifest.chunks:
            self.chunks[ref.hash] = data[ref.offset : ref.end]


@dataclass
class Rig:
    server: Scripted
    blocks: BlockTransfers
    root: Path
    stats: SyncStats


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    scripted = Scripted()
    root = tmp_path / "folder"
    root.mkdir()
    (tmp_path / "tmp").mkdir()
    test_server = TestServer(scripted.app())
    await test_server.start_server()
    state = StateDB(tmp_path / "state.sqlite3")
    async with aiohttp.ClientSession() as session:
        remote = RemoteClient(session, str(test_server.make_url("")).rstrip("/"), "t", None)
        local = LocalTree(root, tmp_path / "tmp", IgnoreRules.load(root, ()))
        stats = SyncStats()
        log = Logger(100, lambda _line: None, console=False)
        yield Rig(
            scripted, BlockTransfers(remote, ChunkIndex(state), local, stats, log), root, stats
        )
    await test_server.close()
    state.close()


def write(root: Path, name: str, data: bytes) -> tuple[Manifest, StatKey]:
    (root / name).write_bytes(data)
    return chunk_file(str(root / name))


def random_bytes(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


async def test_chunks_lost_before_the_commit_are_sent_again(rig: Rig) -> None:
    manifest, key = write(rig.root, "f.bin", random_bytes(6 * MiB, 1))
    lost = {manifest.chunks[1].hash, manifest.chunks[3].hash}
    rig.server.lose_before_commit = [lost]
    entry, moved = await rig.blocks.upload("f.bin", key, manifest.hash, if_match=None)
    assert entry.hash == manifest.hash
    assert rig.server.files["f.bin"] == (rig.root / "f.bin").read_bytes()
    assert len(rig.server.commits) == 2
    assert rig.server.commits[0]["if_none_match"] == "*"
    assert moved is not None and moved.chunks_sent == len(manifest.chunks) + len(lost)
    assert sorted(rig.server.uploaded[len(manifest.chunks) :]) == sorted(lost)


async def test_chunks_that_keep_vanishing_end_the_upload(rig: Rig) -> None:
    manifest, key = write(rig.root, "f.bin", random_bytes(3 * MiB, 2))
    every = {ref.hash for ref in manifest.chunks}
    rig.server.lose_before_commit = [set(every) for _ in range(5)]
    with pytest.raises(MissingChunks):
        await rig.blocks.upload("f.bin", key, manifest.hash, if_match=None)
    assert len(rig.server.commits) == 3
    assert "f.bin" not in rig.server.files


async def test_an_upload_of_a_file_that_changed_meanwhile_is_not_committed(rig: Rig) -> None:
    manifest, key = write(rig.root, "f.bin", random_bytes(3 * MiB, 3))
    (rig.root / "f.bin").write_bytes(random_bytes(3 * MiB, 4))
    with pytest.raises(FileUnstable):
        await rig.blocks.upload("f.bin", key, manifest.hash, if_match=None)
    assert rig.server.commits == []


async def test_small_files_and_servers_without_chunks_use_plain_transfers(rig: Rig) -> None:
    data = random_bytes(2 * MiB, 5)
    manifest, _ = write(rig.root, "elsewhere.bin", data)
    rig.server.publish("f.bin", data, manifest)
    entry = RemoteEntry("f.bin", False, manifest.hash, len(data), "2026-01-01T00:00:00Z")

    rig.server.manifest_status = 404  # this file only (gone meanwhile?): try blocks next time
    with TempDownload(rig.root.parent / "tmp") as temp:
        assert await rig.blocks.download("f.bin", entry, temp, None) is None
        assert temp.hexdigest() == manifest.hash
    assert rig.blocks.downloads_supported and rig.server.plain_gets == 1

    rig.server.manifest_status = 415  # the server does not serve manifests at all
    with TempDownload(rig.root.parent / "tmp") as temp:
        assert await rig.blocks.download("f.bin", entry, temp, None) is None
    assert not rig.blocks.downloads_supported and rig.server.plain_gets == 2


async def test_a_download_takes_local_chunks_and_fetches_what_no_file_holds(rig: Rig) -> None:
    old = random_bytes(8 * MiB, 6)
    old_manifest, old_key = write(rig.root, "old.bin", old)
    rig.blocks.index.record("old.bin", old_key, old_manifest)
    new = old[: 4 * MiB] + b"changed" + old[4 * MiB :]
    new_manifest, _ = write(rig.root.parent, "new.bin", new)
    rig.server.publish("new.bin", new, new_manifest)
    entry = RemoteEntry("new.bin", False, new_manifest.hash, len(new), "")
    with TempDownload(rig.root.parent / "tmp") as temp:
        moved = await rig.blocks.download("new.bin", entry, temp, None)
        assert Path(temp.path).read_bytes() == new
    assert moved is not None and 1 <= moved.chunks_fetched <= 2
    assert moved.chunks_reused == len(new_manifest.chunks) - moved.chunks_fetched
    assert rig.stats.chunks_reused == moved.chunks_reused


async def test_a_local_file_changed_in_place_is_not_trusted(rig: Rig) -> None:
    data = random_bytes(4 * MiB, 7)
    manifest, key = write(rig.root, "same.bin", data)
    rig.blocks.index.record("same.bin", key, manifest)
    with (rig.root / "same.bin").open("r+b") as f:  # other bytes, same identity
        f.write(b"X")
    os.utime(rig.root / "same.bin", ns=(key.mtime_ns, key.mtime_ns))
    rig.server.publish("copy.bin", data, manifest)
    entry = RemoteEntry("copy.bin", False, manifest.hash, len(data), "")
    with TempDownload(rig.root.parent / "tmp") as temp:
        moved = await rig.blocks.download("copy.bin", entry, temp, None)
        assert Path(temp.path).read_bytes() == data
    assert moved is not None and moved.chunks_fetched == 1  # the first chunk, fetched instead
    assert rig.blocks.index.manifest("same.bin", key) is None  # and the stale entry dropped


async def test_the_old_version_at_the_path_is_cut_for_reuse_when_the_index_lacks_it(
    rig: Rig,
) -> None:
    old = random_bytes(6 * MiB, 8)
    _, key = write(rig.root, "f.bin", old)  # never indexed (say, from an older client)
    new = old[:-10] + b"0123456789"
    manifest, _ = write(rig.root.parent, "f.bin", new)
    rig.server.publish("f.bin", new, manifest)
    entry = RemoteEntry("f.bin", False, manifest.hash, len(new), "")
    with TempDownload(rig.root.parent / "tmp") as temp:
        moved = await rig.blocks.download("f.bin", entry, temp, key)
        assert Path(temp.path).read_bytes() == new
    assert moved is not None and moved.chunks_fetched == 1


async def test_a_file_that_changes_on_the_server_mid_download_is_a_hash_mismatch(
    rig: Rig,
) -> None:
    data = random_bytes(3 * MiB, 9)
    manifest, _ = write(rig.root.parent, "f.bin", data)
    rig.server.publish("f.bin", data, manifest)
    local_manifest, key = write(rig.root, "local.bin", data[: manifest.chunks[-1].offset])
    rig.blocks.index.record("local.bin", key, local_manifest)  # all but the last chunk
    entry = RemoteEntry("f.bin", False, manifest.hash, len(data), "")
    rig.server.withhold = {manifest.chunks[-1].hash}  # gone with the version it belonged to
    with TempDownload(rig.root.parent / "tmp") as temp, pytest.raises(HashMismatch):
        await rig.blocks.download("f.bin", entry, temp, None)

    rig.server.withhold = set()
    stale = RemoteEntry("f.bin", False, "0" * 64, len(data), "")  # the listing is behind
    with TempDownload(rig.root.parent / "tmp") as temp, pytest.raises(HashMismatch):
        await rig.blocks.download("f.bin", stale, temp, None)


# --- against the real server -----------------------------------------------------------------


@pytest.fixture
async def real(start_quantum: StartQuantum, tmp_path: Path) -> AsyncIterator[tuple[Rig, Path]]:
    server = start_quantum(file_sync_config(enable_upload=True))
    root = tmp_path / "folder"
    root.mkdir()
    (tmp_path / "tmp").mkdir()
    state = StateDB(tmp_path / "state.sqlite3")
    async with aiohttp.ClientSession() as session:
        remote = RemoteClient(session, server.url, "t", None)
        local = LocalTree(root, tmp_path / "tmp", IgnoreRules.load(root, ()))
        stats = SyncStats()
        log = Logger(100, lambda _line: None, console=False)
        blocks = BlockTransfers(remote, ChunkIndex(state), local, stats, log)
        yield Rig(Scripted(), blocks, root, stats), server.root
    state.close()


async def test_block_commits_carry_the_plain_uploads_preconditions(
    real: tuple[Rig, Path],
) -> None:
    rig, server_root = real
    first, key = write(rig.root, "f.bin", random_bytes(3 * MiB, 10))
    entry, moved = await rig.blocks.upload("f.bin", key, first.hash, if_match=None)
    assert moved is not None and entry.hash == first.hash
    assert (server_root / "f.bin").read_bytes() == (rig.root / "f.bin").read_bytes()
    with pytest.raises(PreconditionFailed):  # "create only", but it exists now
        await rig.blocks.upload("f.bin", key, first.hash, if_match=None)

    second, key = write(rig.root, "f.bin", random_bytes(3 * MiB, 11))
    with pytest.raises(PreconditionFailed):  # based on a version the server does not have
        await rig.blocks.upload("f.bin", key, second.hash, if_match="0" * 64)
    entry, moved = await rig.blocks.upload("f.bin", key, second.hash, if_match=first.hash)
    assert entry.hash == second.hash
    assert (server_root / "f.bin").read_bytes() == (rig.root / "f.bin").read_bytes()


async def test_a_file_no_local_file_shares_a_chunk_with_comes_in_one_plain_get(rig: Rig) -> None:
    data = random_bytes(3 * MiB, 12)
    manifest, _ = write(rig.root.parent, "f.bin", data)
    rig.server.publish("f.bin", data, manifest)
    entry = RemoteEntry("f.bin", False, manifest.hash, len(data), "")
    with TempDownload(rig.root.parent / "tmp") as temp:
        moved = await rig.blocks.download("f.bin", entry, temp, None)
        assert Path(temp.path).read_bytes() == data
    assert moved is not None and moved.whole_file and moved.chunks_fetched == 0
    assert rig.server.plain_gets == 1
    assert moved.manifest == manifest  # recorded in the index once installed
