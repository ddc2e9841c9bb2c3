"""Downloads: ``GET``/``HEAD`` of one file (content-hash ETag, ``If-None-Match``, ``Range``,
sendfile) and bundles of many files (``POST /api/bundle``).

aiohttp's ``FileResponse`` is not used on purpose: its ETag is mtime-based, and it would serve a
sibling ``NAME.gz`` instead of ``NAME`` to clients accepting gzip. Both responses send their body
in ``prepare``, so the handler can still add headers (CORS) to the response the API returned.
"""

from __future__ import annotations

import asyncio
import hashlib
import mimetypes
import os
import weakref
from collections.abc import Callable
from email.utils import formatdate
from typing import Any, TypeVar

from aiohttp import hdrs, web
from aiohttp.abc import AbstractStreamWriter

from quantum_file_sync.bundle import MEDIA_TYPE, Batch, BundleReader, LargeFile, end_record
from quantum_file_sync.storage import Download

T = TypeVar("T")
CHUNK_SIZE = 1024 * 1024
"""Read per worker-thread hop where ``sendfile`` is not available (uvloop): large enough that
the hops cost little next to the copy."""


def parse_etags(header: str | None) -> frozenset[str] | None:
    """``If-Match``/``If-None-Match`` values as bare tags (quotes and ``W/`` dropped) or
    ``{"*"}``; ``None`` when the header is absent."""
    if header is None:
        return None
    tags = set()
    for part in header.split(","):
        tag = part.strip().removeprefix("W/").strip('"').strip()
        if tag:
            tags.add(tag.lower() if tag != "*" else tag)
    return frozenset(tags)


def etag_of(digest: str) -> str:
    return f'"{digest}"'


class FileSendResponse(web.StreamResponse):
    """Send ``count`` bytes of an open file from ``offset`` with ``loop.sendfile``.

    Owns the descriptor: closed after sending, or when the response is dropped unsent."""

    def __init__(
        self,
        fd: int,
        offset: int,
        count: int,
        *,
        status: int,
        headers: dict[str, str],
        on_sent: Callable[[int], None] | None = None,
    ) -> None:
        super().__init__(status=status, headers=headers)
        self._fd = fd
        self._offset = offset
        self._count = count
        self._on_sent = on_sent
        self._release = weakref.finalize(self, os.close, fd)
        self.content_length = count

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        if self.prepared:  # prepared again by aiohttp after the core did: already sent
            return await super().prepare(request)
        try:
            writer = await super().prepare(request)
            if request.method != hdrs.METH_HEAD and self._count:
                await self._send(request)
                await super().write_eof()
            return writer
        finally:
            self._release()

    async def _send(self, request: web.BaseRequest) -> None:
        transport = request.transport
        if transport is None:
            raise ConnectionResetError("connection lost")
        try:
            with open(self._fd, "rb", closefd=False) as file:
                # Falls back to read/write by itself where sendfile cannot work (e.g. TLS).
                await asyncio.get_running_loop().sendfile(
                    transport, file, self._offset, self._count
                )
        except NotImplementedError:  # uvloop has no loop.sendfile
            await self._copy()
        if self._on_sent is not None:
            self._on_sent(self._count)

    async def _copy(self) -> None:
        position, remaining = self._offset, self._count
        while remaining:
            chunk = await _in_thread(os.pread, self._fd, min(CHUNK_SIZE, remaining), position)
            if not chunk:
                raise ConnectionResetError("file shrank while being sent")
            await self.write(chunk)
            position += len(chunk)
            remaining -= len(chunk)


def file_response(
    request: web.Request,
    rel: str,
    download: Download,
    on_sent: Callable[[int], None] | None = None,
) -> web.StreamResponse:
    """The answer to ``GET``/``HEAD`` for an opened file (takes ownership of its descriptor)."""
    size = download.st.st_size
    etag = etag_of(download.digest)
    headers = {
        hdrs.ETAG: etag,
        hdrs.LAST_MODIFIED: formatdate(download.st.st_mtime, usegmt=True),
        hdrs.ACCEPT_RANGES: "bytes",
        hdrs.CACHE_CONTROL: "no-cache",
        hdrs.CONTENT_TYPE: mimetypes.guess_type(rel)[0] or "application/octet-stream",
        # Uploaded HTML must not run with the page's origin (and its token).
        hdrs.CONTENT_SECURITY_POLICY: "sandbox",
        "X-Content-Type-Options": "nosniff",
    }
    if_none_match = parse_etags(request.headers.get(hdrs.IF_NONE_MATCH))
    if if_none_match is not None and ("*" in if_none_match or download.digest in if_none_match):
        os.close(download.fd)
        del headers[hdrs.CONTENT_TYPE]
        return web.Response(status=304, headers=headers)
    offset, count, status = 0, size, 200
    if_range = request.headers.get(hdrs.IF_RANGE)
    if hdrs.RANGE in request.headers and (if_range is None or if_range.strip() == etag):
        try:
            requested = request.http_range
        except ValueError:
            requested = None
        bounds = _bounds(requested, size)
        if bounds is None:
            os.close(download.fd)
            return web.Response(status=416, headers={hdrs.CONTENT_RANGE: f"bytes */{size}"})
        offset, count = bounds
        status = 206
        headers[hdrs.CONTENT_RANGE] = f"bytes {offset}-{offset + count - 1}/{size}"
    return FileSendResponse(
        download.fd, offset, count, status=status, headers=headers, on_sent=on_sent
    )


def _bounds(requested: slice | None, size: int) -> tuple[int, int] | None:
    """(offset, count) of a single byte range, ``None`` when unsatisfiable."""
    if requested is None:
        return None
    start, stop = requested.start, requested.stop
    if start is None:
        start = 0
    if start < 0:  # suffix range: the last -start bytes
        start = max(size + start, 0)
        stop = size
    stop = size if stop is None else min(stop, size)
    if start >= size or stop <= start:
        return None
    return start, stop - start


class BundleResponse(web.StreamResponse):
    """Stream the records of a :class:`BundleReader`.

    Batches are read in a worker thread, the next one while the current one is being sent. A
    large file is streamed in chunks, its last chunk held back until the whole content matched
    the announced hash: a file that changes meanwhile ends the response early (no end record),
    so a client never receives a complete record with wrong bytes."""

    def __init__(self, reader: BundleReader, on_sent: Callable[[int], None] | None = None) -> None:
        super().__init__(
            status=200,
            headers={
                hdrs.CONTENT_TYPE: MEDIA_TYPE,
                hdrs.CACHE_CONTROL: "no-store",
                "X-Content-Type-Options": "nosniff",
            },
        )
        self._reader = reader
        self._on_sent = on_sent

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        if self.prepared:
            return await super().prepare(request)
        pending: asyncio.Future[Batch] | None = None
        try:
            writer = await super().prepare(request)
            reader = self._reader
            pending = self._read_ahead()
            while pending is not None:
                batch = await asyncio.shield(pending)  # cancelled or not, it finishes (below)
                pending = self._read_ahead()
                try:
                    await self.write(batch.data)
                    if batch.large is not None:
                        await self._stream(batch.large)
                finally:
                    if batch.large is not None:
                        os.close(batch.large.fd)
            await self.write(end_record(reader.files, reader.errors))
            if self._on_sent is not None:
                self._on_sent(reader.content_bytes)
            await super().write_eof()
            return writer
        finally:
            if pending is not None:  # the reader is not thread-safe: let its read finish
                await asyncio.wait([pending])
                if not pending.cancelled() and pending.exception() is None:
                    left = pending.result().large
                    if left is not None:
                        os.close(left.fd)
            self._reader.close()

    def _read_ahead(self) -> asyncio.Future[Batch] | None:
        if self._reader.done:
            return None
        return asyncio.ensure_future(asyncio.to_thread(self._reader.next_batch))

    async def _stream(self, large: LargeFile) -> None:
        """Send ``large``'s bytes (the caller closes its descriptor)."""
        digest = hashlib.sha256()
        position = 0
        held = b""
        while position < large.size:
            count = min(CHUNK_SIZE, large.size - position)
            chunk = await _in_thread(_pread_hashed, large.fd, count, position, digest)
            if not chunk:
                raise ConnectionResetError(f"{large.path!r} shrank while being sent")
            position += len(chunk)
            if held:
                await self.write(held)
            held = chunk
        if digest.hexdigest() != large.digest:
            raise ConnectionResetError(f"{large.path!r} changed while being sent")
        if held:
            await self.write(held)


async def _in_thread(function: Callable[..., T], *args: Any) -> T:
    """``function(*args)`` in a worker thread. A cancelled caller still waits for the thread to
    finish: it reads from a descriptor the caller closes next."""
    task = asyncio.ensure_future(asyncio.to_thread(function, *args))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task])
        if not task.cancelled():
            task.exception()  # retrieved: the caller is gone, its outcome does not matter
        raise


def _pread_hashed(fd: int, count: int, offset: int, digest: Any) -> bytes:
    chunk = os.pread(fd, count, offset)
    digest.update(chunk)
    return chunk
