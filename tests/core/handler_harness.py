"""Serve one handler on a real socket (aiohttp test server on 127.0.0.1) for handler tests.

Every request goes to ``handler.serve(request, next)``; the default ``next`` answers 404 with
``X-Next: reached`` so a test can tell a pass-through from an answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from quantum.handler import Handler, HandlerError, Next, ProvisionContext, RouteChain
from quantum.server import unanswered_error


async def fell_through(request: web.Request) -> web.StreamResponse:
    return web.Response(status=404, text="next", headers={"X-Next": "reached"})


async def _no_routes(routes: Sequence[Mapping[str, Any]], path: str) -> RouteChain:
    raise AssertionError("this harness does not build nested routes")


def provision_context(registry: CollectorRegistry | None = None) -> ProvisionContext:
    return ProvisionContext(
        server_name="test",
        config_path="apps.http.servers.test.routes[0].handle[0]",
        registry=registry or CollectorRegistry(),
        logger=structlog.get_logger("test"),
        config_dir=Path.cwd(),
        build_routes=_no_routes,
    )


def chain(*handlers: Handler, last: Next = fell_through) -> Next:
    """``next`` that runs ``handlers`` in order, then ``last``."""

    def at(index: int) -> Next:
        if index == len(handlers):
            return last

        def run(request: web.Request) -> Awaitable[web.StreamResponse]:
            return handlers[index].serve(request, at(index + 1))

        return run

    return at(0)


@asynccontextmanager
async def serving(
    handler: Handler,
    next: Next = fell_through,
    *,
    registry: CollectorRegistry | None = None,
    client_max_size: int = 1024**2,
) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    """Provision ``handler`` and serve it on 127.0.0.1; yields a client bound to the server."""
    await handler.provision(provision_context(registry))
    handler.validate()

    async def catch_all(request: web.Request) -> web.StreamResponse:
        try:
            return await handler.serve(request, next)
        except HandlerError as error:  # as the Dispatcher answers it on a server without errors
            return unanswered_error(error)

    app = web.Application(client_max_size=client_max_size)
    app.router.add_route("*", "/{tail:.*}", catch_all)
    client = TestClient(TestServer(app, host="127.0.0.1"), auto_decompress=False)
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()
        await handler.cleanup()


async def raw_request(port: int, request: bytes, timeout: float = 5.0) -> bytes:
    """Send bytes as they are (no client-side URL normalisation) and read until close."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
        await writer.wait_closed()
