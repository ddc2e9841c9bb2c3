"""Where the bytes of every known chunk are: a range of a live file, or a stored blob.

Live files stay plain files in root. For each one the store remembers its manifest together
with the stat identity (:class:`~quantum_file_sync.metadata.StatKey`) the file had when it was
cut: a location inside a live file is trusted only while the file still has that identity, and
the bytes read from it are checked against the chunk's hash anyway. Chunks that are in no live
file — uploaded and not committed yet — are *blobs*, one file each under
``ROOT/.quantum/chunks/``, written with temp + fsync + rename and named by their hash.

The index is SQLite (WAL) on one dedicated thread, like the journal. It is a cache of what the
files on disk and the blobs hold: losing it costs re-cutting files, never data. Nodes that share
a root (Redis broker) each keep their own index, named after their host (SQLite is safe for
several processes of one host, not across hosts on a network filesystem); blobs are files, so a
chunk one node stored is found by every node. Every file is
cut once per version, in the background after it changes, or on demand (a manifest request,
or an upload naming its target path).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import stat
import struct
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import structlog

from quantum_file_sync.chunks import ChunkRef, Manifest, manifest_of_fd, read_chunk
from quantum_file_sync.metadata import StatKey
from quantum_file_sync.operations import Delete, Move, Operation, Purge
from quantum_file_sync.paths import PathError, SafeRoot
from quantum_file_sync.reads import open_for_reading

T = TypeVar("T")
STORE_DIR = (".quantum", "chunks")
DB_NAME = "index.sqlite3"
_PACKED = struct.Struct(">32sI")
_STALE_TEMP = 3600.0
"""A blob's temp file this old was left by a crash (writing one takes milliseconds)."""
_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY,
    dev INTEGER NOT NULL, ino INTEGER NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    hash TEXT NOT NULL,
    chunks BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS locations (
    hash BLOB NOT NULL, path TEXT NOT NULL, offset INTEGER NOT NULL, size INTEGER NOT NULL,
    PRIMARY KEY (hash, path, offset)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS locations_by_path ON locations (path);
CREATE TABLE IF NOT EXISTS blobs (
    hash BLOB PRIMARY KEY, size INTEGER NOT NULL, stored REAL NOT NULL
) WITHOUT ROWID;
"""


@dataclass(frozen=True, slots=True)
class Source:
    """Where to read one chunk: ``size`` bytes at ``offset`` of the file at ``path``."""

    digest: str
    path: str
    offset: int
    size: int
    live: str | None
    """The live file's relative path, or ``None`` for a blob."""


_SUBTREE = "(path = ? OR (path > ? AND path < ?))"
"""A path and everything below it, as a range the primary key / path index answers."""


def _subtree(rel: str) -> tuple[str, str, str]:
    return (rel, rel + "/", rel + "0")  # "0" is the character after "/"


def pack(chunks: Sequence[ChunkRef]) -> bytes:
    return b"".join(_PACKED.pack(bytes.fromhex(c.hash), c.size) for c in chunks)


def unpack(data: bytes) -> tuple[ChunkRef, ...]:
    refs: list[ChunkRef] = []
    offset = 0
    for raw, size in _PACKED.iter_unpack(data):
        refs.append(ChunkRef(raw.hex(), offset, size))
        offset += size
    return tuple(refs)


OnManifest = Callable[[str, os.stat_result, Manifest], None]
"""Told the manifest of a live file's current version whenever the store learns or finds it."""
MoreSources = Callable[[list[str]], dict[str, Source]]
"""Where else chunks can be read (history's blobs and pins); blocking, any thread."""


class ChunkStore:
    def __init__(
        self,
        root: SafeRoot,
        on_manifest: OnManifest | None = None,
        *,
        db_name: str = DB_NAME,
        blob_expiry: float = 86400.0,
    ) -> None:
        self.root = root
        self._blob_expiry = blob_expiry
        self._on_manifest = on_manifest
        self._db_name = db_name
        self.base = root.path.joinpath(*STORE_DIR)
        self._executor: ThreadPoolExecutor | None = None
        self._db: sqlite3.Connection | None = None
        self._pending: dict[str, None] = {}
        self._renames: deque[tuple[str, str | None]] = deque()
        """Moves (source, target) and deletions (path, ``None``), in journal order."""
        self._logger = structlog.get_logger("quantum.file_sync.chunks")
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._cutting: dict[str, asyncio.Future[tuple[os.stat_result, Manifest] | None]] = {}
        self.more_sources: MoreSources | None = None
        self._readers = threading.local()

    # -- lifecycle -----------------------------------------------------------------------------

    async def open(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="quantum-chunks")
        await self._run(self._open_db)
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._warm(), name="quantum-chunk-warmer"),
            loop.create_task(self._reap_expired(), name="quantum-chunk-reaper"),
        ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._executor is not None:
            await self._run(self._close_db)
            self._executor.shutdown(wait=True)
            self._executor = None

    def _open_db(self) -> None:
        (self.base / "tmp").mkdir(parents=True, exist_ok=True)
        self._remove_stale_temps()
        path = self.base / self._db_name
        try:
            self._db = self._connect(path)
        except sqlite3.DatabaseError:
            # Only a cache of what is on disk: start again rather than refuse to serve.
            with contextlib.suppress(OSError):
                path.rename(path.with_name(f"{path.name}.corrupt-{int(time.time())}"))
            self._db = self._connect(path)

    def _remove_stale_temps(self) -> None:
        """Remove blobs cut short by a crash. Only old ones: on a shared root, another node
        may be writing a blob there right now."""
        stale = time.time() - _STALE_TEMP
        for leftover in (self.base / "tmp").iterdir():
            with contextlib.suppress(OSError):
                if leftover.stat().st_mtime < stale:
                    leftover.unlink()

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
        db.execute("SELECT count(*) FROM files").fetchone()
        return db

    def _close_db(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    async def _run(self, function: Callable[..., T], *args: Any) -> T:
        assert self._executor is not None, "the chunk store is not open"
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    @property
    def db(self) -> sqlite3.Connection:
        assert self._db is not None
        return self._db

    # -- live files ----------------------------------------------------------------------------

    def schedule(self, paths: Iterable[str]) -> None:
        """Cut these live files in the background (they changed, or are new)."""
        for rel in paths:
            self._pending[rel] = None
        self._wake.set()

    async def manifest(self, rel: str) -> tuple[os.stat_result, Manifest] | None:
        """The manifest of the live file at ``rel`` now (cut if its version is not known
        yet); ``None`` when it is not a regular file. Concurrent callers share one cut."""
        running = self._cutting.get(rel)
        if running is not None:
            return await asyncio.shield(running)
        future: asyncio.Future[tuple[os.stat_result, Manifest] | None]
        future = asyncio.get_running_loop().create_future()
        self._cutting[rel] = future
        try:
            result = await self._manifest(rel)
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # retrieved here; waiters re-raise it
            raise
        else:
            future.set_result(result)
            return result
        finally:
            del self._cutting[rel]

    async def _manifest(self, rel: str) -> tuple[os.stat_result, Manifest] | None:
        st = await asyncio.to_thread(self._stat_live, rel)
        if st is None or not stat.S_ISREG(st.st_mode):
            # Gone: forget it and what was below it. A directory now: its files are live.
            await self._run(self._forget_live, rel, st is None)
            return None
        manifest = await self._run(self._known_manifest, rel, StatKey.of(st))
        if manifest is None:
            cut = await asyncio.to_thread(self._cut, rel)
            if cut is None:
                return None
            st, manifest = cut
            await self._run(self._record_live, rel, StatKey.of(st), manifest)
        if self._on_manifest is not None:
            self._on_manifest(rel, st, manifest)
        return st, manifest

    def _stat_live(self, rel: str) -> os.stat_result | None:
        """What is at ``rel``; ``None`` when nothing is, or when the way there is a link that
        leaves root or leads into the reserved area (a download refuses those too: its chunks
        must not be served either)."""
        try:
            self.root.resolve_for_read(rel)
            return os.stat(self.root.join(rel), follow_symlinks=False)
        except (OSError, PathError):
            return None

    def _cut(self, rel: str) -> tuple[os.stat_result, Manifest] | None:
        try:
            fd = open_for_reading(self.root.join(rel), flags=os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            return None
        try:
            st, manifest = manifest_of_fd(fd)
            if StatKey.of(os.fstat(fd)) != StatKey.of(st):
                return None  # written to while being cut: its own change event follows
            return st, manifest
        except (OSError, ValueError):
            return None
        finally:
            os.close(fd)

    async def record_live(self, rel: str, key: StatKey, manifest: Manifest) -> bool:
        """The live file at ``rel`` (version ``key``) is ``manifest``: a commit that knows it.
        ``False`` (nothing recorded) when the file is not that version any more."""
        return await self._run(self._record_live, rel, key, manifest)

    async def forget_sources(self, sources: Iterable[Source]) -> None:
        """These sources did not hold their chunk: forget them, and cut their live files again
        now, so the chunks still in them are found by the next request (a client answered
        "missing" uploads just the missing chunks and commits again)."""
        sources = list(sources)
        await self._run(self._drop_blobs, [s.digest for s in sources if s.live is None])
        for live in dict.fromkeys(s.live for s in sources if s.live is not None):
            await self._run(self._forget_live, live)
            await self.manifest(live)

    def follow(self, operation: Operation) -> None:
        """Keep up with a journaled change (from any origin, on any node)."""
        if isinstance(operation, Purge):
            return
        if isinstance(operation, Delete):
            self._renames.append((operation.path, None))  # with all below it
            self.schedule([operation.path])
            return
        if isinstance(operation, Move):
            self._renames.append((operation.from_path, operation.metadata.path))
        if not operation.metadata.is_directory:
            self.schedule([operation.metadata.path])
        self._wake.set()

    async def known(self, rel: str) -> dict[str, tuple[StatKey, Manifest]]:
        """The manifests recorded for ``rel`` and every file below it, with the stat identity
        each was cut at (what a file *was*, when it has changed since)."""
        return await self._run(self._known_tree, rel)

    def _known_tree(self, rel: str) -> dict[str, tuple[StatKey, Manifest]]:
        rows = self.db.execute(
            f"SELECT path, dev, ino, size, mtime_ns, hash, chunks FROM files WHERE {_SUBTREE}",
            _subtree(rel),
        ).fetchall()
        return {
            row[0]: (StatKey(*row[1:5]), Manifest(row[5], row[3], unpack(row[6]))) for row in rows
        }

    def _known_manifest(self, rel: str, key: StatKey) -> Manifest | None:
        row = self.db.execute(
            "SELECT dev, ino, size, mtime_ns, hash, chunks FROM files WHERE path = ?", (rel,)
        ).fetchone()
        if row is None or StatKey(*row[:4]) != key:
            return None
        return Manifest(row[4], row[2], unpack(row[5]))

    def _record_live(self, rel: str, key: StatKey, manifest: Manifest) -> bool:
        with self.db:
            # The file is checked inside the write transaction: a newer version recorded by
            # another commit (on any node sharing this index) is never overwritten by this one.
            self.db.execute("BEGIN IMMEDIATE")
            try:
                now = StatKey.of(os.stat(self.root.join(rel), follow_symlinks=False))
            except OSError:
                return False
            if now != key:
                return False
            self.db.execute("DELETE FROM locations WHERE path = ?", (rel,))
            self.db.execute(
                "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?)",
                (rel, *key, manifest.hash, pack(manifest.chunks)),
            )
            self.db.executemany(
                "INSERT OR IGNORE INTO locations VALUES (?, ?, ?, ?)",
                ((bytes.fromhex(c.hash), rel, c.offset, c.size) for c in manifest.chunks),
            )
        return True

    def _forget_live(self, rel: str, below_too: bool = True) -> None:
        where, keys = (_SUBTREE, _subtree(rel)) if below_too else ("path = ?", (rel,))
        with self.db:
            self.db.execute("BEGIN")
            for table in ("files", "locations"):
                self.db.execute(f"DELETE FROM {table} WHERE {where}", keys)

    def _rename(self, source: str, target: str) -> None:
        """Re-key what is known under ``source`` to ``target``: a rename keeps the stat
        identity, so the manifests stay valid and a renamed file is not cut again."""
        self._forget_live(target)
        with self.db:
            self.db.execute("BEGIN")
            for table in ("files", "locations"):
                self.db.execute(
                    f"UPDATE OR REPLACE {table} SET path = ? || substr(path, ?) WHERE {_SUBTREE}",
                    (target, len(source) + 1, *_subtree(source)),
                )

    async def _warm(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._renames:
                source, target = self._renames.popleft()
                if target is None:
                    await self._run(self._forget_live, source)
                else:
                    await self._run(self._rename, source, target)
            while self._pending and not self._renames:
                rel = next(iter(self._pending))
                del self._pending[rel]
                try:
                    await self.manifest(rel)
                except Exception:
                    self._logger.exception("could not cut a file", path=rel)

    # -- chunks --------------------------------------------------------------------------------

    async def missing(self, hashes: Sequence[str]) -> list[str]:
        """The distinct hashes of ``hashes`` the store has nowhere, in order."""
        sources = await self.sources(hashes)
        return [digest for digest in dict.fromkeys(hashes) if digest not in sources]

    async def sources(self, hashes: Iterable[str]) -> dict[str, Source]:
        """Where each known chunk of ``hashes`` can be read now."""
        return await self._run(self._sources, list(dict.fromkeys(hashes)))

    def _sources(self, hashes: list[str]) -> dict[str, Source]:
        found: dict[str, Source] = {}
        rest: list[str] = []
        for digest in hashes:
            blob = self.blob_path(digest)
            try:  # blobs are files: one another node stored counts too
                found[digest] = Source(digest, str(blob), 0, blob.stat().st_size, None)
            except FileNotFoundError:
                rest.append(digest)
        found.update(self._live_sources(self.db, rest))
        if self.more_sources is not None:
            found.update(self.more_sources([digest for digest in rest if digest not in found]))
        return found

    def _live_sources(self, db: sqlite3.Connection, hashes: list[str]) -> dict[str, Source]:
        found: dict[str, Source] = {}
        valid: dict[str, bool] = {}
        for digest in hashes:
            rows = db.execute(
                "SELECT path, offset, size FROM locations WHERE hash = ?", (bytes.fromhex(digest),)
            ).fetchall()
            for rel, offset, size in rows:
                if rel not in valid:
                    valid[rel] = self._still_valid(db, rel)
                if valid[rel]:
                    found[digest] = Source(digest, str(self.root.join(rel)), offset, size, rel)
                    break
        return found

    def live_holding(self, hashes: list[str]) -> set[str]:
        """Of ``hashes``, those a live file holds now. Blocking, callable from any thread (a
        read connection per thread: WAL readers do not wait for the writer)."""
        db: sqlite3.Connection | None = getattr(self._readers, "db", None)
        if db is None:
            db = sqlite3.connect(self.base / self._db_name, check_same_thread=False)
            self._readers.db = db
        return set(self._live_sources(db, hashes))

    def _still_valid(self, db: sqlite3.Connection, rel: str) -> bool:
        row = db.execute(
            "SELECT dev, ino, size, mtime_ns FROM files WHERE path = ?", (rel,)
        ).fetchone()
        if row is None:
            return False
        try:
            st = os.stat(self.root.join(rel), follow_symlinks=False)
        except OSError:
            return False
        return StatKey(*row) == StatKey.of(st)

    def blob_path(self, digest: str) -> Path:
        return self.base / digest[:2] / digest

    async def store_blob(self, digest: str, data: bytes | memoryview) -> None:
        """Keep a chunk whose hash the caller has verified.

        Not fsync'd, on purpose: a blob is only ever read through a hash check (assembly checks
        the file it builds, ``chunks/get`` each chunk), so one torn by a power cut is found
        and sent again; fsyncing each chunk halved the speed of block uploads."""
        await asyncio.to_thread(self._write_blob, digest, data)
        await self._run(self._record_blob, digest, len(data))

    def _write_blob(self, digest: str, data: bytes | memoryview) -> None:
        final = self.blob_path(digest)
        temp = self.base / "tmp" / f"{uuid.uuid4().hex}.part"
        with open(temp, "wb") as handle:
            handle.write(data)
        final.parent.mkdir(exist_ok=True)
        os.replace(temp, final)

    def _record_blob(self, digest: str, size: int) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO blobs VALUES (?, ?, ?)",
            (bytes.fromhex(digest), size, time.time()),
        )

    async def drop_blobs(self, hashes: Iterable[str]) -> None:
        """Forget blobs whose bytes are now in a live file."""
        await self._run(self._drop_blobs, list(hashes))

    def _drop_blobs(self, hashes: list[str]) -> None:
        for digest in hashes:
            self.db.execute("DELETE FROM blobs WHERE hash = ?", (bytes.fromhex(digest),))
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.blob_path(digest))

    async def reap(self, older_than: float) -> int:
        """Drop blobs stored before ``older_than`` (epoch seconds) that no commit used."""
        return await self._run(self._reap, older_than)

    async def _reap_expired(self) -> None:
        """Uploaded chunks no commit used within ``blob_expiry`` are dropped."""
        interval = min(max(self._blob_expiry / 4, 0.5), 3600.0)
        while True:
            dropped = await self.reap(time.time() - self._blob_expiry)
            if dropped:
                self._logger.info("expired chunks dropped", chunks=dropped)
            await asyncio.sleep(interval)

    def _reap(self, older_than: float) -> int:
        self._remove_stale_temps()
        rows = self.db.execute("SELECT hash FROM blobs WHERE stored < ?", (older_than,)).fetchall()
        expired: list[str] = []
        for (raw,) in rows:
            try:  # each store writes the file anew: another node may have stored it since
                stored = self.blob_path(raw.hex()).stat().st_mtime
            except FileNotFoundError:
                stored = 0.0
            if stored >= older_than:
                self.db.execute("UPDATE blobs SET stored = ? WHERE hash = ?", (stored, raw))
            else:
                expired.append(raw.hex())
        self._drop_blobs(expired)
        return len(expired)


def read_source(source: Source) -> bytes | None:
    """The chunk's bytes from ``source``, or ``None`` when they are not what they should be
    any more (the live file changed within one mtime tick, a blob was damaged). Blocking."""
    try:
        fd = open_for_reading(source.path, flags=os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        return read_chunk(fd, ChunkRef(source.digest, source.offset, source.size))
    except OSError:
        return None
    finally:
        os.close(fd)
