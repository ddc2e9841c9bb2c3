"""The local chunk index: where each chunk of the folder's files is, to build downloads from.

For every local file the client cut (when it hashed the file anyway: a scan, an upload, a
block download), the index keeps its manifest — each chunk's hash, offset and size — under the
file's stat identity (size, mtime, inode) at that moment. An entry is only a hint: it counts
while the file still has that identity, and a chunk read from it is hashed again before use
(a file rewritten within one timestamp tick keeps its identity).

The rows live in the state database (tables ``chunk_files`` and ``chunk_locations``) and are
committed with its batches; losing the last batch only loses hints.
"""

from __future__ import annotations

from dataclasses import dataclass

from quantum_file_sync.chunks import ChunkRef, Manifest
from quantum_file_sync.client.local import StatKey
from quantum_file_sync.client.state import StateDB

LOCATIONS_PER_CHUNK = 4
"""Candidates returned for one chunk: enough to survive a few stale files."""


@dataclass(frozen=True, slots=True)
class ChunkLocation:
    """Bytes ``offset … offset+size`` of local file ``path``, while it has identity ``key``."""

    path: str
    offset: int
    size: int
    key: StatKey


class ChunkIndex:
    def __init__(self, state: StateDB) -> None:
        self.state = state

    def record(self, path: str, key: StatKey, manifest: Manifest) -> None:
        """``path``, with stat identity ``key``, holds the content ``manifest`` describes."""
        self.forget(path)
        self.state.write_rows(
            "INSERT INTO chunk_files (path, size, mtime_ns, inode, hash) VALUES (?, ?, ?, ?, ?)",
            [(path, key.size, key.mtime_ns, key.inode, bytes.fromhex(manifest.hash))],
        )
        self.state.write_rows(
            "INSERT OR REPLACE INTO chunk_locations (path, offset, size, chunk)"
            " VALUES (?, ?, ?, ?)",
            ((path, ref.offset, ref.size, bytes.fromhex(ref.hash)) for ref in manifest.chunks),
        )

    def forget(self, path: str) -> None:
        self.state.write_rows("DELETE FROM chunk_files WHERE path = ?", [(path,)])
        self.state.write_rows("DELETE FROM chunk_locations WHERE path = ?", [(path,)])

    def move(self, source: str, target: str) -> None:
        """``source`` was renamed to ``target`` (a rename keeps the stat identity)."""
        self.forget(target)
        for table in ("chunk_files", "chunk_locations"):
            self.state.write_rows(f"UPDATE {table} SET path = ? WHERE path = ?", [(target, source)])

    def manifest(self, path: str, key: StatKey) -> Manifest | None:
        """The manifest recorded for ``path``, if it was recorded for identity ``key``."""
        rows = self.state.read_rows(
            "SELECT size, mtime_ns, inode, hash FROM chunk_files WHERE path = ?", (path,)
        )
        if not rows or StatKey(False, rows[0][0], rows[0][1], rows[0][2]) != key:
            return None
        refs = tuple(
            ChunkRef(chunk.hex(), offset, size)
            for offset, size, chunk in self.state.read_rows(
                "SELECT offset, size, chunk FROM chunk_locations WHERE path = ? ORDER BY offset",
                (path,),
            )
        )
        if sum(ref.size for ref in refs) != key.size:
            return None  # rows lost with an uncommitted batch
        return Manifest(rows[0][3].hex(), key.size, refs)

    def locations(self, digest: str, limit: int = LOCATIONS_PER_CHUNK) -> list[ChunkLocation]:
        """Where chunk ``digest`` was seen (each only valid while its file keeps its ``key``)."""
        rows = self.state.read_rows(
            "SELECT l.path, l.offset, l.size, f.size, f.mtime_ns, f.inode"
            " FROM chunk_locations AS l JOIN chunk_files AS f ON f.path = l.path"
            " WHERE l.chunk = ? LIMIT ?",
            (bytes.fromhex(digest), limit),
        )
        return [
            ChunkLocation(path, offset, size, StatKey(False, file_size, mtime_ns, inode))
            for path, offset, size, file_size, mtime_ns, inode in rows
        ]
