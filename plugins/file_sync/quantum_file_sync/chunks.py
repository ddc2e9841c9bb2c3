"""Content-defined chunking: a file as an ordered list of chunks named by their SHA-256.

The server and the sync client cut files the same way (FastCDC 2020 through ``pyfastcdc``,
pinned), so a chunk either side already has is never sent again: a small change costs the
chunks around it, a rename or a copy costs none. A :class:`Manifest` is a file's chunk list
plus its whole-file SHA-256 (the ``hash`` of its metadata, its ETag). See docs/chunks.md.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from pyfastcdc import FastCDC

MIN_CHUNK = 256 * 1024
MAX_CHUNK = 4 * 1024 * 1024
AVG_PARAMETER = 768 * 1024
"""pyfastcdc's real average chunk is ``avg_size + min_size``: about 1 MiB."""
MAX_MANIFEST_CHUNKS = 1_000_000
HASH_PATTERN = re.compile(r"[0-9a-f]{64}")
_HASH_STEP = 4 * 1024 * 1024

CHUNKER = FastCDC(AVG_PARAMETER, min_size=MIN_CHUNK, max_size=MAX_CHUNK, normalized_chunking=1)


class ManifestError(ValueError):
    """A manifest that does not describe a file: wrong hash, gaps, overlaps, bad sizes."""


@dataclass(frozen=True, slots=True)
class ChunkRef:
    hash: str
    offset: int
    size: int

    @property
    def end(self) -> int:
        return self.offset + self.size


@dataclass(frozen=True, slots=True)
class Manifest:
    hash: str
    size: int
    chunks: tuple[ChunkRef, ...]

    def to_json(self, path: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {} if path is None else {"path": path}
        body.update(
            hash=self.hash,
            size=self.size,
            chunks=[{"hash": c.hash, "offset": c.offset, "size": c.size} for c in self.chunks],
        )
        return body

    @classmethod
    def from_json(cls, body: object, *, max_size: int) -> Manifest:
        """Parse and check a manifest sent by a peer; :class:`ManifestError` says what is
        wrong. Offsets are optional; when given, they must be where the previous chunk ended."""
        if not isinstance(body, Mapping):
            raise ManifestError("a manifest is a JSON object")
        digest, size, chunks = body.get("hash"), body.get("size"), body.get("chunks")
        _check_hash(digest, "hash")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ManifestError("size must be a non-negative integer")
        if size > max_size:
            raise ManifestError(f"size {size} is over the limit of {max_size} bytes")
        if not isinstance(chunks, list):
            raise ManifestError("chunks must be a list")
        if len(chunks) > MAX_MANIFEST_CHUNKS:
            raise ManifestError(f"a manifest lists at most {MAX_MANIFEST_CHUNKS} chunks")
        refs: list[ChunkRef] = []
        offset = 0
        for number, chunk in enumerate(chunks):
            where = f"chunks[{number}]"
            if not isinstance(chunk, Mapping):
                raise ManifestError(f"{where} must be an object")
            _check_hash(chunk.get("hash"), f"{where}.hash")
            chunk_size = chunk.get("size")
            if not isinstance(chunk_size, int) or isinstance(chunk_size, bool):
                raise ManifestError(f"{where}.size must be an integer")
            if not 0 < chunk_size <= MAX_CHUNK:
                raise ManifestError(f"{where}.size must be between 1 and {MAX_CHUNK}")
            given = chunk.get("offset", offset)
            if given != offset:
                raise ManifestError(
                    f"{where}.offset is {given!r}; chunks must be in order, without gaps or "
                    f"overlaps (expected {offset})"
                )
            refs.append(ChunkRef(chunk["hash"], offset, chunk_size))
            offset += chunk_size
            if offset > size:
                raise ManifestError(f"the chunks add up to more than size ({size})")
        if offset != size:
            raise ManifestError(f"the chunks add up to {offset} bytes, not size ({size})")
        return cls(digest, size, tuple(refs))  # type: ignore[arg-type]


def _check_hash(value: object, where: str) -> None:
    if not isinstance(value, str) or HASH_PATTERN.fullmatch(value) is None:
        raise ManifestError(f"{where} must be 64 lowercase hex digits (a SHA-256)")


def manifest_of_fd(fd: int) -> tuple[os.stat_result, Manifest]:
    """Chunk and hash an open regular file. Blocking (~1 GB/s here): chunks are cut and hashed
    on this thread while the whole-file SHA-256 runs on another (hashlib releases the GIL).
    Reads are positional and buffered, so memory stays small whatever the file's size (an
    mmap would count the whole file as resident). The returned ``stat`` is the one before
    reading: the caller compares it with a later ``fstat`` to know whether the file changed."""
    st = os.fstat(fd)
    if st.st_size == 0:
        return st, Manifest(hashlib.sha256().hexdigest(), 0, ())
    if st.st_size <= MIN_CHUNK:  # one chunk, the whole file: one read, one hash
        data = os.pread(fd, st.st_size, 0)
        digest = hashlib.sha256(data).hexdigest()
        return st, Manifest(digest, len(data), (ChunkRef(digest, 0, len(data)),))
    with ThreadPoolExecutor(1, thread_name_prefix="quantum-whole-hash") as pool:
        whole = pool.submit(_sha256_fd, fd, st.st_size)
        refs = [
            ChunkRef(hashlib.sha256(chunk.data).hexdigest(), chunk.offset, chunk.length)
            for chunk in CHUNKER.cut_stream(_PositionalReader(fd))
        ]
        digest = whole.result()
    return st, Manifest(digest, st.st_size, tuple(refs))


class _PositionalReader:
    """``readinto`` from an fd with ``preadv``, leaving the fd's own offset alone."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._offset = 0

    def readinto(self, buffer: memoryview) -> int:
        count = os.preadv(self._fd, [buffer], self._offset)
        self._offset += count
        return count


def _sha256_fd(fd: int, size: int) -> str:
    digest = hashlib.sha256()
    offset = 0
    while offset < size and (piece := os.pread(fd, _HASH_STEP, offset)):
        digest.update(piece)
        offset += len(piece)
    return digest.hexdigest()


def manifest_of_file(path: str | os.PathLike[str]) -> tuple[os.stat_result, Manifest]:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        return manifest_of_fd(fd)
    finally:
        os.close(fd)


def read_chunk(fd: int, ref: ChunkRef) -> bytes | None:
    """Chunk ``ref``'s bytes from the open file ``fd``, or ``None`` when that range no longer
    holds them (the file changed, shrank, or was damaged). Blocking."""
    data = os.pread(fd, ref.size, ref.offset)
    if len(data) != ref.size or hashlib.sha256(data).hexdigest() != ref.hash:
        return None
    return data


def missing_from(manifest: Manifest, have: Sequence[str] | set[str]) -> list[str]:
    """Distinct chunk hashes of ``manifest`` not in ``have``, in manifest order."""
    known = set(have)
    wanted: list[str] = []
    for ref in manifest.chunks:
        if ref.hash not in known:
            known.add(ref.hash)
            wanted.append(ref.hash)
    return wanted


# -- chunk records: the body of chunk uploads and downloads -------------------------------------

RECORDS_MEDIA_TYPE = "application/vnd.quantum.chunks"
MANIFEST_MEDIA_TYPE = "application/vnd.quantum.manifest+json"
RECORD_HEADER_MAX = 64 + 1 + 8 + 1
"""``HASH SIZE\\n``: 64 hex digits, a space, at most 7 decimal digits (≤ 4 MiB), a newline."""


def record_header(digest: str, size: int) -> bytes:
    """The line before each chunk's bytes in a records body."""
    return f"{digest} {size}\n".encode("ascii")


def parse_record_header(line: bytes) -> tuple[str, int]:
    """(hash, size) of a record header line; :class:`ManifestError` when it is not one."""
    text = line.decode("ascii", errors="replace")
    if not text.endswith("\n"):
        raise ManifestError("a chunk record header ends with a newline")
    digest, _, size_text = text[:-1].partition(" ")
    _check_hash(digest, "chunk record hash")
    if not size_text.isdigit() or not 0 < int(size_text) <= MAX_CHUNK:
        raise ManifestError(f"chunk record size must be between 1 and {MAX_CHUNK}")
    return digest, int(size_text)
