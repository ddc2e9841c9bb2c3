"""request_body: max_size by Content-Length, while streaming, and for whole-body reads."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from quantum.handlers.request_body import RequestBody
from tests.core.handler_harness import serving

reached: list[str] = []


async def count_streamed(request: web.Request) -> web.StreamResponse:
    reached.append(request.path)
    total = 0
    async for chunk in request.content.iter_any():
        total += len(chunk)
    return web.Response(text=str(total))


async def read_whole(request: web.Request) -> web.StreamResponse:
    return web.Response(text=str(len(await request.read())))


async def chunks(count: int, size: int = 1000) -> AsyncIterator[bytes]:
    for _ in range(count):
        yield b"x" * size


@pytest.fixture(autouse=True)
def _forget() -> None:
    reached.clear()


async def test_bodies_within_the_limit_pass() -> None:
    async with serving(RequestBody({"max_size": "10KB"}), count_streamed) as client:
        assert await (await client.post("/", data=b"x" * 10_000)).text() == "10000"
        assert await (await client.post("/", data=chunks(10))).text() == "10000"
        assert await (await client.get("/")).text() == "0"


async def test_declared_length_over_the_limit_is_refused_before_the_chain() -> None:
    async with serving(RequestBody({"max_size": 100}), count_streamed) as client:
        response = await client.post("/", data=b"x" * 101)
        assert response.status == 413
        assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
        assert await response.text() == "request body too large (limit 100 bytes)\n"
        as_json = await client.post("/", data=b"x" * 101, headers={"Accept": "application/json"})
        assert as_json.status == 413
        assert await as_json.json() == {
            "error": "request body too large (limit 100 bytes)",
            "code": "request_too_large",
        }
    assert reached == []


async def test_streamed_body_is_cut_when_it_crosses_the_limit() -> None:
    async with serving(RequestBody({"max_size": "5KB"}), count_streamed) as client:
        response = await client.post("/", data=chunks(50))
        assert response.status == 413
        assert "limit 5000 bytes" in await response.text()
    assert reached == ["/"]


async def test_whole_body_reads_get_the_limit_instead_of_aiohttps_default() -> None:
    handler = RequestBody({"max_size": "3MiB"})
    async with serving(handler, read_whole, client_max_size=1024) as client:
        response = await client.post("/", data=chunks(2048, 1024))
        assert response.status == 200
        assert await response.text() == str(2048 * 1024)
        too_big = await client.post("/", data=chunks(4096, 1024))
        assert too_big.status == 413


async def test_without_max_size_nothing_is_limited() -> None:
    async with serving(RequestBody({}), count_streamed) as client:
        assert await (await client.post("/", data=chunks(100))).text() == "100000"
