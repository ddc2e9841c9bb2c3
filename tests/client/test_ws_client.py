"""WsClient against an in-process fake ``/ws``: subscribe/resume, heartbeat, dead connections,
reconnection with backoff, refusal of unsafe operations, authentication failures."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from quantum_file_sync.client.exit_codes import AuthFailed
from quantum_file_sync.client.state import Cursor
from quantum_file_sync.client.ws_client import (
    Backoff,
    Connected,
    Disconnected,
    Refused,
    ServerError,
    WsClient,
    WsEvent,
)
from quantum_file_sync.operations import ChangeEvent

Behaviour = Callable[[web.WebSocketResponse, dict[str, Any], int], Awaitable[None]]


def operation(seq: int, path: str = "a.txt") -> dict[str, Any]:
    metadata = {
        "path": path,
        "size": 1,
        "hash": "0" * 64,
        "modified": "2024-01-01T00:00:00Z",
        "is_directory": False,
    }
    return {
        "type": "FileOperation",
        "operation": {"Create": {"metadata": metadata}},
        "source_client": None,
        "seq": seq,
        "epoch": "e1",
        "op_id": f"op{seq}",
    }


def ack(recovered: bool, seq: int = 0) -> dict[str, Any]:
    return {"type": "Ack", "client_id": "c", "epoch": "e1", "seq": seq, "recovered": recovered}


class FakeWs:
    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.subscribes: list[dict[str, Any]] = []
        self.received: list[dict[str, Any]] = []
        self.connections = 0
        self.status: int | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if self.status is not None:
            return web.Response(status=self.status)
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        self.connections += 1
        first = json.loads((await socket.receive()).data)
        self.subscribes.append(first)
        await self.behaviour(socket, first, self.connections)
        return socket


@pytest.fixture
async def fake_ws() -> AsyncIterator[Callable[[Behaviour], Awaitable[tuple[FakeWs, str]]]]:
    runners: list[web.AppRunner] = []

    async def start(behaviour: Behaviour) -> tuple[FakeWs, str]:
        fake = FakeWs(behaviour)
        app = web.Application()
        app.router.add_get("/ws", fake.handle)
        runner = web.AppRunner(app, shutdown_timeout=0.1)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        return fake, f"http://127.0.0.1:{runner.addresses[0][1]}"

    yield start
    for runner in runners:
        await runner.cleanup()


async def collect(client: WsClient, count: int, timeout: float = 5.0) -> list[WsEvent]:
    events: list[WsEvent] = []
    stream = client.events()
    try:
        async with asyncio.timeout(timeout):
            async for event in stream:
                events.append(event)
                if len(events) == count:
                    break
    finally:
        await stream.aclose()
    return events


def no_delay() -> Backoff:
    return Backoff(base=0.01, cap=0.02)


async def test_subscribe_resumes_from_the_cursor_and_again_after_reconnect(fake_ws: Any) -> None:
    async def behaviour(socket: web.WebSocketResponse, _: dict[str, Any], n: int) -> None:
        await socket.send_json(ack(recovered=True, seq=7))
        if n == 1:
            await socket.send_json(operation(8))
            await socket.close()
        else:
            await socket.receive()

    fake, url = await fake_ws(behaviour)
    cursor = Cursor("e1", 7)
    async with aiohttp.ClientSession() as session:
        client = WsClient(session, url, "client-1", "tok", lambda: cursor, backoff=no_delay())
        events = await collect(client, 2)
        assert isinstance(events[0], Connected) and events[0].recovered
        assert isinstance(events[1], ChangeEvent) and events[1].seq == 8
        cursor = Cursor("e1", 8)
        events = await collect(client, 1)
    assert fake.subscribes[0] == {
        "type": "Subscribe",
        "client_id": "client-1",
        "since": {"epoch": "e1", "seq": 7},
        "token": "tok",
    }
    assert fake.subscribes[1]["since"] == {"epoch": "e1", "seq": 8}
    assert client.url == url.replace("http://", "ws://") + "/ws"


async def test_first_subscribe_without_a_cursor_has_no_since(fake_ws: Any) -> None:
    async def behaviour(socket: web.WebSocketResponse, _: dict[str, Any], n: int) -> None:
        await socket.send_json(ack(recovered=False))
        await socket.receive()

    fake, url = await fake_ws(behaviour)
    async with aiohttp.ClientSession() as session:
        client = WsClient(session, url, "c", None, lambda: None)
        (event,) = await collect(client, 1)
    assert event == Connected("e1", 0, False)
    assert fake.subscribes == [{"type": "Subscribe", "client_id": "c"}]


async def test_pings_while_idle_and_answers_server_pings(fake_ws: Any) -> None:
    got_ping = asyncio.Event()

    async def behaviour(socket: web.WebSocketResponse, _: dict[str, Any], n: int) -> None:
        await socket.send_json(ack(recovered=False))
        await socket.send_json({"type": "Ping"})
        async for message in socket:
            data = json.loads(message.data)
            fake.received.append(data)
            if data["type"] == "Ping":
                await socket.send_json({"type": "Pong"})
                got_ping.set()

    fake, url = await fake_ws(behaviour)
    async with aiohttp.ClientSession() as session:
        client = WsClient(session, url, "c", None, lambda: None, ping_interval=0.1)
        stream = client.events()
        assert isinstance(await anext(stream), Connected)
        reader = asyncio.create_task(anext(stream))
        await asyncio.wait_for(got_ping.wait(), 3)
        await asyncio.sleep(0.35)
        assert not reader.done()  # Pongs keep the connection alive
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        await stream.aclose()
    kinds = [m["type"] for m in fake.received]
    assert kinds[0] == "Pong"  # the answer to the server's Ping
    assert kinds.count("Ping") >= 3


async def test_a_silent_connection_is_declared_dead_and_replaced(fake_ws: Any) -> None:
    async def behaviour(socket: web.WebSocketResponse, _: dict[str, Any], n: int) -> None:
        await socket.send_json(ack(recovered=True))
        async for _ in socket:  # never answers anything: a half-open connection
            pass

    fake, url = await fake_ws(behaviour)
    async with aiohttp.ClientSession() as session:
        client = WsClient(
            session,
            url,
            "c",
            None,
            lambda: None,
            ping_interval=0.1,
            dead_after=0.3,
            backoff=no_delay(),
        )
        events = await collect(client, 3)
    assert isinstance(events[0], Connected)
    assert isinstance(events[1], Disconnected) and "presumed dead" in events[1].reason
    assert isinstance(events[2], Connected)
    assert fake.connections == 2


async def test_unsafe_operations_are_refused_and_errors_reported(fake_ws: Any) -> None:
    async def behaviour(socket: web.WebSocketResponse, _: dict[str, Any], n: int) -> None:
        await socket.send_json(ack(recovered=True))
        await socket.send_json(operation(1, "../evil"))
        await socket.send_json(
            {
                "type": "FileOperation",
                "operation": {"Bogus": {}},
                "seq": 2,
                "epoch": "e1",
                "op_id": "x",
            }
        )
        await socket.send_json({"type": "Error", "code": "resync_required", "message": "m"})
        await socket.send_json(operation(3, "fine.txt"))
        await socket.receive()

    _, url = await fake_ws(behaviour)
    async with aiohttp.ClientSession() as session:
        events = await collect(WsClient(session, url, "c", None, lambda: None), 5)
    assert isinstance(events[1], Refused) and events[1].seq == 1
    assert "'../evil'" in events[1].reason
    assert isinstance(events[2], Refused) and events[2].seq == 2
    assert events[3] == ServerError("resync_required", "m")
    assert isinstance(events[4], ChangeEvent) and events[4].seq == 3


async def test_reconnects_with_growing_delays_while_the_server_is_down(fake_ws: Any) -> None:
    async def behaviour(socket: web.WebSocketResponse, _: dict[str, Any], n: int) -> None:
        await socket.send_json(ack(recovered=True))
        await socket.receive()

    fake, url = await fake_ws(behaviour)
    fake.status = 503
    async with aiohttp.ClientSession() as session:
        client = WsClient(session, url, "c", None, lambda: None, backoff=Backoff(0.01, 1.0))
        events = await collect(client, 3)
        fake.status = None
        events += await collect(client, 1)
    delays = [e.retry_in for e in events if isinstance(e, Disconnected)]
    assert len(delays) == 3
    assert all("503" in e.reason for e in events if isinstance(e, Disconnected))
    assert delays[2] > delays[0]
    assert isinstance(events[-1], Connected)
    assert client.backoff.attempt == 0  # reset by the successful connection


@pytest.mark.parametrize("how", ["http", "message"])
async def test_authentication_failures_are_fatal(fake_ws: Any, how: str) -> None:
    async def behaviour(socket: web.WebSocketResponse, _: dict[str, Any], n: int) -> None:
        await socket.send_json({"type": "Error", "code": "unauthorized", "message": "bad token"})
        await socket.receive()

    fake, url = await fake_ws(behaviour)
    if how == "http":
        fake.status = 401
    async with aiohttp.ClientSession() as session:
        with pytest.raises(AuthFailed):
            await collect(WsClient(session, url, "c", "wrong", lambda: None), 1)


def test_backoff_grows_with_jitter_up_to_the_cap() -> None:
    backoff = Backoff(base=1.0, cap=8.0, rng=lambda: 1.0)
    assert [backoff.next() for _ in range(5)] == [1.0, 2.0, 4.0, 8.0, 8.0]
    backoff.reset()
    low = Backoff(base=1.0, cap=8.0, rng=lambda: 0.0)
    assert [low.next() for _ in range(3)] == [0.5, 1.0, 2.0]
