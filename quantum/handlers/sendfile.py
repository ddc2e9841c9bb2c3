"""A response that streams a byte span of a file with ``sendfile`` (zero-copy).

The event loop's ``sendfile`` is used when it has one (asyncio's selector loop). Loops without it
(uvloop) get the same zero-copy path from a worker thread calling ``os.sendfile`` on a duplicate
of the connection's socket, once aiohttp's buffer (the headers) is flushed; TLS connections fall
back to copying chunks through the writer.
"""

from __future__ import annotations

import asyncio
import os
import select
from concurrent.futures import ThreadPoolExecutor
from typing import IO

from aiohttp import hdrs, web
from aiohttp.abc import AbstractStreamWriter
from multidict import CIMultiDict

_FALLBACK_CHUNK = 1024 * 1024
STALL_TIMEOUT = 60.0
"""Seconds a client may accept no bytes before a threaded transfer gives up on it."""
_threads: ThreadPoolExecutor | None = None


def _thread_pool() -> ThreadPoolExecutor:
    global _threads
    if _threads is None:
        _threads = ThreadPoolExecutor(max_workers=64, thread_name_prefix="quantum-sendfile")
    return _threads


def sendfile_blocking(sock_fd: int, file_fd: int, offset: int, count: int) -> int:
    """Send from a thread; owns (and closes) ``sock_fd``, a ``dup`` of the connection's socket,
    so the loop closing its own descriptor meanwhile can never redirect these bytes."""
    sent = 0
    try:
        poller = select.poll()
        poller.register(sock_fd, select.POLLOUT)
        while sent < count:
            try:
                written = os.sendfile(sock_fd, file_fd, offset + sent, count - sent)
            except BlockingIOError:
                if not poller.poll(STALL_TIMEOUT * 1000):
                    break
                continue
            except OSError:
                break  # the client went away
            if written == 0:
                break  # the file shrank
            sent += written
    finally:
        os.close(sock_fd)
    return sent


_REPRESENTATION_HEADERS = (
    hdrs.ETAG,
    hdrs.LAST_MODIFIED,
    hdrs.CONTENT_TYPE,
    hdrs.CONTENT_RANGE,
    hdrs.ACCEPT_RANGES,
)


class SendfileResponse(web.StreamResponse):
    """Sends ``count`` bytes of ``filename`` from ``offset``; the file is opened at send time.

    If the file shrank since its size was announced, the connection is closed after what is
    left, so the client sees a short body instead of a hang.
    """

    def __init__(
        self,
        filename: str,
        offset: int,
        count: int,
        *,
        status: int = 200,
        headers: CIMultiDict[str],
    ) -> None:
        super().__init__(status=status, headers=headers)
        self._filename = filename
        self._offset = offset
        self._count = count
        self.content_length = count

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        if self.prepared or request.method == "HEAD" or self._count == 0:
            return await super().prepare(request)
        try:
            file = open(self._filename, "rb")  # noqa: SIM115 - closed below, after sending
        except OSError:
            # Vanished between stat and open: nothing was sent yet, so answer 404 instead.
            self.set_status(404)
            for name in _REPRESENTATION_HEADERS:
                self.headers.popall(name, None)
            self.content_length = 0
            return await super().prepare(request)
        with file:
            writer = await super().prepare(request)
            assert writer is not None
            sent = await self._send(request, writer, file)
            if sent < self._count:
                self.force_close()
                if request.transport is not None:
                    request.transport.close()
                return writer
            await super().write_eof()
        return writer

    async def _send(
        self, request: web.BaseRequest, writer: AbstractStreamWriter, file: IO[bytes]
    ) -> int:
        loop = asyncio.get_running_loop()
        transport = request.transport
        if transport is None:
            raise ConnectionResetError("connection lost")
        try:
            return await loop.sendfile(transport, file, self._offset, self._count, fallback=False)
        except (NotImplementedError, asyncio.SendfileNotAvailableError):
            pass
        sock = transport.get_extra_info("socket")
        if sock is not None and transport.get_extra_info("sslcontext") is None:
            while transport.get_write_buffer_size():  # the headers must leave first
                await asyncio.sleep(0.001)
            return await loop.run_in_executor(
                _thread_pool(),
                sendfile_blocking,
                os.dup(sock.fileno()),
                file.fileno(),
                self._offset,
                self._count,
            )
        sent = 0  # TLS: copy through the writer
        file.seek(self._offset)
        while sent < self._count:
            chunk = await loop.run_in_executor(
                None, file.read, min(_FALLBACK_CHUNK, self._count - sent)
            )
            if not chunk:
                break
            await writer.write(chunk)
            sent += len(chunk)
        return sent
