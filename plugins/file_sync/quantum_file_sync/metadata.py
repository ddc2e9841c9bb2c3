"""File metadata from ``stat`` + content hash, and a cache so unchanged files are hashed once.

Hashing reads the whole file: call :meth:`HashCache.hash_file` through ``asyncio.to_thread``.
The cache is keyed by the file's identity and version — ``(dev, ino, size, mtime_ns)`` — not by
its path, so a renamed file keeps its cached hash. Python's dict operations are atomic, which is
all the thread-safety the cache needs (two threads hashing one file compute the same value).
"""

from __future__ import annotations

import hashlib
import os
import stat
from datetime import UTC, datetime
from typing import NamedTuple

from quantum_file_sync.operations import FileMetadata
from quantum_file_sync.reads import open_for_reading

CHUNK_SIZE = 1024 * 1024
_MAX_CACHED = 1_000_000


class StatKey(NamedTuple):
    """What identifies one version of one file (a change of any field means re-hash)."""

    dev: int
    ino: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> StatKey:
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def rfc3339(mtime_ns: int) -> str:
    """``2024-01-15T10:30:00Z``: UTC, second precision (the seed's form)."""
    moment = datetime.fromtimestamp(mtime_ns // 1_000_000_000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def sha256_fd(fd: int) -> str:
    digest = hashlib.sha256()
    while chunk := os.read(fd, CHUNK_SIZE):
        digest.update(chunk)
    return digest.hexdigest()


def file_metadata(rel: str, st: os.stat_result, digest: str | None) -> FileMetadata:
    is_directory = stat.S_ISDIR(st.st_mode)
    return FileMetadata(
        path=rel,
        size=0 if is_directory else st.st_size,
        hash=None if is_directory else digest,
        modified=rfc3339(st.st_mtime_ns),
        is_directory=is_directory,
    )


class HashCache:
    """SHA-256 of file versions, by :class:`StatKey`."""

    def __init__(self) -> None:
        self._hashes: dict[StatKey, str] = {}

    def get(self, key: StatKey) -> str | None:
        return self._hashes.get(key)

    def put(self, key: StatKey, digest: str) -> None:
        if len(self._hashes) >= _MAX_CACHED:
            self._hashes.clear()  # crude, bounded; a re-hash is only a cost, never a mistake
        self._hashes[key] = digest

    def hash_file(
        self, path: str | os.PathLike[str], *, refresh: bool = False
    ) -> tuple[os.stat_result, str]:
        """Stat and hash the regular file at ``path`` without following a final symbolic link.

        Blocking. Raises ``FileNotFoundError``, ``IsADirectoryError`` or another ``OSError``."""
        fd = open_for_reading(path, flags=os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            return self.hash_fd(fd, refresh=refresh)
        finally:
            os.close(fd)

    def hash_fd(self, fd: int, *, refresh: bool = False) -> tuple[os.stat_result, str]:
        """Stat and hash an open regular file (reading moves its offset). Blocking.

        ``refresh`` ignores the cache: a file rewritten within one mtime tick keeps its key."""
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise IsADirectoryError("not a regular file")
        key = StatKey.of(st)
        cached = None if refresh else self._hashes.get(key)
        if cached is not None:
            return st, cached
        os.lseek(fd, 0, os.SEEK_SET)
        digest = sha256_fd(fd)
        after = os.fstat(fd)
        if StatKey.of(after) == key:  # not modified while being read
            self.put(key, digest)
        return after, digest
