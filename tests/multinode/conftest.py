"""Several real Quantum nodes serving one shared ``root`` through one real Redis.

``start_node(name)`` starts ``quantum run --config`` for a node of the cluster (config from
:func:`node_config`); :class:`WsClient` is a WebSocket client that records every message it
receives in the background.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.file_sync.conftest import RunningQuantum, file_sync_config, http, launch_quantum
from tests.fixtures.redis import RedisServer
from tests.support import waiting

TIMEOUT = 10.0
StartNode = Callable[..., RunningQuantum]


def node_config(redis_url: str, root: Path, key_prefix: str, **options: Any) -> dict[str, Any]:
    """The seed's config with the Redis broker (``configs/multi-node.json``'s shape)."""
    broker = {"type": "redis", "url": redis_url, "key_prefix": key_prefix}
    options = {"enable_upload": True, "broker": broker, **options}
    return file_sync_config(str(root), **options)


@pytest.fixture
def shared_root(tmp_path: Path) -> Path:
    root = tmp_path / "shared"
    root.mkdir()
    return root


@pytest.fixture
def cluster_redis(redis_factory: Callable[[], RedisServer]) -> RedisServer:
    """A private Redis: the cluster tests may kill and restart it."""
    return redis_factory()


@pytest.fixture
def start_node(
    tmp_path: Path, shared_root: Path, cluster_redis: RedisServer
) -> Iterator[StartNode]:
    """``start_node(name, **handler_options)``: a node of one cluster (same root, same Redis)."""
    started: list[RunningQuantum] = []
    prefix = f"cluster-{uuid.uuid4().hex[:8]}:"

    def start(name: str, **options: Any) -> RunningQuantum:
        config = node_config(cluster_redis.url, shared_root, prefix, **options)
        return launch_quantum(config, tmp_path / name, started)

    yield start
    for node in started:
        node.stop()


def upload(node: RunningQuantum, path: str, content: bytes, client: str = "uploader") -> int:
    reply = http("PUT", f"{node.url}/api/files/{path}", content, {"X-Quantum-Client": client})
    return reply.status


def listing(node: RunningQuantum) -> dict[str, Any]:
    reply = http("GET", node.url + "/api/list")
    assert reply.status == 200, reply.body
    result: dict[str, Any] = reply.json()
    return result


def metric(node: RunningQuantum, name: str) -> float | None:
    """One unlabelled sample from the node's ``/metrics``."""
    for line in http("GET", node.url + "/metrics").body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


async def eventually(predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    await waiting.eventually(predicate, timeout, interval=0.02)


async def eventually_async(
    check: Callable[[], Any], timeout: float = TIMEOUT, interval: float = 0.1
) -> None:
    """Retry a blocking ``check`` (assertions, HTTP) in a thread until it passes."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            await asyncio.to_thread(check)
            return
        except (AssertionError, OSError):
            if asyncio.get_running_loop().time() > deadline:
                raise
        await asyncio.sleep(interval)


class WsClient:
    """A subscribed WebSocket client that keeps every message it receives."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, ack: dict[str, Any]) -> None:
        self.ws = ws
        self.ack = ack
        self.messages: list[dict[str, Any]] = []
        self.closed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def subscribe(
        cls,
        session: aiohttp.ClientSession,
        node: RunningQuantum,
        client_id: str,
        since: tuple[str, int] | None = None,
    ) -> WsClient:
        ws = await session.ws_connect(node.url.replace("http", "ws", 1) + "/ws")
        subscribe: dict[str, Any] = {"type": "Subscribe", "client_id": client_id}
        if since is not None:
            subscribe["since"] = {"epoch": since[0], "seq": since[1]}
        await ws.send_str(json.dumps(subscribe))
        ack = json.loads(await ws.receive_str(timeout=TIMEOUT))
        assert ack["type"] == "Ack", ack
        return cls(ws, ack)

    async def _read(self) -> None:
        try:
            async for message in self.ws:
                if message.type == aiohttp.WSMsgType.TEXT:
                    self.messages.append(json.loads(message.data))
        finally:
            self.closed.set()

    @property
    def operations(self) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["type"] == "FileOperation"]

    def paths(self) -> list[str]:
        return [_path_of(m["operation"]) for m in self.operations]

    async def wait_for_path(self, path: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        await eventually(lambda: path in self.paths(), timeout)
        return next(m for m in self.operations if _path_of(m["operation"]) == path)

    async def close(self) -> None:
        await self.ws.close()
        await self._reader


def _path_of(operation: dict[str, Any]) -> str:
    ((kind, body),) = operation.items()
    return str(body["path"] if kind == "Delete" else body["metadata"]["path"])


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client
