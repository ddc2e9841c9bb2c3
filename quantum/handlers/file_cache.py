"""A bounded in-memory cache of small files for ``file_server``.

An entry is valid while the file's ``(st_mtime_ns, st_size, st_ino)`` is unchanged, so the file
server pays one ``os.stat`` per request and reads the file only when it changed (a rename over
it changes the inode; an in-place write changes mtime or size).
"""

from __future__ import annotations

import os
import stat
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

Stamp = tuple[int, int, int]
MetaT = TypeVar("MetaT")


def stamp_of(st: os.stat_result) -> Stamp:
    return (st.st_mtime_ns, st.st_size, st.st_ino)


@dataclass(slots=True)
class CachedFile(Generic[MetaT]):
    stamp: Stamp
    body: bytes
    meta: MetaT
    """What the caller derived from the stat (headers, ETag...), built once per version."""


class FileCache(Generic[MetaT]):
    """LRU of file contents up to ``max_file_size`` each, ``max_total`` bytes and ``max_entries``
    files overall."""

    def __init__(
        self,
        describe: Callable[[str, os.stat_result], MetaT],
        *,
        max_file_size: int = 64 * 1024,
        max_total: int = 64 * 1024 * 1024,
        max_entries: int = 10_000,
    ) -> None:
        self._describe = describe
        self.max_file_size = max_file_size
        self._max_total = max_total
        self._max_entries = max_entries
        self._total = 0
        self._entries: OrderedDict[str, CachedFile[MetaT]] = OrderedDict()

    def get(self, filename: str, st: os.stat_result) -> CachedFile[MetaT] | None:
        """The entry for ``filename`` if it is still the file ``st`` describes, else reload it.

        ``None`` when the file is (now) too large, not a regular file or unreadable: the caller
        then serves it from disk.
        """
        entry = self._entries.get(filename)
        if entry is not None:
            if entry.stamp == (st.st_mtime_ns, st.st_size, st.st_ino):
                self._entries.move_to_end(filename)
                return entry
            self._drop(filename)
        return self._load(filename)

    def _load(self, filename: str) -> CachedFile[MetaT] | None:
        try:
            with open(filename, "rb") as file:
                st = os.fstat(file.fileno())
                if st.st_size > self.max_file_size or not stat.S_ISREG(st.st_mode):
                    return None
                body = file.read(self.max_file_size + 1)
        except OSError:
            return None
        if len(body) != st.st_size:
            return None  # being written right now: serve from disk this time
        entry = CachedFile(stamp_of(st), body, self._describe(filename, st))
        self._entries[filename] = entry
        self._total += len(body)
        while self._entries and (
            self._total > self._max_total or len(self._entries) > self._max_entries
        ):
            self._drop(next(iter(self._entries)))
        return entry

    def _drop(self, filename: str) -> None:
        entry = self._entries.pop(filename, None)
        if entry is not None:
            self._total -= len(entry.body)

    def __len__(self) -> int:
        return len(self._entries)
