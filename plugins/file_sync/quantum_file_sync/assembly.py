"""Building a file from its manifest: chunk by chunk from where the chunk store has them.

Bytes are copied with ``os.copy_file_range`` (in the kernel, no trip through Python) and the
result is read back to check its SHA-256 against the manifest's, so neither a lying client
nor a live file that changed under its recorded stat identity can produce a file whose content
is not its hash. When the whole-file hash is wrong, each chunk is checked to tell the two apart:
a source that no longer holds its chunk is reported as missing (the client sends it), otherwise
the manifest itself is wrong.
"""

from __future__ import annotations

import hashlib
import os
import queue
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from quantum_file_sync.chunks import Manifest
from quantum_file_sync.chunkstore import Source
from quantum_file_sync.reads import open_for_reading
from quantum_file_sync.writeback import WRITE_BEHIND, start_writeback


class SourcesChanged(Exception):
    """Some sources no longer hold their chunk (``hashes``): they are missing after all."""

    def __init__(self, hashes: list[str]) -> None:
        super().__init__(f"{len(hashes)} chunks changed at their source")
        self.hashes = hashes


class WrongHash(Exception):
    """Every chunk is what the manifest says, but the whole file does not hash to its hash."""

    def __init__(self, actual: str) -> None:
        super().__init__(f"the assembled file hashes to {actual}")
        self.actual = actual


@dataclass(frozen=True, slots=True)
class Assembled:
    size: int
    digest: str


def assemble(manifest: Manifest, sources: Mapping[str, Source], fd: int) -> Assembled:
    """Write ``manifest``'s bytes into the empty file ``fd`` and fsync it. Blocking.

    Raises :class:`SourcesChanged` or :class:`WrongHash`, and ``OSError`` (a full disk); the
    caller discards the file then. The result is hashed on a second thread, each chunk right
    after it was copied, so checking costs little more time than copying."""
    opened: dict[str, int] = {}
    ranges: queue.SimpleQueue[tuple[int, int] | None] = queue.SimpleQueue()
    with ThreadPoolExecutor(1, thread_name_prefix="quantum-assembly-hash") as pool:
        hashing = pool.submit(_hash_ranges, fd, ranges)
        try:
            position = written_back = 0
            for ref in manifest.chunks:
                source = sources[ref.hash]
                src = opened.get(source.path)
                if src is None:
                    try:
                        src = opened[source.path] = open_for_reading(
                            source.path, flags=os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
                        )
                    except FileNotFoundError:  # a blob dropped by a concurrent commit
                        raise SourcesChanged([ref.hash]) from None
                if not _copy(src, source.offset, fd, position, ref.size):
                    raise SourcesChanged([ref.hash])
                ranges.put((position, ref.size))
                position += ref.size
                if position - written_back >= WRITE_BEHIND:
                    start_writeback(fd, written_back, position - written_back)
                    written_back = position
        finally:
            ranges.put(None)
            for src in opened.values():
                os.close(src)
        os.fsync(fd)
        digest = hashing.result()
    if digest != manifest.hash:
        changed = _changed_chunks(manifest, fd)
        if changed:
            raise SourcesChanged(changed)
        raise WrongHash(digest)
    return Assembled(manifest.size, digest)


def _hash_ranges(fd: int, ranges: queue.SimpleQueue[tuple[int, int] | None]) -> str:
    digest = hashlib.sha256()
    while (item := ranges.get()) is not None:
        offset, size = item
        digest.update(os.pread(fd, size, offset))
    return digest.hexdigest()


def _copy(src: int, src_offset: int, dst: int, dst_offset: int, count: int) -> bool:
    """Copy ``count`` bytes; ``False`` when the source ends before them."""
    while count:
        copied = os.copy_file_range(src, dst, count, src_offset, dst_offset)
        if copied == 0:
            return False
        src_offset += copied
        dst_offset += copied
        count -= copied
    return True


def _changed_chunks(manifest: Manifest, fd: int) -> list[str]:
    changed: dict[str, None] = {}
    for ref in manifest.chunks:
        data = os.pread(fd, ref.size, ref.offset)
        if hashlib.sha256(data).hexdigest() != ref.hash:
            changed[ref.hash] = None
    return list(changed)
