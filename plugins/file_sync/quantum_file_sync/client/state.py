"""The state directory ``DIR/.quantum-sync/`` and its SQLite database: the merge base.

For every path the client and the server last agreed on, the base records what they agreed on
(directory, or file hash and size), the local ``stat`` identity it had then (size, mtime,
inode: an unchanged identity means unchanged content, so files are not re-hashed), and the
server ``seq`` of the agreement. ``meta`` holds the client id, the server URL and the journal
cursor (epoch, seq) to resume from.

Writes go to SQLite at once but are committed in batches (:meth:`StateDB.commit`): a crash loses
at most the last batch, which is harmless by construction — a path whose agreement was not
recorded is re-checked, and identical sides are adopted without transfer. The whole directory is
reserved (``.quantum*``), so it is never synced, and an exclusive lock keeps a second client off
the folder.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from quantum_file_sync.client.merge import Version

STATE_DIR = ".quantum-sync"
DB_NAME = "state.sqlite3"
LOCK_NAME = "lock"
TMP_DIR = "tmp"
SCHEMA_VERSION = "1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entries (
    path TEXT PRIMARY KEY,
    is_dir INTEGER NOT NULL,
    hash TEXT,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    inode INTEGER NOT NULL,
    seq INTEGER NOT NULL
) WITHOUT ROWID;
-- The local chunk index (chunk_index.py): where each chunk of a local file is, valid only
-- while the file keeps the stat identity it had when it was cut.
CREATE TABLE IF NOT EXISTS chunk_files (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    inode INTEGER NOT NULL,
    hash BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS chunk_locations (
    path TEXT NOT NULL,
    offset INTEGER NOT NULL,
    size INTEGER NOT NULL,
    chunk BLOB NOT NULL,
    PRIMARY KEY (path, offset)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS chunk_locations_by_chunk ON chunk_locations (chunk);
"""


_PUT_ENTRY = (
    "INSERT OR REPLACE INTO entries (path, is_dir, hash, size, mtime_ns, inode, seq)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)


def _row(entry: BaseEntry) -> tuple[object, ...]:
    return (
        entry.path,
        int(entry.is_dir),
        entry.hash,
        entry.size,
        entry.mtime_ns,
        entry.inode,
        entry.seq,
    )


class FolderInUse(Exception):
    """Another client holds the folder's lock."""


@dataclass(frozen=True, slots=True)
class BaseEntry:
    """The last agreed state of one path."""

    path: str
    is_dir: bool
    hash: str | None
    size: int
    mtime_ns: int
    inode: int
    seq: int

    @property
    def version(self) -> Version:
        return Version(self.is_dir, self.hash)


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where the journal was fully applied: resume with ``Subscribe.since``."""

    epoch: str
    seq: int


class StateDB:
    """The base for every path, mirrored in memory (lookups never touch SQLite)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._in_tx = False
        self._unsynced: list[BaseEntry] = []
        self._meta: dict[str, str] = dict(self._db.execute("SELECT key, value FROM meta"))
        self._entries: dict[str, BaseEntry] = {
            row[0]: BaseEntry(row[0], bool(row[1]), row[2], row[3], row[4], row[5], row[6])
            for row in self._db.execute(
                "SELECT path, is_dir, hash, size, mtime_ns, inode, seq FROM entries"
            )
        }
        self._file_count = sum(1 for e in self._entries.values() if not e.is_dir)
        if self._meta.get("schema") != SCHEMA_VERSION:
            self.set_meta("schema", SCHEMA_VERSION)
            self.commit()

    def close(self) -> None:
        self.commit()
        self._db.close()

    @property
    def dirty(self) -> bool:
        return self._in_tx

    def commit(self) -> None:
        if self._in_tx:
            self._db.execute("COMMIT")
            self._in_tx = False

    def _begin(self) -> None:
        if not self._in_tx:
            self._db.execute("BEGIN")
            self._in_tx = True

    def _write(self, sql: str, params: tuple[object, ...]) -> None:
        self._begin()
        self._db.execute(sql, params)

    def write_rows(self, sql: str, rows: Iterable[Sequence[object]]) -> None:
        """Run ``sql`` once per row, in the current batch (tables of :mod:`chunk_index`)."""
        self._begin()
        self._db.executemany(sql, rows)

    def read_rows(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        return self._db.execute(sql, params).fetchall()

    # --- meta ------------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        return self._meta.get(key)

    def set_meta(self, key: str, value: str | None) -> None:
        if self._meta.get(key) == value:
            return
        if value is None:
            self._meta.pop(key, None)
            self._write("DELETE FROM meta WHERE key = ?", (key,))
        else:
            self._meta[key] = value
            self._write("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    @property
    def cursor(self) -> Cursor | None:
        epoch, seq = self._meta.get("epoch"), self._meta.get("seq")
        if epoch is None or seq is None:
            return None
        return Cursor(epoch, int(seq))

    @cursor.setter
    def cursor(self, value: Cursor | None) -> None:
        self.set_meta("epoch", None if value is None else value.epoch)
        self.set_meta("seq", None if value is None else str(value.seq))

    # --- entries ---------------------------------------------------------------------------

    def get(self, path: str) -> BaseEntry | None:
        return self._entries.get(path)

    def entries(self) -> Mapping[str, BaseEntry]:
        return self._entries

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def file_count(self) -> int:
        return self._file_count

    def put(self, entry: BaseEntry, *, needs_sync: bool = False) -> None:
        """Record ``entry``. ``needs_sync``: its file was just written and may not be on disk
        yet; the row is only written by :meth:`write_synced`, after the data was flushed (a
        base must never describe bytes a power cut could still lose)."""
        old = self._entries.get(entry.path)
        if old == entry:
            return
        self._file_count += (not entry.is_dir) - (old is not None and not old.is_dir)
        self._entries[entry.path] = entry
        if needs_sync:
            self._unsynced.append(entry)
            return
        self._write_entry(entry)

    def take_unsynced(self) -> list[BaseEntry]:
        taken, self._unsynced = self._unsynced, []
        return taken

    def untake_unsynced(self, entries: list[BaseEntry]) -> None:
        """Give back entries of :meth:`take_unsynced` whose flush did not complete."""
        self._unsynced[:0] = entries

    def write_synced(self, entries: list[BaseEntry]) -> None:
        """Write the rows of :meth:`take_unsynced` entries that are still current."""
        current = [e for e in entries if self._entries.get(e.path) is e]
        if current:
            self._begin()
            self._db.executemany(_PUT_ENTRY, map(_row, current))

    def _write_entry(self, entry: BaseEntry) -> None:
        self._write(_PUT_ENTRY, _row(entry))

    def remove(self, path: str) -> None:
        old = self._entries.pop(path, None)
        if old is not None:
            self._file_count -= not old.is_dir
            self._write("DELETE FROM entries WHERE path = ?", (path,))

    def descendants(self, directory: str) -> list[BaseEntry]:
        prefix = directory + "/"
        return [e for p, e in self._entries.items() if p.startswith(prefix)]

    def clear(self) -> None:
        """Forget every base (a different server: the next pass is a first contact)."""
        self._entries.clear()
        self._unsynced.clear()
        self._file_count = 0
        self._write("DELETE FROM entries", ())


class StateDir:
    """``DIR/.quantum-sync``: created on first use, locked while a client runs."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.path = root / STATE_DIR
        self.tmp = self.path / TMP_DIR
        self._lock: IO[str] | None = None

    def claim(self) -> None:
        """Create the directory and take the folder lock; raises :class:`FolderInUse`."""
        self.path.mkdir(exist_ok=True)
        self.tmp.mkdir(exist_ok=True)
        lock = (self.path / LOCK_NAME).open("a+", encoding="utf-8")
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            lock.close()
            raise FolderInUse(holder) from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"pid {os.getpid()}\n")
        lock.flush()
        self._lock = lock

    def release(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def open_db(self) -> StateDB:
        return StateDB(self.path / DB_NAME)

    def clean_tmp(self) -> int:
        """Remove leftovers of interrupted downloads; returns how many."""
        removed = 0
        for leftover in self._tmp_files():
            leftover.unlink(missing_ok=True)
            removed += 1
        return removed

    def _tmp_files(self) -> Iterator[Path]:
        if self.tmp.is_dir():
            yield from (p for p in self.tmp.iterdir() if p.is_file() or p.is_symlink())
