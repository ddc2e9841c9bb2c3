"""The catalogue and the files of history: versions, the trash, pins and history's chunk blobs.

Layout under ``ROOT/.quantum/history/`` (same filesystem as root, so keeping is a rename or a
hard link, never a copy):

- ``pins/<uuid>``: a replaced file, hard-linked here just before its successor was renamed
  into place; the compactor reduces it to the chunks nothing else holds and removes it.
- ``trash/<id>``: a deleted file or directory, renamed here as it was; kept whole until it is
  restored (renamed back) or purged.
- ``chunks/ab/<sha256>``: a chunk of some version that no live file and no pin holds.
- ``history.sqlite3``: the catalogue (WAL); ``secret``: the key paging cursors are signed with.

A version's chunks are read from wherever they are: a history blob, a pin, or a live file
(through the chunk store). Every write of a live file through Quantum pins the old file first,
so a chunk a version shares with a live file is never lost by it; only an edit made on disk
behind Quantum's back can destroy one (docs/history.md).

Blocking throughout, safe to call from any thread (one connection behind a lock).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import shutil
import sqlite3
import stat
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quantum_file_sync.chunks import ChunkRef, Manifest, manifest_of_fd, read_chunk
from quantum_file_sync.chunkstore import Source, pack, unpack
from quantum_file_sync.metadata import StatKey
from quantum_file_sync.reads import open_for_reading
from quantum_file_sync.retention import RetentionPolicy, to_drop

HISTORY_DIR = (".quantum", "history")
DB_NAME = "history.sqlite3"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    path TEXT NOT NULL,
    recorded_path TEXT NOT NULL,
    hash TEXT,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    replaced REAL NOT NULL,
    reason TEXT NOT NULL,
    source_client TEXT,
    origin TEXT NOT NULL,
    pin TEXT,
    pin_ino INTEGER,
    chunks BLOB,
    complete INTEGER NOT NULL DEFAULT 1,
    settled INTEGER NOT NULL DEFAULT 1,
    trash INTEGER
);
CREATE INDEX IF NOT EXISTS versions_by_path ON versions (path, id);
CREATE INDEX IF NOT EXISTS versions_by_trash ON versions (trash);
CREATE INDEX IF NOT EXISTS versions_pinned ON versions (pin) WHERE pin IS NOT NULL;
CREATE TABLE IF NOT EXISTS version_chunks (
    hash BLOB NOT NULL, version INTEGER NOT NULL, offset INTEGER NOT NULL, size INTEGER NOT NULL,
    PRIMARY KEY (hash, version, offset)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS version_chunks_by_version ON version_chunks (version);
CREATE TABLE IF NOT EXISTS blobs (hash BLOB PRIMARY KEY, size INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS copies (
    path TEXT NOT NULL, hash BLOB NOT NULL, PRIMARY KEY (path, hash)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS copies_by_hash ON copies (hash);
CREATE TABLE IF NOT EXISTS trash (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    path TEXT NOT NULL,
    is_dir INTEGER NOT NULL,
    deleted REAL NOT NULL,
    source_client TEXT,
    origin TEXT NOT NULL,
    size INTEGER NOT NULL,
    hash TEXT,
    files INTEGER NOT NULL,
    pinned INTEGER NOT NULL,
    catalogued INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS trash_by_path ON trash (path);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
"""
_SUBTREE = "(path = ? OR (path > ? AND path < ?))"
_IN_FLIGHT = 60.0
"""Seconds after which a half-done step of another live node is taken for a crash's leftover
(each step takes milliseconds)."""
_VERSION_COLUMNS = (
    "id, path, recorded_path, hash, size, mtime_ns, replaced, reason, source_client, origin, "
    "pin, chunks, complete, trash"
)
_VERSION_JSON = """json_object(
    'id', id, 'path', path, 'recorded_path', recorded_path, 'hash', hash, 'size', size,
    'modified', strftime('%Y-%m-%dT%H:%M:%SZ', mtime_ns / 1000000000, 'unixepoch'),
    'replaced', strftime('%Y-%m-%dT%H:%M:%S', CAST(replaced AS INTEGER), 'unixepoch')
        || printf('.%06dZ', CAST((replaced - CAST(replaced AS INTEGER)) * 1000000 AS INTEGER)),
    'reason', reason, 'source_client', source_client, 'origin', origin,
    'complete', json(CASE WHEN complete THEN 'true' ELSE 'false' END))"""
"""A version row as the API's version object (times as RFC 3339 UTC, microseconds). The
seconds are formatted from the whole seconds: SQLite rounds a time to milliseconds first, so
…:51.9996 would print as …:52 with the fraction .999600 after it."""
_TRASH_COLUMNS = "id, path, is_dir, deleted, source_client, origin, size, hash, files, pinned"


def _subtree(rel: str) -> tuple[str, str, str]:
    return (rel, rel + "/", rel + "0")  # "0" is the character after "/"


class CursorError(ValueError):
    """A paging cursor this store did not issue, or one for another query."""


@dataclass(frozen=True, slots=True)
class Version:
    id: int
    path: str
    recorded_path: str
    hash: str | None
    size: int
    mtime_ns: int
    replaced: float
    reason: str
    source_client: str | None
    origin: str
    pin: str | None
    chunks: bytes | None
    complete: bool
    trash: int | None

    @property
    def manifest(self) -> Manifest | None:
        if self.chunks is None or self.hash is None:
            return None
        return Manifest(self.hash, self.size, unpack(self.chunks))


@dataclass(frozen=True, slots=True)
class TrashItem:
    id: int
    path: str
    is_dir: bool
    deleted: float
    source_client: str | None
    origin: str
    size: int
    hash: str | None
    files: int
    pinned: bool


@dataclass(frozen=True, slots=True)
class Usage:
    versions: int
    version_bytes: int
    trash: int
    trash_bytes: int
    stored_bytes: int
    pending: int


@dataclass(frozen=True, slots=True)
class Purged:
    paths: tuple[str, ...]
    versions: int
    trash: int

    def __bool__(self) -> bool:
        return bool(self.versions or self.trash)


Known = dict[str, tuple[StatKey, Manifest]]
"""What the chunk store knew of live files: path → (stat identity, manifest)."""
LiveChunks = Callable[[list[str]], set[str]]
"""Of these hashes, those a live file holds now (asked of the chunk store)."""


class HistoryStore:
    def __init__(self, root: Path) -> None:
        self.base = root.joinpath(*HISTORY_DIR)
        self.pins = self.base / "pins"
        self.trash_dir = self.base / "trash"
        self.blobs = self.base / "chunks"
        self._temp = self.base / "tmp"
        self._lock = threading.RLock()
        self._db: sqlite3.Connection | None = None
        self._secret = b""

    # -- lifecycle -----------------------------------------------------------------------------

    def open(self, *, others_alive: bool = False) -> None:
        """Open the catalogue and recover from a crash; ``others_alive``: another running
        instance serves this root (see :meth:`_recover`)."""
        for directory in (self.pins, self.trash_dir, self.blobs, self._temp):
            directory.mkdir(parents=True, exist_ok=True)
        self._secret = self._load_secret()
        db = sqlite3.connect(self.base / DB_NAME, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=10000")
        db.executescript(_SCHEMA)
        self._db = db
        self._recover(others_alive)

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def _load_secret(self) -> bytes:
        path = self.base / "secret"
        with contextlib.suppress(FileNotFoundError):
            secret = path.read_bytes()
            if len(secret) >= 32:
                return secret
        fresh = os.urandom(32)
        temp = self._temp / f"{uuid.uuid4().hex}.secret"
        temp.write_bytes(fresh)
        try:
            os.link(temp, path)  # first writer wins: nodes sharing a root share one key
        except FileExistsError:
            pass
        finally:
            temp.unlink()
        return path.read_bytes()

    @property
    def db(self) -> sqlite3.Connection:
        assert self._db is not None, "the history store is not open"
        return self._db

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    def _recover(self, others_alive: bool) -> None:
        """Finish or undo what a crash interrupted (each step is ordered so one of the two is
        always possible without losing a version or a deleted file).

        Another node serving this root may be in the middle of the same steps right now: then
        only what is older than :data:`_IN_FLIGHT` is taken for a crash's leftover."""
        grace = _IN_FLIGHT if others_alive else 0.0
        now = time.time()

        def old(moment: float) -> bool:
            return now - moment > grace

        with self._lock:
            pinned = self.db.execute(
                "SELECT id, path, pin, pin_ino, trash, replaced FROM versions WHERE pin IS NOT NULL"
            ).fetchall()
        known_pins: set[str] = set()
        put_back: dict[int, list[int]] = {}
        for version_id, path, pin, pin_ino, trash, replaced in pinned:
            known_pins.add(pin)
            try:
                pin_st = os.stat(self.base / pin, follow_symlinks=False)
            except FileNotFoundError:
                if trash is None and old(replaced):  # crashed before the link: not replaced
                    self._forget_versions([version_id])
                elif trash is not None and pin.startswith(f"trash/{trash}/"):
                    # A file of a trashed tree renamed back by a restore the crash interrupted
                    # before it was forgotten: it is live again, not in the trash.
                    put_back.setdefault(trash, []).append(version_id)
                continue
            if (
                trash is None
                and pin_st.st_ino == pin_ino
                and old(pin_st.st_ctime)
                and self._live_ino(path) == pin_ino
            ):
                self._forget_versions([version_id])  # crashed before the rename
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.base / pin)
        for leftover in self.pins.iterdir():
            if f"pins/{leftover.name}" not in known_pins:
                with contextlib.suppress(FileNotFoundError):
                    if old(leftover.lstat().st_ctime):
                        leftover.unlink()
        for trash_id, restored in put_back.items():
            if os.path.isdir(self.trash_dir / str(trash_id)):
                self.forget_restored(trash_id, restored)
        with self._lock:
            items = self.db.execute("SELECT id, pinned, catalogued, deleted FROM trash").fetchall()
        for trash_id, pinned_item, catalogued, deleted in items:
            if not old(deleted):
                continue
            exists = os.path.lexists(self.trash_dir / str(trash_id))
            if pinned_item and not exists:
                with self._write() as db:  # crashed before the rename, or restored meanwhile
                    db.execute("DELETE FROM trash WHERE id = ?", (trash_id,))
                    self._delete_versions(db, "trash = ?", (trash_id,))
            elif pinned_item and not catalogued:
                self.catalogue_trash(trash_id, {})
        for leftover in self._temp.iterdir():
            with contextlib.suppress(FileNotFoundError):
                if old(leftover.lstat().st_mtime):
                    leftover.unlink()

    def _live_ino(self, path: str) -> int | None:
        try:
            return os.stat(self.base.parents[1] / path, follow_symlinks=False).st_ino
        except OSError:
            return None

    # -- keeping -------------------------------------------------------------------------------

    def pin_replaced(
        self,
        directory_fd: int,
        name: str,
        rel: str,
        before: os.stat_result,
        digest: str | None,
        known: Manifest | None,
        source_client: str | None,
        origin: str,
    ) -> int:
        """Keep the file ``name`` in ``directory_fd`` (``rel``), about to be replaced: a hard
        link under ``pins/``, catalogued first, so a crash at any point leaves either the old
        file live or the version kept. Returns the version id (for :meth:`unpin`)."""
        pin = f"pins/{uuid.uuid4().hex}"
        manifest = known if known is not None and known.size == before.st_size else None
        if manifest is not None:
            digest = manifest.hash
        with self._write() as db:
            version_id = self._insert_version(
                db,
                rel,
                digest,
                before,
                "update",
                source_client,
                origin,
                pin=pin,
                manifest=manifest,
            )
        try:
            os.link(name, self.base / pin, src_dir_fd=directory_fd, follow_symlinks=False)
        except BaseException:
            self._forget_versions([version_id])
            raise
        return version_id

    def unpin(self, version_id: int) -> None:
        """Undo :meth:`pin_replaced` when the replacement did not happen."""
        version = self.version(version_id)
        self._forget_versions([version_id])
        if version is not None and version.pin is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.base / version.pin)

    def trash(
        self,
        directory_fd: int,
        name: str,
        rel: str,
        st: os.stat_result,
        known: Known,
        hashes: dict[str, str | None],
        source_client: str | None,
        origin: str,
    ) -> int:
        """Move the file or directory ``name`` in ``directory_fd`` (``rel``) into the trash,
        as it is, and catalogue it with a version for each file in it."""
        is_dir = stat.S_ISDIR(st.st_mode)
        with self._write() as db:
            cursor = db.execute(
                "INSERT INTO trash (path, is_dir, deleted, source_client, origin, size, hash, "
                "files, pinned) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1)",
                (
                    rel,
                    is_dir,
                    time.time(),
                    source_client,
                    origin,
                    0 if is_dir else st.st_size,
                    None if is_dir else hashes.get(rel),
                    0 if is_dir else 1,
                ),
            )
            trash_id = int(cursor.lastrowid or 0)
        try:
            os.rename(name, self.trash_dir / str(trash_id), src_dir_fd=directory_fd)
        except BaseException:
            with self._write() as db:
                db.execute("DELETE FROM trash WHERE id = ?", (trash_id,))
            raise
        self.catalogue_trash(trash_id, known, hashes)
        return trash_id

    def catalogue_trash(
        self, trash_id: int, known: Known, hashes: dict[str, str | None] | None = None
    ) -> None:
        """One version per file of a trashed item (its pin inside ``trash/<id>``)."""
        hashes = hashes or {}
        item = self.trash_item(trash_id)
        if item is None:
            return
        top = self.trash_dir / str(trash_id)
        files: list[tuple[str, str, os.stat_result]] = []
        if item.is_dir:
            for directory, _, names in os.walk(top):
                for entry in names:
                    full = os.path.join(directory, entry)
                    st = os.stat(full, follow_symlinks=False)
                    if stat.S_ISREG(st.st_mode):
                        inside = os.path.relpath(full, top)
                        files.append((f"{item.path}/{inside}", f"trash/{trash_id}/{inside}", st))
        else:
            files.append((item.path, f"trash/{trash_id}", os.stat(top, follow_symlinks=False)))
        with self._write() as db:
            self._delete_versions(db, "trash = ?", (trash_id,))
            for rel, pin, st in files:
                found = known.get(rel)
                manifest = found[1] if found is not None and found[0] == StatKey.of(st) else None
                digest = manifest.hash if manifest is not None else hashes.get(rel)
                self._insert_version(
                    db,
                    rel,
                    digest,
                    st,
                    "delete",
                    item.source_client,
                    item.origin,
                    pin=pin,
                    manifest=manifest,
                    replaced=item.deleted,
                    trash=trash_id,
                )
            size = sum(st.st_size for _, _, st in files)
            db.execute(
                "UPDATE trash SET catalogued = 1, files = ?, size = ? WHERE id = ?",
                (len(files), size, trash_id),
            )

    def record_lost(
        self,
        rel: str,
        key: StatKey,
        manifest: Manifest,
        reason: str,
        source_client: str | None,
        trash_id: int | None = None,
    ) -> int:
        """A version whose file is already gone from disk (changed or deleted behind Quantum's
        back): only its manifest is known; the compactor finds what of it is still anywhere."""
        with self._write() as db:
            return self._insert_version(
                db,
                rel,
                manifest.hash,
                key,
                reason,
                source_client,
                "disk",
                pin=None,
                manifest=manifest,
                trash=trash_id,
                complete=False,
            )

    def record_lost_trash(self, rel: str, is_dir: bool, lost: Known) -> int:
        """A trash item for a deletion made on disk (its files are versions from manifests)."""
        size = sum(key.size for key, _ in lost.values())
        digest = None if is_dir else next((m.hash for _, m in lost.values()), None)
        with self._write() as db:
            cursor = db.execute(
                "INSERT INTO trash (path, is_dir, deleted, source_client, origin, size, hash, "
                "files, pinned, catalogued) VALUES (?, ?, ?, NULL, 'disk', ?, ?, ?, 0, 1)",
                (rel, is_dir, time.time(), size, digest, len(lost)),
            )
            trash_id = int(cursor.lastrowid or 0)
        for path, (key, manifest) in lost.items():
            self.record_lost(path, key, manifest, "delete", None, trash_id)
        return trash_id

    def _insert_version(
        self,
        db: sqlite3.Connection,
        rel: str,
        digest: str | None,
        st: os.stat_result | StatKey,
        reason: str,
        source_client: str | None,
        origin: str,
        *,
        pin: str | None,
        manifest: Manifest | None,
        replaced: float | None = None,
        trash: int | None = None,
        complete: bool = True,
    ) -> int:
        key = st if isinstance(st, StatKey) else StatKey.of(st)
        cursor = db.execute(
            "INSERT INTO versions (path, recorded_path, hash, size, mtime_ns, replaced, reason, "
            "source_client, origin, pin, pin_ino, chunks, complete, settled, trash) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                rel,
                rel,
                digest,
                key.size,
                key.mtime_ns,
                time.time() if replaced is None else replaced,
                reason,
                source_client,
                origin,
                pin,
                key.ino,
                None if manifest is None else pack(manifest.chunks),
                complete,
                complete,  # an incomplete one is checked once against what is left
                trash,
            ),
        )
        version_id = int(cursor.lastrowid or 0)
        if manifest is not None:
            self._insert_chunks(db, version_id, manifest.chunks)
        return version_id

    @staticmethod
    def _insert_chunks(db: sqlite3.Connection, version_id: int, chunks: Sequence[ChunkRef]) -> None:
        db.executemany(
            "INSERT OR IGNORE INTO version_chunks VALUES (?, ?, ?, ?)",
            ((bytes.fromhex(c.hash), version_id, c.offset, c.size) for c in chunks),
        )

    def follow_move(self, source: str, target: str) -> None:
        """Versions (and copies of live files) follow their file to its new path."""
        with self._write() as db:
            for table in ("versions", "copies"):
                db.execute(
                    f"UPDATE OR REPLACE {table} SET path = ? || substr(path, ?) WHERE {_SUBTREE}",
                    (target, len(source) + 1, *_subtree(source)),
                )

    # -- copies of small live files ------------------------------------------------------------

    def keep_copy(self, rel: str, live: Path, manifest: Manifest) -> bool:
        """Hold the chunks of the small live file ``rel`` (version ``manifest``) as blobs, so
        an edit or delete made on disk behind Quantum's back leaves a complete version.
        ``False`` when the file no longer has those bytes (its next cut brings a new copy)."""
        wanted = {bytes.fromhex(c.hash) for c in manifest.chunks}
        with self._lock:
            held = {
                row[0] for row in self.db.execute("SELECT hash FROM copies WHERE path = ?", (rel,))
            }
        if held == wanted and all(self.blob_path(c.hash).exists() for c in manifest.chunks):
            return True
        fd = None
        try:
            for ref in manifest.chunks:
                if self.blob_path(ref.hash).exists():
                    continue
                if fd is None:
                    fd = open_for_reading(live, flags=os.O_RDONLY | os.O_NOFOLLOW)
                data = read_chunk(fd, ref)
                if data is None:
                    return False
                # Not fsync'd: the live file holds these bytes until an edit on disk, which comes
                # long after the kernel wrote this back; a torn blob fails its hash check.
                self._write_blob(ref.hash, data, durable=False)
        except OSError:
            return False
        finally:
            if fd is not None:
                os.close(fd)
        with self._write() as db:
            db.execute("DELETE FROM copies WHERE path = ?", (rel,))
            db.executemany("INSERT OR IGNORE INTO copies VALUES (?, ?)", ((rel, h) for h in wanted))
        return True

    def drop_copies(self, rel: str) -> None:
        """``rel`` and what was below it are no longer live files."""
        with self._write() as db:
            db.execute(f"DELETE FROM copies WHERE {_SUBTREE}", _subtree(rel))

    # -- compaction ----------------------------------------------------------------------------

    def pending(self) -> list[Version]:
        """Versions still held by a pin under ``pins/`` (oldest first)."""
        return self._versions("pin LIKE 'pins/%' ORDER BY id", ())

    def unsettled(self) -> list[Version]:
        """Versions recorded from a manifest alone, not checked against what is left yet."""
        return self._versions("settled = 0 ORDER BY id", ())

    def ensure_manifest(self, version: Version) -> Version:
        """Cut a pinned version whose manifest was not known when it was kept."""
        if version.manifest is not None or version.pin is None:
            return version
        manifest = self._cut(version.pin)
        with self._write() as db:
            db.execute(
                "UPDATE versions SET hash = ?, size = ?, chunks = ? WHERE id = ?",
                (manifest.hash, manifest.size, pack(manifest.chunks), version.id),
            )
            db.execute("DELETE FROM version_chunks WHERE version = ?", (version.id,))
            self._insert_chunks(db, version.id, manifest.chunks)
        found = self.version(version.id)
        assert found is not None
        return found

    def compact(
        self, version: Version, live: LiveChunks, upload_blob: Callable[[str], Path]
    ) -> bool:
        """Reduce a pinned version to history blobs of the chunks nothing else holds, then drop
        its pin (``upload_blob`` names where the chunk store keeps an uploaded chunk).

        ``False`` (the pin is kept for a later pass) while the pinned file is still the live
        one — its replacement is catalogued before it is renamed in, and until then every
        chunk of it looks live — or when a chunk of it could be read neither elsewhere nor
        from the pin."""
        manifest = version.manifest
        assert manifest is not None and version.pin is not None
        try:
            pinned = os.stat(self.base / version.pin, follow_symlinks=False).st_ino
        except FileNotFoundError:
            pinned = None  # restored or purged meanwhile: nothing left to keep
        if pinned is not None and self._live_ino(version.path) == pinned:
            return False
        if pinned is not None and self._secure(manifest.chunks, version.pin, live, upload_blob):
            return False
        with self._write() as db:
            db.execute("UPDATE versions SET pin = NULL WHERE id = ?", (version.id,))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.base / version.pin)
        return True

    def settle(
        self, version: Version, live: LiveChunks, upload_blob: Callable[[str], Path]
    ) -> bool:
        """Check a version recorded from its manifest alone: keep as blobs the chunks only an
        uploaded blob holds, and mark it complete when every chunk is somewhere."""
        manifest = version.manifest
        assert manifest is not None
        missing = self._secure(manifest.chunks, None, live, upload_blob)
        with self._write() as db:
            db.execute(
                "UPDATE versions SET complete = ?, settled = 1 WHERE id = ?",
                (not missing, version.id),
            )
        return not missing

    def _secure(
        self,
        chunks: Sequence[ChunkRef],
        pin: str | None,
        live: LiveChunks,
        upload_blob: Callable[[str], Path],
    ) -> list[str]:
        """Make every chunk of ``chunks`` readable without ``pin``; the hashes that could not."""
        distinct = {c.hash: c for c in chunks}
        in_live = live(list(distinct))
        missing: list[str] = []
        for digest, ref in distinct.items():
            if digest in in_live or self.blob_path(digest).exists():
                continue
            if self._pinned_elsewhere(digest, pin):
                continue
            try:
                self._link_blob(upload_blob(digest), digest, ref.size)
                continue
            except OSError:
                pass
            data = self._read_from_pin(pin, ref) if pin is not None else None
            if data is None:
                missing.append(digest)
                continue
            self._write_blob(digest, data)
        return missing

    def _pinned_elsewhere(self, digest: str, pin: str | None) -> bool:
        with self._lock:
            rows = self.db.execute(
                "SELECT v.pin FROM version_chunks c JOIN versions v ON v.id = c.version "
                "WHERE c.hash = ? AND v.pin IS NOT NULL",
                (bytes.fromhex(digest),),
            ).fetchall()
        return any(other != pin and (self.base / other).exists() for (other,) in rows)

    def _read_from_pin(self, pin: str, ref: ChunkRef) -> bytes | None:
        try:
            fd = open_for_reading(self.base / pin, flags=os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            return None
        try:
            return read_chunk(fd, ref)
        finally:
            os.close(fd)

    def blob_path(self, digest: str) -> Path:
        return self.blobs / digest[:2] / digest

    def _link_blob(self, source: Path, digest: str, size: int) -> None:
        final = self.blob_path(digest)
        final.parent.mkdir(exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.link(source, final)
        self._record_blob(digest, size)

    def _write_blob(self, digest: str, data: bytes, *, durable: bool = True) -> None:
        final = self.blob_path(digest)
        temp = self._temp / f"{uuid.uuid4().hex}.part"
        try:
            with open(temp, "wb") as handle:
                handle.write(data)
                handle.flush()
                if durable:  # unlike an upload's, a version's blob is its only copy
                    os.fsync(handle.fileno())
            final.parent.mkdir(exist_ok=True)
            os.replace(temp, final)
        except BaseException:
            temp.unlink(missing_ok=True)  # a full disk: no half-written blob left taking space
            raise
        self._record_blob(digest, len(data))

    def _record_blob(self, digest: str, size: int) -> None:
        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO blobs VALUES (?, ?)", (bytes.fromhex(digest), size))

    # -- reading -------------------------------------------------------------------------------

    def sources(self, hashes: Iterable[str]) -> dict[str, Source]:
        """Where history holds each of ``hashes``: a blob, or a range of a pin."""
        found: dict[str, Source] = {}
        for digest in hashes:
            blob = self.blob_path(digest)
            try:
                found[digest] = Source(digest, str(blob), 0, blob.stat().st_size, None)
                continue
            except FileNotFoundError:
                pass
            with self._lock:
                rows = self.db.execute(
                    "SELECT v.pin, c.offset, c.size FROM version_chunks c "
                    "JOIN versions v ON v.id = c.version WHERE c.hash = ? AND v.pin IS NOT NULL",
                    (bytes.fromhex(digest),),
                ).fetchall()
            for pin, offset, size in rows:
                path = self.base / pin
                if path.exists():
                    found[digest] = Source(digest, str(path), offset, size, None)
                    break
        return found

    def version(self, version_id: int) -> Version | None:
        rows = self._versions("id = ?", (version_id,))
        return rows[0] if rows else None

    def versions_json(self, path: str, before: int | None, limit: int) -> list[tuple[str, int]]:
        """The versions of ``path`` newest first (older than version ``before`` when given),
        each as its API object in JSON (docs/history.md), with its id."""
        where, args = (
            ("path = ?", (path,)) if before is None else ("path = ? AND id < ?", (path, before))
        )
        with self._lock:
            return self.db.execute(
                f"SELECT {_VERSION_JSON}, id FROM versions WHERE {where} ORDER BY id DESC LIMIT ?",
                (*args, limit),
            ).fetchall()

    def _versions(self, where: str, args: Sequence[Any]) -> list[Version]:
        with self._lock:
            rows = self.db.execute(
                f"SELECT {_VERSION_COLUMNS} FROM versions WHERE {where}", args
            ).fetchall()
        return [
            Version(*row[:12], complete=bool(row[12]), trash=row[13])  # type: ignore[misc]
            for row in rows
        ]

    def trash_item(self, trash_id: int) -> TrashItem | None:
        items = self._trash("id = ?", (trash_id,))
        return items[0] if items else None

    def trash_items(
        self,
        prefix: str | None,
        since: float | None,
        source_client: str | None,
        before: int | None,
        limit: int,
    ) -> list[TrashItem]:
        where: list[str] = []
        args: list[Any] = []
        if prefix:
            where.append(_SUBTREE)
            args.extend(_subtree(prefix))
        if since is not None:
            # Times are shown to the microsecond: a time read off an item selects that item.
            where.append("deleted >= ?")
            args.append(since - 0.000001)
        if source_client is not None:
            where.append("source_client = ?")
            args.append(source_client)
        if before is not None:
            where.append("id < ?")
            args.append(before)
        clause = " AND ".join(where) or "1"
        return self._trash(f"{clause} ORDER BY id DESC LIMIT ?", (*args, limit))

    def _trash(self, where: str, args: Sequence[Any]) -> list[TrashItem]:
        with self._lock:
            rows = self.db.execute(f"SELECT {_TRASH_COLUMNS} FROM trash WHERE {where}", args)
            items = rows.fetchall()
        return [
            TrashItem(r[0], r[1], bool(r[2]), r[3], r[4], r[5], r[6], r[7], r[8], bool(r[9]))
            for r in items
        ]

    def trash_versions(self, trash_id: int) -> list[Version]:
        return self._versions("trash = ? ORDER BY recorded_path", (trash_id,))

    def trash_complete(self, trash_id: int) -> bool:
        with self._lock:
            row = self.db.execute(
                "SELECT count(*) FROM versions WHERE trash = ? AND complete = 0", (trash_id,)
            ).fetchone()
        return bool(row[0] == 0)

    def usage(self) -> Usage:
        with self._lock:
            db = self.db
            versions, version_bytes = db.execute(
                "SELECT count(*), coalesce(sum(size), 0) FROM versions WHERE trash IS NULL"
            ).fetchone()
            trash, trash_bytes = db.execute(
                "SELECT count(*), coalesce(sum(size), 0) FROM trash"
            ).fetchone()
            pending = db.execute(
                "SELECT count(*) FROM versions WHERE pin LIKE 'pins/%'"
            ).fetchone()[0]
        return Usage(versions, version_bytes, trash, trash_bytes, self.stored_bytes(), int(pending))

    def stored_bytes(self, *, garbage: bool = True) -> int:
        """What history occupies on disk: blobs, pins not compacted yet, the trash
        (``garbage=False``: without the blobs no version names any more, not collected yet)."""
        unnamed = (
            ""
            if garbage
            else " WHERE EXISTS (SELECT 1 FROM version_chunks c WHERE c.hash = blobs.hash)"
        )
        with self._lock:
            db = self.db
            blobs = db.execute(f"SELECT coalesce(sum(size), 0) FROM blobs{unnamed}").fetchone()[0]
            pins = db.execute(
                "SELECT coalesce(sum(size), 0) FROM versions WHERE pin LIKE 'pins/%'"
            ).fetchone()[0]
            trashed = db.execute(
                "SELECT coalesce(sum(size), 0) FROM trash WHERE pinned = 1"
            ).fetchone()[0]
        return int(blobs + pins + trashed)

    # -- cursors -------------------------------------------------------------------------------

    def cursor(self, query: str, last_id: int) -> str:
        payload = json.dumps({"q": query, "id": last_id}, separators=(",", ":")).encode()
        mac = hmac.new(self._secret, payload, hashlib.sha256).digest()[:16]
        return f"{_b64(payload)}.{_b64(mac)}"

    def parse_cursor(self, query: str, token: str) -> int:
        try:
            raw_payload, raw_mac = token.split(".")
            payload, mac = _unb64(raw_payload), _unb64(raw_mac)
        except ValueError:
            raise CursorError("not a cursor") from None
        expected = hmac.new(self._secret, payload, hashlib.sha256).digest()[:16]
        if not hmac.compare_digest(mac, expected):
            raise CursorError("a cursor this server did not issue")
        data = json.loads(payload)
        if data.get("q") != query or not isinstance(data.get("id"), int):
            raise CursorError("a cursor for another query")
        return int(data["id"])

    # -- purging -------------------------------------------------------------------------------

    def purge_versions(self, ids: Sequence[int], live: LiveChunks, collect: bool = True) -> Purged:
        """Drop these versions (a delete version drops its trash item too); ``collect``: remove
        the blobs no version names any more now (not while a download may read them)."""
        versions = [v for v in (self.version(i) for i in ids) if v is not None]
        trash_ids = {v.trash for v in versions if v.trash is not None}
        plain = [v for v in versions if v.trash is None]
        purged = Purged((), 0, 0)
        if trash_ids:
            purged = self.purge_trash(sorted(trash_ids), live, collect)
        if not plain:
            return purged
        self._forget_versions([v.id for v in plain])
        for version in plain:
            self._release_pin(version.pin, [version], live)
        if collect:
            self.collect_garbage()
        paths = tuple(dict.fromkeys([*purged.paths, *(v.path for v in plain)]))
        return Purged(paths, purged.versions + len(plain), purged.trash)

    def purge_trash(self, ids: Sequence[int], live: LiveChunks, collect: bool = True) -> Purged:
        items = [t for t in (self.trash_item(i) for i in ids) if t is not None]
        count = 0
        for item in items:
            held = self.trash_versions(item.id)
            count += len(held)
            with self._write() as db:
                db.execute("DELETE FROM trash WHERE id = ?", (item.id,))
                self._delete_versions(db, "trash = ?", (item.id,))
            self._release_pin(f"trash/{item.id}" if item.pinned else None, held, live)
        if collect:
            self.collect_garbage()
        return Purged(tuple(t.path for t in items), count, len(items))

    def forget_restored(self, trash_id: int, version_ids: Sequence[int]) -> bool:
        """Files of trash item ``trash_id`` are live again (renamed back): forget them; the
        item goes when nothing of it is left. ``True`` when it went."""
        self._forget_versions(version_ids)
        with self._write() as db:
            left = db.execute(
                "SELECT count(*) FROM versions WHERE trash = ?", (trash_id,)
            ).fetchone()[0]
            if left:
                db.execute(
                    "UPDATE trash SET files = ?, size = (SELECT coalesce(sum(size), 0) "
                    "FROM versions WHERE trash = ?) WHERE id = ?",
                    (left, trash_id, trash_id),
                )
                return False
            db.execute("DELETE FROM trash WHERE id = ?", (trash_id,))
        shutil.rmtree(self.trash_dir / str(trash_id), ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.trash_dir / str(trash_id))
        return True

    def _release_pin(self, pin: str | None, held: Sequence[Version], live: LiveChunks) -> None:
        """Remove a pin (a file, or a trashed tree), first keeping as blobs the chunks that
        other versions still name and have nowhere else. ``held``: the versions the pin held,
        already dropped from the catalogue."""
        if pin is None:
            return
        for version in held:
            if version.pin is None:
                continue
            with contextlib.suppress(OSError, ValueError):
                manifest = version.manifest or self._cut(version.pin)
                with self._lock:
                    needed = [
                        c
                        for c in manifest.chunks
                        if self.db.execute(
                            "SELECT 1 FROM version_chunks WHERE hash = ? LIMIT 1",
                            (bytes.fromhex(c.hash),),
                        ).fetchone()
                    ]
                if needed:
                    self._secure(needed, version.pin, live, _NO_UPLOAD)
        path = self.base / pin
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def _cut(self, pin: str) -> Manifest:
        fd = open_for_reading(self.base / pin, flags=os.O_RDONLY | os.O_NOFOLLOW)
        try:
            return manifest_of_fd(fd)[1]
        finally:
            os.close(fd)

    def _forget_versions(self, ids: Sequence[int]) -> None:
        with self._write() as db:
            for chunk in _batches(list(ids), 500):
                marks = ",".join("?" * len(chunk))
                self._delete_versions(db, f"id IN ({marks})", chunk)

    @staticmethod
    def _delete_versions(db: sqlite3.Connection, where: str, args: Sequence[Any]) -> None:
        db.execute(
            f"DELETE FROM version_chunks WHERE version IN (SELECT id FROM versions WHERE {where})",
            args,
        )
        db.execute(f"DELETE FROM versions WHERE {where}", args)

    def collect_garbage(self) -> int:
        """Remove the blobs no version names any more (nor a copy of a live file)."""
        with self._write() as db:
            rows = db.execute(
                "SELECT hash FROM blobs WHERE NOT EXISTS "
                "(SELECT 1 FROM version_chunks WHERE version_chunks.hash = blobs.hash) "
                "AND NOT EXISTS (SELECT 1 FROM copies WHERE copies.hash = blobs.hash)"
            ).fetchall()
            db.executemany("DELETE FROM blobs WHERE hash = ?", rows)
        for (raw,) in rows:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.blob_path(raw.hex()))
        return len(rows)

    # -- retention -----------------------------------------------------------------------------

    def expired(self, now: float, policy: RetentionPolicy) -> tuple[list[int], list[int]]:
        """Versions (not in the trash) thinning or age drop, and trash items past ``max_age``."""
        with self._lock:
            rows = self.db.execute(
                "SELECT path, id, replaced FROM versions WHERE trash IS NULL ORDER BY path, id DESC"
            ).fetchall()
            old_trash: list[int] = []
            if policy.max_age is not None:
                old_trash = [
                    row[0]
                    for row in self.db.execute(
                        "SELECT id FROM trash WHERE deleted < ?", (now - policy.max_age,)
                    )
                ]
        versions: list[int] = []
        start = 0
        while start < len(rows):
            end = start
            while end < len(rows) and rows[end][0] == rows[start][0]:
                end += 1
            group = rows[start:end]
            versions.extend(group[i][1] for i in to_drop([r[2] for r in group], now, policy))
            start = end
        return versions, old_trash

    def oldest_first(self, is_live: Callable[[str], bool]) -> Iterator[tuple[str, int]]:
        """Candidates for the cap, oldest first: ``("version", id)`` or ``("trash", id)``,
        never the newest version of a live file."""
        with self._lock:
            versions = self.db.execute(
                "SELECT id, path, replaced FROM versions WHERE trash IS NULL"
            ).fetchall()
            items = self.db.execute("SELECT id, deleted FROM trash").fetchall()
        newest: dict[str, int] = {}
        for version_id, path, _ in versions:
            newest[path] = max(version_id, newest.get(path, 0))
        candidates: list[tuple[float, str, int]] = [
            (replaced, "version", version_id)
            for version_id, path, replaced in versions
            if not (newest[path] == version_id and is_live(path))
        ]
        candidates.extend((deleted, "trash", trash_id) for trash_id, deleted in items)
        candidates.sort()
        for _, kind, item_id in candidates:
            yield kind, item_id

    def claim_retention(self, now: float, interval: float) -> bool:
        """One retention pass per interval among the nodes sharing this root."""
        with self._write() as db:
            row = db.execute("SELECT value FROM meta WHERE key = 'retention'").fetchone()
            if row is not None and now - float(row[0]) < interval / 2:
                return False
            db.execute("INSERT OR REPLACE INTO meta VALUES ('retention', ?)", (now,))
        return True


def _NO_UPLOAD(digest: str) -> Path:
    raise FileNotFoundError(digest)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as error:
        raise ValueError("bad base64") from error


def _batches(items: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
