"""An in-process ``/ws`` server for WebSocket tests: WsManager + SqliteChangeLog on 127.0.0.1.

Changes are committed straight through the change log; clients are real aiohttp WebSocket
clients (or raw sockets) on real TCP connections::

    async with serve_ws(tmp_path) as server:
        async with server.connect() as ws:
            ack = await subscribe(ws, "c1")
            await server.changelog.commit(create("a.txt"), "other")
            assert (await receive_json(ws))["type"] == "FileOperation"
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry
from quantum_file_sync.changelog_sqlite import SqliteChangeLog
from quantum_file_sync.operations import Create, Delete, FileMetadata, Move, Update
from quantum_file_sync.protocol import SERVER_VALIDATORS
from quantum_file_sync.ws import WsManager, WsSettings

TIMEOUT = 5.0
HASH = "ab" * 32


def metadata(path: str, size: int = 3) -> FileMetadata:
    return FileMetadata(path, size, HASH, "2024-01-15T10:30:00Z", False)


def create(path: str, size: int = 3) -> Create:
    return Create(metadata(path, size))


def update(path: str) -> Update:
    return Update(metadata(path))


def delete(path: str) -> Delete:
    return Delete(path, False)


def move(source: str, target: str) -> Move:
    return Move(source, metadata(target))


@dataclass
class WsServer:
    url: str
    port: int
    changelog: SqliteChangeLog
    manager: WsManager
    registry: CollectorRegistry
    session: aiohttp.ClientSession

    def connect(self, **kwargs: Any) -> Any:
        """``async with server.connect() as ws`` (aiohttp client; autoping off by default)."""
        kwargs.setdefault("autoping", False)
        return self.session.ws_connect(self.url, **kwargs)

    def metric(self, name: str, labels: Mapping[str, str] | None = None) -> float:
        value = self.registry.get_sample_value(name, dict(labels or {}))
        return 0.0 if value is None else value


@asynccontextmanager
async def serve_ws(
    tmp_path: Path,
    *,
    settings: WsSettings | None = None,
    authenticate: Callable[[str | None], bool] = lambda token: True,
    journal: Path | None = None,
    max_events: int = 10_000,
    max_age: float = 3600.0,
    changelog_type: type[SqliteChangeLog] = SqliteChangeLog,
) -> AsyncIterator[WsServer]:
    changelog = changelog_type(
        journal or tmp_path / "journal.sqlite3", max_events=max_events, max_age=max_age
    )
    await changelog.open()
    registry = CollectorRegistry()
    manager = WsManager(
        changelog,
        settings or WsSettings(),
        registry,
        structlog.get_logger("test-ws"),
        authenticate,
    )
    await manager.start()
    app = web.Application()
    app.router.add_get("/ws", manager.handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    session = aiohttp.ClientSession()
    try:
        yield WsServer(f"http://127.0.0.1:{port}/ws", port, changelog, manager, registry, session)
    finally:
        await session.close()
        await manager.close()
        await runner.cleanup()
        await changelog.close()


async def receive_json(
    ws: aiohttp.ClientWebSocketResponse, timeout: float = TIMEOUT, *, validate: bool = True
) -> Any:
    """The next JSON text message, checked against the message schema."""
    message = await ws.receive(timeout=timeout)
    assert message.type is aiohttp.WSMsgType.TEXT, (message.type, message.data, message.extra)
    data = json.loads(message.data)
    if validate:
        errors = list(SERVER_VALIDATORS[data["type"]].iter_errors(data))
        assert not errors, (data, [e.message for e in errors])
    return data


async def subscribe(
    ws: aiohttp.ClientWebSocketResponse, client_id: str, **fields: Any
) -> dict[str, Any]:
    """Send Subscribe and return the Ack."""
    await ws.send_json({"type": "Subscribe", "client_id": client_id, **fields})
    ack: dict[str, Any] = await receive_json(ws)
    assert ack["type"] == "Ack", ack
    return ack


async def receive_close(ws: aiohttp.ClientWebSocketResponse, timeout: float = TIMEOUT) -> int:
    """Read until the server's close frame (skipping data); returns its close code."""
    async with asyncio.timeout(timeout):
        while True:
            message = await ws.receive()
            if message.type is aiohttp.WSMsgType.CLOSE:
                return int(message.data)
            if message.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                raise AssertionError(f"no close frame: {message}")


async def operations(
    ws: aiohttp.ClientWebSocketResponse, count: int, timeout: float = TIMEOUT
) -> list[dict[str, Any]]:
    """The next ``count`` FileOperation messages (the first one checked against the schema:
    validating thousands is slow, and they all come from the same encoder)."""
    result = []
    for index in range(count):
        message = await receive_json(ws, timeout, validate=index == 0)
        assert message["type"] == "FileOperation", message
        result.append(message)
    return result


class RawWebSocket:
    """A hand-made client socket: handshake, masked frames, and a socket that we decide to read
    (or not). ``recv_buffer`` shrinks the kernel receive buffer to make a slow reader quickly.
    Non-blocking: it shares the event loop with the server under test."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.loop = asyncio.get_running_loop()

    @classmethod
    async def open(cls, port: int, *, recv_buffer: int | None = None) -> RawWebSocket:
        sock = socket.socket()
        try:
            if recv_buffer is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, recv_buffer)
            sock.setblocking(False)
            raw = cls(sock)
            async with asyncio.timeout(TIMEOUT):
                await raw.loop.sock_connect(sock, ("127.0.0.1", port))
                key = base64.b64encode(os.urandom(16)).decode()
                await raw.loop.sock_sendall(
                    sock,
                    (
                        "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                        "Sec-WebSocket-Version: 13\r\n\r\n"
                    ).encode(),
                )
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = await raw.loop.sock_recv(sock, 1)
                    assert chunk, "server closed during the handshake"
                    head += chunk
            assert head.startswith(b"HTTP/1.1 101"), head
            return raw
        except BaseException:
            sock.close()
            raise

    async def send(self, frame: bytes) -> None:
        await self.loop.sock_sendall(self.sock, frame)

    async def send_text(self, text: str) -> None:
        await self.send(masked_frame(text.encode(), opcode=0x1))

    async def recv_until(self, needle: bytes, timeout: float = TIMEOUT) -> bytes:
        data = b""
        async with asyncio.timeout(timeout):
            while needle not in data:
                chunk = await self.loop.sock_recv(self.sock, 65536)
                assert chunk, f"closed before {needle!r} arrived: {data[-200:]!r}"
                data += chunk
        return data

    def close(self) -> None:
        self.sock.close()


def masked_frame(payload: bytes, *, opcode: int) -> bytes:
    """A client frame with an all-zero mask key (valid, and the payload stays readable)."""
    size = len(payload)
    if size < 126:
        header = bytes((0x80 | opcode, 0x80 | size))
    elif size < 65536:
        header = bytes((0x80 | opcode, 0x80 | 126)) + size.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 0x80 | 127)) + size.to_bytes(8, "big")
    return header + b"\x00\x00\x00\x00" + payload
