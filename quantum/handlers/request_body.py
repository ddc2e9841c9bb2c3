"""``request_body``: limit the size of request bodies (Caddy's ``max_size``).

A declared ``Content-Length`` over the limit is refused at once with 413. A body without a length
(chunked) is counted while the rest of the chain reads it: it flows through a bounded pump into a
fresh stream, which fails with 413 as soon as the limit is crossed. Bodies read whole
(``request.read()``/``json()``/``post()``) get the limit as aiohttp's ``client_max_size``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any, cast

from aiohttp import StreamReader, web
from aiohttp.base_protocol import BaseProtocol

from quantum.handler import Handler, HandlerSpec, Next
from quantum.handlers.responses import error_response
from quantum.sizes import SIZE_SCHEMA, parse_size

SCHEMA: Mapping[str, Any] = {
    "type": "object",
    "properties": {
        "max_size": {
            **SIZE_SCHEMA,
            "description": 'Largest accepted body: bytes, or a size such as "10MB", "1GiB".',
        },
    },
}

_PUMP_BUFFER = 2**16


class RequestBodyTooLarge(web.HTTPRequestEntityTooLarge):
    """Raised by reads of a body that crossed ``max_size``."""

    def __init__(self, max_size: int, actual_size: int) -> None:
        super().__init__(max_size=max_size, actual_size=actual_size)
        self.limit = max_size


class _Valve:
    """Stands in for the protocol of the limited stream: its back-pressure pauses the pump,
    and it is connected while the real connection is."""

    def __init__(self, connection: BaseProtocol | None) -> None:
        self._connection = connection
        self.open = asyncio.Event()
        self.open.set()

    @property
    def connected(self) -> bool:
        return self._connection is None or self._connection.connected

    def pause_reading(self) -> None:
        self.open.clear()

    def resume_reading(self, resume_parser: bool = True) -> None:
        self.open.set()


async def _pump(source: StreamReader, sink: StreamReader, valve: _Valve, limit: int) -> None:
    total = 0
    try:
        while True:
            await valve.open.wait()
            chunk = await source.readany()
            if not chunk:
                break
            total += len(chunk)
            if total > limit:
                sink.set_exception(RequestBodyTooLarge(limit, total))
                return
            sink.feed_data(chunk)
        sink.feed_eof()
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        sink.set_exception(exc)


class RequestBody(Handler):
    def __init__(self, options: Mapping[str, Any]) -> None:
        size = options.get("max_size")
        self.max_size = parse_size(size) if size is not None else None

    async def serve(self, request: web.Request, next: Next) -> web.StreamResponse:
        limit = self.max_size
        if limit is None or not request.body_exists:
            return await next(request)
        declared = request.content_length
        if declared is not None and declared > limit:
            return self._too_large(request, limit)
        limited = request.clone(client_max_size=limit)
        pump: asyncio.Task[None] | None = None
        if declared is None:
            valve = _Valve(request.protocol)
            sink = StreamReader(
                cast(BaseProtocol, valve), _PUMP_BUFFER, loop=asyncio.get_running_loop()
            )
            pump = asyncio.create_task(_pump(request.content, sink, valve, limit))
            limited._payload = sink  # the clone shares the original's; give it the counted one
        try:
            return await next(limited)
        except web.HTTPRequestEntityTooLarge:
            return self._too_large(request, limit)
        finally:
            if pump is not None and not pump.done():
                pump.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pump

    @staticmethod
    def _too_large(request: web.Request, limit: int) -> web.Response:
        response = error_response(
            request,
            413,
            f"request body too large (limit {limit} bytes)",
            "request_too_large",
        )
        response.force_close()  # the unread rest of the body makes the connection unusable
        return response


SPEC = HandlerSpec(
    name="request_body",
    schema=SCHEMA,
    factory=RequestBody,
    description="Refuses request bodies larger than max_size with 413.",
)
