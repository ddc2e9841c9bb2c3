"""Block transfers: a large file moves as content-defined chunks, only those the other side lacks.

Upload: cut the file (or take its manifest from the chunk index), ask the server which chunks
it has nowhere (``POST /api/chunks/missing``), send those in batches of chunk records
(``POST /api/chunks``), then commit the manifest with the same precondition a plain upload
carries (``PUT`` with the manifest media type). A chunk the server lost between the two calls
(409 ``missing_chunks``) is sent and the commit tried again. Chunks that reached the server
before a cut connection count as present next time: an interrupted upload resumes for free.

Download: fetch the manifest, take every chunk some local file still holds (any file of the
chunk index whose stat identity is unchanged; each such chunk is hashed again after reading),
fetch the others (``POST /api/chunks/get``), and write them in order into the ordinary
:class:`~quantum_file_sync.client.local.TempDownload`, whose whole-file hash is checked and
which the settler installs exactly like a plain download.

Files below :data:`BLOCK_THRESHOLD`, and every file of a server without these routes, keep the
plain ``PUT``/``GET``. Contract: docs/chunks.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import deque
from collections.abc import Callable, Coroutine, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from quantum_file_sync.chunks import (
    RECORD_HEADER_MAX,
    ChunkRef,
    Manifest,
    ManifestError,
    parse_record_header,
    read_chunk,
    record_header,
)
from quantum_file_sync.client.chunk_index import ChunkIndex, ChunkLocation
from quantum_file_sync.client.local import (
    CHUNKED_HASH_MIN,
    INLINE_HASH_LIMIT,
    BackgroundHasher,
    FileUnstable,
    LocalTree,
    StatKey,
    TempDownload,
    chunk_file,
)
from quantum_file_sync.client.progress import SyncStats
from quantum_file_sync.client.remote import (
    HASH_BACKLOG,
    BlocksUnsupported,
    HashMismatch,
    MissingChunks,
    OnBytes,
    RemoteClient,
)
from quantum_file_sync.client.remote_view import RemoteEntry

BLOCK_THRESHOLD = CHUNKED_HASH_MIN
"""Files at least this large move by blocks; smaller ones cost one request either way."""
UPLOAD_BATCH_BYTES = 16 * 1024 * 1024
FETCH_BATCH_BYTES = 16 * 1024 * 1024
FETCH_AHEAD_BYTES = 64 * 1024 * 1024
"""Fetched chunks held in memory before the writer reaches them."""
HASHES_PER_REQUEST = 10_000
IN_FLIGHT = 2
"""Chunk requests of one transfer under way at once: the client reads the next batch while
the server stores the previous one (and the other way round for downloads)."""
COMMIT_ATTEMPTS = 3
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
"""O_NONBLOCK: a FIFO put where an indexed file was must not block the reading thread."""


@dataclass
class Transferred:
    """What one block transfer moved (logged with the transfer, added to the stats)."""

    manifest: Manifest
    chunks_sent: int = 0
    bytes_sent: int = 0
    chunks_fetched: int = 0
    bytes_fetched: int = 0
    chunks_reused: int = 0
    bytes_reused: int = 0
    whole_file: bool = False
    """Downloaded with one plain GET: no local file held any of its chunks."""

    def log_fields(self) -> dict[str, int | bool]:
        fields: dict[str, int | bool] = {
            "chunks": len(self.manifest.chunks),
            "whole_file": self.whole_file,
            "chunks_sent": self.chunks_sent,
            "chunk_bytes_sent": self.bytes_sent,
            "chunks_fetched": self.chunks_fetched,
            "chunk_bytes_fetched": self.bytes_fetched,
            "chunks_reused": self.chunks_reused,
            "chunk_bytes_reused": self.bytes_reused,
        }
        return {key: value for key, value in fields.items() if value or key == "chunks"}


# --- chunk records ---------------------------------------------------------------------------


def encode_records(chunks: Iterable[tuple[str, bytes]]) -> bytes:
    """A records body: ``HASH SIZE\\n`` then the bytes, for each chunk."""
    parts: list[bytes] = []
    for digest, data in chunks:
        parts.append(record_header(digest, len(data)))
        parts.append(data)
    return b"".join(parts)


class RecordDecoder:
    """The chunk records of a body that arrives in pieces of any size."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._header: tuple[str, int] | None = None

    def feed(self, piece: bytes) -> list[tuple[str, bytes]]:
        """The records completed by ``piece``; :class:`ManifestError` for a malformed body."""
        self._buffer += piece
        records: list[tuple[str, bytes]] = []
        while True:
            if self._header is None:
                newline = self._buffer.find(b"\n", 0, RECORD_HEADER_MAX)
                if newline < 0:
                    if len(self._buffer) >= RECORD_HEADER_MAX:
                        raise ManifestError("chunk record header too long")
                    return records
                self._header = parse_record_header(bytes(self._buffer[: newline + 1]))
                del self._buffer[: newline + 1]
            digest, size = self._header
            if len(self._buffer) < size:
                return records
            records.append((digest, bytes(self._buffer[:size])))
            del self._buffer[:size]
            self._header = None

    def finish(self) -> None:
        if self._buffer or self._header is not None:
            raise ManifestError("the chunk records end inside a record")


# --- planning --------------------------------------------------------------------------------


@dataclass
class ReusePlan:
    """How to build a file: the chunks local files hold, and those to fetch."""

    local: dict[str, list[ChunkLocation]] = field(default_factory=dict)
    """Distinct chunk hash → where local files held it when they were cut."""
    fetch: list[ChunkRef] = field(default_factory=list)
    """Distinct chunks no local file holds, in the order the file needs them."""


def plan_reuse(manifest: Manifest, locate: Callable[[str], list[ChunkLocation]]) -> ReusePlan:
    plan = ReusePlan()
    seen: set[str] = set()
    for ref in manifest.chunks:
        if ref.hash in seen:
            continue
        seen.add(ref.hash)
        where = [loc for loc in locate(ref.hash) if loc.size == ref.size]
        if where:
            plan.local[ref.hash] = where
        else:
            plan.fetch.append(ref)
    return plan


def batches(refs: Sequence[ChunkRef], max_bytes: int) -> Iterator[list[ChunkRef]]:
    """``refs`` in order, cut into runs of at most ``max_bytes`` and
    :data:`HASHES_PER_REQUEST` chunks (a run holds at least one chunk)."""
    batch: list[ChunkRef] = []
    size = 0
    for ref in refs:
        if batch and (size + ref.size > max_bytes or len(batch) >= HASHES_PER_REQUEST):
            yield batch
            batch, size = [], 0
        batch.append(ref)
        size += ref.size
    if batch:
        yield batch


def distinct(refs: Iterable[ChunkRef]) -> list[ChunkRef]:
    """The first occurrence of each chunk hash, in order."""
    first: dict[str, ChunkRef] = {}
    for ref in refs:
        first.setdefault(ref.hash, ref)
    return list(first.values())


async def all_or_none(jobs: list[Coroutine[Any, Any, None]]) -> None:
    """Run ``jobs`` concurrently; the first failure cancels the others and is raised as it is
    (callers tell its kind apart: FileUnstable, ConnectionLost...)."""
    tasks = [asyncio.ensure_future(job) for job in jobs]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


# --- reading local chunks (worker threads) ---------------------------------------------------


def read_for_upload(source: str, key: StatKey, refs: Sequence[ChunkRef]) -> bytes:
    """The records body of ``refs`` read from the file ``source``, which must still be
    version ``key`` with exactly these chunks (:class:`FileUnstable` otherwise)."""
    fd = os.open(source, _READ_FLAGS)
    try:
        if StatKey.of(os.fstat(fd)) != key:
            raise FileUnstable(source)
        chunks: list[tuple[str, bytes]] = []
        for ref in refs:
            data = read_chunk(fd, ref)
            if data is None:
                raise FileUnstable(source)
            chunks.append((ref.hash, data))
        if StatKey.of(os.fstat(fd)) != key:
            raise FileUnstable(source)
    finally:
        os.close(fd)
    return encode_records(chunks)


def copy_local_chunk(
    root: str, ref: ChunkRef, where: Sequence[ChunkLocation], temp: TempDownload
) -> tuple[bytes | None, list[str]]:
    """Append chunk ``ref`` to ``temp`` (not hashed into it: the caller feeds its hasher)
    from the first local file that still holds it. Returns the bytes (``None``: no file held
    it, nothing was written) and the paths found stale on the way."""
    stale: list[str] = []
    for location in where:
        try:
            fd = os.open(f"{root}/{location.path}", _READ_FLAGS)
        except OSError:
            stale.append(location.path)
            continue
        try:
            data = None
            if StatKey.of(os.fstat(fd)) == location.key:
                data = read_chunk(fd, ChunkRef(ref.hash, location.offset, ref.size))
        finally:
            os.close(fd)
        if data is None:  # changed since it was cut
            stale.append(location.path)
            continue
        temp.write(data, hashed=False)
        return data, stale
    return None, stale


# --- transfers -------------------------------------------------------------------------------


class BlockTransfers:
    def __init__(
        self,
        remote: RemoteClient,
        index: ChunkIndex,
        local: LocalTree,
        stats: SyncStats,
        log: Any,
        threshold: int = BLOCK_THRESHOLD,
    ) -> None:
        self.remote = remote
        self.index = index
        self.local = local
        self.stats = stats
        self.log = log
        self.threshold = threshold
        self.uploads_supported = True
        self.downloads_supported = True
        """Until the server showed it has no chunk routes (an older file_sync)."""

    # --- upload ------------------------------------------------------------------------------

    async def upload(
        self,
        path: str,
        key: StatKey,
        digest: str,
        *,
        if_match: str | None,
        on_bytes: OnBytes | None = None,
    ) -> tuple[RemoteEntry, Transferred | None]:
        """Upload the local file ``path`` (version ``key``/``digest``) by blocks when it is
        large enough and the server can, else with a plain PUT (``None``: no blocks)."""
        source = self.local.abs(path)
        if key.size >= self.threshold and self.uploads_supported:
            manifest = await self._manifest_of(path, key, digest)
            moved = Transferred(manifest)
            try:
                entry = await self._upload_blocks(path, key, moved, if_match, on_bytes)
            except BlocksUnsupported as exc:
                self.uploads_supported = False
                self.log.info("the server takes no chunks: plain uploads", reason=str(exc))
            else:
                return entry, moved
        entry = await self.remote.upload(
            path, source, key, digest, if_match=if_match, on_bytes=on_bytes
        )
        return entry, None

    async def _manifest_of(self, path: str, key: StatKey, digest: str) -> Manifest:
        known = self.index.manifest(path, key)
        if known is not None and known.hash == digest:
            return known
        manifest, _ = await asyncio.to_thread(chunk_file, self.local.abs(path), key)
        if manifest.hash != digest:
            raise FileUnstable(path)  # it changed after it was hashed
        self.index.record(path, key, manifest)
        return manifest

    async def _upload_blocks(
        self,
        path: str,
        key: StatKey,
        moved: Transferred,
        if_match: str | None,
        on_bytes: OnBytes | None,
    ) -> RemoteEntry:
        manifest = moved.manifest
        chunks = distinct(manifest.chunks)
        missing: set[str] = set()
        for batch in batches(chunks, 2**63):
            missing.update(await self.remote.missing_chunks([r.hash for r in batch], path))
        await self._send(path, key, [r for r in chunks if r.hash in missing], moved, on_bytes)
        if self.local.stat_key(path) != key:  # (also when no chunk had to be read)
            raise FileUnstable(path)
        for attempt in range(COMMIT_ATTEMPTS):
            try:
                entry = await self.remote.commit_manifest(path, manifest, if_match=if_match)
                break
            except MissingChunks as exc:
                if attempt == COMMIT_ATTEMPTS - 1:
                    raise
                lost = set(exc.hashes)
                self.log.debug("chunks vanished before the commit", path=path, count=len(lost))
                await self._send(path, key, [r for r in chunks if r.hash in lost], moved, on_bytes)
        if on_bytes is not None:
            on_bytes(max(key.size - moved.bytes_sent, 0))
        return entry

    async def _send(
        self,
        path: str,
        key: StatKey,
        refs: list[ChunkRef],
        moved: Transferred,
        on_bytes: OnBytes | None,
    ) -> None:
        source = self.local.abs(path)
        pending = deque(batches(refs, UPLOAD_BATCH_BYTES))

        async def send_batches() -> None:
            while pending:
                batch = pending.popleft()
                body = await asyncio.to_thread(read_for_upload, source, key, batch)
                await self.remote.upload_chunks(body)
                size = sum(ref.size for ref in batch)
                moved.chunks_sent += len(batch)
                moved.bytes_sent += size
                self.stats.chunks_uploaded += len(batch)
                self.stats.chunk_bytes_uploaded += size
                if on_bytes is not None:
                    on_bytes(size)

        await all_or_none([send_batches() for _ in range(min(IN_FLIGHT, len(pending)))])

    # --- download ----------------------------------------------------------------------------

    async def download(
        self,
        path: str,
        remote: RemoteEntry,
        temp: TempDownload,
        current: StatKey | None,
        on_bytes: OnBytes | None = None,
    ) -> Transferred | None:
        """Fill ``temp`` with ``remote``'s version of ``path``, by blocks when it is large
        enough and the server can (``current``: what the folder holds at ``path`` now), else
        with a plain GET (``None``). Raises HashMismatch unless the result has the hash."""
        assert remote.hash is not None
        if remote.size >= self.threshold and self.downloads_supported:
            try:
                manifest = await self.remote.manifest(path)
            except BlocksUnsupported as exc:
                if exc.permanent:
                    self.downloads_supported = False
                    self.log.info("the server sends no manifests: plain downloads")
            else:
                if manifest.hash != remote.hash:
                    raise HashMismatch(f"{path}: the server now has {manifest.hash[:12]}…")
                return await self._download_blocks(path, manifest, temp, current, on_bytes)
        await self.remote.download(path, remote.hash, temp, on_bytes)
        return None

    def installed(self, path: str, key: StatKey, moved: Transferred | None) -> None:
        """A block download was installed at ``path`` with identity ``key``."""
        if moved is not None:
            self.index.record(path, key, moved.manifest)

    async def _download_blocks(
        self,
        path: str,
        manifest: Manifest,
        temp: TempDownload,
        current: StatKey | None,
        on_bytes: OnBytes | None,
    ) -> Transferred:
        if current is not None and not current.is_dir and current.size > INLINE_HASH_LIMIT:
            await self._index_current(path, current)
        plan = plan_reuse(manifest, self.index.locations)
        moved = Transferred(manifest)
        if not plan.local:  # nothing to reuse: one streamed GET beats chunk requests
            await self.remote.download(path, manifest.hash, temp, on_bytes)
            moved.whole_file = True
            return moved
        fetcher = _Fetcher(self.remote, plan.fetch)
        root = str(self.local.root)
        written: dict[str, int] = {}  # chunk hash → its offset in temp (repeats are read back)
        reader = os.open(temp.path, _READ_FLAGS)
        # The whole-file hash runs on a thread of its own, next to the one that reads,
        # verifies and writes the chunks: the two SHA-256 passes take two cores.
        hasher = BackgroundHasher(temp.hasher)
        try:
            for ref in manifest.chunks:
                data: bytes | None
                earlier = written.get(ref.hash)
                if earlier is not None:  # a repeat: read back what was written
                    data = os.pread(reader, ref.size, earlier)
                    await asyncio.to_thread(temp.write, data, hashed=False)
                    reused = True
                else:
                    data = None
                    if ref.hash in plan.local:
                        data = await self._copy_local(root, ref, plan.local[ref.hash], temp)
                    reused = data is not None
                    if data is None:
                        data = await (
                            fetcher.fetch_now(ref)  # no local file holds it any more
                            if ref.hash in plan.local
                            else fetcher.take(ref)
                        )
                        await asyncio.to_thread(temp.write, data, hashed=False)
                hasher.update(data)
                while hasher.backlog > HASH_BACKLOG:
                    await asyncio.sleep(0.002)
                if reused:
                    moved.chunks_reused += 1
                    moved.bytes_reused += ref.size
                else:
                    moved.chunks_fetched += 1
                    moved.bytes_fetched += ref.size
                written[ref.hash] = temp.size - ref.size
                if on_bytes is not None:
                    on_bytes(ref.size)
        finally:
            await hasher.close()
            os.close(reader)
            await fetcher.close()
        temp.finish()
        self.stats.chunks_downloaded += moved.chunks_fetched
        self.stats.chunk_bytes_downloaded += moved.bytes_fetched
        self.stats.chunks_reused += moved.chunks_reused
        self.stats.chunk_bytes_reused += moved.bytes_reused
        if temp.size != manifest.size or temp.hexdigest() != manifest.hash:
            raise HashMismatch(
                f"{path}: the chunks hash to {temp.hexdigest()[:12]}…, "
                f"announced {manifest.hash[:12]}…"
            )
        return moved

    async def _index_current(self, path: str, current: StatKey) -> None:
        """Cut the old version at ``path`` if the index lacks it: its chunks are the likeliest
        to be reused, and reading it costs far less than fetching them."""
        if self.index.manifest(path, current) is not None:
            return
        try:
            manifest, key = await asyncio.to_thread(chunk_file, self.local.abs(path), current)
        except (FileUnstable, OSError):
            return
        self.index.record(path, key, manifest)

    async def _copy_local(
        self, root: str, ref: ChunkRef, where: list[ChunkLocation], temp: TempDownload
    ) -> bytes | None:
        data, stale = await asyncio.to_thread(copy_local_chunk, root, ref, where, temp)
        for gone in dict.fromkeys(stale):
            self.index.forget(gone)
        return data


class _Fetcher:
    """Fetches chunks in the order the writer needs them, a batch at a time, staying at most
    about :data:`FETCH_AHEAD_BYTES` ahead of it."""

    def __init__(self, remote: RemoteClient, refs: list[ChunkRef]) -> None:
        self.remote = remote
        loop = asyncio.get_running_loop()
        self._arrived: dict[str, asyncio.Future[bytes]] = {
            ref.hash: loop.create_future() for ref in refs
        }
        self._held = 0
        self._room = asyncio.Event()
        self._room.set()
        self._task = asyncio.create_task(self._run(refs), name="fetch chunks") if refs else None

    async def take(self, ref: ChunkRef) -> bytes:
        """Chunk ``ref`` of the plan, once it arrived (each is taken once)."""
        data = await asyncio.shield(self._arrived[ref.hash])
        del self._arrived[ref.hash]
        self._held -= ref.size
        if self._held < FETCH_AHEAD_BYTES:
            self._room.set()
        return data

    async def fetch_now(self, ref: ChunkRef) -> bytes:
        """One chunk outside the plan (a local copy turned out stale)."""
        found = await self._fetch([ref])
        return found[ref.hash]

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for future in self._arrived.values():
            if future.done() and not future.cancelled():
                future.exception()  # retrieved: no "never retrieved" warning
            future.cancel()

    async def _run(self, refs: list[ChunkRef]) -> None:
        pending = deque(batches(refs, FETCH_BATCH_BYTES))

        async def fetch_batches() -> None:
            while pending:
                await self._room.wait()
                if not pending:
                    return
                batch = pending.popleft()
                found = await self._fetch(batch)
                for ref in batch:
                    future = self._arrived.get(ref.hash)
                    if future is not None and not future.done():
                        future.set_result(found[ref.hash])
                        self._held += ref.size
                if self._held >= FETCH_AHEAD_BYTES:
                    self._room.clear()

        try:
            await all_or_none([fetch_batches() for _ in range(min(IN_FLIGHT, len(pending)))])
        except Exception as exc:
            for future in self._arrived.values():
                if not future.done():
                    future.set_exception(exc)

    async def _fetch(self, batch: list[ChunkRef]) -> dict[str, bytes]:
        wanted = {ref.hash: ref.size for ref in batch}
        found: dict[str, bytes] = {}
        decoder = RecordDecoder()
        try:
            async with contextlib.aclosing(self.remote.fetch_chunks(list(wanted))) as pieces:
                async for piece in pieces:
                    for digest, data in decoder.feed(piece):
                        if wanted.get(digest) == len(data):
                            found[digest] = data
            decoder.finish()
        except ManifestError as exc:
            raise HashMismatch(f"malformed chunk records: {exc}") from None
        lacking = [digest for digest in wanted if digest not in found]
        if lacking:  # the file changed on the server meanwhile: a new manifest is needed
            raise HashMismatch(f"the server no longer has chunk {lacking[0][:12]}…")
        return found
